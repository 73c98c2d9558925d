/* SPDX-License-Identifier: MIT */
/* br_await inside a CPU-pool job: the worker helps with other jobs instead of
 * blocking (a one-worker pool would otherwise deadlock on a nested job), and
 * a job awaiting its own future gets BR_EDEADLK instead of hanging. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>

#include "test_pool.h"

static void *leaf(void *a) { return (void *)((intptr_t)a * 2); }

static void *nested(void *a) {
  br_pool *p = a;
  br_future *f;
  if (br_pool_submit(p, &f, leaf, (void *)21) != 0) return NULL;
  void *v = NULL;
  int rc = br_await(f, &v);
  br_future_unref(f);
  return rc ? NULL : v;
}

static void test_nested_await_on_one_worker(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  assert_non_null(p);
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, nested, p), 0);
  void *v = NULL;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal((intptr_t)v, 42);
  br_future_unref(f);
  assert_int_equal(br_pool_free(p), 0);
}

static br_future *_Atomic own;

static void *awaits_itself(void *a) {
  (void)a;
  br_future *f;
  while (!(f = atomic_load(&own))) {
  }
  return (void *)(intptr_t)br_await(f, NULL);
}

static void test_await_own_future_is_edeadlk(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  assert_non_null(p);
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, awaits_itself, NULL), 0);
  atomic_store(&own, f);
  void *v = NULL;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal((int)(intptr_t)v, BR_EDEADLK);
  br_future_unref(f);
  assert_int_equal(br_pool_free(p), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nested_await_on_one_worker),
      cmocka_unit_test(test_await_own_future_is_edeadlk),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
