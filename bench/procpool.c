/* SPDX-License-Identifier: MIT */
/* bench_procpool — the process pool's costs, one JSON line per
 * measurement, for bench/procpool_run.py to set beside Python's
 * multiprocessing.Pool and ProcessPoolExecutor:
 *
 *   bench_procpool overhead N   N trivial jobs, each submitted on its own
 *                               (one future each), then all awaited: us/job
 *   bench_procpool map N        map_fixed over N items, automatic chunks:
 *                               us/item
 *   bench_procpool startup K    1 + K x (create pool + one job + shut down):
 *                               the first (it starts the process's fork
 *                               server: an exec of this program) on its own,
 *                               then the K later ones (they reuse it): ms,
 *                               median and min, and create / job / shutdown
 *   bench_procpool cpu N MS     N jobs of MS ms of CPU each (thread CPU
 *                               clock), mapped with automatic chunks, against
 *                               the same jobs run one after another here:
 *                               speed-up
 *
 * Workers: one per usable CPU (BR_CPUS), as Python's Pool().
 */
#include "bench_common.h"
#include "bench_jobs.h"

static br_procpool *pool(void) {
  br_procpool *p;
  int r = br_procpool_new(&p, BR_CPUS, NULL);
  if (r < 0) {
    fprintf(stderr, "br_procpool_new: %s\n", br_strerror(r));
    exit(1);
  }
  return p;
}

static void warm(br_procpool *p) {
  int64_t in[64], out[64];
  for (int i = 0; i < 64; i++) in[i] = i;
  br_procpool_map_fixed(p, out, 8, NULL, "noop", in, 8, 64, NULL);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "overhead";
  long n = argc > 2 ? atol(argv[2]) : 0;
  if (!strcmp(mode, "overhead")) {
    if (n <= 0) n = 200000;
    br_procpool *p = pool();
    warm(p);
    br_future **f = malloc((size_t)n * sizeof *f);
    int64_t t0 = br_now();
    for (long i = 0; i < n; i++) {
      int64_t x = i;
      if (br_procpool_submit(p, &f[i], "noop", &x, 8, NULL) < 0) return 1;
    }
    long bad = 0;
    for (long i = 0; i < n; i++) {
      void *v;
      if (br_await(f[i], &v) != 0) bad++;
      else br_bytes_free(v);
      br_future_unref(f[i]);
    }
    double dt = (double)(br_now() - t0);
    br_procpool_free(p);
    free(f);
    printf("{\"mode\":\"overhead\",\"n\":%ld,\"workers\":%d,\"us_per_job\":%.4f,\"failed\":%ld}\n", n,
           br_cpu_count(), dt / 1e3 / (double)n, bad);
  } else if (!strcmp(mode, "map")) {
    if (n <= 0) n = 2000000;
    br_procpool *p = pool();
    warm(p);
    int64_t *in = malloc((size_t)n * 8), *out = malloc((size_t)n * 8);
    for (long i = 0; i < n; i++) in[i] = i;
    int64_t t0 = br_now();
    int r = br_procpool_map_fixed(p, out, 8, NULL, "noop", in, 8, (size_t)n, NULL);
    double dt = (double)(br_now() - t0);
    br_procpool_free(p);
    for (long i = 0; i < n && r == 0; i++)
      if (out[i] != i) r = -1;
    printf("{\"mode\":\"map\",\"n\":%ld,\"us_per_item\":%.5f,\"ok\":%s}\n", n, dt / 1e3 / (double)n,
           r == 0 ? "true" : "false");
    free(in);
    free(out);
  } else if (!strcmp(mode, "startup")) {
    if (n <= 0) n = 30;
    double *tot = malloc((size_t)(n + 1) * sizeof *tot), *cr = malloc((size_t)(n + 1) * sizeof *cr),
           *jb = malloc((size_t)(n + 1) * sizeof *jb), *sd = malloc((size_t)(n + 1) * sizeof *sd);
    double first = 0, first_cr = 0, first_jb = 0, first_sd = 0;
    for (long k = -1; k < n; k++) {
      int64_t t0 = br_now();
      br_procpool *p = pool();
      int64_t t1 = br_now();
      int64_t x = 7;
      br_future *f;
      void *v;
      if (br_procpool_submit(p, &f, "noop", &x, 8, NULL) < 0 || br_await(f, &v) != 0) return 1;
      br_bytes_free(v);
      br_future_unref(f);
      int64_t t2 = br_now();
      br_procpool_free(p);
      int64_t t3 = br_now();
      if (k < 0) {
        first = (double)(t3 - t0) / 1e6;
        first_cr = (double)(t1 - t0) / 1e6;
        first_jb = (double)(t2 - t1) / 1e6;
        first_sd = (double)(t3 - t2) / 1e6;
        continue;
      }
      tot[k] = (double)(t3 - t0) / 1e6;
      cr[k] = (double)(t1 - t0) / 1e6;
      jb[k] = (double)(t2 - t1) / 1e6;
      sd[k] = (double)(t3 - t2) / 1e6;
    }
    qsort(tot, (size_t)n, 8, bench_cmp_double);
    qsort(cr, (size_t)n, 8, bench_cmp_double);
    qsort(jb, (size_t)n, 8, bench_cmp_double);
    qsort(sd, (size_t)n, 8, bench_cmp_double);
    printf("{\"mode\":\"startup\",\"n\":%ld,\"ms_median\":%.3f,\"ms_min\":%.3f,"
           "\"create_ms\":%.3f,\"job_ms\":%.3f,\"shutdown_ms\":%.3f,\"first_ms\":%.3f,"
           "\"first_create_ms\":%.3f,\"first_job_ms\":%.3f,\"first_shutdown_ms\":%.3f}\n",
           n, tot[n / 2], tot[0], cr[n / 2], jb[n / 2], sd[n / 2], first, first_cr, first_jb,
           first_sd);
    free(tot), free(cr), free(jb), free(sd);
  } else if (!strcmp(mode, "cpu")) {
    if (n <= 0) n = 64;
    int64_t ms = argc > 3 ? atol(argv[3]) : 10;
    int64_t *in = malloc((size_t)n * 8), *out = malloc((size_t)n * 8);
    for (long i = 0; i < n; i++) in[i] = ms;
    /* Sequential, here. */
    int64_t t0 = br_now();
    for (long i = 0; i < n; i++) {
      br_bytes b = {0};
      burn(&in[i], 8, &b);
      br_bytes_clear(&b);
    }
    double seq = (double)(br_now() - t0) / 1e6;
    br_procpool *p = pool();
    warm(p);
    t0 = br_now();
    int r = br_procpool_map_fixed(p, out, 8, NULL, "burn", in, 8, (size_t)n, NULL);
    double par = (double)(br_now() - t0) / 1e6;
    br_procpool_free(p);
    printf("{\"mode\":\"cpu\",\"n\":%ld,\"job_ms\":%lld,\"workers\":%d,\"sequential_ms\":%.2f,"
           "\"parallel_ms\":%.2f,\"speedup\":%.3f,\"ok\":%s}\n",
           n, (long long)ms, br_cpu_count(), seq, par, seq / par, r == 0 ? "true" : "false");
    free(in);
    free(out);
  } else {
    fprintf(stderr, "usage: %s overhead|map|startup|cpu [N] [MS]\n", argv[0]);
    return 2;
  }
  return 0;
}
