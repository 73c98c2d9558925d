/* SPDX-License-Identifier: MIT */
/* test_exhaust_server — the process's fork server runs out of file
 * descriptors. The server starts with the resource limits the program had
 * when its first pool was created (docs/procpool.md); a program that
 * started it under a low RLIMIT_NOFILE and raised the limit afterwards can
 * then create more pools than the server has descriptors for (one per pool,
 * and a worker's start passes it five). A start request whose descriptors
 * the kernel dropped must be answered (the jobs fail with a reason, the pool
 * retries) instead of being ignored while the jobs wait for ever. Its own
 * program: the limit must be low before this process's first pool. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/resource.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

enum { NPOOLS = 24 };

static void test_server_out_of_descriptors(void **state) {
  (void)state;
  struct rlimit saved;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max < 1024) skip();
  struct rlimit lo = saved;
  lo.rlim_cur = 24; /* the server: 0-2, its socket, a signalfd, then pools */
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &lo), 0);
  br_procpool *first = NULL;
  int r = br_procpool_new(&first, 1, NULL);
  struct rlimit hi = saved;
  if (hi.rlim_cur < 1024) hi.rlim_cur = 1024;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &hi), 0);
  assert_int_equal(r, 0);

  br_procpool *p[NPOOLS] = {0};
  int refused = 0, failed = 0, ok = 0;
  for (int i = 0; i < NPOOLS; i++) {
    r = br_procpool_new(&p[i], 1, NULL);
    if (r < 0) { /* the server could not take the pool's connection */
      refused++;
      continue;
    }
    br_future *f = NULL;
    tjob j = tj((uint32_t)i, A_OK, 0);
    assert_int_equal(br_procpool_submit(p[i], &f, "tjob", &j, sizeof j, NULL), 0);
    void *v = NULL;
    r = br_await_until(f, &v, br_deadline_ms(60000));
    if (r == BR_ETIMEDOUT && !br_future_done(f)) fail_msg("pool %d: its job never ended", i);
    if (r == 0) {
      assert_int_equal(tresult(v), (uint64_t)i);
      ok++;
    } else {
      if (r != BR_EMFILE || !strstr(br_future_message(f), "no worker could be started"))
        fail_msg("pool %d: %s (%s)", i, br_errname(r), br_future_message(f));
      failed++;
    }
    br_future_unref(f);
  }
  /* The server did run out (else this test tests nothing). */
  assert_true(failed + refused > 0);
  assert_true(ok > 0);
  for (int i = 0; i < NPOOLS; i++)
    if (p[i]) assert_int_equal(br_procpool_free(p[i]), 0);

  /* With the other pools gone the first one still works. */
  br_future *f = NULL;
  tjob j = tj(99, A_OK, 0);
  assert_int_equal(br_procpool_submit(first, &f, "tjob", &j, sizeof j, NULL), 0);
  void *v = NULL;
  r = br_await_until(f, &v, br_deadline_ms(60000));
  if (r) fail_msg("first pool: %s (%s)", br_errname(r), br_future_message(f));
  assert_int_equal(tresult(v), 99);
  br_future_unref(f);
  assert_int_equal(br_procpool_free(first), 0);
  (void)setrlimit(RLIMIT_NOFILE, &saved);
}

int main(void) {
  (void)topts; /* shared helpers this test does not need */
  (void)tcounter_open;
  (void)tcounter_close;
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_out_of_descriptors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
