/* SPDX-License-Identifier: MIT */
/* Scaffolding of the braid-mpi tests (tests/test_mpi_*.c).
 *
 * Each test is one program that ctest runs directly; it starts itself under
 * the MPI launcher the library was built with (BRAID_MPIEXEC), on this
 * machine, waits for the whole run with a time bound and returns its exit
 * status. Inside the run, every rank calls br_mpipool_new: rank 0 runs the
 * checks, the other ranks serve. Exit 77 means "skipped".
 */
#ifndef BRAID_TEST_MPI_UTIL_H
#define BRAID_TEST_MPI_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <braid.h>
#ifdef BRAID_HAVE_MPI
#include <braid/mpi.h>
#endif

__attribute__((unused)) static int mt_failures;

#define MT_CHECK(cond, ...)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      mt_failures++;                                                                    \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);          \
      fprintf(stderr, __VA_ARGS__);                                                     \
      fputc('\n', stderr);                                                              \
    }                                                                                   \
  } while (0)

__attribute__((unused)) static double mt_ms(int64_t a, int64_t b) { return (double)(b - a) / 1e6; }

__attribute__((unused)) static bool mt_in_run(void) { return getenv("BR_MPITEST_IN_RUN") != NULL; }

/* A line of a run's output that is a sanitizer's report, from any rank (a
 * rank that dies of one may not change the run's exit status when ranks are
 * allowed to die). */
__attribute__((unused)) static bool mt_sanitizer_line(const char *line) {
  return strstr(line, "ERROR: AddressSanitizer") || strstr(line, "ERROR: LeakSanitizer") ||
         strstr(line, "WARNING: ThreadSanitizer") || strstr(line, "runtime error:");
}

#ifndef BRAID_MPIEXEC
#define BRAID_MPIEXEC "mpiexec"
#endif

/* Start argv[0] under the launcher with np ranks and wait at most
 * timeout_s. recovery: keep the run going when a rank dies (Open MPI's
 * --enable-recovery). Returns the run's exit status, 124 on timeout (the
 * run is killed), or 127 if the launcher cannot run. If out is not NULL, the
 * run's stdout+stderr go to that file. */
__attribute__((unused)) static int mt_launch(char **argv, int np, bool recovery, int timeout_s, const char *out) {
  char npbuf[16];
  snprintf(npbuf, sizeof npbuf, "%d", np);
  const char *args[32];
  int n = 0;
  args[n++] = BRAID_MPIEXEC;
#ifdef BRAID_MPI_MPICH
  args[n++] = "-np";
  args[n++] = npbuf;
  (void)recovery;
#else
  args[n++] = "--oversubscribe";
  args[n++] = "-np";
  args[n++] = npbuf;
  /* Containers: shared memory without CMA/ptrace single copy. */
  args[n++] = "--mca";
  args[n++] = "btl";
  args[n++] = "self,vader";
  args[n++] = "--mca";
  args[n++] = "btl_vader_single_copy_mechanism";
  args[n++] = "none";
  if (recovery) args[n++] = "--enable-recovery";
#endif
  args[n++] = "/proc/self/exe";
  for (int i = 1; argv[i] && n < 30; i++) args[n++] = argv[i];
  args[n] = NULL;
  char exe[4096];
  ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (l > 0) {
    exe[l] = 0;
    for (int i = 0; i < n; i++)
      if (strcmp(args[i], "/proc/self/exe") == 0) args[i] = exe;
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return 77;
  if (pid == 0) {
    setpgid(0, 0);
    /* If this test dies (ctest's timeout), the launcher is told to end the
     * run (it then ends the ranks, which are not in its process group). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    setenv("BR_MPITEST_IN_RUN", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    if (out) {
      FILE *f = freopen(out, "w", stdout);
      (void)f;
      dup2(1, 2);
    }
    execvp(args[0], (char **)args);
    /* braid-mpi was built, so its launcher must run: a failure, not a skip. */
    fprintf(stderr, "cannot run the MPI launcher '%s': %s\n", args[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  int64_t t0 = br_now();
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(st)) return WEXITSTATUS(st);
      return 128 + WTERMSIG(st);
    }
    if (br_now() - t0 > (int64_t)timeout_s * 1000000000) {
      fprintf(stderr, "the run took more than %d s: killed\n", timeout_s);
      kill(pid, SIGTERM); /* the launcher ends its ranks */
      for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
      }
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      return 124;
    }
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

#endif
