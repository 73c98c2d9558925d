/* SPDX-License-Identifier: MIT */
/* test_pool_stress — every job runs exactly once under heavy stealing.
 *
 * 10,000,000 forked jobs (divided by BRAID_TEST_SCALE under the sanitizers):
 * a tree that splits in halves down to blocks of 64 and then forks each of
 * the 64 leaves as its own child, so thieves constantly take the oldest
 * children while the owner takes the newest: both ends of every deque race,
 * including the last-element race decided by the CAS on top. The pool has
 * more workers than the machine has cores, so workers are also preempted in
 * the middle of deque operations. Each leaf bumps its own byte; afterwards
 * every byte must be exactly 1.
 *
 * Half the jobs come from that tree; the other half from one job forking
 * flat batches of 4096 children and joining them newest-first while the
 * idle workers steal from the other end (this also grows the deques).
 *
 * A second part pushes 1,000,000 submitted jobs (same scaling) through the
 * injection queue from two outside threads and from inside jobs at once.
 *
 * A third part races the job records' protocol (core/job.h): two threads
 * submit until refused, a third cancels every third future as it appears,
 * and br_pool_shutdown(BR_SHUTDOWN_CANCEL) begins meanwhile. Every future
 * must end exactly once, every job run at most once (and exactly once if
 * its future holds a value), and the report and the counters add up.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#include "test_pool.h"
#include "test_util.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((long)(intptr_t)(p))

enum { WORKERS = 4, BLOCK = 64 };

static unsigned char *hits;
static struct {
  _Alignas(64) _Atomic uint64_t n;
} per_worker[WORKERS];

static void count_worker(void) {
  int w = br_pool_worker_index();
  if (w >= 0 && w < WORKERS)
    atomic_store_explicit(&per_worker[w].n,
                          atomic_load_explicit(&per_worker[w].n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void *leaf(void *arg) {
  hits[PI(arg)]++;
  count_worker();
  return NULL;
}

typedef struct {
  long lo, hi;
} range;

static void *split(void *arg) {
  range *r = arg;
  long lo = r->lo, hi = r->hi;
  if (hi - lo <= BLOCK) {
    br_fork f[BLOCK];
    for (long i = lo; i < hi; i++) br_pool_fork(&f[i - lo], leaf, IP(i));
    for (long i = hi - 1; i >= lo; i--) br_pool_join(&f[i - lo], NULL);
    return NULL;
  }
  long mid = lo + (hi - lo) / 2;
  range right = {mid, hi}, left = {lo, mid};
  br_fork f;
  br_pool_fork(&f, split, &right);
  split(&left);
  br_pool_join(&f, NULL);
  return NULL;
}

enum { FLAT = 4096 };

/* Slower leaves (a few hundred ns) so thieves can keep up with the owner. */
static void *slow_leaf(void *arg) {
  volatile unsigned x = 0;
  for (unsigned i = 0; i < 64; i++) x += i;
  (void)x;
  return leaf(arg);
}

static void *flat(void *arg) {
  range *r = arg;
  br_fork *f = malloc(FLAT * sizeof *f);
  if (!f) return br_fail(BR_ENOMEM, "no memory for the batch");
  for (long lo = r->lo; lo < r->hi; lo += FLAT) {
    long hi = lo + FLAT < r->hi ? lo + FLAT : r->hi;
    for (long i = lo; i < hi; i++) br_pool_fork(&f[i - lo], slow_leaf, IP(i));
    for (long i = hi - 1; i >= lo; i--) br_pool_join(&f[i - lo], NULL);
  }
  free(f);
  return NULL;
}

static void test_ten_million_forks(void **state) {
  (void)state;
  long n = br_test_scaled(10000000);
  hits = calloc((size_t)n, 1);
  assert_non_null(hits);
  br_pool *p = new_pool(WORKERS, NULL);
  assert_non_null(p);
  range tree = {0, n / 2}, batches = {n / 2, n};
  br_future *f, *g;
  assert_int_equal(br_pool_submit(p, &f, split, &tree), 0);
  assert_int_equal(br_await(f, NULL), 0);
  assert_int_equal(br_pool_submit(p, &g, flat, &batches), 0);
  assert_int_equal(br_await(g, NULL), 0);
  br_future_unref(f);
  br_future_unref(g);

  long bad = 0;
  for (long i = 0; i < n; i++)
    if (hits[i] != 1) {
      if (bad++ < 10) fprintf(stderr, "job %ld ran %d times\n", i, hits[i]);
    }
  assert_int_equal(bad, 0);

  uint64_t total = 0;
  int busy = 0;
  for (int w = 0; w < WORKERS; w++) {
    uint64_t c = atomic_load(&per_worker[w].n);
    total += c;
    busy += c > 0;
  }
  assert_int_equal(total, (uint64_t)n);
  br_pool_stats st;
  br_pool_get_stats(p, &st);
  fprintf(stderr, "%ld jobs: %lu forks, %lu steals, %d workers ran leaves\n", n, st.forks,
          st.steals, busy);
  assert_true(st.forks >= (uint64_t)n);
  /* Stolen across workers: more than one worker ran leaves, many steals. */
  assert_true(busy >= 2);
  assert_true(st.steals >= (uint64_t)n / 1000);
  br_pool_free(p);
  free(hits);
}

/* ------------------------------------------------------------------------ */

static _Atomic unsigned char *hits2;
static br_pool *spool;

static void *mark2(void *arg) {
  atomic_fetch_add_explicit(&hits2[PI(arg)], 1, memory_order_relaxed);
  return arg;
}

/* A job that submits a batch of further jobs and waits for them. */
typedef struct {
  long lo, hi;
} batch;

static void *inner_submitter(void *arg) {
  batch *b = arg;
  enum { MAXB = 256 };
  br_future *fs[MAXB];
  long bad = 0;
  for (long i = b->lo; i < b->hi; i += MAXB) {
    long e = i + MAXB < b->hi ? i + MAXB : b->hi;
    for (long j = i; j < e; j++)
      if (br_pool_submit(spool, &fs[j - i], mark2, IP(j)) != 0) return IP(-1);
    for (long j = i; j < e; j++) {
      void *v;
      if (br_await(fs[j - i], &v) != 0 || PI(v) != j) bad++;
      br_future_unref(fs[j - i]);
    }
  }
  return IP(bad);
}

typedef struct {
  long lo, hi;
  long bad;
} outside;

static void *outside_submitter(void *arg) {
  outside *o = arg;
  enum { MAXB = 4096 };
  br_future **fs = malloc(MAXB * sizeof *fs);
  for (long i = o->lo; i < o->hi; i += MAXB) {
    long e = i + MAXB < o->hi ? i + MAXB : o->hi;
    for (long j = i; j < e; j++)
      if (br_pool_submit(spool, &fs[j - i], mark2, IP(j)) != 0) o->bad++;
    for (long j = i; j < e; j++) {
      void *v;
      if (br_await(fs[j - i], &v) != 0 || PI(v) != j) o->bad++;
      br_future_unref(fs[j - i]);
    }
  }
  free(fs);
  return NULL;
}

static void test_million_submits(void **state) {
  (void)state;
  long n = br_test_scaled(1000000);
  hits2 = calloc((size_t)n, 1);
  spool = new_pool(WORKERS, NULL);
  /* Quarters: two outside threads, and two jobs submitting from inside. */
  long q = n / 4;
  outside o1 = {0, q, 0}, o2 = {q, 2 * q, 0};
  batch b1 = {2 * q, 3 * q}, b2 = {3 * q, n};
  pthread_t t1, t2;
  pthread_create(&t1, NULL, outside_submitter, &o1);
  pthread_create(&t2, NULL, outside_submitter, &o2);
  br_future *f1, *f2;
  assert_int_equal(br_pool_submit(spool, &f1, inner_submitter, &b1), 0);
  assert_int_equal(br_pool_submit(spool, &f2, inner_submitter, &b2), 0);
  void *v1, *v2;
  assert_int_equal(br_await(f1, &v1), 0);
  assert_int_equal(br_await(f2, &v2), 0);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  assert_int_equal(PI(v1), 0);
  assert_int_equal(PI(v2), 0);
  assert_int_equal(o1.bad, 0);
  assert_int_equal(o2.bad, 0);
  br_future_unref(f1);
  br_future_unref(f2);
  long bad = 0;
  for (long i = 0; i < n; i++) bad += atomic_load(&hits2[i]) != 1;
  assert_int_equal(bad, 0);
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(spool, &r, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(r.submitted, (uint64_t)n + 2);
  assert_int_equal(r.failed, 0);
  br_pool_free(spool);
  free((void *)hits2);
}

/* ------------------------------------------------------------------------ */
/* Submit, cancel and shutdown(BR_SHUTDOWN_CANCEL) at once                   */

static _Atomic unsigned char *hits3;
static br_pool *rpool;

static void *mark3(void *arg) {
  volatile long x = 0;
  for (long i = 0; i < 500; i++) x += i;
  (void)x;
  atomic_fetch_add(&hits3[PI(arg)], 1);
  return arg;
}

typedef struct {
  long base, cap; /* job indices base .. base + cap - 1 */
  br_future **fs;
  _Atomic long n; /* futures stored so far (release) */
  _Atomic int done;
  int last_rc;
} racer;

static void *race_submitter(void *arg) {
  racer *r = arg;
  long i = 0;
  for (; i < r->cap; i++) {
    int rc = br_pool_submit(rpool, &r->fs[i], mark3, IP(r->base + i));
    if (rc != 0) {
      r->last_rc = rc;
      break;
    }
    atomic_store_explicit(&r->n, i + 1, memory_order_release);
  }
  atomic_store(&r->done, 1);
  return NULL;
}

static void *race_canceller(void *arg) {
  racer *rs = arg;
  long seen[2] = {0, 0};
  for (;;) {
    int finished = 1;
    for (int k = 0; k < 2; k++) {
      int done = atomic_load(&rs[k].done);
      long n = atomic_load_explicit(&rs[k].n, memory_order_acquire);
      for (; seen[k] < n; seen[k]++)
        if (seen[k] % 3 == 0) (void)br_future_cancel(rs[k].fs[seen[k]]);
      if (!done) finished = 0;
    }
    if (finished) return NULL;
    sched_yield();
  }
}

static void test_submit_cancel_shutdown_race(void **state) {
  (void)state;
  long cap = br_test_scaled(200000);
  hits3 = calloc((size_t)(2 * cap), 1);
  rpool = new_pool(WORKERS, NULL);
  racer rs[2] = {{.base = 0, .cap = cap}, {.base = cap, .cap = cap}};
  for (int k = 0; k < 2; k++) rs[k].fs = calloc((size_t)cap, sizeof(br_future *));
  pthread_t ts[2], tc;
  for (int k = 0; k < 2; k++) pthread_create(&ts[k], NULL, race_submitter, &rs[k]);
  pthread_create(&tc, NULL, race_canceller, rs);
  /* Shut down once a quarter of the jobs were submitted. */
  while (atomic_load(&rs[0].n) + atomic_load(&rs[1].n) < cap / 2 && !atomic_load(&rs[0].done))
    sched_yield();
  br_pool_report r;
  assert_int_equal(br_pool_shutdown(rpool, &r, BR_SHUTDOWN_CANCEL), 0);
  for (int k = 0; k < 2; k++) pthread_join(ts[k], NULL);
  pthread_join(tc, NULL);
  assert_int_equal(r.mode, BR_SHUTDOWN_CANCEL);
  assert_int_equal(r.pending, r.completed + r.cancelled);
  long total = 0, ran = 0, cancelled = 0, bad = 0;
  for (int k = 0; k < 2; k++) {
    long n = atomic_load(&rs[k].n);
    if (n < cap) assert_int_equal(rs[k].last_rc, BR_ESHUTDOWN);
    total += n;
    for (long i = 0; i < n; i++) {
      br_future *f = rs[k].fs[i];
      long idx = rs[k].base + i;
      unsigned h = atomic_load(&hits3[idx]);
      if (!br_future_done(f)) bad++;
      int err = br_future_error(f);
      if (err == 0) {
        ran++;
        if (PI(br_future_value(f)) != idx || h != 1) bad++;
      } else if (err == BR_ECANCELED) {
        cancelled++;
        if (h > 1) bad++;
      } else {
        bad++;
      }
      br_future_unref(f);
    }
    free(rs[k].fs);
  }
  assert_int_equal(bad, 0);
  assert_int_equal(ran + cancelled, total);
  br_pool_stats st;
  assert_int_equal(br_pool_get_stats(rpool, &st), 0);
  assert_int_equal(st.submitted, (uint64_t)total);
  assert_int_equal(r.submitted, (uint64_t)total);
  assert_int_equal(st.completed + st.cancelled, (uint64_t)total);
  /* A job whose future was cancelled while it ran counts as completed. */
  assert_true(st.cancelled <= (uint64_t)cancelled);
  assert_true(st.completed >= (uint64_t)ran);
  br_pool_free(rpool);
  free((void *)hits3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ten_million_forks),
      cmocka_unit_test(test_million_submits),
      cmocka_unit_test(test_submit_cancel_shutdown_race),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
