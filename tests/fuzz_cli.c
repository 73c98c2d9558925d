/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the `braid` command's argument parsing: `braid
 * compare` (tools/braid/compare_args.c, getopt_long) and `braid fetch`
 * (tools/braid/fetch_args.c, its own loop), compiled in here.
 *
 * The input is an argument vector: the first byte picks the command, the
 * rest is split at NUL bytes into arguments (each its own allocation,
 * exactly its length, so ASan sees any read past one). Beyond "no crash,
 * no leak", it checks the parsers' promises: the exit code is 0, 1 (help)
 * or 2 (usage; compare: 0, 1, -1), and an accepted command line gives values
 * inside the documented ranges. Messages go to /dev/null.
 * Run as CI does: make fuzz FUZZ_TARGETS=cli. */
// fuzz-cflags: -Itools/braid
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "fetch.h"

static FILE *devnull;

/* The parsers print their messages and help text: to /dev/null here. */
#undef stderr
#undef stdout
#define stderr devnull
#define stdout devnull
#include "compare_args.c"
#include "fetch_args.c"
#undef stderr
#undef stdout
#define stderr stderr
#define stdout stdout

/* compare_models.c's answer, without the models themselves: every model
 * but the processes one (as where the process pool cannot start). */
bool cmp_model_available(cmp_model m) { return m != CMP_PROCS; }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  devnull = fopen("/dev/null", "w");
  return devnull ? 0 : -1;
}

enum { MAX_ARGS = 64 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int which = data[0] & 1;
  char *argv[MAX_ARGS + 2];
  int argc = 0;
  argv[argc++] = strdup(which ? "fetch" : "compare");
  size_t i = 1;
  while (i <= size && argc < MAX_ARGS) {
    size_t j = i;
    while (j < size && data[j]) j++;
    if (i == size) break;
    char *a = malloc(j - i + 1);
    memcpy(a, data + i, j - i);
    a[j - i] = 0;
    argv[argc++] = a;
    i = j + 1;
  }
  argv[argc] = NULL;
  /* getopt may permute argv: keep the pointers to free them. */
  char *owned[MAX_ARGS + 2];
  memcpy(owned, argv, sizeof owned);
  if (which) {
    fetch_args a;
    int rc = fetch_parse_args(argc, argv, &a);
    assert(rc == 0 || rc == 1 || rc == 2);
    if (rc == 0) {
      assert(a.nurls > 0 || a.from_stdin);
      assert(!(a.nurls > 0 && a.from_stdin));
      assert(a.concurrency >= 1 && a.concurrency <= 1000000);
      assert(a.per_host >= 1 && a.per_host <= 1000000);
      assert(a.retries >= -1 && a.retries <= 1000000);
      assert(a.timeout_s >= 0 && a.timeout_s <= 1e7);
      for (size_t k = 0; k < a.nurls; k++) assert(a.urls[k]);
    }
    fetch_args_free(&a);
  } else {
    cmp_opts o;
    int rc = cmp_parse_args(argc, argv, &o, devnull);
    assert(rc == 0 || rc == 1 || rc == -1); /* go on, help, usage */
    if (rc == 0) {
      assert(o.tasks >= 1 && o.tasks <= CMP_MAX_TASKS);
      assert(o.repeat >= 1);
      assert(o.kinds != 0 && o.models != 0);
    }
  }
  for (int k = 0; k < argc; k++) free(owned[k]);
  return 0;
}
