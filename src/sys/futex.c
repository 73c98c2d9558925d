/* SPDX-License-Identifier: MIT */
/* braid — futex wrappers; see futex.h. */
#include "sys/futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sys/clock.h"

_Static_assert(sizeof(atomic_int) == sizeof(uint32_t), "a futex word is 32 bits");

int br__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t timeout_ns, bool shared) {
  struct timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  long rc = syscall(SYS_futex, (uint32_t *)word, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, val,
                    tsp, NULL, 0);
  return rc < 0 && errno == ETIMEDOUT ? -ETIMEDOUT : 0;
}

void br__futex_wake(_Atomic uint32_t *word, int n, bool shared) {
  syscall(SYS_futex, (uint32_t *)word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

int br__futex_wait_until(atomic_int *word, int64_t deadline) {
  while (!atomic_load_explicit(word, memory_order_acquire)) {
    int64_t left = -1;
    if (deadline != INT64_MAX) {
      /* Compare first: deadline - now overflows for a deadline near
       * INT64_MIN. */
      int64_t now = br__mono_ns();
      if (deadline <= now) return -ETIMEDOUT;
      left = deadline - now;
    }
    br__futex_wait((_Atomic uint32_t *)word, 0, left, false);
  }
  return 0;
}

void br__futex_wake_all(atomic_int *word) {
  br__futex_wake((_Atomic uint32_t *)word, INT32_MAX, false);
}
