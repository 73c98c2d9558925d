/* SPDX-License-Identifier: MIT */
/* pool_submit.c — jobs and the injection queue: br_pool_submit, the
 * cancellation of a queued job, and the references that keep a job alive.
 *
 * Who runs this code. Any thread: the submitter (a plain thread, a loop
 * task, a pool job submitting more work), a worker taking a job off the
 * queue, and whoever cancels a job's future (br_future_cancel runs the
 * cancel hook on the cancelling thread, which may be any thread and may race
 * with the worker that runs the job).
 *
 * Locks. inj_lock protects the injection queue (inj_head / inj_tail, every
 * job's next / prev / qstate), the pool's state word (written only under
 * it; read anywhere) and the accounting that must add up in a shutdown
 * report (pending moves together with completed / cancelled / failed).
 * inj_lock is a leaf: no user code, future call or other lock is ever taken
 * while holding it, and every wake-up (notify, wake_all) comes after it is
 * released.
 *
 * Jobs only ever sit in the injection queue, never in a worker's deque
 * (deques hold forked children only). A job's qstate says where it is:
 * Q_NEW (not yet queued), Q_QUEUED, Q_TAKEN (a worker, or shutdown, took it
 * off), Q_UNLINKED (its cancel hook took it off).
 *
 * References. A job is a core job record (core/job.h: br__job, embedded
 * as job->core), whose protocol is written down there: two references on
 * the record, RUN (held by whoever will run the job or take it off the
 * queue) and HOOK (held by the future's cancel hook), and the submitter's
 * reference to the future. The pool's part of it:
 *  - the cancel op (job_cancel) marks the job cancelled and, if it still
 *    sits in the injection queue, unlinks it under inj_lock and says so:
 *    the core then drops RUN on the pool's behalf;
 *  - a worker that takes the job off the queue holds RUN and finishes with
 *    br__job_complete (running it) or br__job_unref (it was cancelled
 *    before it started);
 *  - shutdown(BR_SHUTDOWN_CANCEL) takes jobs off the queue and cancels them,
 *    holding RUN the same way;
 *  - a map / for / reduce caller that waits for its root job takes a third
 *    reference (br__job_ref) so it may look at the record after the root
 *    finished (pool_map.c).
 * Every record holds a reference to the pool, taken when it is made and
 * dropped by the release op, so a hook that runs after br_pool_free still
 * finds the pool's memory.
 */
#include <stddef.h>
#include <stdlib.h>

#include "exec/pool_int.h"

/* The last reference to the record went (core/job.h). */
static void job_release(br__job *core) {
  br__pjob *job = (br__pjob *)((char *)core - offsetof(br__pjob, core));
  br_pool *p = job->pool;
  free(FK(&job->fk)->msg);
  free(job);
  br__pool_release(p);
}

/* A job accepted by the pool has finished. The counters move together with
 * pending under inj_lock, so that a shutdown report taken under the same lock
 * always adds up (pending == completed + cancelled). */
void br__pool_job_finished(br_pool *p, int how) {
  pthread_mutex_lock(&p->inj_lock);
  int64_t left = atomic_fetch_sub(&p->pending, 1) - 1;
  if (how == END_CANCELLED) {
    atomic_fetch_add_explicit(&p->cancelled, 1, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&p->completed, 1, memory_order_relaxed);
    if (how == END_FAILED) atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
  }
  bool stopping = atomic_load(&p->state) != S_RUNNING;
  pthread_mutex_unlock(&p->inj_lock);
  if (left == 0 && stopping) br__pool_wake_all(p);
}

/* The cancel op (core/job.h): runs on the cancelling thread when
 * br_future_cancel completed the job's future. Marks the job cancelled and,
 * if it still sits in the injection queue, unlinks it: then nobody will run
 * it and the core drops RUN for us. */
static bool job_cancel(br__job *core) {
  br__pjob *job = (br__pjob *)((char *)core - offsetof(br__pjob, core));
  br_pool *p = job->pool;
  atomic_store(&job->cancelled, 1);
  bool unlinked = false;
  pthread_mutex_lock(&p->inj_lock);
  if (job->qstate == Q_QUEUED) {
    if (job->prev) job->prev->next = job->next;
    else p->inj_head = job->next;
    if (job->next) job->next->prev = job->prev;
    else p->inj_tail = job->prev;
    job->qstate = Q_UNLINKED;
    atomic_fetch_sub(&p->inj_count, 1);
    unlinked = true;
  }
  pthread_mutex_unlock(&p->inj_lock);
  if (unlinked) br__pool_job_finished(p, END_CANCELLED);
  return unlinked;
}

static const br__job_ops job_ops = {.cancel = job_cancel, .release = job_release,
                                    .origin = BR_WAIT_POOL};

/* Make a job record for fn(arg): *job with RUN + HOOK, *fut the caller's
 * reference to its future. BR_ENOMEM. */
int br__pool_job_new(br__pjob **jobp, br_future **fut, br_pool *p, br_pool_fn fn, void *arg) {
  *jobp = NULL;
  br__pjob *job = calloc(1, sizeof *job);
  if (!job) return BR_ENOMEM;
  FK(&job->fk)->fn = fn;
  FK(&job->fk)->arg = arg;
  FK(&job->fk)->state = F_JOB;
  FK(&job->fk)->root = job;
  job->pool = p;
  atomic_init(&job->cancelled, 0);
  job->qstate = Q_NEW;
  if (br__job_init(&job->core, &job_ops, fut) < 0) {
    free(job);
    return BR_ENOMEM;
  }
  atomic_fetch_add(&p->refs, 1); /* dropped by job_release */
  *jobp = job;
  return 0;
}

/* Queue a new job. On success the queue holds RUN; on failure (the pool is
 * shutting down) the caller still owns the record. */
int br__pool_inj_push(br_pool *p, br__pjob *job) {
  pthread_mutex_lock(&p->inj_lock);
  if (atomic_load_explicit(&p->state, memory_order_relaxed) != S_RUNNING) {
    pthread_mutex_unlock(&p->inj_lock);
    return BR_ESHUTDOWN;
  }
  job->prev = p->inj_tail;
  job->next = NULL;
  if (p->inj_tail) p->inj_tail->next = job;
  else p->inj_head = job;
  p->inj_tail = job;
  job->qstate = Q_QUEUED;
  atomic_fetch_add(&p->inj_count, 1);
  atomic_fetch_add(&p->pending, 1);
  atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
  pthread_mutex_unlock(&p->inj_lock);
  br__pool_notify(p);
  return 0;
}

br__pjob *br__pool_inj_pop(br_pool *p) {
  if (atomic_load_explicit(&p->inj_count, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&p->inj_lock);
  br__pjob *job = p->inj_head;
  if (job) {
    p->inj_head = job->next;
    if (p->inj_head) p->inj_head->prev = NULL;
    else p->inj_tail = NULL;
    job->next = job->prev = NULL;
    job->qstate = Q_TAKEN;
    atomic_fetch_sub(&p->inj_count, 1);
  }
  pthread_mutex_unlock(&p->inj_lock);
  return job;
}

/* Take the queued job whose future is f off the injection queue, or NULL if
 * f is no job of p still queued. A walk of the queue under inj_lock: only a
 * helping wait that may not run anything else calls it (pool_worker.c). */
br__pjob *br__pool_inj_take(br_pool *p, br_future *f) {
  if (atomic_load_explicit(&p->inj_count, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&p->inj_lock);
  br__pjob *job = p->inj_head;
  while (job && job->core.fut != f) job = job->next;
  if (job) {
    if (job->prev) job->prev->next = job->next;
    else p->inj_head = job->next;
    if (job->next) job->next->prev = job->prev;
    else p->inj_tail = job->prev;
    job->next = job->prev = NULL;
    job->qstate = Q_TAKEN;
    atomic_fetch_sub(&p->inj_count, 1);
  }
  pthread_mutex_unlock(&p->inj_lock);
  return job;
}

int br_pool_submit(br_pool *pool, br_future **out, br_pool_fn fn, void *arg) {
  if (!pool || !out || !fn) return BR_EINVAL;
  br__pjob *job;
  br_future *mine;
  if (br__pool_job_new(&job, &mine, pool, fn, arg) < 0) return BR_ENOMEM;
  int rc = br__pool_inj_push(pool, job);
  if (rc < 0) {
    br__job_abandon(&job->core); /* nobody saw it; drops mine too */
    return rc;
  }
  *out = mine;
  return 0;
}
