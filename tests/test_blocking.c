/* SPDX-License-Identifier: MIT */
/* The blocking pool (br_to_thread): results and failures (br_fail in a
 * job), the loop keeps running while jobs block, work classes that cannot
 * starve each other, bounded queues, thread-creation failure as an error
 * (never a hang), cancellation of queued and running jobs, a job awaiting
 * its own future, idle reaping, shutdown and restart. */
#include <braid.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "exec/blocking.h"
#include "test_io_util.h"

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void *square(void *arg) {
  intptr_t x = (intptr_t)arg;
  nap_ms(20); /* a blocking call */
  return (void *)(x * x);
}

static void *quick(void *arg) { return arg; }

static void *failing(void *arg) {
  (void)arg;
  return br_fail(BR_EIO, "disk %d on fire", 3);
}

/* br_fail twice, then a result: the last failure wins, the result is
 * dropped. */
static void *failing_twice(void *arg) {
  (void)arg;
  br_fail(BR_EIO, "first");
  br_fail(BR_ENOSPC, "second %s", "try");
  return (void *)(intptr_t)42;
}

/* A positive code is not an error code: the job fails with BR_EFAILED. */
static void *failing_positive(void *arg) {
  (void)arg;
  return br_fail(5, "five");
}

/* Submit fn(arg) and require success. */
static br_future *submit(br_task_fn fn, void *arg) {
  br_future *f = NULL;
  assert_int_equal(br_to_thread(&f, fn, arg), 0);
  assert_non_null(f);
  return f;
}

static br_future *submit_class(br_blocking_class c, br_task_fn fn, void *arg) {
  br_future *f = NULL;
  assert_int_equal(br_to_thread_class(&f, c, fn, arg), 0);
  assert_non_null(f);
  return f;
}

static void *ticker(void *arg) {
  int *ticks = arg;
  for (int i = 0; i < 10; i++) {
    br_sleep_ms(2);
    (*ticks)++;
  }
  return NULL;
}

static void *body_basic(void *arg) {
  (void)arg;
  int ticks = 0;
  br_task *t;
  br_spawn(&t, ticker, &ticks, NULL);
  br_future *f[8];
  for (intptr_t i = 0; i < 8; i++) f[i] = submit(square, (void *)i);
  for (intptr_t i = 0; i < 8; i++) {
    void *v;
    assert_int_equal(br_await(f[i], &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    br_future_unref(f[i]);
  }
  /* The loop ran the ticker while the jobs blocked their threads. */
  assert_true(ticks >= 1);
  br_join(t, NULL);

  /* br_fail in a job: its future carries the code and the message. */
  br_future *bad = submit(failing, NULL);
  assert_int_equal(br_await(bad, NULL), BR_EIO);
  assert_string_equal(br_future_message(bad), "disk 3 on fire");
  br_future_unref(bad);
  bad = submit(failing_twice, NULL);
  void *v = (void *)1;
  assert_int_equal(br_await(bad, &v), BR_ENOSPC);
  assert_null(v);
  assert_string_equal(br_future_message(bad), "second try");
  br_future_unref(bad);
  bad = submit(failing_positive, NULL);
  assert_int_equal(br_await(bad, NULL), BR_EFAILED);
  assert_string_equal(br_future_message(bad), "five");
  br_future_unref(bad);
  /* Bad arguments are refused at once, nothing is queued. */
  br_future *none = (br_future *)&none;
  assert_int_equal(br_to_thread(&none, NULL, NULL), BR_EINVAL);
  assert_null(none);
  assert_int_equal(br_to_thread(NULL, quick, NULL), BR_EINVAL);
  none = (br_future *)&none;
  assert_int_equal(br_to_thread_class(&none, BR_BLOCKING_NCLASSES, quick, NULL), BR_EINVAL);
  assert_null(none);
  assert_int_equal(br_to_thread_class(&none, (br_blocking_class)-1, quick, NULL), BR_EINVAL);
  /* The pool is not shut down from a task: that would block the loop. */
  assert_int_equal(br_blocking_shutdown(), BR_EBUSY);
  return NULL;
}

static void test_basic(void **state) {
  (void)state;
  io_run(body_basic, NULL);
}

static void test_plain_thread_wait(void **state) {
  (void)state;
  br_future *f = submit(square, (void *)(intptr_t)9);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal((intptr_t)v, 81);
  br_future_unref(f);
  /* A job's failure, seen from a plain thread. */
  f = submit(failing, NULL);
  assert_int_equal(br_await(f, NULL), BR_EIO);
  assert_string_equal(br_future_message(f), "disk 3 on fire");
  br_future_unref(f);
}

/* --- the job context: br_cancelled, br_await, br_blocking_shutdown in a job */

static _Atomic(br_future *) own_future;
static atomic_int job_started;

/* Runs until its future is cancelled, then reports what br_cancelled said. */
static void *until_cancelled(void *arg) {
  (void)arg;
  int before = br_cancelled();
  atomic_store(&job_started, 1);
  int64_t give_up = br_now() + 10000000000LL;
  while (br_cancelled() == 0 && br_now() < give_up) nap_ms(1);
  atomic_store(&job_started, before == 0 && br_cancelled() == BR_ECANCELED ? 2 : 3);
  return (void *)(intptr_t)7;
}

/* Waits for its own future: that can never complete, so BR_EDEADLK. It
 * also may not shut the pool down (it would wait for itself), and it waits
 * for another job by blocking its thread. */
static void *await_self(void *arg) {
  (void)arg;
  br_future *mine;
  while (!(mine = atomic_load(&own_future))) nap_ms(1);
  int self_rc = br_await(mine, NULL);
  int shut_rc = br_blocking_shutdown();
  br_future *other;
  int other_rc = br_to_thread_class(&other, BR_BLOCKING_FILE, square, (void *)(intptr_t)5);
  void *v = NULL;
  if (other_rc == 0) {
    other_rc = br_await(other, &v);
    br_future_unref(other);
  }
  if (self_rc != BR_EDEADLK) return br_fail(BR_EIO, "self wait: %s", br_errname(self_rc));
  if (shut_rc != BR_EDEADLK) return br_fail(BR_EIO, "shutdown: %s", br_errname(shut_rc));
  if (other_rc != 0 || (intptr_t)v != 25) return br_fail(BR_EIO, "other job: %d", other_rc);
  return (void *)(intptr_t)1;
}

static void test_job_context(void **state) {
  (void)state;
  /* A running job learns that its future was cancelled; its late result
   * is dropped and the future says BR_ECANCELED. */
  atomic_store(&job_started, 0);
  br_future *f = submit(until_cancelled, NULL);
  while (atomic_load(&job_started) == 0) nap_ms(1);
  assert_int_equal(br_future_cancel(f), 0);
  void *v = (void *)1;
  assert_int_equal(br_await(f, &v), BR_ECANCELED);
  assert_null(v);
  br_future_unref(f);
  while (atomic_load(&job_started) == 1) nap_ms(1);
  assert_int_equal(atomic_load(&job_started), 2);

  atomic_store(&own_future, NULL);
  f = submit(await_self, NULL);
  atomic_store(&own_future, f);
  int rc = br_await(f, &v);
  if (rc) fprintf(stderr, "await_self: %s\n", br_future_message(f));
  assert_int_equal(rc, 0);
  assert_int_equal((intptr_t)v, 1);
  br_future_unref(f);

  /* Outside any job and task, br_fail has nobody to fail. */
  assert_null(br_fail(BR_EIO, "nobody"));
  assert_int_equal(br_cancelled(), 0);
}

/* --- classes --------------------------------------------------------------- */

static atomic_int released;

static void *slow_user(void *arg) {
  (void)arg;
  while (!atomic_load(&released)) nap_ms(1);
  return NULL;
}


static void *body_classes(void *arg) {
  (void)arg;
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 2});
  atomic_store(&released, 0);
  /* Saturate the user class: 2 running, 6 queued. */
  br_future *slow[8];
  for (int i = 0; i < 8; i++) slow[i] = submit(slow_user, NULL);
  br_blocking_stats st;
  for (int i = 0; i < 2000; i++) { /* threads start slowly under emulation */
    br_blocking_get_stats(BR_BLOCKING_USER, &st);
    if (st.threads == 2 && st.queued == 6) break;
    nap_ms(1);
  }
  assert_int_equal(st.threads, 2);
  assert_int_equal(st.queued, 6);
  /* File and DNS work is not stuck behind them. */
  int64_t t0 = br_now();
  br_future *ff = submit_class(BR_BLOCKING_FILE, quick, (void *)1);
  br_future *fd = submit_class(BR_BLOCKING_DNS, quick, (void *)2);
  void *v;
  assert_int_equal(br_await_until(ff, &v, br_deadline_ms(2000)), 0);
  assert_int_equal((intptr_t)v, 1);
  assert_int_equal(br_await_until(fd, &v, br_deadline_ms(2000)), 0);
  assert_int_equal((intptr_t)v, 2);
  /* Nor is a real lookup. */
  br_addr a;
  assert_true(br_resolve(&a, 1, "localhost", "1", AF_INET, br_deadline_ms(2000)) == 1);
  assert_true(br_now() - t0 < (getenv("BRAID_TEST_EMULATED") ? 10000000000LL : 1000000000LL));
  br_future_unref(ff);
  br_future_unref(fd);
  atomic_store(&released, 1);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(br_await(slow[i], NULL), 0);
    br_future_unref(slow[i]);
  }
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 64});
  return NULL;
}

static void test_classes(void **state) {
  (void)state;
  io_run(body_classes, NULL);
}

/* --- bounded queue, cancellation ------------------------------------------- */

static atomic_int ran;
static void *count_run(void *arg) {
  (void)arg;
  atomic_fetch_add(&ran, 1);
  return NULL;
}

static void *body_bounded(void *arg) {
  (void)arg;
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 1, .max_queue = 3});
  atomic_store(&released, 0);
  atomic_store(&ran, 0);
  br_future *busy = submit(slow_user, NULL);
  for (int i = 0; i < 2000; i++) { /* wait until it runs: the queue is empty */
    br_blocking_stats st0;
    br_blocking_get_stats(BR_BLOCKING_USER, &st0);
    if (st0.queued == 0 && st0.threads == 1 && st0.idle == 0) break;
    nap_ms(1);
  }
  br_future *q[3];
  for (int i = 0; i < 3; i++) q[i] = submit(count_run, NULL);
  /* The queue is full: refused at once, *out NULL. */
  br_future *over = (br_future *)&over;
  assert_int_equal(br_to_thread(&over, count_run, NULL), BR_EFULL);
  assert_null(over);
  br_blocking_stats full;
  br_blocking_get_stats(BR_BLOCKING_USER, &full);
  assert_true(full.rejected >= 1);
  /* Cancelling a queued job drops it: it never runs. */
  assert_int_equal(br_future_cancel(q[1]), 0);
  assert_int_equal(br_await(q[1], NULL), BR_ECANCELED);
  br_blocking_stats st;
  br_blocking_get_stats(BR_BLOCKING_USER, &st);
  assert_int_equal(st.queued, 2);
  atomic_store(&released, 1);
  assert_int_equal(br_await(busy, NULL), 0);
  assert_int_equal(br_await(q[0], NULL), 0);
  assert_int_equal(br_await(q[2], NULL), 0);
  assert_int_equal(atomic_load(&ran), 2);
  /* Cancelling a finished job says so. */
  assert_int_equal(br_future_cancel(q[0]), BR_EALREADY);
  for (int i = 0; i < 3; i++) br_future_unref(q[i]);
  br_future_unref(busy);
  br_blocking_set_limits(BR_BLOCKING_USER,
                         &(br_blocking_limits){.max_threads = 64, .max_queue = 65536});
  return NULL;
}

static void test_bounded(void **state) {
  (void)state;
  io_run(body_bounded, NULL);
}

/* A task awaiting a job is cancelled: it returns at once, the job finishes
 * on its own and its result is dropped (no leak under ASan). */
static void *await_slow(void *arg) {
  (void)arg;
  br_future *f = submit(square, (void *)(intptr_t)3);
  int rc = br_await(f, NULL);
  br_future_unref(f);
  return (void *)(intptr_t)rc;
}

static void *body_cancel_waiter(void *arg) {
  (void)arg;
  br_task *t;
  br_spawn(&t, await_slow, NULL, NULL);
  br_sleep_ms(2);
  br_cancel(t);
  void *v;
  br_join(t, &v);
  assert_int_equal((intptr_t)v, BR_ECANCELED);
  return NULL;
}

static void test_cancel_waiter(void **state) {
  (void)state;
  io_run(body_cancel_waiter, NULL);
  assert_int_equal(br_blocking_shutdown(), 0); /* the orphaned job completes first */
}

/* --- jobs that call br_to_thread and wait, deeper than the threads -------- */

/* Link n of a chain: queue link n - 1 and wait for it. With one thread
 * every link but the first waits behind the one that waits for it. */
static void *nested_link(void *arg) {
  intptr_t n = (intptr_t)arg;
  if (n == 0) return (void *)0;
  br_future *f;
  int rc = br_to_thread(&f, nested_link, (void *)(n - 1));
  if (rc) return br_fail(rc, "submit at link %ld", (long)n);
  void *v = NULL;
  rc = br_await(f, &v);
  br_future_unref(f);
  if (rc) return br_fail(rc, "await at link %ld", (long)n);
  return (void *)((intptr_t)v + 1);
}

static void test_nested_wait_beyond_threads(void **state) {
  (void)state;
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 1});
  br_blocking_stats st0, st1;
  assert_int_equal(br_blocking_get_stats(BR_BLOCKING_USER, &st0), 0);
  br_future *f = submit(nested_link, (void *)(intptr_t)50);
  void *v = NULL;
  /* Microseconds of work: the minute only catches the hang (every thread
   * waiting for a job queued behind it). */
  assert_int_equal(br_future_wait_for(f, &v, 60000), 0);
  assert_int_equal((intptr_t)v, 50);
  br_future_unref(f);
  assert_int_equal(br_blocking_shutdown(), 0); /* every count settled */
  assert_int_equal(br_blocking_get_stats(BR_BLOCKING_USER, &st1), 0);
  assert_int_equal(st1.completed - st0.completed, 51);
  assert_int_equal(st1.queued, 0);
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 64});
}

/* --- thread creation failure, reaping, shutdown ---------------------------- */

static void test_thread_failure(void **state) {
  (void)state;
  assert_int_equal(br_blocking_shutdown(), 0); /* no thread left anywhere */
  br__blocking_fail_thread_creates(1000);
  int64_t t0 = br_now();
  br_future *f = (br_future *)&f;
  /* Refused at once, never queued forever. */
  assert_int_equal(br_to_thread(&f, quick, NULL), BR_EAGAIN);
  assert_null(f);
  assert_true(br_now() - t0 < 1000000000);
  br__blocking_fail_thread_creates(0);
  f = submit(quick, (void *)5);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal((intptr_t)v, 5);
  br_future_unref(f);
}

static void test_reap_and_shutdown(void **state) {
  (void)state;
  br_blocking_set_limits(BR_BLOCKING_FILE, &(br_blocking_limits){.idle_ms = 30});
  br_future *f[4];
  for (int i = 0; i < 4; i++) f[i] = submit_class(BR_BLOCKING_FILE, square, NULL);
  for (int i = 0; i < 4; i++) {
    br_await(f[i], NULL);
    br_future_unref(f[i]);
  }
  br_blocking_stats st;
  br_blocking_get_stats(BR_BLOCKING_FILE, &st);
  assert_true(st.threads >= 1);
  nap_ms(200);
  br_blocking_get_stats(BR_BLOCKING_FILE, &st);
  assert_int_equal(st.threads, 0);
  br_blocking_set_limits(BR_BLOCKING_FILE, &(br_blocking_limits){.idle_ms = 10000});
  /* Shutdown lets running jobs finish and joins everything; afterwards the
   * pool starts again on demand. */
  br_future *g = submit(square, (void *)(intptr_t)4);
  assert_int_equal(br_blocking_shutdown(), 0);
  assert_true(br_future_done(g));
  br_future_unref(g);
  br_blocking_get_stats(BR_BLOCKING_USER, &st);
  assert_int_equal(st.threads, 0);
  g = submit(quick, NULL);
  assert_int_equal(br_await(g, NULL), 0);
  br_future_unref(g);
  assert_int_equal(br_blocking_set_limits(BR_BLOCKING_NCLASSES, &(br_blocking_limits){0}), BR_EINVAL);
  assert_int_equal(br_blocking_set_limits(BR_BLOCKING_USER, NULL), BR_EINVAL);
  assert_int_equal(br_blocking_get_stats(BR_BLOCKING_USER, NULL), BR_EINVAL);
  assert_int_equal(br_blocking_get_stats(BR_BLOCKING_NCLASSES, &st), BR_EINVAL);
}

/* --- stress: many submitters, loops and plain threads ---------------------- */

static void *add_one(void *arg) { return (void *)((intptr_t)arg + 1); }

static void *loop_submitter(void *arg) {
  (void)arg;
  long n = br_test_scaled(3000);
  for (long i = 0; i < n; i++) {
    br_future *f;
    if (br_to_thread(&f, add_one, (void *)(intptr_t)i) != 0) return br_fail(BR_EIO, "submit %ld", i);
    void *v;
    if (br_await(f, &v) != 0 || (intptr_t)v != i + 1) return br_fail(BR_EIO, "job %ld", i);
    br_future_unref(f);
  }
  return NULL;
}

static void *thread_main(void *arg) {
  (void)arg;
  void *res;
  return (void *)(intptr_t)br_run(&res, loop_submitter, NULL);
}

/* --- fork: the child gets a working pool without the parent's work ------- */

static int gate[2];         /* the held job waits for a byte on gate[0] */
static atomic_int ran_here; /* set by the queued job, in whichever process runs it */

static void *held(void *arg) {
  (void)arg;
  char c;
  ssize_t n = read(gate[0], &c, 1);
  return (void *)(intptr_t)n;
}

static void *mark(void *arg) {
  (void)arg;
  atomic_store(&ran_here, 1);
  return NULL;
}

static void child_after_fork(void *arg) {
  (void)arg;
  /* A job of its own runs (fresh locks, fresh threads) ... */
  br_future *f = submit(square, (void *)(intptr_t)6);
  void *v = NULL;
  int rc = br_await(f, &v);
  br_future_unref(f);
  if (rc != 0 || (intptr_t)v != 36) _exit(2);
  /* ... and the parent's queued job never does: it is the parent's. */
  if (atomic_load(&ran_here)) _exit(3);
  _exit(0);
}

static void test_fork_child(void **state) {
  (void)state;
  /* qemu-user (7.2) aborts a forked child of a threaded process as soon as
   * the child starts a thread ("cpu == current_cpu"); ThreadSanitizer kills
   * it ("starting new threads after multi-threaded fork is not supported"). */
  if (br_test_emulated()) {
    skip();
    return;
  }
#ifdef BRAID_TSAN
  skip();
  return;
#endif
  assert_int_equal(pipe(gate), 0);
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 1});
  br_future *h = submit(held, NULL), *m = submit(mark, NULL); /* m waits behind h */
  br_child_result r;
  int run_rc = br_test_run_child(child_after_fork, NULL, 30000, &r);
  int ran_before = atomic_load(&ran_here);
  /* Let the held job go and the limit back before any check can fail, so a
   * failure here does not leave the pool's only thread held for the tests
   * after this one. */
  ssize_t wrote = write(gate[1], "x", 1);
  int h_rc = br_await(h, NULL), m_rc = br_await(m, NULL);
  br_blocking_set_limits(BR_BLOCKING_USER, &(br_blocking_limits){.max_threads = 64});
  br_future_unref(h);
  br_future_unref(m);
  close(gate[0]);
  close(gate[1]);
  assert_int_equal(run_rc, 0);
  if (!r.exited || r.exit_code != 0) fprintf(stderr, "child: %s\n", r.err ? r.err : "");
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  br_child_result_free(&r);
  assert_int_equal(ran_before, 0); /* still queued here while the child ran */
  assert_int_equal(wrote, 1);
  assert_int_equal(h_rc, 0);
  assert_int_equal(m_rc, 0);
  assert_int_equal(atomic_load(&ran_here), 1); /* the parent ran it */
}

static void test_stress(void **state) {
  (void)state;
  pthread_t th[3];
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, thread_main, NULL);
  long n = br_test_scaled(3000);
  for (long i = 0; i < n; i++) {
    br_future *f = submit_class(BR_BLOCKING_FILE, add_one, (void *)(intptr_t)i);
    void *v;
    assert_int_equal(br_await(f, &v), 0);
    assert_int_equal((intptr_t)v, i + 1);
    br_future_unref(f);
  }
  for (int i = 0; i < 3; i++) {
    void *v;
    pthread_join(th[i], &v);
    assert_int_equal((intptr_t)v, 0);
  }
  assert_int_equal(br_blocking_shutdown(), 0);
}

int main(void) {
  if (getenv("BRAID_TEST_FILTER")) cmocka_set_test_filter(getenv("BRAID_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_basic),          cmocka_unit_test(test_plain_thread_wait),
    cmocka_unit_test(test_job_context),
    cmocka_unit_test(test_classes),        cmocka_unit_test(test_bounded),
    cmocka_unit_test(test_cancel_waiter),  cmocka_unit_test(test_nested_wait_beyond_threads),
    cmocka_unit_test(test_thread_failure),
    cmocka_unit_test(test_reap_and_shutdown), cmocka_unit_test(test_fork_child),
    cmocka_unit_test(test_stress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
