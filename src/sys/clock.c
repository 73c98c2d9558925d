/* SPDX-License-Identifier: MIT */
/* braid — clock calibration (the public br_now / br_deadline_ms are in
 * core/util.c). */
#include "sys/clock.h"

#include <stdatomic.h>

/* The cycle counter's rate is measured against the monotonic clock from an
 * anchor taken at the first call: no busy-wait at start-up (a short program
 * must not pay milliseconds for it). The estimate sharpens as the baseline
 * grows and is frozen once it spans a second (good to a few ppm). */
#if defined(__x86_64__)
static _Atomic int64_t anchor_ns;
static _Atomic uint64_t anchor_ticks;
#endif
static _Atomic double frozen;

#if defined(__x86_64__)
/* A cycle-counter reading and the monotonic clock at the same instant: the
 * counter read between two clock reads, the tightest of a few tries. A
 * thread preempted between a lone pair of reads (a busy machine) would pair
 * a counter value with a clock milliseconds later, and the rate drawn from
 * it would be off by as much (run times came out short). */
static void paired_read(uint64_t *c, int64_t *t) {
  int64_t best = INT64_MAX;
  for (int i = 0; i < 16 && best > 2000; i++) {
    int64_t a = br__mono_ns();
    uint64_t cc = br__ticks();
    int64_t b = br__mono_ns();
    if (b - a < best) {
      best = b - a;
      *c = cc;
      *t = a + (b - a) / 2;
    }
  }
}
#endif

double br__ns_per_tick(void) {
  double v = atomic_load_explicit(&frozen, memory_order_relaxed);
  if (v > 0) return v;
#if defined(__aarch64__)
  uint64_t freq;
  __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(freq));
  v = freq ? 1e9 / (double)freq : 1.0;
  atomic_store_explicit(&frozen, v, memory_order_relaxed);
  return v;
#elif defined(__x86_64__)
  int64_t t0 = atomic_load_explicit(&anchor_ns, memory_order_acquire);
  if (!t0) {
    uint64_t c;
    int64_t t;
    paired_read(&c, &t);
    int64_t expect = 0;
    if (atomic_compare_exchange_strong(&anchor_ns, &expect, t))
      atomic_store_explicit(&anchor_ticks, c, memory_order_release);
    else
      while (!atomic_load_explicit(&anchor_ticks, memory_order_acquire)) {
      }
    t0 = atomic_load_explicit(&anchor_ns, memory_order_acquire);
  }
  uint64_t c0 = atomic_load_explicit(&anchor_ticks, memory_order_acquire);
  while (!c0) c0 = atomic_load_explicit(&anchor_ticks, memory_order_acquire);
  /* Need a baseline of 100 us for a usable first estimate (~1 %). */
  while (br__mono_ns() - t0 < 100000) {
  }
  uint64_t c1;
  int64_t t1;
  paired_read(&c1, &t1);
  v = c1 > c0 ? (double)(t1 - t0) / (double)(c1 - c0) : 1.0;
  if (t1 - t0 >= 1000000000) atomic_store_explicit(&frozen, v, memory_order_relaxed);
  return v;
#else
  atomic_store_explicit(&frozen, 1.0, memory_order_relaxed);
  return 1.0;
#endif
}

int64_t br__ticks_to_mono(uint64_t ticks) {
  double npt = br__ns_per_tick(); /* also makes sure the anchor exists */
#if defined(__x86_64__)
  int64_t t0 = atomic_load_explicit(&anchor_ns, memory_order_acquire);
  uint64_t c0 = atomic_load_explicit(&anchor_ticks, memory_order_acquire);
  return t0 + (int64_t)((double)(int64_t)(ticks - c0) * npt);
#else
  /* aarch64: the counter's rate is exact; anchor it to the clock once. */
  static _Atomic int64_t off;
  static atomic_int off_set;
  if (!atomic_load_explicit(&off_set, memory_order_acquire)) {
    int64_t now = br__mono_ns();
    int64_t o = now - (int64_t)((double)br__ticks() * npt);
    int expect = 0;
    atomic_store_explicit(&off, o, memory_order_relaxed);
    atomic_compare_exchange_strong(&off_set, &expect, 1);
  }
  return atomic_load_explicit(&off, memory_order_relaxed) + (int64_t)((double)ticks * npt);
#endif
}


