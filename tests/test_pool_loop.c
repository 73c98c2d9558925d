/* SPDX-License-Identifier: MIT */
/* test_pool_loop — a coroutine awaiting a pool job suspends; its loop goes
 * on. A task awaits a job that computes for one second (and then a map of
 * two half-second jobs) while another task on the same loop ticks every
 * 10 ms: the ticks must keep coming on time during the whole wait. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <stdatomic.h>
#include <stdio.h>

#include "test_pool.h"
#include "test_util.h"

#define MS 1000000LL

/* Pure CPU for arg milliseconds of wall time. */
static void *compute(void *arg) {
  int64_t end = br_now() + (int64_t)(intptr_t)arg * MS;
  volatile uint64_t x = 1;
  while (br_now() < end)
    for (int i = 0; i < 1000; i++) x = x * 6364136223846793005ull + 1;
  return (void *)(intptr_t)42;
}

typedef struct {
  _Atomic int ticks;
  int64_t max_late;
  _Atomic int stop;
} ticker_state;

static void *ticker(void *arg) {
  ticker_state *s = arg;
  int64_t next = br_now();
  while (!atomic_load(&s->stop)) {
    next += 10 * MS;
    if (br_sleep_until(next) != 0) break;
    int64_t late = br_now() - next;
    if (late > s->max_late) s->max_late = late;
    atomic_fetch_add(&s->ticks, 1);
  }
  return NULL;
}

typedef struct {
  br_pool *pool;
  int64_t waited_ns[2];
  int ticks_during[2];
  int rc[2];
  long value;
  ticker_state ts;
} ctx;

static void *main_task(void *arg) {
  ctx *c = arg;
  br_task *t;
  if (br_spawn(&t, ticker, &c->ts, NULL) != 0) return NULL;
  br_sleep_ms(30); /* the ticker is running */

  /* One job of one second. */
  br_future *f;
  /* The job may start before br_pool_submit returns: time from before it. */
  int64_t w0 = br_now();
  c->rc[0] = br_pool_submit(c->pool, &f, compute, (void *)(intptr_t)1000);
  if (c->rc[0] == 0) {
    int t0 = atomic_load(&c->ts.ticks);
    void *v = NULL;
    c->rc[0] = br_await(f, &v);
    c->waited_ns[0] = br_now() - w0;
    c->ticks_during[0] = atomic_load(&c->ts.ticks) - t0;
    c->value = (long)(intptr_t)v;
    br_future_unref(f);
  }

  /* A map of two half-second jobs: br_pool_map from a task awaits too. */
  void *items[2] = {(void *)(intptr_t)500, (void *)(intptr_t)500};
  br_result out[2];
  int t0 = atomic_load(&c->ts.ticks);
  w0 = br_now();
  c->rc[1] = br_pool_map(c->pool, out, compute, items, 2, 1);
  c->waited_ns[1] = br_now() - w0;
  c->ticks_during[1] = atomic_load(&c->ts.ticks) - t0;

  atomic_store(&c->ts.stop, 1);
  br_join(t, NULL);
  return NULL;
}

static void test_loop_keeps_ticking_while_awaiting(void **state) {
  (void)state;
  ctx c = {0};
  c.pool = new_pool(2, NULL);
  assert_non_null(c.pool);
  assert_int_equal(br_run(NULL, main_task, &c), 0);
  fprintf(stderr,
          "1 s job: waited %.1f ms, %d ticks; map 2 x 0.5 s: waited %.1f ms, %d ticks; "
          "worst tick lateness %.2f ms\n",
          c.waited_ns[0] / 1e6, c.ticks_during[0], c.waited_ns[1] / 1e6, c.ticks_during[1],
          c.ts.max_late / 1e6);
  assert_int_equal(c.rc[0], 0);
  assert_int_equal(c.value, 42);
  assert_int_equal(c.rc[1], 0);
  assert_true(c.waited_ns[0] >= 1000 * MS);
  assert_true(c.waited_ns[1] >= 500 * MS);
  /* A tick every 10 ms: ~100 during the 1 s wait, ~50 during the map. If
   * the await blocked the loop there would be none. The bounds leave room
   * for a loaded machine (other tests run in parallel on 2 cores). */
  assert_true(c.ticks_during[0] >= 80);
  assert_true(c.ticks_during[1] >= 35);
  /* A loop blocked by either wait would make some tick at least 500 ms
   * late (the shorter wait); a busy shared machine alone has delayed the
   * loop thread by over 200 ms, so the bound sits between the two. */
  if (c.ts.max_late > 400 * MS) fail_msg("a tick came %.1f ms late", c.ts.max_late / 1e6);
  br_pool_free(c.pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loop_keeps_ticking_while_awaiting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
