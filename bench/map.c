/* SPDX-License-Identifier: MIT */
/* bench/map.c — data parallelism: map a ~10 ms pure-CPU function over 64
 * items, serially and with br_pool_map (chunk 1), as Python's
 * multiprocessing.Pool.map would.
 *
 *   bench_map [-n 64] [--ms 10] [--iters I] [-t THREADS] [-r REPEATS] [--quiet S]
 *
 * The item function runs I iterations of a 64-bit LCG (nothing to vectorise
 * or fold away); without --iters, I is calibrated here to take --ms
 * milliseconds. bench/pool_run.py calibrates once and passes the same I to
 * bench_map_omp, so both do identical work. Serial and parallel runs
 * alternate so noise hits both alike. Prints one JSON line. */
#include "bench_common.h"

__attribute__((noinline)) static uint64_t work(uint64_t iters) {
  uint64_t x = iters | 1;
  for (uint64_t i = 0; i < iters; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x;
}

static void *item(void *arg) { return (void *)(uintptr_t)work((uint64_t)(uintptr_t)arg); }

static uint64_t calibrate(double ms) {
  uint64_t probe = 1000000;
  double best = 1e30;
  for (int i = 0; i < 5; i++) {
    int64_t t0 = br_now();
    volatile uint64_t sink = work(probe);
    (void)sink;
    double dt = (double)(br_now() - t0);
    if (dt < best) best = dt;
  }
  return (uint64_t)((double)probe * ms * 1e6 / best);
}

int main(int argc, char **argv) {
  int n = 64, threads = BR_CPUS, reps = 3, quiet_reps = 0;
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
  if (!iters) iters = calibrate(ms);
  void **items = malloc((size_t)n * sizeof *items);
  uint64_t *want = malloc((size_t)n * sizeof *want);
  br_result *out = malloc((size_t)n * sizeof *out);
  double *ser = malloc((size_t)reps * sizeof *ser), *par = malloc((size_t)reps * sizeof *par);
  for (int i = 0; i < n; i++) items[i] = (void *)(uintptr_t)(iters + (uint64_t)i % 2);

  br_pool *pool;
  int err = br_pool_new(&pool, threads, NULL);
  if (err != 0) {
    fprintf(stderr, "br_pool_new: %s\n", br_strerror(err));
    return 1;
  }
  for (int r = 0; r < reps; r++) {
    quiet_reps += bench_quiet_gate(quiet_s);
    int64_t t0 = br_now();
    for (int i = 0; i < n; i++) want[i] = work((uint64_t)(uintptr_t)items[i]);
    ser[r] = bench_ms_since(t0);
    quiet_reps += bench_quiet_gate(quiet_s);
    t0 = br_now();
    int rc = br_pool_map(pool, out, item, items, (size_t)n, 1);
    par[r] = bench_ms_since(t0);
    if (rc != 0) {
      fprintf(stderr, "map: %s\n", br_strerror(rc));
      return 1;
    }
    for (int i = 0; i < n; i++)
      if ((uint64_t)(uintptr_t)out[i].value != want[i]) {
        fprintf(stderr, "map: item %d wrong\n", i);
        return 1;
      }
  }
  int nt = br_pool_size(pool);
  br_pool_free(pool);
  printf("{\"bench\":\"map\",\"impl\":\"braid\",\"items\":%d,\"item_ms\":%.3f,\"iters\":%llu,"
         "\"threads\":%d,\"times_ms\":[",
         n, ms, (unsigned long long)iters, nt);
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
  free(items);
  free(want);
  free(out);
  free(ser);
  free(par);
  return 0;
}
