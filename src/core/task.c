/* SPDX-License-Identifier: MIT */
/* braid — tasks: spawning, switching, parking and waking, joining.
 *
 * Switching is asymmetric: a task always switches to its loop's scheduler
 * context and the scheduler picks the next task. That keeps one place where
 * compact (shared-stack) tasks have their frames copied in and out, and
 * where finished tasks give their stacks back (a task cannot unmap the stack
 * it is running on).
 *
 * Parking protocol (works across threads): a task that is about to wait sets
 * its `parked` flag to 1 *before* it publishes itself in any wait structure.
 * A waker claims the wake-up by exchanging the flag to 0; only the claimer
 * makes the task ready. So a timeout, a cancel and a completion racing on
 * different threads wake the task exactly once, and the loser just leaves.
 */
#include "core/core.h"
#include "core/log.h"
#include "core/job.h"
#include "core/trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sys/clock.h"
#include "sys/fiber_san.h"

_Thread_local struct br_loop *br__tls_loop;

#ifdef BRAID_ASAN
static _Thread_local void *asan_fake;
static _Thread_local const void *sched_bottom;
static _Thread_local size_t sched_size;
/* Whether the switch in flight comes from the scheduler: only then is the
 * "old stack" that a new task learns from ASan the scheduler's own. */
static _Thread_local bool from_sched;
#endif

/* ------------------------------------------------------------------------ */


bool br__task_valid(const struct br__task *t) {
  return t && t->magic == BR__TASK_MAGIC;
}

static void overflow_abort(struct br__task *t, const char *how) {
  br__log(BR_LOG_ERROR, "task '%s' overflowed its %zu KiB stack (%s)", br__task_name(t),
          (t->compact ? t->loop->shared->size : t->stack->size) / 1024, how);
  abort();
}

/* --- accounting ---------------------------------------------------------- */

/* One clock read per switch serves both sides: it ends the slice of the task
 * that stops and starts the slice of the one that resumes. */
/* As acct_suspend, with the clock already read (now != 0). */
static inline uint64_t acct_suspend_at(struct br_loop *L, struct br__task *t, uint64_t now) {
  t->run_ticks += now - t->resumed_at;
  t->suspended_at = now;
  if (L->acct == BR_ACCT_PRECISE) t->cpu_ns += br__thread_cpu_ns() - t->cpu_at;
  return now;
}

/* The clock read of the last switch into the scheduler (a task parked or
 * finished), for the resume that the scheduler makes right after it: the
 * few nanoseconds in between (retiring a finished task) are nobody's run
 * time, and a second read of the cycle counter (~10 ns on a VM) would cost
 * more than they are worth. 0: none since the scheduler last resumed. */
static _Thread_local uint64_t sched_stamp;

static inline uint64_t acct_suspend(struct br_loop *L, struct br__task *t) {
  if (L->acct == BR_ACCT_OFF) return 0;
  uint64_t now = br__ticks();
  t->run_ticks += now - t->resumed_at;
  t->suspended_at = now;
  if (L->acct == BR_ACCT_PRECISE) t->cpu_ns += br__thread_cpu_ns() - t->cpu_at;
  return now;
}

static inline void acct_resume(struct br_loop *L, struct br__task *t, uint64_t now) {
  t->switches++;
  if (L->acct == BR_ACCT_OFF) return;
  t->resumed_at = now ? now : br__ticks();
  if (L->acct == BR_ACCT_PRECISE) t->cpu_at = br__thread_cpu_ns();
  /* The wait record is still set: its time goes to its kind. */
  if (t->wait.kind && t->suspended_at) {
    unsigned k = t->wait.kind, bit = 1u << k;
    uint64_t d = t->resumed_at - t->suspended_at;
    if (t->wait_seen & bit) {
      t->wait_ticks[k] += d;
    } else {
      t->wait_ticks[k] = d;
      t->wait_seen = (uint16_t)(t->wait_seen | bit);
    }
  }
}

/* --- compact mode: copying frames on and off the shared stack ------------- */

#ifdef BRAID_ASAN
__attribute__((no_sanitize("address")))
#else
__attribute__((unused))
#endif
static void raw_copy(char *dst, const char *src, size_t n) {
  /* Stack frames carry ASan redzones; copy them without instrumentation. */
  for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

static void shared_save(struct br_loop *L, struct br__task *t) {
  char *top = L->shared->lo + L->shared->size;
  char *sp = t->ctx.sp;
  if (sp < L->shared->lo) sp = L->shared->lo;
  size_t len = (size_t)(top - sp);
  if (len > t->saved_cap) {
    size_t cap = (len + 63) & ~(size_t)63; /* tight: a million of these add up */
    char *b = realloc(t->saved, cap);
    if (!b) {
      br__log(BR_LOG_ERROR, "out of memory saving compact task '%s' (%zu bytes)",
              br__task_name(t), len);
      abort();
    }
    t->saved = b;
    t->saved_cap = cap;
  }
#ifdef BRAID_ASAN
  raw_copy(t->saved, sp, len);
#else
  memcpy(t->saved, sp, len);
#endif
  t->saved_len = len;
}

static void shared_restore(struct br_loop *L, struct br__task *t) {
  char *top = L->shared->lo + L->shared->size;
  BR__ASAN_UNPOISON(L->shared->lo, L->shared->size);
#ifdef BRAID_ASAN
  raw_copy(top - t->saved_len, t->saved, t->saved_len);
#else
  memcpy(top - t->saved_len, t->saved, t->saved_len);
#endif
}

void *br__task_addr_slow(struct br__task *t, void *p) {
  struct br_loop *L = t->loop;
  if (L->shared_owner == t) return p;
  char *top = L->shared->lo + L->shared->size;
  char *c = p;
  if (c >= top - t->saved_len && c < top) return t->saved + (c - (top - t->saved_len));
  return p; /* not on its stack (heap or static): valid as is */
}

/* --- the task body's frame ----------------------------------------------- */

static void task_finish(struct br__task *t, void *result);

static void task_entry(void *arg) {
  struct br__task *t = arg;
#ifdef BRAID_ASAN
  if (from_sched)
    BR__ASAN_FINISH(NULL, &sched_bottom, &sched_size);
  else
    BR__ASAN_FINISH(NULL, NULL, NULL);
#endif
  void *r = t->fn(t->arg);
  task_finish(t, r);
}

static void retire(struct br_loop *L, struct br__task *t);

/* Make n the running task: put its frames on the shared stack if it is a
 * compact task, and do the bookkeeping of a resume. Runs on the stack of
 * whoever switches to n, which is never the shared stack when n is compact
 * (compact -> compact always goes through the scheduler). */
static inline void resume_prepare(struct br_loop *L, struct br__task *n, uint64_t now) {
  if (n->compact && L->shared_owner != n) {
    if (L->shared_owner) shared_save(L, L->shared_owner);
    if (n->state == BR__NEW) {
      /* The previous owner's frames left ASan redzones behind. */
      BR__ASAN_UNPOISON(L->shared->lo, L->shared->size);
      br__ctx_make(&n->ctx, L->shared->lo, L->shared->size, task_entry, n);
    } else {
      shared_restore(L, n);
    }
    L->shared_owner = n;
  }
  n->state = BR__RUNNING;
  L->current = n;
  acct_resume(L, n, now);
#ifdef BRAID_TSAN
  if (!n->tsan_fiber) n->tsan_fiber = BR__TSAN_CREATE();
#endif
}

#ifdef BRAID_ASAN
/* The stack t runs on (ASan is told about every switch). */
static inline br__stack *stack_of(struct br_loop *L, struct br__task *t) {
  return t->compact ? L->shared : t->stack;
}
#endif

/* Cache lines of a parked task's stack that its resume reads first: the
 * switch's saved registers and the frames it returns through (br__park_end,
 * the wait that parked, the task's own). Measured on 100,000 sleepers woken
 * together: 2 lines took the wake-ups from 62 to 35 ms, 4 to 22 ms, 8 to
 * 43 ms (the extra lines crowd out the useful ones). */
enum { RESUME_LINES = 4 };

static inline struct br__task *rq_pop(struct br_loop *L) {
  struct br__task *n = L->rq_head;
  L->rq_head = n->next;
  if (!L->rq_head) {
    L->rq_tail = NULL;
  } else {
    /* The task after n runs next: start fetching the top of its frames
     * while n runs, and the struct of the one after it (whose frames the
     * next pop fetches). Tasks woken in a crowd (a thousand timers, a
     * thousand sockets) are cold, and each would otherwise stall on these
     * misses in turn. A prefetch never faults. */
    struct br__task *m = L->rq_head;
    const char *sp = m->ctx.sp;
    /* (A compact task's frames are copied back onto the shared stack, and
     * a new one has no context yet.) */
    if (!m->compact && m->state == BR__NEW) /* its first frames grow down from here */
      for (int i = 0; i < RESUME_LINES; i++) __builtin_prefetch(sp - 64 * i, 1);
    else if (!m->compact)
      for (int i = 0; i < RESUME_LINES; i++) __builtin_prefetch(sp + 64 * i);
    if (m->next) __builtin_prefetch(m->next, 1);
  }
  L->ready--;
  return n;
}

/* Switch away from the running task t (already parked or re-queued).
 *
 * If the next ready task can be entered directly, switch to it without
 * visiting the scheduler: one context switch per hand-off instead of two.
 * That is allowed while the iteration's budget lasts (so the poller still
 * runs regularly) and unless both tasks are compact (copying frames on and
 * off the shared stack must not happen while running on it). */
static void suspend(struct br_loop *L, struct br__task *t) {
  uint64_t now = acct_suspend(L, t);
  if (t->stack && !br__stack_canary_ok(t->stack)) overflow_abort(t, "canary smashed");
  struct br__task *n = L->rq_head;
  if (n && L->budget && !(t->compact && n->compact)) {
    rq_pop(L);
    L->budget--;
    if (n == t) { /* nobody else is ready: carry on */
      t->state = BR__RUNNING;
      acct_resume(L, t, now);
      return; /* its run slice goes on: nothing to trace */
    }
    resume_prepare(L, n, now);
    if (br__tracing()) br__trace_switch(t, n, now); /* one record for the hand-off */
#ifdef BRAID_ASAN
    br__stack *ns = stack_of(L, n);
    from_sched = false;
    BR__ASAN_START(&asan_fake, ns->lo, ns->size);
#endif
    BR__TSAN_SWITCH(n->tsan_fiber);
    br__ctx_switch(&t->ctx, &n->ctx);
    BR__ASAN_FINISH(asan_fake, NULL, NULL);
    return;
  }
  if (br__tracing()) br__trace_stop(t, now);
  sched_stamp = now;
  BR__ASAN_START(&asan_fake, sched_bottom, sched_size);
  BR__TSAN_SWITCH(L->sched_tsan);
  br__ctx_switch(&t->ctx, &L->sched);
  BR__ASAN_FINISH(asan_fake, NULL, NULL);
}

/* --- scheduler side ------------------------------------------------------ */


static void retire(struct br_loop *L, struct br__task *t) {
  /* The body has returned and we are back on the scheduler stack. */
  if (t->stack) {
    br__stack_put(&L->stacks, t->stack);
    t->stack = NULL;
  }
  if (t->compact && L->shared_owner == t) L->shared_owner = NULL;
  free(t->saved);
  t->saved = NULL;
  t->saved_len = t->saved_cap = 0;
#ifdef BRAID_TSAN
  if (t->tsan_fiber) BR__TSAN_DESTROY(t->tsan_fiber);
  t->tsan_fiber = NULL;
#endif
  /* Drop the running task's own reference to its future/memory. */
  br_future_unref(&t->fut);
}

/* Run the ready queue for one iteration: the tasks ready now plus a fixed
 * allowance for tasks they wake (so a ping-pong pair hands off directly
 * instead of bouncing through the poller). */
void br__run_ready(struct br_loop *L) {
  L->budget = L->ready + 256;
  sched_stamp = 0; /* the first resume reads the clock */
  while (L->budget && L->rq_head) {
    struct br__task *t = rq_pop(L);
    L->budget--;
    uint64_t now = sched_stamp;
    sched_stamp = 0;
    resume_prepare(L, t, now);
    if (br__tracing()) br__trace_resume(t, now);
#ifdef BRAID_ASAN
    br__stack *s = stack_of(L, t);
    from_sched = true;
    BR__ASAN_START(&asan_fake, s->lo, s->size);
#endif
    BR__TSAN_SWITCH(t->tsan_fiber);
    br__ctx_switch(&L->sched, &t->ctx);
    BR__ASAN_FINISH(asan_fake, NULL, NULL);
    /* Whoever switched back is current now (tasks hand off directly). */
    struct br__task *back = L->current;
    L->current = NULL;
    if (back && back->state == BR__DONE) retire(L, back);
  }
}

void br__ready(struct br__task *t) {
  struct br_loop *L = t->loop;
  if (br__tracing() && t->state == BR__PARKED) br__trace_ready(t);
  if (t->state != BR__NEW) t->state = BR__READY;
  t->next = NULL;
  if (L->rq_tail)
    L->rq_tail->next = t;
  else
    L->rq_head = t;
  L->rq_tail = t;
  L->ready++;
}

void br__wake(struct br__task *t, int code) {
  /* A task parked where no other thread can reach it (a channel, a timer,
   * a task's future) can only be woken from this thread: a plain load and
   * store do. One parked on a foreign future races with its completer on
   * another thread, so the claim must be an atomic exchange. */
  if (t->park_remote) {
    if (atomic_exchange_explicit(&t->parked, 0, memory_order_acq_rel) != 1) return;
  } else {
    if (atomic_load_explicit(&t->parked, memory_order_relaxed) != 1) return;
    atomic_store_explicit(&t->parked, 0, memory_order_relaxed);
  }
  t->wake_code = code;
  br__ready(t);
}

bool br__wake_any_thread(struct br__task *t, int code) {
  if (atomic_exchange_explicit(&t->parked, 0, memory_order_acq_rel) != 1) return false;
  t->wake_code = code;
  if (br__tls_loop == t->loop && !t->loop->freeing)
    br__ready(t);
  else
    br__remote_push_task(t->loop, t);
  return true;
}

/* --- cancellation state -------------------------------------------------- */

/* A task's scopes live in its frames. For a suspended compact task those
 * frames sit in its save buffer, not on the shared stack, so every scope
 * pointer of a task other than the running one is translated. */
static inline struct br_scope *scope_at(struct br__task *t, struct br_scope *s) {
  return s ? br__task_addr(t, s) : NULL;
}

int br__checkpoint_slow(struct br__task *t) {
  int64_t now = 0;
  for (struct br_scope *s = scope_at(t, t->scope); s; s = scope_at(t, s->br__private.parent)) {
    if (s->br__private.state == 2) return BR_ECANCELED;
    if (s->br__private.state == 1) return BR_ETIMEDOUT;
    if (s->br__private.deadline != BR_NEVER) {
      if (!now) now = br__mono_ns();
      if (now >= s->br__private.deadline) {
        s->br__private.state = 1;
        return BR_ETIMEDOUT;
      }
    }
    if (s->br__private.shield) return 0;
  }
  return t->cancelled ? BR_ECANCELED : 0;
}

bool br__scope_expired(struct br__task *t) {
  int64_t now = 0;
  for (struct br_scope *s = t->scope; s; s = s->br__private.parent) {
    if (s->br__private.state == 1) return true;
    if (s->br__private.deadline != BR_NEVER) {
      if (!now) now = br__mono_ns();
      if (now >= s->br__private.deadline) {
        s->br__private.state = 1;
        return true;
      }
    }
    if (s->br__private.shield) return false;
  }
  return false;
}

static int64_t scope_deadline(struct br__task *t) {
  int64_t d = BR_NEVER;
  for (struct br_scope *s = t->scope; s; s = s->br__private.parent) {
    if (s->br__private.deadline < d) d = s->br__private.deadline;
    if (s->br__private.shield) break;
  }
  return d;
}

/* Whether a cancel of t (task-level) would be seen by its current wait. */
static bool cancel_visible(struct br__task *t) {
  for (struct br_scope *s = scope_at(t, t->scope); s; s = scope_at(t, s->br__private.parent))
    if (s->br__private.shield) return false;
  return true;
}

/* --- parking -------------------------------------------------------------- */

void br__park_begin(struct br__task *t) {
  t->park_remote = false;
  atomic_store_explicit(&t->parked, 1, memory_order_release);
  t->wake_code = 0;
}

void br__park_begin_remote(struct br__task *t) {
  t->park_remote = true;
  atomic_store_explicit(&t->parked, 1, memory_order_release);
  t->wake_code = 0;
}

/* Finish parking (after br__park_begin and publishing the waiter). The wait
 * record (core/trace.h) the caller set lasts exactly as long as the park. */
int br__park_end(struct br__task *t, int64_t deadline, bool cancellable) {
  struct br_loop *L = t->loop;
  if (cancellable) {
    int rc = br__checkpoint(t);
    if (rc) {
      if (atomic_exchange_explicit(&t->parked, 0, memory_order_acq_rel) == 1) {
        t->wait.kind = BR_WAIT_NONE;
        return rc;
      }
      cancellable = false; /* a wake-up is already queued: take it */
      deadline = BR_NEVER;
    } else {
      int64_t sd = scope_deadline(t);
      if (sd < deadline) deadline = sd;
    }
  }
  if (deadline != BR_NEVER) {
    if (br__timer_add(&L->timers, &t->timer, deadline) != 0) {
      if (atomic_exchange_explicit(&t->parked, 0, memory_order_acq_rel) == 1) {
        t->wait.kind = BR_WAIT_NONE;
        return BR_ENOMEM;
      }
    }
  }
  t->state = BR__PARKED;
  t->park_cancellable = cancellable;
  t->wait.deadline = deadline;
  suspend(L, t);
  t->wait.kind = BR_WAIT_NONE;
  br__timer_del(&L->timers, &t->timer);
  return t->wake_code;
}

/* Called by the loop for an expired task timer. */
void br__timer_fired(br__timer *tm) {
  struct br__task *t = (struct br__task *)((char *)tm - offsetof(struct br__task, timer));
  br__wake(t, BR_ETIMEDOUT);
}

static bool parked_cancellable(struct br__task *t) {
  return t->state == BR__PARKED && t->park_cancellable;
}

void br__task_cancel(struct br__task *t) {
  if (t->state == BR__DONE) return;
  t->cancelled = true;
  if (parked_cancellable(t) && cancel_visible(t)) br__wake(t, BR_ECANCELED);
}

void br__scope_cancel_wake(struct br__task *t) {
  if (parked_cancellable(t) && br__checkpoint(t)) br__wake(t, BR_ECANCELED);
}

/* --- spawning -------------------------------------------------------------- */

/* Task structs malloc'd and not yet freed, process-wide: tests check that
 * loops and orphans give every one back (br__task_structs_live, loop.h). */
static atomic_long structs_live;

long br__task_structs_live(void) {
  return atomic_load_explicit(&structs_live, memory_order_relaxed);
}

void br__task_struct_freed(struct br__task *t) {
  br__task_slot_free(t);
  free(t);
  atomic_fetch_sub_explicit(&structs_live, 1, memory_order_relaxed);
}

static struct br__task *task_alloc(struct br_loop *L) {
  struct br__task *t = L->free_tasks;
  if (t) {
    L->free_tasks = t->next;
    return t;
  }
  t = malloc(sizeof *t);
  if (t && br__task_slot_new(t) < 0) {
    free(t);
    return NULL;
  }
  if (t) atomic_fetch_add_explicit(&structs_live, 1, memory_order_relaxed);
  return t;
}

/* The task's memory goes back to its loop's free list. Loop thread only. */
void br__task_free_mem(struct br__task *t) {
  struct br_loop *L = t->loop;
  t->magic = BR__TASK_DEAD;
  br__task_slot_retire(t); /* every handle of this task is stale from now on */
  if (t->all_prev) t->all_prev->all_next = t->all_next; else L->all = t->all_next;
  if (t->all_next) t->all_next->all_prev = t->all_prev;
  free(t->fail_msg);
  t->fail_msg = NULL;
  free(t->fut.msg);
  t->fut.msg = NULL;
  L->handles--;
  t->next = L->free_tasks;
  L->free_tasks = t;
}

/* A task that outlived its loop: plain heap memory now. Any thread. */
void br__task_free_orphan(struct br__task *t) {
  t->magic = BR__TASK_DEAD;
  free(t->fail_msg);
  free(t->fut.msg);
  br__task_struct_freed(t);
}

/* Called by future.c when a task's embedded future loses its last ref, on
 * whichever thread dropped it.
 *
 * On the loop's own thread the loop's lists are ours: free at once. On any
 * other thread the loop may be in br_loop_free right now, so the choice
 * between "hand the memory back to the loop" and "the loop is gone, free it
 * here" is made under the task's future lock: br_loop_free marks every task
 * it still lists as an orphan (and clears t->loop) under that same lock
 * before it drains the hand-back list a last time and releases the loop. So
 * a hand-back made under the lock, with t not yet an orphan, reaches a loop
 * that is still alive and will drain it; one made later finds the orphan
 * mark and frees the memory itself. The lock is held until the loop has
 * been woken: the loop takes it before it reuses handed-back memory, and
 * br_loop_free cannot get past the marking while we hold it, so both t and
 * the loop are alive for as long as we touch them. Lock order: future lock,
 * then the loop's remote_lock (nobody takes a future lock under
 * remote_lock). */
void br__task_future_gone(struct br__task *t) {
  struct br_loop *L = __atomic_load_n(&t->loop, __ATOMIC_ACQUIRE);
  if (L && L == br__tls_loop) {
    br__task_free_mem(t);
    return;
  }
  br__future_lock(&t->fut);
  if (t->orphan) {
    br__future_unlock(&t->fut);
    br__task_free_orphan(t);
    return;
  }
  br__remote_push_free(t->loop, t); /* also wakes the loop: it is alive */
  br__future_unlock(&t->fut);
}

int br__loop_spawn(struct br_loop *L, struct br__task **out, br_task_fn fn, void *arg,
                   const br_spawn_opts *opts) {
  if (!L) return BR_ENOTTASK;
  unsigned flags = opts ? opts->flags : 0;
  bool detached = flags & BR_SPAWN_DETACHED;
  if (!fn || (!out && !detached)) return BR_EINVAL;
  if (out) *out = NULL;
  if (!pthread_equal(L->thread, pthread_self())) return BR_EPERM;
  if (L->freeing) return BR_ESHUTDOWN;
  size_t size = L->stack_size;
  if (opts && opts->stack_size) {
    size = br__stack_round(opts->stack_size);
    if (!size) return BR_EINVAL;
  }
  bool compact = (L->opts.compact || (flags & BR_SPAWN_COMPACT)) && !(flags & BR_SPAWN_OWN_STACK);
  struct br__task *t = task_alloc(L);
  if (!t) return BR_ENOMEM;
  memset(t, 0, offsetof(struct br__task, name) + 1);
  t->loop = L;
  t->fn = fn;
  t->arg = arg;
  t->compact = compact;
  if (!compact) {
    t->stack = br__stack_get(&L->stacks, size);
    if (!t->stack) {
      int e = errno;
      t->next = L->free_tasks;
      L->free_tasks = t;
      br__log(BR_LOG_ERROR, "cannot allocate a %zu KiB task stack: %s (%zu guarded stacks live, "
              "vm.max_map_count budget %zu)", size / 1024, strerror(e),
              br__stack_guarded_live(), br__stack_guard_budget());
      return e == ENOMEM ? BR_ENOMEM : BR_ELIMIT;
    }
    br__ctx_make(&t->ctx, t->stack->lo, t->stack->size, task_entry, t);
  } else if (!L->shared) {
    L->shared = br__stack_get_guarded(&L->stacks, L->stack_size);
    if (!L->shared) {
      t->next = L->free_tasks;
      L->free_tasks = t;
      return BR_ENOMEM;
    }
  }
  t->magic = BR__TASK_MAGIC;
  t->state = BR__NEW;
  t->timer.where = BR__TIMER_IDLE;
  t->id = ++L->next_id;
  if (opts && opts->name) {
    strncpy(t->name, opts->name, sizeof t->name - 1);
    t->name[sizeof t->name - 1] = 0;
  }
  t->parent_id = L->current ? L->current->id : 0;
  if (br__tracing()) br__trace_spawn(t);
  br__future_init(&t->fut, t);
  /* one reference for the running body, one for the handle */
  atomic_store_explicit(&t->fut.refs, detached ? 1 : 2, memory_order_relaxed);
  t->handle_held = !detached;
  t->detached = detached;
  if (L->acct != BR_ACCT_OFF) t->created = br__ticks();
  t->all_next = L->all;
  if (L->all) L->all->all_prev = t;
  L->all = t;
  L->live++;
  L->handles++;
  br__ready(t);
  if (out) *out = t;
  return 0;
}

int br_loop_spawn(br_loop *L, br_task **out, br_task_fn fn, void *arg, const br_spawn_opts *opts) {
  struct br__task *t = NULL;
  int rc = br__loop_spawn(L, out ? &t : NULL, fn, arg, opts);
  if (out) *out = br__task_handle(t);
  return rc;
}

int br_spawn(br_task **out, br_task_fn fn, void *arg, const br_spawn_opts *opts) {
  struct br_loop *L = br__tls_loop;
  if (!L) return BR_ENOTTASK;
  return br_loop_spawn(L, out, fn, arg, opts);
}

/* --- finishing ------------------------------------------------------------ */

static void task_finish(struct br__task *t, void *result) {
  struct br_loop *L = t->loop;
  int err = t->fail_code;
  char *msg = t->fail_msg;
  t->fail_msg = NULL;
  if (!err && t->cancelled) {
    err = BR_ECANCELED;
    msg = br_strdupf("task '%s' was cancelled", br__task_name(t));
  }
  t->result = result;
  /* One clock read stamps the end and closes the last run slice (below). */
  uint64_t now = L->acct != BR_ACCT_OFF ? br__ticks() : 0;
  t->finished = now;
  t->state = BR__DONE;
  L->live--;
  t->fail_code = err;
  t->fail_msg = msg; /* lent to the group for its report */
  br__group_child_done(t);
  t->fail_msg = NULL;
  /* Cancellation is how a detached task is told to stop, not a failure. */
  if (err && err != BR_ECANCELED && t->detached) br__report_failure_code(t, err, msg);
  br__future_complete(&t->fut, result, err, msg);
  /* Last switch: the scheduler retires us (stack back to the cache). */
  if (now) acct_suspend_at(L, t, now);
  if (br__tracing()) br__trace_stop(t, now);
  sched_stamp = now;
  if (t->stack && !br__stack_canary_ok(t->stack)) overflow_abort(t, "canary smashed");
  BR__ASAN_START(NULL, sched_bottom, sched_size);
  BR__TSAN_SWITCH(L->sched_tsan);
  br__ctx_switch(&t->ctx, &L->sched);
  br__ctx_fell_off();
}

/* Outside tasks, br_fail means something to the executor whose job the
 * thread is running: its job context (core/job.h) records the failure. */
void *br_fail(int code, const char *fmt, ...) {
  if (code >= 0) code = BR_EFAILED;
  struct br__task *t = br__require_task();
  br__job_ctx *ctx = t ? NULL : br__job_current();
  if (!t && !(ctx && ctx->ops && ctx->ops->fail)) return NULL;
  va_list ap;
  va_start(ap, fmt);
  char *m = fmt ? br__vfmt(fmt, ap) : NULL;
  va_end(ap);
  if (!t) {
    ctx->ops->fail(ctx, code, m);
    return NULL;
  }
  free(t->fail_msg);
  t->fail_msg = m;
  t->fail_code = code;
  return NULL;
}

/* --- handles --------------------------------------------------------------- */

void br__task_release(struct br__task *t) {
  t->handle_held = false;
  br_future_unref(&t->fut);
}

static int check_handle(struct br__task *t) {
  if (!br__task_valid(t) || !t->handle_held) return BR_EHANDLE;
  return 0;
}

/* Wait until t is done; cancellable or not. */
int br__task_wait_done(struct br__task *self, struct br__task *t, int64_t deadline, bool cancellable) {
  while (!atomic_load_explicit(&t->fut.done, memory_order_acquire)) {
    br__waiter *w = &self->waitnode;
    br__future_lock(&t->fut);
    if (atomic_load_explicit(&t->fut.done, memory_order_relaxed)) {
      br__future_unlock(&t->fut);
      break;
    }
    w->task = self;
    w->futex = NULL;
    w->cb = NULL;
    br__wait_on(self, BR_WAIT_JOIN, "join", t, t, -1);
    br__park_begin(self);
    br__waiter_link(&t->fut, w);
    br__future_unlock(&t->fut);
    int rc = br__park_end(self, deadline, cancellable);
    br__future_lock(&t->fut);
    if (w->linked) br__waiter_unlink(&t->fut, w);
    br__future_unlock(&t->fut);
    br__waiter_settle(w);
    if (rc && !atomic_load_explicit(&t->fut.done, memory_order_acquire)) return rc;
  }
  return 0;
}

static int collect(struct br__task *t, void **result) {
  int err = t->fut.err;
  if (result) *result = t->fut.value;
  br__task_release(t);
  return err;
}

/* The one join: wait for t until the deadline, then collect its outcome
 * into *result and, if res is given, into a br_result with its message. If
 * the wait is interrupted (the joiner is cancelled, or the deadline passes),
 * t is cancelled and waited for (no task outlives its handle), the handle is
 * given back and the interruption's code returned. */
static int join_until(br_task *h, void **result, br_result *res, int64_t deadline) {
  if (result) *result = NULL;
  if (res) *res = (br_result){0};
  struct br__task *t = br__task_get(h);
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = check_handle(t);
  if (rc) return rc;
  if (t == self) return BR_EDEADLK;
  if (t->loop != self->loop) return BR_EINVAL;
  rc = br__task_wait_done(self, t, deadline, true);
  if (rc) {
    br__task_cancel(t);
    br__task_wait_done(self, t, BR_NEVER, false);
    br__task_release(t);
    return rc;
  }
  if (res) {
    res->value = t->fut.value;
    res->err = t->fut.err;
    if (t->fut.err)
      res->msg = br_strdupf("%s", t->fut.msg ? t->fut.msg : br_strerror(t->fut.err));
  }
  return collect(t, result);
}

int br_join(br_task *t, void **result) { return join_until(t, result, NULL, BR_NEVER); }

int br_join_result(br_task *t, br_result *out) {
  if (!out) return BR_EINVAL;
  return join_until(t, NULL, out, BR_NEVER);
}

int br_wait_for(br_task *t, void **result, int64_t timeout_ms) {
  return join_until(t, result, NULL, br_deadline_ms(timeout_ms));
}

int br_task_close(br_task *h) {
  struct br__task *t = br__task_get(h);
  int rc = check_handle(t);
  if (rc) return rc;
  struct br__task *self = br__require_task();
  if (t == self) return BR_EDEADLK;
  struct br_loop *L = t->loop;
  /* Every refusal comes before the cancel: a refused close changes nothing. */
  if (self && self->loop != L) return BR_EINVAL;
  if (!self) {
    if (!pthread_equal(L->thread, pthread_self())) return BR_EPERM;
    if (br__tls_loop && br__tls_loop != L) return BR_EPERM;
    if (L->running) return BR_ENOTTASK;
  }
  br__task_cancel(t);
  if (self)
    br__task_wait_done(self, t, BR_NEVER, false);
  else
    br__run_until(L, t);
  return collect(t, NULL);
}

int br_detach(br_task *h) {
  struct br__task *t = br__task_get(h);
  int rc = check_handle(t);
  if (rc) return rc;
  /* Giving the handle back may recycle a finished task into its loop's
   * cache: that belongs to the loop's thread, as the run queue does. */
  if (!t->loop) return BR_EHANDLE;
  if (!pthread_equal(t->loop->thread, pthread_self())) return BR_EPERM;
  t->detached = true;
  if (t->state == BR__DONE && t->fut.err && t->fut.err != BR_ECANCELED)
    br__report_failure_code(t, t->fut.err, t->fut.msg);
  br__task_release(t);
  return 0;
}

int br_cancel(br_task *h) {
  struct br__task *t = br__task_get(h);
  if (!br__task_valid(t) || !t->loop) return BR_EHANDLE;
  /* The run queue belongs to the loop's thread. */
  if (!pthread_equal(t->loop->thread, pthread_self())) return BR_EPERM;
  br__task_cancel(t);
  return 0;
}

int br_cancelled(void) {
  struct br__task *t = br__require_task();
  if (t) return br__checkpoint(t);
  br__job_ctx *ctx = br__job_current();
  if (ctx && ctx->ops && ctx->ops->cancelled) return ctx->ops->cancelled(ctx);
  return 0;
}

br_task *br_self(void) { return br__task_handle(br__require_task()); }

int br_yield(void) {
  struct br__task *t = br__require_task();
  if (!t) return BR_ENOTTASK;
  int rc = br__checkpoint(t);
  if (rc) return rc;
  br__ready(t);
  suspend(t->loop, t);
  return br__checkpoint(t);
}

int br_sleep_until(int64_t deadline) {
  struct br__task *t = br__require_task();
  if (!t) return BR_ENOTTASK;
  br__wait_on(t, BR_WAIT_SLEEP, "sleep", NULL, NULL, -1);
  br__park_begin(t);
  int rc = br__park_end(t, deadline, true);
  if (rc == BR_ETIMEDOUT && !br__scope_expired(t)) return 0;
  return rc;
}

int br_sleep_ms(int64_t ms) {
  if (!br__require_task()) return BR_ENOTTASK;
  return br_sleep_until(br_deadline_ms(ms));
}

/* --- introspection --------------------------------------------------------- */

bool br__task_is_compact(br_task *h) {
  struct br__task *t = br__task_get(h);
  return t && t->compact;
}

/* NULL names the calling task. */
static struct br__task *task_or_self(br_task *h) {
  return h ? br__task_get(h) : br__require_task();
}

const char *br__task_name(struct br__task *t) {
  if (!br__task_valid(t)) return "<released>";
  if (!t->name[0]) snprintf(t->name, sizeof t->name, "task-%llu", (unsigned long long)t->id);
  return t->name;
}

const char *br_task_name(br_task *h) {
  if (!h && !br__require_task()) return "<no task>";
  return br__task_name(task_or_self(h));
}

uint64_t br_task_id(br_task *h) {
  struct br__task *t = task_or_self(h);
  return br__task_valid(t) ? t->id : 0;
}

bool br_task_done(br_task *h) {
  struct br__task *t = br__task_get(h);
  return br__task_valid(t) && t->state == BR__DONE;
}

br_future *br_task_future(br_task *h) {
  struct br__task *t = br__task_get(h);
  return br__task_valid(t) ? &t->fut : NULL;
}

int br_task_get_stats(br_task *h, br_task_stats *out) {
  struct br__task *t = task_or_self(h);
  if (!br__task_valid(t) || !out || !t->loop) return BR_EHANDLE;
  uint64_t ticks = t->run_ticks;
  if (t->state == BR__RUNNING && t->loop->acct != BR_ACCT_OFF) ticks += br__ticks() - t->resumed_at;
  /* Stamps are cycle-counter readings (a clock_gettime per spawn would
   * double its cost), mapped onto br_now()'s clock here. */
  out->created = t->created ? br__ticks_to_mono(t->created) : 0;
  out->finished = t->finished ? br__ticks_to_mono(t->finished) : 0;
  out->run_ns = br__ticks_to_ns(ticks);
  out->cpu_ns = t->loop->acct == BR_ACCT_PRECISE ? t->cpu_ns : out->run_ns;
  out->switches = t->switches;
  bool acct = t->loop->acct != BR_ACCT_OFF;
  out->waiting = t->state == BR__PARKED ? (br_wait_kind)t->wait.kind : BR_WAIT_NONE;
  for (int k = 0; k < BR_WAIT_KINDS; k++)
    out->wait_ns[k] = acct && (t->wait_seen & (1u << k)) ? br__ticks_to_ns(t->wait_ticks[k]) : 0;
  /* The wait in progress counts up to now. */
  if (acct && out->waiting && t->suspended_at)
    out->wait_ns[out->waiting] += br__ticks_to_ns(br__ticks() - t->suspended_at);
  return 0;
}
