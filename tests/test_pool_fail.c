/* SPDX-License-Identifier: MIT */
/* test_pool_fail — br_fail and br_cancelled (braid.h) in every kind of CPU-pool
 * work: a submitted job (in a process whose first pool this is), a fork child
 * run inline and one run by a thief, a map item, a map_fixed item, a for
 * range, a reduce range, a job run by another job's helping wait, and a task
 * running on a loop inside a job (the task answers first). The pool reaches
 * them through the core's per-thread job context, so no registration is
 * needed and nesting restores the outer piece of work. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_pool.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((long)(intptr_t)(p))

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* cmocka's assertions must stay on the test's thread: pool work counts its
 * failures here, and the test checks the count. */
static _Atomic int worker_failures;
#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      atomic_fetch_add(&worker_failures, 1);                                    \
    }                                                                           \
  } while (0)

/* Submit fn(arg), wait from this thread; the future stays the caller's. */
static br_future *run(br_pool *p, br_pool_fn fn, void *arg) {
  br_future *f = NULL;
  assert_int_equal(br_pool_submit(p, &f, fn, arg), 0);
  (void)br_await(f, NULL);
  return f;
}

static void expect_failed(br_future *f, int code, const char *msg) {
  assert_true(br_future_done(f));
  assert_int_equal(br_future_error(f), code);
  if (msg) assert_string_equal(br_future_message(f), msg);
  br_future_unref(f);
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                      */

static void *fail_job(void *arg) { return br_fail(BR_EIO, "job %ld failed", PI(arg)); }

/* Runs first: no pool existed in this process before this one. */
static void test_first_pool_job_fails(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  expect_failed(run(p, fail_job, IP(1)), BR_EIO, "job 1 failed");
  br_pool_free(p);
  /* And in a pool of a pool: a second one, created after the first died. */
  p = new_pool(2, NULL);
  expect_failed(run(p, fail_job, IP(2)), BR_EIO, "job 2 failed");
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Fork children                                                             */

static void *child_fail(void *arg) { return br_fail(BR_ERANGE, "child %ld", PI(arg)); }

typedef struct {
  _Atomic int started;
  int worker;
} steal_probe;

/* Announces that it runs, and where, then fails. */
static void *child_fail_announced(void *arg) {
  steal_probe *sp = arg;
  sp->worker = br_pool_worker_index();
  atomic_store(&sp->started, 1);
  return br_fail(BR_EPIPE, "stolen child on worker %d", sp->worker);
}

static void *forker(void *arg) {
  (void)arg;
  /* Inline: nobody else is around to steal before the join. */
  br_fork f;
  br_result r;
  CHECK(br_pool_fork(&f, child_fail, IP(1)) == 0);
  CHECK(br_pool_join_result(&f, &r) == BR_ERANGE);
  CHECK(r.msg && strcmp(r.msg, "child 1") == 0);
  br_results_free(&r, 1);
  /* Stolen: wait (up to 5 s) for the other worker to take the child. */
  steal_probe sp = {0};
  CHECK(br_pool_fork(&f, child_fail_announced, &sp) == 0);
  int64_t t0 = br_now();
  while (!atomic_load(&sp.started) && br_now() - t0 < 5 * 1000000000LL) sleep_ms(1);
  CHECK(br_pool_join_result(&f, &r) == BR_EPIPE);
  char want[64];
  snprintf(want, sizeof want, "stolen child on worker %d", sp.worker);
  CHECK(r.msg && strcmp(r.msg, want) == 0);
  br_results_free(&r, 1);
  /* The children's failures are theirs: this job succeeds. */
  return IP(7);
}

/* Two levels: a child that forks a failing grandchild and fails with its
 * own message built from the grandchild's. */
static void *child_of_child(void *arg) {
  br_fork g;
  br_result r;
  br_pool_fork(&g, child_fail, arg);
  int rc = br_pool_join_result(&g, &r);
  void *v = br_fail(rc, "outer(%s)", r.msg ? r.msg : "?");
  br_results_free(&r, 1);
  return v;
}

static void *deep_forker(void *arg) {
  br_fork f;
  br_pool_fork(&f, child_of_child, arg);
  br_result r;
  int rc = br_pool_join_result(&f, &r);
  void *v = br_fail(rc, "job(%s)", r.msg ? r.msg : "?");
  br_results_free(&r, 1);
  return v;
}

static void test_fail_in_fork_children(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  br_future *f = run(p, forker, NULL);
  assert_int_equal(br_future_error(f), 0);
  assert_int_equal(PI(br_future_value(f)), 7);
  br_future_unref(f);
  expect_failed(run(p, deep_forker, IP(5)), BR_ERANGE, "job(outer(child 5))");
  assert_int_equal(atomic_load(&worker_failures), 0);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Map items, map_fixed items, ranges                                        */

static void *item_maybe_fail(void *arg) {
  long x = PI(arg);
  if (x % 4 == 1) return br_fail(-2000 - (int)x, "item %ld", x);
  if (x % 4 == 3) {
    /* A fork inside an item: the child's failure becomes the item's. */
    br_fork f;
    br_result r;
    br_pool_fork(&f, child_fail, arg);
    int rc = br_pool_join_result(&f, &r);
    void *v = br_fail(rc, "item %ld: %s", x, r.msg);
    br_results_free(&r, 1);
    return v;
  }
  return IP(x * 10);
}

static int fixed_maybe_fail(const void *in, void *out) {
  long x = *(const long *)in;
  *(long *)out = x * 10;
  if (x % 4 == 1) br_fail(-2000 - (int)x, "item %ld", x);
  return 0;
}

static int range_fail(void *ud, size_t lo, size_t hi) {
  size_t at = *(size_t *)ud;
  if (lo <= at && at < hi) br_fail(BR_EOVERFLOW, "range [%zu, %zu)", lo, hi);
  return 0;
}

static int fold_fail(void *ud, size_t lo, size_t hi, void *acc) {
  size_t at = *(size_t *)ud;
  for (size_t i = lo; i < hi; i++) *(uint64_t *)acc += i;
  if (lo <= at && at < hi) br_fail(BR_EMFILE, "fold at %zu", at);
  return 0;
}

static void combine(void *ud, void *acc, const void *other) {
  (void)ud;
  *(uint64_t *)acc += *(const uint64_t *)other;
}

/* The same calls from inside a job (the caller is a worker). */
static void *par_calls_in_job(void *arg) {
  br_pool *p = br_pool_current();
  (void)arg;
  void *items[16];
  br_result out[16];
  for (int i = 0; i < 16; i++) items[i] = IP(i);
  CHECK(br_pool_map(p, out, item_maybe_fail, items, 16, 1) == -2001);
  for (int i = 0; i < 16; i++) {
    if (i % 4 == 1) CHECK(out[i].err == -2000 - i);
    else if (i % 4 == 3) CHECK(out[i].err == BR_ERANGE && out[i].msg && strstr(out[i].msg, "child"));
    else CHECK(out[i].err == 0 && PI(out[i].value) == i * 10);
  }
  br_results_free(out, 16);
  size_t at = 777;
  CHECK(br_pool_for(p, 0, 1000, 10, range_fail, &at) == BR_EOVERFLOW);
  uint64_t sum = 0;
  CHECK(br_pool_reduce(p, &sum, sizeof sum, 0, 1000, 10, fold_fail, combine, &at) == BR_EMFILE);
  return NULL;
}

static void test_fail_in_map_items_and_ranges(void **state) {
  (void)state;
  br_pool *p = new_pool(2, NULL);
  enum { N = 64 };
  void *items[N];
  br_result out[N];
  for (int i = 0; i < N; i++) items[i] = IP(i);
  assert_int_equal(br_pool_map(p, out, item_maybe_fail, items, N, 0), -2001);
  for (int i = 0; i < N; i++) {
    char want[64];
    if (i % 4 == 1) {
      assert_int_equal(out[i].err, -2000 - i);
      snprintf(want, sizeof want, "item %d", i);
      assert_string_equal(out[i].msg, want);
    } else if (i % 4 == 3) {
      assert_int_equal(out[i].err, BR_ERANGE);
      snprintf(want, sizeof want, "item %d: child %d", i, i);
      assert_string_equal(out[i].msg, want);
    } else {
      assert_int_equal(out[i].err, 0);
      assert_null(out[i].msg);
      assert_int_equal(PI(out[i].value), i * 10);
    }
  }
  br_results_free(out, N);

  long in[N], fout[N];
  int errs[N];
  for (int i = 0; i < N; i++) in[i] = i;
  assert_int_equal(br_pool_map_fixed(p, fout, sizeof fout[0], errs, fixed_maybe_fail, in,
                                     sizeof in[0], N, 3),
                   -2001);
  for (int i = 0; i < N; i++) {
    assert_int_equal(errs[i], i % 4 == 1 ? -2000 - i : 0);
    assert_int_equal(fout[i], i * 10);
  }

  size_t at = 12345;
  assert_int_equal(br_pool_for(p, 0, 100000, 100, range_fail, &at), BR_EOVERFLOW);
  uint64_t sum = 99;
  assert_int_equal(br_pool_reduce(p, &sum, sizeof sum, 0, 100000, 100, fold_fail, combine, &at),
                   BR_EMFILE);
  assert_int_equal(sum, 99); /* unchanged on error */

  br_future *f = run(p, par_calls_in_job, NULL);
  assert_int_equal(br_future_error(f), 0);
  br_future_unref(f);
  assert_int_equal(atomic_load(&worker_failures), 0);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Nesting: helping waits, loops inside jobs                                 */

/* On a one-worker pool, the inner job runs inside the outer job's helping
 * wait, on the same thread; each keeps its own outcome. */
static void *outer_helps(void *arg) {
  (void)arg;
  br_future *b;
  if (br_pool_submit(br_pool_current(), &b, fail_job, IP(9)) != 0) return br_fail(BR_EINVAL, "x");
  int rc = br_await(b, NULL);
  CHECK(rc == BR_EIO);
  CHECK(strcmp(br_future_message(b), "job 9 failed") == 0);
  br_future_unref(b);
  /* The outer job did not inherit the inner failure... */
  br_fork f;
  br_pool_fork(&f, child_fail, IP(3));
  CHECK(br_pool_join(&f, NULL) == BR_ERANGE);
  /* ...and its own br_fail still counts for itself. */
  return br_fail(BR_ENOSPC, "outer after rc %d", rc);
}

static void *task_fails(void *arg) { return br_fail(BR_EACCES, "task %ld", PI(arg)); }

static void *task_cancel_probe(void *arg) {
  (void)arg;
  /* In a task, br_cancelled answers for the task, not the job. */
  return IP(br_cancelled());
}

/* A job that runs a loop: the task's br_fail fails the task, not the job;
 * after the loop the job's own br_fail counts again. */
static void *job_with_loop(void *arg) {
  (void)arg;
  void *v = NULL;
  int rc = br_run(&v, task_fails, IP(4));
  CHECK(rc == BR_EACCES);
  rc = br_run(&v, task_cancel_probe, NULL);
  CHECK(rc == 0 && PI(v) == 0);
  return br_fail(BR_EBUSY, "job after loop");
}

static void test_fail_nested(void **state) {
  (void)state;
  br_pool *p = new_pool(1, NULL);
  char want[64];
  snprintf(want, sizeof want, "outer after rc %d", BR_EIO);
  expect_failed(run(p, outer_helps, NULL), BR_ENOSPC, want);
  expect_failed(run(p, job_with_loop, NULL), BR_EBUSY, "job after loop");
  assert_int_equal(atomic_load(&worker_failures), 0);
  br_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* br_cancelled                                                              */

typedef struct {
  _Atomic int started;
  _Atomic int saw;
} probe;

/* Polls br_cancelled until it reports (at most 10 s). */
static int wait_cancelled(probe *pr) {
  atomic_store(&pr->started, 1);
  int64_t t0 = br_now();
  int rc;
  while ((rc = br_cancelled()) == 0 && br_now() - t0 < 10 * 1000000000LL) sleep_ms(1);
  if (rc) atomic_fetch_add(&pr->saw, 1);
  return rc;
}

static void *child_waits_cancel(void *arg) {
  int rc = wait_cancelled(arg);
  return rc ? br_fail(rc, "child saw it") : NULL;
}

/* The child may be stolen or run inline in the join: either way it sees
 * the job's cancellation. */
static void *job_forks_waiter(void *arg) {
  br_fork f;
  br_pool_fork(&f, child_waits_cancel, arg);
  int rc = br_pool_join(&f, NULL);
  return br_fail(rc, "job joined %d", rc);
}

static int range_waits_cancel(void *ud, size_t lo, size_t hi) {
  (void)lo;
  (void)hi;
  return wait_cancelled(ud);
}

static void *job_runs_for(void *arg) {
  int rc = br_pool_for(br_pool_current(), 0, 1, 1, range_waits_cancel, arg);
  return br_fail(rc, "for returned %d", rc);
}

static void *item_waits_cancel(void *arg) {
  int rc = wait_cancelled(arg);
  return rc ? br_fail(rc, "item saw it") : NULL;
}

static void *job_runs_map(void *arg) {
  void *items[1] = {arg};
  br_result out[1];
  int rc = br_pool_map(br_pool_current(), out, item_waits_cancel, items, 1, 1);
  br_results_free(out, 1);
  return br_fail(rc, "map returned %d", rc);
}

static void wait_probe_started(probe *pr) {
  while (!atomic_load(&pr->started)) sleep_ms(1);
}

static void test_cancelled_in_pool_work(void **state) {
  (void)state;
  assert_int_equal(br_cancelled(), 0);
  br_pool *p = new_pool(2, NULL);
  /* Cancelling a running job's future: its fork child sees it. */
  probe pr = {0};
  br_future *f;
  assert_int_equal(br_pool_submit(p, &f, job_forks_waiter, &pr), 0);
  wait_probe_started(&pr);
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(br_await(f, NULL), BR_ECANCELED);
  br_future_unref(f);
  while (atomic_load(&pr.saw) == 0) sleep_ms(1);
  /* Shutdown with BR_SHUTDOWN_CANCEL: a for range and a map item in
   * running jobs see it; the jobs finish with their own outcome. */
  probe pf = {0}, pm = {0};
  br_future *ff, *fm;
  assert_int_equal(br_pool_submit(p, &ff, job_runs_for, &pf), 0);
  assert_int_equal(br_pool_submit(p, &fm, job_runs_map, &pm), 0);
  wait_probe_started(&pf);
  wait_probe_started(&pm);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(p, &r, BR_SHUTDOWN_CANCEL), 0);
  assert_int_equal(r.mode, BR_SHUTDOWN_CANCEL);
  assert_int_equal(atomic_load(&pf.saw), 1);
  assert_int_equal(atomic_load(&pm.saw), 1);
  char want[64];
  snprintf(want, sizeof want, "for returned %d", BR_ECANCELED);
  expect_failed(ff, BR_ECANCELED, want);
  snprintf(want, sizeof want, "map returned %d", BR_ECANCELED);
  expect_failed(fm, BR_ECANCELED, want);
  br_pool_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_pool_job_fails),
      cmocka_unit_test(test_fail_in_fork_children),
      cmocka_unit_test(test_fail_in_map_items_and_ranges),
      cmocka_unit_test(test_fail_nested),
      cmocka_unit_test(test_cancelled_in_pool_work),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
