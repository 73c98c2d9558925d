/* SPDX-License-Identifier: MIT */
/* bench/trace_demo.c — a small program with one of each kind of work, to
 * look at with the tracer (docs/trace.md draws it):
 *
 *   fetch-1..3   "download" a page each (a 40..80 ms wait: a timer), send it
 *                down a channel
 *   parser       receives the pages, parses each on the CPU pool (20 ms of
 *                computing), then saves it with a blocking call (br_to_thread,
 *                10 ms)
 *   main         spawns them all and joins them
 *
 *   BRAID_TRACE=demo.json bench_trace_demo
 *   braid trace show demo.json
 *   braid trace svg demo.json -o demo.svg
 *
 * Prints one JSON line (elapsed time), like the other benchmarks. */
#include "bench_common.h"

#include <braid/io.h>
#include <braid/pool.h>
#include <time.h>
#include <unistd.h>

enum { FETCHERS = 3, PAGES = 2 };

static br_chan *pages;
static br_pool *pool;

static void *fetcher(void *arg) {
  long i = (long)(intptr_t)arg;
  for (long p = 0; p < PAGES; p++) {
    int rc = br_sleep_ms(40 + 20 * i); /* the network */
    if (rc == 0) rc = br_chan_send(pages, &i);
    if (rc) return bench_fail(rc, "fetcher", i);
  }
  return NULL;
}

static void *parse(void *arg) {
  int64_t end = br_now() + 20 * 1000000LL; /* 20 ms of computing */
  volatile uint64_t x = 0;
  while (br_now() < end) x++;
  return arg;
}

static void *save(void *arg) {
  usleep(10000); /* a blocking write */
  return arg;
}

static void *parser(void *arg) {
  (void)arg;
  for (int n = 0; n < FETCHERS * PAGES; n++) {
    long page;
    int rc = br_chan_recv(pages, &page);
    br_future *f = NULL;
    if (rc == 0) rc = br_pool_submit(pool, &f, parse, NULL);
    if (rc == 0) rc = br_await(f, NULL);
    br_future_unref(f);
    f = NULL;
    if (rc == 0) rc = br_to_thread(&f, save, NULL);
    if (rc == 0) rc = br_await(f, NULL);
    br_future_unref(f);
    if (rc) return bench_fail(rc, "parser", n);
  }
  return NULL;
}

static void *demo_main(void *arg) {
  (void)arg;
  int rc = br_chan_new(&pages, sizeof(long), 0);
  if (rc == 0) rc = br_pool_new(&pool, 1, NULL);
  if (rc) return bench_fail(rc, "setup", 0);
  br_task *t[FETCHERS + 1];
  for (long i = 0; i < FETCHERS; i++) {
    char name[16];
    snprintf(name, sizeof name, "fetch-%ld", i + 1);
    rc = br_spawn(&t[i], fetcher, (void *)(intptr_t)i, &(br_spawn_opts){.name = name});
    if (rc) return bench_fail(rc, "spawn", i);
  }
  rc = br_spawn(&t[FETCHERS], parser, NULL, &(br_spawn_opts){.name = "parser"});
  if (rc) return bench_fail(rc, "spawn", FETCHERS);
  for (int i = 0; i <= FETCHERS; i++) {
    rc = br_join(t[i], NULL);
    if (rc) return bench_fail(rc, "join", i);
  }
  br_pool_free(pool);
  br_chan_free(pages);
  return NULL;
}

int main(void) {
  int64_t t0 = br_now();
  int rc = br_run(NULL, demo_main, NULL);
  if (rc) {
    fprintf(stderr, "bench_trace_demo: %s\n", br_strerror(rc));
    return 1;
  }
  printf("{\"bench\":\"trace_demo\",\"impl\":\"braid\",\"elapsed_s\":%.6f}\n", (double)(br_now() - t0) / 1e9);
  return 0;
}
