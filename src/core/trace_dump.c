/* SPDX-License-Identifier: MIT */
/* braid — task dumps and the deadlock check.
 *
 * The dump walks every registered loop's task list and prints each task's
 * wait record (core/trace.h). It may run in a signal handler while the loop
 * thread is stuck in a blocking call, or while it runs on: it takes no lock,
 * allocates nothing and formats without stdio, so it cannot wait on
 * anything the stuck thread holds. Task structs are recycled, never freed,
 * while their loop lives, so a racing walk reads stale fields at worst and
 * checks each task's magic before trusting it.
 */
#include "core/trace.h"

#include <braid/trace.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "sys/clock.h"

/* --- names of wait kinds --------------------------------------------------- */

static const char *const kind_names[BR_WAIT_KINDS] = {
    [BR_WAIT_NONE] = "none",         [BR_WAIT_SLEEP] = "sleep",   [BR_WAIT_FD] = "fd",
    [BR_WAIT_JOIN] = "join",         [BR_WAIT_FUTURE] = "future", [BR_WAIT_CHAN] = "channel",
    [BR_WAIT_LOCK] = "lock",         [BR_WAIT_CHILD] = "child",   [BR_WAIT_GROUP] = "group",
    [BR_WAIT_POOL] = "pool",         [BR_WAIT_BLOCKING] = "blocking",
    [BR_WAIT_PROCPOOL] = "procpool", [BR_WAIT_IO] = "io",
};

const char *br_wait_kind_name(br_wait_kind k) {
  return (unsigned)k < BR_WAIT_KINDS ? kind_names[k] : "?";
}

/* --- the loop registry ------------------------------------------------------- */

enum { MAX_LOOPS = 1024 };
static struct br_loop *_Atomic loops[MAX_LOOPS];
static _Atomic uint32_t next_serial;

void br__loop_register(struct br_loop *L) {
  L->serial = atomic_fetch_add(&next_serial, 1) + 1;
  const char *e = getenv("BRAID_DEADLOCK");
  if (e && !strcmp(e, "off")) L->no_deadlock_check = true;
  for (int i = 0; i < MAX_LOOPS; i++) {
    struct br_loop *none = NULL;
    if (atomic_compare_exchange_strong(&loops[i], &none, L)) return;
  }
  /* Full: the loop works, it is just left out of dumps. */
}

void br__loop_unregister(struct br_loop *L) {
  for (int i = 0; i < MAX_LOOPS; i++) {
    struct br_loop *me = L;
    if (atomic_compare_exchange_strong(&loops[i], &me, NULL)) return;
  }
}

int br_loop_set_deadlock_check(br_loop *L, bool on) {
  if (!L) return BR_EINVAL;
  L->no_deadlock_check = !on;
  return 0;
}

/* --- formatting without stdio ------------------------------------------------ */

typedef struct sbuf {
  char b[512];
  size_t n;
} sbuf;

static void put(sbuf *s, const char *t) {
  while (*t && s->n < sizeof s->b - 1) s->b[s->n++] = *t++;
  s->b[s->n] = 0;
}

static void put_u(sbuf *s, uint64_t v) {
  char d[24];
  int i = 0;
  do d[i++] = (char)('0' + v % 10); while ((v /= 10) && i < 23);
  while (i && s->n < sizeof s->b - 1) s->b[s->n++] = d[--i];
  s->b[s->n] = 0;
}

static void put_i(sbuf *s, int64_t v) {
  if (v < 0) {
    put(s, "-");
    put_u(s, (uint64_t)0 - (uint64_t)v);
  } else {
    put_u(s, (uint64_t)v);
  }
}

/* A duration: "850 us", "12 ms", "3.4 s". */
static void put_dur(sbuf *s, int64_t ns) {
  if (ns < 0) ns = 0;
  if (ns < 1000000) {
    put_u(s, (uint64_t)ns / 1000);
    put(s, " us");
  } else if (ns < 10000000000) {
    put_u(s, (uint64_t)ns / 1000000);
    put(s, " ms");
  } else {
    put_u(s, (uint64_t)ns / 1000000000);
    put(s, ".");
    put_u(s, (uint64_t)(ns / 100000000) % 10);
    put(s, " s");
  }
}

static void put_task(sbuf *s, struct br__task *t) {
  put(s, "task '");
  put(s, br__task_valid(t) && t->name[0] ? t->name : "");
  if (!br__task_valid(t) || !t->name[0]) {
    s->n--; /* no quotes for an unnamed task */
    put(s, "task-");
    put_u(s, br__task_valid(t) ? t->id : 0);
  } else {
    put(s, "'");
  }
}

static void emit(br__dumpout *o, sbuf *s) {
  o->line(o, s->b, s->n);
  s->n = 0;
  s->b[0] = 0;
}

static struct br__task *find_task(struct br_loop *L, uint64_t id) {
  int guard = 0;
  for (struct br__task *t = L->all; t && guard < 1000000; t = t->all_next, guard++)
    if (br__task_valid(t) && t->id == id) return t;
  return NULL;
}

static const char *state_name(uint8_t st) {
  switch (st) {
  case BR__NEW: return "new";
  case BR__READY: return "ready";
  case BR__RUNNING: return "running";
  case BR__PARKED: return "parked";
  default: return "done";
  }
}

/* What t waits on, in words: "channel receive", "fd 5 for reading",
 * "join of task 'worker'", "mutex held by task 'Z'", "timer due in 3 ms". */
static void put_wait(sbuf *s, struct br__task *t, int64_t now) {
  const br__wait *w = &t->wait;
  switch (w->kind) {
  case BR_WAIT_SLEEP: put(s, "sleep"); break;
  case BR_WAIT_FD:
    put(s, "fd ");
    put_i(s, w->arg);
    put(s, " for ");
    put(s, w->what && !strcmp(w->what, "write") ? "writing"
           : w->what && !strcmp(w->what, "read/write") ? "reading or writing" : "reading");
    break;
  case BR_WAIT_JOIN:
    put(s, "join of ");
    put_task(s, w->task);
    break;
  case BR_WAIT_LOCK:
    put(s, w->what ? w->what : "lock");
    if (w->task && br__task_valid(w->task)) {
      put(s, " held by ");
      put_task(s, w->task);
    }
    break;
  case BR_WAIT_CHILD:
    put(s, "child pid ");
    put_i(s, w->arg);
    break;
  case BR_WAIT_GROUP: put(s, "its group's children"); break;
  case BR_WAIT_POOL: put(s, "a CPU-pool job"); break;
  case BR_WAIT_BLOCKING: put(s, "a blocking-pool call"); break;
  case BR_WAIT_PROCPOOL: put(s, "a process-pool job"); break;
  case BR_WAIT_IO: put(s, "submitted I/O"); break;
  case BR_WAIT_FUTURE: put(s, w->what && !strcmp(w->what, "any of") ? "any of several futures" : "a future"); break;
  case BR_WAIT_CHAN: put(s, w->what ? w->what : "channel"); break;
  default: put(s, "a wake-up"); break;
  }
  if (w->deadline != BR_NEVER && w->deadline > 0) {
    put(s, w->kind == BR_WAIT_SLEEP ? ", timer due in " : ", deadline in ");
    put_dur(s, w->deadline - now);
  }
}

static void put_stack(sbuf *s, struct br__task *t) {
  if (t->compact) {
    put(s, "; compact, ");
    put_u(s, t->saved_len / 1024);
    put(s, " KiB saved");
    return;
  }
  if (!t->stack) return;
  char *lo = t->stack->lo, *top = lo + t->stack->size, *sp = t->ctx.sp;
  put(s, "; stack ");
  if (t->state != BR__RUNNING && sp > lo && sp <= top) {
    put_u(s, (uint64_t)(top - sp + 1023) / 1024);
    put(s, " of ");
  }
  put_u(s, t->stack->size / 1024);
  put(s, " KiB");
}

void br__dump_loop(br__dumpout *o, struct br_loop *L, int64_t now) {
  sbuf s = {.n = 0};
  size_t parked = 0, ready = 0, ntasks = 0;
  int guard = 0;
  for (struct br__task *t = L->all; t && guard < 10000000; t = t->all_next, guard++) {
    if (!br__task_valid(t) || t->state == BR__DONE) continue;
    ntasks++;
    if (t->state == BR__PARKED) parked++;
    else if (t->state != BR__RUNNING) ready++;
  }
  put(&s, "loop ");
  put_u(&s, L->serial);
  put(&s, ": ");
  put_u(&s, ntasks);
  put(&s, ntasks == 1 ? " task (" : " tasks (");
  put_u(&s, ready);
  put(&s, " ready, ");
  put_u(&s, parked);
  put(&s, " parked), ");
  put_u(&s, br__timer_count(&L->timers));
  put(&s, br__timer_count(&L->timers) == 1 ? " timer" : " timers");
  if (L->current) {
    put(&s, "; running ");
    put_task(&s, L->current);
  }
  emit(o, &s);
  guard = 0;
  uint64_t now_ticks = br__ticks();
  for (struct br__task *t = L->all; t && guard < 10000000; t = t->all_next, guard++) {
    if (!br__task_valid(t) || t->state == BR__DONE) continue;
    put(&s, "  ");
    put_task(&s, t);
    put(&s, " #");
    put_u(&s, t->id);
    put(&s, " ");
    put(&s, state_name(t->state));
    if (t->state == BR__PARKED) {
      if (t->suspended_at && L->acct != BR_ACCT_OFF) {
        put(&s, " ");
        put_dur(&s, br__ticks_to_ns(now_ticks - t->suspended_at));
      }
      put(&s, " on ");
      put_wait(&s, t, now);
    }
    if (t->cancelled) put(&s, " (cancelled)");
    put_stack(&s, t);
    if (t->parent_id) {
      struct br__task *p = find_task(L, t->parent_id);
      put(&s, "; parent ");
      if (p) {
        put_task(&s, p);
      } else {
        put(&s, "#");
        put_u(&s, t->parent_id);
        put(&s, " (done)");
      }
    }
    emit(o, &s);
  }
}

/* Hooks of the layers above (the pools) that add their queues to a dump. */
enum { MAX_DUMP_HOOKS = 8 };
static void (*_Atomic dump_hooks[MAX_DUMP_HOOKS])(br__dumpout *o);

void br__dump_register(void (*fn)(br__dumpout *o)) {
  for (int i = 0; i < MAX_DUMP_HOOKS; i++) {
    void (*none)(br__dumpout *) = NULL;
    if (atomic_load(&dump_hooks[i]) == fn) return;
    if (atomic_compare_exchange_strong(&dump_hooks[i], &none, fn)) return;
  }
}

void br__dump_all(br__dumpout *o) {
  sbuf s = {.n = 0};
  put(&s, "task dump of pid ");
  put_u(&s, (uint64_t)getpid());
  emit(o, &s);
  int64_t now = br__mono_ns();
  for (int i = 0; i < MAX_LOOPS; i++) {
    struct br_loop *L = atomic_load(&loops[i]);
    if (L) br__dump_loop(o, L, now);
  }
  for (int i = 0; i < MAX_DUMP_HOOKS; i++) {
    void (*fn)(br__dumpout *) = atomic_load(&dump_hooks[i]);
    if (fn) fn(o);
  }
}

/* --- br_dump ---------------------------------------------------------------------- */

static void file_line(br__dumpout *o, const char *s, size_t n) {
  FILE *f = o->ud;
  fwrite(s, 1, n, f);
  fputc('\n', f);
}

int br_dump(FILE *out) {
  if (!out) return BR_EINVAL;
  br__dumpout o = {.line = file_line, .ud = out, .fd = -1};
  br__dump_all(&o);
  fflush(out);
  return ferror(out) ? BR_EIO : 0;
}

static void log_line(br__dumpout *o, const char *s, size_t n) {
  (void)o;
  (void)n;
  br__log_raw(BR_LOG_ERROR, s);
}

/* --- deadlock ------------------------------------------------------------------------ */

/* Whether t's wait could only be ended by another task of its loop. */
static bool stuck_locally(struct br_loop *L, struct br__task *t) {
  switch (t->wait.kind) {
  case BR_WAIT_SLEEP: return t->wait.deadline == BR_NEVER; /* and no timer is set */
  case BR_WAIT_JOIN: return t->wait.task && br__task_valid(t->wait.task) && t->wait.task->loop == L;
  case BR_WAIT_CHAN:
  case BR_WAIT_LOCK:
  case BR_WAIT_GROUP:
    return !t->park_remote;
  default:
    /* fd, child, a future some other thread may complete, a pool job, a
     * wait the core cannot name: something outside may end it. */
    return false;
  }
}

int br__deadlock_check(struct br_loop *L) {
  if (L->no_deadlock_check || atomic_load_explicit(&L->foreign_cbs, memory_order_relaxed))
    return 0;
  if (!L->live || L->rq_head || L->cb_head || br__timer_count(&L->timers) ||
      atomic_load_explicit(&L->remote_pending, memory_order_acquire))
    return 0;
  for (struct br__task *t = L->all; t; t = t->all_next) {
    if (t->state == BR__DONE) continue;
    if (t->state != BR__PARKED || !stuck_locally(L, t)) return 0;
  }
  br__log(BR_LOG_ERROR, "all tasks are asleep: deadlock (loop %u)", L->serial);
  br__dumpout o = {.line = log_line, .fd = -1};
  br__dump_loop(&o, L, br__mono_ns());
  br__trace_fire("deadlock", false);
  return BR_EDEADLK;
}
