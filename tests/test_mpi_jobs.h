/* SPDX-License-Identifier: MIT */
/* Jobs shared by the braid-mpi tests (each test program registers them). */
#ifndef BRAID_TEST_MPI_JOBS_H
#define BRAID_TEST_MPI_JOBS_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <braid.h>

static int j_echo(const void *in, size_t len, br_bytes *out) { return br_bytes_set(out, in, len); }
BR_JOB(echo, j_echo);

static int j_square(const void *in, size_t len, br_bytes *out) {
  int64_t x;
  if (len != sizeof x) {
    br_fail(BR_EINVAL, "square wants 8 bytes, got %zu", len);
    return BR_EINVAL;
  }
  memcpy(&x, in, sizeof x);
  x *= x;
  return br_bytes_set(out, &x, sizeof x);
}
BR_JOB(square, j_square);

/* Fails odd inputs with a message. */
static int j_odd_fails(const void *in, size_t len, br_bytes *out) {
  int64_t x = 0;
  memcpy(&x, in, len < sizeof x ? len : sizeof x);
  if (x % 2) {
    br_fail(BR_ERANGE, "odd input %lld", (long long)x);
    return BR_ERANGE;
  }
  return br_bytes_set(out, &x, sizeof x);
}
BR_JOB(odd_fails, j_odd_fails);

/* Sleeps for the int64 number of ms in its input, in 1 ms steps, and stops
 * early when cancelled; returns its pid. */
static int j_nap(const void *in, size_t len, br_bytes *out) {
  int64_t ms = 0;
  memcpy(&ms, in, len < sizeof ms ? len : sizeof ms);
  int64_t end = br_now() + ms * 1000000;
  while (br_now() < end) {
    if (br_cancelled()) {
      br_fail(BR_ECANCELED, "nap stopped early");
      return BR_ECANCELED;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  int32_t pid = (int32_t)getpid();
  return br_bytes_set(out, &pid, sizeof pid);
}
BR_JOB(nap, j_nap);

/* A real SIGSEGV: a store to a page mapped PROT_NONE (not a NULL store, which
 * UBSan would catch and turn into an exit instead of a signal). */
static int j_crash(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  (void)out;
  volatile int *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bad == MAP_FAILED) return BR_ENOMEM;
  *bad = 1;
  return 0;
}
BR_JOB(crash, j_crash);

/* A result of the int64 number of bytes in its input (zeros). */
static int j_zeros(const void *in, size_t len, br_bytes *out) {
  int64_t n = 0;
  memcpy(&n, in, len < sizeof n ? len : sizeof n);
  if (n < 0 || !br_bytes_resize(out, (size_t)n)) return BR_ENOMEM;
  memset(out->data, 0, (size_t)n);
  return 0;
}
BR_JOB(zeros, j_zeros);

/* Never returns and ignores cancellation. */
static int j_hang(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  (void)out;
  for (;;) pause();
  return 0;
}
BR_JOB(hang, j_hang);

#endif
