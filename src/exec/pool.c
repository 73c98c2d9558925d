/* SPDX-License-Identifier: MIT */
/* pool.c — the CPU pool's lifecycle: br_pool_new, br_pool_shutdown,
 * br_pool_free, statistics (braid/pool.h). The rest of the pool is split by
 * role; pool_int.h lists the files and the pool-wide lock order.
 *
 * Who runs this code. The pool's owner, from outside the pool: a plain
 * thread or a loop task. Shutting a pool down from one of its own workers
 * would wait for itself, so shutdown and free refuse it (BR_EDEADLK).
 * br_pool_size / _current / _worker_index / _get_stats may run anywhere.
 *
 * Locks. shut_lock serialises shutdown: the first caller does it and
 * records the report; later callers (and br_pool_free) find shut_done and
 * the report under it. The pool's state moves from S_RUNNING to S_DRAIN or
 * S_CANCEL exactly once, under inj_lock (taken inside shut_lock), so that a
 * submission either is queued before shutdown began (and is counted in
 * pending) or sees the new state and is refused.
 *
 * Memory. The pool is reference-counted: the user's handle plus one per job
 * alive (pool_submit.c), so a future's cancel hook that runs after
 * br_pool_free still finds the pool's memory. The workers are joined before
 * shutdown returns; the last one to exit completes p->exited.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/pool_int.h"

static void pool_destroy(br_pool *p) {
  for (int i = 0; i < p->n; i++) {
    if (!p->workers[i]) continue;
    br__deque_destroy(&p->workers[i]->dq);
    free(p->workers[i]);
  }
  free(p->workers);
  if (p->exited) br_future_unref(p->exited);
  pthread_mutex_destroy(&p->inj_lock);
  pthread_mutex_destroy(&p->shut_lock);
  free(p);
}

void br__pool_release(br_pool *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1) pool_destroy(p);
}

int br_pool_new(br_pool **out, int nthreads, const br_pool_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  br_pool_opts o = {0};
  if (opts) o = *opts;
  if (nthreads < 0 || nthreads > BR_POOL_MAX_THREADS) return BR_EINVAL;
  if (nthreads == BR_CPUS) nthreads = br_cpu_count();
  if (nthreads > BR_POOL_MAX_THREADS) nthreads = BR_POOL_MAX_THREADS;
  if (o.stack_size == 0) o.stack_size = DEFAULT_STACK;
  if (o.stack_size < (64u << 10) || o.stack_size > ((size_t)1 << 30)) return BR_EINVAL;
  if (o.spin_ns == 0) o.spin_ns = DEFAULT_SPIN_NS;
  const char *name = o.name ? o.name : "br-pool";

  br_pool *p = calloc(1, sizeof *p);
  if (!p) return BR_ENOMEM;
  p->n = nthreads;
  p->spin_ns = o.spin_ns;
  p->membarrier = br__pool_membarrier_register();
  atomic_init(&p->refs, 1);
  atomic_init(&p->live, nthreads);
  pthread_mutex_init(&p->inj_lock, NULL);
  pthread_mutex_init(&p->shut_lock, NULL);
  p->workers = calloc((size_t)nthreads, sizeof *p->workers);
  if (!p->workers || br_future_new(&p->exited) < 0) goto fail_destroy;
  for (int i = 0; i < nthreads; i++) {
    br__worker *w = aligned_alloc(BR__CACHELINE, sizeof *w);
    if (!w) goto fail_destroy;
    memset(w, 0, sizeof *w);
    p->workers[i] = w;
    if (br__deque_init(&w->dq, DEQUE_INITIAL) < 0) {
      p->workers[i] = NULL;
      free(w);
      goto fail_destroy;
    }
    w->pool = p;
    w->index = i;
    br__pool_ctx_init(w);
    w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) ^ (uint64_t)(uintptr_t)p;
    if (!w->rng) w->rng = 1;
    atomic_init(&w->park, P_AWAKE);
  }

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, o.stack_size);
  int started = 0, err = 0;
  for (; started < nthreads; started++) {
    br__worker *w = p->workers[started];
    err = pthread_create(&w->thread, &attr, br__pool_worker_main, w);
    if (err) break;
    w->started = true;
    char tname[16];
    /* A thread name holds 15 characters: the name cut to 9, the index to 5. */
    snprintf(tname, sizeof tname, "%.9s-%u", name, (unsigned)started % 100000u);
    pthread_setname_np(w->thread, tname);
  }
  pthread_attr_destroy(&attr);
  if (err) {
    /* Stop the workers that did start; the others never will. */
    atomic_fetch_sub(&p->live, nthreads - started);
    pthread_mutex_lock(&p->inj_lock);
    atomic_store(&p->state, S_CANCEL);
    pthread_mutex_unlock(&p->inj_lock);
    br__pool_wake_all(p);
    for (int i = 0; i < started; i++) pthread_join(p->workers[i]->thread, NULL);
    pool_destroy(p);
    return err == ENOMEM ? BR_ENOMEM : BR_EAGAIN;
  }
  *out = p;
  return 0;

fail_destroy:
  pool_destroy(p);
  return BR_ENOMEM;
}

int br_pool_size(const br_pool *pool) { return pool ? pool->n : 0; }

br_pool *br_pool_current(void) { return br__pool_tls_w ? br__pool_tls_w->pool : NULL; }

int br_pool_worker_index(void) { return br__pool_tls_w ? br__pool_tls_w->index : -1; }

int br_pool_shutdown(br_pool *pool, br_pool_report *report, br_shutdown_mode mode) {
  if (!pool || (mode != BR_SHUTDOWN_DRAIN && mode != BR_SHUTDOWN_CANCEL)) return BR_EINVAL;
  if (br__pool_tls_w && br__pool_tls_w->pool == pool) return BR_EDEADLK;
  pthread_mutex_lock(&pool->shut_lock);
  if (pool->shut_done) { /* again: the same outcome, as the process pool's */
    if (report) *report = pool->report;
    pthread_mutex_unlock(&pool->shut_lock);
    return 0;
  }

  pthread_mutex_lock(&pool->inj_lock);
  atomic_store(&pool->state, mode == BR_SHUTDOWN_DRAIN ? S_DRAIN : S_CANCEL);
  pool->report.mode = mode;
  pool->report.pending = (uint64_t)atomic_load(&pool->pending);
  pool->snap_completed = atomic_load(&pool->completed);
  pool->snap_cancelled = atomic_load(&pool->cancelled);
  pthread_mutex_unlock(&pool->inj_lock);

  if (mode == BR_SHUTDOWN_CANCEL) {
    /* Cancel what has not started. br_future_cancel runs the hook, which
     * finds the job taken (Q_TAKEN) and only marks it. */
    br__pjob *job;
    while ((job = br__pool_inj_pop(pool))) {
      atomic_store(&job->cancelled, 1);
      (void)br_future_cancel(job->core.fut);
      br__pool_job_finished(pool, END_CANCELLED);
      br__job_unref(&job->core); /* RUN: we took it off the queue */
    }
  }
  br__pool_wake_all(pool);
  br__await_shielded(pool->exited);
  for (int i = 0; i < pool->n; i++)
    if (pool->workers[i]->started) pthread_join(pool->workers[i]->thread, NULL);

  pool->report.completed = atomic_load(&pool->completed) - pool->snap_completed;
  pool->report.cancelled = atomic_load(&pool->cancelled) - pool->snap_cancelled;
  pool->report.submitted = atomic_load(&pool->submitted);
  pool->report.failed = atomic_load(&pool->failed);
  pool->shut_done = true;
  if (report) *report = pool->report;
  pthread_mutex_unlock(&pool->shut_lock);
  return 0;
}

int br_pool_free(br_pool *pool) {
  if (!pool) return 0;
  if (br__pool_tls_w && br__pool_tls_w->pool == pool) return BR_EDEADLK;
  (void)br_pool_shutdown(pool, NULL, BR_SHUTDOWN_CANCEL);
  br__pool_release(pool);
  return 0;
}

int br_pool_get_stats(br_pool *pool, br_pool_stats *out) {
  if (!pool || !out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  out->nthreads = pool->n;
  out->submitted = atomic_load_explicit(&pool->submitted, memory_order_relaxed);
  out->completed = atomic_load_explicit(&pool->completed, memory_order_relaxed);
  out->failed = atomic_load_explicit(&pool->failed, memory_order_relaxed);
  out->cancelled = atomic_load_explicit(&pool->cancelled, memory_order_relaxed);
  out->wakes = atomic_load_explicit(&pool->wakes, memory_order_relaxed);
  for (int i = 0; i < pool->n; i++) {
    br__worker *w = pool->workers[i];
    out->forks += atomic_load_explicit(&w->forks, memory_order_relaxed);
    out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
    out->parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
    out->run_ns += atomic_load_explicit(&w->run_ns, memory_order_relaxed);
    out->cpu_ns += atomic_load_explicit(&w->cpu_ns, memory_order_relaxed);
    out->blocked += atomic_load_explicit(&w->blocked, memory_order_relaxed);
  }
  return 0;
}
