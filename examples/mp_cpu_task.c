/* SPDX-License-Identifier: MIT */
// mp_cpu_task — "CPU-bound: number crunching (use multiprocessing)": four
// sums of squares of a million numbers, one per worker process, in parallel.
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
// and the time it took (one job's time, not four, given four free cores):
// expect: ^4 jobs in [0-9.]+ ms on 4 worker processes$
#include <stdio.h>
#include <string.h>

#include <braid.h>

static int cpu_task(const void *in, size_t len, br_bytes *out) {
  int64_t n;
  if (len != sizeof n) {
    br_fail(BR_EINVAL, "cpu_task wants an int64");
    return BR_EINVAL;
  }
  memcpy(&n, in, sizeof n);
  // volatile: keep the compiler from turning the loop into the closed form,
  // so this stays the CPU-bound work the article means.
  volatile int64_t sum = 0;
  for (int64_t i = 0; i < n; i++) sum += i * i;
  int64_t s = sum;
  return br_bytes_set(out, &s, sizeof s);
}
BR_JOB(cpu_task, cpu_task);

int main(void) {
  int64_t t0 = br_now();
  br_procpool *p;
  int rc = br_procpool_new(&p, 4, NULL);
  if (rc < 0) {
    fprintf(stderr, "pool: %s\n", br_strerror(rc));
    return 1;
  }
  const int64_t args[4] = {1000000, 1000000, 1000000, 1000000}; // [10**6] * 4
  int64_t results[4];
  rc = br_procpool_map_fixed(p, results, sizeof *results, NULL, "cpu_task", args, sizeof *args, 4,
                             NULL);
  br_procpool_free(p);
  if (rc < 0) {
    fprintf(stderr, "map: %s\n", br_strerror(rc));
    return 1;
  }
  printf("[%lld, %lld, %lld, %lld]\n", (long long)results[0], (long long)results[1],
         (long long)results[2], (long long)results[3]);
  printf("4 jobs in %.1f ms on 4 worker processes\n", (double)(br_now() - t0) / 1e6);
  return 0;
}
