/* SPDX-License-Identifier: MIT */
/* bench/sleepers.c — many idle tasks waiting on timers.
 *
 * -n tasks (default 100,000) each sleep --ms milliseconds (default 1000) with
 * br_sleep_ms, all at the same time; the main task joins them all. The
 * figure is the wall time from the first spawn to the last join (ideally
 * just over the sleep); bench/run.py adds the process's peak RSS. --compact
 * spawns with BR_SPAWN_COMPACT. */
#include "bench_common.h"

typedef struct {
  long n, ms;
  bool compact;
  double elapsed_s;
  long alive, peak;
} config;

static void *sleeper(void *arg) {
  config *c = arg;
  if (++c->alive > c->peak) c->peak = c->alive;
  int rc = br_sleep_ms(c->ms);
  c->alive--;
  return rc < 0 ? br_fail(rc, "br_sleep_ms") : NULL;
}

static void *bench_main(void *arg) {
  config *c = arg;
  br_spawn_opts so = {.flags = c->compact ? BR_SPAWN_COMPACT : 0};
  br_task **h = malloc((size_t)c->n * sizeof *h);
  if (!h) return bench_fail(BR_ENOMEM, "malloc handles", 0);

  int64_t t0 = br_now();
  for (long i = 0; i < c->n; i++) {
    int rc = br_spawn(&h[i], sleeper, c, &so);
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
  config c = {.n = 100000, .ms = 1000};
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) {
      c.n = strtol(opt, NULL, 0);
    } else if ((opt = bench_arg(argc, argv, &i, "--ms"))) {
      c.ms = strtol(opt, NULL, 0);
    } else if (strcmp(argv[i], "--compact") == 0) {
      c.compact = true;
    } else {
      fprintf(stderr, "usage: bench_sleepers [-n N] [--ms MS] [--compact]\n");
      return 2;
    }
  }
  if (c.n <= 0 || c.ms < 0) return 2;

  int rc = br_run(NULL, bench_main, &c);
  if (rc < 0) {
    fprintf(stderr, "bench_sleepers: %s\n", br_strerror(rc));
    return 1;
  }
  printf("{\"bench\":\"sleepers\",\"impl\":\"braid\",\"n\":%ld,\"ms\":%ld,\"ops\":%ld,"
         "\"compact\":%s,\"peak_alive\":%ld,\"vmhwm_kib\":%ld,\"elapsed_s\":%.9f,\"ns_per_op\":%.3f}\n",
         c.n, c.ms, c.n, c.compact ? "true" : "false", c.peak, bench_vmhwm_kib(), c.elapsed_s,
         c.elapsed_s * 1e9 / (double)c.n);
  return 0;
}
