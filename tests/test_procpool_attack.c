/* SPDX-License-Identifier: MIT */
/* test_procpool_attack — the process pool under an attacker and a busy
 * machine: a job that scribbles bad records into its own worker's result
 * ring (the parent must neither crash, nor spin, nor hand out bytes that
 * change afterwards: that job fails, its worker is replaced), a program
 * started with a forged fork-server marker (main() must run), a timeout
 * after the pool went idle, a long job ahead of short ones (no short job
 * may wait behind it while a worker idles), imap_unordered with a window
 * far larger than a task's stack. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "exec/procpool_shm.h"
#include "test_procpool_jobs.h"
#include "test_util.h"

static br_procpool *new_pool(int n, const br_procpool_opts *o) {
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, n, o);
  if (r == BR_ENOSYS && br_test_emulated()) br_test_skip("no exec of /proc/self/exe under qemu");
  assert_int_equal(r, 0);
  return p;
}

/* Await f for at most ms: a hang fails the test instead of stalling it. */
static int await_ms(br_future *f, void **v, int64_t ms) {
  int r = br_await_until(f, v, br_deadline_ms(ms));
  if (r == BR_ETIMEDOUT && !br_future_done(f)) fail_msg("still not done after %lld ms", (long long)ms);
  return r;
}

/* ---- jobs that break the result protocol from inside their worker */

enum {
  M_PAD0 = 1,      /* a PAD record of size 0 (the manager looped on it) */
  M_HUGE_RECLEN,   /* a record whose payload length is far past the ring */
  M_HUGE_ENTRY,    /* an entry whose data length is far past its record */
  M_HUGE_MSG,      /* a failed entry with a 2 GiB message */
  M_HEAD_FAR,      /* a published head ten rings ahead */
  M_WRONG_SEQ,     /* a well-formed result for a request never sent */
  M_FD_SHORT,      /* a 4 KiB memfd announced as 1 GiB (SIGBUS on reading) */
  M_FD_WRITABLE,   /* a memfd the job keeps mapped and goes on changing */
  M_BAD_KINDS      /* a record of kind 77 */
};

typedef struct wslot {
  unsigned char *base;
  int sock;
} wslot;

/* This worker's slot region (its memfd's mapping) and slot socket. */
static wslot find_slot(void) {
  wslot w = {NULL, -1};
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (strstr(line, "memfd:braid-worker") && sscanf(line, "%lx-%lx", &a, &b) == 2 &&
        b - a >= PP_SLOT_SIZE && b - a < PP_SLOT_SIZE + 65536) {
      w.base = (unsigned char *)a;
      break;
    }
  }
  if (f) fclose(f);
  for (int fd = 3; fd < 1024; fd++) {
    int t = 0;
    socklen_t tl = sizeof t;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &tl) == 0 && t == SOCK_SEQPACKET) {
      w.sock = fd;
      break;
    }
  }
  return w;
}

static void send_fd(int sock, int fd) {
  char c = 'r';
  struct iovec iov = {&c, 1};
  union {
    char b[CMSG_SPACE(sizeof(int))];
    struct cmsghdr a;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                      .msg_controllen = sizeof u.b};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  if (sendmsg(sock, &mh, 0) < 0) _exit(99);
}

static void *scribble(void *arg) {
  volatile unsigned char *m = arg;
  for (unsigned i = 0;; i++) m[i % (2u << 20)] = (unsigned char)i;
  return NULL;
}

static int evil_fn(const void *in, size_t len, br_bytes *out) {
  (void)out;
  uint32_t how;
  if (len != sizeof how) return BR_EINVAL;
  memcpy(&how, in, sizeof how);
  wslot w = find_slot();
  if (!w.base || w.sock < 0) {
    br_fail(BR_EIO, "evil: no slot region found");
    return BR_EIO;
  }
  pp_slot_shm *ctl = (pp_slot_shm *)w.base;
  pp_ring *res = pp_slot_res(w.base);
  uint64_t head = atomic_load(&res->head);
  uint64_t seq = atomic_load(&ctl->started_seq);
  pp_rec *rec = (pp_rec *)(res->data + (head & (PP_RING_CAP - 1)));
  pp_entry *e = (pp_entry *)(rec + 1);
  memset(rec, 0, sizeof *rec + sizeof *e + 8);
  rec->kind = PP_RES;
  rec->seq = seq;
  rec->size = sizeof *rec + sizeof *e + 8;
  rec->len = sizeof *e + 8;
  uint64_t publish = head + rec->size;
  switch (how) {
  case M_PAD0:
    rec->kind = PP_PAD;
    rec->size = 0;
    publish = head + 8;
    break;
  case M_HUGE_RECLEN:
    rec->len = (uint64_t)1 << 40;
    break;
  case M_HUGE_ENTRY:
    e->len = (uint64_t)1 << 40;
    break;
  case M_HUGE_MSG:
    e->err = BR_EIO;
    e->msglen = 1u << 31;
    break;
  case M_HEAD_FAR:
    publish = head + 10 * PP_RING_CAP;
    break;
  case M_WRONG_SEQ:
    rec->seq = seq + 5;
    e->len = 8;
    break;
  case M_FD_SHORT: {
    int fd = memfd_create("evil", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, 4096) < 0) _exit(98);
    /* Sealed as the parent wants it: only its size is wrong. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW) < 0) _exit(98);
    send_fd(w.sock, fd);
    rec->flags = PP_F_FD;
    rec->len = sizeof *e;
    e->len = (uint64_t)1 << 30;
    break;
  }
  case M_FD_WRITABLE: {
    int fd = memfd_create("evil", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, 2 << 20) < 0) _exit(98);
    void *m = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) _exit(98);
    memset(m, 'A', 2 << 20);
    send_fd(w.sock, fd);
    rec->flags = PP_F_FD;
    rec->len = sizeof *e;
    e->len = 2 << 20;
    pthread_t th;
    pthread_create(&th, NULL, scribble, m); /* after delivery too */
    break;
  }
  case M_BAD_KINDS:
    rec->kind = 77;
    break;
  }
  atomic_store(&res->head, publish);
  /* Wake the manager as a worker does, then wait to be killed. */
  uint64_t one = 1;
  for (int fd = 3; fd < 1024; fd++) {
    struct stat st;
    char path[64], target[64] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (fstat(fd, &st) == 0 && readlink(path, target, sizeof target - 1) > 0 &&
        strstr(target, "eventfd"))
      (void)!write(fd, &one, sizeof one);
  }
  for (;;) pause();
}
BR_JOB(evil, evil_fn);

static void one_violation(uint32_t how) {
  br_procpool *p = new_pool(1, NULL);
  br_future *bad, *good;
  assert_int_equal(br_procpool_submit(p, &bad, "evil", &how, sizeof how, NULL), 0);
  tjob j = tj(7, A_OK, 0);
  assert_int_equal(br_procpool_submit(p, &good, "tjob", &j, sizeof j, NULL), 0);
  void *v = NULL;
  int r = await_ms(bad, &v, 20000);
  if (r == 0) {
    /* Only acceptable if the bytes handed out never change. */
    br_bytes *b = v;
    assert_non_null(b);
    unsigned char first[64];
    memcpy(first, b->data, sizeof first);
    tsleep_ms(50);
    assert_memory_equal(first, b->data, sizeof first);
    br_bytes_free(b);
  } else {
    if (r != BR_EWORKERDIED) fail_msg("case %u: %s: %s", how, br_errname(r), br_future_message(bad));
    const char *m = br_future_message(bad);
    if (!strstr(m, "malformed")) fail_msg("case %u: message '%s'", how, m);
  }
  /* The job behind it runs on a fresh worker. */
  assert_int_equal(await_ms(good, &v, 20000), 0);
  assert_int_equal(tresult(v), 7);
  br_future_unref(bad);
  br_future_unref(good);
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_true(st.started >= 2);
  assert_int_equal(br_procpool_free(p), 0);
}

static void test_bad_records(void **state) {
  (void)state;
  for (uint32_t how = M_PAD0; how <= M_BAD_KINDS; how++) one_violation(how);
}

/* ---- a forged fork-server start */

/* Run this program with the marker `mark` and fd 3 one end of a seqpacket
 * socketpair whose other end we hold; send `config` (if not NULL) on it.
 * Returns the exit status; *hello is set if the child behaved as a server. */
static int run_forged(const char *mark, const void *config, size_t len, bool *hello) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (dup2(sv[1], 3) < 0) _exit(97);
    setenv("BRAID_PROCPOOL_SERVER", mark, 1);
    setenv("PP_ATTACK_CHILD", "1", 1);
    char *argv[] = {"forged", NULL};
    execve("/proc/self/exe", argv, environ);
    _exit(96);
  }
  close(sv[1]);
  if (config) {
    int fds[2] = {eventfd(0, EFD_CLOEXEC), memfd_create("forged", MFD_CLOEXEC)};
    (void)!ftruncate(fds[1], 8192);
    /* A child that (rightly) ignores the marker runs main(), which exits at
     * once: it may be gone before this send (EPIPE). */
    int r = br__pp_send_fds(sv[0], config, len, fds, 2, 0);
    if (r != 0 && r != -EPIPE && r != -ECONNRESET) fail_msg("send CONFIG: %s", br_errname(r));
    close(fds[0]);
    close(fds[1]);
  }
  /* A server says hello at once; main() exits at once. */
  *hello = false;
  struct pollfd pf = {.fd = sv[0], .events = POLLIN};
  if (poll(&pf, 1, 10000) > 0 && (pf.revents & POLLIN)) {
    pp_msg m;
    if (recv(sv[0], &m, sizeof m, 0) == (ssize_t)sizeof m && m.type == PP_M_HELLO) *hello = true;
  }
  close(sv[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

static void test_forged_server_start(void **state) {
  (void)state;
  bool hello;
  pp_config_msg c = {.m.type = PP_M_CONFIG};
  /* The old marker, no key. */
  int st = run_forged("3", &c.m, sizeof c.m, &hello);
  assert_false(hello);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 42); /* main() ran */
  /* A well-formed marker, but CONFIG carries another key. */
  char mark[3 + 2 * PP_KEY_LEN + 1] = "3:";
  for (int i = 0; i < PP_KEY_LEN; i++) snprintf(mark + 2 + 2 * i, 3, "%02x", i);
  memset(c.key, 0x5a, sizeof c.key);
  st = run_forged(mark, &c, sizeof c, &hello);
  assert_false(hello);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 42);
  /* A worker marker naming a process that is not our parent. */
  char wmark[16 + 2 * PP_KEY_LEN];
  snprintf(wmark, sizeof wmark, "w:1:%s", mark + 2);
  st = run_forged(wmark, NULL, 0, &hello);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 42);
}

/* The same forged start in a setuid program run by another user: never a
 * server, whatever the rest looks like (needs root to set it up). */
static void test_forged_start_setuid(void **state) {
  (void)state;
  if (geteuid() != 0) skip(); /* needs root to make a setuid copy */
  char path[64];
  snprintf(path, sizeof path, "/tmp/braid-pp-setuid-%d", (int)getpid());
  char cmd[256];
  snprintf(cmd, sizeof cmd, "cp /proc/%d/exe %s && chmod 4755 %s", (int)getpid(), path, path);
  if (system(cmd) != 0) skip(); /* cannot copy the test program */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = fork();
  if (pid == 0) {
    if (dup2(sv[1], 3) < 0 || setgid(65534) < 0 || setuid(65534) < 0) _exit(97);
    setenv("BRAID_PROCPOOL_SERVER", "3", 1);
    setenv("PP_ATTACK_CHILD", "1", 1);
    char *argv[] = {"forged-setuid", NULL};
    execve(path, argv, environ);
    _exit(96);
  }
  close(sv[1]);
  close(sv[0]); /* an old-style server would now exit 3 instead of running main() */
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  unlink(path);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 96) skip(); /* cannot exec a setuid copy here */
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 42);
}

/* ---- timeouts once the pool has been idle */

static void test_timeout_after_idle(void **state) {
  (void)state;
  for (int pool_wide = 0; pool_wide < 2; pool_wide++) {
    br_procpool_opts o = {.timeout_ms = pool_wide ? 200 : 0};
    br_procpool *p = new_pool(1, &o);
    br_future *f;
    void *v;
    tjob j = tj(1, A_OK, 0);
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
    assert_int_equal(await_ms(f, &v, 20000), 0);
    br_bytes_free(v);
    br_future_unref(f);
    tsleep_ms(100); /* the manager goes to sleep with nothing to time */
    j = tj(2, A_SPIN, 0);
    br_procpool_submit_opts so = {.timeout_ms = 200};
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, pool_wide ? NULL : &so), 0);
    assert_int_equal(await_ms(f, &v, 20000), BR_ETIMEDOUT);
    br_future_unref(f);
    br_procpool_free(p);
  }
}

/* ---- head-of-line blocking */

static void test_long_job_ahead_of_short_ones(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  br_future *lf, *sf[20];
  tjob j = tj(100, A_WAITFLAG, 999); /* runs until the test sets counters[999] */
  assert_int_equal(br_procpool_submit(p, &lf, "tjob", &j, sizeof j, NULL), 0);
  while (atomic_load(&t.c[100]) == 0) tsleep_ms(1); /* it runs */
  for (uint32_t i = 0; i < 20; i++) {
    j = tj(i, A_SLEEP, 10);
    assert_int_equal(br_procpool_submit(p, &sf[i], "tjob", &j, sizeof j, NULL), 0);
  }
  /* Every short job finishes while the long one still runs: the idle
   * worker takes them all (20 x 10 ms). */
  assert_int_equal(br_wait(sf, 20, BR_WAIT_ALL, br_deadline_ms(15000)), 19);
  assert_false(br_future_done(lf));
  for (uint32_t i = 0; i < 20; i++) {
    void *v;
    assert_int_equal(br_await(sf[i], &v), 0);
    assert_int_equal(tresult(v), i);
    assert_int_equal(t.c[i], 1); /* each ran once */
    br_future_unref(sf[i]);
  }
  atomic_store(&t.c[999], 1);
  void *v;
  assert_int_equal(await_ms(lf, &v, 20000), 0);
  assert_int_equal(tresult(v), 100);
  br_future_unref(lf);
  br_procpool_free(p);
  tcounter_close(&t);
}

/* ---- imap_unordered with a window larger than a task's stack */

typedef struct wgen {
  uint32_t n;
  tjob j;
} wgen;

static int wgen_next(void *ud, size_t index, br_buf *item) {
  wgen *g = ud;
  if (index >= g->n) return 0;
  g->j = tj((uint32_t)(index % 1000) + 1, A_WAITFLAG, 0);
  *item = (br_buf){&g->j, sizeof g->j};
  return 1;
}

static tcounter big_t;
static void *flag_later(void *arg) {
  (void)arg;
  tsleep_ms(200);
  atomic_store(&big_t.c[0], 1);
  return NULL;
}

static void *big_window_task(void *arg) {
  br_procpool *p = arg;
  /* 60,000 chunks in flight: a wait list of them is 480 KB, more than the
   * task's whole 256 KiB stack. */
  wgen g = {.n = 60000};
  br_procpool_imap_opts io = {.chunksize = 1, .window = 60000};
  br_procpool_iter *it;
  assert_int_equal(br_procpool_imap_unordered(p, &it, "tjob", wgen_next, &g, &io), 0);
  pthread_t th;
  pthread_create(&th, NULL, flag_later, NULL);
  br_result res;
  size_t idx;
  assert_int_equal(br_procpool_iter_next(it, &res, &idx), 0);
  assert_int_equal(res.err, 0);
  assert_true(idx < 60000);
  br_results_free(&res, 1);
  br_procpool_iter_free(it);
  pthread_join(th, NULL);
  return NULL;
}

static void test_imap_unordered_big_window_in_task(void **state) {
  (void)state;
  tcounter_open(&big_t);
  br_procpool_opts o = topts(&big_t);
  br_procpool *p = new_pool(2, &o);
  assert_int_equal(br_run(NULL, big_window_task, p), 0);
  br_procpool_free(p);
  tcounter_close(&big_t);
}

int main(void) {
  if (getenv("PP_ATTACK_CHILD")) _exit(42); /* a forged start reached main() */
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_records),
      cmocka_unit_test(test_forged_server_start),
      cmocka_unit_test(test_forged_start_setuid),
      cmocka_unit_test(test_timeout_after_idle),
      cmocka_unit_test(test_long_job_ahead_of_short_ones),
      cmocka_unit_test(test_imap_unordered_big_window_in_task),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
