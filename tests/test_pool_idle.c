/* SPDX-License-Identifier: MIT */
/* test_pool_idle — an idle pool burns no CPU.
 *
 * Idle workers spin for a short while (50 us by default) and then park on a
 * futex. After some work, a pool left alone must use (almost) no CPU time:
 * we read the process's CPU clock over one second of idleness, and check
 * that no worker woke up meanwhile. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <stdio.h>
#include <time.h>

#include "test_pool.h"
#include "test_util.h"

static int64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void *fib(void *arg) {
  long n = (long)(intptr_t)arg;
  if (n < 2) return arg;
  br_fork f;
  br_pool_fork(&f, fib, (void *)(intptr_t)(n - 1));
  long b = (long)(intptr_t)fib((void *)(intptr_t)(n - 2));
  void *a = NULL;
  br_pool_join(&f, &a);
  return (void *)(intptr_t)((long)(intptr_t)a + b);
}

static void idle_second(br_pool *p, const char *what) {
  sleep_ms(100); /* let the workers finish spinning and park */
  br_pool_stats s0, s1;
  br_pool_get_stats(p, &s0);
  int64_t c0 = cpu_ns();
  sleep_ms(1000);
  int64_t used = cpu_ns() - c0;
  br_pool_get_stats(p, &s1);
  fprintf(stderr, "%s: %d workers used %.3f ms of CPU in 1 s idle; %lu parks, %lu wakes\n", what,
          br_pool_size(p), used / 1e6, s1.parks - s0.parks, s1.wakes - s0.wakes);
  /* ~0 expected. The bound leaves room for a sanitizer runtime's own
   * background thread; a single spinning worker would use ~1000 ms. */
  if (used > 20 * 1000000) fail_msg("%s: idle pool used %.3f ms of CPU", what, used / 1e6);
  assert_int_equal(s1.wakes, s0.wakes);
}

static void test_idle_pool_uses_no_cpu(void **state) {
  (void)state;
  int n = br_cpu_count() * 2;
  if (n < 4) n = 4;
  br_pool *p = new_pool(n, NULL);
  assert_non_null(p);
  idle_second(p, "fresh pool");
  for (int r = 0; r < 3; r++) {
    br_future *f;
    assert_int_equal(br_pool_submit(p, &f, fib, (void *)(intptr_t)22), 0);
    void *v;
    assert_int_equal(br_await(f, &v), 0);
    assert_int_equal((long)(intptr_t)v, 17711);
    br_future_unref(f);
  }
  idle_second(p, "after work");
  br_pool_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_pool_uses_no_cpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
