/* SPDX-License-Identifier: MIT */
/* test_timer_queue — the loop's timer queue (src/core/timer.c) on its own:
 * the run (timers added in deadline order) and the heap (the others) must
 * together give every timer back in deadline order, whatever the mix of
 * adds, re-adds, cancellations and pops, and the run's array must stay near
 * the number of live timers however many were cancelled. Checked against a
 * plain array model over random operation sequences (with the structures'
 * own invariants after every step), and on the patterns the run is for
 * (equal lengths, re-armed idle timeouts) and the ones that break it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "test_util.h"

#define NT 512

static br__timer timers[NT];
static bool queued[NT]; /* the model: which timers are queued ... */

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next_rand(void) { return br_test_rand(&rng); }

static void reset(br__timer_heap *h) {
  memset(h, 0, sizeof *h);
  for (int i = 0; i < NT; i++) {
    timers[i] = (br__timer){.where = BR__TIMER_IDLE};
    queued[i] = false;
  }
}

/* ... and the earliest of them, as the model sees it. */
static int64_t model_next(void) {
  int64_t best = INT64_MAX;
  for (int i = 0; i < NT; i++)
    if (queued[i] && timers[i].deadline < best) best = timers[i].deadline;
  return best;
}

static size_t model_count(void) {
  size_t n = 0;
  for (int i = 0; i < NT; i++) n += queued[i];
  return n;
}

static void add(br__timer_heap *h, int i, int64_t deadline) {
  assert_int_equal(br__timer_add(h, &timers[i], deadline), 0);
  queued[i] = true;
}

/* Pop everything due by `now`: each popped timer must be due, queued in the
 * model, and no earlier than the one before it; afterwards nothing due may
 * remain. */
static void pop_due(br__timer_heap *h, int64_t now) {
  int64_t last = INT64_MIN;
  br__timer *t;
  while ((t = br__timer_pop_expired(h, now))) {
    int i = (int)(t - timers);
    assert_true(i >= 0 && i < NT);
    assert_true(queued[i]);
    assert_true(t->deadline <= now);
    assert_true(t->deadline >= last);
    assert_int_equal(t->where, BR__TIMER_IDLE);
    last = t->deadline;
    queued[i] = false;
  }
  assert_true(model_next() > now);
}

/* The structures themselves: every run entry and heap node names a timer
 * that knows where it is, the run's keys never go down and its front is
 * live, the heap is a heap. */
static void check_structure(const br__timer_heap *h) {
  size_t live = 0;
  int64_t last = INT64_MIN;
  for (uint32_t q = h->rh; q != h->rt; q++) {
    const br__heap_ent *e = &h->r[q & (h->rcap - 1)];
    assert_true(e->key >= last);
    last = e->key;
    if (!e->t) continue;
    live++;
    assert_int_equal(e->t->where, BR__TIMER_RUN);
    assert_int_equal(e->t->idx, q);
    assert_true(e->t->deadline == e->key);
  }
  assert_int_equal(live, h->nrun);
  if (h->rh != h->rt) assert_non_null(h->r[h->rh & (h->rcap - 1)].t);
  for (size_t i = 0; i < h->n; i++) {
    assert_int_equal(h->a[i].t->where, BR__TIMER_HEAP);
    assert_int_equal(h->a[i].t->idx, i);
    if (i) assert_true(h->a[(i - 1) / 4].key <= h->a[i].key);
  }
}

static void check(br__timer_heap *h) {
  assert_int_equal(br__timer_count(h), model_count());
  assert_int_equal(br__timer_next(h), model_next());
  check_structure(h);
}

/* Random operations; `ordered` makes most deadlines later than every one
 * before (the run's case), otherwise they are uniform in a window. Adds
 * outnumber the rest, so hundreds of timers stay queued: the run wraps
 * around its array, sheds its front to the heap and grows while others are
 * queued.
 * `base` is the run's first sequence number (near UINT32_MAX: the numbers
 * wrap too). */
static void random_ops(bool ordered, int steps, uint32_t base) {
  br__timer_heap h;
  reset(&h);
  h.rh = h.rt = base;
  int64_t clock = 0;
  for (int s = 0; s < steps; s++) {
    int i = (int)(next_rand() % NT);
    unsigned op = (unsigned)(next_rand() % 20);
    if (op < 12) {
      /* Ordered: a few shorter ones among them, which go to the heap. */
      int64_t d = !ordered          ? clock + (int64_t)(next_rand() % 2000)
                  : next_rand() % 16 ? clock + 1000 + (int64_t)(next_rand() % 4)
                                     : clock + (int64_t)(next_rand() % 1000);
      add(&h, i, d); /* re-adds a queued timer too */
    } else if (op < 16) {
      br__timer_del(&h, &timers[i]);
      queued[i] = false;
      assert_int_equal(timers[i].where, BR__TIMER_IDLE);
    } else {
      clock += (int64_t)(next_rand() % (ordered ? 10 : 40));
      pop_due(&h, clock);
    }
    check(&h);
  }
  pop_due(&h, INT64_MAX - 1);
  check(&h);
  assert_int_equal(br__timer_count(&h), 0);
  br__timer_heap_free(&h);
}

static void test_random_uniform(void **state) {
  (void)state;
  random_ops(false, 100000 / br_test_scale(), 0);
  random_ops(false, 100000 / br_test_scale(), UINT32_MAX - 300);
}

static void test_random_ordered(void **state) {
  (void)state;
  random_ops(true, 100000 / br_test_scale(), 0);
  random_ops(true, 100000 / br_test_scale(), UINT32_MAX - 300);
}

/* Equal lengths added in time order all go on the run, leave the heap
 * empty, and come back in the order they were added. */
static void test_equal_lengths_use_the_run(void **state) {
  (void)state;
  br__timer_heap h;
  reset(&h);
  for (int i = 0; i < NT; i++) add(&h, i, 1000 + i / 4);
  assert_int_equal(h.n, 0);
  assert_int_equal(h.nrun, NT);
  for (int i = 0; i < NT; i++) {
    br__timer *t = br__timer_pop_expired(&h, INT64_MAX - 1);
    assert_ptr_equal(t, &timers[i]);
  }
  assert_null(br__timer_pop_expired(&h, INT64_MAX - 1));
  br__timer_heap_free(&h);
}

/* An idle timeout re-armed on every read: a cancellation in the middle of
 * the run and a re-add at its end, in any order of connections; from
 * `base` on (near UINT32_MAX: the front is shed across the wrap of the
 * numbers). */
static void rearmed_timeouts(uint32_t base) {
  br__timer_heap h;
  reset(&h);
  h.rh = h.rt = base;
  int64_t now = 0;
  for (int i = 0; i < NT; i++) add(&h, i, now + 5000);
  for (int r = 0; r < 20000; r++) {
    now += 1;
    add(&h, (int)(next_rand() % NT), now + 5000);
    check(&h);
  }
  /* 20,000 cancellations left holes; the array stayed near the 512 live
   * timers instead of growing with every re-arm (timers that stayed at the
   * front while holes piled up behind them moved to the heap). */
  assert_true(h.rcap <= 4 * NT);
  assert_true(h.nrun > 0);
  pop_due(&h, now + 4999);
  check(&h);
  pop_due(&h, now + 5000);
  assert_int_equal(br__timer_count(&h), 0);
  br__timer_heap_free(&h);
}

static void test_rearmed_timeouts(void **state) {
  (void)state;
  rearmed_timeouts(0);
  rearmed_timeouts(UINT32_MAX - 600);
}

/* A long timer first, then short ones: they cannot follow it on the run,
 * go to the heap, and still fire first. */
static void test_out_of_order_goes_to_the_heap(void **state) {
  (void)state;
  br__timer_heap h;
  reset(&h);
  add(&h, 0, 1000000);
  for (int i = 1; i < 100; i++) add(&h, i, 100 - i);
  assert_int_equal(h.nrun, 1);
  assert_int_equal(h.n, 99);
  assert_int_equal(br__timer_next(&h), 1);
  pop_due(&h, 999999);
  assert_int_equal(br__timer_count(&h), 1);
  assert_int_equal(br__timer_next(&h), 1000000);
  pop_due(&h, 1000000);
  assert_int_equal(br__timer_count(&h), 0);
  /* Equal deadlines on both sides: either may come first, both come. */
  add(&h, 1, 50);
  add(&h, 2, 40);
  add(&h, 3, 50);
  pop_due(&h, 50);
  assert_int_equal(br__timer_count(&h), 0);
  br__timer_heap_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_uniform),
      cmocka_unit_test(test_random_ordered),
      cmocka_unit_test(test_equal_lengths_use_the_run),
      cmocka_unit_test(test_rearmed_timeouts),
      cmocka_unit_test(test_out_of_order_goes_to_the_heap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
