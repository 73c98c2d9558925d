/* SPDX-License-Identifier: MIT */
/* bench/auto.c — the auto executor against each executor picked by hand.
 *
 * Four workloads, each a batch of calls submitted from a plain thread and
 * then awaited: tiny (an addition: best run inline), compute (2 ms of CPU:
 * best on the CPU pool), wait (a 5 ms sleep: best on the blocking pool),
 * and job (a registered job of 2 ms of CPU, with a process pool among the
 * executors; auto gets it through br_auto_submit_job with processes
 * allowed, so it may pick the process pool).
 * Every executor returns a future per call, inline too (so the comparison is
 * of where the work runs, not of the API). One line per workload and
 * executor:
 *
 *   auto workload=compute executor=cpu-pool calls=200 seconds=0.2113
 *
 * bench/profile_run.py runs it in interleaved rounds and reports auto's time
 * against the best and the worst hand-picked executor of each workload.
 *
 *   bench_auto [-w tiny|compute|wait|job|all] [-r ROUNDS]
 */
#include <errno.h>
#include <time.h>

#include <braid/auto.h>
#include <braid/procpool.h>

#include "bench_common.h"

static void die(const char *what) {
  fprintf(stderr, "bench_auto: %s\n", what);
  exit(1);
}

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *tiny(void *arg) { return (void *)((intptr_t)arg + 1); }

static void *compute(void *arg) {
  int64_t until = thread_cpu_ns() + 2000000;
  volatile uint64_t x = 1;
  while (thread_cpu_ns() < until)
    for (int i = 0; i < 5000; i++) x = x * 6364136223846793005u + 1;
  return arg;
}

static void *wait_io(void *arg) {
  struct timespec ts = {0, 5000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  return arg;
}

static int job_fn(const void *in, size_t len, br_bytes *out) {
  (void)compute(NULL);
  return br_bytes_set(out, in, len);
}
BR_JOB(bench_auto_job, job_fn);

/* A job run by a thread executor: its bytes are the value. */
static void *job_call(void *arg) {
  br_bytes *b = calloc(1, sizeof *b);
  if (!b || job_fn(&arg, sizeof arg, b) != 0) die("job failed");
  return b;
}

typedef enum { EX_INLINE, EX_BLOCKING, EX_POOL, EX_PROCS, EX_AUTO, EX_N } executor;
static const char *const ex_names[EX_N] = {"inline", "blocking-pool", "cpu-pool", "process-pool",
                                           "auto"};

static br_pool *pool;
static br_procpool *procs;

static int submit(executor ex, br_future **f, br_task_fn fn, void *arg) {
  switch (ex) {
  case EX_INLINE: {
    int rc = br_future_new(f);
    return rc ? rc : br_future_set(*f, fn(arg));
  }
  case EX_BLOCKING: return br_to_thread(f, fn, arg);
  case EX_POOL: return br_pool_submit(pool, f, fn, arg);
  case EX_PROCS: return br_procpool_submit(procs, f, "bench_auto_job", &arg, sizeof arg, NULL);
  default:
    if (fn == job_call)
      return br_auto_submit_job(f, "bench_auto_job", &arg, sizeof arg,
                                &(br_auto_opts){.allow_processes = true});
    return br_auto_submit(f, fn, arg);
  }
}

/* Await f[i]; its value is freed. */
static void await_one(executor ex, br_task_fn fn, br_future *f, int i) {
  void *v = NULL;
  if (br_await(f, &v) != 0) {
    fprintf(stderr, "bench_auto: %s: call %d failed: %s\n", ex_names[ex], i,
            br_future_message(f));
    exit(1);
  }
  if (fn == job_call) br_bytes_free(v);
  br_future_unref(f);
}

static double run(executor ex, br_task_fn fn, int calls) {
  br_future **f = calloc((size_t)calls, sizeof *f);
  if (!f) die("out of memory");
  int64_t t0 = br_now();
  int awaited = 0;
  for (int i = 0; i < calls; i++) {
    int rc;
    /* The blocking pool's queue is bounded: when it is full, wait for the
     * oldest call, as a program would. */
    while ((rc = submit(ex, &f[i], fn, (void *)(intptr_t)i)) == BR_EFULL && awaited < i) {
      await_one(ex, fn, f[awaited], awaited);
      awaited++;
    }
    if (rc != 0) {
      fprintf(stderr, "bench_auto: %s: call %d: %s\n", ex_names[ex], i, br_strerror(rc));
      exit(1);
    }
  }
  for (int i = awaited; i < calls; i++) await_one(ex, fn, f[i], i);
  double s = bench_s_since(t0);
  free(f);
  return s;
}

int main(int argc, char **argv) {
  const char *which = "all";
  int rounds = 1;
  for (int i = 1; i < argc; i++) {
    const char *v;
    if ((v = bench_arg(argc, argv, &i, "-w"))) which = v;
    else if ((v = bench_arg(argc, argv, &i, "-r"))) rounds = atoi(v);
    else die("usage: bench_auto [-w tiny|compute|wait|job|all] [-r ROUNDS]");
  }
  if (br_pool_new(&pool, BR_CPUS, NULL) != 0) die("no CPU pool");
  if (br_procpool_new(&procs, BR_CPUS, NULL) != 0) die("no process pool");
  struct {
    const char *name;
    br_task_fn fn;
    int calls;
  } loads[] = {{"tiny", tiny, 200000},
               {"compute", compute, 200},
               {"wait", wait_io, 400},
               {"job", job_call, 200}};
  for (int r = 0; r < rounds; r++)
    for (size_t w = 0; w < sizeof loads / sizeof loads[0]; w++) {
      if (strcmp(which, "all") && strcmp(which, loads[w].name)) continue;
      for (int e = 0; e < EX_N; e++) {
        /* Only jobs cross processes. */
        if (e == EX_PROCS && loads[w].fn != job_call) continue;
        /* auto starts from nothing each round: its measuring is part of its cost. */
        if (e == EX_AUTO) (void)br_auto_shutdown();
        double s = run((executor)e, loads[w].fn, loads[w].calls);
        printf("auto workload=%s executor=%s calls=%d seconds=%.6f\n", loads[w].name,
               ex_names[e], loads[w].calls, s);
        fflush(stdout);
      }
    }
  (void)br_auto_shutdown();
  (void)br_procpool_free(procs);
  (void)br_pool_free(pool);
  return 0;
}
