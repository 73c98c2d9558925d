/* SPDX-License-Identifier: MIT */
/* braid — CPU pause and spin back-off (sys layer): the one copy every spin
 * loop in braid uses. */
#ifndef BRAID_SYS_SPIN_H
#define BRAID_SYS_SPIN_H

#include <sched.h>

/* br__cpu_pause: tell the CPU we are spinning (x86 PAUSE, arm64 YIELD). */
static inline void br__cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* Bounded spinning: br__backoff_step pauses for 1, 2, 4, ... up to
 * BR__BACKOFF_SPINS pauses per step, then yields the CPU on every step
 * (the thread we wait for may be preempted on the same core). */
#define BR__BACKOFF_SPINS 64
typedef struct br__backoff {
  unsigned n;
} br__backoff;
#define BR__BACKOFF_INIT {1}

static inline void br__backoff_step(br__backoff *b) {
  if (b->n <= BR__BACKOFF_SPINS) {
    for (unsigned i = 0; i < b->n; i++) br__cpu_pause();
    b->n <<= 1;
  } else {
    sched_yield();
  }
}

#endif
