/* SPDX-License-Identifier: MIT */
/* bench/switch.c — the cost of a task switch.
 *
 *   --mode chan   (default) ping-pong between two tasks over two unbuffered
 *                 channels (br_chan, cap 0) for -n round trips. Each round
 *                 trip is two hops and each hop is one switch, so the figure
 *                 is elapsed / (2n).
 *   --mode yield  two tasks that only br_yield() to each other, -n times
 *                 each: the bare switch through the scheduler, elapsed / (2n).
 *   --compact     spawn both tasks with BR_SPAWN_COMPACT (shared stack).
 *   --acct M      loop accounting: default, off, fast or precise.
 *
 * Prints one JSON line; bench/run.py compares it with the Go and asyncio
 * peers in bench/peers/. */
#include "bench_common.h"

typedef struct {
  br_chan *ping, *pong;
  long n;
} pingpong;

static void *pinger(void *arg) {
  pingpong *p = arg;
  for (long i = 0; i < p->n; i++) {
    long v = i;
    int rc = br_chan_send(p->ping, &v);
    if (rc == 0) rc = br_chan_recv(p->pong, &v);
    if (rc < 0) return bench_fail(rc, "pinger round trip", i);
    if (v != i) return br_fail(BR_EIO, "pinger: got %ld, sent %ld", v, i);
  }
  return NULL;
}

static void *ponger(void *arg) {
  pingpong *p = arg;
  for (long i = 0; i < p->n; i++) {
    long v;
    int rc = br_chan_recv(p->ping, &v);
    if (rc == 0) rc = br_chan_send(p->pong, &v);
    if (rc < 0) return bench_fail(rc, "ponger round trip", i);
  }
  return NULL;
}

static void *yielder(void *arg) {
  long n = *(long *)arg;
  for (long i = 0; i < n; i++) {
    int rc = br_yield();
    if (rc < 0) return bench_fail(rc, "br_yield", i);
  }
  return NULL;
}

typedef struct {
  const char *mode;
  long n;
  bool compact;
  double elapsed_s;
} config;

static void *bench_main(void *arg) {
  config *c = arg;
  br_spawn_opts so = {.flags = c->compact ? BR_SPAWN_COMPACT : 0};
  br_task *a = NULL, *b = NULL;
  pingpong p = {0};
  long n = c->n;
  int rc;

  if (strcmp(c->mode, "chan") == 0) {
    p.n = c->n;
    (void)br_chan_new(&p.ping, sizeof(long), 0);
    (void)br_chan_new(&p.pong, sizeof(long), 0);
    if (!p.ping || !p.pong) return bench_fail(BR_ENOMEM, "br_chan_new", 0);
  }
  int64_t t0 = br_now();
  if (p.ping) {
    rc = br_spawn(&a, pinger, &p, &so);
    if (rc == 0) rc = br_spawn(&b, ponger, &p, &so);
  } else {
    rc = br_spawn(&a, yielder, &n, &so);
    if (rc == 0) rc = br_spawn(&b, yielder, &n, &so);
  }
  if (rc < 0) return bench_fail(rc, "br_spawn", 0);
  int ra = br_join(a, NULL);
  int rb = br_join(b, NULL);
  int64_t t1 = br_now();
  if (ra < 0 || rb < 0) return bench_fail(ra < 0 ? ra : rb, "worker task", ra < 0 ? 0 : 1);
  c->elapsed_s = (double)(t1 - t0) / 1e9;
  if (p.ping) {
    br_chan_free(p.ping);
    br_chan_free(p.pong);
  }
  return NULL;
}

static int usage(void) {
  fprintf(stderr, "usage: bench_switch [-n N] [--mode chan|yield] [--compact] "
                  "[--acct default|off|fast|precise]\n");
  return 2;
}

int main(int argc, char **argv) {
  config c = {.mode = "chan", .n = 5000000};
  br_loop_opts lo = {0};
  const char *acct = "default";
  const char *opt;
  for (int i = 1; i < argc; i++) {
    if ((opt = bench_arg(argc, argv, &i, "-n"))) {
      c.n = strtol(opt, NULL, 0);
    } else if ((opt = bench_arg(argc, argv, &i, "--mode"))) {
      c.mode = opt;
    } else if (strcmp(argv[i], "--compact") == 0) {
      c.compact = true;
    } else if ((opt = bench_arg(argc, argv, &i, "--acct"))) {
      acct = opt;
    } else {
      return usage();
    }
  }
  if (c.n <= 0 || (strcmp(c.mode, "chan") != 0 && strcmp(c.mode, "yield") != 0)) return usage();
  if (strcmp(acct, "off") == 0) lo.accounting = BR_ACCT_OFF;
  else if (strcmp(acct, "fast") == 0) lo.accounting = BR_ACCT_FAST;
  else if (strcmp(acct, "precise") == 0) lo.accounting = BR_ACCT_PRECISE;
  else if (strcmp(acct, "default") != 0) return usage();

  int rc = br_run_opts(NULL, bench_main, &c, &lo);
  if (rc < 0) {
    fprintf(stderr, "bench_switch: %s\n", br_strerror(rc));
    return 1;
  }
  long ops = 2 * c.n;
  printf("{\"bench\":\"switch\",\"impl\":\"braid\",\"mode\":\"%s\",\"n\":%ld,\"ops\":%ld,"
         "\"compact\":%s,\"acct\":\"%s\",\"vmhwm_kib\":%ld,\"elapsed_s\":%.9f,\"ns_per_op\":%.3f}\n",
         c.mode, c.n, ops, c.compact ? "true" : "false", acct, bench_vmhwm_kib(), c.elapsed_s,
         c.elapsed_s * 1e9 / (double)ops);
  return 0;
}
