/* SPDX-License-Identifier: MIT */
// thread_io_task_braid — thread_io_task.c's program with braid, two ways.
//
// 1. Blocking code as it is (time.sleep, a legacy library call): run it on
//    the blocking pool with br_to_thread — asyncio.to_thread — and await the
//    three futures together. The loop stays free meanwhile.
// 2. Code written for braid: br_sleep_ms only suspends the task, so three
//    tasks on one thread wait at the same time (asyncio.sleep).
//
// Both take about one second, not three.
//
// expect: ^done-[0-2]$
// expect: ^done-[0-2]$
// expect: ^done-[0-2]$
// expect: ^done-0$
// expect: ^done-1$
// expect: ^done-2$
// expect-time: 1.8..3.2
#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* The articles' io_task, unchanged: it blocks its thread. */
static void *io_task(void *arg) {
  int i = (int)(intptr_t)arg;
  sleep(1);
  printf("done-%d\n", i);
  fflush(stdout);
  return NULL;
}

/* The same written for braid: only this task waits. */
static void *io_task_async(void *arg) {
  int i = (int)(intptr_t)arg;
  br_sleep_ms(1000);
  printf("done-%d\n", i);
  return NULL;
}

static void *main_task(void *arg) {
  (void)arg;
  br_future *f[3];
  for (int i = 0; i < 3; i++) {
    int rc = br_to_thread(&f[i], io_task, (void *)(intptr_t)i);
    if (rc) {
      while (i-- > 0) br_future_unref(f[i]); // those queued run on; we drop our references
      return br_fail(rc, "to_thread: %s", br_strerror(rc));
    }
  }
  br_result r[3];
  int rc = br_gather(r, f, 3);
  br_results_free(r, 3);
  for (int i = 0; i < 3; i++) br_future_unref(f[i]);
  if (rc) return br_fail(rc, "to_thread");

  br_task *t[3];
  for (int i = 0; i < 3; i++) {
    rc = br_spawn(&t[i], io_task_async, (void *)(intptr_t)i, NULL);
    if (rc) {
      while (i-- > 0) br_task_close(t[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }
  rc = br_gather_tasks(r, t, 3);
  br_results_free(r, 3);
  return rc ? br_fail(rc, "a task failed") : NULL;
}

int main(void) { return br_run(NULL, main_task, NULL) == 0 ? 0 : 1; }
