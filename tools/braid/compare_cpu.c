/* braid compare — the CPU-bound workload: each task computes C ms.
 *
 * "Computes C ms" means a fixed amount of work: the number of iterations of
 * a pure-arithmetic loop that took C ms of CPU on this machine when
 * calibrated at start-up. Blocking code runs it in one go; a coroutine runs
 * it in slices and yields between them, so the tasks of one loop interleave
 * (the seeds' "Task A: ████----████") but, sharing one thread, finish no
 * sooner than one after another: concurrency is not parallelism. */
#include <time.h>

#include <braid.h>

#include "compare.h"

static volatile uint64_t sink; /* keeps the loop's result alive */

uint64_t cmp_burn(uint64_t iters) {
  uint64_t x = 0x9E3779B97F4A7C15u ^ iters;
  for (uint64_t i = 0; i < iters; i++) { /* xorshift64: no closed form to fold */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Iterations per CPU millisecond: the best of three rounds of >= 20 ms,
 * timed on the thread's CPU clock so that preemption does not count. */
static double calibrate(void) {
  static double cached;
  if (cached > 0) return cached;
  double best = 0;
  uint64_t iters = 1u << 16;
  for (int round = 0; round < 3;) {
    int64_t c0 = thread_cpu_ns();
    sink = cmp_burn(iters);
    int64_t dt = thread_cpu_ns() - c0;
    if (dt < 20000000) {
      iters *= 2;
      continue;
    }
    double rate = (double)iters * 1e6 / (double)dt;
    if (rate > best) best = rate;
    round++;
  }
  cached = best;
  return best;
}

static uint64_t iters_for(const cmp_work *w, long ms) {
  return (uint64_t)(w->iters_per_ms * (double)ms + 0.5);
}

static void cpu_blocking(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  sink = cmp_burn(iters_for(w, w->ms));
  cmp_task_end(t, t0);
}

static int cpu_coroutine(const cmp_work *w, cmp_task *t, int64_t t0) {
  /* Equal slices (no tiny last one): slice k burns total*(k+1)/n - total*k/n. */
  uint64_t total = iters_for(w, w->ms);
  long n = w->slice_ms > 0 ? (w->ms + w->slice_ms / 2) / w->slice_ms : 1;
  if (n < 1) n = 1;
  int rc = 0;
  cmp_task_begin(t, t0);
  for (long k = 0; k < n; k++) {
    if (k > 0 && (rc = br_yield()) != 0) break; /* let the loop's other tasks run */
    uint64_t lo = total * (uint64_t)k / (uint64_t)n, hi = total * (uint64_t)(k + 1) / (uint64_t)n;
    int64_t s = br_now();
    sink = cmp_burn(hi - lo);
    cmp_task_segment(t, s, br_now(), t0);
  }
  cmp_task_end(t, t0);
  return rc;
}

int cmp_work_cpu(cmp_work *w, const cmp_opts *o) {
  *w = (cmp_work){.kind = CMP_CPU,
                  .ms = o->compute_ms,
                  .iters_per_ms = calibrate(),
                  .blocking = cpu_blocking,
                  .coroutine = cpu_coroutine};
  /* Slice so that one slice is about two timeline columns of the longest
   * (sequential-like) run: the interleaving shows, and each task yields a
   * handful of times. */
  long slice = (long)((double)o->tasks * (double)o->compute_ms * 2.0 / o->width);
  if (slice < 1) slice = 1;
  if (slice > o->compute_ms) slice = o->compute_ms;
  w->slice_ms = slice;
  return 0;
}
