/* SPDX-License-Identifier: MIT */
/* Pipes, signals (signalfd) and child processes from braid tasks. Run once
 * per backend. */
#include <braid.h>

#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "test_io_util.h"

/* --- pipes ------------------------------------------------------------------ */

static void *pipe_writer(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[1000];
  for (int i = 0; i < 300; i++) {
    memset(buf, 'a' + i % 26, sizeof buf);
    if (br_write(fd, buf, sizeof buf, br_deadline_ms(5000)) != (ssize_t)sizeof buf)
      return br_fail(BR_EIO, "write %d", i);
  }
  br_close(fd);
  return NULL;
}

static void *body_pipe(void *arg) {
  (void)arg;
  int p[2];
  assert_int_equal(br_pipe(p), 0);
  br_task *t;
  br_spawn(&t, pipe_writer, (void *)(intptr_t)p[1], NULL);
  size_t total = 0;
  char buf[777];
  ssize_t n;
  while ((n = br_read(p[0], buf, sizeof buf, br_deadline_ms(5000))) > 0) {
    for (ssize_t i = 0; i < n; i++) assert_int_equal(buf[i], 'a' + (int)((total + (size_t)i) / 1000) % 26);
    total += (size_t)n;
  }
  assert_int_equal(n, 0);
  assert_int_equal(total, 300000);
  assert_int_equal(br_join(t, NULL), 0);

  /* Writing into a pipe whose reader is gone: BR_EPIPE, not a dead process. */
  assert_int_equal(br_pipe(p), 0);
  br_close(p[0]);
  assert_int_equal(br_write(p[1], "x", 1, BR_NEVER), BR_EPIPE);
  br_close(p[1]);
  return NULL;
}

static void test_pipe(void **state) {
  (void)state;
  io_run(body_pipe, NULL);
}

/* Closing a descriptor while the kernel is reporting its readiness really
 * closes it. Another thread drains a full pipe, so wake-ups for our write
 * end keep coming while this task closes it; the drainer must then see
 * end-of-file. (io_uring: removing a poll whose wake-up was still being
 * delivered failed, and the poll went on holding the file open: a child's
 * stdin never reached end-of-file.) */
typedef struct drainer {
  int fd;
  atomic_int state; /* 0 running, 1 saw end-of-file, -1 no end-of-file in 5 s */
} drainer;

static void *drain_thread(void *arg) {
  drainer *d = arg;
  char buf[512];
  for (;;) {
    struct pollfd pfd = {.fd = d->fd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) != 1) {
      atomic_store(&d->state, -1);
      return NULL;
    }
    ssize_t n = read(d->fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      atomic_store(&d->state, -1);
      return NULL;
    }
  }
  atomic_store(&d->state, 1);
  return NULL;
}

static void *close_fd_task(void *arg) {
  br_close((int)(intptr_t)arg);
  return NULL;
}

static void *body_close_while_ready(void *arg) {
  (void)arg;
  /* Armed and closed in one go: this task's wait registers the poll (the
   * pipe is writable: its first report is on its way), and the closer,
   * which runs before the loop next polls, removes it at once. */
  for (int round = 0; round < 20; round++) {
    int p[2];
    assert_int_equal(br_pipe(p), 0);
    br_task *closer;
    assert_int_equal(br_spawn(&closer, close_fd_task, (void *)(intptr_t)p[1], NULL), 0);
    assert_int_equal(br_wait_fd(p[1], BR_WRITABLE, br_deadline_ms(5000)), BR_EBADF);
    assert_int_equal(br_join(closer, NULL), 0);
    char c;
    ssize_t n = -1;
    for (int turn = 0; turn < 100 && n < 0; turn++) {
      n = read(p[0], &c, 1);
      if (n < 0) br_sleep_ms(1); /* the loop turns meanwhile */
    }
    close(p[0]);
    if (n != 0) fail_msg("round %d: the closed write end stayed open", round);
  }
  static char chunk[1 << 16];
  for (int round = 0; round < 50; round++) {
    int p[2];
    assert_int_equal(br_pipe(p), 0);
    drainer d = {.fd = p[0]};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, drain_thread, &d), 0);
    /* Write through the loop (its poll is armed on the write end), then
     * close at once, while the drainer's reads wake that poll. */
    assert_true(br_write(p[1], chunk, sizeof chunk, br_deadline_ms(5000)) == (ssize_t)sizeof chunk);
    assert_int_equal(br_close(p[1]), 0);
    while (atomic_load(&d.state) == 0) br_sleep_ms(1); /* the loop turns meanwhile */
    pthread_join(th, NULL);
    close(p[0]);
    if (d.state != 1) fail_msg("round %d: the closed write end stayed open", round);
  }
  return NULL;
}

static void test_close_while_ready(void **state) {
  (void)state;
  io_run(body_close_while_ready, NULL);
}

/* --- signals ----------------------------------------------------------------- */

static void *raiser(void *arg) {
  (void)arg;
  br_sleep_ms(10);
  kill(getpid(), SIGUSR1);
  br_sleep_ms(5);
  kill(getpid(), SIGUSR2);
  return NULL;
}

static void *body_signals(void *arg) {
  (void)arg;
  int sigs[] = {SIGUSR1, SIGUSR2};
  int sfd = br_signal_open(sigs, 2);
  assert_true(sfd >= 0);
  br_task *t;
  br_spawn(&t, raiser, NULL, NULL);
  assert_int_equal(br_signal_wait(sfd, br_deadline_ms(5000)), SIGUSR1);
  assert_int_equal(br_signal_wait(sfd, br_deadline_ms(5000)), SIGUSR2);
  assert_int_equal(br_signal_wait(sfd, br_deadline_ms(20)), BR_ETIMEDOUT);
  br_join(t, NULL);
  br_close(sfd);
  int bad[] = {SIGKILL};
  assert_int_equal(br_signal_open(bad, 1), BR_EINVAL);
  return NULL;
}

/* br_signal_wait on a descriptor that is not a signalfd is BR_EINVAL and
 * reads nothing from it: the bytes waiting in a socket or a pipe, or a
 * file's contents, are still there afterwards, not taken for a signal. */
static void *body_signal_wait_not_signalfd(void *arg) {
  (void)arg;
  char blob[256];
  memset(blob, SIGUSR1, sizeof blob); /* would read as signal 10 */
  int sv[2], pp[2];
  assert_int_equal(br_socketpair(sv, SOCK_STREAM), 0);
  assert_int_equal(br_pipe(pp), 0);
  assert_int_equal(br_write(sv[1], blob, sizeof blob, BR_NEVER), (ssize_t)sizeof blob);
  assert_int_equal(br_write(pp[1], blob, sizeof blob, BR_NEVER), (ssize_t)sizeof blob);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); /* an anonymous inode too */
  assert_true(efd >= 0);
  int filefd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  assert_true(filefd >= 0);
  const int fds[] = {sv[0], pp[0], efd, filefd};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    assert_int_equal(br_signal_wait(fds[i], br_deadline_ms(5000)), BR_EINVAL);
  assert_int_equal(br_signal_wait(-1, br_deadline_ms(5000)), BR_EBADF);
  char back[sizeof blob];
  assert_int_equal(br_read_full(sv[0], back, sizeof back, br_deadline_ms(5000)), (ssize_t)sizeof back);
  assert_int_equal(br_read_full(pp[0], back, sizeof back, br_deadline_ms(5000)), (ssize_t)sizeof back);
  br_close(sv[0]);
  br_close(sv[1]);
  br_close(pp[0]);
  br_close(pp[1]);
  br_close(efd);
  close(filefd);
  return NULL;
}

static void test_signal_wait_not_signalfd(void **state) {
  (void)state;
  io_run(body_signal_wait_not_signalfd, NULL);
}

static void test_signals(void **state) {
  (void)state;
  io_run(body_signals, NULL);
}

/* --- child processes ------------------------------------------------------ */

static void *body_process(void *arg) {
  (void)arg;
  int fds = br_test_count_fds();
  /* cat echoes its stdin: input in, output out, exit 0. */
  br_process p;
  const char *cat[] = {"cat", NULL};
  br_process_opts o = {.in = BR_STDIO_PIPE, .out = BR_STDIO_PIPE, .search_path = true};
  assert_int_equal(br_process_spawn(&p, cat, &o), 0);
  assert_true(p.pid > 0 && p.in >= 0 && p.out >= 0 && p.err == -1);
  size_t big = 1 << 20; /* more than a pipe holds: needs concurrent I/O */
  char *input = malloc(big);
  for (size_t i = 0; i < big; i++) input[i] = (char)('0' + i % 10);
  char *out = NULL;
  size_t out_len = 0;
  int status = -1;
  assert_int_equal(br_process_communicate(&p, &out, &out_len, NULL, NULL, &status, input, big,
                                          br_deadline_ms(10000)), 0);
  assert_int_equal(status, 0);
  assert_int_equal(out_len, big);
  assert_memory_equal(out, input, big);
  free(out);
  free(input);
  br_process_close(&p);

  /* stderr, exit codes, stderr merged into stdout. */
  const char *sh[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
  o = (br_process_opts){.out = BR_STDIO_PIPE, .err = BR_STDIO_PIPE};
  assert_int_equal(br_process_spawn(&p, sh, &o), 0);
  char *err = NULL;
  size_t err_len = 0;
  assert_int_equal(br_process_communicate(&p, &out, &out_len, &err, &err_len, &status, NULL, 0,
                                          BR_NEVER), 0);
  assert_string_equal(out, "out\n");
  assert_int_equal(out_len, 4);
  assert_string_equal(err, "err\n");
  assert_int_equal(err_len, 4);
  assert_int_equal(status, 3);
  free(out);
  free(err);
  /* Waiting again gives the same status. */
  assert_int_equal(br_process_wait(&p, &status, BR_NEVER), 0);
  assert_int_equal(status, 3);
  br_process_close(&p);

  o = (br_process_opts){.out = BR_STDIO_PIPE, .err = BR_STDIO_STDOUT};
  assert_int_equal(br_process_spawn(&p, sh, &o), 0);
  assert_int_equal(br_process_communicate(&p, &out, NULL, NULL, NULL, &status, NULL, 0, BR_NEVER), 0);
  assert_true(strstr(out, "out\n") && strstr(out, "err\n"));
  free(out);
  br_process_close(&p);
  br_process_close(&p); /* again: nothing left to do */
  br_process_close(NULL);

  /* A stream that is not a pipe gives "" (not NULL), and status may be
   * NULL. */
  const char *truecmd[] = {"/bin/sh", "-c", "exit 0", NULL};
  assert_int_equal(br_process_spawn(&p, truecmd, NULL), 0);
  out = err = (char *)"x";
  out_len = err_len = 9;
  assert_int_equal(br_process_communicate(&p, &out, &out_len, &err, &err_len, NULL, NULL, 0,
                                          br_deadline_ms(5000)), 0);
  assert_string_equal(out, "");
  assert_string_equal(err, "");
  assert_int_equal(out_len, 0);
  assert_int_equal(err_len, 0);
  free(out);
  free(err);
  br_process_close(&p);
  assert_int_equal(br_process_communicate(NULL, &out, NULL, NULL, NULL, NULL, NULL, 0, BR_NEVER),
                   BR_EINVAL);

  /* Killed by a signal: Python's negative returncode. */
  const char *sleeper[] = {"/bin/sleep", "30", NULL};
  assert_int_equal(br_process_spawn(&p, sleeper, NULL), 0);
  assert_int_equal(br_process_wait(&p, &status, br_deadline_ms(30)), BR_ETIMEDOUT);
  assert_int_equal(br_process_kill(&p, SIGTERM), 0);
  assert_int_equal(br_process_wait(&p, &status, br_deadline_ms(5000)), 0);
  assert_int_equal(status, -SIGTERM);
  assert_int_equal(br_process_kill(&p, SIGTERM), BR_ESRCH);
  br_process_close(&p);

  /* A missing program is reported by spawn itself. (qemu-user runs vfork
   * as fork, so there the exec failure only shows as exit status 127.) */
  const char *missing[] = {"/nonexistent/program", NULL};
  const char *missing2[] = {"no-such-program-braid", NULL};
  for (int i = 0; i < 2; i++) {
    o = (br_process_opts){.search_path = i == 1};
    int rc = br_process_spawn(&p, i ? missing2 : missing, &o);
    if (rc == 0 && getenv("BRAID_TEST_EMULATED")) {
      assert_int_equal(br_process_wait(&p, &status, br_deadline_ms(5000)), 0);
      assert_int_equal(status, 127);
      br_process_close(&p);
      continue;
    }
    assert_int_equal(rc, BR_ENOENT);
  }

  /* cwd, environment, /dev/null. */
  const char *pwd[] = {"/bin/sh", "-c", "pwd; echo $BRAID_X", NULL};
  char *env[] = {"BRAID_X=42", NULL};
  o = (br_process_opts){.in = BR_STDIO_NULL, .out = BR_STDIO_PIPE, .cwd = "/tmp", .envp = env};
  assert_int_equal(br_process_spawn(&p, pwd, &o), 0);
  assert_int_equal(br_process_communicate(&p, &out, NULL, NULL, NULL, &status, NULL, 0, BR_NEVER), 0);
  assert_string_equal(out, "/tmp\n42\n");
  free(out);
  br_process_close(&p);

  /* Closing a running child kills and reaps it: no zombie, no fd left. */
  assert_int_equal(br_process_spawn(&p, sleeper, &(br_process_opts){.out = BR_STDIO_PIPE}), 0);
  int pid = p.pid;
  br_process_close(&p);
  assert_int_equal(kill(pid, 0), -1);
  assert_int_equal(errno, ESRCH);
  assert_int_equal(br_test_count_fds(), fds);
  return NULL;
}

static void test_process(void **state) {
  (void)state;
  io_run(body_process, NULL);
}

/* The child does not inherit our blocked signals or SIGPIPE handling. */
static void *body_child_signals(void *arg) {
  (void)arg;
  int sigs[] = {SIGTERM};
  int sfd = br_signal_open(sigs, 1); /* blocks SIGTERM here */
  br_process p;
  const char *sleeper[] = {"/bin/sleep", "30", NULL};
  assert_int_equal(br_process_spawn(&p, sleeper, NULL), 0);
  br_process_kill(&p, SIGTERM);
  int status;
  assert_int_equal(br_process_wait(&p, &status, br_deadline_ms(5000)), 0);
  assert_int_equal(status, -SIGTERM);
  br_process_close(&p);
  br_close(sfd);
  return NULL;
}

static void test_child_signals(void **state) {
  (void)state;
  io_run(body_child_signals, NULL);
}

/* Many children at once, each waited for by its own task. */
static void *wait_child(void *arg) {
  (void)arg;
  br_process p;
  const char *argv[] = {"/bin/sh", "-c", "exit 7", NULL};
  int rc = br_process_spawn(&p, argv, NULL);
  if (rc) return br_fail(rc, "spawn");
  int status;
  rc = br_process_wait(&p, &status, br_deadline_ms(20000));
  br_process_close(&p);
  if (rc) return br_fail(rc, "wait");
  return status == 7 ? NULL : br_fail(BR_EIO, "status %d", status);
}

static void *body_many_children(void *arg) {
  (void)arg;
  br_group *g = io_group();
  long n = br_test_scaled(50);
  for (long i = 0; i < n; i++) br_group_spawn(g, wait_child, NULL, NULL);
  int rc = br_group_wait(g);
  if (rc) fprintf(stderr, "%s\n", br_group_message(g));
  assert_int_equal(rc, 0);
  br_group_free(g);
  return NULL;
}

static void test_many_children(void **state) {
  (void)state;
  io_run(body_many_children, NULL);
}

int main(void) {
  io_fd_baseline();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pipe),           cmocka_unit_test(test_close_while_ready),
    cmocka_unit_test(test_signals),        cmocka_unit_test(test_signal_wait_not_signalfd),
    cmocka_unit_test(test_process),        cmocka_unit_test(test_child_signals),
    cmocka_unit_test(test_many_children),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
