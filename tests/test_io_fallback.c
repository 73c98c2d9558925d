/* SPDX-License-Identifier: MIT */
/* Where the kernel or a sandbox refuses io_uring, opening the io_uring
 * backend fails cleanly (-EPERM / -ENOSYS) and `auto` falls back to epoll,
 * which then serves I/O as usual. The refusal is simulated with a seccomp
 * filter, in a child process. */
#include <braid.h>

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "core/poller.h"
#include "core/loop.h"
#include "test_io_util.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif

/* Make io_uring_setup fail with errno `err`, like Docker's default profile. */
static void refuse_io_uring(int err) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof *f, .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
    perror("seccomp");
    exit(BR_TEST_SKIP); /* e.g. under qemu-user: nothing to test here */
  }
}

static void *ping(void *arg) {
  (void)arg;
  br__poller *p = br__loop_poller(br_loop_current());
  if (p->ops != &br__poller_epoll) return br_fail(BR_EIO, "backend %s", p->ops->name);
  int sv[2];
  br_socketpair(sv, SOCK_STREAM);
  br_write(sv[0], "ping", 4, BR_NEVER);
  char buf[8] = {0};
  ssize_t n = br_read(sv[1], buf, sizeof buf, br_deadline_ms(2000));
  br_close(sv[0]);
  br_close(sv[1]);
  return n == 4 ? NULL : br_fail(BR_EIO, "read %zd", n);
}

static void child(void *arg) {
  const char *backend = arg;
  refuse_io_uring(EPERM);
  setenv("BRAID_BACKEND", backend, 1);
  int rc = br_run(NULL, ping, NULL);
  exit(rc == 0 ? 0 : 1);
}

static void check(const char *backend, bool expect_message) {
  br_child_result r;
  assert_int_equal(br_test_run_child(child, (void *)backend, 20000, &r), 0);
  if (r.exited && r.exit_code == BR_TEST_SKIP) br_test_skip("seccomp filters unavailable");
  if (!r.exited || r.exit_code) fprintf(stderr, "%s", r.err);
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  /* auto is silent; an explicit io_uring request says why it fell back. */
  if (expect_message)
    assert_non_null(strstr(r.err, "io_uring is unavailable"));
  else
    assert_null(strstr(r.err, "io_uring"));
  br_child_result_free(&r);
}

static void test_auto_falls_back(void **state) {
  (void)state;
  check("auto", false);
}

static void test_explicit_falls_back(void **state) {
  (void)state;
  check("io_uring", true);
}

/* The backend itself reports the refusal as a plain negative errno. */
static void refused_open(void *arg) {
  (void)arg;
  refuse_io_uring(ENOSYS);
  br__poller p = {0};
  p.ops = &br__poller_uring;
  int rc = p.ops->open(&p);
  exit(rc == -ENOSYS ? 0 : 1);
}

static void test_open_fails_cleanly(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(refused_open, NULL, 20000, &r), 0);
  if (r.exited && r.exit_code == BR_TEST_SKIP) br_test_skip("seccomp filters unavailable");
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  br_child_result_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_auto_falls_back),
    cmocka_unit_test(test_explicit_falls_back),
    cmocka_unit_test(test_open_fails_cleanly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
