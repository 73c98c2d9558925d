/* SPDX-License-Identifier: MIT */
/* test_util — helpers shared by braid's tests (tests/test_*.c).
 *
 * Every tests/test_*.c is its own executable and its own ctest test, so each
 * runs in a fresh process (crash tests cannot take their neighbours down). Tests
 * whose name contains "_io" or "_net" run twice, with BRAID_BACKEND=epoll and
 * BRAID_BACKEND=io_uring (ctest names test_x.epoll / test_x.io_uring).
 *
 * Conventions:
 *  - Stress tests size their work with br_test_scaled(n): under the sanitizers
 *    and on the emulated aarch64 run, BRAID_TEST_SCALE=10 divides it by 10.
 *  - Under qemu (the aarch64 cross run) BRAID_TEST_EMULATED=1 is set; see
 *    br_test_emulated() for what to skip there.
 *  - A test executable that cannot run here at all (io_uring refused by the
 *    kernel or sandbox, say) calls br_test_skip("why"): it exits with
 *    BR_TEST_SKIP (77), which ctest reports as "Skipped", not as a failure.
 */
#ifndef BRAID_TEST_UTIL_H
#define BRAID_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit status that ctest treats as "skipped" (SKIP_RETURN_CODE). */
#define BR_TEST_SKIP 77

/* br_test_scale: the factor from BRAID_TEST_SCALE (an integer >= 1; unset,
 * empty or invalid means 1). Read once, cached; any thread. */
int br_test_scale(void);

/* br_test_scaled: n divided by br_test_scale(), but at least 1 (for n >= 1).
 * Use it for iteration counts, task counts, sizes of stress tests. */
long br_test_scaled(long n);

/* br_test_emulated: true when the test runs under an emulator (the aarch64
 * cross build runs under qemu-user and sets BRAID_TEST_EMULATED=1). Skip what
 * qemu-user cannot do: io_uring, exec'ing a foreign-architecture binary (no
 * binfmt_misc), tight timing assertions. */
bool br_test_emulated(void);

/* br_test_read_file: the whole of the file at path, NUL-terminated, its
 * length in *len if len is not NULL. The caller frees it. NULL if the file
 * cannot be opened. */
char *br_test_read_file(const char *path, size_t *len);

/* br_test_runqueue_ns: how long the calling thread has waited for a CPU
 * (runnable, not running) since it started, from /proc/thread-self/
 * schedstat; 0 where the kernel does not say. A timing assertion about a
 * thread's own work adds what the machine withheld from it. */
int64_t br_test_runqueue_ns(void);

/* br_test_rand: the next number of a deterministic xorshift64 sequence kept
 * in *state (start it at any nonzero value), so that a randomized test
 * does the same thing on every run. Any thread, one state per thread. */
static inline uint64_t br_test_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

/* br_test_skip: print "SKIP: <why>" on stderr and exit(BR_TEST_SKIP). */
void br_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* What br_test_run_child() observed about the child. */
typedef struct br_child_result {
  bool exited;      /* the child exited normally: see exit_code */
  int exit_code;    /* its exit status (valid when exited) */
  bool signaled;    /* the child was killed by a signal: see signo */
  int signo;        /* the signal (valid when signaled) */
  bool timed_out;   /* the timeout passed and the child was killed with SIGKILL
                     * (then signaled is true and signo SIGKILL) */
  char *err;        /* everything the child wrote to stderr, NUL-terminated
                     * (never NULL after a successful call); free with
                     * br_child_result_free() */
  size_t err_len;   /* bytes in err, without the NUL */
} br_child_result;

/* br_test_run_child: fork; in the child, redirect stderr to a pipe, call
 * fn(arg) and _exit(0) if it returns (so fn may also exit, abort or crash on
 * purpose). The parent collects the child's stderr until it ends and fills
 * *out. timeout_ms <= 0 means no timeout. stdout is inherited.
 * Returns 0, or -errno if the pipe, fork or wait failed (*out is then zeroed).
 * Call it from the test's main thread, outside any braid loop or task.
 * In the child, the crash signals (SEGV, BUS, ILL, FPE, ABRT, SYS) get their
 * default action back (cmocka catches them to go on with the next test) and
 * core dumps are off; the code under test may install its own handlers.
 * Sanitizer errors (heap overflow, ...) end the child with exit status 1 and
 * a report on stderr: br_child_crashed() counts those too. */
int br_test_run_child(void (*fn)(void *), void *arg, int timeout_ms, br_child_result *out);

/* br_child_crashed: the child died by a signal, or (sanitizer builds) exited
 * with a non-zero status after printing a sanitizer report. */
bool br_child_crashed(const br_child_result *r);

/* br_child_result_free: free r->err (r itself is the caller's). */
void br_child_result_free(br_child_result *r);

/* br_test_count_fds: the number of file descriptors open in this process
 * (entries of /proc/self/fd, not counting the one used to read it), or -errno.
 * Compare before and after a test body to catch descriptor leaks. */
int br_test_count_fds(void);

#endif
