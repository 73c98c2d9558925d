/* SPDX-License-Identifier: MIT */
/* Files, pipes and FIFOs used the way a careless or hostile user would:
 * FIFOs opened without their other end, pipes whose reader is gone. Run
 * once per backend; both must give the same results. */
#include <braid.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

#include "test_io_util.h"

static char dir[64];

/* --- FIFO opens wait for the other end, within the deadline --------------- */

typedef struct fifo_case {
  const char *path;
  int flags; /* of the br_file_open under test */
} fifo_case;

static void *open_forever(void *arg) {
  fifo_case *c = arg;
  int fd = br_file_open(c->path, c->flags, 0, BR_NEVER);
  if (fd >= 0) br_file_close(fd);
  return fd < 0 ? br_fail(fd, "open") : NULL;
}

/* The other end, opened without br_file_open: a reader opens at once; a
 * writer gets ENXIO until some reader (here: the open under test, waiting
 * in the kernel) has the FIFO open. It writes a line and closes. */
static void *other_end(void *arg) {
  fifo_case *c = arg;
  bool reader = (c->flags & O_ACCMODE) == O_WRONLY;
  int fd;
  for (;;) {
    fd = open(c->path, (reader ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0 || errno != ENXIO) break;
    int rc = br_sleep_ms(1);
    if (rc) return br_fail(rc, "waiting for the reader");
  }
  if (fd < 0) return br_fail(-errno, "open the other end");
  if (reader) {
    /* Until a writer has come, read says 0: wait for the data first. */
    int rw = br_wait_fd(fd, BR_READABLE, br_deadline_ms(10000));
    if (rw < 0) {
      br_close(fd);
      return br_fail(rw, "waiting for the data");
    }
    char buf[16] = {0};
    ssize_t r = br_read_full(fd, buf, 5, br_deadline_ms(10000));
    br_close(fd);
    return r == 5 && memcmp(buf, "ping\n", 5) == 0 ? NULL : br_fail(BR_EIO, "read %zd", r);
  }
  ssize_t w = br_write(fd, "ping\n", 5, br_deadline_ms(10000));
  br_close(fd); /* at once: the reader's open may not even have returned */
  return w == 5 ? NULL : br_fail(BR_EIO, "write %zd", w);
}

static void *body_fifo_open(void *arg) {
  (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  const int modes[] = {O_WRONLY, O_RDONLY};
  for (int m = 0; m < 2; m++) {
    fifo_case c = {.path = path, .flags = modes[m]};
    int fds = br_test_count_fds();
    /* Nobody at the other end: the deadline ends the wait. */
    int64_t t0 = br_now();
    assert_int_equal(br_file_open(path, c.flags, 0, br_deadline_ms(50)), BR_ETIMEDOUT);
    assert_true(br_now() - t0 < 5 * (int64_t)1000000000);
    /* So does the scope's, and cancellation. */
    br_scope s;
    br_scope_enter(&s, br_deadline_ms(20), false);
    assert_int_equal(br_file_open(path, c.flags, 0, BR_NEVER), BR_ETIMEDOUT);
    br_scope_exit(&s);
    br_task *t;
    assert_int_equal(br_spawn(&t, open_forever, &c, NULL), 0);
    assert_int_equal(br_sleep_ms(10), 0); /* let it reach its wait: any point must do */
    assert_int_equal(br_cancel(t), 0);
    assert_int_equal(br_join(t, NULL), BR_ECANCELED);
    assert_int_equal(br_test_count_fds(), fds);

    /* The other end arrives (a task of this loop: the open must leave the
     * loop free): the open completes, as open(2) would, blocking. */
    for (int round = 0; round < 20; round++) {
      br_task *o;
      assert_int_equal(br_spawn(&o, other_end, &c, NULL), 0);
      int fd = br_file_open(path, c.flags, 0, br_deadline_ms(10000));
      if (fd < 0) fprintf(stderr, "round %d flags %d: %s\n", round, c.flags, br_strerror(fd));
      assert_true(fd >= 0);
      assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
      assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
      if (c.flags == O_WRONLY) {
        assert_int_equal(br_file_write(fd, "ping\n", 5, -1, br_deadline_ms(10000)), 5);
      } else {
        /* The writer may have written and closed before the open
         * returned: what it wrote is still there to read. */
        char buf[16] = {0};
        assert_int_equal(br_file_read(fd, buf, sizeof buf, -1, br_deadline_ms(10000)), 5);
        assert_memory_equal(buf, "ping\n", 5);
      }
      assert_int_equal(br_file_close(fd), 0);
      assert_int_equal(br_join(o, NULL), 0);
    }
    assert_int_equal(br_test_count_fds(), fds);
  }
  /* O_RDWR and O_NONBLOCK opens never wait, as with open(2). */
  int fd = br_file_open(path, O_RDWR, 0, br_deadline_ms(10000));
  assert_true(fd >= 0);
  br_file_close(fd);
  assert_int_equal(br_file_open(path, O_WRONLY | O_NONBLOCK, 0, BR_NEVER), BR_ENXIO);
  unlink(path);
  return NULL;
}

static void test_fifo_open(void **state) {
  (void)state;
  io_run(body_fifo_open, NULL);
}

/* --- writing to a pipe whose reader is gone: BR_EPIPE, never SIGPIPE ------ */

static ssize_t write_to_broken_pipe(void) {
  int p[2];
  assert_int_equal(pipe2(p, O_CLOEXEC), 0);
  close(p[0]);
  ssize_t w = br_file_write(p[1], "x", 1, -1, br_deadline_ms(10000));
  close(p[1]);
  return w;
}

static void *body_epipe(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) assert_int_equal(write_to_broken_pipe(), BR_EPIPE);
  return NULL;
}

static void *plain_epipe(void *arg) {
  (void)arg;
  sigset_t before, after, pending;
  pthread_sigmask(SIG_BLOCK, NULL, &before);
  ssize_t w = write_to_broken_pipe();
  pthread_sigmask(SIG_BLOCK, NULL, &after);
  sigpending(&pending);
  /* The caller's mask is as it was, and no SIGPIPE is left behind. */
  bool ok = w == BR_EPIPE && sigismember(&before, SIGPIPE) == sigismember(&after, SIGPIPE) &&
            !sigismember(&pending, SIGPIPE);
  return ok ? NULL : (void *)1;
}

static void test_write_epipe(void **state) {
  (void)state;
  io_run(body_epipe, NULL);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, plain_epipe, NULL), 0);
  void *v = (void *)2;
  pthread_join(t, &v);
  assert_null(v);
}

/* --- br_file_read / br_file_write on a non-blocking pipe ------------------ */

static void *fill_later(void *arg) {
  int fd = (int)(intptr_t)arg;
  int rc = br_sleep_ms(5);
  if (rc) return br_fail(rc, "sleep");
  ssize_t w = br_write(fd, "late", 4, br_deadline_ms(10000));
  return w == 4 ? NULL : br_fail(BR_EIO, "write %zd", w);
}

/* An empty pipe from br_pipe: the read waits for data, within its
 * deadline, and gets it when it comes; a full one: the write waits for
 * room. Same on every backend (epoll said BR_EAGAIN at once, io_uring
 * waited past the deadline). */
static void *body_nb_pipe(void *arg) {
  (void)arg;
  int p[2];
  assert_int_equal(br_pipe(p), 0);
  char buf[16] = {0};
  int64_t t0 = br_now();
  assert_int_equal(br_file_read(p[0], buf, sizeof buf, -1, br_deadline_ms(50)), BR_ETIMEDOUT);
  assert_true(br_now() - t0 < 5 * (int64_t)1000000000);
  br_task *t;
  assert_int_equal(br_spawn(&t, fill_later, (void *)(intptr_t)p[1], NULL), 0);
  assert_int_equal(br_file_read(p[0], buf, sizeof buf, -1, br_deadline_ms(10000)), 4);
  assert_memory_equal(buf, "late", 4);
  assert_int_equal(br_join(t, NULL), 0);
  /* Fill the pipe, then one more write must wait and time out. */
  static char chunk[65536];
  while (write(p[1], chunk, sizeof chunk) > 0) {
  }
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(br_file_write(p[1], "x", 1, -1, br_deadline_ms(50)), BR_ETIMEDOUT);
  /* Positional I/O on a pipe is an error, as pread(2) says. */
  assert_int_equal(br_file_read(p[0], buf, 1, 0, BR_NEVER), -ESPIPE);
  assert_int_equal(br_file_close(p[0]), 0);
  assert_int_equal(br_file_write(p[1], "x", 1, -1, BR_NEVER), BR_EPIPE);
  assert_int_equal(br_file_close(p[1]), 0);
  return NULL;
}

static void test_nb_pipe(void **state) {
  (void)state;
  io_run(body_nb_pipe, NULL);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/braid-hostile-test-%d", (int)getpid());
  return mkdir(dir, 0700);
}

static int teardown(void **state) {
  (void)state;
  return rmdir(dir);
}

int main(void) {
  /* A hang is a failure of its own: end it well before ctest's timeout. */
  alarm(120);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fifo_open),
    cmocka_unit_test(test_write_epipe),
    cmocka_unit_test(test_nb_pipe),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
