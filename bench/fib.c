/* bench/fib.c — fork-join overhead: fib(n) with one task per call, no cutoff.
 *
 *   bench_fib [-n 30] [-t THREADS] [-r REPEATS] [--variant one|two]
 *
 * Runs the serial C function and braid's pool (br_pool_fork / br_pool_join)
 * on THREADS workers (0, the default: br_cpu_count()). Variant "one" (the
 * default) forks fib(n-1) and calls fib(n-2) directly, as TBB's and Cilk's
 * fib do; "two" forks both children. bench/fib_tbb.cpp and bench/fib_omp.c
 * are the same program over oneTBB task_group and OpenMP tasks.
 * Prints one JSON line; bench/pool_run.py runs them side by side. */
#include <braid.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int variant_two;

static void *fib(void *arg) {
  long n = (long)(intptr_t)arg;
  if (n < 2) return arg;
  br_fork fa, fb;
  void *a = NULL, *b = NULL;
  br_pool_fork(&fa, fib, (void *)(intptr_t)(n - 1));
  if (variant_two) {
    br_pool_fork(&fb, fib, (void *)(intptr_t)(n - 2));
    br_pool_join(&fb, &b);
  } else {
    b = fib((void *)(intptr_t)(n - 2));
  }
  br_pool_join(&fa, &a);
  return (void *)(intptr_t)((long)(intptr_t)a + (long)(intptr_t)b);
}

/* noinline + the volatile input keep the compiler from folding the serial
 * baseline into something that is no longer the same recursion. */
__attribute__((noinline)) static long fib_serial(long n) {
  return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void print_times(const char *key, double *t, int r) {
  printf("\"%s\":[", key);
  for (int i = 0; i < r; i++) printf("%s%.4f", i ? "," : "", t[i]);
  printf("]");
}

int main(int argc, char **argv) {
  long n = 30;
  int threads = 0, reps = 10;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atol(argv[++i]);
    else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--variant") && i + 1 < argc) variant_two = !strcmp(argv[++i], "two");
    else {
      fprintf(stderr, "usage: %s [-n N] [-t THREADS] [-r REPEATS] [--variant one|two]\n", argv[0]);
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  if (reps > 1000) reps = 1000;
  double *ser = calloc((size_t)reps, sizeof *ser), *par = calloc((size_t)reps, sizeof *par);

  volatile long vn = n;
  long want = 0;
  for (int r = 0; r < reps; r++) {
    int64_t t0 = br_now();
    want = fib_serial(vn);
    ser[r] = (br_now() - t0) / 1e6;
  }

  br_pool *pool = br_pool_new(threads, NULL);
  if (!pool) {
    perror("br_pool_new");
    return 1;
  }
  /* Warm up: fault in the workers' stacks and deques. */
  br_future *f;
  void *v;
  br_pool_submit(pool, &f, fib, (void *)(intptr_t)(n > 20 ? 20 : n));
  br_await(f, NULL);
  br_future_unref(f);
  br_pool_stats s0, s1;
  br_pool_get_stats(pool, &s0);
  for (int r = 0; r < reps; r++) {
    int64_t t0 = br_now();
    if (br_pool_submit(pool, &f, fib, (void *)(intptr_t)n) != 0 || br_await(f, &v) != 0) {
      fprintf(stderr, "fib job failed\n");
      return 1;
    }
    par[r] = (br_now() - t0) / 1e6;
    br_future_unref(f);
    if ((long)(intptr_t)v != want) {
      fprintf(stderr, "fib(%ld) = %ld, want %ld\n", n, (long)(intptr_t)v, want);
      return 1;
    }
  }
  br_pool_get_stats(pool, &s1);
  int nt = br_pool_size(pool);
  br_pool_free(pool);

  printf("{\"bench\":\"fib\",\"impl\":\"braid\",\"variant\":\"%s\",\"n\":%ld,\"threads\":%d,",
         variant_two ? "two" : "one", n, nt);
  print_times("times_ms", par, reps);
  printf(",");
  print_times("serial_ms", ser, reps);
  qsort(par, (size_t)reps, sizeof *par, cmp_double);
  qsort(ser, (size_t)reps, sizeof *ser, cmp_double);
  printf(",\"median_ms\":%.4f,\"min_ms\":%.4f,\"serial_median_ms\":%.4f,"
         "\"forks_per_run\":%lu,\"steals_per_run\":%.1f}\n",
         par[reps / 2], par[0], ser[reps / 2], (unsigned long)((s1.forks - s0.forks) / (uint64_t)reps),
         (double)(s1.steals - s0.steals) / reps);
  free(ser);
  free(par);
  return 0;
}
