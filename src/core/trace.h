/* SPDX-License-Identifier: MIT */
/* braid — wait records, trace buffers and the task registry the dump and the
 * deadlock check walk (core internals; the public face is braid/trace.h).
 *
 * Wait records. A task about to park says what it waits on with
 * br__wait_on() (fd, timer, channel, mutex, join, child, pool job ...); the
 * park (task.c) adds the deadline, the switch stamps the time, and the
 * resume adds the time spent to the task's per-kind totals and clears the
 * record. That one record is what br_task_get_stats, the tracer, br_dump
 * and the deadlock check read: nothing else tracks waits.
 *
 * A layer above the core that waits through a core wait (a child process
 * waited for through its pidfd) says so first with br__wait_hint(); the core
 * wait keeps a hint (br__wait_default) and the park consumes it.
 *
 * Trace buffers. Each thread that emits gets its own chain of chunks (no
 * lock on the hot path; a lock only to hand over a full chunk). The hooks
 * cost one predictable branch on a global flag when tracing is off. The
 * events are 32-byte records; a record with text (a task's name) takes one
 * more slot. Full chunks go to one global list, oldest first; once the
 * buffer's budget is used up the oldest full chunk is reused (a flight
 * recorder keeps the last N MiB). Readers (the exporters in obs/) take a
 * snapshot of the chunk list and read each chunk up to its published count.
 */
#ifndef BRAID_CORE_TRACE_H
#define BRAID_CORE_TRACE_H

#include "core/core.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* --- wait records ----------------------------------------------------------- */

_Static_assert(BR_WAIT_KINDS <= 16, "br__task.wait_seen has a bit per kind");

static inline void br__wait_on(struct br__task *t, br_wait_kind kind, const char *what,
                               const void *obj, struct br__task *by, int64_t arg) {
  t->wait.kind = (uint8_t)kind;
  t->wait.what = what;
  t->wait.obj = obj;
  t->wait.task = by;
  t->wait.arg = arg;
}

/* As br__wait_on unless a hint from the layer above already says more. */
static inline void br__wait_default(struct br__task *t, br_wait_kind kind, const char *what,
                                    const void *obj, struct br__task *by, int64_t arg) {
  if (!t->wait.kind) br__wait_on(t, kind, what, obj, by, arg);
}

/* The calling task's next park is for this (a layer above the core waiting
 * through a core wait); no-op outside tasks. Clear it with br__wait_unhint()
 * when the wait returned without parking. */
static inline void br__wait_hint(br_wait_kind kind, const char *what, int64_t arg) {
  struct br__task *t = br__self_inline();
  if (t) br__wait_on(t, kind, what, NULL, NULL, arg);
}
static inline void br__wait_unhint(void) {
  struct br__task *t = br__self_inline();
  if (t) t->wait.kind = BR_WAIT_NONE;
}

/* Mark what completes f (a pool job, a blocking call ...): a task awaiting
 * it records that kind. */
static inline void br__future_set_origin(struct br_future *f, br_wait_kind kind) {
  if (f) f->origin = (uint8_t)kind;
}

/* --- trace events ------------------------------------------------------------ */

enum br__tev_type {
  BR__TEV_PAD = 0,     /* filler to the end of a chunk */
  BR__TEV_RESUME,      /* task id starts running */
  BR__TEV_YIELD,       /* task id stops, still ready */
  BR__TEV_PARK,        /* task id stops to wait: kind, arg (fd, pid ...), arg2 (deadline) */
  BR__TEV_END,         /* task id's body returned: arg = its error code */
  BR__TEV_SPAWN,       /* task id spawned by arg (0: none); + name */
  BR__TEV_NAME,        /* task id is called + name */
  BR__TEV_POLL_BEGIN,  /* the loop waits in its poller: arg = timeout ns (-1 forever) */
  BR__TEV_POLL_END,    /* ... and returns: arg = its result */
  BR__TEV_JOB_BEGIN,   /* an executor's job id starts on this thread: kind; + name */
  BR__TEV_JOB_END,     /* ... and ends: arg = its error code */
  BR__TEV_THREAD,      /* this thread's role; + name */
  BR__TEV_READY,       /* parked task id was woken: its wait ends, it waits for the loop;
                          pad 1: not stamped, it happened before the next record */
  BR__TEV_SWITCH,      /* task id stops (pad: BR__TEV_PARK or _YIELD, kind, loop) and
                          task arg of the same loop resumes: a direct hand-off */
  BR__TEV_TYPES
};

/* One record: 32 bytes. A record with text is followed by one slot holding
 * it (NUL-terminated, at most 31 bytes); `text` is 1 then. */
typedef struct br__tev {
  uint64_t ts;    /* br__ticks() */
  uint8_t type;   /* br__tev_type */
  uint8_t kind;   /* br_wait_kind for PARK and JOB_* */
  uint8_t text;   /* slots of text that follow */
  uint8_t pad;
  uint32_t loop;  /* loop serial (tasks, polls), 0 otherwise */
  uint64_t id;    /* task id on that loop, or job id */
  int64_t arg;
} br__tev;

enum { BR__TCHUNK_EVENTS = 2048 }; /* 64 KiB of records per chunk */

typedef struct br__tchunk {
  struct br__tchunk *next;  /* in the full list, oldest first */
  uint64_t seq;             /* global order in which chunks were started */
  int32_t tid;              /* the OS thread that wrote it */
  int32_t pid;
  _Atomic uint32_t used;    /* records published (release) */
  uint32_t pad;
  br__tev ev[BR__TCHUNK_EVENTS];
} br__tchunk;

/* Whether tracing is on: one relaxed load, predicted false. */
extern _Atomic int br__trace_flag;
static inline int br__tracing(void) {
  return __builtin_expect(atomic_load_explicit(&br__trace_flag, memory_order_relaxed), 0);
}

/* The calling thread's place in its current chunk: the fast path of an
 * emit is a bounds check, a session check and the stores of the record. */
typedef struct br__tcursor {
  br__tchunk *chunk;
  uint32_t used;
  uint32_t session;
} br__tcursor;
extern _Thread_local br__tcursor br__tcur;
extern _Atomic uint32_t br__trace_session;
br__tev *br__trace_reserve_slow(size_t n);

static inline br__tev *br__trace_reserve(size_t n) {
  br__tcursor *c = &br__tcur;
  if (__builtin_expect(c->chunk && c->used + n <= BR__TCHUNK_EVENTS &&
                           c->session == atomic_load_explicit(&br__trace_session, memory_order_relaxed),
                       1))
    return &c->chunk->ev[c->used];
  return br__trace_reserve_slow(n);
}

/* Publish the n records just written (release: readers see them whole). */
static inline void br__trace_commit(size_t n) {
  br__tcursor *c = &br__tcur;
  c->used += (uint32_t)n;
  atomic_store_explicit(&c->chunk->used, c->used, memory_order_release);
}

static inline void br__trace_put(uint8_t type, uint8_t kind, uint8_t sub, uint32_t loop, uint64_t id,
                                 int64_t arg, uint64_t ts) {
  br__tev *e = br__trace_reserve(1);
  if (!e) return;
  *e = (br__tev){.ts = ts ? ts : br__ticks(), .type = type, .kind = kind, .pad = sub, .loop = loop,
                 .id = id, .arg = arg};
  br__trace_commit(1);
}

/* Emit one record on the calling thread (ts 0: read the clock now). */
void br__trace_emit(uint8_t type, uint8_t kind, uint32_t loop, uint64_t id, int64_t arg,
                    uint64_t ts);
/* Emit one record followed by text (truncated to 31 bytes). */
void br__trace_emit_text(uint8_t type, uint8_t kind, uint32_t loop, uint64_t id, int64_t arg,
                         const char *text);
/* Task hooks (task.c): resume also records the name once per generation. */
void br__trace_resume(struct br__task *t, uint64_t now);
void br__trace_stop(struct br__task *t, uint64_t now);
void br__trace_spawn(struct br__task *t);
/* The names' generation (declared again below with the control calls). */
extern _Atomic uint32_t br__trace_gen;
/* Out of line: record t's name (its first record of this generation). */
void br__trace_name_slow(struct br__task *t, uint64_t now);
void br__trace_ready_slow(struct br__task *t);

/* A direct hand-off, on every switch while tracing: inline (a call with its
 * register saves was half of tracing's cost per switch), one record. */
static inline void br__trace_switch(struct br__task *from, struct br__task *to, uint64_t now) {
  if (!now) now = br__ticks();
  if (__builtin_expect(to->trace_gen != atomic_load_explicit(&br__trace_gen, memory_order_relaxed), 0))
    br__trace_name_slow(to, now);
  uint8_t type = from->state == BR__DONE     ? BR__TEV_END
                 : from->state == BR__PARKED ? BR__TEV_PARK
                                             : BR__TEV_YIELD;
  br__trace_put(BR__TEV_SWITCH, type == BR__TEV_PARK ? from->wait.kind : 0, type, from->loop->serial,
                from->id, (int64_t)to->id, now);
}

/* A parked task is made ready. Woken by the running task (a channel hop):
 * not stamped, inline (a clock read costs ~10 ns on a virtual machine, as
 * much as the rest of the hop; its time is that of the thread's next
 * record, the waker's next stop). From the scheduler (a timer, another
 * thread's wake-up): stamped, out of line. */
static inline void br__trace_ready(struct br__task *t) {
  struct br_loop *L = t->loop;
  if (__builtin_expect(!L->current, 0)) {
    br__trace_ready_slow(t);
    return;
  }
  br__tev *e = br__trace_reserve(1);
  if (!e) return;
  *e = (br__tev){.ts = 0, .type = BR__TEV_READY, .pad = 1, .loop = L->serial, .id = t->id};
  br__trace_commit(1);
}

/* Job hooks for the executors (exec/): one per start and end of a job on
 * the calling thread. kind is BR_WAIT_POOL, _BLOCKING or _PROCPOOL; name
 * may be NULL. */
static inline void br__trace_job_begin(br_wait_kind kind, uint64_t id, const char *name) {
  if (br__tracing()) br__trace_emit_text(BR__TEV_JOB_BEGIN, (uint8_t)kind, 0, id, 0, name);
}
static inline void br__trace_job_end(br_wait_kind kind, uint64_t id, int err) {
  if (br__tracing()) br__trace_emit(BR__TEV_JOB_END, (uint8_t)kind, 0, id, err, 0);
}
/* Name the calling thread's track ("pool worker 2"). */
void br__trace_thread_name(const char *name);

/* Control (obs/trace_api.c). br__trace_enable starts a session keeping at
 * most budget bytes of full chunks in memory (older ones are reused); with
 * spool, full chunks also go to a temporary file, so nothing is lost while
 * the disk keeps up. 0 or a negated errno (the spool file). Not from a
 * signal handler. br__trace_disable stops emitting (async-signal-safe);
 * br__trace_finish also stops the spool. The data stays readable until the
 * next enable. */
int br__trace_enable(size_t budget, bool spool);
void br__trace_disable(void);
void br__trace_finish(void);
/* Chunks of this session reused or lost before they were read. */
uint64_t br__trace_dropped(void);
/* The generation: bumped when chunks are reused, so names are re-recorded. */
extern _Atomic uint32_t br__trace_gen;

/* Readers hold the buffers while they read (no chunk is reused meanwhile;
 * a writer that needs a fresh chunk waits). try: do not wait (signal
 * handlers); false if the lock is taken. */
bool br__trace_hold(bool try);
void br__trace_unhold(void);
/* With the buffers held: every chunk with data (full ones, oldest first,
 * then each thread's current one), at most max of them in out; returns how
 * many there are (may be more than max). Also the session's start (ticks)
 * and how many chunks were reused (dropped). */
size_t br__trace_snapshot(const br__tchunk **out, size_t max, uint64_t *start_ticks,
                          uint64_t *dropped);

/* --- loops and dumps (trace_dump.c) --------------------------------------------- */

/* Every live loop, for br_dump and SIGQUIT (lock-free: a fixed table). */
void br__loop_register(struct br_loop *L);
void br__loop_unregister(struct br_loop *L);

/* Called when the loop would block with no timeout: BR_EDEADLK (after the
 * report) if every task is parked on something only another task of the
 * loop could end, else 0. Loop thread. */
int br__deadlock_check(struct br_loop *L);

/* A sink for dump text: the stdio FILE of br_dump, a raw fd from a signal
 * handler, or the log hook (one call per line). */
typedef struct br__dumpout {
  void (*line)(struct br__dumpout *o, const char *s, size_t n); /* one line, no '\n' */
  void *ud;
  int fd;
} br__dumpout;
/* Write every task of every loop (async-signal-safe: no locks, no malloc,
 * no stdio in the walk). */
void br__dump_all(br__dumpout *o);
void br__dump_loop(br__dumpout *o, struct br_loop *L, int64_t now);

/* A layer above (a pool) adds its part to every dump: at most 8 hooks,
 * each async-signal-safe like the walk itself. */
void br__dump_register(void (*fn)(br__dumpout *o));

/* Hooks the obs layer installs (the core never includes obs): called on a
 * crash report (a stack overflow: from the signal handler), a watchdog
 * report and a deadlock; `why` is a short static word. */
extern void (*_Atomic br__trace_trigger)(const char *why, bool in_signal);
static inline void br__trace_fire(const char *why, bool in_signal) {
  void (*fn)(const char *, bool) = atomic_load_explicit(&br__trace_trigger, memory_order_acquire);
  if (fn) fn(why, in_signal);
}

#endif
