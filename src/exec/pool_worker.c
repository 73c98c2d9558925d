/* SPDX-License-Identifier: MIT */
/* pool_worker.c — the worker loop: finding work, running submitted jobs and
 * stolen children, and the helping wait.
 *
 * Who runs this code. Worker threads only, each for itself: br__pool_tls_w
 * is set by worker_main for the life of the thread, and every br__worker
 * field but park, the counters and the deque's top is touched only by its
 * own thread, so nothing here takes a lock of its own (the injection queue's
 * inj_lock is taken inside pool_submit.c's functions, and user code runs
 * with no pool lock held).
 *
 * What runs where. An idle worker looks for work in this order: steal from
 * another worker's deque (finish started work first), then the injection
 * queue. A stolen child runs with the root of the job it was forked from; a
 * job from the queue is its own root. While pool work runs, w->cur is the
 * br_fork whose outcome br_fail records (a job's header, a fork child, a map
 * item's or a range's slot), w->root the job whose cancellation
 * br_cancelled reports, and w->chain the stack of roots running on this
 * thread, innermost first, for the helping wait's deadlock check. The
 * worker's job context (core/job.h) is current while a job or a stolen
 * child runs, so br_fail, br_cancelled and br_await in pool work reach the
 * pool through the core, whatever the nesting (see the end of this file).
 *
 * The helping wait. A job that waits for a future (br_await in a job) does
 * not block its worker: it runs other queued and stealable work meanwhile,
 * to MAX_HELP_DEPTH nested jobs; deeper than that it runs only the awaited
 * job itself, if it is still queued, and otherwise parks on a futex word
 * that the future's on_done callback sets. A job that waits for a root on
 * its own chain would wait for itself (that root can only finish after the
 * waiter returns): BR_EDEADLK.
 */
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

#include "core/log.h"
#include "core/trace.h"
#include "exec/pool_int.h"

__thread br__worker *br__pool_tls_w __attribute__((tls_model("initial-exec")));

__attribute__((noreturn, cold)) static void fatal_unjoined(int64_t n) {
  br__log(BR_LOG_ERROR,
          "a pool job returned with %lld forked child(ren) never joined "
          "(br_pool_join each br_pool_fork before returning)",
          (long long)n);
  abort();
}

/* Run time against CPU time of pool work (br_pool_stats run_ns, cpu_ns,
 * blocked), so that a job that blocks inside the pool shows up.
 *
 * The thread's CPU clock is a system call (0.4 us on our machines), more
 * than a small job costs, so it is not read around every job. Pieces of
 * work (jobs, stolen children; what they run nested counts as theirs) are
 * timed with the cycle counter, and the CPU clock is read when an
 * accounting window opens (the worker starts work with no window open) and
 * when it closes: after a piece of ACCT_LONG_NS or more, once the window is
 * ACCT_WINDOW_NS old, or when the worker runs out of work. The window's
 * pieces ran acct_run in all and used min(CPU read, acct_run): what the
 * worker does between pieces is on a CPU too, but short, and the cap takes
 * it off. A long piece that closes a window is judged on its own: it
 * blocked if the window spent more than half of its run off a CPU (exact
 * when it was the window's only piece) and the thread gave up its CPU
 * itself in the window: time off a CPU with no voluntary switch was spent
 * preempted on a busy machine, which is not blocking. A stream of small
 * jobs costs one clock read per millisecond; a job at a time costs two
 * reads per job and one count of the switches. */
enum { ACCT_LONG_NS = 50000, ACCT_WINDOW_NS = 1000000 };

static void acct_close(br__worker *w, uint64_t last_ticks) {
  int64_t cpu = br__thread_cpu_ns() - w->acct_cpu0;
  int64_t run = br__ticks_to_ns(w->acct_run);
  if (cpu > run) cpu = run;
  if (cpu < 0) cpu = 0;
  ctr_add(&w->run_ns, (uint64_t)run);
  ctr_add(&w->cpu_ns, (uint64_t)cpu);
  if (last_ticks && run - cpu > br__ticks_to_ns(last_ticks) / 2 &&
      br__thread_voluntary_switches() > w->acct_vcsw)
    ctr_inc(&w->blocked);
  w->acct_cpu0 = -1;
}

/* Around a piece of work that runs at the top of the worker's stack (no
 * other pool work below it: w->chain is NULL). */
static inline uint64_t acct_begin(br__worker *w) {
  if (w->acct_cpu0 < 0) {
    double npt = br__ns_per_tick();
    w->acct_long = (uint64_t)(ACCT_LONG_NS / npt);
    w->acct_window = (uint64_t)(ACCT_WINDOW_NS / npt);
    w->acct_run = 0;
    w->acct_vcsw = br__thread_voluntary_switches();
    w->acct_cpu0 = br__thread_cpu_ns();
    w->acct_t0 = br__ticks();
  }
  return br__ticks();
}

static inline void acct_end(br__worker *w, uint64_t t0) {
  uint64_t t1 = br__ticks(), d = t1 - t0;
  w->acct_run += d;
  if (d >= w->acct_long) acct_close(w, d);
  else if (t1 - w->acct_t0 >= w->acct_window) acct_close(w, 0);
}

/* Run a stolen fork frame on w and publish its completion. */
void br__pool_run_stolen(br__worker *w, br_fork *f) {
  atomic_store_explicit((_Atomic uintptr_t *)&FK(f)->thief, (uintptr_t)w, memory_order_release);
  ctr_inc(&w->steals);
  br_fork *pcur = w->cur;
  br__pjob *proot = w->root;
  br__chain link = {FK(f)->root, w->chain};
  w->cur = f;
  w->root = FK(f)->root;
  bool top = link.prev == NULL;
  uint64_t t0 = top ? acct_begin(w) : 0;
  w->chain = &link;
  br__job_ctx *pctx = br__job_enter(&w->ctx);
  int64_t open0 = w->open_forks;
  void *v = FK(f)->fn(FK(f)->arg);
  if (UNLIKELY(w->open_forks != open0)) fatal_unjoined(w->open_forks - open0);
  br__job_leave(pctx);
  if (top) acct_end(w, t0);
  FK(f)->value = v;
  w->cur = pcur;
  w->root = proot;
  w->chain = link.prev;
  /* The last access to f: once done is visible the joiner may return and
   * its stack frame (f) is gone. */
  if (__atomic_exchange_n(&FK(f)->done, D_DONE, __ATOMIC_ACQ_REL) == D_PARKED)
    futex_wake((_Atomic uint32_t *)&FK(f)->done, 1);
}

/* Run a job taken from the injection queue. */
static void run_job(br__worker *w, br__pjob *job) {
  br_pool *p = w->pool;
  if (atomic_load(&job->cancelled) || atomic_load(&p->state) == S_CANCEL ||
      br_future_done(job->core.fut)) {
    /* Cancelled before it started: by its future (the hook ran or will run,
     * and finds the job no longer queued), by its waiter giving up (a map /
     * for / reduce root), or by shutdown(BR_SHUTDOWN_CANCEL) after we took
     * it. Make sure the future says so (if this cancel is the one that
     * completes it, the hook runs now and drops HOOK), then drop RUN. */
    atomic_store(&job->cancelled, 1);
    (void)br_future_cancel(job->core.fut);
    br__pool_job_finished(p, END_CANCELLED);
    br__job_unref(&job->core);
    return;
  }
  br_fork *pcur = w->cur;
  br__pjob *proot = w->root;
  br__chain link = {job, w->chain};
  w->cur = &job->fk;
  w->root = job;
  bool top = link.prev == NULL;
  uint64_t t0 = top ? acct_begin(w) : 0;
  w->chain = &link;
  br__job_ctx *pctx = br__job_enter(&w->ctx);
  int64_t open0 = w->open_forks;
  br__trace_job_begin(BR_WAIT_POOL, (uintptr_t)job, NULL);
  void *v = FK(&job->fk)->fn(FK(&job->fk)->arg);
  br__trace_job_end(BR_WAIT_POOL, (uintptr_t)job, FK(&job->fk)->err);
  if (UNLIKELY(w->open_forks != open0)) fatal_unjoined(w->open_forks - open0);
  br__job_leave(pctx);
  if (top) acct_end(w, t0);
  w->cur = pcur;
  w->root = proot;
  w->chain = link.prev;

  /* Count it first: whoever sees the future complete also sees the stats. */
  int err = FK(&job->fk)->err;
  char *msg = FK(&job->fk)->msg;
  FK(&job->fk)->msg = NULL;
  br__pool_job_finished(p, err ? END_FAILED : END_RAN);
  /* Drops RUN, and HOOK if this completion won (core/job.h). */
  (void)br__job_complete(&job->core, v, NULL, err, msg);
}

static inline void run_any(br__worker *w, br_fork *x) {
  if (FK(x)->state == F_JOB) run_job(w, (br__pjob *)x);
  else br__pool_run_stolen(w, x);
}


/* One sweep over the other workers' deques, from a random one. */
static br_fork *steal_any(br__worker *w) {
  br_pool *p = w->pool;
  int n = p->n;
  if (n < 2) return NULL;
  int start = (int)(rng_next(w) % (uint64_t)n);
  for (int i = 0; i < n; i++) {
    br__worker *v = p->workers[(start + i) % n];
    if (v == w) continue;
    for (int tries = 0; tries < 4; tries++) {
      void *x = br__deque_steal(&v->dq);
      if (x == NULL) break;
      if (x != BR__DEQUE_ABORT) return x;
    }
  }
  return NULL;
}

br_fork *br__pool_find_work(br__worker *w) {
  br_fork *x = steal_any(w);
  if (x) return x;
  return (br_fork *)br__pool_inj_pop(w->pool);
}

void *br__pool_worker_main(void *arg) {
  br__worker *w = arg;
  br_pool *p = w->pool;
  br__pool_tls_w = w;
  w->acct_cpu0 = -1;
  for (;;) {
    br_fork *x = br__pool_find_work(w);
    if (x) {
      run_any(w, x);
      continue;
    }
    if (w->acct_cpu0 >= 0) acct_close(w, 0); /* out of work: settle the window */
    atomic_fetch_add(&p->nspinning, 1);
    for (;;) {
      int64_t deadline = p->spin_ns > 0 ? now_ns() + p->spin_ns : 0;
      unsigned backoff = 1;
      for (;;) {
        x = br__pool_find_work(w);
        if (x || br__pool_should_exit(p)) break;
        if (p->spin_ns <= 0 || now_ns() >= deadline) break;
        for (unsigned i = 0; i < backoff; i++) cpu_relax();
        if (backoff < 256) backoff *= 2;
        /* A thread sharing our CPU (the submitter waiting to run, another
         * worker when the pool is larger than the machine) gets its turn. */
        else sched_yield();
      }
      if (x) {
        br__pool_stop_spinning(w);
        run_any(w, x);
        break;
      }
      if (br__pool_should_exit(p)) {
        atomic_fetch_sub(&p->nspinning, 1);
        atomic_store(&w->park, P_EXITED);
        if (atomic_fetch_sub(&p->live, 1) == 1) br_future_set(p->exited, NULL);
        br__pool_tls_w = NULL;
        return NULL;
      }
      br__pool_park(w);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* The helping wait                                                          */

/* A worker waiting for a future: woken by an on_done callback. Heap-allocated
 * and shared with the callback (two references), because a wait with a
 * deadline may give up before the future completes, and braid has no way to
 * unregister a callback. */
typedef struct {
  _Atomic uint32_t flag;
  _Atomic int refs;
} br__pwaiter;

static void pwaiter_release(br__pwaiter *wt) {
  if (atomic_fetch_sub(&wt->refs, 1) == 1) free(wt);
}

static void pwaiter_done(void *arg) {
  br__pwaiter *wt = arg;
  atomic_store(&wt->flag, 1);
  futex_wake(&wt->flag, 1);
  pwaiter_release(wt);
}

/* Wait on a pool worker for f to complete, running other pool work
 * meanwhile: 0 once it is complete, BR_EDEADLK if it cannot complete before
 * the caller does, BR_ETIMEDOUT at the deadline. */
int br__pool_worker_wait(br__worker *w, br_future *f, int64_t deadline) {
  for (br__chain *c = w->chain; c; c = c->prev)
    if (c->job && c->job->core.fut == f) return BR_EDEADLK;
  if (br_future_done(f)) return 0;
  br__pwaiter *wt = malloc(sizeof *wt);
  if (wt) {
    atomic_init(&wt->flag, 0);
    atomic_init(&wt->refs, 2);
    if (br_future_on_done(f, pwaiter_done, wt) != 0) {
      free(wt);
      wt = NULL;
    }
  }
  int rc = 0;
  int64_t nap = JOIN_PARK_MIN_NS;
  bool looked = false; /* for the awaited job in our queue, when too deep */
  for (;;) {
    if (wt ? atomic_load(&wt->flag) != 0 : br_future_done(f)) break;
    br_fork *x = NULL;
    if (w->help_depth < MAX_HELP_DEPTH) x = br__pool_find_work(w);
    /* Too deep to run just anything: still run the awaited job itself if it
     * sits in our queue. Nothing else may take it while every worker waits
     * this deep (jobs that submit a job and await it, nested further than
     * the workers can help), and running it is what the wait needs anyway:
     * the stack then grows as the awaited jobs nest, as a serial call's.
     * One look is enough: a job is queued before its future is handed out,
     * and never queued again once taken. */
    else if (!looked) {
      looked = true;
      x = (br_fork *)br__pool_inj_take(w->pool, f);
    }
    if (x) {
      w->help_depth++;
      run_any(w, x);
      w->help_depth--;
      nap = JOIN_PARK_MIN_NS;
      continue;
    }
    int64_t left = deadline == BR_NEVER ? nap : deadline - now_ns();
    if (left <= 0) {
      rc = br_future_done(f) ? 0 : BR_ETIMEDOUT;
      break;
    }
    if (left > nap) left = nap;
    if (wt) futex_wait(&wt->flag, 0, left);
    else nanosleep(&(struct timespec){0, left}, NULL);
    if (nap < JOIN_PARK_MAX_NS) nap *= 2;
  }
  if (wt) pwaiter_release(wt);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The job context: what pool work asks about itself                        */

/* One context per worker, current while the worker runs a job or a stolen
 * child (and so for everything nested in them: inline fork children, map
 * items, ranges, jobs run by a helping wait). The ops read w->cur and
 * w->root, which always describe the innermost piece of work, so entering
 * the context once per job is enough and the fork-join fast path costs
 * nothing more. */

static inline br__worker *ctx_worker(br__job_ctx *ctx) {
  return (br__worker *)((char *)ctx - offsetof(br__worker, ctx));
}

int br__pool_cancelled(br__worker *w) {
  if (atomic_load_explicit(&w->pool->state, memory_order_relaxed) == S_CANCEL) return BR_ECANCELED;
  if (w->root && atomic_load_explicit(&w->root->cancelled, memory_order_relaxed))
    return BR_ECANCELED;
  return 0;
}

/* br_fail in pool work: the outcome slot of what runs now takes it. */
static void ctx_fail(br__job_ctx *ctx, int code, char *msg) {
  br__worker *w = ctx_worker(ctx);
  br_fork *c = w->cur;
  if (!c) {
    free(msg);
    return;
  }
  free(FK(c)->msg);
  FK(c)->msg = msg;
  FK(c)->err = code < 0 ? code : BR_EFAILED;
}

static int ctx_cancelled(br__job_ctx *ctx) { return br__pool_cancelled(ctx_worker(ctx)); }

/* br_await / br_gather in pool work: the helping wait. */
static int ctx_wait(br__job_ctx *ctx, br_future *f, int64_t deadline) {
  return br__pool_worker_wait(ctx_worker(ctx), f, deadline);
}

static const br__job_ctx_ops ctx_ops = {
    .fail = ctx_fail, .cancelled = ctx_cancelled, .wait = ctx_wait};

void br__pool_ctx_init(br__worker *w) { w->ctx.ops = &ctx_ops; }
