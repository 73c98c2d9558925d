/* SPDX-License-Identifier: MIT */
/* braid — the blocking pool (br_to_thread).
 *
 * Blocking legacy code, file system calls on the epoll path and getaddrinfo
 * run here so they never stall a loop. The pool is elastic and bounded:
 * threads are created on demand up to a per-class limit and retire after
 * sitting idle, and every class has a bounded queue (BR_EFULL beyond).
 *
 * Why classes: with one shared queue, a burst of slow user jobs (or DNS
 * lookups against a dead resolver) fills every thread and file reads queue
 * behind them for seconds — libuv's users lived with that for years
 * (libuv#28). Here each class has its own threads and queue, so the classes
 * cannot starve each other; the price is a few more threads at peak.
 *
 * Locking: each class has one mutex guarding its queue, counters and limits;
 * nothing else is shared between classes. A job's future is completed
 * outside the lock (completing wakes tasks and runs callbacks). The class
 * lock is a leaf: the cancel op takes it from br_future_cancel, never under
 * the future's lock.
 *
 * Job lifetime: the core's job record protocol (core/job.h). The queue, then
 * the worker running the job, hold RUN; the future's cancel hook holds HOOK.
 * job_cancel (the hook's op) unlinks a job still queued and says so, and
 * then the hook drops RUN for us; a job already running is only flagged
 * (br_cancelled() in it answers BR_ECANCELED) and finishes normally, its
 * late br__job_complete losing to the cancel.
 *
 * While a job runs its thread is in the job's context (core/job.h), so
 * br_fail() in the job records the failure its future will carry and
 * br_cancelled() reports a cancel of its future.
 */
#include <braid.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/env.h"
#include "core/job.h"
#include "core/trace.h"
#include "exec/blocking.h"
#include "sys/clock.h"

typedef struct job {
  br__job base;    /* first: the ops cast back */
  br__job_ctx ctx; /* the worker's job context while it runs */
  struct job *next;
  br_task_fn fn;
  void *arg;
  struct cls *cls;
  bool queued; /* under cls->mu */
  atomic_bool cancel_asked; /* its future was cancelled while it ran */
  int fail_code; /* br_fail in the job: worker thread only */
  char *fail_msg;
} job;

/* A worker's record, handed back when it exits so that somebody joins it:
 * detached threads would be simpler, but an exiting detached thread can
 * still be unmapping its stack after br_blocking_shutdown returned, which
 * leak checkers (and programs that unload us) trip over. */
typedef struct worker_rec {
  struct worker_rec *next;
  struct cls *cls;
  pthread_t thread;
} worker_rec;

typedef struct cls {
  pthread_mutex_t mu;
  pthread_cond_t work;  /* a job was queued, or limits/shutdown changed */
  pthread_cond_t gone;  /* a thread exited (br_blocking_shutdown waits) */
  job *head, *tail;
  worker_rec *exited; /* exited, not yet joined */
  size_t queued;
  unsigned threads, idle;
  unsigned max_threads;
  size_t max_queue;
  int64_t idle_ns;
  uint64_t completed, rejected;
  bool shutdown;
  const char *name;
} cls;

static cls classes[BR_BLOCKING_NCLASSES] = {
  [BR_BLOCKING_USER] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        PTHREAD_COND_INITIALIZER, NULL, NULL, NULL, 0, 0, 0, 64, 65536,
                        10000000000LL, 0, 0, false, "user"},
  [BR_BLOCKING_FILE] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        PTHREAD_COND_INITIALIZER, NULL, NULL, NULL, 0, 0, 0, 8, 65536,
                        10000000000LL, 0, 0, false, "file"},
  [BR_BLOCKING_DNS] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                       PTHREAD_COND_INITIALIZER, NULL, NULL, NULL, 0, 0, 0, 4, 4096,
                       10000000000LL, 0, 0, false, "dns"},
};

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

/* Test hook: make the next n thread creations fail (see blocking.h). */
static atomic_int fail_creates;

void br__blocking_fail_thread_creates(int n) { atomic_store(&fail_creates, n); }

static void read_env(void) {
  static atomic_bool warned;
  long long v;
  if (br__env_long("BRAID_BLOCKING_THREADS", 1, 4096, &v, &warned) == 1) {
    pthread_mutex_lock(&classes[BR_BLOCKING_USER].mu);
    classes[BR_BLOCKING_USER].max_threads = (unsigned)v;
    pthread_mutex_unlock(&classes[BR_BLOCKING_USER].mu);
  }
}

static job *job_of_ctx(br__job_ctx *ctx) {
  return (job *)((char *)ctx - offsetof(job, ctx));
}

/* --- the job context: what br_fail / br_cancelled / br_await do in a job */

static void ctx_fail(br__job_ctx *ctx, int code, char *msg) {
  job *j = job_of_ctx(ctx);
  j->fail_code = code < 0 ? code : BR_EFAILED;
  free(j->fail_msg);
  j->fail_msg = msg;
}

static int ctx_cancelled(br__job_ctx *ctx) {
  return atomic_load_explicit(&job_of_ctx(ctx)->cancel_asked, memory_order_relaxed)
             ? BR_ECANCELED
             : 0;
}

static void run_job(job *j);
static job *take_queued(br_future *f);

/* A job blocks its thread while it waits for a future, except for its own
 * future, which cannot complete before the job returns, and for a blocking
 * job still queued: that one it runs itself. Jobs that call br_to_thread and
 * wait, nested deeper than a class has threads, would otherwise hold every
 * thread waiting for jobs no thread is left to run. A wait with a deadline
 * only waits (running the job could outlast the deadline). */
static int ctx_wait(br__job_ctx *ctx, br_future *f, int64_t deadline) {
  job *j = job_of_ctx(ctx);
  if (f == j->base.fut) return BR_EDEADLK;
  job *q = deadline == BR_NEVER ? take_queued(f) : NULL;
  if (q) {
    cls *c = q->cls;
    run_job(q); /* completes f; q may be gone */
    pthread_mutex_lock(&c->mu);
    c->completed++;
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  br__job_ctx *prev = br__job_enter(NULL); /* plain blocking wait */
  int rc = br__future_wait(f, deadline);
  br__job_leave(prev);
  return rc;
}

static const br__job_ctx_ops ctx_ops = {
    .fail = ctx_fail, .cancelled = ctx_cancelled, .wait = ctx_wait};

/* --- the job record (core/job.h protocol) ---------------------------------- */

/* br_future_cancel won: take the job back if it is still queued. */
static bool job_cancel(br__job *bj) {
  job *j = (job *)bj;
  cls *c = j->cls;
  bool dropped = false;
  pthread_mutex_lock(&c->mu);
  if (j->queued) {
    job **pp = &c->head;
    job *prev = NULL;
    while (*pp && *pp != j) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    if (*pp) {
      *pp = j->next;
      if (c->tail == j) c->tail = prev;
      c->queued--;
      j->queued = false;
      dropped = true;
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (!dropped) atomic_store_explicit(&j->cancel_asked, true, memory_order_relaxed);
  return dropped;
}

/* Take the job whose future is f off its class's queue, or NULL if it is no
 * queued blocking job (running, done, or another executor's). */
static job *take_queued(br_future *f) {
  for (int i = 0; i < BR_BLOCKING_NCLASSES; i++) {
    cls *c = &classes[i];
    pthread_mutex_lock(&c->mu);
    job *prev = NULL, *p = c->head;
    while (p && p->base.fut != f) {
      prev = p;
      p = p->next;
    }
    if (p) {
      if (prev) prev->next = p->next;
      else c->head = p->next;
      if (c->tail == p) c->tail = prev;
      p->next = NULL;
      c->queued--;
      p->queued = false;
    }
    pthread_mutex_unlock(&c->mu);
    if (p) return p;
  }
  return NULL;
}

static void job_release(br__job *bj) {
  job *j = (job *)bj;
  free(j->fail_msg);
  free(j);
}

static const br__job_ops job_ops = {.cancel = job_cancel, .release = job_release,
                                    .origin = BR_WAIT_BLOCKING};

static void run_job(job *j) {
  br__job_ctx *prev = br__job_enter(&j->ctx);
  br__trace_job_begin(BR_WAIT_BLOCKING, (uintptr_t)j, NULL);
  void *v = j->fn(j->arg);
  br__trace_job_end(BR_WAIT_BLOCKING, (uintptr_t)j, j->fail_code);
  br__job_leave(prev);
  if (j->fail_code < 0) {
    char *msg = j->fail_msg;
    j->fail_msg = NULL;
    br__job_complete(&j->base, NULL, NULL, j->fail_code, msg);
  } else {
    br__job_complete(&j->base, v, NULL, 0, NULL);
  }
  /* j may be gone now. */
}

static int64_t mono_ns(void) { return br__mono_ns(); }

/* Join the workers that have exited; c->mu held. They no longer need the
 * lock, so this cannot deadlock, and it returns at once. */
static void join_exited(cls *c) {
  while (c->exited) {
    worker_rec *r = c->exited;
    c->exited = r->next;
    pthread_join(r->thread, NULL);
    free(r);
  }
}

static void *worker(void *arg) {
  worker_rec *self = arg;
  cls *c = self->cls;
  char tname[16]; /* what top and gdb show: "br-block-user" */
  snprintf(tname, sizeof tname, "br-block-%s", c->name);
  pthread_setname_np(pthread_self(), tname);
  pthread_mutex_lock(&c->mu);
  for (;;) {
    /* The limit was lowered: surplus threads retire, even with work queued
     * (the remaining ones take it; pass on a wake-up meant for us). */
    if (c->threads > c->max_threads) {
      if (c->head) pthread_cond_signal(&c->work);
      goto out;
    }
    while (!c->head) {
      if (c->shutdown || c->threads > c->max_threads) goto out;
      /* Idle: wait for work, retire after idle_ns without any. */
      struct timespec ts;
      int64_t until = mono_ns() + c->idle_ns;
      ts.tv_sec = until / 1000000000LL;
      ts.tv_nsec = until % 1000000000LL;
      c->idle++;
      int rc = pthread_cond_clockwait(&c->work, &c->mu, CLOCK_MONOTONIC, &ts);
      c->idle--;
      if (rc == ETIMEDOUT && !c->head) goto out;
    }
    if (c->threads > c->max_threads) { /* lowered while we slept */
      pthread_cond_signal(&c->work);
      goto out;
    }
    job *j = c->head;
    c->head = j->next;
    if (!c->head) c->tail = NULL;
    c->queued--;
    j->queued = false;
    pthread_mutex_unlock(&c->mu);
    run_job(j);
    pthread_mutex_lock(&c->mu);
    c->completed++;
  }
out:
  join_exited(c); /* at most one unjoined worker is ever left behind */
  self->next = c->exited;
  c->exited = self;
  c->threads--;
  pthread_cond_broadcast(&c->gone);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Start one more worker for c; c->mu held. Returns 0 or an errno. Workers
 * block every signal (signals belong to the program's own threads and to
 * br_signal_open descriptors). */
static int spawn_worker(cls *c) {
  int n = atomic_load(&fail_creates);
  while (n > 0) {
    if (atomic_compare_exchange_weak(&fail_creates, &n, n - 1)) return EAGAIN;
  }
  join_exited(c);
  worker_rec *r = calloc(1, sizeof *r);
  if (!r) return ENOMEM;
  r->cls = c;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  sigset_t all;
  sigfillset(&all);
  pthread_attr_setsigmask_np(&attr, &all);
  int rc = pthread_create(&r->thread, &attr, worker, r);
  pthread_attr_destroy(&attr);
  if (rc == 0)
    c->threads++;
  else
    free(r);
  return rc;
}

int br_to_thread_class(br_future **out, br_blocking_class which, br_task_fn fn, void *arg) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  if ((unsigned)which >= BR_BLOCKING_NCLASSES || !fn) return BR_EINVAL;
  pthread_once(&env_once, read_env);
  cls *c = &classes[which];
  job *j = calloc(1, sizeof *j);
  if (!j) return BR_ENOMEM;
  br_future *f;
  if (br__job_init(&j->base, &job_ops, &f) < 0) {
    free(j);
    return BR_ENOMEM;
  }
  j->ctx.ops = &ctx_ops;
  j->fn = fn;
  j->arg = arg;
  j->cls = c;
  atomic_init(&j->cancel_asked, false);

  int err = 0, create_err = 0;
  pthread_mutex_lock(&c->mu);
  if (c->shutdown) {
    err = BR_ESHUTDOWN;
  } else if (c->queued >= c->max_queue) {
    err = BR_EFULL;
    c->rejected++;
  } else {
    j->queued = true;
    if (c->tail)
      c->tail->next = j;
    else
      c->head = j;
    c->tail = j;
    c->queued++;
    /* Wake an idle thread if one is free for this job, else grow. A thread
     * that cannot be created is only an error when no thread exists to run
     * the job eventually. */
    if (c->idle >= c->queued) {
      pthread_cond_signal(&c->work);
    } else if (c->threads < c->max_threads) {
      create_err = spawn_worker(c);
      if (create_err && c->threads == 0) {
        /* unlink again: it is the tail, and no thread saw it */
        job *prev = NULL;
        for (job *p = c->head; p != j; p = p->next) prev = p;
        if (prev)
          prev->next = NULL;
        else
          c->head = NULL;
        c->tail = prev;
        c->queued--;
        j->queued = false;
        c->rejected++;
        err = BR_EAGAIN;
      } else if (c->idle > 0) {
        pthread_cond_signal(&c->work);
      }
    } else if (c->idle > 0) {
      pthread_cond_signal(&c->work);
    }
  }
  pthread_mutex_unlock(&c->mu);

  if (err) {
    /* Nobody else ever saw the job or its future. */
    br__job_abandon(&j->base);
    return err;
  }
  *out = f;
  return 0;
}

int br_to_thread(br_future **out, br_task_fn fn, void *arg) {
  return br_to_thread_class(out, BR_BLOCKING_USER, fn, arg);
}

bool br__blocking_in_job(void) {
  br__job_ctx *ctx = br__job_current();
  return ctx && ctx->ops == &ctx_ops;
}

int br_blocking_set_limits(br_blocking_class which, const br_blocking_limits *l) {
  if ((unsigned)which >= BR_BLOCKING_NCLASSES || !l || l->idle_ms < 0) return BR_EINVAL;
  pthread_once(&env_once, read_env);
  cls *c = &classes[which];
  pthread_mutex_lock(&c->mu);
  if (l->max_threads) c->max_threads = l->max_threads;
  if (l->max_queue) c->max_queue = l->max_queue;
  if (l->idle_ms) c->idle_ns = l->idle_ms * 1000000LL;
  pthread_cond_broadcast(&c->work); /* surplus or idle threads re-check */
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int br_blocking_get_stats(br_blocking_class which, br_blocking_stats *out) {
  if ((unsigned)which >= BR_BLOCKING_NCLASSES || !out) return BR_EINVAL;
  cls *c = &classes[which];
  pthread_mutex_lock(&c->mu);
  out->threads = c->threads;
  out->idle = c->idle;
  out->queued = c->queued;
  out->completed = c->completed;
  out->rejected = c->rejected;
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int br_blocking_shutdown(void) {
  if (br__blocking_in_job()) return BR_EDEADLK;
  if (br_self()) return BR_EBUSY;
  for (int i = 0; i < BR_BLOCKING_NCLASSES; i++) {
    cls *c = &classes[i];
    pthread_mutex_lock(&c->mu);
    c->shutdown = true;
    pthread_cond_broadcast(&c->work);
    /* Workers drain the queue before they see the flag (they only look at it
     * when the queue is empty), then exit one by one. */
    while (c->threads > 0) pthread_cond_wait(&c->gone, &c->mu);
    join_exited(c);
    c->shutdown = false;
    pthread_mutex_unlock(&c->mu);
  }
  return 0;
}

/* fork() copies the classes while no other thread is in the middle of
 * changing one: their locks are held across it. */
static void atfork_prepare(void) {
  for (int i = 0; i < BR_BLOCKING_NCLASSES; i++) pthread_mutex_lock(&classes[i].mu);
}

static void atfork_parent(void) {
  for (int i = BR_BLOCKING_NCLASSES - 1; i >= 0; i--) pthread_mutex_unlock(&classes[i].mu);
}

/* After fork() only the forking thread survives: forget the parent's
 * workers and its queued jobs (they are the parent's work: run here they
 * would run twice) and give the child fresh locks so the pool works there
 * too. */
static void atfork_child(void) {
  for (int i = 0; i < BR_BLOCKING_NCLASSES; i++) {
    cls *c = &classes[i];
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->gone, NULL);
    c->threads = 0;
    c->idle = 0;
    c->exited = NULL; /* the parent's threads: not ours to join (leaked) */
    c->head = c->tail = NULL; /* the parent's jobs (leaked in the child) */
    c->queued = 0;
  }
}

__attribute__((constructor)) static void blocking_init(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
