/* SPDX-License-Identifier: MIT */
/* test_exhaust_procpool — the process pool when the program has run out of
 * file descriptors (RLIMIT_NOFILE reached by the program's own files):
 *
 * - a result large enough to travel as a memfd cannot be received: the job
 *   fails BR_EMFILE saying so, and the worker (which did nothing wrong) is
 *   neither blamed nor killed;
 * - a worker dies and no replacement can be started (a new worker needs a
 *   memfd and a socket pair): the jobs waiting for it fail with the reason
 *   instead of waiting for ever, shutdown does not hang, and the pool works
 *   again once descriptors are free.
 *
 * Descriptors are used up with /dev/null under a lowered soft limit, and
 * given back before any assertion that could end the test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/resource.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

static struct rlimit saved_lim;
static int held[4096];
static int nheld;

/* Use up every descriptor: lower the soft limit to what is open plus a
 * margin (so that filling it is cheap), then open /dev/null until EMFILE. */
static void fds_exhaust(void) {
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved_lim), 0);
  int top = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(top >= 0);
  close(top);
  struct rlimit lo = saved_lim;
  lo.rlim_cur = (rlim_t)top + 64;
  if (lo.rlim_cur > saved_lim.rlim_cur) lo.rlim_cur = saved_lim.rlim_cur;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &lo), 0);
  nheld = 0;
  int fd;
  while (nheld < (int)(sizeof held / sizeof held[0]) &&
         (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    held[nheld++] = fd;
  assert_int_equal(errno, EMFILE);
}

static void fds_release(void) {
  while (nheld > 0) close(held[--nheld]);
  (void)setrlimit(RLIMIT_NOFILE, &saved_lim);
}

static int run_job(br_procpool *p, tjob j, void **v, char *msg, size_t msgsz) {
  br_future *f = NULL;
  int r = br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL);
  if (r < 0) {
    snprintf(msg, msgsz, "submit: %s", br_strerror(r));
    return r;
  }
  *v = NULL;
  r = br_await_until(f, v, br_deadline_ms(60000));
  if (r == BR_ETIMEDOUT && !br_future_done(f)) {
    snprintf(msg, msgsz, "job %u never ended", j.id);
    (void)br_future_cancel(f);
  } else {
    snprintf(msg, msgsz, "%s", r ? br_future_message(f) : "");
  }
  br_future_unref(f);
  return r;
}

static void test_big_result_without_descriptors(void **state) {
  (void)state;
  br_procpool *p = NULL;
  assert_int_equal(br_procpool_new(&p, 1, NULL), 0);
  void *v = NULL;
  char msg[512];
  assert_int_equal(run_job(p, tj(1, A_OK, 0), &v, msg, sizeof msg), 0);
  assert_int_equal(tresult(v), 1);

  fds_exhaust();
  /* 2 MiB: the worker sends it as a memfd, which we have no number for. */
  int r = run_job(p, tj(2, A_BIG, 2), &v, msg, sizeof msg);
  if (r == 0) br_bytes_free(v);
  /* A small result still comes through the ring. */
  void *v2 = NULL;
  char msg2[512];
  int r2 = run_job(p, tj(3, A_OK, 0), &v2, msg2, sizeof msg2);
  fds_release();

  if (r != BR_EMFILE) fail_msg("big result: %s (%s), want EMFILE", br_errname(r), msg);
  if (!strstr(msg, "out of file descriptors"))
    fail_msg("big result: message '%s' does not say why", msg);
  assert_int_equal(r2, 0);
  assert_int_equal(tresult(v2), 3);
  br_procpool_stats st;
  assert_int_equal(br_procpool_get_stats(p, &st), 0);
  /* Our shortage, not the worker's fault: it was not killed. */
  assert_int_equal(st.worker_deaths, 0);
  assert_int_equal(st.started, 1);

  /* With descriptors back, big results work again. */
  r = run_job(p, tj(4, A_BIG, 2), &v, msg, sizeof msg);
  if (r) fail_msg("after release: %s (%s)", br_errname(r), msg);
  br_bytes *b = v;
  assert_int_equal(b->len, (size_t)2 << 20);
  assert_int_equal(((unsigned char *)b->data)[12345], (unsigned char)(12345 * 7 + 1));
  br_bytes_free(v);
  assert_int_equal(br_procpool_free(p), 0);
}

static void test_no_replacement_worker(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = NULL;
  assert_int_equal(br_procpool_new(&p, 1, &o), 0);
  void *v = NULL;
  char msg[512];
  assert_int_equal(run_job(p, tj(1, A_OK, 0), &v, msg, sizeof msg), 0);
  br_bytes_free(v);

  fds_exhaust();
  /* Its worker dies; a replacement needs a memfd and a socket pair. */
  int r1 = run_job(p, tj(2, A_SEGV, 0), &v, msg, sizeof msg);
  char msg2[512], msg3[512];
  int r2 = run_job(p, tj(3, A_OK, 0), &v, msg2, sizeof msg2);
  if (r2 == 0) br_bytes_free(v);
  /* Queued, then the pool is shut down while nothing can run it. */
  br_future *f = NULL;
  tjob j = tj(4, A_OK, 0);
  int rs = br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL);
  int r3 = rs;
  if (rs == 0) {
    r3 = br_await_until(f, &v, br_deadline_ms(60000));
    if (r3 == BR_ETIMEDOUT && !br_future_done(f)) snprintf(msg3, sizeof msg3, "never ended");
    else snprintf(msg3, sizeof msg3, "%s", r3 ? br_future_message(f) : "");
    if (r3 == 0) br_bytes_free(v);
  }
  fds_release();

  assert_int_equal(r1, BR_EWORKERDIED);
  if (r2 != BR_EMFILE) fail_msg("job after the crash: %s (%s), want EMFILE", br_errname(r2), msg2);
  if (!strstr(msg2, "no worker could be started"))
    fail_msg("job after the crash: message '%s' does not say why", msg2);
  assert_int_equal(rs, 0);
  if (r3 != BR_EMFILE) fail_msg("queued job: %s (%s), want EMFILE", br_errname(r3), msg3);
  br_future_unref(f);

  /* Descriptors are back: the pool starts a worker again and works. */
  int r = run_job(p, tj(5, A_OK, 0), &v, msg, sizeof msg);
  if (r) fail_msg("after release: %s (%s)", br_errname(r), msg);
  assert_int_equal(tresult(v), 5); /* frees v */
  assert_int_equal(br_procpool_shutdown(p, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(br_procpool_free(p), 0);
  /* The jobs that failed for want of a worker never ran; the others once. */
  assert_int_equal(t.c[3], 0);
  assert_int_equal(t.c[4], 0);
  assert_int_equal(t.c[2], 1);
  assert_int_equal(t.c[5], 1);
  tcounter_close(&t);
}

/* Shutting down (DRAIN) while out of descriptors, with a job queued that
 * no worker can run: it ends with the reason, the shutdown returns. */
static void test_drain_without_workers(void **state) {
  (void)state;
  br_procpool *p = NULL;
  assert_int_equal(br_procpool_new(&p, 1, NULL), 0);
  void *v = NULL;
  char msg[512];
  assert_int_equal(run_job(p, tj(1, A_OK, 0), &v, msg, sizeof msg), 0);
  br_bytes_free(v);
  fds_exhaust();
  int r1 = run_job(p, tj(2, A_SEGV, 0), &v, msg, sizeof msg);
  br_future *f = NULL;
  tjob j = tj(3, A_OK, 0);
  int rs = br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL);
  int rd = br_procpool_shutdown(p, BR_SHUTDOWN_DRAIN); /* waits for f to end */
  fds_release();
  assert_int_equal(r1, BR_EWORKERDIED);
  assert_int_equal(rs, 0);
  assert_int_equal(rd, 0);
  assert_true(br_future_done(f));
  assert_int_equal(br_future_error(f), BR_EMFILE);
  br_future_unref(f);
  assert_int_equal(br_procpool_free(p), 0);
}

int main(void) {
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_big_result_without_descriptors),
      cmocka_unit_test(test_no_replacement_worker),
      cmocka_unit_test(test_drain_without_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
