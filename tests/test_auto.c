/* SPDX-License-Identifier: MIT */
/* test_auto — the auto executor routes each function by what it measured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <unistd.h>

#include <braid.h>
#include <braid/auto.h>
#include <braid/procpool.h>

#include "test_util.h"

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Burn ms of CPU time (not wall time: a busy machine stretches it). */
static void *compute(void *arg) {
  int64_t until = thread_cpu_ns() + (int64_t)(intptr_t)arg * 1000000;
  volatile uint64_t x = 1;
  while (thread_cpu_ns() < until)
    for (int i = 0; i < 10000; i++) x = x * 6364136223846793005u + 1;
  return arg;
}

static void *wait_io(void *arg) {
  struct timespec ts = {0, (long)(intptr_t)arg * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  return arg;
}

static void *tiny(void *arg) { return (void *)((intptr_t)arg + 1); }

static void *failing(void *arg) {
  (void)arg;
  return br_fail(BR_EIO, "disk %d is on fire", 3);
}

/* Computes while arg says so, then starts to block. */
static atomic_int changes_to_blocking;
static void *changing(void *arg) {
  return atomic_load(&changes_to_blocking) ? wait_io(arg) : compute(arg);
}

static void *call(br_task_fn fn, void *arg, int *err) {
  br_future *f;
  assert_int_equal(br_auto_submit(&f, fn, arg), 0);
  void *v = NULL;
  *err = br_await(f, &v);
  br_future_unref(f);
  return v;
}

static void submit_n(br_task_fn fn, void *arg, int n) {
  for (int i = 0; i < n; i++) {
    int err;
    assert_ptr_equal(call(fn, arg, &err), fn == tiny ? (void *)((intptr_t)arg + 1) : arg);
    assert_int_equal(err, 0);
  }
}

static void routes_by_measurement(void **state) {
  (void)state;
  submit_n(compute, (void *)5, 6);
  assert_int_equal(br_auto_route_of(compute), BR_AUTO_CPU_POOL);
  submit_n(wait_io, (void *)5, 6);
  assert_int_equal(br_auto_route_of(wait_io), BR_AUTO_BLOCKING);
  submit_n(tiny, (void *)41, 20);
  assert_int_equal(br_auto_route_of(tiny), BR_AUTO_INLINE);

  /* An inline call is complete when submit returns. */
  br_future *f;
  assert_int_equal(br_auto_submit(&f, tiny, (void *)1), 0);
  assert_true(br_future_done(f));
  assert_ptr_equal(br_future_value(f), (void *)2);
  br_future_unref(f);

  char line[256];
  int n = br_auto_explain(line, sizeof line, compute);
  assert_true(n > 0 && (size_t)n < sizeof line);
  assert_non_null(strstr(line, "CPU pool"));
  br_auto_explain(line, sizeof line, wait_io);
  assert_non_null(strstr(line, "blocking pool"));
  br_auto_explain(line, sizeof line, tiny);
  assert_non_null(strstr(line, "inline"));
  assert_int_equal(br_auto_explain(NULL, 10, tiny), BR_EINVAL);
  assert_int_equal(br_auto_shutdown(), 0);
  assert_int_equal(br_auto_route_of(compute), BR_AUTO_MEASURING);
}

static void follows_a_change(void **state) {
  (void)state;
  atomic_store(&changes_to_blocking, 0);
  submit_n(changing, (void *)5, 5);
  assert_int_equal(br_auto_route_of(changing), BR_AUTO_CPU_POOL);
  atomic_store(&changes_to_blocking, 1);
  int calls = 0;
  while (br_auto_route_of(changing) != BR_AUTO_BLOCKING && calls < 20) {
    submit_n(changing, (void *)5, 1);
    calls++;
  }
  assert_int_equal(br_auto_route_of(changing), BR_AUTO_BLOCKING);
  assert_true(calls <= 8);
  assert_int_equal(br_auto_shutdown(), 0);
}

static void failures_travel(void **state) {
  (void)state;
  for (int i = 0; i < 12; i++) { /* measuring, then inline (it is short) */
    br_future *f;
    assert_int_equal(br_auto_submit(&f, failing, NULL), 0);
    assert_int_equal(br_await(f, NULL), BR_EIO);
    assert_string_equal(br_future_message(f), "disk 3 is on fire");
    br_future_unref(f);
  }
  assert_int_equal(br_auto_route_of(failing), BR_AUTO_INLINE);
  br_future *f;
  assert_int_equal(br_auto_submit(NULL, tiny, NULL), BR_EINVAL);
  assert_int_equal(br_auto_submit(&f, NULL, NULL), BR_EINVAL);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* From a task: computing calls never run on the loop, so a ticker keeps
 * ticking while they run. */
static atomic_int ticks;
static void *ticker(void *arg) {
  (void)arg;
  while (br_sleep_ms(2) == 0) atomic_fetch_add(&ticks, 1);
  return NULL;
}

static void *main_task(void *arg) {
  (void)arg;
  br_task *t;
  if (br_spawn(&t, ticker, NULL, NULL)) return br_fail(BR_EFAILED, "spawn");
  for (int i = 0; i < 8; i++) {
    br_future *f;
    if (br_auto_submit(&f, compute, (void *)20)) return br_fail(BR_EFAILED, "submit");
    int before = atomic_load(&ticks);
    int rc = br_await(f, NULL);
    br_future_unref(f);
    if (rc) return br_fail(rc, "await");
    /* 20 ms of computing elsewhere: the 2 ms ticker ran meanwhile. */
    if (atomic_load(&ticks) <= before) return br_fail(BR_EFAILED, "the loop was blocked");
  }
  if (br_auto_route_of(compute) != BR_AUTO_CPU_POOL) return br_fail(BR_EFAILED, "route");
  br_task_close(t);
  return NULL;
}

static void from_a_task(void **state) {
  (void)state;
  int rc = br_run(NULL, main_task, NULL);
  assert_int_equal(rc, 0);
  assert_int_equal(br_auto_shutdown(), 0);
}


/* A burst of calls of a function never seen: the first is measured, the
 * others wait for that measurement and then run where it says (inline for
 * this one), and every one of them completes with its own value. */
static void *tiny2(void *arg) { return (void *)((intptr_t)arg * 2); }

static void burst_while_measuring(void **state) {
  (void)state;
  enum { N = 2000 };
  static br_future *f[N];
  for (int i = 0; i < N; i++) assert_int_equal(br_auto_submit(&f[i], tiny2, (void *)(intptr_t)i), 0);
  for (int i = 0; i < N; i++) {
    void *v = NULL;
    assert_int_equal(br_await(f[i], &v), 0);
    assert_ptr_equal(v, (void *)(intptr_t)(2 * i));
    br_future_unref(f[i]);
  }
  assert_int_equal(br_auto_route_of(tiny2), BR_AUTO_INLINE);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* A burst of calls of a new function that sleeps: the calls held behind
 * the first are let go after 0.2 ms, by themselves (no later call comes to
 * let them go), and run beside it: the burst takes one call's time, not
 * two. */
static void burst_of_sleepers(void **state) {
  (void)state;
  enum { N = 4 };
  br_future *f[N];
  int64_t t0 = br_now();
  for (int i = 0; i < N; i++) assert_int_equal(br_auto_submit(&f[i], wait_io, (void *)300), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(br_await(f[i], NULL), 0);
    br_future_unref(f[i]);
  }
  int64_t took = br_now() - t0;
  if (took >= 550000000) fail_msg("the burst took %lld ms", (long long)(took / 1000000));
  assert_int_equal(br_auto_route_of(wait_io), BR_AUTO_BLOCKING);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* Inline from a task: the call runs on the task, its br_fail fails the
 * call's future and leaves the task's own outcome alone (both ways: a task
 * that had failed before stays failed with its own message). */
static void *inline_task(void *arg) {
  (void)arg;
  for (int i = 0; i < 30; i++) {
    br_future *f;
    if (br_auto_submit(&f, failing, NULL)) return br_fail(BR_EFAILED, "submit");
    int rc = br_await(f, NULL);
    bool ok = rc == BR_EIO && strcmp(br_future_message(f), "disk 3 is on fire") == 0;
    br_future_unref(f);
    if (!ok) return br_fail(BR_EFAILED, "call %d: %d", i, rc);
  }
  if (br_auto_route_of(failing) != BR_AUTO_INLINE) return br_fail(BR_EFAILED, "not inline");
  br_future *f;
  for (int i = 0; i < 30; i++) {
    if (br_auto_submit(&f, tiny, (void *)1)) return br_fail(BR_EFAILED, "submit");
    (void)br_await(f, NULL);
    br_future_unref(f);
  }
  if (br_auto_submit(&f, tiny, (void *)1)) return br_fail(BR_EFAILED, "submit");
  bool done = br_future_done(f) && br_future_value(f) == (void *)2;
  br_future_unref(f);
  if (!done) return br_fail(BR_EFAILED, "an inline call was not complete at return");
  /* The task's own failure survives an inline call that fails. */
  br_fail(BR_ERANGE, "the task's own");
  if (br_auto_submit(&f, failing, NULL)) return NULL;
  br_future_unref(f);
  return NULL;
}

static void *inline_outer(void *arg) {
  br_result *r = arg;
  br_task *t;
  if (br_spawn(&t, inline_task, NULL, NULL)) return br_fail(BR_EFAILED, "spawn");
  (void)br_join_result(t, r);
  return NULL;
}

static void inline_from_a_task(void **state) {
  (void)state;
  br_result r = {0};
  assert_int_equal(br_run(NULL, inline_outer, &r), 0);
  if (r.err != BR_ERANGE) fail_msg("the task: %d %s", r.err, r.msg ? r.msg : "");
  assert_string_equal(r.msg, "the task's own");
  br_results_free(&r, 1);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* --- registered jobs ------------------------------------------------------ */

/* Burns 5 ms of CPU, answers with the pid of the process it ran in. */
static int pid_job_fn(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  (void)compute((void *)5);
  int64_t pid = getpid();
  return br_bytes_set(out, &pid, sizeof pid);
}
BR_JOB(auto_pid, pid_job_fn);

static int bad_job_fn(const void *in, size_t len, br_bytes *out) {
  (void)out;
  br_fail(BR_EIO, "job saw %zu bytes: %.*s", len, (int)len, (const char *)in);
  return BR_EIO;
}
BR_JOB(auto_bad, bad_job_fn);

static int64_t job_pid(const br_auto_opts *o) {
  br_future *f;
  assert_int_equal(br_auto_submit_job(&f, "auto_pid", "x", 1, o), 0);
  void *v = NULL;
  assert_int_equal(br_await(f, &v), 0);
  br_bytes *b = v;
  assert_int_equal(b->len, sizeof(int64_t));
  int64_t pid;
  memcpy(&pid, b->data, sizeof pid);
  br_bytes_free(b);
  br_future_unref(f);
  return pid;
}

static void jobs_in_process(void **state) {
  (void)state;
  for (int i = 0; i < 10; i++) assert_int_equal(job_pid(NULL), getpid());
  assert_int_equal(br_auto_route_of_job("auto_pid"), BR_AUTO_CPU_POOL);

  for (int i = 0; i < 12; i++) {
    br_future *f;
    assert_int_equal(br_auto_submit_job(&f, "auto_bad", "abc", 3, NULL), 0);
    assert_int_equal(br_await(f, NULL), BR_EIO);
    assert_string_equal(br_future_message(f), "job saw 3 bytes: abc");
    br_future_unref(f);
  }
  br_future *f;
  assert_int_equal(br_auto_submit_job(&f, "no_such_job", NULL, 0, NULL), BR_ENOJOB);
  assert_null(f);
  assert_int_equal(br_auto_submit_job(&f, NULL, NULL, 0, NULL), BR_EINVAL);
  assert_int_equal(br_auto_submit_job(&f, "auto_pid", NULL, 4, NULL), BR_EINVAL);
  assert_int_equal(br_auto_submit_job(NULL, "auto_pid", NULL, 0, NULL), BR_EINVAL);
  assert_int_equal(br_auto_route_of_job("no_such_job"), BR_AUTO_MEASURING);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* With processes allowed, a computing job of 5 ms goes to the process pool:
 * the pid it answers with is another process's. One call in eight still
 * runs here, measured. */
static void jobs_to_processes(void **state) {
  (void)state;
  if (br_test_emulated()) br_test_skip("no exec of /proc/self/exe under qemu");
  br_auto_opts o = {.allow_processes = true};
  /* Until a process-pool round trip has been measured to pay, calls run
   * here or go there to be measured; how many that takes depends on how
   * busy the machine is (a round trip that waited for a core does not
   * pay), so the test waits for the measured route, not for a count. */
  int here = 0, away = 0, calls = 0;
  char line[256];
  for (;;) {
    assert_true(br_auto_explain_job(line, sizeof line, "auto_pid") > 0);
    if (strstr(line, "-> process pool") && strstr(line, "to a process")) break;
    if (calls == 400) fail_msg("not routed to processes after %d calls: %s", calls, line);
    if (job_pid(&o) != getpid()) away++;
    calls++;
  }
  assert_true(away >= 1); /* a round trip was measured */
  /* Routed there: all but the one call in eight sampled here go away. */
  away = 0;
  for (int i = 0; i < 32; i++) {
    if (job_pid(&o) == getpid()) here++;
    else away++;
  }
  assert_true(br_auto_explain_job(line, sizeof line, "auto_pid") > 0);
  if (br_auto_route_of_job("auto_pid") != BR_AUTO_PROCPOOL || away < 24)
    fail_msg("once routed: %d here, %d away: %s", here, away, line);
  assert_true(here >= 1); /* the route keeps being sampled in this process */
  assert_non_null(strstr(line, "process pool"));
  assert_non_null(strstr(line, "to a process"));
  /* Not allowed any more: back in this process. */
  for (int i = 0; i < 4; i++) assert_int_equal(job_pid(NULL), getpid());
  assert_int_equal(br_auto_route_of_job("auto_pid"), BR_AUTO_CPU_POOL);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* A function that waits, counting the calls whose body has finished. */
static atomic_int waits_done;
static void *counted_wait(void *arg) {
  wait_io(arg);
  atomic_fetch_add(&waits_done, 1);
  return arg;
}

/* A waiting function that shuts the executor down from inside its call. */
static void *shuts_down(void *arg) {
  wait_io(arg);
  return (void *)(intptr_t)br_auto_shutdown();
}

static void shutdown_waits_for_calls(void **state) {
  (void)state;
  atomic_store(&waits_done, 0);
  submit_n(counted_wait, (void *)5, 3);
  assert_int_equal(br_auto_route_of(counted_wait), BR_AUTO_BLOCKING);
  enum { N = 4 };
  br_future *f[N];
  for (int i = 0; i < N; i++) assert_int_equal(br_auto_submit(&f[i], counted_wait, (void *)50), 0);
  /* They run on the blocking pool: shutdown lets them finish before it
   * forgets what they measure. */
  assert_int_equal(br_auto_shutdown(), 0);
  assert_int_equal(atomic_load(&waits_done), 3 + N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(br_await(f[i], NULL), 0);
    br_future_unref(f[i]);
  }
  /* Nothing they measured survived the shutdown. */
  assert_int_equal(br_auto_route_of(counted_wait), BR_AUTO_MEASURING);

  /* From inside a call, on the CPU pool (the first call measures it there)
   * and then on the blocking pool: it would wait for itself. */
  for (int i = 0; i < 4; i++) {
    br_future *g;
    assert_int_equal(br_auto_submit(&g, shuts_down, (void *)5), 0);
    void *v = NULL;
    assert_int_equal(br_await(g, &v), 0);
    assert_int_equal((int)(intptr_t)v, BR_EDEADLK);
    br_future_unref(g);
  }
  assert_int_equal(br_auto_route_of(shuts_down), BR_AUTO_BLOCKING);
  assert_int_equal(br_auto_shutdown(), 0);
}

/* More distinct functions than the executor keeps measurements for: 1200,
 * each adding its own number. */
#define MANY_FN(n) \
  static void *many_##n(void *a) { return (void *)((intptr_t)a + n); }
#define MANY_FN10(n) MANY_FN(n##0) MANY_FN(n##1) MANY_FN(n##2) MANY_FN(n##3) MANY_FN(n##4) \
  MANY_FN(n##5) MANY_FN(n##6) MANY_FN(n##7) MANY_FN(n##8) MANY_FN(n##9)
#define MANY_FN100(n) MANY_FN10(n##0) MANY_FN10(n##1) MANY_FN10(n##2) MANY_FN10(n##3) \
  MANY_FN10(n##4) MANY_FN10(n##5) MANY_FN10(n##6) MANY_FN10(n##7) MANY_FN10(n##8) MANY_FN10(n##9)
MANY_FN100(1) MANY_FN100(2) MANY_FN100(3) MANY_FN100(4) MANY_FN100(5) MANY_FN100(6)
MANY_FN100(7) MANY_FN100(8) MANY_FN100(9) MANY_FN100(10) MANY_FN100(11) MANY_FN100(12)
#define MANY_REF(n) many_##n,
#define MANY_REF10(n) MANY_REF(n##0) MANY_REF(n##1) MANY_REF(n##2) MANY_REF(n##3) MANY_REF(n##4) \
  MANY_REF(n##5) MANY_REF(n##6) MANY_REF(n##7) MANY_REF(n##8) MANY_REF(n##9)
#define MANY_REF100(n) MANY_REF10(n##0) MANY_REF10(n##1) MANY_REF10(n##2) MANY_REF10(n##3) \
  MANY_REF10(n##4) MANY_REF10(n##5) MANY_REF10(n##6) MANY_REF10(n##7) MANY_REF10(n##8) \
  MANY_REF10(n##9)
static const br_task_fn many[] = {
    MANY_REF100(1) MANY_REF100(2) MANY_REF100(3) MANY_REF100(4) MANY_REF100(5) MANY_REF100(6)
    MANY_REF100(7) MANY_REF100(8) MANY_REF100(9) MANY_REF100(10) MANY_REF100(11) MANY_REF100(12)};
#define NMANY (sizeof many / sizeof many[0])

static void table_full(void **state) {
  (void)state;
  /* Every call gets its own function's answer, whether or not that function
   * found a place in the table. */
  size_t unmeasured = 0;
  for (size_t i = 0; i < NMANY; i++) {
    int err;
    void *v = call(many[i], (void *)0, &err);
    assert_int_equal(err, 0);
    assert_ptr_equal(v, (void *)(intptr_t)(100 + i));
    /* Where its next call goes: the first ones were measured, the rest
     * have no slot and go to the blocking pool, and say so. */
    br_auto_route r = br_auto_route_of(many[i]);
    char buf[160];
    assert_true(br_auto_explain(buf, sizeof buf, many[i]) > 0);
    if (strstr(buf, "table of 1024 functions is full")) {
      unmeasured++;
      assert_int_equal(r, BR_AUTO_BLOCKING);
    } else {
      assert_int_not_equal(r, BR_AUTO_MEASURING);
    }
  }
  assert_true(unmeasured >= NMANY - 1024);
  /* A registered job still runs (in this process, on the blocking pool). */
  assert_int_equal(job_pid(NULL), getpid());
  assert_int_equal(br_auto_route_of_job("auto_pid"), BR_AUTO_BLOCKING);
  assert_int_equal(br_auto_shutdown(), 0);
  /* A shutdown empties the table: measured again from the first call. */
  assert_int_equal(br_auto_route_of(many[NMANY - 1]), BR_AUTO_MEASURING);
  int err;
  assert_ptr_equal(call(many[NMANY - 1], (void *)0, &err), (void *)(intptr_t)(100 + NMANY - 1));
  char buf[160];
  assert_true(br_auto_explain(buf, sizeof buf, many[NMANY - 1]) > 0);
  assert_null(strstr(buf, "full"));
  assert_int_not_equal(br_auto_route_of(many[NMANY - 1]), BR_AUTO_MEASURING);
  assert_int_equal(br_auto_shutdown(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(routes_by_measurement),
      cmocka_unit_test(follows_a_change),
      cmocka_unit_test(failures_travel),
      cmocka_unit_test(shutdown_waits_for_calls),
      cmocka_unit_test(from_a_task),
      cmocka_unit_test(burst_while_measuring),
      cmocka_unit_test(burst_of_sleepers),
      cmocka_unit_test(inline_from_a_task),
      cmocka_unit_test(jobs_in_process),
      cmocka_unit_test(jobs_to_processes),
      /* Last: it fills the table, which only a shutdown empties. */
      cmocka_unit_test(table_full),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
