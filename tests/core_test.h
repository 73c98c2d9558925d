/* SPDX-License-Identifier: MIT */
/* core_test.h — check scaffolding shared by the core test programs
 * (test_accounting, test_future, test_group, test_loop, test_scope,
 * test_switch, test_sync, test_overflow, test_task, test_timers,
 * test_badinput, test_stress_core). Include it once, after test_util.h.
 *
 * Why record instead of assert: failures inside tasks, callbacks and helper
 * threads are recorded, not asserted, because cmocka's longjmp must never
 * leave a coroutine stack or another thread. The cmocka test function checks
 * the record once the loop has finished (tf_assert_clean, called by
 * run_main/run_main_rc), so a failing test reports the number of failed
 * checks and the first one with its file and line ("file:line: message").
 * The record is a process-wide static guarded by a mutex, so checks may fail
 * on any thread.
 *
 * Checks. On failure each records a message and returns from the enclosing
 * function: T_* return NULL (task bodies, thread functions, anything
 * returning a pointer); V_* return nothing (void functions, callbacks).
 *   T_TRUE(c)  / V_TRUE(c)     c is true; message: the text of c.
 *   T_EQ(a, b) / V_EQ(a, b)    a == b compared as long long; message shows both.
 *   T_RC(e, w) / V_RC(e, w)    int e == w; message names both codes (br_errname).
 *   T_OK(e)    / V_OK(e)       T_RC(e, 0): the call succeeded.
 *   T_RANGE(v, lo, hi)         lo <= v <= hi, as long long.
 *   T_STR(a, b)                both strings non-NULL and equal (strcmp).
 * TF_*_(ret, ...) are the underlying forms, ret being what to return.
 *
 * Helpers:
 *   tf_record(file, line, fmt, ...)  record a failure (only the first message
 *                                    is kept; all are counted).
 *   tf_assert_clean()                fail the cmocka test if anything was
 *                                    recorded, and clear the record. Call it
 *                                    only from the test function itself.
 *   ms_since(t0)                     milliseconds since br_now() value t0.
 *   run_main_rc(fn, arg, want)       br_run(fn, arg) as the main task, then
 *                                    tf_assert_clean(), then fail unless
 *                                    br_run returned want; returns main's
 *                                    result.
 *   run_main(fn, arg)                run_main_rc(fn, arg, 0).
 *   tf_future(), tf_chan(size, cap), tf_queue(max)
 *                                    the constructor's object, or NULL (for
 *                                    initialisers; tests of the constructors
 *                                    themselves call br_X_new). */
#ifndef BRAID_TESTS_CORE_TEST_H
#define BRAID_TESTS_CORE_TEST_H
#include "test_util.h"
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t tf_lock = PTHREAD_MUTEX_INITIALIZER;
static char tf_msg[1024];
static int tf_count;

__attribute__((format(printf, 3, 4), unused))
static inline void tf_record(const char *file, int line, const char *fmt, ...) {
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

__attribute__((unused)) static inline br_future *tf_future(void) {
  br_future *f = NULL;
  return br_future_new(&f) == 0 ? f : NULL;
}

__attribute__((unused)) static inline br_chan *tf_chan(size_t size, size_t cap) {
  br_chan *c = NULL;
  return br_chan_new(&c, size, cap) == 0 ? c : NULL;
}

__attribute__((unused)) static inline br_queue *tf_queue(size_t max) {
  br_queue *q = NULL;
  return br_queue_new(&q, max) == 0 ? q : NULL;
}

__attribute__((unused)) static inline void tf_assert_clean(void) {
  pthread_mutex_lock(&tf_lock);
  int n = tf_count;
  char msg[sizeof tf_msg];
  memcpy(msg, tf_msg, sizeof msg);
  tf_count = 0;
  tf_msg[0] = 0;
  pthread_mutex_unlock(&tf_lock);
  if (n) fail_msg("%d failed check(s); first: %s", n, msg);
}

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

__attribute__((unused)) static inline int64_t ms_since(int64_t t0) { return (br_now() - t0) / 1000000; }

__attribute__((unused)) static inline void *run_main_rc(br_task_fn fn, void *arg, int want) {
  void *result = NULL;
  int rc = br_run(&result, fn, arg);
  tf_assert_clean();
  if (rc != want)
    fail_msg("br_run returned %d (%s), want %d (%s)", rc, br_errname(rc), want, br_errname(want));
  return result;
}
__attribute__((unused)) static inline void *run_main(br_task_fn fn, void *arg) { return run_main_rc(fn, arg, 0); }

/* isolated(fn, timeout_ms): run fn in a forked child (br_test_run_child) and
 * fail the test unless the child exits 0 within the timeout: the checks it
 * recorded are reported on its stderr, and a crash or hang is named. Lines of
 * the child's stderr starting with two spaces are passed through. */
__attribute__((unused)) static void isolated_child_body(void *arg) {
  void (*fn)(void) = (void (*)(void))arg;
  fn();
  fflush(stdout);
  if (tf_count) {
    fprintf(stderr, "CHECK FAILED: %s\n", tf_msg);
    fflush(stderr);
    _exit(1);
  }
}

__attribute__((unused)) static void isolated(void (*fn)(void), int timeout_ms) {
  br_child_result r;
  assert_int_equal(br_test_run_child(isolated_child_body, (void *)fn, timeout_ms, &r), 0);
  bool ok = r.exited && r.exit_code == 0;
  char msg[3000];
  snprintf(msg, sizeof msg, "child %s (exit %d, signal %d); stderr:\n%.2500s",
           r.timed_out ? "hung (killed at the timeout)" : r.signaled ? "crashed" : "failed", r.exit_code,
           r.signo, r.err);
  for (char *line = strtok(r.err, "\n"); line; line = strtok(NULL, "\n"))
    if (strncmp(line, "  ", 2) == 0) fprintf(stderr, "%s\n", line);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

#endif /* BRAID_TESTS_CORE_TEST_H */
