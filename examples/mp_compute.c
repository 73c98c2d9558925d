/* SPDX-License-Identifier: MIT */
// mp_compute — parallelism with worker processes: map compute(x) = x * x over
// range(10) on a pool of four processes. Each worker is a process of its own,
// so the jobs run on every core at once (and a crash in one could not take
// the program down).
//
//   from multiprocessing import Pool
//
//   def compute(x: int) -> int:
//       return x * x
//
//   if __name__ == "__main__":
//       with Pool(4) as p:
//           result = p.map(compute, range(10))
//       print(result)
//
// expect: ^\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81\]$
#include <stdio.h>
#include <string.h>

#include <braid.h>

// A job reads bytes and writes bytes: here one int64 in, one int64 out.
static int compute(const void *in, size_t len, br_bytes *out) {
  int64_t x;
  if (len != sizeof x) {
    br_fail(BR_EINVAL, "compute wants an int64");
    return BR_EINVAL;
  }
  memcpy(&x, in, sizeof x);
  x = x * x;
  return br_bytes_set(out, &x, sizeof x);
}
// Registered at build time, so every worker process finds it by name.
BR_JOB(compute, compute);

int main(void) {
  br_procpool *p;
  int rc = br_procpool_new(&p, 4, NULL); // with Pool(4) as p:
  if (rc < 0) {
    fprintf(stderr, "pool: %s\n", br_strerror(rc));
    return 1;
  }
  int64_t in[10], result[10];
  for (int i = 0; i < 10; i++) in[i] = i; // range(10)
  rc = br_procpool_map_fixed(p, result, sizeof *result, NULL, "compute", in, sizeof *in, 10, NULL);
  br_procpool_free(p);
  if (rc < 0) {
    fprintf(stderr, "map: %s\n", br_strerror(rc));
    return 1;
  }
  printf("[");
  for (int i = 0; i < 10; i++) printf("%s%lld", i ? ", " : "", (long long)result[i]);
  printf("]\n");
  return 0;
}
