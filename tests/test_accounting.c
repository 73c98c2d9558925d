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

/* ---- shared test scaffolding (copied in each core test file) ----------- */
/* Failures inside tasks, callbacks and helper threads are recorded, not
 * asserted: cmocka's longjmp must never leave a coroutine stack or another
 * thread. The test function checks the record once the loop has finished
 * (tf_assert_clean), so a failing test reports the first failed check with
 * its file and line. */
static pthread_mutex_t tf_lock = PTHREAD_MUTEX_INITIALIZER;
static char tf_msg[1024];
static int tf_count;

__attribute__((format(printf, 3, 4), unused))
static void tf_record(const char *file, int line, const char *fmt, ...) {
  pthread_mutex_lock(&tf_lock);
  if (!tf_count++) {
    int n = snprintf(tf_msg, sizeof tf_msg, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof tf_msg) vsnprintf(tf_msg + n, sizeof tf_msg - (size_t)n, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&tf_lock);
}

__attribute__((unused)) static void tf_assert_clean(void) {
  pthread_mutex_lock(&tf_lock);
  int n = tf_count;
  char msg[sizeof tf_msg];
  memcpy(msg, tf_msg, sizeof msg);
  tf_count = 0;
  tf_msg[0] = 0;
  pthread_mutex_unlock(&tf_lock);
  if (n) fail_msg("%d failed check(s); first: %s", n, msg);
}

/* T_*: check inside a function returning a pointer (task bodies, threads):
 * record and return NULL. V_*: the same in a void function. */
#define TF_CHECK_(ret, cond, ...)                   \
  do {                                              \
    if (!(cond)) {                                  \
      tf_record(__FILE__, __LINE__, __VA_ARGS__);   \
      return ret;                                   \
    }                                               \
  } while (0)
#define TF_EQ_(ret, a, b)                                                                   \
  do {                                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                                    \
    TF_CHECK_(ret, a_ == b_, "%s == %s failed (%lld vs %lld)", #a, #b, a_, b_);            \
  } while (0)
#define TF_RC_(ret, expr, want)                                                            \
  do {                                                                                     \
    int rc_ = (expr), w_ = (want);                                                         \
    TF_CHECK_(ret, rc_ == w_, "%s returned %d (%s), want %d (%s)", #expr, rc_,             \
              br_errname(rc_), w_, br_errname(w_));                                        \
  } while (0)
#define TF_RANGE_(ret, v, lo, hi)                                                          \
  do {                                                                                     \
    long long v_ = (long long)(v), lo_ = (long long)(lo), hi_ = (long long)(hi);           \
    TF_CHECK_(ret, v_ >= lo_ && v_ <= hi_, "%s = %lld not in [%lld, %lld]", #v, v_, lo_, hi_); \
  } while (0)
#define TF_STR_(ret, a, b)                                                                 \
  do {                                                                                     \
    const char *sa_ = (a), *sb_ = (b);                                                     \
    TF_CHECK_(ret, sa_ && sb_ && strcmp(sa_, sb_) == 0, "%s = \"%s\", want \"%s\"", #a,    \
              sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                                  \
  } while (0)
#define T_TRUE(c) TF_CHECK_(NULL, c, "%s", #c)
#define T_EQ(a, b) TF_EQ_(NULL, a, b)
#define T_RC(e, w) TF_RC_(NULL, e, w)
#define T_OK(e) TF_RC_(NULL, e, 0)
#define T_RANGE(v, lo, hi) TF_RANGE_(NULL, v, lo, hi)
#define T_STR(a, b) TF_STR_(NULL, a, b)
#define V_TRUE(c) TF_CHECK_(, c, "%s", #c)
#define V_EQ(a, b) TF_EQ_(, a, b)
#define V_RC(e, w) TF_RC_(, e, w)
#define V_OK(e) TF_RC_(, e, 0)

__attribute__((unused)) static int64_t ms_since(int64_t t0) { return (br_now() - t0) / 1000000; }

/* Run fn as br_run's main task; the test fails if a check failed inside or
 * br_run did not return `want`. Returns main's result. */
__attribute__((unused)) static void *run_main_rc(br_task_fn fn, void *arg, int want) {
  void *result = NULL;
  int rc = br_run(fn, arg, &result);
  tf_assert_clean();
  if (rc != want)
    fail_msg("br_run returned %d (%s), want %d (%s)", rc, br_errname(rc), want, br_errname(want));
  return result;
}
__attribute__((unused)) static void *run_main(br_task_fn fn, void *arg) { return run_main_rc(fn, arg, 0); }
/* ---- end of scaffolding -------------------------------------------------- */

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))
#define MS 1000000LL

/* A sleeping task runs for microseconds. Under the sanitizers a task's first
 * switch costs milliseconds (TSan creates its fiber state then), and that is
 * charged to the task. */
#if defined(BRAID_TSAN) || defined(BRAID_ASAN)
#define SLEEPER_MAX_RUN_US 25000
#define SLEEPER_RATIO 2
#else
#define SLEEPER_MAX_RUN_US 5000
#define SLEEPER_RATIO 10
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
      T_RANGE(st.run_ns / MS, 49, 120);
      T_EQ(st.cpu_ns, st.run_ns);
    }
    T_TRUE(st.finished >= st.created + 50 * MS);
    T_EQ(st.switches, 1);

    /* The sleeper: 50 ms of wall time, almost no run time. */
    T_OK(br_task_get_stats(sleepy, &st));
    T_TRUE(st.finished - st.created >= 50 * MS);
    T_RANGE(st.run_ns / 1000, 0, SLEEPER_MAX_RUN_US);
    T_TRUE(st.run_ns * SLEEPER_RATIO < st.finished - st.created);
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
    T_RANGE(a1.run_ns / MS, 59, 130);
    T_RANGE(a2.run_ns / MS, 59, 130);
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
  int rc = br_run_opts(m_accounting, &a, NULL, &o);
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
  int rc = br_run_opts(m_off, NULL, NULL, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
  /* BRAID_ACCOUNTING=off does the same for a loop with default options. */
  setenv("BRAID_ACCOUNTING", "off", 1);
  rc = br_run(m_off, NULL, NULL);
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
