/* SPDX-License-Identifier: MIT */
/* test_accounting — per-task accounting: run time of a busy task matches its
 * busy time, a sleeping task's run time is far below its wall time, CPU time
 * in precise mode, switch counts, creation/finish stamps, each mode (off,
 * fast, precise, BRAID_ACCOUNTING) and the errors of br_task_get_stats. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))
#define MS 1000000LL

/* A sleeping task uses microseconds of CPU. Under the sanitizers a task's
 * first switch costs milliseconds (TSan creates its fiber state then), and
 * that is charged to the task. */
#if defined(BRAID_TSAN) || defined(BRAID_ASAN)
#define SLEEPER_MAX_RUN_US 25000
#else
#define SLEEPER_MAX_RUN_US 5000
#endif

static void busy_ms(int ms) {
  int64_t end = br_now() + (int64_t)ms * MS;
  while (br_now() < end) {
  }
}

/* Burn `ms` of this thread's CPU time (the machine may be shared: wall time
 * would include time the thread was not scheduled). */
static void busy_cpu_ms(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  int64_t end = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (int64_t)ms * MS;
  for (;;) {
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec >= end) break;
  }
}

static bool cpu_busy; /* busy tasks burn CPU time rather than wall time */

static void *busy_task(void *arg) {
  if (cpu_busy)
    busy_cpu_ms((int)PI(arg));
  else
    busy_ms((int)PI(arg));
  return NULL;
}

static void *sleepy_task(void *arg) {
  int rc = br_sleep_ms(PI(arg));
  return rc ? br_fail(rc, "sleep") : NULL;
}

static void *yields_ten(void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++)
    if (br_yield()) return br_fail(BR_EIO, "yield");
  return NULL;
}

/* Busy in slices, yielding between them: time is charged to the right task. */
static void *sliced_busy(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) {
    busy_ms(20);
    if (br_yield()) return br_fail(BR_EIO, "yield");
  }
  return NULL;
}

typedef struct {
  br_accounting mode;
} acct_arg;

static void *m_accounting(void *arg) {
  acct_arg *a = arg;
  bool precise = a->mode == BR_ACCT_PRECISE;
  for (int k = 0; k < 2; k++) {
    br_spawn_opts o = {.flags = k ? BR_SPAWN_COMPACT : 0};
    br_task *busy, *sleepy, *y;
    int64_t t0 = br_now();
    T_OK(br_spawn(&busy, busy_task, IP(50), &o));
    T_OK(br_spawn(&sleepy, sleepy_task, IP(50), &o));
    T_OK(br_spawn(&y, yields_ten, NULL, &o));
    br_task_stats st;
    T_OK(br_task_get_stats(busy, &st));
    T_EQ(st.finished, 0); /* alive */
    T_EQ(st.switches, 0); /* not run yet */
    /* br_now() at spawn. The stamps come from the cycle counter converted
     * with a calibrated rate, so allow a little drift (1 ms). */
    int64_t t1 = br_now();
    TF_CHECK_(NULL, st.created >= t0 - MS && st.created <= t1 + MS,
              "created %lld ns after the br_now() before spawn, %lld ns after the one after it",
              (long long)(st.created - t0), (long long)(st.created - t1));
    T_OK(br_await(br_task_future(busy), NULL));
    T_OK(br_await(br_task_future(sleepy), NULL));
    T_OK(br_await(br_task_future(y), NULL));

    /* The busy task: its run time is its 50 ms of work. */
    T_OK(br_task_get_stats(busy, &st));
    if (precise) {
      /* 50 ms of CPU burnt; its run (wall) time is at least that. */
      T_RANGE(st.cpu_ns / MS, 49, 70);
      T_TRUE(st.run_ns + MS >= st.cpu_ns);
      /* Run time is read from the cycle counter, wall stamps from the
       * monotonic clock: allow the calibration's error and the few
       * microseconds of bookkeeping after the finish stamp. */
      TF_CHECK_(NULL, st.run_ns <= (st.finished - st.created) * 102 / 100 + 2 * MS,
                "run %lld ns > wall %lld ns (created %lld, finished %lld)", (long long)st.run_ns,
                (long long)(st.finished - st.created), (long long)st.created, (long long)st.finished);
    } else {
      /* 50 ms of wall time spun; a busy machine may add the time the
       * thread was preempted around the spin, never more than its life. */
      T_TRUE(st.run_ns >= 49 * MS);
      TF_CHECK_(NULL, st.run_ns <= (st.finished - st.created) * 102 / 100 + 2 * MS,
                "run %lld ns > wall %lld ns", (long long)st.run_ns,
                (long long)(st.finished - st.created));
      T_EQ(st.cpu_ns, st.run_ns);
    }
    T_TRUE(st.finished >= st.created + 50 * MS);
    T_EQ(st.switches, 1);

    /* The sleeper: 50 ms of wall time, almost no run time. Its run time is
     * wall time on the loop, which a busy machine stretches by preempting
     * the thread (milliseconds each time); what holds however busy the
     * machine is: the 50 ms parked are not in it, and it used almost no CPU. */
    T_OK(br_task_get_stats(sleepy, &st));
    T_TRUE(st.finished - st.created >= 50 * MS);
    TF_CHECK_(NULL, st.run_ns <= st.finished - st.created - 50 * MS + MS,
              "run %lld ns: more than its wall time %lld ns less the 50 ms it slept",
              (long long)st.run_ns, (long long)(st.finished - st.created));
    if (precise) T_RANGE(st.cpu_ns / 1000, 0, SLEEPER_MAX_RUN_US);
    T_EQ(st.switches, 2); /* first run, resumed after the sleep */

    T_OK(br_task_get_stats(y, &st));
    T_EQ(st.switches, 11);

    T_OK(br_join(busy, NULL));
    T_OK(br_join(sleepy, NULL));
    T_OK(br_join(y, NULL));
    /* Released: no stats. */
    T_RC(br_task_get_stats(busy, &st), BR_EHANDLE);

    /* Interleaved busy tasks: 60 ms each over ~120 ms of wall time. */
    br_task *s1, *s2;
    t0 = br_now();
    T_OK(br_spawn(&s1, sliced_busy, NULL, &o));
    T_OK(br_spawn(&s2, sliced_busy, NULL, &o));
    T_OK(br_await(br_task_future(s1), NULL));
    T_OK(br_await(br_task_future(s2), NULL));
    int64_t wall = br_now() - t0;
    br_task_stats a1, a2;
    T_OK(br_task_get_stats(s1, &a1));
    T_OK(br_task_get_stats(s2, &a2));
    /* Each got its own 60 ms, and no time was counted twice (on a busy
     * machine both stretch, their sum still fits in the wall time). */
    T_TRUE(a1.run_ns >= 59 * MS);
    T_TRUE(a2.run_ns >= 59 * MS);
    T_TRUE(a1.run_ns + a2.run_ns <= wall + 2 * MS);
    T_EQ(a1.switches, 4);
    T_OK(br_join(s1, NULL));
    T_OK(br_join(s2, NULL));
  }

  /* The caller's own stats, live: run time grows while it runs. */
  br_task_stats me1, me2;
  T_OK(br_task_get_stats(NULL, &me1));
  busy_ms(10);
  T_OK(br_task_get_stats(NULL, &me2));
  T_TRUE(me2.run_ns - me1.run_ns >= 9 * MS);
  T_EQ(me2.finished, 0);
  T_RC(br_task_get_stats(NULL, NULL), BR_EHANDLE);
  return NULL;
}

static void run_mode(br_accounting mode) {
  acct_arg a = {.mode = mode};
  br_loop_opts o = {.accounting = mode};
  cpu_busy = mode == BR_ACCT_PRECISE;
  int rc = br_run_opts(NULL, m_accounting, &a, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
}

static void test_fast_mode(void **state) {
  (void)state;
  if (br_test_emulated()) skip(); /* timing under an emulator means little */
  run_mode(BR_ACCT_FAST);
}

static void test_precise_mode(void **state) {
  (void)state;
  if (br_test_emulated()) skip(); /* timing under an emulator means little */
  run_mode(BR_ACCT_PRECISE);
}

static void test_default_mode_is_accounted(void **state) {
  (void)state;
  if (br_test_emulated()) skip(); /* timing under an emulator means little */
  unsetenv("BRAID_ACCOUNTING");
  run_mode(BR_ACCT_DEFAULT);
}

/* Off: no clock reads, so no times; switches are still counted. */
static void *m_off(void *arg) {
  (void)arg;
  br_task *busy, *y;
  T_OK(br_spawn(&busy, busy_task, IP(20), NULL));
  T_OK(br_spawn(&y, yields_ten, NULL, NULL));
  T_OK(br_await(br_task_future(busy), NULL));
  T_OK(br_await(br_task_future(y), NULL));
  br_task_stats st;
  T_OK(br_task_get_stats(busy, &st));
  T_EQ(st.run_ns, 0);
  T_EQ(st.cpu_ns, 0);
  T_OK(br_task_get_stats(y, &st));
  T_EQ(st.switches, 11);
  T_OK(br_join(busy, NULL));
  T_OK(br_join(y, NULL));
  return NULL;
}

static void test_off_mode(void **state) {
  (void)state;
  br_loop_opts o = {.accounting = BR_ACCT_OFF};
  int rc = br_run_opts(NULL, m_off, NULL, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
  /* BRAID_ACCOUNTING=off does the same for a loop with default options. */
  setenv("BRAID_ACCOUNTING", "off", 1);
  rc = br_run(NULL, m_off, NULL);
  unsetenv("BRAID_ACCOUNTING");
  tf_assert_clean();
  assert_int_equal(rc, 0);
}

static void test_stats_errors(void **state) {
  (void)state;
  br_task_stats st;
  assert_int_equal(br_task_get_stats(NULL, &st), BR_EHANDLE); /* no task here */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fast_mode),
      cmocka_unit_test(test_precise_mode),
      cmocka_unit_test(test_default_mode_is_accounted),
      cmocka_unit_test(test_off_mode),
      cmocka_unit_test(test_stats_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
