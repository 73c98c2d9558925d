/* SPDX-License-Identifier: MIT */
/* bench/profile_tree.c — a process tree for measuring what `braid profile`
 * costs: T threads (default 100) that each compute about 1 ms and sleep 9 ms
 * in turns for S seconds (default 5), so the sampler always has a full
 * table of threads in every state. Run it under `braid profile --json`
 * (bench/profile_run.py does) and read profiler_cpu_s / wall_s.
 *
 *   bench_profile_tree [-t THREADS] [-s SECONDS]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_common.h"

static double seconds = 5;

static void *worker(void *arg) {
  (void)arg;
  int64_t end = br_now() + (int64_t)(seconds * 1e9);
  volatile uint64_t x = 1;
  while (br_now() < end) {
    int64_t until = br_now() + 1000000;
    while (br_now() < until)
      for (int i = 0; i < 1000; i++) x = x * 6364136223846793005u + 1;
    struct timespec ts = {0, 9000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  }
  return NULL;
}

int main(int argc, char **argv) {
  int threads = 100;
  for (int i = 1; i < argc; i++) {
    const char *v;
    if ((v = bench_arg(argc, argv, &i, "-t"))) threads = atoi(v);
    else if ((v = bench_arg(argc, argv, &i, "-s"))) seconds = atof(v);
    else {
      fprintf(stderr, "usage: bench_profile_tree [-t THREADS] [-s SECONDS]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > 10000 || !(seconds > 0)) {
    fprintf(stderr, "bench_profile_tree: bad -t or -s\n");
    return 2;
  }
  pthread_t *th = calloc((size_t)threads, sizeof *th);
  if (!th) return 1;
  for (int i = 0; i < threads; i++)
    if (pthread_create(&th[i], NULL, worker, NULL) != 0) return 1;
  for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
  free(th);
  return 0;
}
