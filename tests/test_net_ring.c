/* SPDX-License-Identifier: MIT */
/* Socket reads and writes that the io_uring loop performs itself (the
 * ring's receive after a drained socket, its send), and the same calls on
 * epoll, where they use readiness: interrupted receives lose no byte, a close
 * by another task ends a pending receive and really closes the socket,
 * cancellation, big sends, a peer gone, descriptors that are not sockets,
 * compact tasks, a second reader, many writers, a loop freed with a receive pending. */
#include "test_io_util.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include "core/core.h"

static void pair(int sv[2]) {
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* Returns once the loop has been through its poller: on io_uring every
 * operation queued before (another task's receive) is then in the kernel. */
static void loop_polls(void) {
  int p[2];
  assert_int_equal(br_pipe(p), 0);
  assert_int_equal(write(p[1], "x", 1), 1);
  assert_int_equal(br_wait_fd(p[0], BR_READABLE, br_deadline_ms(5000)), BR_READABLE);
  br_close(p[0]);
  br_close(p[1]);
}

static bool kernel_at_least(int major, int minor) {
  struct utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

/* On io_uring (kernel 5.19+, not turned off) the ring really does it. */
static void *body_path(void *arg) {
  (void)arg;
  const char *b = getenv("BRAID_BACKEND");
  const char *off = getenv("BRAID_URING_SOCKETS");
  bool ring = br_loop_current()->poller.sock_io;
  if (b && !strcmp(b, "epoll")) assert_false(ring);
  if (b && !strcmp(b, "io_uring") && !(off && !strcmp(off, "0")) &&
      br_loop_current()->poller.ops == &br__poller_uring && kernel_at_least(5, 19))
    assert_true(ring);
  return NULL;
}

static void test_path(void **state) {
  (void)state;
  io_run(body_path, NULL);
}

/* The reader's receives time out at deadline d, and the writer sends its
 * next byte exactly at d: the timer wakes both in one loop iteration, so a
 * receive is taken back around the moment its byte arrives (whichever wins,
 * the byte stays in the socket or comes with the receive). Every byte must
 * come through, in order. */
enum { TRICKLE = 200 };

typedef struct trickle {
  int fd;
  int64_t d; /* the reader's current deadline, 0 before its first */
} trickle;

static void *trickle_writer(void *arg) {
  trickle *tr = arg;
  int64_t last = 0;
  for (int i = 0; i < TRICKLE; i++) {
    while (tr->d == last) br_yield(); /* the reader's next receive */
    last = tr->d;
    br_sleep_until(last);
    unsigned char c = (unsigned char)i;
    assert_int_equal(br_write(tr->fd, &c, 1, BR_NEVER), 1);
  }
  return NULL;
}

static void *body_timeout_keeps_data(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  trickle tr = {.fd = sv[1]};
  br_task *w;
  assert_int_equal(br_spawn(&w, trickle_writer, &tr, NULL), 0);
  int got = 0, timeouts = 0;
  while (got < TRICKLE) {
    unsigned char buf[16];
    int64_t d = br_now() + 1000000;
    tr.d = d;
    ssize_t n = br_read_ready(sv[0], buf, sizeof buf, d);
    if (n == BR_ETIMEDOUT) {
      timeouts++;
      continue;
    }
    assert_true(n > 0);
    for (ssize_t k = 0; k < n; k++) assert_int_equal(buf[k], (unsigned char)(got + k));
    got += (int)n;
  }
  assert_int_equal(br_join(w, NULL), 0);
  assert_true(timeouts > 0); /* the race was really run */
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_timeout_keeps_data(void **state) {
  (void)state;
  io_run(body_timeout_keeps_data, NULL);
}

/* br_close by another task ends a pending receive with BR_EBADF, and the
 * socket is really closed: the peer sees end of stream at once. */
typedef struct closing {
  int fd;
  ssize_t rc;
  bool parked;
} closing;

static void *blocked_reader(void *arg) {
  closing *c = arg;
  char buf[64];
  c->parked = true;
  c->rc = br_read_ready(c->fd, buf, sizeof buf, br_deadline_ms(10000));
  return NULL;
}

static void *body_close_while_reading(void *arg) {
  (void)arg;
  for (int round = 0; round < 20; round++) {
    int sv[2];
    pair(sv);
    closing c = {.fd = sv[0], .rc = 1};
    br_task *t;
    assert_int_equal(br_spawn(&t, blocked_reader, &c, NULL), 0);
    while (!c.parked) br_yield();
    loop_polls(); /* the reader's receive is in the kernel */
    assert_int_equal(br_close(sv[0]), 0);
    char b;
    int64_t t0 = br_now();
    assert_int_equal(br_read(sv[1], &b, 1, br_deadline_ms(5000)), 0); /* end of stream */
    assert_true(br_now() - t0 < 2000000000);
    assert_int_equal(br_join(t, NULL), 0);
    assert_int_equal(c.rc, BR_EBADF);
    br_close(sv[1]);
  }
  return NULL;
}

static void test_close_while_reading(void **state) {
  (void)state;
  io_fd_baseline();
  int before = br_test_count_fds();
  io_run(body_close_while_reading, NULL);
  assert_int_equal(br_test_count_fds(), before);
}

/* Cancelling a task in a receive: BR_ECANCELED, and the next reader gets
 * the data that came after. */
static void *cancelled_reader(void *arg) {
  closing *c = arg;
  char buf[8];
  c->parked = true;
  c->rc = br_read(c->fd, buf, sizeof buf, BR_NEVER);
  return NULL;
}

static void *body_cancel_in_read(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  closing c = {.fd = sv[0], .rc = 1};
  br_task *t;
  assert_int_equal(br_spawn(&t, cancelled_reader, &c, NULL), 0);
  while (!c.parked) br_yield();
  loop_polls();
  assert_int_equal(br_cancel(t), 0);
  br_join(t, NULL);
  assert_int_equal(c.rc, BR_ECANCELED);
  assert_int_equal(br_write(sv[1], "after", 5, BR_NEVER), 5);
  char buf[8];
  assert_int_equal(br_read(sv[0], buf, sizeof buf, br_deadline_ms(5000)), 5);
  assert_memory_equal(buf, "after", 5);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_cancel_in_read(void **state) {
  (void)state;
  io_run(body_cancel_in_read, NULL);
}

/* 8 MiB through a socket whose buffer fills: partial sends, waits for
 * room, every byte in order. */
enum { BIG = 8 << 20 };

static void *big_reader(void *arg) {
  int fd = *(int *)arg;
  static unsigned char buf[65536];
  size_t got = 0;
  while (got < BIG) {
    ssize_t n = br_read(fd, buf, (got % 3 == 0) ? 1000 : sizeof buf, br_deadline_ms(20000));
    assert_true(n > 0);
    for (ssize_t k = 0; k < n; k++)
      if (buf[k] != (unsigned char)((got + (size_t)k) * 7)) fail_msg("byte %zu", got + (size_t)k);
    got += (size_t)n;
  }
  return (void *)(intptr_t)got;
}

static void *body_big_send(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  unsigned char *data = malloc(BIG);
  assert_non_null(data);
  for (size_t i = 0; i < BIG; i++) data[i] = (unsigned char)(i * 7);
  br_task *r;
  assert_int_equal(br_spawn(&r, big_reader, &sv[1], NULL), 0);
  assert_int_equal(br_write(sv[0], data, BIG, br_deadline_ms(20000)), BIG);
  void *got = NULL;
  assert_int_equal(br_join(r, &got), 0);
  assert_int_equal((intptr_t)got, BIG);
  free(data);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_big_send(void **state) {
  (void)state;
  io_run(body_big_send, NULL);
}

/* A peer gone: an error, never SIGPIPE. */
static void *body_peer_gone(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  br_close(sv[1]);
  ssize_t n = br_write(sv[0], "x", 1, br_deadline_ms(5000));
  assert_true(n == BR_EPIPE || n == -ECONNRESET);
  char b;
  assert_int_equal(br_read_ready(sv[0], &b, 1, br_deadline_ms(5000)), 0);
  br_close(sv[0]);
  return NULL;
}

static void test_peer_gone(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
  io_run(body_peer_gone, NULL);
}

/* Pipes are not sockets: the calls fall back to readiness and work. */
static void *pipe_writer(void *arg) {
  int fd = *(int *)arg;
  for (int i = 0; i < 50; i++) {
    char c = (char)('a' + i % 26);
    assert_int_equal(br_write(fd, &c, 1, BR_NEVER), 1);
    br_sleep_ms(i % 3);
  }
  return NULL;
}

static void *body_pipe(void *arg) {
  (void)arg;
  int p[2];
  assert_int_equal(br_pipe(p), 0);
  br_task *w;
  assert_int_equal(br_spawn(&w, pipe_writer, &p[1], NULL), 0);
  int got = 0;
  while (got < 50) {
    char buf[8];
    ssize_t n = br_read_ready(p[0], buf, sizeof buf, br_deadline_ms(5000));
    assert_true(n > 0);
    for (ssize_t k = 0; k < n; k++) assert_int_equal(buf[k], 'a' + (got + k) % 26);
    got += (int)n;
  }
  assert_int_equal(br_join(w, NULL), 0);
  br_close(p[1]);
  char b;
  assert_int_equal(br_read_ready(p[0], &b, 1, br_deadline_ms(5000)), 0);
  br_close(p[0]);
  return NULL;
}

static void test_pipe(void **state) {
  (void)state;
  io_run(body_pipe, NULL);
}

/* Compact tasks (their stacks are shared while they wait) echo correctly. */
static void *compact_echo(void *arg) {
  int fd = *(int *)arg;
  char buf[32];
  for (;;) {
    ssize_t n = br_read_ready(fd, buf, sizeof buf, br_deadline_ms(5000));
    if (n <= 0) return (void *)(intptr_t)n;
    assert_int_equal(br_write(fd, buf, (size_t)n, br_deadline_ms(5000)), n);
  }
}

static void *body_compact(void *arg) {
  (void)arg;
  enum { N = 20 };
  int sv[N][2];
  br_task *t[N];
  br_spawn_opts o = {.flags = BR_SPAWN_COMPACT};
  for (int i = 0; i < N; i++) {
    pair(sv[i]);
    assert_int_equal(br_spawn(&t[i], compact_echo, &sv[i][1], &o), 0);
  }
  for (int round = 0; round < 10; round++)
    for (int i = 0; i < N; i++) {
      char msg[16], back[16];
      int len = snprintf(msg, sizeof msg, "m%d-%d", i, round);
      assert_int_equal(br_write(sv[i][0], msg, (size_t)len, BR_NEVER), len);
      assert_int_equal(br_read_full(sv[i][0], back, (size_t)len, br_deadline_ms(5000)), len);
      assert_memory_equal(back, msg, (size_t)len);
    }
  for (int i = 0; i < N; i++) {
    br_close(sv[i][0]);
    void *r = NULL;
    assert_int_equal(br_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 0);
    br_close(sv[i][1]);
  }
  return NULL;
}

static void test_compact(void **state) {
  (void)state;
  io_run(body_compact, NULL);
}

/* Two tasks reading one socket at once: the second is told BR_EBUSY (on
 * every backend), the first gets the data. */
static void *one_read(void *arg) {
  int fd = *(int *)arg;
  char buf[4];
  return (void *)(intptr_t)br_read(fd, buf, 1, br_deadline_ms(5000));
}

static void *body_two_readers(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  br_task *a, *b;
  assert_int_equal(br_spawn(&a, one_read, &sv[0], NULL), 0);
  br_yield(); /* a waits */
  assert_int_equal(br_spawn(&b, one_read, &sv[0], NULL), 0);
  void *ra = NULL, *rb = NULL;
  assert_int_equal(br_join(b, &rb), 0);
  assert_int_equal((intptr_t)rb, BR_EBUSY);
  assert_int_equal(br_write(sv[1], "1", 1, BR_NEVER), 1);
  assert_int_equal(br_join(a, &ra), 0);
  assert_int_equal((intptr_t)ra, 1);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_two_readers(void **state) {
  (void)state;
  io_run(body_two_readers, NULL);
}

/* Ten tasks writing one socket at once, with room for all: every write
 * succeeds (a second writer writes itself while the first's send is in the
 * ring), and every byte arrives. */
typedef struct writer_arg {
  int fd;
  char c;
} writer_arg;

static void *one_write(void *arg) {
  writer_arg *w = arg;
  char msg[100];
  memset(msg, w->c, sizeof msg);
  return (void *)(intptr_t)br_write(w->fd, msg, sizeof msg, br_deadline_ms(5000));
}

static void *body_many_writers(void *arg) {
  (void)arg;
  int sv[2];
  pair(sv);
  br_task *t[10];
  writer_arg wa[10];
  for (int i = 0; i < 10; i++) {
    wa[i] = (writer_arg){.fd = sv[0], .c = (char)('a' + i)};
    assert_int_equal(br_spawn(&t[i], one_write, &wa[i], NULL), 0);
  }
  for (int i = 0; i < 10; i++) {
    void *r = NULL;
    assert_int_equal(br_join(t[i], &r), 0);
    assert_int_equal((intptr_t)r, 100);
  }
  char buf[1000];
  assert_int_equal(br_read_full(sv[1], buf, sizeof buf, br_deadline_ms(5000)), 1000);
  int count[10] = {0};
  for (int i = 0; i < 1000; i++) {
    assert_true(buf[i] >= 'a' && buf[i] < 'a' + 10);
    count[buf[i] - 'a']++;
  }
  for (int i = 0; i < 10; i++) assert_int_equal(count[i], 100);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_many_writers(void **state) {
  (void)state;
  io_run(body_many_writers, NULL);
}

/* A loop freed while one of its tasks waits in a receive: the task is
 * cancelled, the kernel lets go of its buffer, nothing leaks. */
static int freed_pair[2];

static void *forever_reader(void *arg) {
  (void)arg;
  char buf[64];
  return (void *)(intptr_t)br_read_ready(freed_pair[0], buf, sizeof buf, BR_NEVER);
}

static void *stopper(void *arg) {
  br_yield();
  br_yield();
  br_loop_stop(arg);
  return NULL;
}

static void test_loop_free_pending(void **state) {
  (void)state;
  pair(freed_pair);
  br_loop *L = NULL;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  br_task *t, *s;
  assert_int_equal(br_loop_spawn(L, &t, forever_reader, NULL, NULL), 0);
  assert_int_equal(br_loop_spawn(L, &s, stopper, L, NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  assert_int_equal(br_loop_free(L), 0);
  assert_int_equal(br__task_structs_live(), 0);
  close(freed_pair[0]);
  close(freed_pair[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_path),          cmocka_unit_test(test_timeout_keeps_data),
    cmocka_unit_test(test_close_while_reading), cmocka_unit_test(test_cancel_in_read),
    cmocka_unit_test(test_big_send),      cmocka_unit_test(test_peer_gone),
    cmocka_unit_test(test_pipe),          cmocka_unit_test(test_compact),
    cmocka_unit_test(test_two_readers),   cmocka_unit_test(test_many_writers),
    cmocka_unit_test(test_loop_free_pending),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
