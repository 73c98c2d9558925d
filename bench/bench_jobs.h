/* SPDX-License-Identifier: MIT */
/* bench_jobs.h — the registered jobs the process-pool benchmarks run
 * (bench/procpool.c, bench/mpi/mpi_bench.c): "noop" echoes its input,
 * "burn" spends an int64 number of milliseconds of its thread's CPU time,
 * as the Python peers' burn() does. Header-only: each benchmark is its own
 * program and registers them once by including this. */
#ifndef BRAID_BENCH_JOBS_H
#define BRAID_BENCH_JOBS_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#include <braid.h>

static int noop(const void *in, size_t len, br_bytes *out) { return br_bytes_set(out, in, len); }
BR_JOB(noop, noop);

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int burn(const void *in, size_t len, br_bytes *out) {
  int64_t ms;
  if (len != sizeof ms) {
    br_fail(BR_EINVAL, "burn wants an int64, got %zu bytes", len);
    return BR_EINVAL;
  }
  memcpy(&ms, in, sizeof ms);
  int64_t end = thread_cpu_ns() + ms * 1000000;
  volatile uint64_t x = 1;
  while (thread_cpu_ns() < end)
    for (int i = 0; i < 1000; i++) x = x * 6364136223846793005ULL + 1;
  return br_bytes_set(out, &ms, sizeof ms);
}
BR_JOB(burn, burn);

#endif
