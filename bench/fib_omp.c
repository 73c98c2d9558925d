/* SPDX-License-Identifier: MIT */
/* bench/fib_omp.c — bench/fib.c over OpenMP tasks (gcc -fopenmp), the same
 * recursion: `#pragma omp task` for fib(n-1), fib(n-2) called directly
 * (variant "one") or as a task too ("two"), then `#pragma omp taskwait`.
 *
 *   bench_fib_omp [-n 30] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two]
 *
 * THREADS 0 (default) means br_cpu_count(). Prints one JSON line. Built only
 * when CMake finds OpenMP. */
#include <omp.h>

#include "bench_common.h"

static int variant_two;

static long fib(long n) {
  if (n < 2) return n;
  long a, b;
#pragma omp task shared(a) firstprivate(n)
  a = fib(n - 1);
  if (variant_two) {
#pragma omp task shared(b) firstprivate(n)
    b = fib(n - 2);
  } else {
    b = fib(n - 2);
  }
#pragma omp taskwait
  return a + b;
}

int main(int argc, char **argv) {
  long n = 30;
  int threads = 0, reps = 10, quiet_reps = 0;
  double quiet_s = 0;
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) n = atol(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-t"))) threads = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-r"))) reps = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--quiet"))) quiet_s = atof(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--variant"))) variant_two = !strcmp(opt, "two");
    else {
      fprintf(stderr, "usage: %s [-n N] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two]\n", argv[0]);
      return 2;
    }
  }
  if (threads <= 0) threads = br_cpu_count();
  if (reps < 1) reps = 1;
  if (reps > 1000) reps = 1000;
  double *t = calloc((size_t)reps, sizeof *t);
  long v = 0;
  /* Warm up the thread team. */
#pragma omp parallel num_threads(threads)
#pragma omp single
  v = fib(n > 20 ? 20 : n);
  for (int r = 0; r < reps; r++) {
    quiet_reps += bench_quiet_gate(quiet_s);
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
#pragma omp single
    v = fib(n);
    t[r] = (omp_get_wtime() - t0) * 1e3;
  }
  printf("{\"bench\":\"fib\",\"impl\":\"openmp\",\"variant\":\"%s\",\"n\":%ld,\"threads\":%d,"
         "\"value\":%ld,\"times_ms\":[",
         variant_two ? "two" : "one", n, threads, v);
  bench_print_times(t, reps, 4);
  qsort(t, (size_t)reps, sizeof *t, bench_cmp_double);
  printf("],\"median_ms\":%.4f,\"min_ms\":%.4f,\"quiet_reps\":%d}\n", t[reps / 2], t[0],
         quiet_reps);
  free(t);
  return 0;
}
