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
 * records are 32 bytes, or 16 for the compact form every switch uses (see
 * br__tcev); a record with text (a task's name) takes 32 bytes more. Full
 * chunks go to one global list, oldest first; once the buffer's budget is
 * used up the oldest full chunk is reused (a flight recorder keeps the last
 * N MiB). Readers (the exporters in obs/) take a snapshot of the chunk list
 * and read each chunk up to its published count.
 */
#ifndef BRAID_CORE_TRACE_H
#define BRAID_CORE_TRACE_H

#include "core/core.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* Records live in 16-byte slots. A full record takes two slots; a record
 * with text is followed by two more holding it (NUL-terminated, at most 31
 * bytes); `text` counts those slots. The byte at offset 8 of a record's
 * first slot is its type: readers walk a chunk by it. */
enum { BR__TSLOT = 16 };

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

/* A compact record: one slot, for the records of every switch. Written
 * whenever its fields fit (the time within 2^32 ticks of the chunk's base,
 * a 16-bit loop serial, a 32-bit id and arg); otherwise the same record
 * goes out full. Half the bytes a switch: a whole-run trace keeps twice
 * the switches in the memory it fills in at the start, and spools half the
 * bytes beyond (what cost a traced switch benchmark most). */
typedef struct br__tcev {
  uint32_t dts;   /* ticks since the chunk's base */
  int32_t arg;
  uint8_t type;   /* br__tev_type | BR__TEV_COMPACT */
  uint8_t kind;   /* kind (low 4 bits), pad (high 4 bits) */
  uint16_t loop;
  uint32_t id;
} br__tcev;
enum { BR__TEV_COMPACT = 0x80 };
_Static_assert(sizeof(br__tev) == 2 * BR__TSLOT && sizeof(br__tcev) == BR__TSLOT, "record sizes");
_Static_assert(offsetof(br__tev, type) == 8 && offsetof(br__tcev, type) == 8 &&
                   offsetof(br__tcev, kind) == 9 && offsetof(br__tcev, loop) == 10 &&
                   offsetof(br__tcev, id) == 12,
               "the type byte; br__trace_switch writes a compact record as two words");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "br__trace_switch writes a compact record as two little-endian words"
#endif
_Static_assert((int)BR__TEV_TYPES < (int)BR__TEV_COMPACT, "the compact flag");

enum { BR__TCHUNK_SLOTS = 4096 }; /* 64 KiB of records per chunk */

typedef struct br__tchunk {
  struct br__tchunk *next;  /* in the full list, oldest first */
  uint64_t seq;             /* global order in which chunks were started */
  int32_t tid;              /* the OS thread that wrote it */
  int32_t pid;
  _Atomic uint32_t used;    /* slots published (release) */
  uint32_t pad;
  uint64_t base;            /* br__ticks() when the chunk was started */
  uint64_t pad2;
  _Alignas(16) unsigned char slot[BR__TCHUNK_SLOTS][BR__TSLOT];
} br__tchunk;

/* Read a chunk's record at slot i (< used) into *e; returns the slots it
 * takes (with its text, then *text points at it), 0 at a filler slot. For
 * the exporters: one decoder for both record sizes. */
static inline uint32_t br__trace_decode(const br__tchunk *k, uint32_t i, uint32_t used, br__tev *e,
                                        const char **text) {
  const unsigned char *s = k->slot[i];
  *text = NULL;
  if (s[8] & BR__TEV_COMPACT) {
    const br__tcev *c = (const br__tcev *)s;
    *e = (br__tev){.ts = k->base + c->dts, .type = (uint8_t)(c->type & ~BR__TEV_COMPACT),
                   .kind = c->kind & 15, .pad = c->kind >> 4, .loop = c->loop, .id = c->id,
                   .arg = c->arg};
    return 1;
  }
  if (s[8] == BR__TEV_PAD || i + 2 > used) return 0;
  memcpy(e, s, sizeof *e);
  if (e->text && i + 2 + e->text <= used) *text = (const char *)k->slot[i + 2];
  return 2u + e->text;
}

/* Whether tracing is on: one relaxed load, predicted false. */
extern _Atomic int br__trace_flag;
static inline int br__tracing(void) {
  return __builtin_expect(atomic_load_explicit(&br__trace_flag, memory_order_relaxed), 0);
}

/* The calling thread's place in its current chunk: the fast path of an
 * emit is a bounds check, a session check and the stores of the record.
 * The switch records check the session through gen instead (one load
 * serves their name check too): a new session bumps br__trace_gen, so a
 * cursor whose gen is the current one is on a chunk of this session. */
typedef struct br__tcursor {
  br__tchunk *chunk;
  uint32_t used;     /* slots written */
  uint32_t session;
  uint64_t base;     /* chunk->base */
  uint32_t gen;      /* br__trace_gen when the session was last checked; 0 never */
} br__tcursor;
/* initial-exec: a fixed offset from the thread pointer, not a call to
 * __tls_get_addr per access from the shared library (as br__pool_tls_w). */
extern _Thread_local br__tcursor br__tcur __attribute__((tls_model("initial-exec")));
extern _Atomic uint32_t br__trace_session;
void *br__trace_reserve_slow(size_t n);

/* Room for n slots in the calling thread's chunk (NULL: out of memory). */
static inline void *br__trace_reserve(size_t n) {
  br__tcursor *c = &br__tcur;
  if (__builtin_expect(c->chunk && c->used + n <= BR__TCHUNK_SLOTS &&
                           c->session == atomic_load_explicit(&br__trace_session, memory_order_relaxed),
                       1))
    return c->chunk->slot[c->used];
  return br__trace_reserve_slow(n);
}

/* Publish the n slots just written (release: readers see them whole). */
static inline void br__trace_commit(size_t n) {
  br__tcursor *c = &br__tcur;
  c->used += (uint32_t)n;
  atomic_store_explicit(&c->chunk->used, c->used, memory_order_release);
}

/* One record without text: compact when it fits. */
static inline void br__trace_put(uint8_t type, uint8_t kind, uint8_t sub, uint32_t loop, uint64_t id,
                                 int64_t arg, uint64_t ts) {
  void *p = br__trace_reserve(2);
  if (!p) return;
  if (!ts) ts = br__ticks();
  uint64_t d = ts - br__tcur.base; /* wraps (does not fit) when ts is older than the base */
  if (__builtin_expect(d <= UINT32_MAX && loop <= UINT16_MAX && id <= UINT32_MAX && arg == (int32_t)arg &&
                           kind < 16 && sub < 16,
                       1)) {
    *(br__tcev *)p = (br__tcev){.dts = (uint32_t)d, .arg = (int32_t)arg, .type = type | BR__TEV_COMPACT,
                                .kind = (uint8_t)(kind | sub << 4), .loop = (uint16_t)loop,
                                .id = (uint32_t)id};
    br__trace_commit(1);
    return;
  }
  *(br__tev *)p =
      (br__tev){.ts = ts, .type = type, .kind = kind, .pad = sub, .loop = loop, .id = id, .arg = arg};
  br__trace_commit(2);
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
/* Out of line: the switch and wake-up records when the fast path's checks
 * fail (a name to record, a new chunk or session, fields too wide for a
 * compact record). */
void br__trace_switch_slow(struct br__task *from, struct br__task *to, uint64_t now);
void br__trace_ready_slow(struct br__task *t);

static inline uint8_t br__trace_stop_type(const struct br__task *t) {
  return t->state == BR__DONE ? BR__TEV_END : t->state == BR__PARKED ? BR__TEV_PARK : BR__TEV_YIELD;
}

/* A direct hand-off, on every switch while tracing: inline (a call with its
 * register saves was half of tracing's cost per switch), one compact
 * record. When the last slot is the unpublished wake-up of `to` (the
 * running task woke it, then handed off to it: a channel hop), the switch
 * takes its place: the hand-off ends to's wait at the same instant, so the
 * exporters draw the same slices from one record as from the two. */
static inline void br__trace_switch(struct br__task *from, struct br__task *to, uint64_t now) {
  if (!now) now = br__ticks();
  br__tcursor *c = &br__tcur;
  uint32_t g = atomic_load_explicit(&br__trace_gen, memory_order_relaxed);
  uint32_t used = c->used, serial = from->loop->serial;
  uint64_t fid = from->id, tid = to->id, d = now - c->base;
  if (__builtin_expect(c->gen == g && to->trace_gen == g && used < BR__TCHUNK_SLOTS &&
                           ((d | fid | tid) >> 32 | serial >> 16) == 0,
                       1)) {
    br__tchunk *k = c->chunk;
    if (used > atomic_load_explicit(&k->used, memory_order_relaxed)) { /* an unpublished wake-up */
      const br__tcev *r = (const br__tcev *)k->slot[used - 1];
      if (r->type == (BR__TEV_READY | BR__TEV_COMPACT) && r->id == tid && r->loop == serial) used--;
    }
    uint8_t type = br__trace_stop_type(from);
    uint64_t kind = type == BR__TEV_PARK ? (from->wait.kind & 15) : 0;
    /* The record as two words (two stores, not one per field). */
    uint64_t *w = (uint64_t *)k->slot[used];
    w[0] = (uint32_t)d | tid << 32;
    w[1] = (BR__TEV_SWITCH | BR__TEV_COMPACT) | (kind | (uint64_t)type << 4) << 8 | (uint64_t)serial << 16 |
           fid << 32;
    c->used = ++used;
    atomic_store_explicit(&k->used, used, memory_order_release);
    return;
  }
  br__trace_switch_slow(from, to, now);
}

/* A parked task is made ready. Woken by the running task (a channel hop):
 * not stamped, inline (a clock read costs ~10 ns on a virtual machine, as
 * much as the rest of the hop; its time is that of the thread's next
 * record, the waker's next stop), and not published: the thread's next
 * record publishes it with itself, or replaces it (br__trace_switch). A
 * reader, even a signal handler on this thread, never sees it before the
 * record that gives its time. From the scheduler (a timer, another
 * thread's wake-up): stamped, out of line. */
static inline void br__trace_ready(struct br__task *t) {
  struct br_loop *L = t->loop;
  br__tcursor *c = &br__tcur;
  uint32_t g = atomic_load_explicit(&br__trace_gen, memory_order_relaxed);
  if (__builtin_expect(L->current && c->gen == g && c->used < BR__TCHUNK_SLOTS &&
                           (t->id >> 32 | L->serial >> 16) == 0,
                       1)) {
    *(br__tcev *)c->chunk->slot[c->used++] = (br__tcev){
        .type = BR__TEV_READY | BR__TEV_COMPACT, .kind = 1 << 4, .loop = (uint16_t)L->serial,
        .id = (uint32_t)t->id};
    return;
  }
  br__trace_ready_slow(t);
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
 * spool, the oldest full chunks beyond half the budget go to a temporary
 * file, so nothing is lost while the disk keeps up. 0 or a negated errno
 * (the spool file). Not from a
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
