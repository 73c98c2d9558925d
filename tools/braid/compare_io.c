/* braid compare — the I/O-bound workload: each task waits W ms.
 *
 * Blocking code waits the way blocking code does (the thread sleeps in the
 * kernel, like time.sleep); a coroutine waits with br_sleep_ms (like
 * asyncio.sleep): only the task suspends, its loop runs the others. */
#include <errno.h>
#include <time.h>

#include <braid.h>

#include "compare.h"

static void io_blocking(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  struct timespec ts = {.tv_sec = w->ms / 1000, .tv_nsec = (w->ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  cmp_task_end(t, t0);
}

static int io_coroutine(const cmp_work *w, cmp_task *t, int64_t t0) {
  cmp_task_begin(t, t0);
  int rc = br_sleep_ms(w->ms);
  cmp_task_end(t, t0);
  return rc;
}

int cmp_work_io(cmp_work *w, const cmp_opts *o) {
  *w = (cmp_work){.kind = CMP_IO,
                  .ms = o->wait_ms,
                  .blocking = io_blocking,
                  .coroutine = io_coroutine};
  return 0;
}
