/* SPDX-License-Identifier: MIT */
/* bench/spawn_churn.c — the cost of a short-lived task.
 *
 * -n tasks (default 1,000,000) are spawned and joined in waves of --wave
 * (default 1,000): spawn a wave, join it, repeat. Each task returns at once,
 * so the figure, elapsed / n, is spawn + first switch + exit + join.
 * --compact spawns with BR_SPAWN_COMPACT. Prints one JSON line. */
#include "bench_common.h"

typedef struct {
  long n, wave;
  bool compact;
  double elapsed_s;
} config;

static void *nothing(void *arg) { return arg; }

static void *bench_main(void *arg) {
  config *c = arg;
  br_spawn_opts so = {.flags = c->compact ? BR_SPAWN_COMPACT : 0};
  br_task **h = malloc((size_t)c->wave * sizeof *h);
  if (!h) return bench_fail(BR_ENOMEM, "malloc handles", 0);

  int64_t t0 = br_now();
  for (long done = 0; done < c->n;) {
    long k = c->n - done < c->wave ? c->n - done : c->wave;
    for (long i = 0; i < k; i++) {
      int rc = br_spawn(&h[i], nothing, NULL, &so);
      if (rc < 0) return bench_fail(rc, "br_spawn", done + i);
    }
    for (long i = 0; i < k; i++) {
      int rc = br_join(h[i], NULL);
      if (rc < 0) return bench_fail(rc, "br_join", done + i);
    }
    done += k;
  }
  c->elapsed_s = bench_s_since(t0);
  free(h);
  return NULL;
}

int main(int argc, char **argv) {
  config c = {.n = 1000000, .wave = 1000};
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) {
      c.n = strtol(opt, NULL, 0);
    } else if ((opt = bench_arg(argc, argv, &i, "--wave"))) {
      c.wave = strtol(opt, NULL, 0);
    } else if (strcmp(argv[i], "--compact") == 0) {
      c.compact = true;
    } else {
      fprintf(stderr, "usage: bench_spawn_churn [-n N] [--wave W] [--compact]\n");
      return 2;
    }
  }
  if (c.n <= 0 || c.wave <= 0) return 2;

  int rc = br_run(NULL, bench_main, &c);
  if (rc < 0) {
    fprintf(stderr, "bench_spawn_churn: %s\n", br_strerror(rc));
    return 1;
  }
  printf("{\"bench\":\"spawn_churn\",\"impl\":\"braid\",\"n\":%ld,\"wave\":%ld,\"ops\":%ld,"
         "\"compact\":%s,\"vmhwm_kib\":%ld,\"elapsed_s\":%.9f,\"ns_per_op\":%.3f}\n",
         c.n, c.wave, c.n, c.compact ? "true" : "false", bench_vmhwm_kib(), c.elapsed_s,
         c.elapsed_s * 1e9 / (double)c.n);
  return 0;
}
