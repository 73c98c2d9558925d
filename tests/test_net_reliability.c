/* SPDX-License-Identifier: MIT */
/* Reliability of the I/O layer: running out of descriptors while
 * accepting, cancellation in the middle of every kind of blocking call with
 * nothing leaked, EINTR, close-on-exec everywhere, UDP and DNS. Run once per
 * backend. */
#include <braid.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "test_io_util.h"

/* --- EMFILE on accept -------------------------------------------------------- */

typedef struct emfile_state {
  int lfd;
  int accepted;
  int errors;
  br_group *g;
} emfile_state;

static void *emfile_echo(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[256];
  ssize_t n;
  while ((n = br_read(fd, buf, sizeof buf, br_deadline_ms(10000))) > 0)
    if (br_write(fd, buf, (size_t)n, br_deadline_ms(10000)) < 0) break;
  br_close(fd);
  return NULL;
}

static void *emfile_acceptor(void *arg) {
  emfile_state *s = arg;
  while (s->accepted < 4) {
    int fd = br_accept(s->lfd, NULL, br_deadline_ms(10000));
    if (fd < 0) {
      s->errors++;
      return br_fail(fd, "accept");
    }
    s->accepted++;
    br_group_spawn(s->g, emfile_echo, (void *)(intptr_t)fd, NULL);
  }
  return NULL;
}

static int echo_once(int fd, const char *msg) {
  size_t len = strlen(msg);
  if (br_write(fd, msg, len, br_deadline_ms(5000)) != (ssize_t)len) return -1;
  char buf[64] = {0};
  if (br_read_full(fd, buf, len, br_deadline_ms(5000)) != (ssize_t)len) return -1;
  return memcmp(buf, msg, len) == 0 ? 0 : -1;
}

static void *body_emfile(void *arg) {
  (void)arg;
  struct rlimit old;
  getrlimit(RLIMIT_NOFILE, &old);
  int port;
  emfile_state s = {.lfd = io_listen(NULL, &port), .g = io_group()};
  br_addr a;
  br_addr_ip(&a, "127.0.0.1", port);
  /* Four clients connect before descriptors run out (the kernel completes
   * the handshakes; they wait in the backlog). */
  int c[4];
  for (int i = 0; i < 4; i++) {
    c[i] = br_connect(&a, 0, br_deadline_ms(5000));
    assert_true(c[i] >= 0);
  }
  br_task *acc;
  br_spawn(&acc, emfile_acceptor, &s, &(br_spawn_opts){.name = "acceptor"});
  /* Let it accept the first, then use up every descriptor left. */
  while (s.accepted < 1) br_sleep_ms(1);
  struct rlimit low = old;
  low.rlim_cur = (rlim_t)br_test_count_fds() + 32;
  setrlimit(RLIMIT_NOFILE, &low);
  int fillers[64], nf = 0;
  for (;;) {
    int fd = dup(0);
    if (fd < 0) break;
    assert_true(nf < 64);
    fillers[nf++] = fd;
  }
  assert_int_equal(errno, EMFILE);
  /* Accept is starved now, but backs off rather than fail or spin; the open
   * connection is served all the while. */
  int accepted_before = s.accepted;
  for (int i = 0; i < 20; i++) {
    assert_int_equal(echo_once(c[0], "ping"), 0);
    br_sleep_ms(5);
  }
  assert_int_equal(s.accepted, accepted_before);
  assert_int_equal(s.errors, 0);
  /* Free the descriptors: accepting resumes by itself. */
  for (int i = 0; i < nf; i++) close(fillers[i]);
  setrlimit(RLIMIT_NOFILE, &old);
  assert_int_equal(br_join(acc, NULL), 0);
  assert_int_equal(s.accepted, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(echo_once(c[i], "after"), 0);
    br_close(c[i]);
  }
  assert_int_equal(br_group_wait(s.g), 0);
  br_group_free(s.g);
  br_close(s.lfd);
  return NULL;
}

static void test_emfile_accept(void **state) {
  (void)state;
  io_run(body_emfile, NULL);
}

/* --- cancellation in the middle of every kind of call ------------------------ */

typedef struct blocked {
  const char *what;
  br_task_fn fn;
  void *arg;
  br_task *t;
  int rc;
} blocked;

static int g_lfd, g_full_fd, g_idle_fd, g_udp_fd, g_sig_fd, g_pipe_r, g_pipe_w;
static br_addr g_full_addr;
static br_process g_proc;

static void *b_accept(void *a) {
  (void)a;
  int fd = br_accept(g_lfd, NULL, BR_NEVER);
  return (void *)(intptr_t)fd;
}
static void *b_read(void *a) {
  (void)a;
  char buf[16];
  return (void *)(intptr_t)br_read(g_idle_fd, buf, sizeof buf, BR_NEVER);
}
static void *b_write(void *a) {
  (void)a;
  /* The peer never reads: fills the buffers, then waits. */
  static char big[1 << 20];
  ssize_t r;
  do r = br_write(g_full_fd, big, sizeof big, BR_NEVER);
  while (r > 0);
  return (void *)(intptr_t)r;
}
static void *b_connect(void *a) {
  (void)a;
  return (void *)(intptr_t)br_connect(&g_full_addr, 0, BR_NEVER);
}
static void *b_recvfrom(void *a) {
  (void)a;
  char buf[16];
  return (void *)(intptr_t)br_recvfrom(g_udp_fd, buf, sizeof buf, NULL, BR_NEVER);
}
static void *b_signal(void *a) {
  (void)a;
  return (void *)(intptr_t)br_signal_wait(g_sig_fd, BR_NEVER);
}
static void *b_pipe(void *a) {
  (void)a;
  char c;
  return (void *)(intptr_t)br_read(g_pipe_r, &c, 1, BR_NEVER);
}
static void *b_process(void *a) {
  (void)a;
  return (void *)(intptr_t)br_process_wait(&g_proc, NULL, BR_NEVER);
}
static void *b_resolve(void *a) {
  (void)a;
  br_addr out[4];
  return (void *)(intptr_t)br_resolve(out, 4, "localhost", "80", AF_UNSPEC, BR_NEVER);
}
static void *slow_job(void *a) {
  (void)a;
  struct timespec ts = {0, 200 * 1000000};
  nanosleep(&ts, NULL);
  return NULL;
}
static void *b_to_thread(void *a) {
  (void)a;
  br_future *f;
  int rc = br_to_thread(&f, slow_job, NULL);
  if (rc) return (void *)(intptr_t)rc;
  rc = br_await(f, NULL);
  br_future_unref(f);
  return (void *)(intptr_t)rc;
}
static void *b_file(void *a) {
  (void)a;
  /* Reads of /dev/zero, one after another, each too big to be done in
   * place (a read of 10 bytes would be, and the task would never park:
   * this test waits for every call to be parked before it cancels), so
   * each is handed off and the task waits in it: the cancel must land in
   * one of them (or in the open), and the call returns once its read is
   * done. */
  int fd = br_file_open("/dev/zero", O_RDONLY, 0, BR_NEVER);
  if (fd < 0) return (void *)(intptr_t)fd; /* cancelled in the open (a busy machine) */
  enum { BIG = 1 << 20 };
  char *buf = malloc(BIG);
  ssize_t r = 0;
  for (int i = 0; i < 100000 && r >= 0; i++) r = br_file_read(fd, buf, BIG, -1, BR_NEVER);
  br_file_close(fd);
  free(buf);
  return (void *)(intptr_t)r;
}
static void *b_sleep_then_connect(void *a) {
  (void)a;
  return (void *)(intptr_t)br_tcp_connect("localhost", br_addr_port(&g_full_addr), 0, BR_NEVER);
}

static void *body_cancel_everything(void *arg) {
  (void)arg;
  int fds_before = br_test_count_fds();
  int port;
  g_lfd = io_listen(NULL, &port);
  /* An idle connection (nobody writes to it) and one whose peer never reads. */
  br_addr a;
  br_addr_ip(&a, "127.0.0.1", port);
  int c1 = br_connect(&a, 0, br_deadline_ms(2000));
  int s1 = br_accept(g_lfd, NULL, br_deadline_ms(2000));
  g_idle_fd = c1;
  int fullpair[2];
  br_socketpair(fullpair, SOCK_STREAM);
  g_full_fd = fullpair[0];
  /* A listener whose backlog is full: connects hang. */
  int full = br_tcp_listen("127.0.0.1", 0, 1, 0);
  br_sock_local(full, &g_full_addr);
  int held[8], nheld = 0;
  while (nheld < 8) {
    int fd = br_connect(&g_full_addr, 0, br_deadline_ms(100));
    if (fd < 0) break;
    held[nheld++] = fd;
  }
  br_addr u;
  br_addr_ip(&u, "127.0.0.1", 0);
  g_udp_fd = br_udp_bind(&u, 0);
  int sigs[] = {SIGUSR2};
  g_sig_fd = br_signal_open(sigs, 1);
  int pp[2];
  br_pipe(pp);
  g_pipe_r = pp[0];
  g_pipe_w = pp[1];
  const char *argv[] = {"/bin/sleep", "30", NULL};
  assert_int_equal(br_process_spawn(&g_proc, argv, NULL), 0);
  int fds_open = br_test_count_fds();

  blocked calls[] = {
    {"accept", b_accept, NULL, NULL, 0},       {"read", b_read, NULL, NULL, 0},
    {"write", b_write, NULL, NULL, 0},         {"connect", b_connect, NULL, NULL, 0},
    {"recvfrom", b_recvfrom, NULL, NULL, 0},   {"signal", b_signal, NULL, NULL, 0},
    {"pipe", b_pipe, NULL, NULL, 0},           {"process", b_process, NULL, NULL, 0},
    {"to_thread", b_to_thread, NULL, NULL, 0}, {"file", b_file, NULL, NULL, 0},
    {"resolve", b_resolve, NULL, NULL, 0},     {"tcp_connect", b_sleep_then_connect, NULL, NULL, 0},
  };
  size_t n = sizeof calls / sizeof *calls;
  for (size_t i = 0; i < n; i++)
    assert_int_equal(br_spawn(&calls[i].t, calls[i].fn, NULL, &(br_spawn_opts){.name = calls[i].what}), 0);
  /* Let them all get to their wait: the loop runs one task at a time, so
   * once none of them is merely ready, each is parked in its call (or done,
   * for resolve). */
  for (bool ready = true; ready;) {
    ready = false;
    for (size_t i = 0; i < n; i++) {
      br_task_stats st;
      assert_int_equal(br_task_get_stats(calls[i].t, &st), 0);
      if (st.waiting == BR_WAIT_NONE && st.finished == 0) ready = true;
    }
    if (ready) assert_int_equal(br_yield(), 0);
  }
  for (size_t i = 0; i < n; i++) br_cancel(calls[i].t);
  for (size_t i = 0; i < n; i++) {
    void *v = NULL;
    br_join(calls[i].t, &v);
    int rc = (int)(intptr_t)v;
    if (!strcmp(calls[i].what, "resolve") && rc > 0) continue; /* finished first */
    if (rc != BR_ECANCELED) fprintf(stderr, "%s returned %s\n", calls[i].what, br_strerror(rc));
    assert_int_equal(rc, BR_ECANCELED);
  }
  /* Nothing leaked by the cancelled calls. A getaddrinfo cannot be
   * interrupted: a cancelled lookup returns at once and its pool thread
   * finishes it, with /etc/hosts or a socket open meanwhile. Count once
   * the blocking pool has nothing left to run. */
  int64_t quiet_by = br_deadline_ms(10000);
  for (;;) {
    br_blocking_stats dns, file;
    assert_int_equal(br_blocking_get_stats(BR_BLOCKING_DNS, &dns), 0);
    assert_int_equal(br_blocking_get_stats(BR_BLOCKING_FILE, &file), 0);
    if (dns.queued == 0 && dns.idle == dns.threads && file.queued == 0 && file.idle == file.threads)
      break;
    assert_true(br_now() < quiet_by);
    assert_int_equal(br_sleep_ms(1), 0);
  }
  assert_int_equal(br_test_count_fds(), fds_open);

  br_process_close(&g_proc);
  br_close(g_pipe_r);
  br_close(g_pipe_w);
  br_close(g_sig_fd);
  br_close(g_udp_fd);
  for (int i = 0; i < nheld; i++) br_close(held[i]);
  br_close(full);
  br_close(c1);
  br_close(s1);
  br_close(fullpair[0]);
  br_close(fullpair[1]);
  br_close(g_lfd);
  assert_int_equal(br_test_count_fds(), fds_before);
  return NULL;
}

static void test_cancel_everything(void **state) {
  (void)state;
  io_run(body_cancel_everything, NULL);
}

/* --- EINTR: signals hitting the loop thread do not break calls ------------- */

static volatile sig_atomic_t hits;
static void on_usr1(int s) {
  (void)s;
  hits++;
}

typedef struct pest {
  pthread_t target;
  atomic_bool stop;
} pest;

static void *pester(void *arg) {
  pest *p = arg;
  while (!atomic_load(&p->stop)) {
    pthread_kill(p->target, SIGUSR1);
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void *delayed_writer(void *arg) {
  int fd = (int)(intptr_t)arg;
  for (int i = 0; i < 50; i++) {
    br_sleep_ms(2);
    if (br_write(fd, "abcdefgh", 8, BR_NEVER) != 8) return br_fail(BR_EIO, "write");
  }
  return NULL;
}

static void *body_eintr(void *arg) {
  (void)arg;
  struct sigaction sa = {0}, old;
  sa.sa_handler = on_usr1; /* no SA_RESTART: system calls see EINTR */
  sigaction(SIGUSR1, &sa, &old);
  pest p = {.target = pthread_self()};
  pthread_t th;
  pthread_create(&th, NULL, pester, &p);
  int sv[2];
  br_socketpair(sv, SOCK_STREAM);
  br_task *w;
  br_spawn(&w, delayed_writer, (void *)(intptr_t)sv[0], NULL);
  char buf[400];
  assert_int_equal(br_read_full(sv[1], buf, 400, br_deadline_ms(10000)), 400);
  assert_int_equal(br_join(w, NULL), 0);
  atomic_store(&p.stop, true);
  pthread_join(th, NULL);
  sigaction(SIGUSR1, &old, NULL);
  assert_true(hits > 0);
  br_close(sv[0]);
  br_close(sv[1]);
  return NULL;
}

static void test_eintr(void **state) {
  (void)state;
  io_run(body_eintr, NULL);
}

/* --- UDP and DNS ---------------------------------------------------------- */

static void *udp_echo(void *arg) {
  int fd = (int)(intptr_t)arg;
  for (int i = 0; i < 3; i++) {
    char buf[2048];
    br_addr from;
    ssize_t n = br_recvfrom(fd, buf, sizeof buf, &from, br_deadline_ms(5000));
    if (n < 0) return br_fail((int)n, "recvfrom");
    if (br_sendto(fd, buf, (size_t)n, &from, br_deadline_ms(5000)) != n) return br_fail(BR_EIO, "sendto");
  }
  return NULL;
}

static void udp_round(const char *host, int family) {
  br_addr a;
  assert_int_equal(br_addr_ip(&a, host, 0), 0);
  int sfd = br_udp_bind(&a, 0);
  if (sfd < 0 && family == AF_INET6) return; /* no IPv6 here */
  assert_true(sfd >= 0);
  br_sock_local(sfd, &a);
  br_task *t;
  br_spawn(&t, udp_echo, (void *)(intptr_t)sfd, NULL);
  int cfd = br_udp_open(family);
  assert_true(cfd >= 0);
  for (int i = 0; i < 3; i++) {
    char msg[32], back[64];
    int len = snprintf(msg, sizeof msg, "datagram %d", i);
    assert_int_equal(br_sendto(cfd, msg, (size_t)len, &a, BR_NEVER), len);
    br_addr from;
    ssize_t n = br_recvfrom(cfd, back, sizeof back, &from, br_deadline_ms(5000));
    assert_int_equal(n, len);
    assert_memory_equal(back, msg, (size_t)len);
    assert_int_equal(br_addr_port(&from), br_addr_port(&a));
  }
  assert_int_equal(br_join(t, NULL), 0);
  /* A read with nothing to read ends at its deadline. */
  char c;
  assert_int_equal(br_recvfrom(cfd, &c, 1, NULL, br_deadline_ms(20)), BR_ETIMEDOUT);
  br_close(cfd);
  br_close(sfd);
}

static void *body_udp_dns(void *arg) {
  (void)arg;
  udp_round("127.0.0.1", AF_INET);
  udp_round("::1", AF_INET6);

  br_addr out[8];
  int n = br_resolve(out, 8, "localhost", "8080", AF_INET, br_deadline_ms(5000));
  assert_true(n >= 1);
  char text[64];
  br_addr_format(&out[0], text, sizeof text);
  assert_string_equal(text, "127.0.0.1:8080");
  n = br_resolve(out, 8, "127.0.0.1", "http", AF_UNSPEC, BR_NEVER); /* service by name */
  assert_true(n >= 1);
  assert_int_equal(br_addr_port(&out[0]), 80);
  assert_int_equal(br_resolve(out, 8, "[::1", "1", AF_UNSPEC, br_deadline_ms(5000)) < 0, 1);
  assert_int_equal(br_resolve(out, 8, "x", "1", 12345, BR_NEVER), BR_EINVAL);
  assert_int_equal(br_resolve(NULL, 8, "localhost", "1", AF_UNSPEC, BR_NEVER), BR_EINVAL);
  assert_int_equal(br_resolve(out, 0, "localhost", "1", AF_UNSPEC, BR_NEVER), BR_EINVAL);
  /* At most max addresses, in out[0..max). */
  memset(out, 0, sizeof out);
  assert_int_equal(br_resolve(out, 1, "127.0.0.1", "7", AF_UNSPEC, BR_NEVER), 1);
  assert_int_equal(br_addr_port(&out[0]), 7);
  assert_int_equal(out[1].len, 0);
  /* br_addr_port: only IP addresses have a port. */
  br_addr ux;
  assert_int_equal(br_addr_unix(&ux, "/tmp/x.sock"), 0);
  assert_int_equal(br_addr_port(&ux), BR_EINVAL);
  assert_int_equal(br_addr_port(NULL), BR_EINVAL);
  /* Many lookups at once go through the DNS class without blocking us. */
  br_addr tmp;
  assert_int_equal(br_addr_ip(&tmp, "fe80::1%1", 5), 0);
  assert_int_equal(br_addr_ip(&tmp, "[::1]", 5), 0);
  assert_int_equal(br_addr_ip(&tmp, "300.1.1.1", 5), BR_EINVAL);
  assert_int_equal(br_addr_ip(&tmp, "1.2.3.4", 70000), BR_EINVAL);
  return NULL;
}

static void test_udp_dns(void **state) {
  (void)state;
  io_run(body_udp_dns, NULL);
}

/* --- close-on-exec everywhere ------------------------------------------------ */

static void *body_cloexec(void *arg) {
  (void)arg;
  int port;
  int lfd = io_listen(NULL, &port);
  int c = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(2000));
  br_addr peer;
  int s = br_accept(lfd, &peer, br_deadline_ms(2000));
  int sv[2], pp[2];
  br_socketpair(sv, SOCK_STREAM);
  br_pipe(pp);
  br_addr u;
  br_addr_ip(&u, "127.0.0.1", 0);
  int ufd = br_udp_bind(&u, 0);
  int sigs[] = {SIGUSR2};
  int sfd = br_signal_open(sigs, 1);
  int ffd = br_file_open("/dev/null", O_RDONLY, 0, BR_NEVER);
  br_process p;
  const char *argv[] = {"/bin/true", NULL};
  br_process_opts po = {.in = BR_STDIO_PIPE, .out = BR_STDIO_PIPE, .err = BR_STDIO_PIPE};
  assert_int_equal(br_process_spawn(&p, argv, &po), 0);
  io_assert_all_cloexec();
  br_process_close(&p);
  br_file_close(ffd);
  int fds[] = {lfd, c, s, sv[0], sv[1], pp[0], pp[1], ufd, sfd};
  for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) {
    assert_true(fds[i] >= 0);
    br_close(fds[i]);
  }
  return NULL;
}

static void test_cloexec(void **state) {
  (void)state;
  io_run(body_cloexec, NULL);
}

int main(void) {
  io_fd_baseline();
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_emfile_accept), cmocka_unit_test(test_cancel_everything),
    cmocka_unit_test(test_eintr),         cmocka_unit_test(test_udp_dns),
    cmocka_unit_test(test_cloexec),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
