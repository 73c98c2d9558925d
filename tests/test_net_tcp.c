/* SPDX-License-Identifier: MIT */
/* TCP and Unix stream sockets from braid tasks: echo over IPv4, IPv6 and
 * Unix, many concurrent connections, half-close, resets, partial writes,
 * slow clients closed by a deadline, connect errors and timeouts, sendfile,
 * fairness of a task whose socket never runs dry. Run once per backend. */
#include <braid.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "test_io_util.h"

/* --- an echo server ------------------------------------------------------ */

typedef struct server {
  int lfd;
  int conns; /* accept this many, then stop */
  br_group *g;
} server;

static void *echo_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  for (;;) {
    ssize_t n = br_read(fd, buf, sizeof buf, br_deadline_ms(10000));
    if (n <= 0) break;
    if (br_write(fd, buf, (size_t)n, br_deadline_ms(10000)) < 0) break;
  }
  br_close(fd);
  return NULL;
}

static void *echo_server(void *arg) {
  server *s = arg;
  br_group *g = io_group();
  for (int i = 0; i < s->conns; i++) {
    int fd = br_accept(s->lfd, NULL, br_deadline_ms(10000));
    if (fd < 0) {
      br_group_free(g);
      return br_fail(fd, "accept");
    }
    br_group_spawn(g, echo_conn, (void *)(intptr_t)fd, NULL);
  }
  int rc = br_group_wait(g);
  br_group_free(g);
  return rc ? br_fail(rc, "echo group") : NULL;
}

typedef struct client_arg {
  br_addr addr;
  int id;
  size_t size;
} client_arg;

static void *echo_client(void *arg) {
  client_arg *c = arg;
  int fd = br_connect(&c->addr, BR_SOCK_NODELAY, br_deadline_ms(10000));
  if (fd < 0) return br_fail(fd, "connect");
  char *out = malloc(c->size), *in = malloc(c->size);
  for (size_t i = 0; i < c->size; i++) out[i] = (char)(i * 7 + (size_t)c->id);
  ssize_t w = br_write(fd, out, c->size, br_deadline_ms(10000));
  ssize_t r = w < 0 ? w : br_read_full(fd, in, c->size, br_deadline_ms(10000));
  int ok = r == (ssize_t)c->size && memcmp(in, out, c->size) == 0;
  br_close(fd);
  free(out);
  free(in);
  if (!ok) return br_fail(r < 0 ? (int)r : BR_EIO, "client %d: echo mismatch (%zd)", c->id, r);
  return NULL;
}

static void run_echo(const br_addr *addr, int lfd, int nclients, size_t size) {
  server s = {.lfd = lfd, .conns = nclients};
  br_task *st;
  assert_int_equal(br_spawn(&st, echo_server, &s, &(br_spawn_opts){.name = "server"}), 0);
  client_arg *ca = calloc((size_t)nclients, sizeof *ca);
  br_group *g = io_group();
  for (int i = 0; i < nclients; i++) {
    ca[i] = (client_arg){.addr = *addr, .id = i, .size = size};
    assert_int_equal(br_group_spawn(g, echo_client, &ca[i], NULL), 0);
  }
  int rc = br_group_wait(g);
  if (rc) fprintf(stderr, "clients: %s\n", br_group_message(g));
  assert_int_equal(rc, 0);
  br_group_free(g);
  assert_int_equal(br_join(st, NULL), 0);
  free(ca);
}

static void *body_echo_v4(void *arg) {
  (void)arg;
  int fds = br_test_count_fds();
  int port;
  int lfd = io_listen("127.0.0.1", &port);
  br_addr a;
  assert_int_equal(br_addr_ip(&a, "127.0.0.1", port), 0);
  run_echo(&a, lfd, (int)br_test_scaled(200), 3000);
  run_echo(&a, lfd, 4, 1 << 20); /* larger than the socket buffers */
  br_close(lfd);
  assert_int_equal(br_test_count_fds(), fds);
  return NULL;
}

static void test_echo_v4(void **state) {
  (void)state;
  io_run(body_echo_v4, NULL);
}

static void *body_echo_v6(void *arg) {
  (void)arg;
  int lfd = br_tcp_listen("::1", 0, 0, BR_SOCK_V6ONLY);
  if (lfd == -EADDRNOTAVAIL || lfd == -EAFNOSUPPORT) return NULL; /* no IPv6 here */
  assert_true(lfd >= 0);
  br_addr a;
  br_sock_local(lfd, &a);
  char text[64];
  br_addr_format(&a, text, sizeof text);
  assert_non_null(strstr(text, "[::1]:"));
  run_echo(&a, lfd, 20, 10000);
  br_close(lfd);

  /* The wildcard listener takes IPv4 too (dual stack). */
  lfd = br_tcp_listen(NULL, 0, 0, 0);
  assert_true(lfd >= 0);
  br_sock_local(lfd, &a);
  br_addr v4;
  br_addr_ip(&v4, "127.0.0.1", br_addr_port(&a));
  run_echo(&v4, lfd, 3, 100);
  br_close(lfd);
  return NULL;
}

static void test_echo_v6(void **state) {
  (void)state;
  io_run(body_echo_v6, NULL);
}

static void *body_unix(void *arg) {
  (void)arg;
  char path[64];
  snprintf(path, sizeof path, "/tmp/braid-test-%d.sock", (int)getpid());
  int lfd = br_unix_listen(path, 0);
  assert_true(lfd >= 0);
  br_addr a;
  br_addr_unix(&a, path);
  run_echo(&a, lfd, 10, 50000);
  br_close(lfd);
  /* A stale socket file from a dead listener is replaced. */
  lfd = br_unix_listen(path, 0);
  assert_true(lfd >= 0);
  br_close(lfd);
  unlink(path);

  char abs[64];
  snprintf(abs, sizeof abs, "@braid-test-%d", (int)getpid());
  lfd = br_unix_listen(abs, 0);
  assert_true(lfd >= 0);
  br_addr_unix(&a, abs);
  char text[80];
  br_sock_local(lfd, &a);
  br_addr_format(&a, text, sizeof text);
  assert_string_equal(text, abs);
  run_echo(&a, lfd, 3, 100);
  br_close(lfd);
  return NULL;
}

static void test_unix(void **state) {
  (void)state;
  io_run(body_unix, NULL);
}

/* --- half-close, reset ---------------------------------------------------- */

static void *half_close_server(void *arg) {
  int lfd = *(int *)arg;
  int fd = br_accept(lfd, NULL, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "accept");
  char buf[256];
  size_t total = 0;
  ssize_t n;
  /* Read the whole request: end of stream marks its end. */
  while ((n = br_read(fd, buf, sizeof buf, br_deadline_ms(5000))) > 0) total += (size_t)n;
  if (n < 0) return br_fail((int)n, "read");
  char reply[64];
  int len = snprintf(reply, sizeof reply, "got %zu bytes", total);
  if (br_write(fd, reply, (size_t)len, br_deadline_ms(5000)) != len) return br_fail(BR_EIO, "write");
  br_close(fd);
  return NULL;
}

static void *body_half_close(void *arg) {
  (void)arg;
  int port;
  int lfd = io_listen(NULL, &port);
  br_task *t;
  br_spawn(&t, half_close_server, &lfd, NULL);
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  assert_true(fd >= 0);
  assert_int_equal(br_write(fd, "hello world", 11, BR_NEVER), 11);
  assert_int_equal(br_shutdown(fd, SHUT_WR), 0);
  char buf[64] = {0};
  ssize_t n = br_read_full(fd, buf, sizeof buf - 1, br_deadline_ms(5000));
  assert_int_equal(n, 12);
  assert_string_equal(buf, "got 11 bytes");
  /* After the reply, end of stream. */
  assert_int_equal(br_read(fd, buf, sizeof buf, br_deadline_ms(1000)), 0);
  /* Writing after our own shutdown fails cleanly, without SIGPIPE. */
  assert_int_equal(br_write(fd, "x", 1, BR_NEVER), BR_EPIPE);
  br_close(fd);
  assert_int_equal(br_join(t, NULL), 0);
  br_close(lfd);
  return NULL;
}

static void test_half_close(void **state) {
  (void)state;
  io_run(body_half_close, NULL);
}

static void *reset_server(void *arg) {
  int lfd = *(int *)arg;
  int fd = br_accept(lfd, NULL, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "accept");
  char c;
  br_read(fd, &c, 1, br_deadline_ms(5000));
  /* Close with SO_LINGER 0: the peer gets a RST instead of a FIN. */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  br_close(fd);
  return NULL;
}

static void *body_reset(void *arg) {
  (void)arg;
  int port;
  int lfd = io_listen(NULL, &port);
  br_task *t;
  br_spawn(&t, reset_server, &lfd, NULL);
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  assert_true(fd >= 0);
  assert_int_equal(br_write(fd, "x", 1, BR_NEVER), 1);
  assert_int_equal(br_join(t, NULL), 0);
  char buf[16];
  ssize_t n = br_read(fd, buf, sizeof buf, br_deadline_ms(5000));
  assert_int_equal(n, BR_ECONNRESET);
  /* Writes to the dead connection fail; the process survives (no SIGPIPE). */
  ssize_t w = 0;
  for (int i = 0; i < 10 && w >= 0; i++) w = br_write(fd, "yyyy", 4, br_deadline_ms(1000));
  assert_true(w == BR_EPIPE || w == BR_ECONNRESET);
  br_close(fd);
  br_close(lfd);
  return NULL;
}

static void test_reset(void **state) {
  (void)state;
  io_run(body_reset, NULL);
}

/* --- partial writes and vectors ---------------------------------------- */

typedef struct slow_reader {
  int fd;
  size_t expect;
  uint64_t sum;
} slow_reader;

static void *slow_read(void *arg) {
  slow_reader *s = arg;
  char buf[7000];
  size_t got = 0;
  int i = 0;
  while (got < s->expect) {
    ssize_t n = br_read(s->fd, buf, sizeof buf, br_deadline_ms(20000));
    if (n <= 0) return br_fail(n < 0 ? (int)n : BR_EIO, "read at %zu", got);
    for (ssize_t k = 0; k < n; k++) s->sum = s->sum * 31 + (unsigned char)buf[k];
    got += (size_t)n;
    if (++i % 64 == 0) br_sleep_ms(1); /* let the writer's buffer fill up */
  }
  return NULL;
}

static void *body_partial(void *arg) {
  (void)arg;
  int sv[2];
  assert_int_equal(br_socketpair(sv, SOCK_STREAM), 0);
  /* Small buffers: every large write is split many times. */
  int small = 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  size_t size = (size_t)br_test_scaled(8 << 20);
  char *data = malloc(size);
  uint64_t sum = 0;
  for (size_t i = 0; i < size; i++) {
    data[i] = (char)(i ^ (i >> 9));
    sum = sum * 31 + (unsigned char)data[i];
  }
  slow_reader s = {.fd = sv[1], .expect = size * 2};
  br_task *t;
  br_spawn(&t, slow_read, &s, NULL);
  assert_int_equal(br_write(sv[0], data, size, br_deadline_ms(20000)), (ssize_t)size);
  /* The same bytes again through writev, cut into uneven pieces. */
  struct iovec iov[40];
  size_t off = 0;
  int cnt = 0;
  while (off < size) {
    size_t len = size / 37 + (size_t)cnt * 13;
    if (len > size - off || cnt == 39) len = size - off;
    iov[cnt].iov_base = data + off;
    iov[cnt].iov_len = len;
    off += len;
    cnt++;
  }
  assert_int_equal(br_writev(sv[0], iov, cnt, br_deadline_ms(20000)), (ssize_t)size);
  assert_int_equal(br_join(t, NULL), 0);
  uint64_t twice = sum;
  for (size_t i = 0; i < size; i++) twice = twice * 31 + (unsigned char)data[i];
  assert_true(s.sum == twice);
  free(data);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_partial_writes(void **state) {
  (void)state;
  io_run(body_partial, NULL);
}

/* --- deadlines: slow clients, connect -------------------------------------- */

static void *deadline_server(void *arg) {
  int lfd = *(int *)arg;
  int fd = br_accept(lfd, NULL, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "accept");
  /* A request must arrive within 100 ms; the slow client gets closed. */
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(100), false);
  char buf[64];
  ssize_t n = br_read_full(fd, buf, sizeof buf, BR_NEVER);
  int rc = br_scope_exit(&s);
  br_close(fd);
  if (n != BR_ETIMEDOUT || rc != BR_ETIMEDOUT) return br_fail(BR_EIO, "n=%zd rc=%d", n, rc);
  return NULL;
}

static void *body_slow_client(void *arg) {
  (void)arg;
  int port;
  int lfd = io_listen(NULL, &port);
  br_task *t;
  br_spawn(&t, deadline_server, &lfd, NULL);
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  assert_true(fd >= 0);
  br_write(fd, "GET", 3, BR_NEVER); /* ... and never the rest */
  int64_t t0 = br_now();
  char c;
  assert_int_equal(br_read(fd, &c, 1, br_deadline_ms(5000)), 0); /* closed on us */
  int64_t waited = br_now() - t0;
  assert_true(waited >= 80000000 && waited < 3000000000LL);
  assert_int_equal(br_join(t, NULL), 0);
  br_close(fd);
  br_close(lfd);
  return NULL;
}

static void test_slow_client(void **state) {
  (void)state;
  io_run(body_slow_client, NULL);
}

static void *body_connect_errors(void *arg) {
  (void)arg;
  int fds = br_test_count_fds();
  /* Refused: a port nobody listens on (bind one, close it). */
  int port;
  int lfd = io_listen(NULL, &port);
  br_close(lfd);
  assert_int_equal(br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(2000)), BR_ECONNREFUSED);

  /* Timeout: a listener with a tiny backlog that never accepts. Once its
   * queue is full, the kernel drops further SYNs and connect hangs. */
  lfd = br_tcp_listen("127.0.0.1", 0, 1, 0);
  br_addr a;
  br_sock_local(lfd, &a);
  int held[8];
  int nheld = 0, rc = 0;
  int64_t t0 = 0;
  while (nheld < 8) {
    t0 = br_now();
    rc = br_connect(&a, 0, br_deadline_ms(200));
    if (rc < 0) break;
    held[nheld++] = rc;
  }
  assert_int_equal(rc, BR_ETIMEDOUT);
  int64_t waited = br_now() - t0;
  assert_true(waited >= 150000000 && waited < 2000000000LL);
  /* The same through a cancel scope's deadline. */
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(50), false);
  rc = br_connect(&a, 0, BR_NEVER);
  br_scope_exit(&s);
  assert_int_equal(rc, BR_ETIMEDOUT);
  for (int i = 0; i < nheld; i++) br_close(held[i]);
  br_close(lfd);

  /* Names that do not resolve. */
  rc = br_tcp_connect("no-such-host.invalid", 80, 0, br_deadline_ms(5000));
  assert_true(rc == BR_ENOENT || rc == BR_EAGAIN);
  assert_int_equal(br_test_count_fds(), fds);
  return NULL;
}

static void test_connect_errors(void **state) {
  (void)state;
  io_run(body_connect_errors, NULL);
}

/* --- sendfile --------------------------------------------------------------- */

static void *body_sendfile(void *arg) {
  (void)arg;
  char path[64];
  snprintf(path, sizeof path, "/tmp/braid-sendfile-%d", (int)getpid());
  size_t size = 3 << 20;
  char *data = malloc(size);
  for (size_t i = 0; i < size; i++) data[i] = (char)(i * 13);
  FILE *f = fopen(path, "w");
  fwrite(data, 1, size, f);
  fclose(f);
  int in = br_file_open(path, O_RDONLY, 0, BR_NEVER);
  assert_true(in >= 0);
  unlink(path);
  int sv[2];
  br_socketpair(sv, SOCK_STREAM);
  slow_reader s = {.fd = sv[1], .expect = size - 1000};
  br_task *t;
  br_spawn(&t, slow_read, &s, NULL);
  off_t off = 1000;
  assert_int_equal(br_sendfile(sv[0], in, &off, size, BR_NEVER), (ssize_t)(size - 1000));
  assert_int_equal(off, (off_t)size);
  assert_int_equal(br_join(t, NULL), 0);
  uint64_t sum = 0;
  for (size_t i = 1000; i < size; i++) sum = sum * 31 + (unsigned char)data[i];
  assert_true(sum == s.sum);
  br_file_close(in);
  br_close(sv[0]);
  br_close(sv[1]);
  free(data);
  return NULL;
}

static void test_sendfile(void **state) {
  (void)state;
  io_run(body_sendfile, NULL);
}

/* --- fairness: a socket that never runs dry does not starve the loop ------- */

typedef struct flood {
  int fd;
  volatile bool stop;
  long ticks;
} flood;

static void *flood_writer(void *arg) {
  flood *f = arg;
  char buf[512] = {0};
  while (!f->stop)
    if (br_write(f->fd, buf, sizeof buf, br_deadline_ms(5000)) < 0) break;
  return NULL;
}

static void *ticker(void *arg) {
  flood *f = arg;
  for (int i = 0; i < 20; i++) {
    br_sleep_ms(1);
    f->ticks++;
  }
  f->stop = true;
  return NULL;
}

static void *body_fairness(void *arg) {
  (void)arg;
  int sv[2];
  br_socketpair(sv, SOCK_STREAM);
  flood f = {.fd = sv[0]};
  br_task *w, *tk;
  br_spawn(&w, flood_writer, &f, NULL);
  br_spawn(&tk, ticker, &f, NULL);
  /* Read as fast as possible: reads almost never wait, yet the ticker must
   * still get its turns and stop us. */
  char buf[256];
  int64_t end = br_deadline_ms(10000);
  while (!f.stop && br_now() < end)
    if (br_read(sv[1], buf, sizeof buf, br_deadline_ms(5000)) <= 0) break;
  assert_true(f.stop);
  assert_int_equal(f.ticks, 20);
  /* Unblock the writer if its buffer is full. */
  br_close(sv[1]);
  br_join(w, NULL);
  br_join(tk, NULL);
  br_close(sv[0]);
  return NULL;
}

/* br_read_ready after a short read: when the peer's last data and its end
 * of stream arrive together (one readiness edge), the end of stream must
 * be returned at once, not after the whole deadline. */
typedef struct eof_reader {
  int fd;
  ssize_t first, second;
  int64_t waited_ns;
} eof_reader;

static void *read_then_ready(void *arg) {
  eof_reader *r = arg;
  char buf[256];
  r->first = br_read(r->fd, buf, sizeof buf, br_deadline_ms(5000)); /* waits: nothing yet */
  int64_t t0 = br_now();
  r->second = br_read_ready(r->fd, buf, sizeof buf, br_deadline_ms(3000));
  r->waited_ns = br_now() - t0;
  return NULL;
}

static void eof_with_data(int rd, int wr, bool tcp) {
  eof_reader r = {.fd = rd};
  br_task *t;
  br_spawn(&t, read_then_ready, &r, NULL);
  br_sleep_ms(20); /* the reader is parked in br_read */
  /* Data and end of stream while the reader waits: one edge for both. */
  assert_int_equal(br_write(wr, "hello", 5, BR_NEVER), 5);
  if (tcp)
    assert_int_equal(br_shutdown(wr, SHUT_WR), 0);
  else
    br_close(wr);
  assert_int_equal(br_join(t, NULL), 0);
  assert_int_equal(r.first, 5);
  assert_int_equal(r.second, 0);
  assert_true(r.waited_ns < 1000000000LL);
}

static void *body_read_ready_eof(void *arg) {
  (void)arg;
  int sv[2];
  assert_int_equal(br_socketpair(sv, SOCK_STREAM), 0);
  eof_with_data(sv[0], sv[1], false);
  br_close(sv[0]);

  int pfd[2];
  assert_int_equal(br_pipe(pfd), 0);
  eof_with_data(pfd[0], pfd[1], false);
  br_close(pfd[0]);

  int port;
  int lfd = io_listen("127.0.0.1", &port);
  int c = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  assert_true(c >= 0);
  int s = br_accept(lfd, NULL, br_deadline_ms(5000));
  assert_true(s >= 0);
  eof_with_data(s, c, true);
  br_close(s);
  br_close(c);
  br_close(lfd);
  return NULL;
}

static void test_read_ready_eof(void **state) {
  (void)state;
  io_run(body_read_ready_eof, NULL);
}

static void test_fairness(void **state) {
  (void)state;
  io_run(body_fairness, NULL);
}

/* --- descriptors that are not open ---------------------------------------- */

/* Every stream call given a descriptor that is not open says BR_EBADF, on
 * both backends, for a negative number, one that was just closed (the loop
 * has a record of it) and a huge one (far past any the loop has seen: it
 * must not grow its table to that size, gigabytes for 1 << 30). */
static void *body_bad_fds(void *arg) {
  (void)arg;
  int sv[2];
  assert_int_equal(br_socketpair(sv, SOCK_STREAM), 0);
  assert_int_equal(br_write(sv[0], "x", 1, BR_NEVER), 1);
  char c;
  assert_int_equal(br_read(sv[1], &c, 1, BR_NEVER), 1);
  int closed = sv[0];
  assert_int_equal(br_close(sv[0]), 0);
  const int bad[] = {-1, -5, closed, 1 << 30, INT32_MAX};
  char buf[16] = {0};
  struct iovec iov = {buf, sizeof buf};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int fd = bad[i];
    int64_t dl = br_deadline_ms(5000);
    assert_int_equal(br_read(fd, buf, sizeof buf, dl), BR_EBADF);
    assert_int_equal(br_read_ready(fd, buf, sizeof buf, dl), BR_EBADF);
    assert_int_equal(br_read_full(fd, buf, sizeof buf, dl), BR_EBADF);
    assert_int_equal(br_readv(fd, &iov, 1, dl), BR_EBADF);
    assert_int_equal(br_write(fd, buf, sizeof buf, dl), BR_EBADF);
    assert_int_equal(br_write_some(fd, buf, sizeof buf, dl), BR_EBADF);
    assert_int_equal(br_writev(fd, &iov, 1, dl), BR_EBADF);
    assert_int_equal(br_wait_fd(fd, BR_READABLE, dl), BR_EBADF);
    assert_int_equal(br_wait_fd(fd, BR_WRITABLE, dl), BR_EBADF);
    assert_int_equal(br_accept(fd, NULL, dl), BR_EBADF);
  }
  br_close(sv[1]);
  return NULL;
}

/* br_accept on a socket that can never accept is BR_EINVAL at once: one
 * that is not listening, and one of a type without connections (UDP, Unix
 * datagrams), whose EOPNOTSUPP is not the passing network error it is for
 * a listening TCP socket. Retrying that spun the loop for ever, past the
 * deadline and deaf to cancellation. */
static void *body_accept_cannot(void *arg) {
  (void)arg;
  br_addr a;
  assert_int_equal(br_addr_ip(&a, "127.0.0.1", 0), 0);
  int udp = br_udp_bind(&a, 0);
  assert_true(udp >= 0);
  int dg[2], st[2];
  assert_int_equal(br_socketpair(dg, SOCK_DGRAM), 0);
  assert_int_equal(br_socketpair(st, SOCK_STREAM), 0);
  const int fds[] = {udp, dg[0], st[0]};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    assert_int_equal(br_accept(fds[i], NULL, br_deadline_ms(60000)), BR_EINVAL);
  br_close(udp);
  br_close(dg[0]);
  br_close(dg[1]);
  br_close(st[0]);
  br_close(st[1]);
  return NULL;
}

static void test_accept_cannot_accept(void **state) {
  (void)state;
  io_run(body_accept_cannot, NULL);
}

static void test_bad_fds(void **state) {
  (void)state;
  io_run(body_bad_fds, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_echo_v4),       cmocka_unit_test(test_echo_v6),
    cmocka_unit_test(test_unix),          cmocka_unit_test(test_half_close),
    cmocka_unit_test(test_reset),         cmocka_unit_test(test_partial_writes),
    cmocka_unit_test(test_slow_client),   cmocka_unit_test(test_connect_errors),
    cmocka_unit_test(test_sendfile),      cmocka_unit_test(test_fairness),
    cmocka_unit_test(test_read_ready_eof), cmocka_unit_test(test_bad_fds),
    cmocka_unit_test(test_accept_cannot_accept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
