/* SPDX-License-Identifier: MIT */
/* bench/fib_tbb.cpp — bench/fib.c over oneTBB's task_group (Debian
 * libtbb-dev), the same recursion: g.run(fib(n-1)), fib(n-2) called directly
 * (variant "one") or run as a task too ("two"), then g.wait().
 *
 *   bench_fib_tbb [-n 30] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two]
 *
 * THREADS 0 (default) means br_cpu_count(); the limit is set with
 * tbb::global_control (the calling thread counts as one of them, as the
 * OpenMP master does). Prints one JSON line. */
#include <tbb/global_control.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench_common.h"

static bool variant_two;

static long fib(long n) {
  if (n < 2) return n;
  long a, b;
  tbb::task_group g;
  g.run([&] { a = fib(n - 1); });
  if (variant_two) g.run([&] { b = fib(n - 2); });
  else b = fib(n - 2);
  g.wait();
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
  reps = std::max(1, std::min(reps, 1000));
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, (size_t)threads);
  long v = fib(n > 20 ? 20 : n); /* warm up the arena */
  std::vector<double> t((size_t)reps);
  for (int r = 0; r < reps; r++) {
    quiet_reps += bench_quiet_gate(quiet_s);
    auto t0 = std::chrono::steady_clock::now();
    v = fib(n);
    t[(size_t)r] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  printf("{\"bench\":\"fib\",\"impl\":\"tbb\",\"variant\":\"%s\",\"n\":%ld,\"threads\":%d,"
         "\"value\":%ld,\"times_ms\":[",
         variant_two ? "two" : "one", n, threads, v);
  bench_print_times(t.data(), reps, 4);
  std::sort(t.begin(), t.end());
  printf("],\"median_ms\":%.4f,\"min_ms\":%.4f,\"quiet_reps\":%d}\n", t[(size_t)reps / 2], t[0],
         quiet_reps);
  return 0;
}
