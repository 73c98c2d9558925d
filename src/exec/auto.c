/* SPDX-License-Identifier: MIT */
/* auto.c — the auto executor (braid/auto.h): measure each function, route it.
 *
 * One table of per-function measurements, keyed by the function pointer (a
 * br_task_fn, or a registered job's br_job_fn; a function that finds no free
 * slot runs on the blocking pool, unmeasured) and guarded by one mutex, mu
 * (a leaf: no user code, future call or other lock runs under it). Every
 * call that goes to a pool runs through run_measured(), which times it on
 * the thread that runs it: wall time, that thread's CPU time and its
 * run-queue wait (schedstat, so a busy machine does not make a computing
 * function look like a waiting one). The measurements are exponentially
 * weighted (recent calls count most), so a function whose behaviour changes
 * moves to another route within a few calls.
 *
 * Where a call goes (route_for):
 *  - it waits (less than half of its un-queued wall time on a CPU): the
 *    blocking pool, so it never holds a loop or a CPU-pool worker;
 *  - it computes and takes less than two hand-offs: inline, on the caller's
 *    thread (in a task too: the task's outcome is set aside around the call,
 *    core/job.h) — sending it away would cost more than running it;
 *  - it computes for longer: the CPU pool; a registered job whose caller
 *    allows processes, and that runs at least two process-pool hand-offs,
 *    goes to the process pool instead (isolation at no loss of speed).
 * Inline calls are timed one in INLINE_SAMPLE, with the cycle counter only:
 * a call that grew longer than two hand-offs leaves the inline route
 * whatever it does, and the pool it goes to measures the rest. One call in
 * PROC_SAMPLE of the process-pool route runs in this process on the CPU
 * pool, measured, so that route follows changes too.
 *
 * The measuring phase. A function's first call (the probe) runs on the CPU
 * pool, measured. Calls that arrive while the probe runs are held, each
 * with a future of its own, and sent where the probe's measurement says as
 * soon as it lands (inline calls then run on the thread that ran the
 * probe): a burst of tiny calls costs no thread hand-off each. A probe that
 * takes longer than HOLD_NS is not tiny: the held calls and the next ones
 * go to the blocking pool, safe for both kinds, until it reports. The held
 * calls are let go by the releaser, one thread for the process started at
 * the first hold, which sleeps until the oldest hold is HOLD_NS old (a
 * burst of calls of a function that sleeps must not wait for the first).
 */
#include <braid.h>
#include <braid/auto.h>
#include <braid/procpool.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/job.h"
#include "core/log.h"
#include "sys/clock.h"

enum { TABLE_SIZE = 1024, HANDOFF_ROUNDS = 8, INLINE_SAMPLE = 16, PROC_SAMPLE = 8,
       PROC_REPROBE = 8 };
#define EWMA_WEIGHT 0.3   /* of the newest measurement */
#define WAITS_BELOW 0.5   /* CPU share under which a function waits */
#define HOLD_NS 200000    /* a probe still running after this is not tiny */

typedef struct acall acall;

typedef struct fn_stats {
  _Atomic(void *) key;      /* the function; set once under mu, read without it */
  const br_job_desc *job;   /* a registered job, or NULL; set with key */
  atomic_int route;         /* the in-process route (br_auto_route), read on every call */
  atomic_bool procs_pay;    /* a process-pool hand-off is worth it for this job */
  atomic_bool allow_procs;  /* the last call allowed the process pool */
  atomic_uint_fast64_t calls;
  atomic_uint sample;       /* inline calls since the last sample (racy: it only spaces samples) */
  /* The rest: under mu. */
  uint64_t measured, proc_calls;
  double wall_ns, cpu_share; /* weighted averages */
  double proc_handoff_ns;    /* least process-pool round trip above the call's time, 0: unknown */
  bool proc_retry;           /* a cold round trip did not pay: the next call goes there again */
  bool probing;
  int64_t probe_at;
  acall *held, *held_tail;
} fn_stats;

/* A held call, or a call on its way to a pool. */
struct acall {
  fn_stats *s;
  br_task_fn fn;      /* a function, or */
  const br_job_desc *job; /* a job, with its own copy of the input */
  void *arg;
  size_t len;
  br_future *fut;     /* held calls: the future the caller got */
  acall *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fn_stats table[TABLE_SIZE];
/* A function found no free slot: functions not in the table run on the
 * blocking pool, unmeasured (safe whatever they do), until a shutdown
 * empties the table. */
static atomic_bool table_full;
static br_pool *_Atomic pool;   /* started at the first call; cleared by shutdown */
static br_procpool *procs;      /* started at the first call that may use it */
static int procs_err;           /* why the process pool could not start, or 0 */
static int64_t handoff_ns = -1; /* a submit + wait round trip to the CPU pool */

/* Calls on their way or running (every acall alive), so that
 * br_auto_shutdown lets them finish before it forgets the measurements
 * they will record: one on the blocking pool outlives the pools stopped
 * there, and its late measurement would land in a table already cleared,
 * perhaps in the slot of another function. draining: a shutdown waits, and
 * the acall that brings live_calls to 0 completes idle (under mu). */
static atomic_long live_calls;
static atomic_bool draining;
static br_future *idle;

/* Inside a call the executor runs on a thread (not a task's inline call),
 * where a shutdown would wait for that very call. */
static _Thread_local int in_call;

/* The releaser (see the top): under mu. */
static pthread_cond_t held_cv;
static int64_t release_at;      /* when the oldest hold is HOLD_NS old, 0: nothing held */
static bool releaser_started;

static int64_t thread_cpu_ns(void) { return br__thread_cpu_ns(); }

/* The calling thread's run-queue wait so far (ns), from a schedstat file it
 * keeps open; 0 where schedstat is missing. */
static int64_t thread_rq_ns(void) {
  static _Thread_local int fd = -2;
  if (fd == -2) fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[96];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long run, wait;
  return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? (int64_t)wait : 0;
}

static size_t hash_of(const void *key) {
  return (size_t)(((uintptr_t)key >> 4) * 11400714819323198485u % TABLE_SIZE);
}

/* The slot for key, without locking: slots are only ever filled (under mu),
 * and emptied by br_auto_shutdown, which no submit may overlap. */
static fn_stats *find_slot(const void *key) {
  size_t h = hash_of(key);
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    fn_stats *s = &table[(h + i) % TABLE_SIZE];
    void *k = atomic_load_explicit(&s->key, memory_order_acquire);
    if (k == key) return s;
    if (!k) return NULL;
  }
  return NULL;
}

/* The slot for key, inserted if new; NULL when the table is full. mu held. */
static fn_stats *slot_of(void *key, const br_job_desc *job) {
  size_t h = hash_of(key);
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    fn_stats *s = &table[(h + i) % TABLE_SIZE];
    void *k = atomic_load_explicit(&s->key, memory_order_relaxed);
    if (k == key) return s;
    if (!k) {
      s->job = job;
      s->measured = s->proc_calls = 0;
      s->wall_ns = s->cpu_share = s->proc_handoff_ns = 0;
      s->probing = false;
      s->held = s->held_tail = NULL;
      atomic_store_explicit(&s->calls, 0, memory_order_relaxed);
      atomic_store_explicit(&s->sample, 0, memory_order_relaxed);
      atomic_store_explicit(&s->procs_pay, false, memory_order_relaxed);
      atomic_store_explicit(&s->allow_procs, false, memory_order_relaxed);
      atomic_store_explicit(&s->route, BR_AUTO_MEASURING, memory_order_relaxed);
      atomic_store_explicit(&s->key, key, memory_order_release);
      return s;
    }
  }
  return NULL;
}

static fn_stats *get_slot(void *key, const br_job_desc *job) {
  fn_stats *s = find_slot(key);
  if (s) return s;
  pthread_mutex_lock(&mu);
  s = slot_of(key, job);
  pthread_mutex_unlock(&mu);
  return s;
}

/* mu held. */
static br_auto_route route_for(const fn_stats *s) {
  if (s->measured == 0) return BR_AUTO_MEASURING;
  if (s->cpu_share < WAITS_BELOW) return BR_AUTO_BLOCKING;
  if (handoff_ns > 0 && s->wall_ns < 2.0 * (double)handoff_ns) return BR_AUTO_INLINE;
  return BR_AUTO_CPU_POOL;
}

/* mu held. Until a process-pool round trip has been seen, it is guessed
 * at a CPU-pool one; the first calls sent there correct it. */
static bool procs_pay_for(const fn_stats *s) {
  double h = s->proc_handoff_ns > 0 ? s->proc_handoff_ns : (double)handoff_ns;
  return s->job && h > 0 && s->wall_ns >= 2.0 * h;
}

static void dispatch_held(acall *list);

/* A measurement of one call: wall time, CPU time and run-queue wait (ns;
 * cpu < 0: not measured — an inline sample, judged by its length only). */
static void record(fn_stats *s, int64_t wall, int64_t cpu, int64_t rq) {
  double share = 1.0;
  if (cpu >= 0) {
    int64_t ran = wall - rq; /* the wall time it was not kept from running */
    share = ran > 0 ? (double)cpu / (double)ran : 1.0;
    if (share > 1) share = 1;
  }
  acall *held = NULL;
  pthread_mutex_lock(&mu);
  if (s->measured == 0) {
    s->wall_ns = (double)wall;
    s->cpu_share = share;
  } else {
    s->wall_ns += EWMA_WEIGHT * ((double)wall - s->wall_ns);
    if (cpu >= 0) s->cpu_share += EWMA_WEIGHT * (share - s->cpu_share);
  }
  s->measured++;
  atomic_store_explicit(&s->route, route_for(s), memory_order_relaxed);
  atomic_store_explicit(&s->procs_pay, procs_pay_for(s), memory_order_relaxed);
  if (s->held) {
    held = s->held;
    s->held = s->held_tail = NULL;
  }
  s->probing = false;
  pthread_mutex_unlock(&mu);
  if (held) dispatch_held(held);
}

/* --- running a call, catching its failure -------------------------------- */

/* On a thread that is no task: a job context of our own catches br_fail;
 * br_cancelled and br_await go on to the context it replaced (a CPU-pool
 * worker still helps while the call waits). */
typedef struct catch_ctx {
  br__job_ctx ctx;
  br__job_ctx *prev;
  int err;
  char *msg;
} catch_ctx;

static void catch_fail(br__job_ctx *c, int code, char *msg) {
  catch_ctx *cc = (catch_ctx *)c;
  free(cc->msg);
  cc->err = code;
  cc->msg = msg;
}

static int catch_cancelled(br__job_ctx *c) {
  br__job_ctx *p = ((catch_ctx *)c)->prev;
  return p && p->ops && p->ops->cancelled ? p->ops->cancelled(p) : 0;
}

static int catch_wait(br__job_ctx *c, br_future *f, int64_t deadline) {
  br__job_ctx *p = ((catch_ctx *)c)->prev;
  if (p && p->ops && p->ops->wait) return p->ops->wait(p, f, deadline);
  /* No helper below us: block the thread, as without a context. */
  br__job_ctx *mine = br__job_enter(NULL);
  int rc = br_await_until(f, NULL, deadline);
  br__job_leave(mine);
  return rc == 0 || br_future_done(f) ? 0 : rc;
}

static const br__job_ctx_ops catch_ops = {
    .fail = catch_fail, .cancelled = catch_cancelled, .wait = catch_wait};

/* Run a function or a job here. Returns its value (a job's: a br_bytes* the
 * future's receiver owns); on failure *err < 0 and *msg (malloc'd or NULL). */
static void *call_here(br_task_fn fn, const br_job_desc *job, void *arg, size_t len, int *err,
                       char **msg) {
  br__outcome saved, got = {0, NULL};
  catch_ctx cc = {.ctx = {&catch_ops}};
  bool in_task = br__outcome_save(&saved);
  if (!in_task) cc.prev = br__job_enter(&cc.ctx);
  /* A task's inline call holds no acall (and other tasks of the loop may run
   * while it awaits): only calls on threads of their own count. */
  if (!in_task) in_call++;
  void *value = NULL;
  int rc = 0;
  if (job) {
    br_bytes *out = calloc(1, sizeof *out);
    if (!out) {
      rc = BR_ENOMEM;
    } else {
      rc = job->fn(arg, len, out);
      if (rc > 0) rc = BR_EFAILED;
      value = out;
    }
  } else {
    value = fn(arg);
  }
  if (!in_task) in_call--;
  if (in_task) br__outcome_restore(&saved, &got);
  else {
    br__job_leave(cc.prev);
    got.code = cc.err;
    got.msg = cc.msg;
  }
  if (rc == 0 && got.code < 0) rc = got.code; /* br_fail, then returned 0 (or a value) */
  if (rc < 0) {
    if (job) br_bytes_free(value);
    value = NULL;
    *msg = got.msg;
  } else {
    free(got.msg);
    *msg = NULL;
  }
  *err = rc;
  return value;
}

/* Run a call measured (on a pool thread). */
static void *call_measured(acall *c, int *err, char **msg) {
  int64_t q0 = thread_rq_ns(), c0 = thread_cpu_ns(), w0 = br_now();
  void *value = call_here(c->fn, c->job, c->arg, c->len, err, msg);
  int64_t w1 = br_now(), c1 = thread_cpu_ns(), q1 = thread_rq_ns();
  if (c->s) record(c->s, w1 - w0, c1 - c0, q1 - q0); /* NULL: no slot (the table is full) */
  return value;
}

static void acall_free(acall *c) {
  if (c->job) free(c->arg);
  free(c);
  if (atomic_fetch_sub(&live_calls, 1) == 1 && atomic_load(&draining)) {
    pthread_mutex_lock(&mu);
    br_future *f = idle;
    idle = NULL;
    pthread_mutex_unlock(&mu);
    if (f) {
      (void)br_future_set(f, NULL);
      br_future_unref(f);
    }
  }
}

/* A pool job: the call, measured; its failure becomes the pool job's. */
static void *run_measured(void *p) {
  acall *c = p;
  int err;
  char *msg;
  void *value = call_measured(c, &err, &msg);
  acall_free(c);
  if (err) {
    (void)br_fail(err, "%s", msg ? msg : br_strerror(err));
    free(msg);
    return NULL;
  }
  return value;
}

static void complete(br_future *f, void *value, int err, char *msg) {
  if (err) (void)br_future_fail(f, err, "%s", msg ? msg : br_strerror(err));
  else (void)br_future_set(f, value);
  free(msg);
}

/* A pool job for a held call: the call, measured, completes the caller's
 * future. */
static void *run_held(void *p) {
  acall *c = p;
  int err;
  char *msg;
  void *value = call_measured(c, &err, &msg);
  complete(c->fut, value, err, msg);
  br_future_unref(c->fut);
  acall_free(c);
  return NULL;
}

/* Send held calls where their function's route now says. Inline ones run
 * here, on the thread that measured the probe. */
static void dispatch_held(acall *list) {
  while (list) {
    acall *c = list;
    list = c->next;
    br_auto_route r = (br_auto_route)atomic_load_explicit(&c->s->route, memory_order_relaxed);
    if (r == BR_AUTO_INLINE) {
      int err;
      char *msg;
      void *value = call_here(c->fn, c->job, c->arg, c->len, &err, &msg);
      complete(c->fut, value, err, msg);
      br_future_unref(c->fut);
      acall_free(c);
      continue;
    }
    br_future *pf = NULL;
    int rc = BR_EFULL;
    br_pool *p = atomic_load(&pool);
    if (r != BR_AUTO_CPU_POOL) rc = br_to_thread(&pf, run_held, c);
    if (rc == BR_EFULL) rc = p ? br_pool_submit(p, &pf, run_held, c) : BR_ECLOSED;
    br_future_unref(pf);
    if (rc) run_held(c); /* refused (a shutdown drains the pool): run it here */
  }
}

/* Let go of the calls held behind probes older than HOLD_NS: to the blocking
 * pool (their route is still "measuring"). */
static void *releaser(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (release_at == 0) pthread_cond_wait(&held_cv, &mu);
    int64_t now = br__mono_ns();
    if (now < release_at) {
      struct timespec ts = {release_at / 1000000000, release_at % 1000000000};
      pthread_cond_clockwait(&held_cv, &mu, CLOCK_MONOTONIC, &ts);
      continue;
    }
    acall *flush = NULL, **tail = &flush;
    int64_t next = 0;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
      fn_stats *t = &table[i];
      if (!t->held) continue;
      if (now - t->probe_at >= HOLD_NS) {
        *tail = t->held;
        tail = &t->held_tail->next;
        t->held = t->held_tail = NULL;
      } else if (!next || t->probe_at + HOLD_NS < next) {
        next = t->probe_at + HOLD_NS;
      }
    }
    release_at = next;
    if (flush) {
      pthread_mutex_unlock(&mu);
      dispatch_held(flush);
      pthread_mutex_lock(&mu);
    }
  }
  return NULL;
}

/* In a child forked from a process with a releaser: it is not there. */
static void releaser_atfork_child(void) {
  releaser_started = false;
  release_at = 0;
}

static void releaser_init(void) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&held_cv, &a);
  pthread_condattr_destroy(&a);
  pthread_atfork(NULL, NULL, releaser_atfork_child);
}

/* Start the releaser if it is not running. mu must not be held. */
static void start_releaser(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, releaser_init);
  pthread_mutex_lock(&mu);
  bool start = !releaser_started;
  releaser_started = true;
  pthread_mutex_unlock(&mu);
  if (!start) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* it takes no signal */
  pthread_t t;
  if (pthread_create(&t, NULL, releaser, NULL) == 0) {
    pthread_detach(t);
  } else {
    pthread_mutex_lock(&mu);
    releaser_started = false; /* the next hold tries again; a submit flushes meanwhile */
    pthread_mutex_unlock(&mu);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *empty_job(void *arg) { return arg; }

/* Start the CPU pool, and time a hand-off to it once per process (the cost
 * is the machine's, not a function's). mu must not be held (the timing
 * waits for the pool). Returns 0 or the pool's error. */
static int ensure_pool(void) {
  pthread_mutex_lock(&mu);
  bool ready = atomic_load(&pool) != NULL;
  bool timed = handoff_ns >= 0;
  pthread_mutex_unlock(&mu);
  if (ready) return 0;
  br_pool *p;
  int rc = br_pool_new(&p, BR_CPUS, NULL);
  if (rc) return rc;
  int64_t best = INT64_MAX;
  for (int i = 0; i < HANDOFF_ROUNDS && !timed; i++) {
    br_future *f;
    int64_t t0 = br_now();
    if (br_pool_submit(p, &f, empty_job, NULL) != 0) break;
    (void)br_await(f, NULL);
    int64_t dt = br_now() - t0;
    br_future_unref(f);
    if (dt < best) best = dt;
  }
  pthread_mutex_lock(&mu);
  if (!atomic_load(&pool)) {
    atomic_store(&pool, p);
    if (handoff_ns < 0) handoff_ns = best == INT64_MAX ? 0 : best;
    p = NULL;
  }
  pthread_mutex_unlock(&mu);
  if (p) (void)br_pool_free(p); /* another thread won */
  return 0;
}

/* The process pool, started at the first call that may use it; NULL if it
 * cannot start (the reason is logged once, and jobs stay in this process). */
static br_procpool *ensure_procs(void) {
  pthread_mutex_lock(&mu);
  br_procpool *p = procs;
  int err = procs_err;
  pthread_mutex_unlock(&mu);
  if (p || err) return p;
  int rc = br_procpool_new(&p, BR_CPUS, NULL);
  pthread_mutex_lock(&mu);
  if (rc) {
    if (!procs_err)
      br__log(BR_LOG_WARN, "auto executor: the process pool could not start (%s); jobs run "
              "in this process", br_strerror(rc));
    procs_err = rc;
    p = NULL;
  } else if (procs) {
    br_procpool *mine = p;
    p = procs;
    pthread_mutex_unlock(&mu);
    (void)br_procpool_free(mine); /* another thread won */
    return p;
  } else {
    procs = p;
  }
  pthread_mutex_unlock(&mu);
  return p;
}

/* A call sent to the process pool: its round trip, less the call's own
 * time, is a sample of what a process hand-off costs for this job. */
typedef struct proc_probe {
  fn_stats *s;
  void *key;
  br_future *f;
  int64_t t0;
  bool cold; /* sent before every worker had finished a job: may include its start */
} proc_probe;

static void proc_done(void *p) {
  proc_probe *pp = p;
  int64_t rt = br_now() - pp->t0;
  pthread_mutex_lock(&mu);
  fn_stats *s = pp->s;
  if (atomic_load_explicit(&s->key, memory_order_relaxed) == pp->key &&
      br_future_error(pp->f) == 0) {
    double h = (double)rt - s->wall_ns;
    if (h < 1000) h = 1000;
    if (s->proc_handoff_ns <= 0 || h < s->proc_handoff_ns) s->proc_handoff_ns = h;
    bool pay = procs_pay_for(s);
    atomic_store_explicit(&s->procs_pay, pay, memory_order_relaxed);
    /* A round trip that waited for a worker to start measured the start,
     * not the hand-off: try again at once rather than PROC_REPROBE calls on. */
    if (!pay && pp->cold) s->proc_retry = true;
  }
  pthread_mutex_unlock(&mu);
  free(pp);
}

/* --- submitting ---------------------------------------------------------- */

static int new_call(acall **out, fn_stats *s, br_task_fn fn, const br_job_desc *job,
                    const void *arg, size_t len) {
  acall *c = calloc(1, sizeof *c);
  if (!c) return BR_ENOMEM;
  *c = (acall){.s = s, .fn = fn, .job = job, .arg = (void *)arg, .len = len};
  if (job) {
    c->arg = malloc(len ? len : 1);
    if (!c->arg) {
      free(c);
      return BR_ENOMEM;
    }
    if (len) memcpy(c->arg, arg, len);
  }
  atomic_fetch_add(&live_calls, 1);
  *out = c;
  return 0;
}

/* Run inline on the caller's thread; every INLINE_SAMPLE-th call is timed. */
static int run_inline(br_future **out, fn_stats *s, br_task_fn fn, const br_job_desc *job,
                      const void *arg, size_t len) {
  br_future *f;
  int rc = br_future_new(&f);
  if (rc) return rc;
  unsigned n = atomic_load_explicit(&s->sample, memory_order_relaxed) + 1;
  bool sample = n >= INLINE_SAMPLE;
  atomic_store_explicit(&s->sample, sample ? 0 : n, memory_order_relaxed);
  uint64_t t0 = sample ? br__ticks() : 0;
  int err;
  char *msg;
  void *value = call_here(fn, job, (void *)arg, len, &err, &msg);
  if (sample) {
    int64_t wall = br__ticks_to_ns(br__ticks() - t0);
    atomic_fetch_add_explicit(&s->calls, INLINE_SAMPLE, memory_order_relaxed);
    record(s, wall, -1, 0);
  }
  complete(f, value, err, msg);
  *out = f;
  return 0;
}

static int submit(br_future **out, fn_stats *s, br_task_fn fn, const br_job_desc *job,
                  const void *arg, size_t len, bool allow_procs) {
  if (!s) { /* the table is full: the blocking pool, unmeasured */
    atomic_store(&table_full, true);
    acall *c;
    int rc = new_call(&c, NULL, fn, job, arg, len);
    if (rc) return rc;
    rc = br_to_thread(out, run_measured, c);
    if (rc) acall_free(c);
    return rc;
  }
  if (job) atomic_store_explicit(&s->allow_procs, allow_procs, memory_order_relaxed);
  br_auto_route route = (br_auto_route)atomic_load_explicit(&s->route, memory_order_relaxed);
  if (route == BR_AUTO_INLINE) return run_inline(out, s, fn, job, arg, len);
  atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);

  int rc = ensure_pool();
  if (rc) return rc;
  br_pool *cpu = atomic_load(&pool);
  acall *c;
  if ((rc = new_call(&c, s, fn, job, arg, len)) != 0) return rc;

  if (route == BR_AUTO_MEASURING) {
    acall *flush = NULL;
    bool probe = false, hold = false;
    pthread_mutex_lock(&mu);
    route = (br_auto_route)atomic_load_explicit(&s->route, memory_order_relaxed);
    if (route == BR_AUTO_MEASURING) {
      int64_t now = br_now();
      if (!s->probing) {
        s->probing = true;
        s->probe_at = now;
        probe = true;
      } else if (now - s->probe_at < HOLD_NS) {
        if ((rc = br_future_new(&c->fut)) == 0) {
          if (s->held_tail) s->held_tail->next = c;
          else s->held = c;
          s->held_tail = c;
          hold = true;
          if (!release_at || s->probe_at + HOLD_NS < release_at) {
            release_at = s->probe_at + HOLD_NS;
            if (releaser_started) pthread_cond_signal(&held_cv);
          }
        }
      } else {
        flush = s->held;
        s->held = s->held_tail = NULL;
      }
    }
    pthread_mutex_unlock(&mu);
    if (rc) {
      acall_free(c);
      return rc;
    }
    if (hold) {
      *out = br_future_ref(c->fut);
      start_releaser();
      return 0;
    }
    if (probe) {
      rc = br_pool_submit(cpu, out, run_measured, c);
      if (rc) {
        pthread_mutex_lock(&mu);
        s->probing = false;
        pthread_mutex_unlock(&mu);
        acall_free(c);
      }
      return rc;
    }
    if (flush) dispatch_held(flush); /* the route is still "measuring": blocking pool */
    if (route == BR_AUTO_MEASURING) route = BR_AUTO_BLOCKING;
    else if (route == BR_AUTO_INLINE) {
      acall_free(c);
      return run_inline(out, s, fn, job, arg, len);
    }
  }

  if (job && route == BR_AUTO_CPU_POOL && allow_procs) {
    /* While processes pay, one call in PROC_SAMPLE is measured here; while
     * they do not, one in PROC_REPROBE goes there anyway, so the route
     * follows a change (a job that grew longer). The pool is started by
     * the first call that allows it, which runs here, so that its workers
     * start while this process works. */
    br_procpool *pp = ensure_procs();
    bool pay = atomic_load_explicit(&s->procs_pay, memory_order_relaxed);
    pthread_mutex_lock(&mu);
    unsigned n = ++s->proc_calls;
    bool go = pay ? n % PROC_SAMPLE != 0 : n % PROC_REPROBE == 0 || s->proc_retry;
    if (go) s->proc_retry = false;
    pthread_mutex_unlock(&mu);
    if (pp && go) {
      proc_probe *probe = malloc(sizeof *probe);
      br_procpool_stats st;
      bool cold = br_procpool_get_stats(pp, &st) != 0 || st.completed < (uint64_t)st.workers;
      rc = br_procpool_submit(pp, out, job->name, c->arg, c->len, NULL);
      if (rc == 0 && probe) {
        *probe = (proc_probe){s, atomic_load(&s->key), *out, br_now(), cold};
        if (br_future_on_done(*out, proc_done, probe) != 0) free(probe);
      } else {
        free(probe);
      }
      acall_free(c);
      return rc;
    }
  }

  if (route == BR_AUTO_CPU_POOL) {
    rc = br_pool_submit(cpu, out, run_measured, c);
  } else {
    rc = br_to_thread(out, run_measured, c);
    /* The blocking pool's queue is bounded: the overflow goes to the CPU
     * pool rather than failing. */
    if (rc == BR_EFULL) rc = br_pool_submit(cpu, out, run_measured, c);
  }
  if (rc) acall_free(c);
  return rc;
}

int br_auto_submit(br_future **out, br_task_fn fn, void *arg) {
  if (!out || !fn) return BR_EINVAL;
  *out = NULL;
  return submit(out, get_slot((void *)fn, NULL), fn, NULL, arg, 0, false);
}

int br_auto_submit_job(br_future **out, const char *job, const void *arg, size_t len,
                       const br_auto_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  if (!job || (!arg && len)) return BR_EINVAL;
  const br_job_desc *d = br_job_find(job);
  if (!d) return BR_ENOJOB;
  return submit(out, get_slot((void *)d->fn, d), NULL, d, arg, len,
                opts && opts->allow_processes);
}

/* --- explaining ---------------------------------------------------------- */

static br_auto_route route_now(fn_stats *s) {
  br_auto_route r = (br_auto_route)atomic_load_explicit(&s->route, memory_order_relaxed);
  if (r == BR_AUTO_CPU_POOL && s->job && atomic_load(&s->allow_procs) &&
      atomic_load(&s->procs_pay) && !procs_err)
    return BR_AUTO_PROCPOOL;
  return r;
}

/* Where the next call of a function without a slot goes. */
static br_auto_route route_unknown(void) {
  return atomic_load(&table_full) ? BR_AUTO_BLOCKING : BR_AUTO_MEASURING;
}

br_auto_route br_auto_route_of(br_task_fn fn) {
  fn_stats *s = fn ? find_slot((void *)fn) : NULL;
  return s ? route_now(s) : fn ? route_unknown() : BR_AUTO_MEASURING;
}

br_auto_route br_auto_route_of_job(const char *job) {
  const br_job_desc *d = job ? br_job_find(job) : NULL;
  fn_stats *s = d ? find_slot((void *)d->fn) : NULL;
  return s ? route_now(s) : d ? route_unknown() : BR_AUTO_MEASURING;
}

const char *br_auto_route_name(br_auto_route r) {
  switch (r) {
  case BR_AUTO_MEASURING: return "measuring";
  case BR_AUTO_INLINE: return "inline";
  case BR_AUTO_BLOCKING: return "blocking pool";
  case BR_AUTO_CPU_POOL: return "CPU pool";
  case BR_AUTO_PROCPOOL: return "process pool";
  }
  return "?";
}

static void fmt_ns(char *buf, size_t n, double ns) {
  if (ns >= 1e9) snprintf(buf, n, "%.2f s", ns / 1e9);
  else if (ns >= 1e6) snprintf(buf, n, "%.2f ms", ns / 1e6);
  else snprintf(buf, n, "%.1f us", ns / 1e3);
}

static int explain(char *buf, size_t size, const void *key) {
  if (!buf && size > 0) return BR_EINVAL;
  pthread_mutex_lock(&mu);
  fn_stats *slot = key ? find_slot(key) : NULL;
  uint64_t calls = 0, measured = 0;
  double wall = 0, share = 0, proc_h = 0;
  br_auto_route route = BR_AUTO_MEASURING;
  if (slot) {
    calls = atomic_load(&slot->calls);
    measured = slot->measured;
    wall = slot->wall_ns;
    share = slot->cpu_share;
    proc_h = slot->proc_handoff_ns;
    route = route_now(slot);
  }
  int64_t h = handoff_ns;
  pthread_mutex_unlock(&mu);
  if (!slot && key && atomic_load(&table_full))
    return snprintf(buf, size, "not measured: the table of %d functions is full -> %s",
                    TABLE_SIZE, br_auto_route_name(BR_AUTO_BLOCKING));
  if (measured == 0)
    return snprintf(buf, size, "%llu call%s, none measured yet -> measuring",
                    (unsigned long long)calls, calls == 1 ? "" : "s");
  char walls[32], hand[32], ph[32];
  fmt_ns(walls, sizeof walls, wall);
  fmt_ns(hand, sizeof hand, (double)(h > 0 ? h : 0));
  const char *why = route == BR_AUTO_BLOCKING ? "it waits more than it computes"
                    : route == BR_AUTO_INLINE ? "shorter than two hand-offs"
                    : route == BR_AUTO_PROCPOOL ? "it computes, processes are allowed and "
                                                  "it outlasts two process hand-offs"
                                                : "it computes";
  if (route == BR_AUTO_PROCPOOL && proc_h > 0) {
    fmt_ns(ph, sizeof ph, proc_h);
    return snprintf(buf, size, "%llu calls, %s each, %.0f%% on a CPU -> %s (%s; a hand-off "
                    "costs %s here, to a process %s)", (unsigned long long)calls, walls,
                    100 * share, br_auto_route_name(route), why, hand, ph);
  }
  return snprintf(buf, size, "%llu calls, %s each, %.0f%% on a CPU -> %s (%s; a hand-off "
                  "costs %s here)", (unsigned long long)calls, walls, 100 * share,
                  br_auto_route_name(route), why, hand);
}

int br_auto_explain(char *buf, size_t size, br_task_fn fn) {
  return explain(buf, size, (const void *)fn);
}

int br_auto_explain_job(char *buf, size_t size, const char *job) {
  const br_job_desc *d = job ? br_job_find(job) : NULL;
  return explain(buf, size, d ? (const void *)d->fn : NULL);
}

int br_auto_shutdown(void) {
  if (in_call || (br_pool_current() && br_pool_current() == atomic_load(&pool)))
    return BR_EDEADLK;
  pthread_mutex_lock(&mu);
  br_pool *p = atomic_exchange(&pool, NULL);
  br_procpool *pp = procs;
  procs = NULL;
  procs_err = 0;
  pthread_mutex_unlock(&mu);
  /* Calls already submitted still complete (held ones are on their way as
   * soon as their probe reports, which the drain waits for). */
  if (pp) (void)br_procpool_free(pp);
  if (p) {
    (void)br_pool_shutdown(p, NULL, BR_SHUTDOWN_DRAIN);
    (void)br_pool_free(p);
  }
  /* The calls still running are on the blocking pool (or were sent back
   * here by a refusing pool): wait for them as the pools were waited for.
   * A task suspends; a pool worker helps. */
  atomic_store(&draining, true);
  br_future *wait = NULL;
  pthread_mutex_lock(&mu);
  if (atomic_load(&live_calls) > 0 && br_future_new(&idle) == 0) wait = br_future_ref(idle);
  pthread_mutex_unlock(&mu);
  if (wait) {
    br__await_shielded(wait);
    br_future_unref(wait);
  }
  atomic_store(&draining, false);
  pthread_mutex_lock(&mu);
  for (size_t i = 0; i < TABLE_SIZE; i++) atomic_store(&table[i].key, (void *)NULL);
  atomic_store(&table_full, false);
  pthread_mutex_unlock(&mu);
  return 0;
}
