/* SPDX-License-Identifier: MIT */
/* test_pool.h — what the CPU-pool tests (test_pool*.c) share. Include after
 * <cmocka.h> and <braid.h>. */
#ifndef BRAID_TEST_POOL_H
#define BRAID_TEST_POOL_H

/* A pool that must start: br_pool_new(&p, nthreads, opts) succeeds (a failure
 * fails the test on the calling thread). */
static inline br_pool *new_pool(int nthreads, const br_pool_opts *opts) {
  br_pool *p = (br_pool *)0x1;
  assert_int_equal(br_pool_new(&p, nthreads, opts), 0);
  assert_non_null(p);
  return p;
}

#endif
