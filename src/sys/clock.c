/* braid — clock calibration and the public clock functions. */
#include "sys/clock.h"

#include <braid.h>
#include <stdatomic.h>

static _Atomic double ns_per_tick;

double br__ns_per_tick(void) {
  double v = atomic_load_explicit(&ns_per_tick, memory_order_relaxed);
  if (v > 0) return v;
#if defined(__aarch64__)
  uint64_t freq;
  __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(freq));
  v = freq ? 1e9 / (double)freq : 1.0;
#elif defined(__x86_64__)
  /* Calibrate over ~2 ms of busy time: good to well under 1 %. */
  int64_t t0 = br__mono_ns();
  uint64_t c0 = br__ticks();
  int64_t t1;
  do {
    t1 = br__mono_ns();
  } while (t1 - t0 < 2000000);
  uint64_t c1 = br__ticks();
  v = c1 > c0 ? (double)(t1 - t0) / (double)(c1 - c0) : 1.0;
#else
  v = 1.0;
#endif
  atomic_store_explicit(&ns_per_tick, v, memory_order_relaxed);
  return v;
}

int64_t br_now(void) { return br__mono_ns(); }

int64_t br_deadline_ms(int64_t ms) {
  if (ms <= 0) return br__mono_ns();
  int64_t now = br__mono_ns();
  if (ms >= (BR_NEVER - now) / 1000000) return BR_NEVER;
  return now + ms * 1000000;
}
