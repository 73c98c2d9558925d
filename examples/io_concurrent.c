/* SPDX-License-Identifier: MIT */
// io_concurrent — the articles' "Step 2": five I/O tasks of 1 s gathered on one
// loop take about one second instead of five.
//
//   async def io_task():
//       await asyncio.sleep(1)
//
//   async def run_concurrent():
//       await asyncio.gather(*(io_task() for _ in range(5)))
//
//   start = time.perf_counter()
//   asyncio.run(run_concurrent())
//   print(f"Elapsed: {time.perf_counter() - start:.2f}s")
//
// expect: ^Elapsed: 1\.[0-9][0-9]s$
// expect-time: 0.9..1.6
#include <stdio.h>

#include <braid.h>

enum { N = 5 };

static void *io_task(void *arg) {
  (void)arg;
  int rc = br_sleep_ms(1000);
  return rc ? br_fail(rc, "io_task: %s", br_strerror(rc)) : NULL;
}

static void *run_concurrent(void *arg) {
  (void)arg;
  br_task *tasks[N];
  for (int i = 0; i < N; i++) {
    int rc = br_spawn(&tasks[i], io_task, NULL, NULL);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }
  br_result results[N];
  int rc = br_gather_tasks(results, tasks, N);
  br_results_free(results, N);
  return rc ? br_fail(rc, "gather: %s", br_strerror(rc)) : NULL;
}

int main(void) {
  int64_t start = br_now(); // monotonic nanoseconds, like time.perf_counter()
  int rc = br_run(NULL, run_concurrent, NULL);
  printf("Elapsed: %.2fs\n", (double)(br_now() - start) / 1e9);
  return rc == 0 ? 0 : 1;
}
