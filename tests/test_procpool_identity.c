/* SPDX-License-Identifier: MIT */
/* test_procpool_identity — the process pool's fork server is the program
 * itself, exec'd with a start marker its constructor checks before main().
 * A program that dropped its privileges (a daemon: setuid from root) is
 * not dumpable, so the exec'd copy could not read its /proc/PID/exe, took
 * the start for a forged one and ran the program's main() a second time
 * instead of serving the pool: the pool's jobs failed, and a program that
 * makes a pool at start did so again in that copy, and again. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

static char self_exe[4096];

/* In a child: drop from root to nobody, then create a pool and run a job. Exit code: 0 when the
 * job's result came back, else the step that failed. */
static int pool_after_dropping(void) {
  /* A bound on what a copy running main() again could start. */
  struct rlimit few = {16, 16};
  if (setrlimit(RLIMIT_NPROC, &few) != 0) return 10;
  setenv("BRAID_TEST_IDENTITY_CHILD", "1", 1);
  if (setgid(65534) != 0 || setuid(65534) != 0) return 11;
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, 1, NULL);
  if (r) {
    fprintf(stderr, "br_procpool_new: %s\n", br_errname(r));
    return 13;
  }
  br_future *f = NULL;
  tjob j = tj(42, A_OK, 0);
  if (br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL) != 0) return 14;
  void *v = NULL;
  r = br_await_until(f, &v, br_deadline_ms(60000));
  if (r) fprintf(stderr, "job: %s (%s)\n", br_errname(r), br_future_message(f));
  int rc = r ? 15 : tresult(v) == 42 ? 0 : 16;
  br_future_unref(f);
  br_procpool_free(p);
  return rc;
}

static void test_pool_after_dropping_privileges(void **state) {
  (void)state;
  if (geteuid() != 0) skip(); /* dropping privileges needs them */
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(pool_after_dropping());
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv) {
  (void)topts; /* shared helpers this test does not need */
  (void)tcounter_open;
  (void)tcounter_close;
  /* The exec'd copy of a start that failed its checks runs main(): a
   * second run of this test would start pools again (and again). */
  if (getenv("BRAID_TEST_IDENTITY_CHILD")) return 42;
  (void)argc;
  (void)argv;
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n <= 0) br_test_skip("no /proc/self/exe");
  self_exe[n] = '\0';
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_after_dropping_privileges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
