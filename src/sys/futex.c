/* braid — futex wrappers; see futex.h. */
#include "sys/futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sys/clock.h"

int br__futex_wait_until(atomic_int *word, int64_t deadline) {
  while (!atomic_load_explicit(word, memory_order_acquire)) {
    struct timespec ts, *tsp = NULL;
    if (deadline != INT64_MAX) {
      int64_t left = deadline - br__mono_ns();
      if (left <= 0) return -ETIMEDOUT;
      ts.tv_sec = left / 1000000000;
      ts.tv_nsec = left % 1000000000;
      tsp = &ts;
    }
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 0, tsp, NULL, 0);
  }
  return 0;
}

void br__futex_wake_all(atomic_int *word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}
