/* SPDX-License-Identifier: MIT */
/* bench/ctx_switch.c — the bare context switch (sys layer), without the
 * scheduler: two contexts that switch to each other -n times. This is the
 * figure the issue compares with a raw boost.context jump (~5.8 ns here):
 * braid's br__ctx_switch saves the callee-saved registers and the FP control
 * state, as boost's jump_fcontext does.
 *
 * Prints one JSON line: ns per switch. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../src/sys/switch.h"

static br__ctx main_ctx, co_ctx;
static long iters;

/* Both sides switch from this one call site, as braid's tasks do (they all
 * switch inside the scheduler's few functions): the return predictor then
 * guesses right. --asym switches from two different call sites instead,
 * the worst case for a `ret`-based switch. */
__attribute__((noinline)) static void hop_loop(br__ctx *self, br__ctx *other, long n) {
  for (long i = 0; i < n; i++) br__ctx_switch(self, other);
}

static int asym;

static void co_body(void *arg) {
  (void)arg;
  for (;;) {
    if (asym)
      br__ctx_switch(&co_ctx, &main_ctx);
    else
      hop_loop(&co_ctx, &main_ctx, iters);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  iters = 20000000;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) {
      iters = strtol(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--asym")) {
      asym = 1;
    } else {
      fprintf(stderr, "usage: %s [-n SWITCH_PAIRS] [--asym]\n", argv[0]);
      return 2;
    }
  }
  if (iters <= 0) {
    fprintf(stderr, "ctx_switch: -n must be positive\n");
    return 2;
  }
  size_t size = 64 * 1024;
  void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (stack == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  br__ctx_make(&co_ctx, stack, size, co_body, NULL);
  if (!asym) br__ctx_switch(&main_ctx, &co_ctx); /* co enters hop_loop */
  else br__ctx_switch(&main_ctx, &co_ctx);
  double t0 = now_s();
  if (asym)
    for (long i = 0; i < iters; i++) br__ctx_switch(&main_ctx, &co_ctx);
  else
    hop_loop(&main_ctx, &co_ctx, iters);
  double el = now_s() - t0;
  long ops = 2 * iters; /* there and back */
  printf("{\"bench\":\"ctx_switch\",\"impl\":\"braid\",\"call_sites\":\"%s\",\"ops\":%ld,\"elapsed_s\":%.9f,\"ns_per_op\":%.3f}\n",
         asym ? "different" : "shared", ops, el, el * 1e9 / (double)ops);
  return 0;
}
