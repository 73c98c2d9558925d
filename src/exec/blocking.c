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
 * outside the lock (completing wakes tasks and runs callbacks).
 *
 * Job lifetime: a job is referenced by the queue/worker ("run" reference)
 * and by the future's cancel hook ("hook" reference). The hook reference is
 * dropped by the hook when br_future_cancel runs it, or by the worker when
 * its own completion of the future succeeded (then cancel lost the race and
 * the hook will never run). So the hook can never touch a freed job.
 */
#include <braid.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/blocking.h"

typedef struct job {
  struct job *next;
  br_task_fn fn;
  void *arg;
  br_future *f;
  struct cls *cls;
  atomic_int refs;
  bool queued; /* under cls->mu */
  int fail_code;
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

static _Thread_local job *current_job;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

/* Test hook: make the next n thread creations fail (see blocking.h). */
static atomic_int fail_creates;

void br__blocking_fail_thread_creates(int n) { atomic_store(&fail_creates, n); }

static void read_env(void) {
  const char *s = getenv("BRAID_BLOCKING_THREADS");
  if (s && *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == '\0' && v > 0 && v <= 4096) {
      pthread_mutex_lock(&classes[BR_BLOCKING_USER].mu);
      classes[BR_BLOCKING_USER].max_threads = (unsigned)v;
      pthread_mutex_unlock(&classes[BR_BLOCKING_USER].mu);
    }
  }
}

static void job_unref(job *j) {
  if (atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) != 1) return;
  br_future_unref(j->f);
  free(j->fail_msg);
  free(j);
}

/* The future's cancel hook: drop the job if it has not started. */
static void job_cancel_hook(void *arg) {
  job *j = arg;
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
  if (dropped) job_unref(j); /* the run reference */
  job_unref(j);              /* the hook reference */
}

static void run_job(job *j) {
  current_job = j;
  void *v = j->fn(j->arg);
  current_job = NULL;
  int rc;
  if (j->fail_code < 0)
    rc = br_future_fail(j->f, j->fail_code, "%s", j->fail_msg ? j->fail_msg : br_strerror(j->fail_code));
  else
    rc = br_future_set(j->f, v);
  /* rc == 0: our completion won, so the cancel hook will never run and its
   * reference is ours to drop. Otherwise the future was cancelled: the hook
   * runs (or ran) and drops it. */
  if (rc == 0) job_unref(j);
  job_unref(j);
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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

br_future *br_to_thread_class(br_blocking_class which, br_task_fn fn, void *arg) {
  pthread_once(&env_once, read_env);
  br_future *f = br_future_new();
  if (!f) return NULL;
  if ((unsigned)which >= BR_BLOCKING_NCLASSES || !fn) {
    br_future_fail(f, BR_EINVAL, "br_to_thread: %s", !fn ? "NULL function" : "bad class");
    return f;
  }
  cls *c = &classes[which];
  job *j = calloc(1, sizeof *j);
  if (!j) {
    br_future_unref(f);
    return NULL;
  }
  j->fn = fn;
  j->arg = arg;
  j->f = br_future_ref(f);
  j->cls = c;
  atomic_init(&j->refs, 2);
  br_future_set_cancel_hook(f, job_cancel_hook, j);

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
        /* unlink again: it is the tail */
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
    if (err == BR_EAGAIN)
      br_future_fail(f, err, "blocking pool (%s): cannot start a thread: %s", c->name,
                     strerror(create_err));
    else if (err == BR_EFULL)
      br_future_fail(f, err, "blocking pool (%s): queue full (%zu jobs)", c->name, c->max_queue);
    else
      br_future_fail(f, err, "blocking pool is shutting down");
    /* The failing completion above came first, so the hook never runs. */
    job_unref(j);
    job_unref(j);
  }
  return f;
}

br_future *br_to_thread(br_task_fn fn, void *arg) {
  return br_to_thread_class(BR_BLOCKING_USER, fn, arg);
}

void *br_to_thread_fail(int code, const char *fmt, ...) {
  job *j = current_job;
  if (!j) return NULL;
  j->fail_code = code < 0 ? code : BR_EFAILED;
  free(j->fail_msg);
  j->fail_msg = NULL;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&j->fail_msg, fmt, ap) < 0) j->fail_msg = NULL;
    va_end(ap);
  }
  return NULL;
}

bool br__blocking_in_job(void) { return current_job != NULL; }

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

void br_blocking_shutdown(void) {
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
}

/* After fork() only the forking thread survives: forget the parent's
 * workers and give the child fresh locks so the pool works there too. */
static void atfork_child(void) {
  for (int i = 0; i < BR_BLOCKING_NCLASSES; i++) {
    cls *c = &classes[i];
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->gone, NULL);
    c->threads = 0;
    c->idle = 0;
    c->exited = NULL; /* the parent's threads: not ours to join (leaked) */
  }
}

__attribute__((constructor)) static void blocking_init(void) {
  pthread_atfork(NULL, NULL, atfork_child);
}
