/* SPDX-License-Identifier: MIT */
/* bench/map_omp.c — bench/map.c with OpenMP: `#pragma omp parallel for
 * schedule(dynamic, 1)` over the same 64 items of the same LCG work.
 *
 *   bench_map_omp [-n 64] [--ms 10] [--iters I] [-t THREADS] [-r REPEATS] [--quiet S]
 *
 * THREADS 0 (default) means br_cpu_count(). Prints one JSON line. Built only
 * when CMake finds OpenMP. */
#include <omp.h>

#include "bench_common.h"

__attribute__((noinline)) static uint64_t work(uint64_t iters) {
  uint64_t x = iters | 1;
  for (uint64_t i = 0; i < iters; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x;
}

static uint64_t calibrate(double ms) {
  uint64_t probe = 1000000;
  double best = 1e30;
  for (int i = 0; i < 5; i++) {
    double t0 = omp_get_wtime();
    volatile uint64_t sink = work(probe);
    (void)sink;
    double dt = omp_get_wtime() - t0;
    if (dt < best) best = dt;
  }
  return (uint64_t)((double)probe * ms * 1e-3 / best);
}

int main(int argc, char **argv) {
  int n = 64, threads = 0, reps = 3, quiet_reps = 0;
  double quiet_s = 0;
  double ms = 10;
  uint64_t iters = 0;
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) n = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--ms"))) ms = atof(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--iters"))) iters = strtoull(opt, NULL, 10);
    else if ((opt = bench_arg(argc, argv, &i, "-t"))) threads = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-r"))) reps = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--quiet"))) quiet_s = atof(opt);
    else {
      fprintf(stderr, "usage: %s [-n N] [--ms MS] [--iters I] [-t THREADS] [-r REPEATS] [--quiet S]\n", argv[0]);
      return 2;
    }
  }
  if (n < 1 || reps < 1 || reps > 100) return 2;
  if (threads <= 0) threads = br_cpu_count();
  if (!iters) iters = calibrate(ms);
  uint64_t *in = malloc((size_t)n * sizeof *in), *out = malloc((size_t)n * sizeof *out);
  uint64_t *want = malloc((size_t)n * sizeof *want);
  double *ser = malloc((size_t)reps * sizeof *ser), *par = malloc((size_t)reps * sizeof *par);
  for (int i = 0; i < n; i++) in[i] = iters + (uint64_t)i % 2;
#pragma omp parallel num_threads(threads)
  { /* start the team */
  }
  for (int r = 0; r < reps; r++) {
    quiet_reps += bench_quiet_gate(quiet_s);
    double t0 = omp_get_wtime();
    for (int i = 0; i < n; i++) want[i] = work(in[i]);
    ser[r] = (omp_get_wtime() - t0) * 1e3;
    quiet_reps += bench_quiet_gate(quiet_s);
    t0 = omp_get_wtime();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = 0; i < n; i++) out[i] = work(in[i]);
    par[r] = (omp_get_wtime() - t0) * 1e3;
    for (int i = 0; i < n; i++)
      if (out[i] != want[i]) {
        fprintf(stderr, "item %d wrong\n", i);
        return 1;
      }
  }
  printf("{\"bench\":\"map\",\"impl\":\"openmp\",\"items\":%d,\"item_ms\":%.3f,\"iters\":%llu,"
         "\"threads\":%d,\"times_ms\":[",
         n, ms, (unsigned long long)iters, threads);
  bench_print_times(par, reps, 3);
  printf("],\"serial_ms\":[");
  bench_print_times(ser, reps, 3);
  double best = 0;
  for (int r = 0; r < reps; r++)
    if (ser[r] / par[r] > best) best = ser[r] / par[r];
  qsort(par, (size_t)reps, sizeof *par, bench_cmp_double);
  qsort(ser, (size_t)reps, sizeof *ser, bench_cmp_double);
  printf("],\"median_ms\":%.3f,\"serial_median_ms\":%.3f,\"speedup\":%.3f,\"best_pair_speedup\":%.3f,"
         "\"quiet_reps\":%d}\n",
         par[reps / 2], ser[reps / 2], ser[reps / 2] / par[reps / 2], best, quiet_reps);
  free(in);
  free(out);
  free(want);
  free(ser);
  free(par);
  return 0;
}
