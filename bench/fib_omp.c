/* bench/fib_omp.c — bench/fib.c over OpenMP tasks (gcc -fopenmp), the same
 * recursion: `#pragma omp task` for fib(n-1), fib(n-2) called directly
 * (variant "one") or as a task too ("two"), then `#pragma omp taskwait`.
 *
 *   bench_fib_omp [-n 30] [-t THREADS] [-r REPEATS] [--quiet S] [--variant one|two]
 *
 * THREADS 0 (default) means br_cpu_count(). Prints one JSON line. Built only
 * when CMake finds OpenMP. */
#include <braid.h>
#include <omp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* --quiet S: before each timed run, wait (at most S seconds) until nothing
 * else on the machine is runnable: the 4th field of /proc/loadavg is
 * "running/total", and we are the one running. Our 2-core machines are
 * shared; one busy neighbour halves any speed-up. Returns 1 once quiet. */
static int quiet_gate(double max_s) {
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

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  long n = 30;
  int threads = 0, reps = 10, quiet_reps = 0;
  double quiet_s = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atol(argv[++i]);
    else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quiet") && i + 1 < argc) quiet_s = atof(argv[++i]);
    else if (!strcmp(argv[i], "--variant") && i + 1 < argc) variant_two = !strcmp(argv[++i], "two");
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
    quiet_reps += quiet_gate(quiet_s);
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
#pragma omp single
    v = fib(n);
    t[r] = (omp_get_wtime() - t0) * 1e3;
  }
  printf("{\"bench\":\"fib\",\"impl\":\"openmp\",\"variant\":\"%s\",\"n\":%ld,\"threads\":%d,"
         "\"value\":%ld,\"times_ms\":[",
         variant_two ? "two" : "one", n, threads, v);
  for (int r = 0; r < reps; r++) printf("%s%.4f", r ? "," : "", t[r]);
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  printf("],\"median_ms\":%.4f,\"min_ms\":%.4f,\"quiet_reps\":%d}\n", t[reps / 2], t[0],
         quiet_reps);
  free(t);
  return 0;
}
