/* SPDX-License-Identifier: MIT */
/* test_pool — the work-stealing CPU pool (include/braid/pool.h): jobs and
 * futures, per-job errors, map / for / reduce, nested fork-join (task per
 * call, any depth, bounded stacks), cancellation, shutdown reports, waiting
 * from inside jobs, and the bad-input errors. The 10M-job stress, the idle
 * CPU test and the loop test have files of their own (test_pool_*.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_pool.h"
#include "test_util.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((long)(intptr_t)(p))

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Submit fn(arg) and wait for it from this (plain) thread. */
static int run_job(br_pool *p, br_pool_fn fn, void *arg, void **value) {
  br_future *f = NULL;
  int rc = br_pool_submit(p, &f, fn, arg);
  if (rc) return rc;
  rc = br_await(f, value);
  br_future_unref(f);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Creating pools                                                            */

/* br_pool_new(&p, bad, opts) fails with BR_EINVAL and leaves p NULL. */
static void expect_new_einval(int nthreads, const br_pool_opts *opts) {
  br_pool *p = (br_pool *)0x1;
  assert_int_equal(br_pool_new(&p, nthreads, opts), BR_EINVAL);
  assert_null(p);
}

static void test_new_bad_thread_counts(void **state) {
  (void)state;
  expect_new_einval(-1, NULL);
  expect_new_einval(BR_POOL_MAX_THREADS + 1, NULL);
  expect_new_einval(1000000, NULL);
  expect_new_einval(-2147483647 - 1, NULL);
  br_pool_opts o = {.stack_size = 4096};
  expect_new_einval(1, &o);
  o.stack_size = (size_t)1 << 40;
  expect_new_einval(1, &o);
  assert_int_equal(br_pool_new(NULL, 1, NULL), BR_EINVAL);
}

static void test_new_default_size_is_cpu_count(void **state) {
  (void)state;
  assert_int_equal(BR_CPUS, 0);
  br_pool *p = new_pool(BR_CPUS, NULL);
  assert_int_equal(br_pool_size(p), br_cpu_count());
  assert_true(br_pool_size(p) >= 1);
  assert_null(br_pool_current());
  assert_int_equal(br_pool_worker_index(), -1);
  assert_int_equal(br_pool_free(p), 0);
  assert_int_equal(br_pool_size(NULL), 0);
  assert_int_equal(br_pool_free(NULL), 0);
}

/* ------------------------------------------------------------------------ */
/* Jobs, futures, errors                                                     */

static void *add_one(void *arg) { return IP(PI(arg) + 1); }

static void *whoami(void *arg) {
  br_pool **out = arg;
  *out = br_pool_current();
  return IP(br_pool_worker_index());
}

static void test_submit_and_await(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  assert_non_null(p);
  void *v = NULL;
  assert_int_equal(run_job(p, add_one, IP(41), &v), 0);
  assert_int_equal(PI(v), 42);
  br_pool *seen = NULL;
  assert_int_equal(run_job(p, whoami, &seen, &v), 0);
  assert_ptr_equal(seen, p);
  assert_true(PI(v) >= 0 && PI(v) < 2);

  /* Many futures at once, collected with gather. */
  enum { N = 200 };
  br_future *fs[N];
  for (int i = 0; i < N; i++) assert_int_equal(br_pool_submit(p, &fs[i], add_one, IP(i)), 0);
  br_result rs[N];
  assert_int_equal(br_gather(rs, fs, N), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rs[i].err, 0);
    assert_int_equal(PI(rs[i].value), i + 1);
    br_future_unref(fs[i]);
  }
  br_results_free(rs, N);
  br_pool_stats st;
  assert_int_equal(br_pool_get_stats(p, &st), 0);
  assert_int_equal(st.nthreads, 2);
  assert_true(st.submitted >= N + 2);
  assert_int_equal(br_pool_get_stats(NULL, &st), BR_EINVAL);
  assert_int_equal(br_pool_get_stats(p, NULL), BR_EINVAL);
  assert_int_equal(br_pool_free(p), 0);
}

/* Bodies for calls with nothing to do: never called. */
static int fixed_nothing(const void *in, void *out) {
  (void)in;
  (void)out;
  return BR_EIO;
}

static int for_nothing(void *ud, size_t lo, size_t hi) {
  (void)ud;
  (void)lo;
  (void)hi;
  return BR_EIO;
}

/* A job that runs while its pool drains: once submitting is refused (the
 * shutdown began), calls with nothing to do succeed in it, as calls with
 * work do (that work runs right in the job). */
static void *noop(void *arg) { return arg; }

static void *during_drain(void *arg) {
  br_pool *p = br_pool_current();
  br_future *f;
  while (br_pool_submit(p, &f, noop, NULL) == 0) { /* one at a time */
    (void)br_await(f, NULL);
    br_future_unref(f);
  }
  int *rc = arg;
  rc[0] = br_pool_map(p, NULL, noop, NULL, 0, 0);
  rc[1] = br_pool_map_fixed(p, NULL, 0, NULL, fixed_nothing, NULL, 0, 0, 0);
  rc[2] = br_pool_for(p, 3, 3, 0, for_nothing, NULL);
  rc[3] = br_pool_for(p, 0, 1, 0, for_nothing, NULL); /* runs: fails with the body's code */
  return NULL;
}

static void *drain_pool(void *arg) {
  return (void *)(intptr_t)br_pool_shutdown(arg, NULL, BR_SHUTDOWN_DRAIN);
}

static void test_empty_calls_while_draining(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  int rc[4] = {1, 1, 1, 1};
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, during_drain, rc), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, drain_pool, p), 0);
  void *shut;
  pthread_join(t, &shut);
  assert_int_equal((intptr_t)shut, 0);
  assert_int_equal(br_await(f, NULL), 0);
  br_future_unref(f);
  assert_int_equal(rc[0], 0);
  assert_int_equal(rc[1], 0);
  assert_int_equal(rc[2], 0);
  assert_int_equal(rc[3], BR_EIO);
  assert_int_equal(br_pool_free(p), 0);
}

static void test_submit_bad_input(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  br_future *f = (br_future *)0x1;
  assert_int_equal(br_pool_submit(NULL, &f, add_one, NULL), BR_EINVAL);
  assert_int_equal(br_pool_submit(p, &f, NULL, NULL), BR_EINVAL);
  assert_int_equal(br_pool_submit(p, NULL, add_one, NULL), BR_EINVAL);
  assert_ptr_equal(f, (br_future *)0x1); /* untouched */
  assert_int_equal(br_pool_shutdown(p, NULL, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(br_pool_submit(p, &f, add_one, NULL), BR_ESHUTDOWN);
  assert_ptr_equal(f, (br_future *)0x1);
  void *items[1] = {NULL};
  br_result out[1];
  assert_int_equal(br_pool_map(p, out, add_one, items, 1, 0), BR_ESHUTDOWN);
  assert_int_equal(out[0].err, BR_ESHUTDOWN);
  /* Nothing to do is still refused once shutdown began, by every call. */
  assert_int_equal(br_pool_map(p, out, add_one, items, 0, 0), BR_ESHUTDOWN);
  assert_int_equal(br_pool_map_fixed(p, NULL, 0, NULL, fixed_nothing, NULL, 0, 0, 0), BR_ESHUTDOWN);
  assert_int_equal(br_pool_for(p, 5, 5, 0, for_nothing, NULL), BR_ESHUTDOWN);
  assert_int_equal(br_pool_free(p), 0);
}

static void *failing(void *arg) {
  return br_fail(BR_EIO, "disk %ld is on fire", PI(arg));
}

static void *fail_positive(void *arg) {
  (void)arg;
  return br_fail(5, "positive codes become EFAILED");
}

/* The last br_fail wins; a NULL format leaves no message. */
static void *failing_twice(void *arg) {
  br_fail(BR_EIO, "first");
  return br_fail(BR_ENOENT, "no file %ld", PI(arg));
}

static void *fail_no_message(void *arg) {
  (void)arg;
  return br_fail(BR_EPIPE, NULL);
}

static void test_job_errors(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, failing, IP(3)), 0);
  assert_int_equal(br_await(f, NULL), BR_EIO);
  assert_int_equal(br_future_error(f), BR_EIO);
  assert_string_equal(br_future_message(f), "disk 3 is on fire");
  br_future_unref(f);
  assert_int_equal(br_pool_submit(p, &f, fail_positive, NULL), 0);
  assert_int_equal(br_await(f, NULL), BR_EFAILED);
  br_future_unref(f);
  assert_int_equal(br_pool_submit(p, &f, failing_twice, IP(4)), 0);
  assert_int_equal(br_await(f, NULL), BR_ENOENT);
  assert_string_equal(br_future_message(f), "no file 4");
  br_future_unref(f);
  assert_int_equal(br_pool_submit(p, &f, fail_no_message, NULL), 0);
  assert_int_equal(br_await(f, NULL), BR_EPIPE);
  br_future_unref(f);
  /* Outside any task or job br_fail does nothing. */
  assert_null(br_fail(BR_EIO, "nobody listens"));
  assert_int_equal(br_cancelled(), 0);
  br_pool_stats st;
  br_pool_get_stats(p, &st);
  assert_int_equal(st.failed, 4);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Fork-join                                                                 */

static void *fib(void *arg) {
  long n = PI(arg);
  if (n < 2) return arg;
  br_fork f;
  br_pool_fork(&f, fib, IP(n - 1));
  long b = PI(fib(IP(n - 2)));
  void *a = NULL;
  br_pool_join(&f, &a);
  return IP(PI(a) + b);
}

static long fib_serial(long n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

static void test_fib_task_per_call(void **state) {
  (void)state;
  int n = (int)(br_test_scale() > 1 ? 22 : 27);
  for (int threads = 1; threads <= 4; threads *= 2) {
    br_pool *p = new_pool(threads, NULL);
    void *v;
    assert_int_equal(run_job(p, fib, IP(n), &v), 0);
    assert_int_equal(PI(v), fib_serial(n));
    br_pool_stats st;
    br_pool_get_stats(p, &st);
    assert_true(st.forks >= (uint64_t)fib_serial(n + 1) - 1);
    br_pool_free(p);
  }
}

/* cmocka's assertions must stay on the test's thread: code running in pool
 * workers counts its failures here instead, and the test checks the count. */
static _Atomic int worker_failures;
#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      atomic_fetch_add(&worker_failures, 1);                                    \
    }                                                                           \
  } while (0)

/* A chain: depth(n) forks depth(n-1) and joins it. Deep nesting, not wide. */
static void *chain(void *arg) {
  long n = PI(arg);
  if (n == 0) return IP(0);
  br_fork f;
  CHECK(br_pool_fork(&f, chain, IP(n - 1)) == 0);
  void *v = NULL;
  CHECK(br_pool_join(&f, &v) == 0);
  return IP(PI(v) + 1);
}

static void test_fork_any_depth(void **state) {
  (void)state;
  br_pool_opts o = {.stack_size = 64u << 20};
  br_pool *p = new_pool(2, &o);
  long depth = 100000 / br_test_scale();
  void *v;
  assert_int_equal(run_job(p, chain, IP(depth), &v), 0);
  assert_int_equal(PI(v), depth);
  assert_int_equal(atomic_load(&worker_failures), 0);
  br_pool_free(p);
}

/* Leapfrogging keeps stacks proportional to the depth of the work: record
 * how deep below the job's first frame any worker's stack went. */
static _Atomic uintptr_t stack_top[8];
static _Atomic uintptr_t stack_low[8];

static void *fib_probe(void *arg) {
  long n = PI(arg);
  int wi = br_pool_worker_index();
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);
  uintptr_t low = atomic_load(&stack_low[wi]);
  if (here < low) atomic_store(&stack_low[wi], here);
  if (n < 2) return arg;
  br_fork f;
  br_pool_fork(&f, fib_probe, IP(n - 1));
  long b = PI(fib_probe(IP(n - 2)));
  void *a = NULL;
  br_pool_join(&f, &a);
  return IP(PI(a) + b);
}

static void *mark_top(void *arg) {
  (void)arg;
  int wi = br_pool_worker_index();
  atomic_store(&stack_top[wi], (uintptr_t)__builtin_frame_address(0));
  atomic_store(&stack_low[wi], (uintptr_t)__builtin_frame_address(0));
  sleep_ms(20); /* keep this worker busy so every worker gets one */
  return NULL;
}

static void test_leapfrog_bounds_stack(void **state) {
  (void)state;
  enum { W = 4 };
  br_pool *p = new_pool(W, NULL);
  br_future *fs[W];
  for (int i = 0; i < W; i++) br_pool_submit(p, &fs[i], mark_top, NULL);
  for (int i = 0; i < W; i++) {
    br_await(fs[i], NULL);
    br_future_unref(fs[i]);
  }
  int n = br_test_scale() > 1 ? 20 : 25;
  void *v;
  assert_int_equal(run_job(p, fib_probe, IP(n), &v), 0);
  assert_int_equal(PI(v), fib_serial(n));
  /* Serial fib(n) needs about n frames; each level here is a fib frame, a
   * fork frame and, when stolen, a run_stolen frame. Without leapfrogging a
   * waiting worker can stack unrelated stolen subtrees on top of each other;
   * with it, the depth stays a small multiple of n frames. */
  for (int i = 0; i < W; i++) {
    uintptr_t top = atomic_load(&stack_top[i]), low = atomic_load(&stack_low[i]);
    if (!top) continue;
    size_t used = top > low ? top - low : 0;
    if (used > (size_t)n * 2048) fail_msg("worker %d used %zu bytes of stack for fib(%d)", i, used, n);
  }
  br_pool_free(p);
}

static void *child_fails(void *arg) {
  return br_fail(BR_ERANGE, "child %ld out of range", PI(arg));
}

static void *forker_with_errors(void *arg) {
  (void)arg;
  br_fork a, b;
  CHECK(br_pool_fork(&a, child_fails, IP(7)) == 0);
  CHECK(br_pool_fork(&b, add_one, IP(1)) == 0);
  /* Out of order: a is not the most recent fork. */
  CHECK(br_pool_join(&a, NULL) == BR_EINVAL);
  void *v = NULL;
  CHECK(br_pool_join(&b, &v) == 0);
  CHECK(PI(v) == 2);
  br_result res;
  CHECK(br_pool_join_result(&a, &res) == BR_ERANGE);
  CHECK(res.err == BR_ERANGE && res.value == NULL);
  CHECK(res.msg && strcmp(res.msg, "child 7 out of range") == 0);
  br_results_free(&res, 1);
  CHECK(res.msg == NULL);
  /* Joined twice: the call's own error, no message. */
  CHECK(br_pool_join(&a, NULL) == BR_EINVAL);
  CHECK(br_pool_join_result(&a, &res) == BR_EINVAL);
  CHECK(res.err == BR_EINVAL && res.msg == NULL);
  CHECK(br_pool_join_result(NULL, &res) == BR_EINVAL);
  /* A child that succeeds: its value, no message. */
  br_fork e;
  CHECK(br_pool_fork(&e, add_one, IP(41)) == 0);
  CHECK(br_pool_join_result(&e, &res) == 0);
  CHECK(PI(res.value) == 42 && res.err == 0 && res.msg == NULL);
  /* res may be NULL. */
  CHECK(br_pool_fork(&e, child_fails, IP(8)) == 0);
  CHECK(br_pool_join_result(&e, NULL) == BR_ERANGE);
  CHECK(br_pool_fork(NULL, add_one, NULL) == BR_EINVAL);
  br_fork c;
  CHECK(br_pool_fork(&c, NULL, NULL) == BR_EINVAL);
  CHECK(br_pool_join(&c, NULL) == BR_EINVAL);
  /* A child error the parent turns into its own failure. */
  br_fork d;
  br_pool_fork(&d, child_fails, IP(9));
  int rc = br_pool_join_result(&d, &res);
  void *r = br_fail(rc, "parent: %s", res.msg);
  br_results_free(&res, 1);
  return r;
}

static void test_fork_join_errors(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, forker_with_errors, NULL), 0);
  assert_int_equal(br_await(f, NULL), BR_ERANGE);
  assert_string_equal(br_future_message(f), "parent: child 9 out of range");
  assert_int_equal(atomic_load(&worker_failures), 0);
  br_future_unref(f);
  br_pool_free(p);
}

static void test_fork_outside_pool(void **state) {
  (void)state;
  br_fork f;
  assert_int_equal(br_pool_fork(&f, add_one, IP(1)), BR_EPERM);
  void *v = IP(99);
  assert_int_equal(br_pool_join(&f, &v), BR_EPERM);
  assert_int_equal(br_pool_join(NULL, NULL), BR_EINVAL);
  br_result res;
  assert_int_equal(br_pool_join_result(&f, &res), BR_EPERM);
  assert_int_equal(res.err, BR_EPERM);
  assert_null(res.msg);
  assert_int_equal(br_cancelled(), 0);
}

/* ------------------------------------------------------------------------ */
/* map / for / reduce                                                        */

static void *square(void *arg) { return IP(PI(arg) * PI(arg)); }

static void *fail_odd(void *arg) {
  long x = PI(arg);
  if (x % 2) return br_fail(-1000 - (int)x, "odd %ld", x);
  return IP(x);
}

static void test_map(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  enum { N = 1000 };
  static void *items[N];
  static br_result out[N];
  for (int i = 0; i < N; i++) items[i] = IP(i);
  size_t chunks[] = {0, 1, 3, 64, 999, 1000, 5000};
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    memset(out, 0xab, sizeof out);
    assert_int_equal(br_pool_map(p, out, square, items, N, chunks[c]), 0);
    for (int i = 0; i < N; i++) {
      assert_int_equal(out[i].err, 0);
      assert_null(out[i].msg);
      assert_int_equal(PI(out[i].value), (long)i * i);
    }
  }
  /* Errors: every item runs; the lowest failing index decides. */
  assert_int_equal(br_pool_map(p, out, fail_odd, items + 4, 10, 1), -1005);
  for (int i = 0; i < 10; i++) {
    long x = i + 4;
    if (x % 2) {
      assert_int_equal(out[i].err, -1000 - x);
      char want[32];
      snprintf(want, sizeof want, "odd %ld", x);
      assert_string_equal(out[i].msg, want);
    } else {
      assert_int_equal(out[i].err, 0);
      assert_int_equal(PI(out[i].value), x);
    }
  }
  br_results_free(out, 10);
  assert_null(out[1].msg);
  assert_int_equal(br_pool_map(p, NULL, square, items, 0, 0), 0);
  assert_int_equal(br_pool_map(p, out, NULL, items, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map(p, out, square, NULL, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map(p, NULL, square, items, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map(NULL, out, square, items, 1, 0), BR_EINVAL);
  br_pool_free(p);
}

/* map_fixed: plain arrays in and out, an int per item. */
static int square_fixed(const void *in, void *out) {
  int64_t x = *(const int64_t *)in;
  *(int64_t *)out = x * x;
  return (int)(x % 3); /* non-negative values are successes */
}

static int fail_some_fixed(const void *in, void *out) {
  int64_t x = *(const int64_t *)in;
  *(int64_t *)out = -1;
  if (x == 3) return BR_ERANGE;        /* a returned code */
  if (x == 5) {                        /* br_fail, then success: fails */
    br_fail(BR_EIO, "item %lld", (long long)x);
    return 0;
  }
  if (x == 7) {                        /* both: the returned code wins */
    br_fail(BR_EIO, "item %lld", (long long)x);
    return BR_EPIPE;
  }
  *(int64_t *)out = x;
  return 0;
}

static _Atomic int fixed_calls;
static int count_fixed(const void *in, void *out) {
  (void)in;
  (void)out;
  atomic_fetch_add(&fixed_calls, 1);
  return 0;
}

static void test_map_fixed(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  enum { N = 1000 };
  static int64_t in[N], out[N];
  static int errs[N];
  for (int i = 0; i < N; i++) in[i] = i;
  size_t chunks[] = {0, 1, 7, 1000, 4096};
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    memset(out, 0, sizeof out);
    memset(errs, 0x5a, sizeof errs);
    assert_int_equal(br_pool_map_fixed(p, out, sizeof out[0], errs, square_fixed, in, sizeof in[0],
                                       N, chunks[c]),
                     0);
    for (int i = 0; i < N; i++) {
      assert_int_equal(out[i], (int64_t)i * i);
      assert_int_equal(errs[i], 0);
    }
  }
  /* errors may be NULL. */
  assert_int_equal(br_pool_map_fixed(p, out, sizeof out[0], NULL, square_fixed, in, sizeof in[0],
                                     N, 0),
                   0);
  /* Failing items: every item runs; the lowest failing index decides. */
  assert_int_equal(
      br_pool_map_fixed(p, out, sizeof out[0], errs, fail_some_fixed, in, sizeof in[0], 10, 1),
      BR_ERANGE);
  for (int i = 0; i < 10; i++) {
    int want = i == 3 ? BR_ERANGE : i == 5 ? BR_EIO : i == 7 ? BR_EPIPE : 0;
    assert_int_equal(errs[i], want);
    if (!want) assert_int_equal(out[i], i);
  }
  assert_int_equal(
      br_pool_map_fixed(p, out, sizeof out[0], NULL, fail_some_fixed, in + 4, sizeof in[0], 6, 0),
      BR_EIO);
  /* Zero-sized items: in / out may be NULL. */
  atomic_store(&fixed_calls, 0);
  assert_int_equal(br_pool_map_fixed(p, NULL, 0, errs, count_fixed, NULL, 0, 100, 3), 0);
  assert_int_equal(atomic_load(&fixed_calls), 100);
  /* Bad input. */
  assert_int_equal(br_pool_map_fixed(p, out, 8, errs, square_fixed, in, 8, 0, 0), 0);
  assert_int_equal(br_pool_map_fixed(NULL, out, 8, errs, square_fixed, in, 8, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map_fixed(p, out, 8, errs, NULL, in, 8, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map_fixed(p, NULL, 8, errs, square_fixed, in, 8, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map_fixed(p, out, 8, errs, square_fixed, NULL, 8, 1, 0), BR_EINVAL);
  assert_int_equal(br_pool_map_fixed(p, out, 8, errs, square_fixed, in, SIZE_MAX / 2, 4, 0),
                   BR_EINVAL);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_DRAIN), 0);
  errs[0] = 0;
  assert_int_equal(br_pool_map_fixed(p, out, 8, errs, square_fixed, in, 8, 1, 0), BR_ESHUTDOWN);
  assert_int_equal(errs[0], BR_ESHUTDOWN);
  br_pool_free(p);
}

typedef struct {
  unsigned char *hits;
  size_t fail_at;
} for_ctx;

static int mark_range(void *ud, size_t lo, size_t hi) {
  for_ctx *c = ud;
  for (size_t i = lo; i < hi; i++) c->hits[i]++;
  if (c->fail_at >= lo && c->fail_at < hi) return BR_ERANGE;
  return 0;
}

static int fail_with_message(void *ud, size_t lo, size_t hi) {
  (void)ud;
  if (lo <= 500 && 500 < hi) br_fail(BR_EIO, "range %zu", lo);
  return 0;
}

static void test_for(void **state) {
  (void)state;
  br_pool *p = new_pool(3, NULL);
  size_t n = 1000000 / (size_t)br_test_scale();
  for_ctx c = {calloc(n, 1), SIZE_MAX};
  size_t grains[] = {0, 1000, 7, n, n * 2};
  for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
    if (grains[g] == 1 && n > 100000) continue;
    memset(c.hits, 0, n);
    assert_int_equal(br_pool_for(p, 0, n, grains[g], mark_range, &c), 0);
    for (size_t i = 0; i < n; i++)
      if (c.hits[i] != 1) fail_msg("grain %zu: index %zu ran %d times", grains[g], i, c.hits[i]);
  }
  /* A sub-range, and an empty one. */
  memset(c.hits, 0, n);
  assert_int_equal(br_pool_for(p, 10, 20, 3, mark_range, &c), 0);
  for (size_t i = 0; i < 30; i++) assert_int_equal(c.hits[i], i >= 10 && i < 20);
  assert_int_equal(br_pool_for(p, 5, 5, 0, mark_range, &c), 0);
  /* A failing piece: its code comes back, later pieces may be skipped. */
  c.fail_at = n / 2;
  memset(c.hits, 0, n);
  assert_int_equal(br_pool_for(p, 0, n, 100, mark_range, &c), BR_ERANGE);
  for (size_t i = 0; i < n; i++) assert_true(c.hits[i] <= 1);
  assert_int_equal(br_pool_for(p, 0, 1000, 10, fail_with_message, NULL), BR_EIO);
  assert_int_equal(br_pool_for(p, 0, 10, 0, NULL, NULL), BR_EINVAL);
  free(c.hits);
  br_pool_free(p);
}

static int fold_sum(void *ud, size_t lo, size_t hi, void *acc) {
  (void)ud;
  uint64_t *s = acc;
  for (size_t i = lo; i < hi; i++) *s += i;
  return 0;
}
static void combine_sum(void *ud, void *acc, const void *other) {
  (void)ud;
  *(uint64_t *)acc += *(const uint64_t *)other;
}

static int fold_fsum(void *ud, size_t lo, size_t hi, void *acc) {
  const double *x = ud;
  double *s = acc;
  for (size_t i = lo; i < hi; i++) *s += x[i];
  return 0;
}
static void combine_fsum(void *ud, void *acc, const void *other) {
  (void)ud;
  *(double *)acc += *(const double *)other;
}

/* Non-commutative: a span [lo, hi) that only combines with the span right
 * after it; order violations poison it. */
typedef struct {
  size_t lo, hi;
  int ok;
} span;
static int fold_span(void *ud, size_t lo, size_t hi, void *acc) {
  (void)ud;
  span *s = acc;
  if (s->ok == 1 && s->hi == 0 && s->lo == 0) {
    s->lo = lo;
    s->hi = hi;
  } else {
    s->ok = 0;
  }
  return 0;
}
static void combine_span(void *ud, void *acc, const void *other) {
  (void)ud;
  span *a = acc;
  const span *b = other;
  if (!a->ok || !b->ok || a->hi != b->lo) a->ok = 0;
  a->hi = b->hi;
}

static int fold_fail(void *ud, size_t lo, size_t hi, void *acc) {
  (void)ud;
  (void)acc;
  return lo <= 77 && 77 < hi ? BR_EOVERFLOW : 0;
}

static void test_reduce(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  size_t n = 2000000 / (size_t)br_test_scale();
  uint64_t sum = 0;
  assert_int_equal(br_pool_reduce(p, &sum, sizeof sum, 0, n, 0, fold_sum, combine_sum, NULL), 0);
  assert_true(sum == (uint64_t)n * (n - 1) / 2);
  sum = 0;
  assert_int_equal(br_pool_reduce(p, &sum, sizeof sum, 0, 100, 10, fold_sum, combine_sum, NULL), 0);
  assert_int_equal(sum, 4950);
  sum = 0;
  assert_int_equal(br_pool_reduce(p, &sum, sizeof sum, 7, 8, 0, fold_sum, combine_sum, NULL), 0);
  assert_int_equal(sum, 7);

  /* Floating point: same bits on every run. */
  double *x = malloc(n * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = 1.0 / (double)(i + 1) * ((i % 3) ? 1 : -1e3);
  double s1 = 0, s2 = 0;
  assert_int_equal(br_pool_reduce(p, &s1, sizeof s1, 0, n, 1000, fold_fsum, combine_fsum, x), 0);
  for (int r = 0; r < 5; r++) {
    s2 = 0;
    assert_int_equal(br_pool_reduce(p, &s2, sizeof s2, 0, n, 1000, fold_fsum, combine_fsum, x), 0);
    assert_memory_equal(&s1, &s2, sizeof s1);
  }
  free(x);

  span sp = {0, 0, 1};
  assert_int_equal(br_pool_reduce(p, &sp, sizeof sp, 3, 100003, 97, fold_span, combine_span, NULL), 0);
  assert_int_equal(sp.ok, 1);
  assert_int_equal(sp.lo, 3);
  assert_int_equal(sp.hi, 100003);

  /* Big accumulators (heap, not the inline buffer). */
  static uint64_t big[256];
  memset(big, 0, sizeof big);
  assert_int_equal(br_pool_reduce(p, big, sizeof big, 0, 1000, 10, fold_sum, combine_sum, NULL), 0);
  assert_true(big[0] == 499500);

  sum = 123;
  assert_int_equal(br_pool_reduce(p, &sum, sizeof sum, 0, 1000, 10, fold_fail, combine_sum, NULL),
                   BR_EOVERFLOW);
  assert_int_equal(sum, 123); /* unchanged on error */
  assert_int_equal(br_pool_reduce(p, &sum, 0, 0, 10, 0, fold_sum, combine_sum, NULL), BR_EINVAL);
  assert_int_equal(br_pool_reduce(p, &sum, 8192, 0, 10, 0, fold_sum, combine_sum, NULL), BR_EINVAL);
  assert_int_equal(br_pool_reduce(p, NULL, 8, 0, 10, 0, fold_sum, combine_sum, NULL), BR_EINVAL);
  assert_int_equal(br_pool_reduce(p, &sum, 8, 0, 10, 0, NULL, combine_sum, NULL), BR_EINVAL);
  br_pool_free(p);
}

/* map / for called from inside a job: run by the workers, no deadlock even
 * with one worker. */
static void *nested_map(void *arg) {
  br_pool *p = br_pool_current();
  long n = PI(arg);
  void **items = malloc((size_t)n * sizeof *items);
  br_result *out = malloc((size_t)n * sizeof *out);
  for (long i = 0; i < n; i++) items[i] = IP(i);
  long total = -1;
  if (br_pool_map(p, out, square, items, (size_t)n, 0) == 0) {
    total = 0;
    for (long i = 0; i < n; i++) total += PI(out[i].value);
  }
  free(items);
  free(out);
  return IP(total);
}

static void test_nested_parallel_calls(void **state) {
  (void)state;
  for (int threads = 1; threads <= 2; threads++) {
    br_pool *p = new_pool(threads, NULL);
    void *v;
    assert_int_equal(run_job(p, nested_map, IP(1000), &v), 0);
    assert_int_equal(PI(v), 332833500L);
    br_pool_free(p);
  }
}

/* ------------------------------------------------------------------------ */
/* Cancellation and shutdown                                                 */

typedef struct {
  _Atomic int started;
  _Atomic int release;
  _Atomic int saw_cancel;
} gate;

/* Blocks its worker until released, or until its job is cancelled. */
static void *blocker(void *arg) {
  gate *g = arg;
  atomic_store(&g->started, 1);
  while (!atomic_load(&g->release)) {
    if (br_cancelled()) {
      atomic_store(&g->saw_cancel, 1);
      return br_fail(BR_ECANCELED, "stopped early");
    }
    sleep_ms(1);
  }
  return IP(1);
}

static _Atomic int ran_count;
static void *count_run(void *arg) {
  atomic_fetch_add(&ran_count, 1);
  return arg;
}

static void wait_started(gate *g) {
  while (!atomic_load(&g->started)) sleep_ms(1);
}

static void test_cancel_not_started(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *fb, *fx, *fy;
  assert_int_equal(br_pool_submit(p, &fb, blocker, &g), 0);
  wait_started(&g);
  atomic_store(&ran_count, 0);
  assert_int_equal(br_pool_submit(p, &fx, count_run, IP(1)), 0);
  assert_int_equal(br_pool_submit(p, &fy, count_run, IP(2)), 0);
  assert_int_equal(br_future_cancel(fx), 0);
  assert_int_equal(br_future_cancel(fx), BR_EALREADY);
  assert_true(br_future_done(fx));
  assert_int_equal(br_await(fx, NULL), BR_ECANCELED);
  atomic_store(&g.release, 1);
  void *v;
  assert_int_equal(br_await(fy, &v), 0);
  assert_int_equal(PI(v), 2);
  assert_int_equal(br_await(fb, NULL), 0);
  assert_int_equal(atomic_load(&ran_count), 1); /* fx never ran */
  br_pool_stats st;
  br_pool_get_stats(p, &st);
  assert_int_equal(st.cancelled, 1);
  br_future_unref(fb);
  br_future_unref(fx);
  br_future_unref(fy);
  /* Cancelling after completion changes nothing. */
  assert_int_equal(br_pool_submit(p, &fx, add_one, IP(1)), 0);
  assert_int_equal(br_await(fx, &v), 0);
  assert_int_equal(br_future_cancel(fx), BR_EALREADY);
  assert_int_equal(br_future_error(fx), 0);
  br_future_unref(fx);
  br_pool_free(p);
}

static void test_cancel_running_job_sees_it(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, blocker, &g), 0);
  wait_started(&g);
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(br_await(f, NULL), BR_ECANCELED);
  /* The job itself keeps running until it looks. */
  while (!atomic_load(&g.saw_cancel)) sleep_ms(1);
  br_future_unref(f);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_DRAIN), 0);
  br_pool_free(p);
}

/* Timed-out waits cancel a queued job (br_future_wait_for). */
static void test_wait_for_cancels_queued_job(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *fb, *fx;
  br_pool_submit(p, &fb, blocker, &g);
  wait_started(&g);
  atomic_store(&ran_count, 0);
  br_pool_submit(p, &fx, count_run, IP(5));
  assert_int_equal(br_future_wait_for(fx, NULL, 20), BR_ETIMEDOUT);
  assert_int_equal(br_future_error(fx), BR_ECANCELED);
  atomic_store(&g.release, 1);
  br_await(fb, NULL);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(atomic_load(&ran_count), 0);
  br_future_unref(fb);
  br_future_unref(fx);
  br_pool_free(p);
}

static void *release_later(void *arg) {
  gate *g = arg;
  sleep_ms(50);
  atomic_store(&g->release, 1);
  return NULL;
}

static void test_shutdown_drain(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *fb, *fs[5];
  br_pool_submit(p, &fb, blocker, &g);
  wait_started(&g);
  atomic_store(&ran_count, 0);
  for (int i = 0; i < 5; i++) br_pool_submit(p, &fs[i], count_run, IP(i));
  pthread_t t;
  pthread_create(&t, NULL, release_later, &g);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_DRAIN), 0);
  pthread_join(t, NULL);
  assert_int_equal(r.mode, BR_SHUTDOWN_DRAIN);
  assert_int_equal(r.pending, 6);
  assert_int_equal(r.completed, 6);
  assert_int_equal(r.cancelled, 0);
  assert_int_equal(r.submitted, 6);
  assert_int_equal(r.failed, 0);
  assert_int_equal(atomic_load(&ran_count), 5);
  assert_true(br_future_done(fb));
  for (int i = 0; i < 5; i++) {
    void *v;
    assert_true(br_future_done(fs[i]));
    assert_int_equal(br_await(fs[i], &v), 0);
    assert_int_equal(PI(v), i);
    br_future_unref(fs[i]);
  }
  br_future_unref(fb);
  /* Again: 0 at once, the same report. */
  br_pool_report r2;
  assert_int_equal(br_pool_shutdown(p, &r2, BR_SHUTDOWN_CANCEL), 0);
  assert_memory_equal(&r, &r2, sizeof r);
  assert_int_equal(br_pool_shutdown(p, NULL, (br_shutdown_mode)7), BR_EINVAL);
  assert_int_equal(br_pool_shutdown(NULL, NULL, BR_SHUTDOWN_DRAIN), BR_EINVAL);
  br_pool_free(p);
}

static void test_shutdown_cancel(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *fb, *fs[5];
  br_pool_submit(p, &fb, blocker, &g);
  wait_started(&g);
  atomic_store(&ran_count, 0);
  for (int i = 0; i < 5; i++) br_pool_submit(p, &fs[i], count_run, IP(i));
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_CANCEL), 0);
  assert_int_equal(r.mode, BR_SHUTDOWN_CANCEL);
  assert_int_equal(r.pending, 6);
  assert_int_equal(r.completed, 1); /* the blocker, told by br_cancelled() */
  assert_int_equal(r.cancelled, 5);
  assert_int_equal(atomic_load(&ran_count), 0);
  assert_int_equal(atomic_load(&g.saw_cancel), 1);
  assert_int_equal(br_future_error(fb), BR_ECANCELED);
  assert_string_equal(br_future_message(fb), "stopped early");
  for (int i = 0; i < 5; i++) {
    assert_int_equal(br_future_error(fs[i]), BR_ECANCELED);
    br_future_unref(fs[i]);
  }
  br_future_unref(fb);
  br_pool_free(p);
}

/* br_pool_shutdown from a task suspends only that task, and the task's
 * cancellation does not cut the wait short: the blocker is released only
 * after the shutting-down task was cancelled, and shutdown still drains. */
typedef struct {
  br_pool *pool;
  gate g;
  br_task *shutter;
  int rc;
  br_pool_report r;
} shut_ctx;

static void *shutter_task(void *arg) {
  shut_ctx *c = arg;
  c->rc = br_pool_shutdown(c->pool, &c->r, BR_SHUTDOWN_DRAIN);
  return NULL;
}

static void *cancel_then_release(void *arg) {
  shut_ctx *c = arg;
  br_sleep_ms(10); /* either way (in shutdown or before it) the result holds */
  br_cancel(c->shutter);
  br_sleep_ms(10); /* the loop goes on while the other task waits */
  atomic_store(&c->g.release, 1);
  return NULL;
}

static void *shutdown_in_tasks(void *arg) {
  shut_ctx *c = arg;
  br_task *other;
  if (br_spawn(&c->shutter, shutter_task, c, NULL) != 0) return IP(-1);
  if (br_spawn(&other, cancel_then_release, c, NULL) != 0) return IP(-1);
  (void)br_join(c->shutter, NULL);
  (void)br_join(other, NULL);
  return NULL;
}

static void test_shutdown_from_cancelled_task(void **state) {
  (void)state;
  shut_ctx c = {0};
  c.pool = new_pool(1, NULL);
  br_future *fb, *fs[3];
  assert_int_equal(br_pool_submit(c.pool, &fb, blocker, &c.g), 0);
  wait_started(&c.g);
  atomic_store(&ran_count, 0);
  for (int i = 0; i < 3; i++) assert_int_equal(br_pool_submit(c.pool, &fs[i], count_run, IP(i)), 0);
  assert_int_equal(br_run(NULL, shutdown_in_tasks, &c), 0);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.r.mode, BR_SHUTDOWN_DRAIN);
  assert_int_equal(c.r.pending, 4);
  assert_int_equal(c.r.completed, 4);
  assert_int_equal(c.r.cancelled, 0);
  assert_int_equal(atomic_load(&ran_count), 3);
  assert_int_equal(br_future_error(fb), 0);
  for (int i = 0; i < 3; i++) {
    assert_true(br_future_done(fs[i]));
    br_future_unref(fs[i]);
  }
  br_future_unref(fb);
  br_pool_free(c.pool);
}

/* br_pool_free on a live pool cancels what is queued. */
static void test_free_cancels_pending(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  gate g = {0};
  br_future *fb, *fx;
  br_pool_submit(p, &fb, blocker, &g);
  wait_started(&g);
  br_pool_submit(p, &fx, count_run, IP(1));
  assert_int_equal(br_pool_free(p), 0);
  assert_int_equal(br_future_error(fx), BR_ECANCELED);
  assert_true(br_future_done(fb));
  br_future_unref(fb);
  br_future_unref(fx);
}

static void *shutdown_self(void *arg) {
  (void)arg;
  br_pool *p = br_pool_current();
  long bad = 0;
  if (br_pool_shutdown(p, NULL, BR_SHUTDOWN_DRAIN) != BR_EDEADLK) bad++;
  if (br_pool_free(p) != BR_EDEADLK) bad++;
  return IP(bad);
}

static void test_shutdown_from_worker(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  void *v;
  assert_int_equal(run_job(p, shutdown_self, NULL, &v), 0);
  assert_int_equal(PI(v), 0);
  br_pool_free(p);
}

/* Many jobs cancelled while workers race to run them: every future ends
 * exactly once, nothing leaks (ASan), nothing runs after it was reported
 * cancelled before start. */
static void *spin_a_bit(void *arg) {
  volatile long x = 0;
  for (long i = 0; i < 2000; i++) x += i;
  (void)x;
  return arg;
}

static void test_cancel_race(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  int n = (int)br_test_scaled(20000);
  br_future **fs = malloc((size_t)n * sizeof *fs);
  for (int i = 0; i < n; i++) {
    assert_int_equal(br_pool_submit(p, &fs[i], spin_a_bit, IP(i)), 0);
    if (i % 3 == 0) br_future_cancel(fs[i / 2]);
  }
  int ok = 0, cancelled = 0;
  for (int i = 0; i < n; i++) {
    void *v;
    int rc = br_await(fs[i], &v);
    if (rc == 0) {
      assert_int_equal(PI(v), i);
      ok++;
    } else {
      assert_int_equal(rc, BR_ECANCELED);
      cancelled++;
    }
    br_future_unref(fs[i]);
  }
  free(fs);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_DRAIN), 0);
  br_pool_stats st;
  br_pool_get_stats(p, &st);
  assert_int_equal(ok + cancelled, n);
  assert_int_equal(st.submitted, (uint64_t)n);
  /* Jobs that were cancelled while running count as completed. */
  assert_int_equal(st.completed + st.cancelled, (uint64_t)n);
  assert_true(st.cancelled <= (uint64_t)cancelled);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Waiting from inside jobs                                                  */

typedef struct {
  br_future *self;
  _Atomic int ready;
  br_pool *pool;
} self_ref;

static void *wait_for_myself(void *arg) {
  self_ref *s = arg;
  while (!atomic_load(&s->ready)) sleep_ms(1);
  return IP(br_await(s->self, NULL));
}

static void test_wait_on_self_is_edeadlk(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  self_ref s = {0};
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, wait_for_myself, &s), 0);
  s.self = f;
  atomic_store(&s.ready, 1);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(PI(v), BR_EDEADLK);
  br_future_unref(f);
  br_pool_free(p);
}

/* A waits for B; with one worker B runs inside A's wait (helping). */
static void *submit_and_wait(void *arg) {
  (void)arg;
  br_future *b;
  if (br_pool_submit(br_pool_current(), &b, add_one, IP(10)) != 0) return IP(-1);
  void *v = NULL;
  int rc = br_await(b, &v);
  br_future_unref(b);
  return rc ? IP(rc) : v;
}

/* B waits for A, which is further down the same worker's stack. */
typedef struct {
  br_future *a;
  _Atomic int ready;
  _Atomic int inner_rc;
} cycle;

static void *inner_waits_outer(void *arg) {
  cycle *c = arg;
  atomic_store(&c->inner_rc, br_await(c->a, NULL));
  return NULL;
}

static void *outer_waits_inner(void *arg) {
  cycle *c = arg;
  while (!atomic_load(&c->ready)) sleep_ms(1);
  br_future *b;
  br_pool_submit(br_pool_current(), &b, inner_waits_outer, c);
  int rc = br_await(b, NULL);
  br_future_unref(b);
  return IP(rc);
}

static void *wait_until_short(void *arg) {
  return IP(br_await_until(arg, NULL, br_now() + 20 * 1000000LL));
}

static void test_wait_inside_jobs(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  void *v;
  assert_int_equal(run_job(p, submit_and_wait, NULL, &v), 0);
  assert_int_equal(PI(v), 11);

  cycle c = {0};
  br_future *a;
  assert_int_equal(br_pool_submit(p, &a, outer_waits_inner, &c), 0);
  c.a = a;
  atomic_store(&c.ready, 1);
  assert_int_equal(br_await(a, &v), 0);
  assert_int_equal(PI(v), 0);
  assert_int_equal(atomic_load(&c.inner_rc), BR_EDEADLK);
  br_future_unref(a);

  /* With a deadline, inside a job. The awaited job belongs to a second pool:
   * one of p's own would be run by the helping wait itself. */
  br_future *f;
  br_pool *other = new_pool(1, NULL);
  gate g = {0};
  br_future *slow;
  br_pool_submit(other, &slow, blocker, &g);
  assert_int_equal(br_pool_submit(p, &f, wait_until_short, slow), 0);
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(PI(v), BR_ETIMEDOUT);
  br_future_unref(f);
  atomic_store(&g.release, 1);
  assert_int_equal(br_await_until(slow, &v, BR_NEVER), 0);
  assert_int_equal(PI(v), 1);
  br_future_unref(slow);
  br_pool_free(other);
  br_pool_free(p);
}

/* br_await / br_await_until inside a job go through the core's job context
 * to the pool's helping wait: BR_EDEADLK on its own future, BR_ETIMEDOUT at a
 * deadline, and gather works the same way. */
static void *core_waits(void *arg) {
  self_ref *s = arg;
  while (!atomic_load(&s->ready)) sleep_ms(1);
  long bad = 0;
  if (br_await(s->self, NULL) != BR_EDEADLK) bad |= 1;
  if (br_await_until(s->self, NULL, BR_NEVER) != BR_EDEADLK) bad |= 1;
  /* Another job, running on the other worker: a short deadline times out.
   * (Wait until it started there: a helping wait could otherwise run it
   * itself, and it would never return, since it waits for us.) */
  gate g = {0};
  br_future *slow;
  br_pool_submit(br_pool_current(), &slow, blocker, &g);
  while (!atomic_load(&g.started)) sleep_ms(1);
  if (br_await_until(slow, NULL, br_now() + 20 * 1000000LL) != BR_ETIMEDOUT) bad |= 2;
  atomic_store(&g.release, 1);
  void *v = NULL;
  if (br_await(slow, &v) != 0 || PI(v) != 1) bad |= 4;
  br_future_unref(slow);
  br_future *fs[3];
  br_result rs[3];
  for (int i = 0; i < 3; i++) br_pool_submit(br_pool_current(), &fs[i], add_one, IP(i));
  if (br_gather(rs, fs, 3) != 0) bad |= 8;
  for (int i = 0; i < 3; i++) {
    if (PI(rs[i].value) != i + 1) bad |= 16;
    br_future_unref(fs[i]);
  }
  br_results_free(rs, 3);
  return IP(bad);
}

static void test_core_await_in_job(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  self_ref s = {0};
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, core_waits, &s), 0);
  s.self = f;
  atomic_store(&s.ready, 1);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(PI(v), 0);
  br_future_unref(f);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* From a loop task                                                          */

static void *task_main(void *arg) {
  br_pool *p = arg;
  br_future *f;
  if (br_pool_submit(p, &f, fib, IP(20)) != 0) return IP(-1);
  void *v = NULL;
  int rc = br_await(f, &v);
  br_future_unref(f);
  if (rc) return IP(rc);
  void *items[5] = {IP(1), IP(2), IP(3), IP(4), IP(5)};
  br_result out[5];
  if (br_pool_map(p, out, square, items, 5, 0) != 0) return IP(-2);
  long s = 0;
  for (int i = 0; i < 5; i++) s += PI(out[i].value);
  return IP(PI(v) * 1000 + s);
}

/* A task that gives up on a map: queued behind a busy worker when its
 * scope's deadline passes, the call returns the deadline's error at once;
 * cancelled while the map runs (once its first item has started), pieces not
 * started are skipped, the running one is waited for, and the call returns
 * BR_ECANCELED. */
typedef struct {
  br_pool *pool;
  int rc_queued, rc_running;
  int64_t took_queued;
  br_result out[8];
  gate g;
  br_task *mapper;
} giveup;

static _Atomic int slow_started;

static void *slow_item(void *arg) {
  atomic_store(&slow_started, 1);
  sleep_ms(PI(arg));
  return arg;
}

static void *giveup_mapper(void *arg) {
  giveup *c = arg;
  void *items[8];
  for (int i = 0; i < 8; i++) items[i] = IP(100);
  c->rc_running = br_pool_map(c->pool, c->out, slow_item, items, 8, 1);
  return NULL;
}

static void *giveup_canceller(void *arg) {
  giveup *c = arg;
  while (!atomic_load(&slow_started)) br_sleep_ms(1);
  br_cancel(c->mapper);
  return NULL;
}

static void *giveup_main(void *arg) {
  giveup *c = arg;
  void *items[8];
  for (int i = 0; i < 8; i++) items[i] = IP(100);
  /* 1: the only worker is blocked; the map's root sits in the queue. */
  br_future *fb;
  br_pool_submit(c->pool, &fb, blocker, &c->g);
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(30), false);
  int64_t t0 = br_now();
  c->rc_queued = br_pool_map(c->pool, c->out, slow_item, items, 8, 1);
  c->took_queued = br_now() - t0;
  br_scope_exit(&s);
  for (int i = 0; i < 8; i++)
    if (c->out[i].err != BR_ECANCELED) c->rc_queued = 999;
  atomic_store(&c->g.release, 1);
  br_await(fb, NULL);
  br_future_unref(fb);
  /* 2: the map runs (one 100 ms item at a time); its task is cancelled
   * during the first item. */
  atomic_store(&slow_started, 0);
  br_task *canceller;
  if (br_spawn(&c->mapper, giveup_mapper, c, NULL) != 0) return IP(-1);
  if (br_spawn(&canceller, giveup_canceller, c, NULL) != 0) return IP(-1);
  (void)br_join(c->mapper, NULL);
  (void)br_join(canceller, NULL);
  return NULL;
}

static void test_map_caller_gives_up(void **state) {
  (void)state;
  giveup c = {0};
  c.pool = new_pool(1, NULL);
  assert_int_equal(br_run(NULL, giveup_main, &c), 0);
  assert_int_equal(c.rc_queued, BR_ETIMEDOUT);
  assert_true(c.took_queued < 1000 * 1000000LL); /* not after the blocker */
  assert_int_equal(c.rc_running, BR_ECANCELED);
  int ran = 0, skipped = 0;
  for (int i = 0; i < 8; i++) {
    if (c.out[i].err == 0) {
      assert_int_equal(PI(c.out[i].value), 100);
      ran++;
    } else {
      assert_int_equal(c.out[i].err, BR_ECANCELED);
      skipped++;
    }
  }
  assert_int_equal(ran, 1); /* one worker: the item that had started */
  assert_int_equal(skipped, 7);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(c.pool, &r, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(r.pending, 0);
  br_pool_free(c.pool);
}

/* map_fixed from a task that gives up: queued behind a busy worker (its
 * scope's deadline passes) it returns at once with every item BR_ECANCELED;
 * running (the task is cancelled once the first item has started), the item
 * that runs sees br_cancelled() and the rest are skipped. */
typedef struct {
  br_pool *pool;
  gate g;
  int rc_queued, rc_running;
  int64_t in[8], out[8];
  int errs_queued[8], errs_running[8];
  br_task *mapper;
} fixed_giveup;

static _Atomic int fixed_saw_cancel, fixed_item_started;

/* Runs until its map is cancelled (at most 10 s). */
static int until_cancelled(const void *in, void *out) {
  atomic_store(&fixed_item_started, 1);
  int64_t t0 = br_now();
  while (!br_cancelled()) {
    if (br_now() - t0 > 10 * 1000000000LL) return BR_ETIMEDOUT;
    sleep_ms(1);
  }
  atomic_fetch_add(&fixed_saw_cancel, 1);
  *(int64_t *)out = *(const int64_t *)in;
  return br_cancelled();
}

static void *fixed_mapper(void *arg) {
  fixed_giveup *c = arg;
  c->rc_running = br_pool_map_fixed(c->pool, c->out, sizeof c->out[0], c->errs_running,
                                    until_cancelled, c->in, sizeof c->in[0], 8, 1);
  return NULL;
}

static void *fixed_canceller(void *arg) {
  fixed_giveup *c = arg;
  while (!atomic_load(&fixed_item_started)) br_sleep_ms(1);
  br_cancel(c->mapper);
  return NULL;
}

static void *fixed_giveup_main(void *arg) {
  fixed_giveup *c = arg;
  br_future *fb;
  br_pool_submit(c->pool, &fb, blocker, &c->g);
  wait_started(&c->g);
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(30), false);
  c->rc_queued = br_pool_map_fixed(c->pool, c->out, sizeof c->out[0], c->errs_queued,
                                   until_cancelled, c->in, sizeof c->in[0], 8, 1);
  br_scope_exit(&s);
  atomic_store(&c->g.release, 1);
  br_await(fb, NULL);
  br_future_unref(fb);
  atomic_store(&fixed_item_started, 0);
  br_task *canceller;
  if (br_spawn(&c->mapper, fixed_mapper, c, NULL) != 0) return IP(-1);
  if (br_spawn(&canceller, fixed_canceller, c, NULL) != 0) return IP(-1);
  (void)br_join(c->mapper, NULL); /* BR_ECANCELED: it was cancelled */
  (void)br_join(canceller, NULL);
  return NULL;
}

static void test_map_fixed_cancelled(void **state) {
  (void)state;
  fixed_giveup c = {0};
  c.pool = new_pool(1, NULL);
  for (int i = 0; i < 8; i++) {
    c.in[i] = 100 + i;
    c.out[i] = -7;
  }
  atomic_store(&fixed_saw_cancel, 0);
  assert_int_equal(br_run(NULL, fixed_giveup_main, &c), 0);
  assert_int_equal(c.rc_queued, BR_ETIMEDOUT);
  for (int i = 0; i < 8; i++) assert_int_equal(c.errs_queued[i], BR_ECANCELED);
  assert_int_equal(c.rc_running, BR_ECANCELED);
  /* One worker: the first item ran and saw the cancellation, the rest were
   * skipped (their out slots untouched). */
  assert_int_equal(atomic_load(&fixed_saw_cancel), 1);
  assert_int_equal(c.errs_running[0], BR_ECANCELED);
  assert_int_equal(c.out[0], 100);
  for (int i = 1; i < 8; i++) {
    assert_int_equal(c.errs_running[i], BR_ECANCELED);
    assert_int_equal(c.out[i], -7);
  }
  br_pool_free(c.pool);
}

static void test_from_task(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  void *res = NULL;
  assert_int_equal(br_run(&res, task_main, p), 0);
  assert_int_equal(PI(res), 6765L * 1000 + 55);
  br_pool_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_bad_thread_counts),
      cmocka_unit_test(test_new_default_size_is_cpu_count),
      cmocka_unit_test(test_submit_and_await),
      cmocka_unit_test(test_submit_bad_input),
      cmocka_unit_test(test_empty_calls_while_draining),
      cmocka_unit_test(test_job_errors),
      cmocka_unit_test(test_fib_task_per_call),
      cmocka_unit_test(test_fork_any_depth),
      cmocka_unit_test(test_leapfrog_bounds_stack),
      cmocka_unit_test(test_fork_join_errors),
      cmocka_unit_test(test_fork_outside_pool),
      cmocka_unit_test(test_map),
      cmocka_unit_test(test_for),
      cmocka_unit_test(test_reduce),
      cmocka_unit_test(test_nested_parallel_calls),
      cmocka_unit_test(test_cancel_not_started),
      cmocka_unit_test(test_cancel_running_job_sees_it),
      cmocka_unit_test(test_wait_for_cancels_queued_job),
      cmocka_unit_test(test_shutdown_drain),
      cmocka_unit_test(test_shutdown_cancel),
      cmocka_unit_test(test_shutdown_from_cancelled_task),
      cmocka_unit_test(test_free_cancels_pending),
      cmocka_unit_test(test_shutdown_from_worker),
      cmocka_unit_test(test_cancel_race),
      cmocka_unit_test(test_wait_on_self_is_edeadlk),
      cmocka_unit_test(test_wait_inside_jobs),
      cmocka_unit_test(test_core_await_in_job),
      cmocka_unit_test(test_from_task),
      cmocka_unit_test(test_map_caller_gives_up),
      cmocka_unit_test(test_map_fixed),
      cmocka_unit_test(test_map_fixed_cancelled),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
