/* SPDX-License-Identifier: MIT */
/* bench/fib.c — fork-join overhead: fib(n) with one task per call, no cutoff.
 *
 *   bench_fib [-n 30] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two] [--vs1]
 *
 * Runs the serial C function and braid's pool (br_pool_fork / br_pool_join)
 * on THREADS workers (0, the default: BR_CPUS, one per usable CPU). Variant "one" (the
 * default) forks fib(n-1) and calls fib(n-2) directly, as TBB's and Cilk's
 * fib do; "two" forks both children. bench/fib_tbb.cpp and bench/fib_omp.c
 * are the same program over oneTBB task_group and OpenMP tasks. --vs1 also
 * runs a one-worker pool, alternating with the main one rep by rep, and
 * reports the median of the paired ratios (pair_speedup): on a shared
 * machine a neighbour's burst then hits both sides of a pair alike.
 * --ceiling measures the machine instead: the serial function run 8 times
 * on 1 thread, then 8 times on each of THREADS plain pthreads at once; the
 * throughput ratio is the best speed-up any runtime could reach here (on our
 * KVM machines it is well below 2 at times: the virtual CPUs are not
 * always two free cores). Prints one JSON line either way.
 * Prints one JSON line; bench/pool_run.py runs them side by side. */
#include <pthread.h>

#include "bench_common.h"

static int variant_two, vs1, ceiling;

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

static volatile long ceiling_n;

static void *serial_batch(void *arg) {
  (void)arg;
  volatile long sink = 0;
  for (int i = 0; i < 8; i++) sink += fib_serial(ceiling_n);
  (void)sink;
  return NULL;
}

/* --ceiling: throughput of `threads` plain threads vs one. */
static int run_ceiling(long n, int threads, int reps, double quiet_s) {
  if (threads <= 0) threads = br_cpu_count();
  ceiling_n = n;
  double *ratio = calloc((size_t)reps, sizeof *ratio);
  pthread_t *t = calloc((size_t)threads, sizeof *t);
  for (int r = 0; r < reps; r++) {
    bench_quiet_gate(quiet_s);
    int64_t t0 = br_now();
    serial_batch(NULL);
    double one = (double)(br_now() - t0);
    bench_quiet_gate(quiet_s);
    t0 = br_now();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, serial_batch, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    ratio[r] = one * threads / (double)(br_now() - t0);
  }
  qsort(ratio, (size_t)reps, sizeof *ratio, bench_cmp_double);
  printf("{\"bench\":\"fib_ceiling\",\"impl\":\"pthreads\",\"n\":%ld,\"threads\":%d,"
         "\"scaling\":%.4f,\"min_scaling\":%.4f,\"max_scaling\":%.4f}\n",
         n, threads, ratio[reps / 2], ratio[0], ratio[reps - 1]);
  free(ratio);
  free(t);
  return 0;
}

/* Submit fib(n) and wait for it: its value, or -1 if the job failed. */
static long run_fib(br_pool *pool, long n) {
  br_future *f;
  void *v = NULL;
  if (br_pool_submit(pool, &f, fib, (void *)(intptr_t)n) != 0) return -1;
  int rc = br_await(f, &v);
  br_future_unref(f);
  return rc ? -1 : (long)(intptr_t)v;
}


static void print_times(const char *key, double *t, int r) {
  printf("\"%s\":[", key);
  bench_print_times(t, r, 4);
  printf("]");
}

int main(int argc, char **argv) {
  long n = 30;
  int threads = BR_CPUS, reps = 10, quiet_reps = 0;
  double quiet_s = 0;
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) n = atol(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-t"))) threads = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-r"))) reps = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--quiet"))) quiet_s = atof(opt);
    else if ((opt = bench_arg(argc, argv, &i, "--variant"))) variant_two = !strcmp(opt, "two");
    else if (!strcmp(argv[i], "--vs1")) vs1 = 1;
    else if (!strcmp(argv[i], "--ceiling")) ceiling = 1;
    else {
      fprintf(stderr, "usage: %s [-n N] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two]\n", argv[0]);
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  if (reps > 1000) reps = 1000;
  if (ceiling) return run_ceiling(n, threads, reps, quiet_s);
  double *ser = calloc((size_t)reps, sizeof *ser), *par = calloc((size_t)reps, sizeof *par);
  double *one = calloc((size_t)reps, sizeof *one), *pair = calloc((size_t)reps, sizeof *pair);

  volatile long vn = n;
  long want = 0;
  for (int r = 0; r < reps; r++) {
    bench_quiet_gate(quiet_s);
    int64_t t0 = br_now();
    want = fib_serial(vn);
    ser[r] = bench_ms_since(t0);
  }

  br_pool *pool = NULL, *pool1 = NULL;
  int rc = br_pool_new(&pool, threads, NULL);
  if (rc == 0 && vs1) rc = br_pool_new(&pool1, 1, NULL);
  if (rc != 0) {
    fprintf(stderr, "br_pool_new: %s\n", br_strerror(rc));
    return 1;
  }
  /* Warm up: fault in the workers' stacks and deques. */
  if (run_fib(pool, n > 20 ? 20 : n) < 0 || (pool1 && run_fib(pool1, n > 20 ? 20 : n) < 0)) return 1;
  br_pool_stats s0, s1;
  br_pool_get_stats(pool, &s0);
  for (int r = 0; r < reps; r++) {
    quiet_reps += bench_quiet_gate(quiet_s);
    int64_t t0 = br_now();
    long v = run_fib(pool, n);
    par[r] = bench_ms_since(t0);
    if (v != want) {
      fprintf(stderr, "fib(%ld) = %ld, want %ld\n", n, v, want);
      return 1;
    }
    if (pool1) {
      bench_quiet_gate(quiet_s);
      t0 = br_now();
      v = run_fib(pool1, n);
      one[r] = bench_ms_since(t0);
      if (v != want) return 1;
      pair[r] = one[r] / par[r];
    }
  }
  br_pool_get_stats(pool, &s1);
  int nt = br_pool_size(pool);
  br_pool_free(pool);
  br_pool_free(pool1);

  printf("{\"bench\":\"fib\",\"impl\":\"braid\",\"variant\":\"%s\",\"n\":%ld,\"threads\":%d,",
         variant_two ? "two" : "one", n, nt);
  print_times("times_ms", par, reps);
  printf(",");
  print_times("serial_ms", ser, reps);
  if (vs1) {
    printf(",");
    print_times("one_thread_ms", one, reps);
    qsort(pair, (size_t)reps, sizeof *pair, bench_cmp_double);
    printf(",\"pair_speedup\":%.4f", pair[reps / 2]);
  }
  qsort(par, (size_t)reps, sizeof *par, bench_cmp_double);
  qsort(ser, (size_t)reps, sizeof *ser, bench_cmp_double);
  printf(",\"median_ms\":%.4f,\"min_ms\":%.4f,\"serial_median_ms\":%.4f,"
         "\"forks_per_run\":%lu,\"steals_per_run\":%.1f,\"quiet_reps\":%d}\n",
         par[reps / 2], par[0], ser[reps / 2], (unsigned long)((s1.forks - s0.forks) / (uint64_t)reps),
         (double)(s1.steals - s0.steals) / reps, quiet_reps);
  free(ser);
  free(par);
  free(one);
  free(pair);
  return 0;
}
