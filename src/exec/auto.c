/* SPDX-License-Identifier: MIT */
/* auto.c — the auto executor (braid/auto.h): measure each function, route it.
 *
 * One table of per-function measurements, keyed by the function pointer and
 * guarded by one mutex (a leaf: no user code, future call or other lock runs
 * under it). Every call that goes to a pool runs through run_measured(),
 * which times it on the thread that runs it: wall time, that thread's CPU
 * time and its run-queue wait (schedstat, so a busy machine does not make a
 * computing function look like a waiting one). The measurements are
 * exponentially weighted (recent calls count most), so a function whose
 * behaviour changes moves to another route within a few calls.
 *
 * Where a call goes (route_for):
 *  - it waits (less than half of its un-queued wall time on a CPU): the
 *    blocking pool, so it never holds a loop or a CPU-pool worker;
 *  - it computes and takes less than two hand-offs: inline, on the caller's
 *    thread — sending it away would cost more than running it;
 *  - it computes for longer: the CPU pool.
 * Until a function has one measurement its calls go to the blocking pool,
 * which is safe for both kinds (a thread per call, bounded by the pool).
 */
#include <braid.h>
#include <braid/auto.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/job.h"
#include "sys/clock.h"

enum { TABLE_SIZE = 1024, HANDOFF_ROUNDS = 16 };
#define EWMA_WEIGHT 0.3 /* of the newest measurement */
#define WAITS_BELOW 0.5 /* CPU share under which a function waits */

typedef struct fn_stats {
  _Atomic(br_task_fn) fn;  /* set once, under mu; read without it */
  atomic_uint_fast64_t calls;
  atomic_int route;         /* a br_auto_route, read on every call */
  uint64_t measured;        /* the rest: under mu */
  double wall_ns, cpu_share; /* weighted averages */
} fn_stats;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fn_stats table[TABLE_SIZE];
static br_pool *pool;          /* started at the first call that needs it */
static int64_t handoff_ns = -1; /* a submit + wait round trip to the CPU pool */

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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

static size_t hash_of(br_task_fn fn) {
  return (size_t)(((uintptr_t)fn >> 4) * 11400714819323198485u % TABLE_SIZE);
}

/* The slot for fn, without locking: slots are only ever filled (under mu),
 * and emptied by br_auto_shutdown, which no submit may overlap. */
static fn_stats *find_slot(br_task_fn fn) {
  size_t h = hash_of(fn);
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    fn_stats *s = &table[(h + i) % TABLE_SIZE];
    br_task_fn f = atomic_load_explicit(&s->fn, memory_order_acquire);
    if (f == fn) return s;
    if (!f) return NULL;
  }
  return NULL;
}

/* The slot for fn, inserted if new; NULL when the table is full. mu held. */
static fn_stats *slot_of(br_task_fn fn) {
  size_t h = hash_of(fn);
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    fn_stats *s = &table[(h + i) % TABLE_SIZE];
    br_task_fn f = atomic_load_explicit(&s->fn, memory_order_relaxed);
    if (f == fn) return s;
    if (!f) {
      s->measured = 0;
      atomic_store_explicit(&s->calls, 0, memory_order_relaxed);
      atomic_store_explicit(&s->route, BR_AUTO_MEASURING, memory_order_relaxed);
      atomic_store_explicit(&s->fn, fn, memory_order_release);
      return s;
    }
  }
  return NULL;
}

static br_auto_route route_for(const fn_stats *s) {
  if (s->measured == 0) return BR_AUTO_MEASURING;
  if (s->cpu_share < WAITS_BELOW) return BR_AUTO_BLOCKING;
  if (handoff_ns > 0 && s->wall_ns < 2.0 * (double)handoff_ns) return BR_AUTO_INLINE;
  return BR_AUTO_CPU_POOL;
}

static void record(br_task_fn fn, int64_t wall, int64_t cpu, int64_t rq) {
  int64_t ran = wall - rq; /* the wall time it was not kept from running */
  double share = ran > 0 ? (double)cpu / (double)ran : 1.0;
  if (share > 1) share = 1;
  pthread_mutex_lock(&mu);
  fn_stats *s = slot_of(fn);
  if (s) {
    if (s->measured == 0) {
      s->wall_ns = (double)wall;
      s->cpu_share = share;
    } else {
      s->wall_ns += EWMA_WEIGHT * ((double)wall - s->wall_ns);
      s->cpu_share += EWMA_WEIGHT * (share - s->cpu_share);
    }
    s->measured++;
    atomic_store_explicit(&s->route, route_for(s), memory_order_relaxed);
  }
  pthread_mutex_unlock(&mu);
}

typedef struct call {
  br_task_fn fn;
  void *arg;
} call;

/* Runs on a pool thread: the call itself, timed. br_fail inside fn reaches
 * the pool's own job context, so the future fails as usual. */
static void *run_measured(void *p) {
  call c = *(call *)p;
  free(p);
  int64_t w0 = br_now(), c0 = thread_cpu_ns(), q0 = thread_rq_ns();
  void *value = c.fn(c.arg);
  int64_t w1 = br_now(), c1 = thread_cpu_ns(), q1 = thread_rq_ns();
  record(c.fn, w1 - w0, c1 - c0, q1 - q0);
  return value;
}

static void *empty_job(void *arg) { return arg; }

/* Start the CPU pool and time a hand-off to it. mu must not be held (the
 * timing waits for the pool). Returns 0 or the pool's error. */
static int ensure_pool(void) {
  pthread_mutex_lock(&mu);
  bool ready = pool != NULL;
  pthread_mutex_unlock(&mu);
  if (ready) return 0;
  br_pool *p;
  int rc = br_pool_new(&p, BR_CPUS, NULL);
  if (rc) return rc;
  int64_t best = INT64_MAX;
  for (int i = 0; i < HANDOFF_ROUNDS; i++) {
    br_future *f;
    int64_t t0 = br_now();
    if (br_pool_submit(p, &f, empty_job, NULL) != 0) break;
    (void)br_await(f, NULL);
    int64_t dt = br_now() - t0;
    br_future_unref(f);
    if (dt < best) best = dt;
  }
  pthread_mutex_lock(&mu);
  if (!pool) {
    pool = p;
    handoff_ns = best == INT64_MAX ? 0 : best;
    p = NULL;
  }
  pthread_mutex_unlock(&mu);
  if (p) (void)br_pool_free(p); /* another thread won */
  return 0;
}

/* An inline call's failure, caught by a job context of our own. */
typedef struct inline_ctx {
  br__job_ctx ctx;
  int err;
  char *msg;
} inline_ctx;

static void inline_fail(br__job_ctx *c, int code, char *msg) {
  inline_ctx *ic = (inline_ctx *)c;
  free(ic->msg);
  ic->err = code;
  ic->msg = msg;
}

static const br__job_ctx_ops inline_ops = {.fail = inline_fail};

static int run_inline(br_future **out, br_task_fn fn, void *arg, bool measure) {
  br_future *f;
  int rc = br_future_new(&f);
  if (rc) return rc;
  inline_ctx ic = {.ctx = {&inline_ops}};
  int64_t w0 = 0, c0 = 0;
  if (measure) {
    w0 = br_now();
    c0 = thread_cpu_ns();
  }
  br__job_ctx *prev = br__job_enter(&ic.ctx);
  void *value = fn(arg);
  br__job_leave(prev);
  if (measure) record(fn, br_now() - w0, thread_cpu_ns() - c0, 0);
  if (ic.err) {
    (void)br_future_fail(f, ic.err, "%s", ic.msg ? ic.msg : br_strerror(ic.err));
    free(ic.msg);
  } else {
    (void)br_future_set(f, value);
  }
  *out = f;
  return 0;
}

int br_auto_submit(br_future **out, br_task_fn fn, void *arg) {
  if (!out || !fn) return BR_EINVAL;
  *out = NULL;
  fn_stats *s = find_slot(fn);
  if (!s) {
    pthread_mutex_lock(&mu);
    s = slot_of(fn);
    pthread_mutex_unlock(&mu);
  }
  br_auto_route route = BR_AUTO_MEASURING;
  uint64_t n = 0;
  if (s) {
    route = (br_auto_route)atomic_load_explicit(&s->route, memory_order_relaxed);
    n = atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);
  }

  /* Inline inside a task would let the function's br_fail fail the task
   * itself (a task comes first for br_fail): tasks get the CPU pool. */
  if (route == BR_AUTO_INLINE && br_self() != NULL) route = BR_AUTO_CPU_POOL;
  if (route == BR_AUTO_INLINE) return run_inline(out, fn, arg, n % 16 == 0);

  call *c = malloc(sizeof *c);
  if (!c) return BR_ENOMEM;
  *c = (call){fn, arg};
  int rc;
  if (route == BR_AUTO_CPU_POOL) {
    rc = ensure_pool();
    if (rc == 0) rc = br_pool_submit(pool, out, run_measured, c);
  } else {
    /* Measuring or waiting: the blocking pool. Time a hand-off meanwhile,
     * so the first decision can weigh inline against a pool. */
    if (route == BR_AUTO_MEASURING && (rc = ensure_pool()) != 0) {
      free(c);
      return rc;
    }
    rc = br_to_thread(out, run_measured, c);
    /* The blocking pool's queue is bounded: while a flood of calls of a new
     * function waits for its first measurement, the overflow goes to the CPU
     * pool (the pool was started above) rather than failing. */
    if (rc == BR_EFULL && route == BR_AUTO_MEASURING) rc = br_pool_submit(pool, out, run_measured, c);
  }
  if (rc) free(c);
  return rc;
}

br_auto_route br_auto_route_of(br_task_fn fn) {
  fn_stats *s = find_slot(fn);
  return s ? (br_auto_route)atomic_load_explicit(&s->route, memory_order_relaxed)
           : BR_AUTO_MEASURING;
}

const char *br_auto_route_name(br_auto_route r) {
  switch (r) {
  case BR_AUTO_MEASURING: return "measuring";
  case BR_AUTO_INLINE: return "inline";
  case BR_AUTO_BLOCKING: return "blocking pool";
  case BR_AUTO_CPU_POOL: return "CPU pool";
  }
  return "?";
}

static void fmt_ns(char *buf, size_t n, double ns) {
  if (ns >= 1e9) snprintf(buf, n, "%.2f s", ns / 1e9);
  else if (ns >= 1e6) snprintf(buf, n, "%.2f ms", ns / 1e6);
  else snprintf(buf, n, "%.1f us", ns / 1e3);
}

int br_auto_explain(char *buf, size_t size, br_task_fn fn) {
  if (!buf && size > 0) return BR_EINVAL;
  pthread_mutex_lock(&mu);
  fn_stats *slot = find_slot(fn);
  uint64_t calls = 0, measured = 0;
  double wall = 0, share = 0;
  br_auto_route route = BR_AUTO_MEASURING;
  if (slot) {
    calls = atomic_load(&slot->calls);
    measured = slot->measured;
    wall = slot->wall_ns;
    share = slot->cpu_share;
    route = (br_auto_route)atomic_load(&slot->route);
  }
  int64_t h = handoff_ns;
  pthread_mutex_unlock(&mu);
  if (measured == 0)
    return snprintf(buf, size, "%llu call%s, none measured yet -> blocking pool while measuring",
                    (unsigned long long)calls, calls == 1 ? "" : "s");
  char walls[32], hand[32];
  fmt_ns(walls, sizeof walls, wall);
  fmt_ns(hand, sizeof hand, (double)(h > 0 ? h : 0));
  const char *why = route == BR_AUTO_BLOCKING ? "it waits more than it computes"
                    : route == BR_AUTO_INLINE ? "shorter than two hand-offs"
                                              : "it computes";
  return snprintf(buf, size, "%llu calls, %s each, %.0f%% on a CPU -> %s (%s; a hand-off "
                  "costs %s here)", (unsigned long long)calls, walls, 100 * share,
                  br_auto_route_name(route), why, hand);
}

int br_auto_shutdown(void) {
  if (br_pool_current() && br_pool_current() == pool) return BR_EDEADLK;
  pthread_mutex_lock(&mu);
  br_pool *p = pool;
  pool = NULL;
  handoff_ns = -1;
  for (size_t i = 0; i < TABLE_SIZE; i++) atomic_store(&table[i].fn, (br_task_fn)NULL);
  pthread_mutex_unlock(&mu);
  if (!p) return 0;
  /* Calls already submitted still complete. */
  (void)br_pool_shutdown(p, NULL, BR_SHUTDOWN_DRAIN);
  return br_pool_free(p);
}
