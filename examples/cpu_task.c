/* SPDX-License-Identifier: MIT */
// cpu_task — "CPU-bound: number crunching": four sums of squares of a million
// numbers, in parallel on the CPU pool's threads. In C there is no GIL, so
// threads are true parallelism: what Python needs multiprocessing (or
// free-threading) for.
//
//   from multiprocessing import Pool
//
//   def cpu_task(n):
//       return sum(i**2 for i in range(n))
//
//   with Pool(4) as p:
//       results = p.map(cpu_task, [10**6] * 4)
//
// The article does not print the results; print(results) would show:
// expect: ^\[333332833333500000, 333332833333500000, 333332833333500000, 333332833333500000\]$
// and how long it took, against the same work done serially:
// expect: ^4 jobs in [0-9.]+ ms on [0-9]+ worker threads \(serial: [0-9.]+ ms\)$
#include <stdint.h>
#include <stdio.h>

#include <braid.h>

static void *cpu_task(void *arg) {
  int64_t n = (int64_t)(intptr_t)arg;
  // volatile: keep the compiler from turning the loop into the closed form,
  // so this stays the CPU-bound work the article means.
  volatile int64_t sum = 0;
  for (int64_t i = 0; i < n; i++) sum += i * i;
  return (void *)(intptr_t)sum;
}

int main(void) {
  enum { N = 4 };
  void *items[N];
  for (int i = 0; i < N; i++) items[i] = (void *)(intptr_t)1000000; // [10**6] * 4
  br_result results[N];

  br_pool *pool;
  int rc = br_pool_new(&pool, 4, NULL); // Pool(4)
  if (rc != 0) {
    fprintf(stderr, "br_pool_new: %s\n", br_strerror(rc));
    return 1;
  }
  int64_t t0 = br_now();
  rc = br_pool_map(pool, results, cpu_task, items, N, 1); // p.map(cpu_task, ...)
  int64_t t1 = br_now();
  br_pool_free(pool); // leaving the `with` block
  if (rc != 0) {
    fprintf(stderr, "map failed: %s\n", br_strerror(rc));
    return 1;
  }

  int64_t s0 = br_now();
  for (int i = 0; i < N; i++) (void)cpu_task(items[i]);
  int64_t s1 = br_now();

  printf("[");
  for (int i = 0; i < N; i++)
    printf("%s%lld", i ? ", " : "", (long long)(intptr_t)results[i].value);
  printf("]\n");
  printf("%d jobs in %.1f ms on %d worker threads (serial: %.1f ms)\n", N, (t1 - t0) / 1e6, 4,
         (s1 - s0) / 1e6);
  br_results_free(results, N);
  return 0;
}
