/* SPDX-License-Identifier: MIT */
/* bench/pool_spawn.c — what a pool task costs.
 *
 *   bench_pool_spawn [-n 10000000] [-t THREADS] [-r REPEATS]
 *
 * Three figures, each the median over REPEATS:
 *  - fork_join_ns: one br_pool_fork + br_pool_join of an empty child in a
 *    loop inside one job (the child is usually not stolen: the fast path).
 *  - tree_ns: a binary tree of n empty tasks (each internal node forks one
 *    half, recurses into the other, joins), on THREADS workers: spawn +
 *    sync per task with stealing going on.
 *  - submit_us: br_pool_submit + br_await of an empty job from a plain
 *    thread, one at a time (a round trip through the injection queue and a
 *    worker wake-up), and submit_batch_us: per job when 10,000 are submitted
 *    before any is awaited.
 * Prints one JSON line. */
#include "bench_common.h"

static void *empty(void *arg) { return arg; }

static void *fork_loop(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++) {
    br_fork f;
    br_pool_fork(&f, empty, NULL);
    br_pool_join(&f, NULL);
  }
  return NULL;
}

typedef struct {
  long lo, hi;
} span;

static void *tree(void *arg) {
  span *s = arg;
  long n = s->hi - s->lo;
  if (n <= 1) return NULL;
  long mid = s->lo + n / 2;
  span right = {mid, s->hi}, left = {s->lo, mid};
  br_fork f;
  br_pool_fork(&f, tree, &right);
  tree(&left);
  br_pool_join(&f, NULL);
  return NULL;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return v[n / 2];
}

static double run_job_ms(br_pool *p, br_pool_fn fn, void *arg) {
  br_future *f;
  int64_t t0 = br_now();
  if (br_pool_submit(p, &f, fn, arg) != 0 || br_await(f, NULL) != 0) {
    fprintf(stderr, "job failed\n");
    exit(1);
  }
  double ms = (br_now() - t0) / 1e6;
  br_future_unref(f);
  return ms;
}

int main(int argc, char **argv) {
  long n = 10000000;
  int threads = BR_CPUS, reps = 5;
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) n = atol(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-t"))) threads = atoi(opt);
    else if ((opt = bench_arg(argc, argv, &i, "-r"))) reps = atoi(opt);
    else {
      fprintf(stderr, "usage: %s [-n N] [-t THREADS] [-r REPEATS]\n", argv[0]);
      return 2;
    }
  }
  if (reps < 1 || reps > 100 || n < 2) return 2;
  br_pool *p;
  int err = br_pool_new(&p, threads, NULL);
  if (err != 0) {
    fprintf(stderr, "br_pool_new: %s\n", br_strerror(err));
    return 1;
  }
  double fj[100], tr[100], sub[100], bat[100];
  run_job_ms(p, fork_loop, (void *)(intptr_t)1000); /* warm up */
  for (int r = 0; r < reps; r++) {
    fj[r] = run_job_ms(p, fork_loop, (void *)(intptr_t)n) * 1e6 / (double)n;
    span all = {0, n};
    /* n leaves means n-1 forks; count every spawned task. */
    tr[r] = run_job_ms(p, tree, &all) * 1e6 / (double)(n - 1);

    enum { ROUND = 2000, BATCH = 10000 };
    int64_t t0 = br_now();
    for (int i = 0; i < ROUND; i++) run_job_ms(p, empty, NULL);
    sub[r] = (br_now() - t0) / 1e3 / ROUND;

    static br_future *fs[BATCH];
    t0 = br_now();
    for (int i = 0; i < BATCH; i++)
      if (br_pool_submit(p, &fs[i], empty, NULL) != 0) return 1;
    for (int i = 0; i < BATCH; i++) {
      br_await(fs[i], NULL);
      br_future_unref(fs[i]);
    }
    bat[r] = (br_now() - t0) / 1e3 / BATCH;
  }
  printf("{\"bench\":\"pool_spawn\",\"impl\":\"braid\",\"threads\":%d,\"n\":%ld,"
         "\"fork_join_ns\":%.2f,\"tree_ns\":%.2f,\"submit_us\":%.2f,\"submit_batch_us\":%.3f}\n",
         br_pool_size(p), n, median(fj, reps), median(tr, reps), median(sub, reps),
         median(bat, reps));
  br_pool_free(p);
  return 0;
}
