/* SPDX-License-Identifier: MIT */
/* test_procpool_fdloss — the program closes every descriptor from 3 up
 * (closefrom, close_range) while a pool has jobs running and queued. The
 * pool cannot reach its manager's wake-up or its fork server any more:
 * every job must still end, with an error that says so, never hang; the
 * pool is freed cleanly and a new pool works. Its own program, as what it
 * does to the descriptor table cannot be undone. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/syscall.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

static void test_program_closes_pool_descriptors(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = NULL;
  assert_int_equal(br_procpool_new(&p, 1, &o), 0);
  int r;
  /* The first job proves the worker runs; then one runs while the
   * descriptors go and two wait behind it. */
  enum { N = 4 };
  br_future *f[N];
  for (uint32_t i = 0; i < N; i++) {
    tjob j = tj(i, i == 1 ? A_SLEEP : A_OK, 200);
    assert_int_equal(br_procpool_submit(p, &f[i], "tjob", &j, sizeof j, NULL), 0);
    if (i == 0) {
      void *v = NULL;
      assert_int_equal(br_await(f[0], &v), 0);
      assert_int_equal(tresult(v), 0);
    }
  }
  syscall(SYS_close_range, 3u, ~0u, 0u);
  for (uint32_t i = 1; i < N; i++) {
    void *v = NULL;
    r = br_await_until(f[i], &v, br_deadline_ms(60000));
    if (r == BR_ETIMEDOUT && !br_future_done(f[i])) fail_msg("job %u never ended", i);
    if (r == 0) {
      assert_int_equal(tresult(v), i); /* published before the pool noticed */
    } else if (r == BR_EBADF) {
      /* Said by the manager when it finds its descriptors gone, or when
       * its fork server's socket vanished first and no new one could be
       * started (the program is out of the descriptors it needs). */
      const char *m = br_future_message(f[i]);
      if (!strstr(m, "descriptors were closed behind its back") &&
          !strstr(m, "could not be restarted: bad file descriptor"))
        fail_msg("job %u: message '%s' does not say why", i, m);
    } else if (r != BR_EWORKERDIED) {
      fail_msg("job %u: %s (%s)", i, br_errname(r), br_future_message(f[i]));
    }
  }
  br_future *g = NULL;
  tjob j = tj(9, A_OK, 0);
  r = br_procpool_submit(p, &g, "tjob", &j, sizeof j, NULL);
  assert_int_equal(r, BR_EBADF);
  for (uint32_t i = 0; i < N; i++) br_future_unref(f[i]);
  assert_int_equal(br_procpool_free(p), 0);
  for (uint32_t i = 0; i < N; i++) /* none ran twice */
    if (t.c[i] > 1) fail_msg("job %u ran %u times", i, (unsigned)t.c[i]);
  tcounter_close(&t);

  /* A new pool starts a new fork server and works. */
  assert_int_equal(br_procpool_new(&p, 1, NULL), 0);
  assert_int_equal(br_procpool_submit(p, &g, "tjob", &j, sizeof j, NULL), 0);
  void *v = NULL;
  assert_int_equal(br_await(g, &v), 0);
  assert_int_equal(tresult(v), 9);
  br_future_unref(g);
  assert_int_equal(br_procpool_free(p), 0);
}

int main(void) {
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_program_closes_pool_descriptors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
