/* SPDX-License-Identifier: MIT */
/* test_loop — the event loop: create/run/stop/free, br_run (* Ctrl-C handling, result, errors), call_soon ordering and call_soon_threadsafe from many
 * threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

static void *nothing(void *arg) {
  (void)arg;
  return NULL;
}

/* --- lifecycle ------------------------------------------------------------ */

static void test_new_run_free(void **state) {
  (void)state;
  assert_null(br_loop_current());
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  assert_null(br_loop_current()); /* bound to the thread, but not running */
  int64_t t0 = br_now();
  assert_int_equal(br_loop_run(L), 0); /* nothing to do: returns at once */
  assert_true(br_now() - t0 < 500000000);
  assert_int_equal(br_loop_run(L), 0); /* and again */
  assert_int_equal(br_loop_free(L), 0);
  assert_int_equal(br_loop_free(NULL), 0);
}

static void test_bad_options(void **state) {
  (void)state;
  br_loop *bad = (br_loop *)&bad; /* must be overwritten with NULL */
  assert_int_equal(br_loop_new(&bad, &(br_loop_opts){.stack_size = 1}), BR_EINVAL);
  assert_null(bad);
  bad = (br_loop *)&bad;
  assert_int_equal(br_loop_new(&bad, &(br_loop_opts){.stack_size = (size_t)2 << 30}), BR_EINVAL);
  assert_null(bad);
  assert_int_equal(br_loop_new(&bad, &(br_loop_opts){.accounting = (br_accounting)99}), BR_EINVAL);
  assert_null(bad);
  assert_int_equal(br_loop_new(NULL, NULL), BR_EINVAL);
  /* Limits are accepted. */
  br_loop *L = NULL;
  (void)br_loop_new(&L, &(br_loop_opts){.stack_size = 16 * 1024});
  assert_non_null(L);
  assert_int_equal(br_loop_free(L), 0);
}

typedef struct {
  br_loop *loop;
  br_loop *seen;
  int run_rc, free_rc;
} self_ctx;

static void *inspect_loop(void *arg) {
  self_ctx *c = arg;
  c->seen = br_loop_current();
  c->run_rc = br_loop_run(c->loop);
  c->free_rc = br_loop_free(c->loop);
  return NULL;
}

static void test_current_and_busy(void **state) {
  (void)state;
  self_ctx c = {0};
  (void)br_loop_new(&c.loop, NULL);
  assert_non_null(c.loop);
  br_task *t;
  assert_int_equal(br_loop_spawn(c.loop, &t, inspect_loop, &c, NULL), 0);
  assert_int_equal(br_loop_run(c.loop), 0);
  assert_ptr_equal(c.seen, c.loop);
  assert_int_equal(c.run_rc, BR_EBUSY);
  assert_int_equal(c.free_rc, BR_EBUSY);
  assert_null(br_loop_current());
  assert_int_equal(br_task_close(t), 0);
  assert_int_equal(br_loop_free(c.loop), 0);
}

static void *run_other_loop(void *arg) {
  return IP(br_loop_run(arg));
}

static void test_run_from_other_thread(void **state) {
  (void)state;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_other_loop, L), 0);
  void *r;
  pthread_join(th, &r);
  assert_int_equal(PI(r), BR_EPERM);
  assert_int_equal(br_loop_free(L), 0);
}

static char spawn_trace[32];
static int ntrace;

static void *tracer(void *arg) {
  spawn_trace[ntrace++] = (char)('a' + PI(arg));
  return NULL;
}

static void test_spawn_before_run(void **state) {
  (void)state;
  ntrace = 0;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  br_task *t[4];
  for (int i = 0; i < 4; i++) assert_int_equal(br_loop_spawn(L, &t[i], tracer, IP(i), NULL), 0);
  assert_int_equal(ntrace, 0);
  assert_int_equal(br_loop_run(L), 0);
  spawn_trace[ntrace] = 0;
  assert_string_equal(spawn_trace, "abcd");
  for (int i = 0; i < 4; i++) assert_int_equal(br_task_close(t[i]), 0);
  assert_int_equal(br_loop_free(L), 0);
}

/* Several loops: one after the other on a thread, and at once on threads. */
static void *sleeper_value(void *arg) {
  if (br_sleep_ms(10)) return NULL;
  return arg;
}

static void *loop_thread(void *arg) {
  (void)arg;
  long sum = 0;
  for (int round = 0; round < 3; round++) {
    br_loop *L = NULL;
    (void)br_loop_new(&L, NULL);
    if (!L) return IP(-1);
    br_task *t[8];
    for (int i = 0; i < 8; i++)
      if (br_loop_spawn(L, &t[i], sleeper_value, IP(i), NULL)) return IP(-2);
    if (br_loop_run(L)) return IP(-3);
    for (int i = 0; i < 8; i++) {
      if (br_task_close(t[i])) return IP(-4);
    }
    if (br_loop_free(L)) return IP(-5);
    sum += 28;
  }
  return IP(sum);
}

static void test_loops_on_threads(void **state) {
  (void)state;
  pthread_t th[3];
  for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&th[i], NULL, loop_thread, NULL), 0);
  for (int i = 0; i < 3; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_int_equal(PI(r), 84);
  }
}

/* --- call_soon ------------------------------------------------------------- */

typedef struct {
  br_loop *loop;
  char trace[64];
  int n;
  bool in_task[8];
  br_loop *cur[8];
  br_task *spawned;
  int other_thread_rc;
} soon_ctx;

static soon_ctx sc;

static void soon_spawned_ran(void) { sc.trace[sc.n++] = 'S'; }

static void *spawned_by_cb(void *arg) {
  (void)arg;
  soon_spawned_ran();
  return NULL;
}

static void cb_letter(void *arg) {
  static int ncb;
  if (sc.n == 0) ncb = 0;
  int i = ncb++;
  char c = (char)PI(arg);
  sc.trace[sc.n++] = c;
  if (i < 8) {
    sc.in_task[i] = br_self() != NULL;
    sc.cur[i] = br_loop_current();
  }
  if (c == 'A') V_OK(br_call_soon(sc.loop, cb_letter, IP('D'))); /* next iteration */
  if (c == 'B') V_OK(br_spawn(&sc.spawned, spawned_by_cb, NULL, NULL));
}

static void *try_call_soon(void *arg) {
  (void)arg;
  sc.other_thread_rc = br_call_soon(sc.loop, cb_letter, IP('X'));
  return NULL;
}

static void *m_call_soon(void *arg) {
  (void)arg;
  sc.loop = br_loop_current();
  T_OK(br_call_soon(sc.loop, cb_letter, IP('A')));
  T_OK(br_call_soon(sc.loop, cb_letter, IP('B')));
  T_OK(br_call_soon(sc.loop, cb_letter, IP('C')));
  T_RC(br_call_soon(sc.loop, NULL, NULL), BR_EINVAL);
  T_RC(br_call_soon(NULL, cb_letter, NULL), BR_EINVAL);
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, try_call_soon, NULL), 0);
  pthread_join(th, NULL);
  T_RC(sc.other_thread_rc, BR_EPERM);
  T_EQ(sc.n, 0); /* not run synchronously */
  for (int i = 0; i < 5 && sc.n < 5; i++) T_OK(br_sleep_ms(1));
  T_TRUE(sc.spawned != NULL);
  T_OK(br_join(sc.spawned, NULL));
  sc.trace[sc.n] = 0;
  /* A, B, C in order; D (queued by A) after C; the task B spawned ran. */
  T_TRUE(strncmp(sc.trace, "ABC", 3) == 0);
  T_TRUE(strchr(sc.trace, 'D') > strchr(sc.trace, 'C'));
  T_TRUE(strchr(sc.trace, 'S') != NULL);
  T_EQ(sc.n, 5);
  for (int i = 0; i < 4; i++) {
    T_TRUE(!sc.in_task[i]); /* callbacks run outside any task */
    T_TRUE(sc.cur[i] == sc.loop);
  }
  return NULL;
}

static void test_call_soon_order(void **state) {
  (void)state;
  memset(&sc, 0, sizeof sc);
  run_main(m_call_soon, NULL);
}

/* call_soon_threadsafe from 4 threads x 10,000 callbacks: every one runs
 * exactly once, on the loop thread, and each thread's run in its order. */
enum { CST_THREADS = 4 };

typedef struct {
  br_loop *loop;
  long per_thread;
  atomic_uchar *hits;   /* per callback */
  long last_seq[CST_THREADS];
  atomic_long total;
  long out_of_order;
  long not_loop_thread;
  pthread_t loop_thread;
  br_future *all_done;
  atomic_int submit_errors;
} cst_ctx;

static cst_ctx cst;

static void cst_cb(void *arg) {
  long id = (long)PI(arg);
  int th = (int)(id / cst.per_thread);
  long seq = id % cst.per_thread;
  atomic_fetch_add(&cst.hits[id], 1);
  if (seq <= cst.last_seq[th]) cst.out_of_order++;
  cst.last_seq[th] = seq;
  if (!pthread_equal(pthread_self(), cst.loop_thread)) cst.not_loop_thread++;
  if (atomic_fetch_add(&cst.total, 1) + 1 == cst.per_thread * CST_THREADS) br_future_set(cst.all_done, NULL);
}

static void *cst_submitter(void *arg) {
  long th = (long)PI(arg);
  for (long i = 0; i < cst.per_thread; i++) {
    int rc;
    while ((rc = br_call_soon_threadsafe(cst.loop, cst_cb, IP(th * cst.per_thread + i))) == BR_ENOMEM) {
    }
    if (rc) atomic_fetch_add(&cst.submit_errors, 1);
    if ((i & 1023) == 0) sched_yield();
  }
  return NULL;
}

static void *m_call_soon_threadsafe(void *arg) {
  (void)arg;
  pthread_t th[CST_THREADS];
  for (long i = 0; i < CST_THREADS; i++) T_EQ(pthread_create(&th[i], NULL, cst_submitter, IP(i)), 0);
  /* Wait in the loop (not the thread) until every callback has run. */
  int rc = br_await_until(cst.all_done, NULL, br_deadline_ms(60000));
  for (int i = 0; i < CST_THREADS; i++) pthread_join(th[i], NULL);
  T_OK(rc);
  /* Nothing more arrives. */
  T_OK(br_sleep_ms(20));
  return NULL;
}

static void test_call_soon_threadsafe_many_threads(void **state) {
  (void)state;
  memset(&cst, 0, sizeof cst);
  cst.per_thread = br_test_scaled(10000);
  long n = cst.per_thread * CST_THREADS;
  cst.hits = calloc((size_t)n, sizeof *cst.hits);
  assert_non_null(cst.hits);
  for (int i = 0; i < CST_THREADS; i++) cst.last_seq[i] = -1;
  (void)br_future_new(&cst.all_done);
  cst.loop_thread = pthread_self();
  /* br_run creates the loop: hand it to the threads from inside. */
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  cst.loop = L;
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, m_call_soon_threadsafe, NULL, NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  assert_int_equal(br_task_close(t), 0);
  assert_int_equal(br_loop_free(L), 0);
  tf_assert_clean();
  assert_int_equal(atomic_load(&cst.submit_errors), 0);
  assert_int_equal(atomic_load(&cst.total), n);
  long bad = 0;
  for (long i = 0; i < n; i++)
    if (atomic_load(&cst.hits[i]) != 1) bad++;
  assert_int_equal(bad, 0);
  assert_int_equal(cst.out_of_order, 0);
  assert_int_equal(cst.not_loop_thread, 0);
  br_future_unref(cst.all_done);
  free(cst.hits);
}

/* A call_soon_threadsafe callback wakes a loop that sleeps in its poller. */
typedef struct {
  br_loop *loop;
  br_future *f;
  int64_t sent_at;
} wake_ctx;

static void set_future_cb(void *arg) {
  wake_ctx *w = arg;
  br_future_set(w->f, IP(5));
}

static void *late_submitter(void *arg) {
  wake_ctx *w = arg;
  usleep(100 * 1000);
  w->sent_at = br_now();
  br_call_soon_threadsafe(w->loop, set_future_cb, w);
  return NULL;
}

static void *m_threadsafe_wakes(void *arg) {
  wake_ctx *w = arg;
  w->loop = br_loop_current();
  (void)br_future_new(&w->f);
  T_TRUE(w->f != NULL);
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, late_submitter, w), 0);
  void *v = NULL;
  int rc = br_await_until(w->f, &v, br_deadline_ms(5000));
  int64_t woke = br_now();
  pthread_join(th, NULL);
  br_future_unref(w->f);
  T_OK(rc);
  T_EQ(PI(v), 5);
  T_RANGE((woke - w->sent_at) / 1000000, 0, 100);
  return NULL;
}

static void test_call_soon_threadsafe_wakes_sleeping_loop(void **state) {
  (void)state;
  wake_ctx w = {0};
  run_main(m_threadsafe_wakes, &w);
}

/* Once the loop is being freed, call_soon_threadsafe says BR_ECLOSED. */
typedef struct {
  br_loop *loop;
  int late_rc;
  int ran;
} closed_ctx;

static void late_cb(void *arg) {
  closed_ctx *c = arg;
  c->ran++;
}

static void probe_cb(void *arg) {
  closed_ctx *c = arg;
  c->ran++;
  c->late_rc = br_call_soon_threadsafe(c->loop, late_cb, c);
}

static void test_call_soon_threadsafe_after_close(void **state) {
  (void)state;
  closed_ctx c = {0};
  (void)br_loop_new(&c.loop, NULL);
  assert_non_null(c.loop);
  /* Queued while the loop is idle: runs while br_loop_free drains. */
  assert_int_equal(br_call_soon_threadsafe(c.loop, probe_cb, &c), 0);
  assert_int_equal(br_loop_free(c.loop), 0);
  assert_int_equal(c.ran, 1);
  assert_int_equal(c.late_rc, BR_ECLOSED);
  assert_int_equal(br_call_soon_threadsafe(NULL, late_cb, &c), BR_EINVAL);
}

/* Another thread's hand-over while the loop goes to sleep is never lost: a
 * task awaits a future that a helper thread completes as soon as it sees
 * it, round after round, so the completion races the loop's way into its
 * poller. A lost wake-up shows as a wait that lasts until its deadline.
 * The rounds stop after 20 s: the completer spins, and on a machine busy
 * with other work each round waits for it to get a core again (1.6 ms a
 * round with eight CPU hogs on two cores, ~15 us idle), which would take
 * 100,000 rounds past any time a test may take. */
typedef struct {
  br_future *_Atomic slot; /* the future to complete next, or NULL */
  atomic_bool quit;
} relay_ctx;

static void *relay_completer(void *arg) {
  relay_ctx *r = arg;
  unsigned n = 0;
  while (!atomic_load(&r->quit)) {
    br_future *f = atomic_exchange(&r->slot, NULL);
    if (f) {
      /* A varying pause, so that the completion lands anywhere on the
       * loop's way from the task's park into its poller. */
      for (volatile unsigned k = 0, m = (n++ * 37) % 4096; k < m; k++) {
      }
      br_future_set(f, IP(1));
      br_future_unref(f); /* the reference it was handed */
    }
  }
  return NULL;
}

static void *m_relay(void *arg) {
  relay_ctx *r = arg;
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, relay_completer, r), 0);
  long rounds = br_test_scaled(100000), slow = 0, done = 0;
  int64_t budget_end = br_now() + 20 * 1000000000LL;
  for (long i = 0; i < rounds && br_now() < budget_end; i++, done++) {
    br_future *f = NULL;
    T_OK(br_future_new(&f));
    atomic_store(&r->slot, br_future_ref(f)); /* a reference for the completer */
    int64_t t0 = br_now();
    int rc = br_await_until(f, NULL, br_deadline_ms(2000));
    if (rc || br_now() - t0 > 1000000000LL) slow++;
    br_future *untaken = atomic_exchange(&r->slot, NULL);
    if (untaken) br_future_unref(untaken);
    br_future_unref(f);
  }
  atomic_store(&r->quit, true);
  pthread_join(th, NULL);
  if (done < rounds) printf("remote wake-ups: %ld of %ld rounds in 20 s\n", done, rounds);
  T_EQ(slow, 0);
  T_TRUE(done >= (rounds < 1000 ? rounds : 1000));
  return NULL;
}

static void test_remote_wakeup_never_lost(void **state) {
  (void)state;
  relay_ctx r = {.slot = NULL};
  run_main(m_relay, &r);
}

/* --- stop ---------------------------------------------------------------- */

typedef struct {
  int phase;
  int sleep_rc;
  bool cleanup;
} stop_ctx;

static void *stops_loop(void *arg) {
  stop_ctx *s = arg;
  s->phase = 1;
  br_loop_stop(br_loop_current());
  if (br_yield()) return NULL; /* cancelled by br_loop_free */
  s->phase = 2;
  return NULL;
}

static void *long_sleeper(void *arg) {
  stop_ctx *s = arg;
  s->sleep_rc = br_sleep_ms(10000);
  s->cleanup = true;
  return NULL;
}

static void *stop_later(void *arg) {
  usleep(100 * 1000);
  br_loop_stop(arg);
  return NULL;
}

static void test_stop(void **state) {
  (void)state;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  stop_ctx s = {0};
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, stops_loop, &s, NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  assert_int_equal(s.phase, 1);   /* stopped, not cancelled */
  assert_false(br_task_done(t));
  assert_int_equal(br_loop_run(L), 0); /* resumes it */
  assert_int_equal(s.phase, 2);
  assert_int_equal(br_task_close(t), 0);

  /* From another thread while the loop sleeps in its poller. */
  stop_ctx z = {0};
  assert_int_equal(br_loop_spawn(L, &t, long_sleeper, &z, NULL), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, stop_later, L), 0);
  int64_t t0 = br_now();
  assert_int_equal(br_loop_run(L), 0);
  int64_t el = (br_now() - t0) / 1000000;
  pthread_join(th, NULL);
  assert_in_range(el, 90, 2000);
  assert_false(z.cleanup);
  /* br_loop_free cancels what is left; its cleanup runs. */
  assert_int_equal(br_detach(t), 0);
  assert_int_equal(br_loop_free(L), 0);
  assert_true(z.cleanup);
  assert_int_equal(z.sleep_rc, BR_ECANCELED);
}

/* A stop requested before br_loop_run starts (e.g. by another thread a
 * moment too early) must not be lost: the run returns after one iteration. */
static void test_stop_before_run(void **state) {
  (void)state;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  stop_ctx z = {0};
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, long_sleeper, &z, NULL), 0);
  br_loop_stop(L);
  int64_t t0 = br_now();
  /* With the stop lost this would take the full 10 s: bound it with a
   * watchdog stop. */
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, stop_later, L), 0);
  assert_int_equal(br_loop_run(L), 0);
  int64_t el = (br_now() - t0) / 1000000;
  pthread_join(th, NULL);
  assert_int_equal(br_task_close(t), BR_ECANCELED);
  assert_int_equal(br_loop_free(L), 0);
  if (el >= 90) fail_msg("br_loop_run ran %lld ms: the stop requested before it was lost", (long long)el);
}

/* --- free ------------------------------------------------------------- */

static void test_free_cancels_live_tasks(void **state) {
  (void)state;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  stop_ctx s[5];
  memset(s, 0, sizeof s);
  br_task *t[5];
  for (int i = 0; i < 5; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    assert_int_equal(br_loop_spawn(L, &t[i], long_sleeper, &s[i], &o), 0);
  }
  /* Let them start and block. */
  br_loop_spawn(L, NULL, stops_loop, &(stop_ctx){0}, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED});
  assert_int_equal(br_loop_run(L), 0);
  int64_t t0 = br_now();
  assert_int_equal(br_loop_free(L), 0); /* handles closed for us */
  assert_true(br_now() - t0 < 2000000000LL);
  for (int i = 0; i < 5; i++) {
    assert_true(s[i].cleanup);
    assert_int_equal(s[i].sleep_rc, BR_ECANCELED);
  }
}

/* --- br_run ------------------------------------------------------------- */

static void *returns_arg(void *arg) { return arg; }

static stop_ctx leftover[3];

static void *leaves_tasks_behind(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) {
    br_task *t;
    if (br_spawn(&t, long_sleeper, &leftover[i], NULL)) return br_fail(BR_EIO, "spawn");
    if (i == 0) br_detach(t);
  }
  br_yield();
  return IP(77);
}

static void *nested_run(void *arg) {
  int *rc = arg;
  *rc = br_run(NULL, nothing, NULL);
  return NULL;
}

static void test_br_run_basics(void **state) {
  (void)state;
  void *r = NULL;
  assert_int_equal(br_run(&r, returns_arg, IP(1234)), 0);
  assert_int_equal(PI(r), 1234);
  assert_int_equal(br_run(NULL, returns_arg, IP(1)), 0);
  assert_int_equal(br_run(&r, NULL, NULL), BR_EINVAL);

  int nested = 0;
  assert_int_equal(br_run(NULL, nested_run, &nested), 0);
  assert_int_equal(nested, BR_EBUSY);

  /* Tasks main leaves behind are cancelled and joined before br_run returns. */
  memset(leftover, 0, sizeof leftover);
  assert_int_equal(br_run(&r, leaves_tasks_behind, NULL), 0);
  assert_int_equal(PI(r), 77);
  for (int i = 0; i < 3; i++) {
    assert_true(leftover[i].cleanup);
    assert_int_equal(leftover[i].sleep_rc, BR_ECANCELED);
  }
  /* With options. */
  assert_int_equal(br_run_opts(&r, returns_arg, IP(5), &(br_loop_opts){.compact = true}), 0);
  assert_int_equal(PI(r), 5);
  assert_null(br_loop_current());
}

/* --- SIGINT --------------------------------------------------------------- */

typedef struct {
  int how; /* 0: kill() from a thread, 1: raise() from a task, 2: twice */
} sig_ctx;

static void *send_sigint_later(void *arg) {
  (void)arg;
  usleep(50 * 1000);
  kill(getpid(), SIGINT);
  return NULL;
}

static void *raise_from_task(void *arg) {
  (void)arg;
  br_sleep_ms(20);
  raise(SIGINT);
  return NULL;
}

static void *sig_main(void *arg) {
  sig_ctx *c = arg;
  pthread_t th;
  br_task *t = NULL;
  if (c->how == 1 || c->how == 2)
    br_spawn(&t, raise_from_task, NULL, NULL);
  else
    pthread_create(&th, NULL, send_sigint_later, NULL);
  int64_t t0 = br_now();
  int rc = br_sleep_ms(10000);
  fprintf(stderr, "sleep=%s after=%lld\n", br_errname(rc), (long long)ms_since(t0));
  if (c->how == 2) {
    /* Cleanup that hangs: a second Ctrl-C must end the process at once. */
    br_scope sh;
    br_scope_enter(&sh, BR_NEVER, true);
    raise(SIGINT);
    br_sleep_ms(5000);
    fprintf(stderr, "NOT-REACHED\n");
    br_scope_exit(&sh);
  }
  fprintf(stderr, "cleanup-ran\n");
  if (t) br_task_close(t);
  if (c->how == 0) pthread_join(th, NULL);
  return NULL;
}

static void child_sigint(void *arg) {
  int64_t t0 = br_now();
  int rc = br_run(NULL, sig_main, arg);
  fprintf(stderr, "br_run=%s in %lld ms\n", br_errname(rc), (long long)ms_since(t0));
  /* Our own SIGINT disposition is back: default (terminate). */
  struct sigaction sa;
  sigaction(SIGINT, NULL, &sa);
  fprintf(stderr, "handler=%s\n", sa.sa_handler == SIG_DFL ? "default" : "other");
}

static void check_first_sigint(int how) {
  sig_ctx c = {.how = how};
  br_child_result r;
  assert_int_equal(br_test_run_child(child_sigint, &c, 20000, &r), 0);
  if (!r.exited || r.exit_code != 0 || !strstr(r.err, "sleep=ECANCELED") || !strstr(r.err, "cleanup-ran") ||
      !strstr(r.err, "br_run=ECANCELED") || !strstr(r.err, "handler=default"))
    fail_msg("exited %d code %d signal %d; stderr:\n%s", r.exited, r.exit_code, r.signo, r.err);
  long after = -1;
  const char *p = strstr(r.err, "after=");
  if (p) after = strtol(p + 6, NULL, 10);
  assert_in_range(after, 0, 3000); /* promptly, not after the 10 s sleep */
  br_child_result_free(&r);
}

static void test_sigint_from_thread_cancels_main(void **state) {
  (void)state;
  check_first_sigint(0);
}

static void test_sigint_raised_in_task_cancels_main(void **state) {
  (void)state;
  check_first_sigint(1);
}

static void test_second_sigint_exits_130(void **state) {
  (void)state;
  sig_ctx c = {.how = 2};
  br_child_result r;
  int64_t t0 = br_now();
  assert_int_equal(br_test_run_child(child_sigint, &c, 20000, &r), 0);
  int64_t el = (br_now() - t0) / 1000000;
  if (!r.exited || r.exit_code != 130 || strstr(r.err, "NOT-REACHED") || !strstr(r.err, "sleep=ECANCELED"))
    fail_msg("exited %d code %d signal %d; stderr:\n%s", r.exited, r.exit_code, r.signo, r.err);
  assert_in_range(el, 0, 4000);
  br_child_result_free(&r);
}

/* Loops give back every descriptor they open (poller, wake-up eventfd). */
static void test_no_fd_leak(void **state) {
  (void)state;
  int before = br_test_count_fds();
  assert_true(before > 0);
  for (int i = 0; i < 50; i++) {
    br_loop *L = NULL;
    (void)br_loop_new(&L, NULL);
    assert_non_null(L);
    br_task *t;
    assert_int_equal(br_loop_spawn(L, &t, sleeper_value, IP(i), NULL), 0);
    assert_int_equal(br_loop_run(L), 0);
    assert_int_equal(br_task_close(t), 0);
    assert_int_equal(br_loop_free(L), 0);
    assert_int_equal(br_run(NULL, returns_arg, NULL), 0);
  }
  assert_int_equal(br_test_count_fds(), before);
}

int main(void) {
  if (getenv("BRAID_TEST_FILTER")) cmocka_set_test_filter(getenv("BRAID_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_run_free),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_current_and_busy),
      cmocka_unit_test(test_run_from_other_thread),
      cmocka_unit_test(test_spawn_before_run),
      cmocka_unit_test(test_loops_on_threads),
      cmocka_unit_test(test_call_soon_order),
      cmocka_unit_test(test_call_soon_threadsafe_many_threads),
      cmocka_unit_test(test_call_soon_threadsafe_wakes_sleeping_loop),
      cmocka_unit_test(test_call_soon_threadsafe_after_close),
      cmocka_unit_test(test_remote_wakeup_never_lost),
      cmocka_unit_test(test_stop),
      cmocka_unit_test(test_stop_before_run),
      cmocka_unit_test(test_free_cancels_live_tasks),
      cmocka_unit_test(test_br_run_basics),
      cmocka_unit_test(test_sigint_from_thread_cancels_main),
      cmocka_unit_test(test_sigint_raised_in_task_cancels_main),
      cmocka_unit_test(test_second_sigint_exits_130),
      cmocka_unit_test(test_no_fd_leak),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
