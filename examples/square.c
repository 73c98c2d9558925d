/* SPDX-License-Identifier: MIT */
// square — map a function over a sequence on the CPU pool, the articles' two
// versions: a pool of 4 over range(10), and a pool with one worker per CPU
// (Pool() with no argument) over [1, 2, 3, 4, 5].
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
//       with Pool() as pool:
//           print(pool.map(square, [1, 2, 3, 4, 5]))
//
// Expected output:
// expect: ^\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81\]$
// expect: ^\[1, 4, 9, 16, 25\]$
#include <stdint.h>
#include <stdio.h>

#include <braid.h>

static void *square(void *arg) {
  intptr_t n = (intptr_t)arg;
  return (void *)(n * n);
}

// print(list): Python's format for a list of ints.
static void print_list(const br_result *r, size_t n) {
  printf("[");
  for (size_t i = 0; i < n; i++) printf("%s%ld", i ? ", " : "", (long)(intptr_t)r[i].value);
  printf("]\n");
}

static int map_and_print(int threads, void *const *items, size_t n) {
  br_result out[16];
  br_pool *pool;
  int rc = br_pool_new(&pool, threads, NULL); // threads == BR_CPUS: one per CPU
  if (rc != 0) {
    fprintf(stderr, "br_pool_new: %s\n", br_strerror(rc));
    return 1;
  }
  rc = br_pool_map(pool, out, square, items, n, 0);
  br_pool_free(pool);
  if (rc != 0) {
    fprintf(stderr, "map failed: %s\n", br_strerror(rc));
    return 1;
  }
  print_list(out, n);
  br_results_free(out, n);
  return 0;
}

int main(void) {
  void *range10[10];
  for (int i = 0; i < 10; i++) range10[i] = (void *)(intptr_t)i;
  void *five[5] = {(void *)1, (void *)2, (void *)3, (void *)4, (void *)5};
  if (map_and_print(4, range10, 10)) return 1; // Pool(4), range(10)
  return map_and_print(BR_CPUS, five, 5);      // Pool(), [1, 2, 3, 4, 5]
}
