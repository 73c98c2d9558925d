/* SPDX-License-Identifier: MIT */
// mp_square — a pool with one worker process per CPU (Pool() with no
// argument), used as a context: created, mapped over, shut down.
//
//   from multiprocessing import Pool
//
//   def square(n):
//       return n * n
//
//   if __name__ == "__main__":
//       with Pool() as pool:
//           print(pool.map(square, [1, 2, 3, 4, 5]))
//
// Expected output:
// expect: ^\[1, 4, 9, 16, 25\]$
#include <stdio.h>
#include <string.h>

#include <braid.h>

static int square(const void *in, size_t len, br_bytes *out) {
  int64_t n;
  if (len != sizeof n) {
    br_fail(BR_EINVAL, "square wants an int64");
    return BR_EINVAL;
  }
  memcpy(&n, in, sizeof n);
  n = n * n;
  return br_bytes_set(out, &n, sizeof n);
}
BR_JOB(square, square);

int main(void) {
  br_procpool *pool;
  // Pool(): as many workers as this process may use CPUs.
  int rc = br_procpool_new(&pool, BR_CPUS, NULL);
  if (rc < 0) {
    fprintf(stderr, "pool: %s\n", br_strerror(rc));
    return 1;
  }
  const int64_t items[] = {1, 2, 3, 4, 5};
  int64_t out[5];
  rc = br_procpool_map_fixed(pool, out, sizeof *out, NULL, "square", items, sizeof *items, 5, NULL);
  br_procpool_free(pool); // the end of the with block
  if (rc < 0) {
    fprintf(stderr, "map: %s\n", br_strerror(rc));
    return 1;
  }
  printf("[");
  for (int i = 0; i < 5; i++) printf("%s%lld", i ? ", " : "", (long long)out[i]);
  printf("]\n");
  return 0;
}
