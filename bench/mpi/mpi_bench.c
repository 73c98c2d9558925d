/* SPDX-License-Identifier: MIT */
/* mpi_bench — braid-mpi's costs, one JSON line per measurement (printed by
 * rank 0), for bench/mpi_run.py to set beside mpi4py.futures and beside
 * braid's local process pool in the same run:
 *
 *   mpirun -np R mpi_bench cpu N MS       N jobs of MS ms of CPU each (thread
 *                                         CPU clock) mapped over R-1 worker
 *                                         ranks, automatic chunks: wall ms and
 *                                         efficiency N*MS / (workers * wall)
 *   mpi_bench cpu N MS local W            the same map on a local br_procpool
 *                                         of W workers (no mpirun)
 *   mpirun -np R mpi_bench overhead N     N empty jobs, each submitted on its
 *                                         own (one future each), then all
 *                                         awaited: us per job
 *   mpirun -np R mpi_bench map N          map_fixed of N empty items,
 *                                         automatic chunks: us per item
 *
 * Every timed part starts after a warm-up map that every worker rank has
 * served (so all ranks reported in) and ends when the last outcome is in;
 * creating the pool and mpirun's own start are not counted. Built by
 * bench/mpi_run.py against the shared libbraid-mpi and libbraid of a build
 * directory. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <braid.h>
#include <braid/mpi.h>

#include "../bench_jobs.h"


static void die(const char *what, int rc) {
  fprintf(stderr, "mpi_bench: %s: %s\n", what, br_strerror(rc));
  exit(1);
}

/* The executor under test: MPI ranks or a local process pool. */
typedef struct bench_pool {
  br_mpipool *mp;
  br_procpool *local;
  int workers;
} bench_pool;

static int map_fixed(bench_pool *b, void *out, const char *job, const void *in, size_t n) {
  if (b->local) return br_procpool_map_fixed(b->local, out, 8, NULL, job, in, 8, n, NULL);
  return br_mpipool_map_fixed(b->mp, out, 8, NULL, job, in, 8, n, NULL);
}

static int submit(bench_pool *b, br_future **f, const char *job, const void *in, size_t len) {
  if (b->local) return br_procpool_submit(b->local, f, job, in, len, NULL);
  return br_mpipool_submit(b->mp, f, job, in, len, NULL);
}

/* Every worker serves a few items before anything is timed. */
static void warm(bench_pool *b) {
  size_t n = 64 * (size_t)b->workers;
  int64_t *in = malloc(n * 8), *out = malloc(n * 8);
  for (size_t i = 0; i < n; i++) in[i] = (int64_t)i;
  int rc = map_fixed(b, out, "noop", in, n);
  if (rc < 0) die("warm-up map", rc);
  free(in);
  free(out);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  long n = argc > 2 ? atol(argv[2]) : 0;
  bench_pool b = {0};
  bool local = argc > 5 && strcmp(argv[4], "local") == 0;
  if (local) {
    b.workers = atoi(argv[5]);
    int rc = br_procpool_new(&b.local, b.workers, NULL);
    if (rc < 0) die("br_procpool_new", rc);
  } else {
    int rc = br_mpipool_new(&b.mp, &argc, &argv, NULL);
    if (rc < 0) die("br_mpipool_new", rc);
    if (rc == BR_MPIPOOL_SERVED) return br_mpi_finalize() < 0;
    if (br_mpipool_is_local(b.mp)) {
      fprintf(stderr, "mpi_bench: run it under mpirun (or give: cpu N MS local W)\n");
      return 2;
    }
    b.workers = br_mpipool_size(b.mp);
  }
  warm(&b);

  const char *kind = local ? "local" : "mpi";
  int bad = 0;
  if (!strcmp(mode, "cpu")) {
    int64_t ms = argc > 3 ? atol(argv[3]) : 10;
    if (n <= 0) n = 64;
    int64_t *in = malloc((size_t)n * 8), *out = malloc((size_t)n * 8);
    for (long i = 0; i < n; i++) in[i] = ms;
    int64_t t0 = br_now();
    int rc = map_fixed(&b, out, "burn", in, (size_t)n);
    double wall = (double)(br_now() - t0) / 1e6;
    for (long i = 0; i < n && rc == 0; i++) bad += out[i] != ms;
    if (rc < 0) bad = (int)n;
    printf("{\"mode\":\"cpu\",\"pool\":\"%s\",\"workers\":%d,\"n\":%ld,\"ms\":%lld,"
           "\"wall_ms\":%.3f,\"efficiency\":%.4f,\"failed\":%d}\n",
           kind, b.workers, n, (long long)ms, wall,
           (double)n * (double)ms / ((double)b.workers * wall), bad);
    free(in);
    free(out);
  } else if (!strcmp(mode, "overhead")) {
    if (n <= 0) n = 20000;
    br_future **f = malloc((size_t)n * sizeof *f);
    int64_t t0 = br_now();
    for (long i = 0; i < n; i++) {
      int64_t x = i;
      int rc = submit(&b, &f[i], "noop", &x, 8);
      if (rc < 0) die("submit", rc);
    }
    for (long i = 0; i < n; i++) {
      void *v = NULL;
      if (br_await(f[i], &v) != 0) bad++;
      else br_bytes_free(v); /* a submitted job's value is the caller's once awaited */
      br_future_unref(f[i]);
    }
    double dt = (double)(br_now() - t0);
    printf("{\"mode\":\"overhead\",\"pool\":\"%s\",\"workers\":%d,\"n\":%ld,"
           "\"us_per_job\":%.3f,\"failed\":%d}\n",
           kind, b.workers, n, dt / 1e3 / (double)n, bad);
    free(f);
  } else if (!strcmp(mode, "map")) {
    if (n <= 0) n = 1000000;
    int64_t *in = malloc((size_t)n * 8), *out = malloc((size_t)n * 8);
    for (long i = 0; i < n; i++) in[i] = i;
    int64_t t0 = br_now();
    int rc = map_fixed(&b, out, "noop", in, (size_t)n);
    double dt = (double)(br_now() - t0);
    for (long i = 0; i < n && rc == 0; i++) bad += out[i] != i;
    if (rc < 0) bad = (int)n;
    printf("{\"mode\":\"map\",\"pool\":\"%s\",\"workers\":%d,\"n\":%ld,"
           "\"us_per_item\":%.4f,\"failed\":%d}\n",
           kind, b.workers, n, dt / 1e3 / (double)n, bad);
    free(in);
    free(out);
  } else {
    fprintf(stderr, "usage: mpi_bench cpu N MS [local W] | overhead N | map N\n");
    bad = -1;
  }
  if (b.local) br_procpool_free(b.local);
  if (b.mp) br_mpipool_free(b.mp);
  br_mpi_finalize();
  return bad ? 1 : 0;
}
