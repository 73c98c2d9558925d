/* SPDX-License-Identifier: MIT */
/* bench/bench_common.h — helpers shared by the benchmark programs in bench/.
 *
 * Header-only (static inline), so bench/CMakeLists.txt needs nothing: it
 * builds each .c and .cpp file in bench/ as a program, never a .h. The parts
 * that only the C programs use (bench_fail, bench_cmp_double) are left out
 * of C++ builds; the rest also serves bench/fib_tbb.cpp.
 *
 * bench/run.py, bench/pool_run.py and bench/procpool_run.py parse what the
 * programs print, so these helpers must not change a byte of it. */
#ifndef BRAID_BENCH_COMMON_H
#define BRAID_BENCH_COMMON_H

#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Option with a value: if argv[*i] is `name` and an argument follows it,
 * step *i onto that argument and return it; otherwise NULL (argv[*i] is then
 * some other option, or `name` missing its value: a usage error). */
static inline const char *bench_arg(int argc, char **argv, int *i, const char *name) {
  if (strcmp(argv[*i], name) != 0 || *i + 1 >= argc) return NULL;
  return argv[++*i];
}

/* Time since t0 (a br_now() reading), in seconds and in milliseconds. */
static inline double bench_s_since(int64_t t0) { return (double)(br_now() - t0) / 1e9; }
static inline double bench_ms_since(int64_t t0) { return (double)(br_now() - t0) / 1e6; }

/* Peak RSS of this process since exec (VmHWM). run.py prefers it to the
 * ru_maxrss of wait4, which also counts the forking Python parent's memory
 * (the kernel carries the pre-exec peak across execve). -1 if unknown. */
static inline long bench_vmhwm_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

/* --quiet S: before each timed run, wait (at most S seconds) until nothing
 * else on the machine is runnable: the 4th field of /proc/loadavg is
 * "running/total", and we are the one running. Our 2-core machines are
 * shared; one busy neighbour halves any speed-up. Returns 1 once quiet (at
 * once when S <= 0), 0 if it never got quiet. */
static inline int bench_quiet_gate(double max_s) {
  if (max_s <= 0) return 1;
  struct timespec nap = {0, 2000000};
  int calm = 0;
  for (double waited = 0; waited < max_s; waited += 0.002) {
    int running = 1, total;
    double a, b, c;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
      if (fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total) != 5) running = 1;
      fclose(f);
    }
    calm = running <= 1 ? calm + 1 : 0;
    if (calm >= 3) return 1;
    nanosleep(&nap, NULL);
  }
  return 0;
}

/* The body of a JSON array of times: t[0..n) with `prec` decimals, comma
 * separated, no brackets. */
static inline void bench_print_times(const double *t, int n, int prec) {
  for (int i = 0; i < n; i++) printf("%s%.*f", i ? "," : "", prec, t[i]);
}

#ifndef __cplusplus
/* For br_fail from a braid task: br_run gives back main's error code but not
 * its message, so print it here too ("what #i: error") and fail with it. */
static inline void *bench_fail(int rc, const char *what, long i) {
  fprintf(stderr, "%s #%ld: %s\n", what, i, br_strerror(rc));
  return br_fail(rc, "%s #%ld", what, i);
}

/* qsort comparator for doubles, ascending. */
static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
#endif /* !__cplusplus */

#endif /* BRAID_BENCH_COMMON_H */
