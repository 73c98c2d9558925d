/* SPDX-License-Identifier: MIT */
/* braid compare — the I/O-bound workload: each task waits W ms.
 *
 * Blocking code waits the way blocking code does (the thread sleeps in the
 * kernel, like time.sleep); a coroutine waits with br_sleep_ms (like
 * asyncio.sleep): only the task suspends, its loop runs the others. A wait
 * cannot be split: a task is one piece. */
#include <errno.h>
#include <time.h>

#include <braid.h>

#include "compare.h"

void cmp_io_wait(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void io_blocking(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  cmp_io_wait(w->ms);
  cmp_task_waited(t, t0);
  cmp_task_end(t, t0);
}

static void io_piece(const cmp_work *w, long k) {
  (void)k;
  cmp_io_wait(w->ms);
}

static int io_coroutine(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  int rc = br_sleep_ms(w->ms);
  cmp_task_waited(t, t0);
  cmp_task_end(t, t0);
  return rc;
}

void cmp_io_bodies(cmp_work *w) {
  w->computes = false;
  w->pieces = 1;
  w->blocking = io_blocking;
  w->coroutine = io_coroutine;
  w->piece = io_piece;
}

int cmp_work_io(cmp_work *w, const cmp_opts *o) {
  *w = (cmp_work){.kind = CMP_IO, .ms = o->wait_ms};
  cmp_io_bodies(w);
  return 0;
}
