/* SPDX-License-Identifier: MIT */
/* test_trace_dump — the one wait record: br_task_get_stats' time waiting by
 * kind, br_dump while tasks block on each kind of wait (also from another
 * thread while the loop is stuck in a blocking call), the deadlock report
 * (a channel nobody sends on, a lock-order inversion, br_loop_run) and the
 * waits that must not be taken for a deadlock (a pool job, a blocking call,
 * another thread's future, an fd, a child, a loop with the check off). */
#include "test_util.h"
#include "core_test.h"

#include <braid/io.h>
#include <braid/pool.h>
#include <braid/trace.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MS 1000000LL
#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* --- the log hook: what braid reported ------------------------------------------ */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[16384];
static size_t loglen;

static void capture(br_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(msg);
  if (loglen + n + 2 < sizeof logbuf) {
    memcpy(logbuf + loglen, msg, n);
    loglen += n;
    logbuf[loglen++] = '\n';
    logbuf[loglen] = 0;
  }
  pthread_mutex_unlock(&log_mu);
}

static void log_reset(void) {
  pthread_mutex_lock(&log_mu);
  loglen = 0;
  logbuf[0] = 0;
  pthread_mutex_unlock(&log_mu);
  br_set_log(capture, NULL);
}

static bool log_has(const char *s) {
  pthread_mutex_lock(&log_mu);
  bool r = strstr(logbuf, s) != NULL;
  pthread_mutex_unlock(&log_mu);
  return r;
}

/* --- per-task time waiting, by kind ------------------------------------------------- */

static br_chan *ch;

/* Sleeps until cancelled: it is parked on its timer for as long as the
 * test looks, however slow the machine. */
static void *sleeps_long(void *a) {
  (void)a;
  br_sleep_ms(600000);
  return NULL;
}

static void *sends_after_20(void *a) {
  (void)a;
  br_sleep_ms(20);
  int v = 7;
  T_OK(br_chan_send(ch, &v));
  return NULL;
}

static void *blocks_20(void *a) {
  (void)a;
  usleep(20000);
  return IP(5);
}

/* Every wait below is made certain by the order of events, not by timing:
 * a task spawned runs only when the main task parks. */
static void *stats_main(void *a) {
  (void)a;
  T_OK(br_chan_new(&ch, sizeof(int), 0));
  br_task *s, *tx;
  T_OK(br_spawn(&s, sleeps_long, NULL, &(br_spawn_opts){.name = "sleeper"}));
  int64_t s0 = br_now();
  br_sleep_ms(5); /* the sleeper runs, parks on its timer */
  int64_t sleep_ns = br_now() - s0;
  br_task_stats st;
  T_OK(br_task_get_stats(s, &st));
  T_EQ(st.waiting, BR_WAIT_SLEEP); /* parked now, on its timer */
  T_TRUE(st.wait_ns[BR_WAIT_SLEEP] > 0); /* the wait in progress counts */
  /* The sender starts once the receive below has parked. */
  T_OK(br_spawn(&tx, sends_after_20, NULL, NULL));
  int v = 0;
  int64_t a0 = br_now();
  T_OK(br_chan_recv(ch, &v)); /* parked on the channel until the send */
  int64_t chan_ns = br_now() - a0;
  T_EQ(v, 7);
  T_OK(br_join(tx, NULL));
  T_OK(br_task_get_stats(s, &st));
  T_EQ(st.waiting, BR_WAIT_SLEEP); /* still */
  br_cancel(s); /* woken, it runs only once the join below has parked */
  int jrc = br_join(s, NULL);
  T_TRUE(jrc == 0 || jrc == BR_ECANCELED);
  br_future *f;
  int64_t b0 = br_now();
  T_OK(br_to_thread(&f, blocks_20, NULL));
  void *r;
  T_OK(br_await(f, &r));
  int64_t blocking_ns = br_now() - b0;
  br_future_unref(f);
  T_EQ(PI(r), 5);
  T_OK(br_task_get_stats(NULL, &st));
  T_EQ(st.waiting, BR_WAIT_NONE);
  /* Each wait is the time its call took, less the time the task was not
   * parked: running, or woken and waiting for the loop thread (on a busy
   * machine, for a CPU). That time is the task's whole life less all its
   * waits, so the bound is tight on an idle machine and loosens only by
   * what the machine took. */
  int64_t parked = 0;
  for (int k = 0; k < BR_WAIT_KINDS; k++) parked += st.wait_ns[k];
  int64_t unparked = br_now() - st.created - parked;
  T_TRUE(unparked >= 0);
#define LOW(call_ns) ((call_ns) - unparked > 1 ? (call_ns) - unparked : 1)
  T_RANGE(st.wait_ns[BR_WAIT_CHAN], LOW(chan_ns), chan_ns + chan_ns / 10 + MS); /* two clocks */
  T_RANGE(st.wait_ns[BR_WAIT_JOIN], 1, 10000 * MS);
  T_RANGE(st.wait_ns[BR_WAIT_BLOCKING], LOW(blocking_ns), blocking_ns + blocking_ns / 10 + MS);
  T_TRUE(blocking_ns >= 20 * MS); /* the call sleeps 20 ms */
  T_RANGE(st.wait_ns[BR_WAIT_SLEEP], LOW(sleep_ns), sleep_ns + sleep_ns / 10 + MS);
#undef LOW
  T_EQ(st.wait_ns[BR_WAIT_FD], 0);
  T_EQ(st.wait_ns[BR_WAIT_NONE], 0);
  /* Waiting is not running: the two never add up to more than the task's
   * life (run_ns also holds the time the OS took the thread away while the
   * task ran, so it can be anything up to that on a busy machine). */
  T_TRUE(st.run_ns + parked <= br_now() - st.created + MS);
  br_chan_free(ch);
  return NULL;
}

static void test_wait_stats_by_kind(void **state) {
  (void)state;
  run_main(stats_main, NULL);
}

static void test_wait_kind_names(void **state) {
  (void)state;
  assert_string_equal(br_wait_kind_name(BR_WAIT_FD), "fd");
  assert_string_equal(br_wait_kind_name(BR_WAIT_CHAN), "channel");
  assert_string_equal(br_wait_kind_name(BR_WAIT_BLOCKING), "blocking");
  assert_string_equal(br_wait_kind_name(BR_WAIT_KINDS), "?");
  assert_string_equal(br_wait_kind_name((br_wait_kind)-1), "?");
  for (int k = 0; k < BR_WAIT_KINDS; k++) assert_string_not_equal(br_wait_kind_name(k), "?");
}

/* --- br_dump while tasks block on each kind of wait ------------------------------------- */

typedef struct waits {
  int pipe_fds[2];
  br_mutex *mu;
  br_chan *ch;
  br_event *ev;
  br_task *holder;
  br_process proc;
  int gate[2]; /* the blocking call waits for a byte on it */
  char *dump;
} waits;

static waits W;

static void *w_sleep(void *a) { (void)a; return IP(br_sleep_ms(100000)); }
static void *w_fd(void *a) {
  (void)a;
  return IP(br_wait_fd(W.pipe_fds[0], BR_READABLE, BR_NEVER));
}
static void *w_chan(void *a) {
  (void)a;
  int v;
  return IP(br_chan_recv(W.ch, &v));
}
static void *w_hold(void *a) {
  (void)a;
  T_OK(br_mutex_lock(W.mu));
  br_sleep_ms(100000);
  br_mutex_unlock(W.mu);
  return NULL;
}
static void *w_lock(void *a) {
  (void)a;
  int rc = br_mutex_lock(W.mu);
  if (rc == 0) br_mutex_unlock(W.mu);
  return IP(rc);
}
static void *w_join(void *a) { return IP(br_join(a, NULL)); }
static void *w_child(void *a) {
  (void)a;
  return IP(br_process_wait(&W.proc, NULL, BR_NEVER));
}
static void *gate_wait(void *a) {
  (void)a;
  char c;
  while (read(W.gate[0], &c, 1) < 0 && errno == EINTR) {
  }
  return NULL;
}
static void *w_blocking(void *a) {
  (void)a;
  br_future *f;
  int rc = br_to_thread(&f, gate_wait, NULL);
  if (rc) return IP(rc);
  rc = br_await(f, NULL);
  br_future_unref(f);
  return IP(rc);
}
static void *w_event(void *a) {
  (void)a;
  return IP(br_event_wait(W.ev));
}

static void *dump_main(void *a) {
  (void)a;
  T_OK(pipe(W.pipe_fds));
  T_OK(pipe(W.gate));
  T_OK(br_mutex_new(&W.mu));
  T_OK(br_chan_new(&W.ch, sizeof(int), 0));
  T_OK(br_event_new(&W.ev));
  const char *argv[] = {"/bin/sleep", "100", NULL};
  T_OK(br_process_spawn(&W.proc, argv, NULL));
  br_task *t[10];
  int n = 0;
  T_OK(br_spawn(&t[n++], w_sleep, NULL, &(br_spawn_opts){.name = "sleeper"}));
  T_OK(br_spawn(&t[n++], w_fd, NULL, &(br_spawn_opts){.name = "reader"}));
  T_OK(br_spawn(&t[n++], w_chan, NULL, &(br_spawn_opts){.name = "receiver"}));
  T_OK(br_spawn(&W.holder, w_hold, NULL, &(br_spawn_opts){.name = "holder"}));
  t[n++] = W.holder;
  br_sleep_ms(1); /* the holder takes the mutex first */
  T_OK(br_spawn(&t[n++], w_lock, NULL, &(br_spawn_opts){.name = "locker"}));
  T_OK(br_spawn(&t[n++], w_join, t[0], &(br_spawn_opts){.name = "joiner"}));
  T_OK(br_spawn(&t[n++], w_child, NULL, &(br_spawn_opts){.name = "parent-of-child"}));
  int offloader = n;
  T_OK(br_spawn(&t[n++], w_blocking, NULL, &(br_spawn_opts){.name = "offloader"}));
  T_OK(br_spawn(&t[n++], w_event, NULL, &(br_spawn_opts){.name = "event-waiter"}));
  br_sleep_ms(20); /* everyone is parked */
  char *buf = NULL;
  size_t len = 0;
  FILE *mf = open_memstream(&buf, &len);
  T_TRUE(mf != NULL);
  T_OK(br_dump(mf));
  fclose(mf);
  W.dump = buf;
  /* Let everything go. The offloader is not cancelled but released: its
   * blocking call must have returned before the gate is closed (a cancelled
   * await does not wait for the thread still reading it). */
  for (int i = 0; i < n; i++)
    if (i != offloader) br_cancel(t[i]);
  T_TRUE(write(W.gate[1], "x", 1) == 1);
  for (int i = 1; i < n; i++) br_join(t[i], NULL); /* the joiner gave t[0]'s handle back */
  br_process_kill(&W.proc, 9);
  br_process_wait(&W.proc, NULL, BR_NEVER);
  br_process_close(&W.proc);
  br_close(W.pipe_fds[0]);
  close(W.pipe_fds[1]);
  close(W.gate[0]);
  close(W.gate[1]);
  br_mutex_free(W.mu);
  br_chan_free(W.ch);
  br_event_free(W.ev);
  return NULL;
}

static void expect(const char *dump, const char *want) {
  if (!strstr(dump, want)) {
    fprintf(stderr, "dump:\n%s\nmissing: %s\n", dump, want);
    fail();
  }
}

static void test_dump_each_kind(void **state) {
  (void)state;
  run_main(dump_main, NULL);
  char want[128];
  const char *d = W.dump;
  assert_non_null(d);
  expect(d, "task dump of pid ");
  expect(d, "task 'sleeper' #2 parked");
  expect(d, "on sleep, timer due in ");
  snprintf(want, sizeof want, "task 'reader' #3 parked");
  expect(d, want);
  snprintf(want, sizeof want, "on fd %d for reading", W.pipe_fds[0]);
  expect(d, want);
  expect(d, "on channel receive");
  expect(d, "on mutex held by task 'holder'");
  expect(d, "on join of task 'sleeper'");
  snprintf(want, sizeof want, "on child pid %d", W.proc.pid);
  expect(d, want);
  expect(d, "'offloader'");
  expect(d, "on a blocking-pool call");
  expect(d, "on event");
  expect(d, "parent task 'main'");
  expect(d, "KiB");
  expect(d, "running task 'main'");
  free(W.dump);
}

/* From another thread while the loop is stuck in a blocking call. */
static _Atomic int stuck;
static char *other_dump;

static void *dumper_thread(void *a) {
  (void)a;
  while (!atomic_load(&stuck)) usleep(1000);
  usleep(20000);
  size_t len;
  FILE *mf = open_memstream(&other_dump, &len);
  if (mf) {
    br_dump(mf);
    fclose(mf);
  }
  atomic_store(&stuck, 2);
  return NULL;
}

static void *stuck_main(void *a) {
  (void)a;
  br_task *s;
  T_OK(br_spawn(&s, w_sleep, NULL, &(br_spawn_opts){.name = "bystander"}));
  br_sleep_ms(1);
  atomic_store(&stuck, 1);
  /* A blocking call on the loop thread: the loop cannot run until the
   * other thread has dumped it. */
  int64_t end = br_now() + 5000 * MS;
  while (atomic_load(&stuck) != 2 && br_now() < end) usleep(1000);
  T_EQ(atomic_load(&stuck), 2);
  br_cancel(s);
  br_join(s, NULL);
  return NULL;
}

static void test_dump_from_another_thread_while_stuck(void **state) {
  (void)state;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, dumper_thread, NULL), 0);
  run_main(stuck_main, NULL);
  pthread_join(th, NULL);
  assert_non_null(other_dump);
  expect(other_dump, "running task 'main'");
  expect(other_dump, "task 'bystander' #2 parked");
  free(other_dump);
}

/* --- deadlocks ------------------------------------------------------------------------------ */

static void *recv_forever(void *a) {
  (void)a;
  int v;
  return IP(br_chan_recv(ch, &v));
}

static void *chan_deadlock_main(void *a) {
  (void)a;
  T_OK(br_chan_new(&ch, sizeof(int), 0));
  br_task *t;
  T_OK(br_spawn(&t, recv_forever, NULL, &(br_spawn_opts){.name = "lonely-receiver"}));
  int rc = br_join(t, NULL); /* nobody sends: both asleep for good */
  br_chan_free(ch);
  return IP(rc);
}

static void test_deadlock_channel(void **state) {
  (void)state;
  log_reset();
  int64_t t0 = br_now();
  assert_int_equal(br_run(NULL, chan_deadlock_main, NULL), BR_EDEADLK);
  assert_true(ms_since(t0) < 5000);
  br_set_log(NULL, NULL);
  assert_true(log_has("all tasks are asleep: deadlock"));
  assert_true(log_has("task 'lonely-receiver' #2 parked"));
  assert_true(log_has("on channel receive"));
  assert_true(log_has("task 'main' #1 parked"));
  assert_true(log_has("on join of task 'lonely-receiver'"));
  tf_assert_clean();
}

static br_mutex *ma, *mb;

static void *ab(void *a) {
  (void)a;
  T_OK(br_mutex_lock(ma));
  br_sleep_ms(5);
  int rc = br_mutex_lock(mb);
  if (!rc) br_mutex_unlock(mb);
  br_mutex_unlock(ma);
  return IP(rc);
}

static void *ba(void *a) {
  (void)a;
  T_OK(br_mutex_lock(mb));
  br_sleep_ms(5);
  int rc = br_mutex_lock(ma);
  if (!rc) br_mutex_unlock(ma);
  br_mutex_unlock(mb);
  return IP(rc);
}

static void test_deadlock_lock_order_in_loop_run(void **state) {
  (void)state;
  log_reset();
  br_loop *L;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  assert_int_equal(br_mutex_new(&ma), 0);
  assert_int_equal(br_mutex_new(&mb), 0);
  br_task *x, *y;
  assert_int_equal(br_loop_spawn(L, &x, ab, NULL, &(br_spawn_opts){.name = "a-then-b"}), 0);
  assert_int_equal(br_loop_spawn(L, &y, ba, NULL, &(br_spawn_opts){.name = "b-then-a"}), 0);
  assert_int_equal(br_loop_run(L), BR_EDEADLK);
  br_set_log(NULL, NULL);
  assert_true(log_has("all tasks are asleep: deadlock"));
  assert_true(log_has("on mutex held by task 'b-then-a'"));
  assert_true(log_has("on mutex held by task 'a-then-b'"));
  /* Freeing the loop cancels both; their locks return BR_ECANCELED. */
  assert_int_equal(br_task_close(x), BR_ECANCELED);
  /* x's unlock handed the mutex to y, which may have finished before its
   * own close cancels it. */
  int rc = br_task_close(y);
  assert_true(rc == 0 || rc == BR_ECANCELED);
  assert_int_equal(br_loop_free(L), 0);
  br_mutex_free(ma);
  br_mutex_free(mb);
  tf_assert_clean();
}

/* --- waits that are not deadlocks ------------------------------------------------------------- */

static void *spin_job(void *a) {
  (void)a;
  int64_t end = br_now() + 30 * MS;
  while (br_now() < end) {
  }
  return IP(3);
}

static br_future *foreign;
static int pipe_w;

static void *completes_later(void *a) {
  (void)a;
  usleep(30000);
  br_future_set(foreign, IP(11));
  usleep(10000);
  if (write(pipe_w, "x", 1) != 1) abort();
  return NULL;
}

static void *not_deadlocked_main(void *a) {
  (void)a;
  br_pool *pool;
  T_OK(br_pool_new(&pool, 1, NULL));
  br_future *f;
  T_OK(br_pool_submit(pool, &f, spin_job, NULL));
  void *v;
  T_OK(br_await(f, &v)); /* a pool job: the only task waits 30 ms on it */
  br_future_unref(f);
  T_EQ(PI(v), 3);
  T_OK(br_to_thread(&f, blocks_20, NULL));
  T_OK(br_await(f, &v)); /* a blocking call */
  br_future_unref(f);
  T_OK(br_future_new(&foreign));
  int p[2];
  T_OK(pipe(p));
  pipe_w = p[1];
  pthread_t th;
  T_OK(pthread_create(&th, NULL, completes_later, NULL));
  T_OK(br_await(foreign, &v)); /* another thread's future */
  T_EQ(PI(v), 11);
  T_EQ(br_wait_fd(p[0], BR_READABLE, BR_NEVER), BR_READABLE); /* an fd */
  pthread_join(th, NULL);
  br_future_unref(foreign);
  br_close(p[0]); /* forgets the loop's record of the fd, which is reused next */
  close(p[1]);
  br_process proc;
  const char *argv[] = {"/bin/sleep", "0.05", NULL};
  T_OK(br_process_spawn(&proc, argv, NULL));
  int st = -1;
  T_OK(br_process_wait(&proc, &st, BR_NEVER)); /* a child */
  T_EQ(st, 0);
  br_process_close(&proc);
  br_pool_free(pool);
  return NULL;
}

static void test_no_false_deadlocks(void **state) {
  (void)state;
  log_reset();
  run_main(not_deadlocked_main, NULL);
  br_set_log(NULL, NULL);
  assert_false(log_has("deadlock"));
}

static void *stopper(void *a) {
  usleep(50000);
  br_loop_stop(a);
  return NULL;
}

static void test_check_off_waits_for_a_stop(void **state) {
  (void)state;
  log_reset();
  br_loop *L;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  assert_int_equal(br_chan_new(&ch, sizeof(int), 0), 0);
  assert_int_equal(br_loop_set_deadlock_check(L, false), 0);
  assert_int_equal(br_loop_set_deadlock_check(NULL, false), BR_EINVAL);
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, recv_forever, NULL, NULL), 0);
  pthread_t th;
  int64_t t0 = br_now(); /* before the stopper exists: it stops the loop 50 ms or more after this */
  assert_int_equal(pthread_create(&th, NULL, stopper, L), 0);
  assert_int_equal(br_loop_run(L), 0); /* blocked until the other thread stopped it */
  assert_true(ms_since(t0) >= 40);
  pthread_join(th, NULL);
  assert_int_equal(br_task_close(t), BR_ECANCELED);
  assert_int_equal(br_loop_free(L), 0);
  br_chan_free(ch);
  br_set_log(NULL, NULL);
  assert_false(log_has("deadlock"));
}

static void test_dump_bad_input(void **state) {
  (void)state;
  assert_int_equal(br_dump(NULL), BR_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wait_kind_names),
      cmocka_unit_test(test_wait_stats_by_kind),
      cmocka_unit_test(test_dump_each_kind),
      cmocka_unit_test(test_dump_from_another_thread_while_stuck),
      cmocka_unit_test(test_deadlock_channel),
      cmocka_unit_test(test_deadlock_lock_order_in_loop_run),
      cmocka_unit_test(test_no_false_deadlocks),
      cmocka_unit_test(test_check_off_waits_for_a_stop),
      cmocka_unit_test(test_dump_bad_input),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  br_blocking_shutdown(); /* join the blocking pool's threads (TSan counts an idle-retired one) */
  return rc;
}
