/* SPDX-License-Identifier: MIT */
/* braid — the event loop.
 *
 * One iteration runs these phases, in this order, each bounded so that no
 * phase can starve the others:
 *   1. remote: wake-ups and callbacks handed over by other threads;
 *   2. timers: every timer whose deadline has passed makes its task ready;
 *   3. tasks: the tasks that were ready when the phase began run once each
 *      (tasks readied meanwhile wait for the next iteration, so a task that
 *      yields in a loop cannot keep the poller from running);
 *   4. callbacks: the call_soon callbacks queued before the phase began;
 *   5. poll: wait for I/O, a remote wake-up or the next timer — without
 *      blocking if anything is ready.
 * The loop ends when no task is alive and nothing is queued.
 */
#include "core/core.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/trace.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "sys/clock.h"
#include "sys/fiber_san.h"

static void notify_observer(br_loop *L, bool created);
static int live_add(struct br_loop *L);
static void live_remove(struct br_loop *L);
static bool live_lock_find(const struct br_loop *L);
static void live_unlock(void);

static br_accounting accounting_from_env(void) {
  static atomic_bool warned;
  static const char *const modes[] = {"off", "fast", "precise", NULL};
  switch (br__env_choice("BRAID_ACCOUNTING", modes, &warned)) {
  case 0: return BR_ACCT_OFF;
  case 2: return BR_ACCT_PRECISE;
  default: return BR_ACCT_FAST;
  }
}

int br_loop_new(br_loop **out, const br_loop_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  br_loop_opts o = opts ? *opts : (br_loop_opts){0};
  size_t ss = BR__STACK_DEFAULT;
  static atomic_bool stack_warned, compact_warned;
  long long env_ss;
  if (!o.stack_size && br__env_long("BRAID_STACK_SIZE", (long long)BR__STACK_MIN,
                                    (long long)BR__STACK_MAX, &env_ss, &stack_warned) == 1)
    o.stack_size = (size_t)env_ss;
  if (o.stack_size) {
    ss = br__stack_round(o.stack_size);
    if (!ss) return BR_EINVAL;
  }
  static const char *const compact_values[] = {"0", "1", NULL};
  if (br__env_choice("BRAID_COMPACT", compact_values, &compact_warned) == 1 && !opts)
    o.compact = true;
  if ((unsigned)o.accounting > BR_ACCT_PRECISE) return BR_EINVAL;
  struct br_loop *L = calloc(1, sizeof *L);
  if (!L) return BR_ENOMEM;
  L->opts = o;
  L->acct = o.accounting == BR_ACCT_DEFAULT ? accounting_from_env() : o.accounting;
  if (L->acct != BR_ACCT_OFF) (void)br__ns_per_tick(); /* anchor the cycle counter */
  L->stack_size = ss;
  L->thread = pthread_self();
  pthread_mutex_init(&L->remote_lock, NULL);
  br__stack_cache_init(&L->stacks, ss);
  int rc = br__poller_open(&L->poller, NULL);
  if (rc == 0) {
    rc = live_add(L);
    if (rc) L->poller.ops->close(&L->poller);
  }
  if (rc) {
    br__stack_cache_fini(&L->stacks);
    pthread_mutex_destroy(&L->remote_lock);
    free(L);
    return rc;
  }
  br__overflow_install();
  br__loop_register(L);
  notify_observer(L, true);
  *out = L;
  return 0;
}

br_loop *br_loop_current(void) { return br__tls_loop; }


/* --- loop observers (loop.h): how obs/ learns about loops without the core
 * including it. */
static void (*_Atomic loop_observer)(br_loop *loop, bool created);

void br__loop_set_observer(void (*fn)(br_loop *loop, bool created)) {
  atomic_store(&loop_observer, fn);
}

static void notify_observer(br_loop *L, bool created) {
  void (*fn)(br_loop *, bool) = atomic_load(&loop_observer);
  if (fn) fn(L, created);
}

const br_loop_opts *br__loop_opts(br_loop *L) { return &L->opts; }

/* --- live loops ----------------------------------------------------------
 *
 * Other threads hold loop pointers they cannot know to be valid: a thread
 * posting with br_call_soon_threadsafe while the loop's owner frees it. So
 * those calls look the loop up in this set first and touch it only while
 * holding the set's read lock with the loop found in it. br_loop_free takes
 * the loop out under the write lock before it releases anything, which also
 * waits for every caller still inside. The lock prefers writers: a stream of
 * posters cannot hold a free back. A loop pointer's address may be reused
 * by a later loop; a call with a stale pointer then reaches that new loop,
 * as a closed file descriptor's number reaches the next file opened. */
static pthread_rwlock_t live_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static struct br_loop **live_loops; /* sorted by address */
static size_t live_n, live_cap;

/* Index of L in live_loops, or of where it would go; live_lock held. */
static size_t live_find(const struct br_loop *L) {
  size_t lo = 0, hi = live_n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if ((uintptr_t)live_loops[mid] < (uintptr_t)L) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static int live_add(struct br_loop *L) {
  pthread_rwlock_wrlock(&live_lock);
  if (live_n == live_cap) {
    size_t cap = live_cap ? live_cap * 2 : 16;
    struct br_loop **a = realloc(live_loops, cap * sizeof *a);
    if (!a) {
      pthread_rwlock_unlock(&live_lock);
      return BR_ENOMEM;
    }
    live_loops = a;
    live_cap = cap;
  }
  size_t i = live_find(L);
  memmove(&live_loops[i + 1], &live_loops[i], (live_n - i) * sizeof *live_loops);
  live_loops[i] = L;
  live_n++;
  pthread_rwlock_unlock(&live_lock);
  return 0;
}

static void live_remove(struct br_loop *L) {
  pthread_rwlock_wrlock(&live_lock);
  size_t i = live_find(L);
  if (i < live_n && live_loops[i] == L) {
    memmove(&live_loops[i], &live_loops[i + 1], (live_n - i - 1) * sizeof *live_loops);
    live_n--;
  }
  pthread_rwlock_unlock(&live_lock);
}

/* Take the read lock; true if L is a live loop (then it stays alive until
 * live_unlock). The lock is held either way. */
static bool live_lock_find(const struct br_loop *L) {
  pthread_rwlock_rdlock(&live_lock);
  size_t i = live_find(L);
  return i < live_n && live_loops[i] == L;
}

static void live_unlock(void) { pthread_rwlock_unlock(&live_lock); }

/* --- remote hand-over ------------------------------------------------------ */

/* The hand-over and the loop's sleep are a store-then-load pair on each
 * side (Dekker): we publish remote_pending and then look at sleeping, the
 * loop publishes sleeping and then looks at remote_pending, so at least one
 * of us sees the other and the loop never sleeps through a hand-over. That
 * needs each store ordered before the load after it. Both stores are
 * exchanges rather than plain seq_cst stores: a read-modify-write is a full
 * barrier wherever it runs, while a store-release followed by a
 * load-acquire is not ordered under qemu-user's aarch64 emulation on an
 * x86-64 host (it lost the wake-up in about one run in five of
 * test_blocking's stress case, the loop asleep in epoll_wait for good). */
static void remote_signal(struct br_loop *L) {
  (void)atomic_exchange_explicit(&L->remote_pending, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&L->sleeping, memory_order_seq_cst)) L->poller.ops->wake(&L->poller);
}

void br__remote_push_task(struct br_loop *L, struct br__task *t) {
  pthread_mutex_lock(&L->remote_lock);
  t->next = L->remote_tasks;
  L->remote_tasks = t;
  pthread_mutex_unlock(&L->remote_lock);
  remote_signal(L);
}

void br__remote_push_free(struct br_loop *L, struct br__task *t) {
  pthread_mutex_lock(&L->remote_lock);
  t->next = L->remote_free;
  L->remote_free = t;
  pthread_mutex_unlock(&L->remote_lock);
  remote_signal(L);
}

static int post_remote(br_loop *L, br_callback_fn cb, void *arg, bool bounded);

int br_call_soon_threadsafe(br_loop *L, br_callback_fn cb, void *arg) {
  return post_remote(L, cb, arg, true);
}

int br__call_soon_control(br_loop *L, br_callback_fn cb, void *arg) {
  return post_remote(L, cb, arg, false);
}

static int post_remote(br_loop *L, br_callback_fn cb, void *arg, bool bounded) {
  if (!L || !cb) return BR_EINVAL;
  br__cb *c = malloc(sizeof *c);
  if (!c) return BR_ENOMEM;
  c->fn = cb;
  c->arg = arg;
  int rc = 0;
  if (!live_lock_find(L)) {
    rc = BR_ECLOSED;
  } else {
    /* A loop another thread can hand work to is never declared deadlocked. */
    if (!pthread_equal(L->thread, pthread_self())) atomic_store(&L->foreign_cbs, true);
    pthread_mutex_lock(&L->remote_lock);
    if (L->remote_closed) {
      rc = BR_ECLOSED;
    } else if (bounded && L->remote_ncbs >= BR_CALL_SOON_THREADSAFE_MAX) {
      rc = BR_EAGAIN;
    } else {
      c->next = L->remote_cbs;
      L->remote_cbs = c;
      L->remote_ncbs++;
    }
    pthread_mutex_unlock(&L->remote_lock);
    if (!rc) remote_signal(L); /* still under the read lock: L is alive */
  }
  live_unlock();
  if (rc) free(c);
  return rc;
}

static void push_cb(struct br_loop *L, br__cb *c) {
  c->next = NULL;
  if (L->cb_tail) L->cb_tail->next = c; else L->cb_head = c;
  L->cb_tail = c;
}

int br_call_soon(br_loop *L, br_callback_fn cb, void *arg) {
  if (!L || !cb) return BR_EINVAL;
  if (!pthread_equal(L->thread, pthread_self())) return BR_EPERM;
  br__cb *c = malloc(sizeof *c);
  if (!c) return BR_ENOMEM;
  c->fn = cb;
  c->arg = arg;
  push_cb(L, c);
  return 0;
}

static void drain_remote(struct br_loop *L) {
  if (!atomic_load_explicit(&L->remote_pending, memory_order_acquire)) return;
  atomic_store_explicit(&L->remote_pending, 0, memory_order_seq_cst);
  pthread_mutex_lock(&L->remote_lock);
  struct br__task *ts = L->remote_tasks;
  br__cb *cs = L->remote_cbs;
  struct br__task *fr = L->remote_free;
  L->remote_tasks = NULL;
  L->remote_cbs = NULL;
  L->remote_ncbs = 0;
  L->remote_free = NULL;
  pthread_mutex_unlock(&L->remote_lock);
  while (fr) {
    struct br__task *n = fr->next;
    /* The thread that handed fr back holds fr's future lock until it has
     * pushed it and woken us (br__task_future_gone): wait for it to let go
     * before the memory is reused. */
    br__future_lock(&fr->fut);
    br__future_unlock(&fr->fut);
    br__task_free_mem(fr);
    fr = n;
  }
  /* Both lists are LIFO: reverse to keep submission order. */
  struct br__task *rt = NULL;
  while (ts) {
    struct br__task *n = ts->next;
    ts->next = rt;
    rt = ts;
    ts = n;
  }
  while (rt) {
    struct br__task *n = rt->next;
    br__ready(rt);
    rt = n;
  }
  br__cb *rc = NULL;
  while (cs) {
    br__cb *n = cs->next;
    cs->next = rc;
    rc = cs;
    cs = n;
  }
  while (rc) {
    br__cb *n = rc->next;
    push_cb(L, rc);
    rc = n;
  }
}

/* --- iteration -------------------------------------------------------------- */

static void run_timers(struct br_loop *L) {
  if (!br__timer_count(&L->timers)) return;
  int64_t now = br__mono_ns();
  br__timer *tm;
  while ((tm = br__timer_pop_expired(&L->timers, now))) br__timer_fired(tm);
}

static void run_callbacks(struct br_loop *L) {
  br__cb *c = L->cb_head;
  br__cb *end = L->cb_tail;
  if (!c) return;
  L->cb_head = L->cb_tail = NULL;
  /* Callbacks queued while these run wait for the next iteration. */
  while (c) {
    br__cb *n = c->next;
    c->fn(c->arg);
    free(c);
    if (c == end) break;
    c = n;
  }
}

static bool has_work(struct br_loop *L) {
  return L->rq_head || L->cb_head || atomic_load_explicit(&L->remote_pending, memory_order_acquire);
}

#ifdef BRAID_TSAN
/* ThreadSanitizer and br_run's SIGINT handler (TSan builds only).
 *
 * TSan does not run a handler when the kernel delivers the signal: it
 * records it in the state of the *current fiber* and runs it at that fiber's
 * next intercepted call. braid runs each task on a TSan fiber of its own,
 * so a SIGINT that arrives while a task runs is recorded in the task's fiber.
 * Under TSan 12 such a SIGINT was lost for good: in every hang of
 * test_http_sigint (9 of 9 looked at, about one run in 40), the signal had
 * come while an http-socket watcher's fiber was current, TSan had recorded
 * it there (its handler returned without running ours), and the watcher
 * then ran and parked some 320 times more with nothing pending on its
 * fiber any more, while br_run's handler never ran (sigints=0, nothing
 * pending in the kernel, the loop asleep in its 20 ms waits). Signals that
 * arrive while the scheduler's own fiber is current (the loop's waits,
 * timers, callbacks) are run at its next intercepted call, as uring.c's
 * poll makes sure.
 *
 * So while br_run owns SIGINT, the loop thread blocks it for as long as
 * tasks run (every task switch, and TSan's creation and destruction of
 * task fibers, happen in br__run_ready): the kernel holds a SIGINT sent
 * then and delivers it when it is unblocked here, on the scheduler's fiber,
 * where the unblocking call itself (intercepted) runs the handler. The
 * first SIGINT's handler only wakes the loop, and the loop acts on it
 * between iterations, so holding it while tasks run changes nothing else;
 * in a process with other threads the kernel may give it to one of them
 * instead, which runs it as it would have anyway. Once main is cancelled
 * br_run stops the hold: the second SIGINT exits from its handler and must
 * not wait for a task whose cleanup hangs. Only SIGINT, only under br_run:
 * the watchdog's sampling signal must reach a task that blocks the loop.
 *
 * A task that takes SIGINT with br_signal_open blocks it for good; the loop
 * then leaves it blocked (br__tsan_sigint_claimed). Two system calls per
 * iteration that runs tasks, in TSan builds only. */
static _Thread_local bool sigint_claimed;

void br__tsan_sigint_claimed(void) { sigint_claimed = true; }

static void run_ready(struct br_loop *L) {
  if (!L->tsan_hold_sigint || !L->rq_head) {
    br__run_ready(L);
    return;
  }
  sigset_t sigint, old;
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigint, &old);
  br__run_ready(L);
  if (!sigismember(&old, SIGINT) && !sigint_claimed) pthread_sigmask(SIG_UNBLOCK, &sigint, NULL);
}
#else
#define run_ready br__run_ready
#endif

#define BUSY_POLL_EVERY 32

/* Returns 1 if the loop has more to do, 0 when it is finished. */
int br__loop_iterate(struct br_loop *L, bool block) {
  drain_remote(L);
  run_timers(L);
  run_ready(L);
  run_callbacks(L);
  drain_remote(L);
  bool busy = has_work(L);
  if (!L->live && !busy) return 0;
  int64_t timeout = -1;
  if (busy && block) {
    /* Tasks are ready: a non-blocking poll costs a system call, so look for
     * I/O only every BUSY_POLL_EVERY busy iterations. Each iteration runs
     * every ready task once, so I/O waits at most that many rounds. */
    if (++L->busy_iters < BUSY_POLL_EVERY) return 1;
    L->busy_iters = 0;
  }
  bool target_done = L->until && atomic_load_explicit(&L->until->fut.done, memory_order_acquire);
  if (!block || busy || target_done || atomic_load_explicit(&L->stop_flag, memory_order_relaxed)) {
    timeout = 0;
  } else if (br__timer_count(&L->timers)) {
    /* Compare before subtracting: a deadline far in the past (INT64_MIN
     * from a caller's arithmetic) must not overflow into a long sleep. */
    int64_t next = br__timer_next(&L->timers), now = br__mono_ns();
    timeout = next > now ? next - now : 0;
  } else {
    int dl = br__deadlock_check(L);
    if (dl) return dl;
  }
  if (timeout != 0) {
    (void)atomic_exchange_explicit(&L->sleeping, 1, memory_order_seq_cst); /* remote_signal */
    if (atomic_load_explicit(&L->remote_pending, memory_order_seq_cst)) timeout = 0;
    atomic_store_explicit(&L->heartbeat, 0, memory_order_relaxed);
  }
  if (br__tracing()) br__trace_emit(BR__TEV_POLL_BEGIN, 0, L->serial, 0, timeout, 0);
  int rc = L->poller.ops->poll(&L->poller, timeout, br__fd_ready, L);
  if (br__tracing()) br__trace_emit(BR__TEV_POLL_END, 0, L->serial, 0, rc, 0);
  atomic_store_explicit(&L->sleeping, 0, memory_order_relaxed);
  atomic_store_explicit(&L->heartbeat, br__mono_ns(), memory_order_relaxed);
  if (rc < 0 && rc != -EINTR) {
    br__log(BR_LOG_ERROR, "poller %s failed: %s", L->poller.ops->name, strerror(-rc));
    return rc;
  }
  return 1;
}

int br_loop_run(br_loop *L) {
  if (!L) return BR_EINVAL;
  if (!pthread_equal(L->thread, pthread_self())) return BR_EPERM;
  if (L->running || (br__tls_loop && br__tls_loop != L)) return BR_EBUSY;
  struct br_loop *prev = br__tls_loop;
  br__tls_loop = L;
  L->running = true;
  L->sched_tsan = BR__TSAN_CURRENT();
  br__overflow_thread_begin();
  int rc = 0;
  atomic_store_explicit(&L->heartbeat, br__mono_ns(), memory_order_relaxed);
  do {
    rc = br__loop_iterate(L, true);
  } while (rc > 0 && !atomic_load_explicit(&L->stop_flag, memory_order_relaxed));
  br__overflow_thread_end();
  /* Clear the stop request on the way out (as uv_run does): a stop asked
   * for before br_loop_run() makes that run return after one iteration. */
  atomic_store(&L->stop_flag, false);
  L->running = false;
  br__tls_loop = prev;
  return rc < 0 ? rc : 0;
}

/* Run until task t is done (used outside tasks: br_task_close, br_run). */
int br__run_until(struct br_loop *L, struct br__task *t) {
  struct br_loop *prev = br__tls_loop;
  br__tls_loop = L;
  bool was_running = L->running;
  L->running = true;
  L->sched_tsan = BR__TSAN_CURRENT();
  br__overflow_thread_begin();
  int rc = 0;
  struct br__task *prev_until = L->until;
  L->until = t; /* once t is done, the poller must not block */
  atomic_store_explicit(&L->heartbeat, br__mono_ns(), memory_order_relaxed);
  while (!atomic_load_explicit(&t->fut.done, memory_order_acquire)) {
    rc = br__loop_iterate(L, true);
    if (rc <= 0) break;
  }
  L->until = prev_until;
  br__overflow_thread_end();
  L->running = was_running;
  br__tls_loop = prev;
  return rc < 0 ? rc : 0;
}

void br_loop_stop(br_loop *L) {
  if (!L) return;
  if (live_lock_find(L)) { /* a loop being freed, or freed: nothing to stop */
    atomic_store(&L->stop_flag, true);
    /* From the loop's own thread, end the iteration's run of tasks now, so
     * the task that asked does not get resumed again before run returns. */
    if (br__tls_loop == L) L->budget = 0;
    L->poller.ops->wake(&L->poller);
  }
  live_unlock();
}

void br__report_failure_code(struct br__task *t, int code, const char *msg) {
  struct br_loop *L = t->loop;
  br__trace_fire("failed detached task", false); /* the flight recorder, if on */
  if (L->opts.on_detached_error) {
    L->opts.on_detached_error(br__task_handle(t), code, msg ? msg : "", L->opts.ud);
    return;
  }
  br__log(BR_LOG_ERROR, "detached task '%s' failed: %s (%s)%s%s", br__task_name(t),
          br_strerror(code), br_errname(code), msg && *msg ? ": " : "", msg ? msg : "");
}

int br_loop_free(br_loop *L) {
  if (!L) return 0;
  if (L->running) return BR_EBUSY;
  notify_observer(L, false);
  br__loop_unregister(L);
  struct br_loop *prev = br__tls_loop;
  br__tls_loop = L;
  L->freeing = true;
  L->sched_tsan = BR__TSAN_CURRENT();
  /* Cancel everything still alive and let it unwind. */
  for (int round = 0; L->live && round < 1000000; round++) {
    for (struct br__task *t = L->all; t; t = t->all_next)
      if (t->state != BR__DONE && !t->cancelled) br__task_cancel(t);
    if (br__loop_iterate(L, true) <= 0) break;
  }
  /* Other threads can no longer reach the loop: br_call_soon_threadsafe and
   * br_loop_stop answer as for a freed loop from here on (live_remove waits
   * for the calls still inside). What they handed over before runs now. */
  live_remove(L);
  pthread_mutex_lock(&L->remote_lock);
  L->remote_closed = true;
  pthread_mutex_unlock(&L->remote_lock);
  drain_remote(L);
  run_callbacks(L);
  /* Handles nobody gave back: report failures nobody saw, then release. */
  struct br__task *t = L->all;
  while (t) {
    struct br__task *n = t->all_next;
    if (t->handle_held) {
      if (t->state == BR__DONE && t->fut.err && t->fut.err != BR_ECANCELED)
        br__log(BR_LOG_ERROR, "task '%s' failed and nobody joined it: %s%s%s", br__task_name(t),
                br_strerror(t->fut.err), t->fut.msg ? ": " : "", t->fut.msg ? t->fut.msg : "");
      br__task_release(t);
    }
    t = n;
  }
  /* Tasks still referenced through a br_future_ref outlive the loop as
   * orphans: their future stays readable and is freed with its last ref.
   * That last ref may go on another thread at any moment, so each task is
   * marked under its future's lock, the lock under which such a thread
   * decides between handing the memory back to the loop and freeing it
   * itself (br__task_future_gone); t is not touched once unlocked. */
  t = L->all;
  L->all = NULL;
  while (t) {
    struct br__task *n = t->all_next;
    if (t->state != BR__DONE)
      br__log(BR_LOG_WARN, "task '%s' did not finish before its loop was freed", br__task_name(t));
    br__future_lock(&t->fut);
    t->all_next = t->all_prev = NULL;
    t->orphan = true;
    __atomic_store_n(&t->loop, NULL, __ATOMIC_RELEASE);
    br__future_unlock(&t->fut);
    t = n;
  }
  /* Memory handed back before its task was marked: the last drain. No
   * hand-back can follow (every task this loop had is an orphan now), and
   * the threads that made these are done with them (the marking above took
   * each one's lock after they let go of it). */
  pthread_mutex_lock(&L->remote_lock);
  struct br__task *fr = L->remote_free;
  L->remote_free = NULL;
  pthread_mutex_unlock(&L->remote_lock);
  while (fr) {
    struct br__task *n = fr->next;
    br__task_free_orphan(fr);
    fr = n;
  }
  while (L->free_tasks) {
    struct br__task *f = L->free_tasks;
    L->free_tasks = f->next;
    br__task_struct_freed(f);
  }
  br__fds_free(L);
  if (L->shared) br__stack_put(&L->stacks, L->shared);
  br__stack_cache_fini(&L->stacks);
  br__timer_heap_free(&L->timers);
  L->poller.ops->close(&L->poller);
  pthread_mutex_destroy(&L->remote_lock);
  br__tls_loop = prev == L ? NULL : prev;
  free(L);
  return 0;
}

/* --- hooks for the obs and io layers (loop.h) -------------------------- */

br__poller *br__loop_poller(br_loop *L) { return &L->poller; }

/* A submitted request and the future it completes; req comes first so the
 * backend's done(req) finds the whole record. */
typedef struct submitted_io {
  br__io_req req;
  br_future *f;
} submitted_io;

static void submitted_done(br__io_req *r, int64_t res) {
  submitted_io *s = (submitted_io *)r;
  (void)br_future_set(s->f, (void *)(intptr_t)res);
  br_future_unref(s->f);
  free(s);
}

int br__loop_submit_io(br_loop *L, const br__io_req *req, br_future **out) {
  *out = NULL;
  if (!L || !req) return BR_EINVAL;
  if (!L->poller.ops->submit) return BR_ENOSYS;
  submitted_io *s = malloc(sizeof *s);
  if (!s) return BR_ENOMEM;
  s->req = *req;
  s->req.done = submitted_done;
  int rc = br_future_new(&s->f);
  if (rc == 0) br__future_set_origin(s->f, BR_WAIT_IO);
  if (rc == 0) rc = L->poller.ops->submit(&L->poller, &s->req);
  if (rc) {
    br_future_unref(s->f);
    free(s);
    return rc;
  }
  *out = br_future_ref(s->f); /* one reference for the caller, one for done */
  return 0;
}
int64_t br__loop_heartbeat(br_loop *L) { return atomic_load_explicit(&L->heartbeat, memory_order_relaxed); }
pthread_t br__loop_thread(br_loop *L) { return L->thread; }
