/* SPDX-License-Identifier: MIT */
// perf_snapshot — the articles' performance comparison snapshot for an I/O-like
// workload: five waits of 1 s run one after another, on five threads, and as
// five coroutines on one braid loop.
//
//   def io_sleep(): time.sleep(1)
//   def run_sequential(): for _ in range(5): io_sleep()
//   def run_threading():  5 x threading.Thread(target=io_sleep), start, join
//   async def run_asyncio(): await asyncio.gather(*(asyncio.sleep(1) for _ in range(5)))
//
//   print(f"Sequential: {seq_time:.2f}s")
//   print(f"Threading : {thr_time:.2f}s")
//   print(f"Asyncio   : {async_time:.2f}s")
//
// `braid compare` is the full version (CPU time, timelines, CPU-bound work).
//
// expect: ^Sequential: 5\.[0-9][0-9]s$
// expect: ^Threading : 1\.[0-9][0-9]s$
// expect: ^Asyncio   : 1\.[0-9][0-9]s$
// expect-time: 6.9..8.5
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <braid.h>

enum { N = 5, WAIT_MS = 1000 };

static double seconds_since(int64_t start) { return (double)(br_now() - start) / 1e9; }

// time.sleep(1): the calling thread blocks in the kernel.
static void *io_sleep(void *arg) {
  (void)arg;
  struct timespec ts = {.tv_sec = WAIT_MS / 1000, .tv_nsec = (WAIT_MS % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  return NULL;
}

static double run_sequential(void) {
  int64_t start = br_now();
  for (int i = 0; i < N; i++) io_sleep(NULL);
  return seconds_since(start);
}

static double run_threading(void) {
  int64_t start = br_now();
  pthread_t threads[N];
  int started = 0;
  for (; started < N; started++) {
    int rc = pthread_create(&threads[started], NULL, io_sleep, NULL);
    if (rc != 0) {
      fprintf(stderr, "pthread_create: %s\n", strerror(rc));
      break;
    }
  }
  for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
  return seconds_since(start);
}

// asyncio.sleep(1): only this task suspends, the loop runs the others.
static void *async_sleep(void *arg) {
  (void)arg;
  int rc = br_sleep_ms(WAIT_MS);
  return rc ? br_fail(rc, "sleep: %s", br_strerror(rc)) : NULL;
}

static void *run_asyncio(void *out) {
  int64_t start = br_now();
  br_task *tasks[N];
  for (int i = 0; i < N; i++) {
    int rc = br_spawn(&tasks[i], async_sleep, NULL, NULL);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }
  br_result results[N];
  int rc = br_gather_tasks(results, tasks, N);
  br_results_free(results, N);
  *(double *)out = seconds_since(start);
  return rc ? br_fail(rc, "gather: %s", br_strerror(rc)) : NULL;
}

int main(void) {
  double seq_time = run_sequential();
  double thr_time = run_threading();
  double async_time = 0;
  if (br_run(NULL, run_asyncio, &async_time) != 0) return 1;

  printf("Sequential: %.2fs\n", seq_time);
  printf("Threading : %.2fs\n", thr_time);
  printf("Asyncio   : %.2fs\n", async_time);
  return 0;
}
