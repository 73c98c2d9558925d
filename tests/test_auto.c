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

#include <braid.h>
#include <braid/auto.h>

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(routes_by_measurement),
      cmocka_unit_test(follows_a_change),
      cmocka_unit_test(failures_travel),
      cmocka_unit_test(from_a_task),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
