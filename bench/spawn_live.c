/* SPDX-License-Identifier: MIT */
/* bench/spawn_live.c — many tasks alive at once.
 *
 * -n tasks (default 1,000,000) are all spawned before any of them runs; each
 * yields once (br_yield) so that all n are suspended at the same time, then
 * returns; the main task joins them all. The figure is elapsed / n. With
 * --compact the tasks use BR_SPAWN_COMPACT (shared stack, copied out while
 * suspended). The JSON line also reports how many tasks were alive at the
 * peak, which must equal n. */
#include "bench_common.h"

typedef struct {
  long n;
  bool compact;
  double elapsed_s;
  long alive, peak;
} config;

static void *once(void *arg) {
  config *c = arg;
  if (++c->alive > c->peak) c->peak = c->alive;
  int rc = br_yield();
  c->alive--;
  return rc < 0 ? br_fail(rc, "br_yield") : NULL;
}

static void *bench_main(void *arg) {
  config *c = arg;
  br_spawn_opts so = {.flags = c->compact ? BR_SPAWN_COMPACT : 0};
  br_task **h = malloc((size_t)c->n * sizeof *h);
  if (!h) return bench_fail(BR_ENOMEM, "malloc handles", 0);

  int64_t t0 = br_now();
  for (long i = 0; i < c->n; i++) {
    int rc = br_spawn(&h[i], once, c, &so);
    if (rc < 0) return bench_fail(rc, "br_spawn", i);
  }
  for (long i = 0; i < c->n; i++) {
    int rc = br_join(h[i], NULL);
    if (rc < 0) return bench_fail(rc, "br_join", i);
  }
  c->elapsed_s = bench_s_since(t0);
  free(h);
  return NULL;
}

int main(int argc, char **argv) {
  config c = {.n = 1000000};
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) {
      c.n = strtol(opt, NULL, 0);
    } else if (strcmp(argv[i], "--compact") == 0) {
      c.compact = true;
    } else {
      fprintf(stderr, "usage: bench_spawn_live [-n N] [--compact]\n");
      return 2;
    }
  }
  if (c.n <= 0) return 2;

  int rc = br_run(NULL, bench_main, &c);
  if (rc < 0) {
    fprintf(stderr, "bench_spawn_live: %s\n", br_strerror(rc));
    return 1;
  }
  printf("{\"bench\":\"spawn_live\",\"impl\":\"braid\",\"n\":%ld,\"ops\":%ld,\"compact\":%s,"
         "\"peak_alive\":%ld,\"vmhwm_kib\":%ld,\"elapsed_s\":%.9f,\"ns_per_op\":%.3f}\n",
         c.n, c.n, c.compact ? "true" : "false", c.peak, bench_vmhwm_kib(), c.elapsed_s,
         c.elapsed_s * 1e9 / (double)c.n);
  return 0;
}
