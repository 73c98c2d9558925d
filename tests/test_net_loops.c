/* SPDX-License-Identifier: MIT */
/* br_run_loops: one loop per thread, SO_REUSEPORT listeners spreading
 * connections, hand-offs between loops, cancellation, failures. Run once per
 * backend. */
#include <braid.h>

#include <semaphore.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "test_io_util.h"

#define NLOOPS 3

static int port;
static atomic_int served[NLOOPS];
static atomic_int ready_loops;
static atomic_int done_clients;
static int nclients;

static void *serve_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[64];
  ssize_t n = br_read(fd, buf, sizeof buf, br_deadline_ms(5000));
  if (n > 0) {
    char reply[16];
    int len = snprintf(reply, sizeof reply, "loop %d", br_loops_index());
    br_write(fd, reply, (size_t)len, br_deadline_ms(5000));
  }
  br_close(fd);
  return NULL;
}

static void *client(void *arg) {
  (void)arg;
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "connect");
  br_write(fd, "hi", 2, BR_NEVER);
  char buf[16] = {0};
  ssize_t n = br_read_full(fd, buf, sizeof buf - 1, br_deadline_ms(5000));
  br_close(fd);
  if (n < 6 || strncmp(buf, "loop ", 5))
    return br_fail(BR_EIO, "reply '%s' (%s)", buf, n < 0 ? br_errname((int)n) : "short");
  atomic_fetch_add(&served[atoi(buf + 5)], 1);
  if (atomic_fetch_add(&done_clients, 1) + 1 == nclients) br_loops_cancel();
  return NULL;
}

static void *clients_main(void *arg) {
  (void)arg;
  br_group *g = io_group();
  for (int i = 0; i < nclients; i++) br_group_spawn(g, client, NULL, NULL);
  int rc = br_group_wait(g);
  if (rc) {
    fprintf(stderr, "client: %s\n", br_group_message(g));
    br_loops_cancel(); /* fail now rather than wait for the missing clients */
  }
  br_group_free(g);
  return rc ? br_fail(rc, "clients") : NULL;
}

/* Every loop listens on the same port; loop 0 also starts the clients on
 * another loop (a hand-off) once everybody listens. */
static void *server_main(void *arg) {
  (void)arg;
  int i = br_loops_index();
  if (i < 0 || br_loops_count() != NLOOPS) return br_fail(BR_EINVAL, "index %d", i);
  int lfd = br_tcp_listen("127.0.0.1", port, 128, BR_SOCK_REUSEPORT);
  if (lfd < 0) return br_fail(lfd, "listen");
  if (atomic_fetch_add(&ready_loops, 1) + 1 == NLOOPS) {
    int rc = br_loops_spawn(NLOOPS - 1, clients_main, NULL, "clients");
    if (rc) return br_fail(rc, "handoff");
  }
  br_group *g = io_group();
  for (;;) {
    int fd = br_accept(lfd, NULL, BR_NEVER);
    if (fd < 0) break; /* cancelled once every client is done */
    br_group_spawn(g, serve_conn, (void *)(intptr_t)fd, NULL);
  }
  br_group_wait(g);
  br_group_free(g);
  br_close(lfd);
  return NULL;
}

static void test_reuseport(void **state) {
  (void)state;
  /* Pick a free port first. */
  int lfd = br_tcp_listen("127.0.0.1", 0, 0, BR_SOCK_REUSEPORT);
  br_addr a;
  br_sock_local(lfd, &a);
  port = br_addr_port(&a);
  close(lfd);
  nclients = (int)br_test_scaled(600);
  int rc = br_run_loops(NLOOPS, server_main, NULL, NULL);
  /* The mains were cancelled on purpose, but each returned normally. */
  assert_int_equal(rc, 0);
  assert_int_equal(atomic_load(&done_clients), nclients);
  int total = 0, busy = 0;
  for (int i = 0; i < NLOOPS; i++) {
    total += served[i];
    busy += served[i] > 0;
  }
  assert_int_equal(total, nclients);
  assert_true(busy >= 2); /* the kernel spread the connections */
  assert_int_equal(br_loops_index(), -1);
}

/* --- messages between loops ------------------------------------------------- */

static atomic_int pings;

static void *pong(void *arg) {
  intptr_t hops = (intptr_t)arg;
  atomic_fetch_add(&pings, 1);
  if (hops > 0) {
    int next = (br_loops_index() + 1) % br_loops_count();
    int rc = br_loops_spawn(next, pong, (void *)(hops - 1), "pong");
    if (rc) return br_fail(rc, "spawn");
  }
  return NULL;
}

static void *ping_main(void *arg) {
  (void)arg;
  if (br_loops_index() == 0) {
    int rc = br_loops_spawn(1, pong, (void *)(intptr_t)99, "pong");
    if (rc) return br_fail(rc, "spawn");
  }
  if (br_loops_spawn(NLOOPS, pong, NULL, NULL) != BR_EINVAL) return br_fail(BR_EIO, "bad index");
  return NULL;
}

static void test_handoff(void **state) {
  (void)state;
  atomic_store(&pings, 0);
  /* Each main returns at once; the loops stay up for the chain of hand-offs
   * that their tasks keep making. */
  assert_int_equal(br_run_loops(NLOOPS, ping_main, NULL, NULL), 0);
  assert_int_equal(atomic_load(&pings), 100);
  assert_int_equal(br_loops_spawn(0, pong, NULL, NULL), BR_EINVAL); /* outside */
}

/* --- failures and SIGINT ----------------------------------------------------- */

static void *fail_on_two(void *arg) {
  (void)arg;
  if (br_loops_index() == 2) return br_fail(BR_EIO, "loop two gives up");
  return NULL;
}

typedef struct logged {
  pthread_mutex_t mu;
  int errors;
  char last[256];
} logged;

static void log_hook(br_log_level level, const char *msg, void *ud) {
  logged *lg = ud;
  pthread_mutex_lock(&lg->mu);
  if (level == BR_LOG_ERROR) {
    lg->errors++;
    snprintf(lg->last, sizeof lg->last, "%s", msg);
  }
  pthread_mutex_unlock(&lg->mu);
}

static void test_failure(void **state) {
  (void)state;
  /* The first failing main's code, its message through the log hook. */
  logged lg = {.mu = PTHREAD_MUTEX_INITIALIZER};
  br_set_log(log_hook, &lg);
  assert_int_equal(br_run_loops(NLOOPS, fail_on_two, NULL, NULL), BR_EIO);
  br_set_log(NULL, NULL);
  assert_int_equal(lg.errors, 1);
  assert_non_null(strstr(lg.last, "main-2 failed"));
  assert_non_null(strstr(lg.last, "loop two gives up"));
  assert_int_equal(br_run_loops(2, NULL, NULL, NULL), BR_EINVAL);
  /* Negative counts are invalid (0 is BR_CPUS), and so is more than 4096. */
  assert_int_equal(br_run_loops(-1, fail_on_two, NULL, NULL), BR_EINVAL);
  assert_int_equal(br_run_loops(-4, fail_on_two, NULL, NULL), BR_EINVAL);
  assert_int_equal(br_run_loops(4097, fail_on_two, NULL, NULL), BR_EINVAL);
}

/* BR_CPUS: one loop per CPU the process may use. */
static atomic_int cpus_seen;
static atomic_int cpus_bad;

static void *count_loops(void *arg) {
  (void)arg;
  if (br_loops_count() != br_cpu_count()) atomic_fetch_add(&cpus_bad, 1);
  if (br_loops_index() < 0 || br_loops_index() >= br_loops_count()) atomic_fetch_add(&cpus_bad, 1);
  atomic_fetch_add(&cpus_seen, 1);
  return NULL;
}

static void test_cpus(void **state) {
  (void)state;
  atomic_store(&cpus_seen, 0);
  atomic_store(&cpus_bad, 0);
  assert_int_equal(BR_CPUS, 0);
  assert_int_equal(br_run_loops(BR_CPUS, count_loops, NULL, NULL), 0);
  assert_int_equal(atomic_load(&cpus_seen), br_cpu_count());
  assert_int_equal(atomic_load(&cpus_bad), 0);
  /* Outside a group there is no index. */
  assert_int_equal(br_loops_index(), -1);
  assert_int_equal(br_loops_count(), 0);
}

static void *wait_forever(void *arg) {
  (void)arg;
  int rc = br_sleep_ms(60000);
  return rc == BR_ECANCELED ? NULL : br_fail(BR_EIO, "sleep returned %d", rc);
}
/* (a cancelled task reports BR_ECANCELED however it returns) */

static void *interrupter(void *arg) {
  (void)arg;
  /* Like any thread of a program using br_run_loops, this one must not take
   * the process-directed SIGINT itself. */
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  struct timespec ts = {0, 50 * 1000000};
  nanosleep(&ts, NULL);
  kill(getpid(), SIGINT);
  return NULL;
}

static void test_sigint(void **state) {
  (void)state;
  pthread_t t;
  pthread_create(&t, NULL, interrupter, NULL);
  int64_t t0 = br_now();
  assert_int_equal(br_run_loops(2, wait_forever, NULL, NULL), BR_ECANCELED);
  assert_true(br_now() - t0 < 5000000000LL);
  pthread_join(t, NULL);
}

/* br_loops_cancel reaches a loop whose hand-off queue the program filled
 * (br_call_soon_threadsafe answers BR_EAGAIN there): loop 1 holds its thread
 * while loop 0 fills loop 1's queue, cancels the group, then lets loop 1 go;
 * loop 1's main must be cancelled, not sleep its minute. */
static _Atomic(br_loop *) held_loop;
static sem_t hold;
static atomic_int held_cancelled;

static void noop_cb(void *arg) { (void)arg; }

static void *fill_then_cancel(void *arg) {
  (void)arg;
  if (br_loops_index() == 1) {
    atomic_store(&held_loop, br_loop_current());
    while (sem_wait(&hold) != 0) {} /* the loop thread itself: its queue fills */
    if (br_sleep_ms(60000) == BR_ECANCELED) atomic_store(&held_cancelled, 1);
    return NULL;
  }
  br_loop *other;
  while (!(other = atomic_load(&held_loop))) br_sleep_ms(1);
  int rc, queued = 0;
  while ((rc = br_call_soon_threadsafe(other, noop_cb, NULL)) == 0) queued++;
  if (rc != BR_EAGAIN || queued != BR_CALL_SOON_THREADSAFE_MAX)
    return br_fail(BR_EIO, "filling: %s after %d", br_errname(rc), queued);
  br_loops_cancel();
  sem_post(&hold);
  return NULL;
}

static void test_cancel_reaches_a_full_queue(void **state) {
  (void)state;
  sem_init(&hold, 0, 0);
  atomic_store(&held_loop, NULL);
  atomic_store(&held_cancelled, 0);
  int64_t t0 = br_now();
  int rc = br_run_loops(2, fill_then_cancel, NULL, NULL);
  assert_true(rc == 0 || rc == BR_ECANCELED);
  assert_int_equal(atomic_load(&held_cancelled), 1);
  assert_true(br_now() - t0 < 10000000000LL);
  sem_destroy(&hold);
}

/* A program started with SIGINT ignored (nohup, a shell's background job)
 * keeps it ignored: br_run_loops neither blocks nor reads it, and the mains
 * run to their end. */
static atomic_int ign_done;

static void *interrupted_while_ignored(void *arg) {
  (void)arg;
  if (br_loops_index() == 0) kill(getpid(), SIGINT);
  br_sleep_ms(50); /* a cancel would cut this short */
  if (br_cancelled() == 0) atomic_fetch_add(&ign_done, 1);
  return NULL;
}

static void test_sigint_ignored(void **state) {
  (void)state;
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGINT, &ign, &old);
  atomic_store(&ign_done, 0);
  assert_int_equal(br_run_loops(2, interrupted_while_ignored, NULL, NULL), 0);
  assert_int_equal(atomic_load(&ign_done), 2);
  struct sigaction now;
  sigaction(SIGINT, NULL, &now);
  assert_true(now.sa_handler == SIG_IGN);
  sigaction(SIGINT, &old, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_reuseport),
    cmocka_unit_test(test_handoff),
    cmocka_unit_test(test_failure),
    cmocka_unit_test(test_cpus),
    cmocka_unit_test(test_sigint),
    cmocka_unit_test(test_cancel_reaches_a_full_queue),
    cmocka_unit_test(test_sigint_ignored),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
