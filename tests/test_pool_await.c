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

/* br_wait and br_as_completed in a job help as br_await does: on one worker,
 * the jobs they wait for are queued behind the waiter and only the waiter's
 * thread can run them (a blocked worker hung it). Returns the sum of the
 * leaves' results as seen by both, or -1. */
static void *waits_for_many(void *a) {
  br_pool *p = a;
  enum { N = 3 };
  br_future *f[N];
  for (int i = 0; i < N; i++)
    if (br_pool_submit(p, &f[i], leaf, (void *)(intptr_t)(i + 1)) != 0) return (void *)-1;
  intptr_t sum = 0;
  if (br_wait(f, N, BR_WAIT_ALL, BR_NEVER) != N - 1) sum = -1000;
  for (int i = 0; i < N; i++) sum += (intptr_t)br_future_value(f[i]);
  br_as_completed *it;
  if (br_as_completed_new(&it, f, N) != 0) return (void *)-1;
  int got;
  while ((got = br_as_completed_next(it, BR_NEVER)) >= 0) sum += (intptr_t)br_future_value(f[got]);
  br_as_completed_free(it);
  if (got != BR_ECLOSED) sum = -1000;
  for (int i = 0; i < N; i++) br_future_unref(f[i]);
  return (void *)sum;
}

static void test_wait_many_on_one_worker(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  assert_non_null(p);
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, waits_for_many, p), 0);
  void *v = NULL;
  assert_int_equal(br_future_wait_for(f, &v, 30000), 0);
  assert_int_equal((intptr_t)v, 2 * (2 + 4 + 6));
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

/* A job that submits the next link of a chain to its own pool and awaits
 * it, depth links deep: each waiting worker helps, and once every worker
 * waits MAX_HELP_DEPTH jobs deep the awaited job must still run. */
typedef struct chain_ctx {
  br_pool *pool;
  long depth;
} chain_ctx;

static chain_ctx chain;

static void *chain_link(void *a) {
  long n = (long)(intptr_t)a;
  if (n == chain.depth) return (void *)(intptr_t)n;
  br_future *f;
  int rc = br_pool_submit(chain.pool, &f, chain_link, (void *)(intptr_t)(n + 1));
  if (rc) return br_fail(rc, "submit at link %ld", n);
  void *v = NULL;
  rc = br_await(f, &v);
  br_future_unref(f);
  if (rc) return br_fail(rc, "await at link %ld", n);
  return v;
}

static void run_chain(int nthreads, long depth) {
  chain.pool = new_pool(nthreads, NULL);
  chain.depth = depth;
  br_future *f;
  assert_int_equal(br_pool_submit(chain.pool, &f, chain_link, (void *)0), 0);
  void *v = NULL;
  /* Milliseconds of work: a minute only catches the hang, in which case the
   * pool cannot be freed either (its workers wait for each other). */
  assert_int_equal(br_future_wait_for(f, &v, 60000), 0);
  assert_int_equal((long)(intptr_t)v, depth);
  br_future_unref(f);
  br_pool_stats st;
  assert_int_equal(br_pool_get_stats(chain.pool, &st), 0);
  assert_int_equal(st.completed, (uint64_t)depth + 1);
  assert_int_equal(br_pool_free(chain.pool), 0);
}

static void test_await_chain_deeper_than_helping(void **state) {
  (void)state;
  run_chain(1, 200);  /* far deeper than one worker helps */
  run_chain(2, 200);
  run_chain(8, 1000); /* more workers than CPUs, all of them deep */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nested_await_on_one_worker),
      cmocka_unit_test(test_wait_many_on_one_worker),
      cmocka_unit_test(test_await_own_future_is_edeadlk),
      cmocka_unit_test(test_await_chain_deeper_than_helping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
