/* SPDX-License-Identifier: MIT */
/* braid — clocks (sys layer): the monotonic clock in ns, a cycle counter for
 * cheap per-switch accounting, the thread CPU clock, and the count of the
 * thread's voluntary context switches (what tells blocking from waiting for
 * a CPU). */
#ifndef BRAID_SYS_CLOCK_H
#define BRAID_SYS_CLOCK_H

#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

static inline int64_t br__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t br__thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* How often the calling thread gave up its CPU itself (slept, waited on a
 * lock or a descriptor) so far. Time off a CPU without one of these was
 * spent runnable, preempted by other work: the machine was busy, the thread
 * did not block. One system call (0.2 us on our machines). */
static inline long br__thread_voluntary_switches(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
  return ru.ru_nvcsw;
}

/* br__ticks: a cheap, monotonic-enough counter (rdtsc / cntvct_el0; the
 * monotonic clock elsewhere). Convert differences with br__ticks_to_ns. */
static inline uint64_t br__ticks(void) {
#if defined(__x86_64__)
  uint32_t lo, hi;
  __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
#elif defined(__aarch64__)
  uint64_t v;
  __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  return (uint64_t)br__mono_ns();
#endif
}

/* Nanoseconds per tick, calibrated once against the monotonic clock. */
double br__ns_per_tick(void);

/* Map a br__ticks() reading onto br_now()'s clock, with the rate measured
 * over the longest baseline so far (drift stays within a few ppm). */
int64_t br__ticks_to_mono(uint64_t ticks);

static inline int64_t br__ticks_to_ns(uint64_t ticks) {
  return (int64_t)((double)ticks * br__ns_per_tick());
}

#endif
