/* SPDX-License-Identifier: MIT */
/* braid compare — the CPU-bound workload: each task computes C ms.
 *
 * "Computes C ms" means a fixed amount of work: the number of iterations of
 * a pure-arithmetic loop that took C ms of CPU on this machine when
 * calibrated at start-up. Blocking code runs it in one go; a coroutine runs
 * it in slices and yields between them, so the tasks of one loop interleave
 * (the articles' "Task A: ████----████") but, sharing one thread, finish no
 * sooner than one after another: concurrency is not parallelism. The
 * pools run a task as pieces of the same size as the coroutine's slices,
 * spread over their workers. */
#include <stdatomic.h>
#include <time.h>

#include <braid.h>

#include "compare.h"

/* Keeps the loop's result alive, and computed here: without the barrier
 * the compiler may sink the whole loop past the clock read that follows it
 * (clang does: nothing outside can see a static sink), the calibration then
 * times nothing and doubles its iterations forever. */
static _Atomic uint64_t sink;
static void keep(uint64_t v) {
  __asm__ volatile("" : : "r"(v) : "memory");
  atomic_store_explicit(&sink, v, memory_order_relaxed);
}

uint64_t cmp_burn(uint64_t iters) {
  uint64_t x = 0x9E3779B97F4A7C15u ^ iters;
  for (uint64_t i = 0; i < iters; i++) { /* xorshift64: no closed form to fold */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

/* Iterations per CPU millisecond: the best of three rounds of >= 20 ms,
 * timed on the thread's CPU clock so that preemption does not count. */
double cmp_calibrate(void) {
  static double cached;
  if (cached > 0) return cached;
  double best = 0;
  uint64_t iters = 1u << 16;
  for (int round = 0; round < 3;) {
    int64_t c0 = cmp_thread_cpu_now();
    keep(cmp_burn(iters));
    int64_t dt = cmp_thread_cpu_now() - c0;
    if (dt < 20000000) {
      if (iters >= (UINT64_C(1) << 40)) break; /* a clock that does not move */
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

void cmp_compute_ms(const cmp_work *w, long ms) { keep(cmp_burn(iters_for(w, ms))); }

static void cpu_blocking(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  keep(cmp_burn(iters_for(w, w->ms)));
  cmp_task_end(t, t0);
}

/* Equal pieces (no tiny last one): piece k burns total*(k+1)/n - total*k/n. */
static void cpu_piece(const cmp_work *w, long k) {
  uint64_t total = iters_for(w, w->ms), n = (uint64_t)w->pieces;
  keep(cmp_burn(total * (uint64_t)(k + 1) / n - total * (uint64_t)k / n));
}

static int cpu_coroutine(const cmp_work *w, cmp_task *t, int64_t t0) {
  int rc = 0;
  cmp_task_begin(t, t0);
  for (long k = 0; k < w->pieces; k++) {
    if (k > 0 && (rc = br_yield()) != 0) break; /* let the loop's other tasks run */
    int64_t s = br_now();
    cpu_piece(w, k);
    cmp_task_segment(t, s, br_now(), t0);
  }
  cmp_task_end(t, t0);
  return rc;
}

void cmp_cpu_bodies(cmp_work *w) {
  w->computes = true;
  w->pieces = w->slice_ms > 0 ? (w->ms + w->slice_ms / 2) / w->slice_ms : 1;
  if (w->pieces < 1) w->pieces = 1;
  w->blocking = cpu_blocking;
  w->coroutine = cpu_coroutine;
  w->piece = cpu_piece;
}

int cmp_work_cpu(cmp_work *w, const cmp_opts *o) {
  *w = (cmp_work){.kind = CMP_CPU, .ms = o->compute_ms, .iters_per_ms = cmp_calibrate()};
  /* Slice so that one slice is about two timeline columns of the longest
   * (sequential-like) run: the interleaving shows, and each task yields a
   * handful of times. */
  long slice = (long)((double)o->tasks * (double)o->compute_ms * 2.0 / o->width);
  if (slice < 1) slice = 1;
  if (slice > o->compute_ms) slice = o->compute_ms;
  w->slice_ms = slice;
  cmp_cpu_bodies(w);
  return 0;
}
