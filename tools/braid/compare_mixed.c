/* SPDX-License-Identifier: MIT */
/* braid compare — the mixed workload: each task waits W ms, then computes
 * C ms. The articles' scraper in miniature: fetch (waiting), then parse
 * (computing). Blocking code sleeps and then burns the calibrated loop; a
 * coroutine awaits the sleep (its loop runs the others meanwhile) and then
 * computes on the loop thread, which no other task of that loop can use
 * until it is done: the coroutines overlap the waits, not the computing. */
#include <braid.h>

#include "compare.h"

static void mixed_blocking(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  cmp_io_wait(w->ms);
  cmp_task_waited(t, t0);
  cmp_compute_ms(w, w->compute_ms);
  cmp_task_end(t, t0);
}

static void mixed_piece(const cmp_work *w, long k) {
  (void)k;
  cmp_io_wait(w->ms);
  cmp_compute_ms(w, w->compute_ms);
}

static int mixed_coroutine(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  int rc = br_sleep_ms(w->ms);
  cmp_task_waited(t, t0);
  if (rc == 0) cmp_compute_ms(w, w->compute_ms);
  cmp_task_end(t, t0);
  return rc;
}

void cmp_mixed_bodies(cmp_work *w) {
  w->computes = false; /* threads: one per task (the waits overlap, the computing spreads) */
  w->pieces = 1;
  w->blocking = mixed_blocking;
  w->coroutine = mixed_coroutine;
  w->piece = mixed_piece;
}

int cmp_work_mixed(cmp_work *w, const cmp_opts *o) {
  *w = (cmp_work){.kind = CMP_MIXED,
                  .ms = o->wait_ms,
                  .compute_ms = o->compute_ms,
                  .iters_per_ms = cmp_calibrate()};
  cmp_mixed_bodies(w);
  return 0;
}
