/* SPDX-License-Identifier: MIT */
/* test_future — br_future: single assignment, callbacks, reference counts,
 * awaiting from tasks and from plain threads, deadlines and wait_for,
 * cancellation with hooks, and gather / wait / as_completed over futures
 * completed by other threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "core_test.h"

#include "core/core.h" /* the future's lock and waiter list, a loop's remote lock */
#include "core/job.h"
#include "sys/spin.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

static void sleep_ms_thread(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* A helper thread that completes a future after a delay. */
typedef struct {
  br_future *f;
  int delay_ms;
  int code;      /* 0: set(value), < 0: fail(code, msg) */
  void *value;
  const char *msg;
  br_future *after; /* if set: completed first (the delay counts from then) */
  pthread_t th;
  int rc;
} completer;

static void *completer_main(void *arg) {
  completer *c = arg;
  if (c->after) {
    (void)br_await(c->after, NULL); /* its outcome does not matter here */
    br_future_unref(c->after);
  }
  sleep_ms_thread(c->delay_ms);
  if (c->code)
    c->rc = br_future_fail(c->f, c->code, "%s", c->msg ? c->msg : "failed");
  else
    c->rc = br_future_set(c->f, c->value);
  br_future_unref(c->f); /* the thread's own reference */
  return NULL;
}

/* Complete f with (code, value) delay_ms after `after` completed (after:
 * NULL for "now"). */
static void completer_start_after(completer *c, br_future *f, br_future *after, int delay_ms,
                                  int code, void *value) {
  c->f = br_future_ref(f);
  c->after = after ? br_future_ref(after) : NULL;
  c->delay_ms = delay_ms;
  c->code = code;
  c->value = value;
  c->msg = "thread failure";
  if (pthread_create(&c->th, NULL, completer_main, c) != 0) abort();
}

static void completer_start(completer *c, br_future *f, int delay_ms, int code, void *value) {
  completer_start_after(c, f, NULL, delay_ms, code, value);
}

static void completer_join(completer *c) { pthread_join(c->th, NULL); }

/* --- single assignment ------------------------------------------------------ */

static void test_single_assignment(void **state) {
  (void)state;
  br_future *f = NULL;
  (void)br_future_new(&f);
  assert_non_null(f);
  assert_false(br_future_done(f));
  assert_int_equal(br_future_set(f, IP(42)), 0);
  assert_true(br_future_done(f));
  assert_int_equal(PI(br_future_value(f)), 42);
  assert_int_equal(br_future_error(f), 0);
  assert_string_equal(br_future_message(f), "");
  /* Every later completion is refused and changes nothing. */
  assert_int_equal(br_future_set(f, IP(43)), BR_EALREADY);
  assert_int_equal(br_future_fail(f, BR_EIO, "late %d", 1), BR_EALREADY);
  assert_int_equal(br_future_cancel(f), BR_EALREADY);
  assert_int_equal(PI(br_future_value(f)), 42);
  assert_int_equal(br_future_error(f), 0);
  void *v = NULL;
  assert_int_equal(br_await(f, &v), 0); /* done: no blocking, plain thread */
  assert_int_equal(PI(v), 42);
  br_future_unref(f);

  (void)br_future_new(&f);
  assert_int_equal(br_future_fail(f, BR_EIO, "broken %s #%d", "pipe", 3), 0);
  assert_true(br_future_done(f));
  assert_int_equal(br_future_error(f), BR_EIO);
  assert_string_equal(br_future_message(f), "broken pipe #3");
  assert_null(br_future_value(f));
  assert_int_equal(br_future_set(f, IP(1)), BR_EALREADY);
  assert_string_equal(br_future_message(f), "broken pipe #3");
  v = IP(9);
  assert_int_equal(br_await(f, &v), BR_EIO);
  br_future_unref(f);
}

/* Racing completers from several threads: exactly one wins. */
typedef struct {
  br_future *f;
  int id;
  int rc;
  atomic_int *go;
} racer;

static void *race_set(void *arg) {
  racer *r = arg;
  while (!atomic_load(r->go)) {
  }
  r->rc = (r->id % 2) ? br_future_set(r->f, IP(r->id)) : br_future_fail(r->f, BR_EIO, "racer %d", r->id);
  return NULL;
}

static void test_single_assignment_racing_threads(void **state) {
  (void)state;
  long rounds = br_test_scaled(1000);
  for (long k = 0; k < rounds; k++) {
    br_future *f = NULL;
    (void)br_future_new(&f);
    atomic_int go = 0;
    racer r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
      r[i] = (racer){.f = f, .id = i, .go = &go};
      assert_int_equal(pthread_create(&th[i], NULL, race_set, &r[i]), 0);
    }
    atomic_store(&go, 1);
    int wins = 0, winner = -1;
    for (int i = 0; i < 4; i++) {
      pthread_join(th[i], NULL);
      if (r[i].rc == 0) wins++, winner = i;
      else assert_int_equal(r[i].rc, BR_EALREADY);
    }
    assert_int_equal(wins, 1);
    if (winner % 2) {
      assert_int_equal(PI(br_future_value(f)), winner);
      assert_int_equal(br_future_error(f), 0);
    } else {
      char want[32];
      snprintf(want, sizeof want, "racer %d", winner);
      assert_int_equal(br_future_error(f), BR_EIO);
      assert_string_equal(br_future_message(f), want);
    }
    br_future_unref(f);
  }
}

/* --- callbacks ---------------------------------------------------------------- */

typedef struct {
  atomic_int calls;
  pthread_t thread;
  br_future *f;
  bool saw_done;
  void *value;
} cb_rec;

static void record_cb(void *arg) {
  cb_rec *c = arg;
  atomic_fetch_add(&c->calls, 1);
  c->thread = pthread_self();
  c->saw_done = br_future_done(c->f);
  c->value = br_future_value(c->f);
}

static void test_callbacks(void **state) {
  (void)state;
  br_future *f = NULL;
  (void)br_future_new(&f);
  cb_rec a = {.f = f}, b = {.f = f}, c = {.f = f};
  assert_int_equal(br_future_on_done(f, record_cb, &a), 0);
  assert_int_equal(br_future_on_done(f, record_cb, &b), 0);
  assert_int_equal(atomic_load(&a.calls), 0);
  completer k;
  completer_start(&k, f, 20, 0, IP(7));
  completer_join(&k);
  assert_int_equal(k.rc, 0);
  /* Ran once each, on the completing thread, seeing the outcome. */
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(atomic_load(&b.calls), 1);
  assert_true(pthread_equal(a.thread, k.th));
  assert_true(pthread_equal(b.thread, k.th));
  assert_true(a.saw_done && b.saw_done);
  assert_int_equal(PI(a.value), 7);
  /* On a completed future: at once, on the caller's thread. */
  assert_int_equal(br_future_on_done(f, record_cb, &c), 0);
  assert_int_equal(atomic_load(&c.calls), 1);
  assert_true(pthread_equal(c.thread, pthread_self()));
  /* A second completion runs nothing again. */
  assert_int_equal(br_future_set(f, NULL), BR_EALREADY);
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(br_future_on_done(f, NULL, NULL), BR_EINVAL);
  br_future_unref(f);
}

/* A callback may drop the last reference of the future it observes. */
static void unref_cb(void *arg) { br_future_unref(arg); }

static void test_callback_drops_last_ref(void **state) {
  (void)state;
  br_future *f = NULL;
  (void)br_future_new(&f);
  assert_int_equal(br_future_on_done(f, unref_cb, br_future_ref(f)), 0);
  br_future_unref(f); /* the callback's ref is the last one now */
  completer k;
  completer_start(&k, f, 5, BR_EIO, NULL);
  completer_join(&k);
  assert_int_equal(k.rc, 0);
}

/* --- reference counting ------------------------------------------------------ */

static void test_refcount(void **state) {
  (void)state;
  br_future *f = NULL;
  (void)br_future_new(&f);
  assert_ptr_equal(br_future_ref(f), f);
  assert_ptr_equal(br_future_ref(f), f);
  br_future_unref(f);
  br_future_unref(f);
  assert_false(br_future_done(f)); /* still alive: one ref left */
  assert_int_equal(br_future_set(f, IP(1)), 0);
  br_future_unref(f); /* freed here (ASan checks) */
  br_future_unref(NULL);
  assert_null(br_future_ref(NULL));

  /* Refs taken and dropped from many threads. */
  (void)br_future_new(&f);
  enum { T = 4 };
  completer k[T];
  for (int i = 0; i < T; i++) completer_start(&k[i], f, i, 0, IP(i + 1));
  br_future_unref(f); /* the threads keep it alive */
  int wins = 0;
  for (int i = 0; i < T; i++) {
    completer_join(&k[i]);
    if (k[i].rc == 0) wins++;
  }
  assert_int_equal(wins, 1);
}

/* --- cancel and hooks --------------------------------------------------------- */

typedef struct {
  atomic_int calls;
  pthread_t thread;
} hook_rec;

static void hook_fn(void *arg) {
  hook_rec *h = arg;
  atomic_fetch_add(&h->calls, 1);
  h->thread = pthread_self();
}

static void test_cancel_and_hook(void **state) {
  (void)state;
  br_future *f = NULL;
  (void)br_future_new(&f);
  hook_rec h = {0};
  br_future_set_cancel_hook(f, hook_fn, &h);
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(atomic_load(&h.calls), 1);
  assert_true(pthread_equal(h.thread, pthread_self()));
  assert_true(br_future_done(f));
  assert_int_equal(br_future_error(f), BR_ECANCELED);
  assert_int_equal(br_future_cancel(f), BR_EALREADY);
  assert_int_equal(br_future_set(f, IP(1)), BR_EALREADY);
  assert_int_equal(atomic_load(&h.calls), 1);
  assert_int_equal(br_await(f, NULL), BR_ECANCELED);
  br_future_unref(f);

  /* Completed normally: cancelling does nothing and the hook never runs. */
  (void)br_future_new(&f);
  hook_rec h2 = {0};
  br_future_set_cancel_hook(f, hook_fn, &h2);
  assert_int_equal(br_future_set(f, IP(3)), 0);
  assert_int_equal(br_future_cancel(f), BR_EALREADY);
  assert_int_equal(atomic_load(&h2.calls), 0);
  assert_int_equal(br_future_error(f), 0);
  br_future_unref(f);
}

/* --- awaiting ------------------------------------------------------------------ */

typedef struct {
  br_future *f;
  int ticks;
  bool stop;
} tick_ctx;

static void *ticker(void *arg) {
  tick_ctx *c = arg;
  while (!c->stop) {
    if (br_sleep_ms(1)) break;
    c->ticks++;
  }
  return NULL;
}

static void *set_after(void *arg) {
  tick_ctx *c = arg;
  if (br_sleep_ms(30)) return NULL;
  br_future_set(c->f, IP(11));
  return NULL;
}

static void *m_await_in_task(void *arg) {
  (void)arg;
  tick_ctx c = {.f = tf_future()};
  br_task *tk, *st;
  T_OK(br_spawn(&tk, ticker, &c, NULL));
  T_OK(br_spawn(&st, set_after, &c, NULL));
  void *v = NULL;
  int64_t t0 = br_now();
  T_OK(br_await(c.f, &v));
  T_EQ(PI(v), 11);
  T_RANGE(ms_since(t0), 29, 1000);
  /* The loop went on while this task waited. */
  T_TRUE(c.ticks >= 5);
  c.stop = true;
  T_OK(br_join(tk, NULL));
  T_OK(br_join(st, NULL));
  br_future_unref(c.f);

  /* An error is the await's result. */
  br_future *g = NULL;
  (void)br_future_new(&g);
  br_future_fail(g, BR_ECONNRESET, "peer left");
  v = IP(1);
  T_RC(br_await(g, &v), BR_ECONNRESET);
  T_TRUE(v == NULL);
  br_future_unref(g);

  /* Awaiting one's own task future would deadlock. */
  T_RC(br_await(br_task_future(br_self()), NULL), BR_EDEADLK);
  T_RC(br_await(NULL, NULL), BR_EINVAL);
  return NULL;
}

static void test_await_in_task(void **state) {
  (void)state;
  run_main(m_await_in_task, NULL);
}

/* A plain thread blocks; another thread completes. */
typedef struct {
  br_future *f;
  int rc;
  void *v;
  int64_t waited_ms;
  atomic_int finished;
} blocker;

static void *blocking_waiter(void *arg) {
  blocker *b = arg;
  int64_t t0 = br_now();
  b->rc = br_await(b->f, &b->v);
  b->waited_ms = ms_since(t0);
  atomic_store(&b->finished, 1);
  return NULL;
}

static void test_await_blocks_plain_thread(void **state) {
  (void)state;
  blocker b = {.f = tf_future()};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, blocking_waiter, &b), 0);
  sleep_ms_thread(50);
  assert_int_equal(br_future_set(b.f, IP(8)), 0);
  pthread_join(th, NULL);
  assert_int_equal(b.rc, 0);
  assert_int_equal(PI(b.v), 8);
  assert_in_range(b.waited_ms, 40, 2000);

  /* Deadline from a plain thread: BR_ETIMEDOUT, the future stays pending. */
  br_future *g = NULL;
  (void)br_future_new(&g);
  int64_t t0 = br_now();
  assert_int_equal(br_await_until(g, NULL, br_deadline_ms(30)), BR_ETIMEDOUT);
  assert_in_range(ms_since(t0), 29, 2000);
  assert_false(br_future_done(g));
  br_future_unref(g);
  br_future_unref(b.f);
}

/* A plain thread waits for a future a task completes on the loop. */
static void *task_completes(void *arg) {
  if (br_sleep_ms(30)) return NULL;
  br_future_set(arg, IP(21));
  return NULL;
}

static void *m_thread_waits_for_task(void *arg) {
  blocker *b = arg;
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, blocking_waiter, b), 0);
  br_task *t;
  T_OK(br_spawn(&t, task_completes, b->f, NULL));
  T_OK(br_join(t, NULL));
  /* Join the thread without blocking the loop. */
  while (!atomic_load(&b->finished)) T_OK(br_sleep_ms(1));
  pthread_join(th, NULL);
  return NULL;
}

static void test_plain_thread_waits_for_task(void **state) {
  (void)state;
  blocker b = {.f = tf_future()};
  run_main(m_thread_waits_for_task, &b);
  assert_int_equal(b.rc, 0);
  assert_int_equal(PI(b.v), 21);
  br_future_unref(b.f);
}

/* A future completed by another thread while the loop sleeps in its poller
 * wakes it, promptly, and the loop does not spin while it waits. */
typedef struct {
  br_future *f;
  int64_t set_at;
} late_set;

static void *set_from_thread_later(void *arg) {
  late_set *l = arg;
  sleep_ms_thread(150);
  l->set_at = br_now();
  br_future_set(l->f, IP(3));
  br_future_unref(l->f);
  return NULL;
}

static int64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *m_wakes_sleeping_loop(void *arg) {
  (void)arg;
  late_set l = {.f = tf_future()};
  br_future *f = br_future_ref(l.f);
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, set_from_thread_later, &l), 0);
  int64_t c0 = cpu_ns();
  void *v = NULL;
  int rc = br_await_until(f, &v, br_deadline_ms(10000));
  int64_t woke = br_now();
  int64_t cpu = cpu_ns() - c0;
  pthread_join(th, NULL);
  br_future_unref(f);
  T_OK(rc);
  T_EQ(PI(v), 3);
  T_RANGE((woke - l.set_at) / 1000000, 0, 50);
  /* 150 ms of waiting; a spinning loop would burn about that much CPU. */
  T_RANGE(cpu / 1000000, 0, 60);
  return NULL;
}

static void test_completion_wakes_sleeping_loop(void **state) {
  (void)state;
  run_main(m_wakes_sleeping_loop, NULL);
}

/* Deadlines, scopes and cancellation while awaiting. */
typedef struct {
  br_future *f;
  int rc;
} aw_ctx;

static void *awaits(void *arg) {
  aw_ctx *a = arg;
  a->rc = br_await(a->f, NULL);
  return NULL;
}

static void *m_await_interrupted(void *arg) {
  (void)arg;
  br_future *f = NULL;
  (void)br_future_new(&f);
  int64_t t0 = br_now();
  T_RC(br_await_until(f, NULL, br_deadline_ms(30)), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 29, 1000);
  T_TRUE(!br_future_done(f)); /* not cancelled by a deadline */

  br_scope s;
  T_OK(br_scope_enter(&s, br_deadline_ms(20), false));
  T_RC(br_await(f, NULL), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  T_TRUE(!br_future_done(f));

  aw_ctx a = {.f = f};
  br_task *t;
  T_OK(br_spawn(&t, awaits, &a, NULL));
  T_OK(br_sleep_ms(5));
  T_OK(br_cancel(t));
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_RC(a.rc, BR_ECANCELED);
  T_TRUE(!br_future_done(f));

  /* Still usable afterwards. */
  T_OK(br_future_set(f, IP(4)));
  void *v;
  T_OK(br_await(f, &v));
  T_EQ(PI(v), 4);
  br_future_unref(f);
  return NULL;
}

static void test_await_interrupted(void **state) {
  (void)state;
  run_main(m_await_interrupted, NULL);
}

/* A loop callback must not block: awaiting there is refused. */
typedef struct {
  br_future *f;
  int rc;
  bool ran;
} cb_await;

static void await_in_callback(void *arg) {
  cb_await *c = arg;
  c->rc = br_await(c->f, NULL);
  c->ran = true;
}

static void *m_await_in_callback(void *arg) {
  cb_await *c = arg;
  T_OK(br_call_soon(br_loop_current(), await_in_callback, c));
  for (int i = 0; i < 100 && !c->ran; i++) T_OK(br_sleep_ms(1));
  T_TRUE(c->ran);
  T_RC(c->rc, BR_ENOTTASK);
  return NULL;
}

static void test_await_in_loop_callback_refused(void **state) {
  (void)state;
  cb_await c = {.f = tf_future()};
  run_main(m_await_in_callback, &c);
  br_future_unref(c.f);
}

/* --- wait_for over futures -------------------------------------------------- */

static void *m_future_wait_for(void *arg) {
  (void)arg;
  br_future *f = NULL;
  (void)br_future_new(&f);
  hook_rec h = {0};
  br_future_set_cancel_hook(f, hook_fn, &h);
  int64_t t0 = br_now();
  void *v = IP(1);
  T_RC(br_future_wait_for(f, &v, 40), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 39, 1000);
  T_TRUE(v == NULL);
  T_TRUE(br_future_done(f));
  T_RC(br_future_error(f), BR_ECANCELED);
  T_EQ(atomic_load(&h.calls), 1);
  br_future_unref(f);

  (void)br_future_new(&f);
  completer k;
  completer_start(&k, f, 10, 0, IP(6));
  T_OK(br_future_wait_for(f, &v, 5000));
  T_EQ(PI(v), 6);
  completer_join(&k);
  br_future_unref(f);

  /* Over a task's future: the task is cancelled and has unwound. */
  int rc = 0;
  aw_ctx a = {.f = tf_future()};
  br_task *t;
  T_OK(br_spawn(&t, awaits, &a, NULL));
  rc = br_future_wait_for(br_task_future(t), NULL, 30);
  T_RC(rc, BR_ETIMEDOUT);
  T_TRUE(br_task_done(t));
  T_RC(a.rc, BR_ECANCELED);
  T_RC(br_join(t, NULL), BR_ECANCELED);
  br_future_unref(a.f);
  return NULL;
}

static void test_future_wait_for(void **state) {
  (void)state;
  run_main(m_future_wait_for, NULL);
  /* From a plain thread too. */
  br_future *f = NULL;
  (void)br_future_new(&f);
  assert_int_equal(br_future_wait_for(f, NULL, 20), BR_ETIMEDOUT);
  assert_int_equal(br_future_error(f), BR_ECANCELED);
  br_future_unref(f);
}

/* Over the future of another loop's task: br_future_cancel cannot reach it
 * (BR_EPERM), so wait_for gives up at its timeout and leaves the task
 * running. It used to wait, shielded, for that task to end on its own:
 * here, for the 10 s the other task waits before giving up itself. */
typedef struct cross_loop {
  _Atomic(br_future *) task_fut; /* loop 1's task's future, published */
  br_future *release;            /* loop 0 lets it end */
  int wait_rc;
  bool done_at_timeout;
} cross_loop;

static void *cl_waits_for_release(void *arg) {
  cross_loop *c = arg;
  return IP(br_await_until(c->release, NULL, br_deadline_ms(10000)));
}

static void *cl_main(void *arg) {
  cross_loop *c = arg;
  if (br_loops_index() == 1) {
    br_task *t;
    int rc = br_spawn(&t, cl_waits_for_release, c, NULL);
    if (rc) return br_fail(rc, "spawn");
    br_future *f = br_task_future(t);
    br_future_ref(f);
    atomic_store(&c->task_fut, f);
    void *v;
    rc = br_join(t, &v);
    return rc ? br_fail(rc, "join") : NULL;
  }
  br_future *f;
  while (!(f = atomic_load(&c->task_fut))) br_sleep_ms(1);
  c->wait_rc = br_future_wait_for(f, NULL, 30);
  c->done_at_timeout = br_future_done(f);
  br_future_set(c->release, NULL);
  return NULL;
}

static void test_future_wait_for_other_loop(void **state) {
  (void)state;
  cross_loop c = {.wait_rc = 1};
  atomic_init(&c.task_fut, NULL);
  assert_int_equal(br_future_new(&c.release), 0);
  assert_int_equal(br_run_loops(2, cl_main, &c, NULL), 0);
  assert_int_equal(c.wait_rc, BR_ETIMEDOUT);
  assert_false(c.done_at_timeout);
  br_future *f = atomic_load(&c.task_fut);
  assert_true(br_future_done(f));
  assert_int_equal(br_future_error(f), 0);
  assert_int_equal(PI(br_future_value(f)), 0); /* released, not timed out */
  br_future_unref(f);
  br_future_unref(c.release);
}

/* --- gather, wait, as_completed over futures from other threads ------------ */

enum { NF = 4 };

typedef struct {
  br_future *f[NF];
  completer k[NF];
} fset;

/* Future i completes about delays[i] ms from now, and after every future
 * with a shorter delay: each completer waits for the one just before it in
 * delay order and then sleeps the difference. On a loaded machine the
 * times stretch but the completion order the tests check stays. */
static void fset_start(fset *s, const int delays[NF], const int codes[NF]) {
  for (int i = 0; i < NF; i++) s->f[i] = tf_future();
  for (int i = 0; i < NF; i++) {
    int prev = -1;
    for (int j = 0; j < NF; j++)
      if (delays[j] < delays[i] && (prev < 0 || delays[j] > delays[prev])) prev = j;
    completer_start_after(&s->k[i], s->f[i], prev >= 0 ? s->f[prev] : NULL,
                          prev >= 0 ? delays[i] - delays[prev] : delays[i], codes[i], IP(100 + i));
  }
}

static void fset_end(fset *s) {
  for (int i = 0; i < NF; i++) {
    completer_join(&s->k[i]);
    br_future_unref(s->f[i]);
  }
}

static const int g_delays[NF] = {40, 10, 30, 20};
static const int g_codes[NF] = {0, 0, BR_EIO, BR_ENOENT};

static int check_gather(fset *s, int64_t t0) {
  br_result out[NF];
  int rc = br_gather(out, s->f, NF);
  int64_t el = ms_since(t0);
  int bad = 0;
  if (rc != BR_EIO) bad |= 1; /* first failure in index order */
  if (el < 40 || (el > 2000 && !br_test_emulated())) bad |= 2;
  if (PI(out[0].value) != 100 || out[0].err || out[0].msg) bad |= 4;
  if (PI(out[1].value) != 101 || out[1].err) bad |= 8;
  if (out[2].err != BR_EIO || !out[2].msg || strcmp(out[2].msg, "thread failure")) bad |= 16;
  if (out[3].err != BR_ENOENT) bad |= 32;
  br_results_free(out, NF);
  return bad;
}

static void *m_gather_futures(void *arg) {
  (void)arg;
  fset s;
  int64_t t0 = br_now();
  fset_start(&s, g_delays, g_codes);
  int bad = check_gather(&s, t0);
  fset_end(&s);
  T_EQ(bad, 0);

  /* Mixed kinds: a task's future beside thread-completed ones. */
  br_future *f2[2];
  br_task *t;
  T_OK(br_spawn(&t, task_completes, (f2[0] = tf_future()), NULL));
  f2[1] = br_task_future(t);
  br_result out[2];
  T_OK(br_gather(out, f2, 2));
  T_EQ(PI(out[0].value), 21);
  T_TRUE(out[1].value == NULL && out[1].err == 0);
  T_OK(br_join(t, NULL));
  br_future_unref(f2[0]);
  T_OK(br_gather(NULL, NULL, 0));
  return NULL;
}

static void test_gather_futures(void **state) {
  (void)state;
  run_main(m_gather_futures, NULL);
  /* From a plain thread. */
  fset s;
  int64_t t0 = br_now();
  fset_start(&s, g_delays, g_codes);
  int bad = check_gather(&s, t0);
  fset_end(&s);
  assert_int_equal(bad, 0);
}

typedef struct {
  br_future *f[3];
  int rc;
  bool done_after[3];
} gcancel;

static void *gathers(void *arg) {
  gcancel *g = arg;
  br_result out[3];
  g->rc = br_gather(out, g->f, 3);
  for (int i = 0; i < 3; i++) g->done_after[i] = br_future_done(g->f[i]);
  br_results_free(out, 3);
  return NULL;
}

static void *m_gather_cancelled(void *arg) {
  (void)arg;
  gcancel g = {0};
  for (int i = 0; i < 3; i++) g.f[i] = tf_future();
  br_future_set(g.f[0], IP(1));
  br_task *t;
  T_OK(br_spawn(&t, gathers, &g, NULL));
  T_OK(br_sleep_ms(10));
  T_OK(br_cancel(t));
  T_OK(br_join(t, NULL) == BR_ECANCELED ? 0 : -1);
  T_RC(g.rc, BR_ECANCELED);
  /* asyncio.gather: cancelling the gather cancels what it waited for. */
  for (int i = 0; i < 3; i++) T_TRUE(g.done_after[i]);
  T_EQ(br_future_error(g.f[0]), 0);
  T_RC(br_future_error(g.f[1]), BR_ECANCELED);
  T_RC(br_future_error(g.f[2]), BR_ECANCELED);
  for (int i = 0; i < 3; i++) br_future_unref(g.f[i]);
  return NULL;
}

static void test_gather_futures_cancelled(void **state) {
  (void)state;
  run_main(m_gather_cancelled, NULL);
}

static int wait_case(br_wait_mode mode, const int delays[NF], const int codes[NF], int64_t deadline_ms,
                     int64_t *elapsed) {
  fset s;
  int64_t t0 = br_now(); /* before the threads start: every delay counts from here */
  fset_start(&s, delays, codes);
  int r = br_wait(s.f, NF, mode, deadline_ms ? br_deadline_ms(deadline_ms) : BR_NEVER);
  *elapsed = ms_since(t0);
  fset_end(&s);
  return r;
}

/* Run the br_wait cases; report through tf_record (works in tasks and
 * threads alike). */
static void check_waits(void) {
  int64_t el;
  static const int d1[NF] = {60, 15, 40, 80};
  static const int ok[NF] = {0, 0, 0, 0};
  int r = wait_case(BR_WAIT_FIRST, d1, ok, 0, &el);
  V_EQ(r, 1);
  V_TRUE(el >= 15); /* the index proves it did not wait for all */

  static const int err2[NF] = {0, 0, BR_EPIPE, 0};
  r = wait_case(BR_WAIT_FIRST_ERROR, d1, err2, 0, &el);
  V_EQ(r, 2);
  V_TRUE(el >= 40);

  r = wait_case(BR_WAIT_ALL, d1, err2, 0, &el);
  V_TRUE(el >= 80);
  V_EQ(r, NF - 1); /* documented: for ALL, n-1 (an index, never n) */

  /* No failure: FIRST_ERROR waits for all, and still returns an index. */
  r = wait_case(BR_WAIT_FIRST_ERROR, d1, ok, 0, &el);
  V_TRUE(el >= 80);
  V_TRUE(r >= 0 && r < NF);

  r = wait_case(BR_WAIT_ALL, d1, ok, 30, &el);
  V_RC(r, BR_ETIMEDOUT);
  V_TRUE(el >= 30);
}

static void *m_waits(void *arg) {
  (void)arg;
  check_waits();
  br_future *f = NULL;
  (void)br_future_new(&f);
  T_RC(br_wait(&f, 0, BR_WAIT_ALL, BR_NEVER), BR_EINVAL);
  T_RC(br_wait(&f, 1, (br_wait_mode)7, BR_NEVER), BR_EINVAL);
  T_RC(br_wait(NULL, 1, BR_WAIT_ALL, BR_NEVER), BR_EINVAL);
  br_future_set(f, NULL);
  T_EQ(br_wait(&f, 1, BR_WAIT_FIRST, BR_NEVER), 0); /* already satisfied */
  br_future_unref(f);
  return NULL;
}

static void test_wait_modes(void **state) {
  (void)state;
  run_main(m_waits, NULL);
  check_waits(); /* from a plain thread */
  tf_assert_clean();
}

static void check_as_completed(void) {
  static const int d[NF] = {180, 30, 130, 80}; /* completed in this order (fset_start) */
  static const int codes[NF] = {0, BR_EIO, 0, 0};
  fset s;
  fset_start(&s, d, codes);
  br_as_completed *it = NULL;
  (void)br_as_completed_new(&it, s.f, NF);
  V_TRUE(it != NULL);
  int order[NF + 1];
  int bad_deadline = 0;
  int n = 0;
  for (;;) {
    int r = br_as_completed_next(it, br_deadline_ms(5000));
    if (r == BR_ECLOSED) break;
    if (r < 0) {
      bad_deadline = r;
      break;
    }
    if (n < NF + 1) order[n] = r;
    n++;
  }
  /* After the end it stays closed. */
  int again = br_as_completed_next(it, BR_NEVER);
  br_as_completed_free(it);
  fset_end(&s);
  V_EQ(bad_deadline, 0);
  V_EQ(n, NF);
  V_EQ(order[0], 1);
  V_EQ(order[1], 3);
  V_EQ(order[2], 2);
  V_EQ(order[3], 0);
  V_RC(again, BR_ECLOSED);

  /* A deadline while waiting, then going on. */
  br_future *g[2] = {tf_future(), tf_future()};
  (void)br_as_completed_new(&it, g, 2);
  V_RC(br_as_completed_next(it, br_deadline_ms(20)), BR_ETIMEDOUT);
  br_future_set(g[1], NULL);
  V_EQ(br_as_completed_next(it, BR_NEVER), 1);
  br_future_set(g[0], NULL);
  V_EQ(br_as_completed_next(it, BR_NEVER), 0);
  V_RC(br_as_completed_next(it, BR_NEVER), BR_ECLOSED);
  br_as_completed_free(it);
  br_future_unref(g[0]);
  br_future_unref(g[1]);
}

static void *m_as_completed(void *arg) {
  (void)arg;
  check_as_completed();
  br_as_completed *it = NULL;
  (void)br_as_completed_new(&it, NULL, 0);
  T_TRUE(it != NULL);
  T_RC(br_as_completed_next(it, BR_NEVER), BR_ECLOSED);
  br_as_completed_free(it);
  br_as_completed_free(NULL);
  return NULL;
}

static void test_as_completed(void **state) {
  (void)state;
  run_main(m_as_completed, NULL);
  check_as_completed();
  tf_assert_clean();
}

/* --- many futures, many threads ---------------------------------------------- */

typedef struct {
  br_future **fs;
  long n;
  int stride, offset;
} bulk;

static void *bulk_completer(void *arg) {
  bulk *b = arg;
  for (long i = b->offset; i < b->n; i += b->stride) br_future_set(b->fs[i], IP(i + 1));
  return NULL;
}

static void *bulk_awaiter(void *arg) {
  br_future *f = arg;
  void *v;
  int rc = br_await(f, &v);
  if (rc) return br_fail(rc, "await");
  return v;
}

static void *m_many_futures(void *arg) {
  (void)arg;
  long n = br_test_scaled(20000);
  br_future **fs = calloc((size_t)n, sizeof *fs);
  br_task **ts = calloc((size_t)n, sizeof *ts);
  T_TRUE(fs && ts);
  for (long i = 0; i < n; i++) {
    (void)br_future_new(&fs[i]);
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&ts[i], bulk_awaiter, fs[i], &o));
  }
  T_OK(br_yield()); /* all parked on their futures */
  bulk b[4];
  pthread_t th[4];
  for (int k = 0; k < 4; k++) {
    b[k] = (bulk){fs, n, 4, k};
    T_EQ(pthread_create(&th[k], NULL, bulk_completer, &b[k]), 0);
  }
  long bad = 0;
  for (long i = 0; i < n; i++) {
    void *v = NULL;
    if (br_join(ts[i], &v) || PI(v) != i + 1) bad++;
  }
  for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
  for (long i = 0; i < n; i++) br_future_unref(fs[i]);
  free(fs);
  free(ts);
  T_EQ(bad, 0);
  return NULL;
}

static void test_many_futures_many_threads(void **state) {
  (void)state;
  run_main(m_many_futures, NULL);
}

/* --- br_results_free frees what the runtime owns ---------------------------- */

static atomic_int owned_frees;
static void count_free(void *v) {
  atomic_fetch_add(&owned_frees, 1);
  free(v);
}

static void test_results_free_owned(void **state) {
  (void)state;
  atomic_store(&owned_frees, 0);
  int users = 5;
  br_result r[3] = {
      {.value = malloc(16), .msg = NULL, .br__private = {.value_free = count_free}},
      {.value = &users, .err = BR_EIO, .msg = strdup("broke")}, /* the user's value: untouched */
      {.value = NULL, .br__private = {.value_free = count_free}}, /* nothing to free */
  };
  br_results_free(r, 3);
  assert_int_equal(atomic_load(&owned_frees), 1);
  assert_int_equal(users, 5);
  for (int i = 0; i < 3; i++) {
    assert_null(r[i].value);
    assert_null(r[i].msg);
    assert_int_equal(r[i].err, 0);
    assert_null(r[i].br__private.value_free);
  }
  br_results_free(r, 3); /* cleared entries: a second free is harmless */
  assert_int_equal(atomic_load(&owned_frees), 1);
  /* gather copies borrow the future's value: results_free leaves it to the
   * future, which frees it once. */
  br_future *f = tf_future();
  assert_int_equal(br_future_set_owned(f, malloc(8), count_free), 0);
  br_result g[1];
  assert_int_equal(br_gather(g, &f, 1), 0);
  assert_null(g[0].br__private.value_free);
  br_results_free(g, 1);
  assert_int_equal(atomic_load(&owned_frees), 1);
  br_future_unref(f);
  assert_int_equal(atomic_load(&owned_frees), 2);
}

/* --- completion wakes waiters outside the future's lock ---------------------- */

/* A task on a loop thread awaits f; the test holds that loop's remote lock,
 * so the completer's wake-up of the task (a remote push: a mutex and an
 * eventfd write) blocks. While it is blocked, the future's spinlock must be
 * free: waiters are taken out under it and woken after it is released. */
typedef struct {
  br_future *f;
  br_loop *L;
  atomic_int parked, set_returned;
  void *got;
} wake_probe;

static void *probe_waiter(void *arg) {
  wake_probe *w = arg;
  atomic_store(&w->parked, 1);
  T_OK(br_await(w->f, &w->got));
  return NULL;
}

static void *probe_loop(void *arg) {
  wake_probe *w = arg;
  if (br_loop_new(&w->L, NULL)) return NULL;
  br_task *t;
  if (br_loop_spawn(w->L, &t, probe_waiter, w, NULL) == 0) {
    br_loop_run(w->L);
    br_task_close(t);
  }
  br_loop_free(w->L);
  return NULL;
}

static void *probe_completer(void *arg) {
  wake_probe *w = arg;
  br_future_set(w->f, IP(99));
  atomic_store(&w->set_returned, 1);
  return NULL;
}

static void test_wake_outside_lock(void **state) {
  (void)state;
  wake_probe w = {.f = tf_future()};
  pthread_t lt, ct;
  assert_int_equal(pthread_create(&lt, NULL, probe_loop, &w), 0);
  /* Wait until the task is linked on f (a waiter is on the list). */
  for (;;) {
    br__future_lock(w.f);
    bool linked = w.f->waiters != NULL;
    br__future_unlock(w.f);
    if (linked) break;
    sched_yield();
  }
  pthread_mutex_lock(&w.L->remote_lock);
  assert_int_equal(pthread_create(&ct, NULL, probe_completer, &w), 0);
  /* The completer publishes `done`, then blocks in the wake-up on the
   * remote lock we hold. The future's lock must come free meanwhile. */
  int64_t t0 = br_now();
  while (!br_future_done(w.f)) sched_yield();
  bool freed = false;
  while (br_now() - t0 < 2000000000LL) {
    if (atomic_load_explicit(&w.f->lock, memory_order_acquire) == 0) {
      freed = true;
      break;
    }
    sched_yield();
  }
  assert_int_equal(atomic_load(&w.set_returned), 0); /* really blocked in the wake */
  pthread_mutex_unlock(&w.L->remote_lock);
  pthread_join(ct, NULL);
  pthread_join(lt, NULL);
  tf_assert_clean();
  assert_true(freed);
  assert_int_equal(PI(w.got), 99);
  br_future_unref(w.f);
}

/* Racing cancels: exactly one of them completes the future, and that one
 * runs the hook, once. */
static atomic_int hook_runs;
static void count_hook(void *arg) {
  (void)arg;
  atomic_fetch_add(&hook_runs, 1);
}

typedef struct {
  br_future *f;
  atomic_int *go;
  int won;
} canceller;

static void *cancel_racer(void *arg) {
  canceller *c = arg;
  while (!atomic_load(c->go)) br__cpu_pause();
  c->won = br_future_cancel(c->f) == 0;
  return NULL;
}

static void test_racing_cancels_run_hook_once(void **state) {
  (void)state;
  long rounds = br_test_scaled(1000);
  for (long i = 0; i < rounds; i++) {
    atomic_store(&hook_runs, 0);
    br_future *f = tf_future();
    br_future_set_cancel_hook(f, count_hook, NULL);
    atomic_int go = 0;
    canceller c[3];
    pthread_t th[3];
    for (int k = 0; k < 3; k++) {
      c[k] = (canceller){.f = f, .go = &go};
      pthread_create(&th[k], NULL, cancel_racer, &c[k]);
    }
    atomic_store(&go, 1);
    int winners = 0;
    for (int k = 0; k < 3; k++) {
      pthread_join(th[k], NULL);
      winners += c[k].won;
    }
    assert_int_equal(winners, 1);
    assert_int_equal(atomic_load(&hook_runs), 1);
    br_future_unref(f);
  }
}

/* Stress for the wake protocol (run it under TSan): tasks on two loops and
 * plain threads wait on the same futures with deadlines that expire around
 * the completion, so waiters time out, unlink and settle while completers
 * on other threads take them out and wake them. */
enum { WS_FUTS = 64, WS_TASKS = 8, WS_THREADS = 2, WS_COMPLETERS = 2 };

typedef struct {
  br_future *f[WS_FUTS];
  atomic_int round_done;
  long rounds;
  pthread_barrier_t start, end;
  atomic_long seen;
} wake_stress;

static void wait_all_briefly(wake_stress *w, unsigned seed) {
  for (int i = 0; i < WS_FUTS; i++) {
    int k = (int)((seed + (unsigned)i * 7u) % WS_FUTS);
    void *v;
    /* A short deadline first (often expires right at completion), then to
     * the end. */
    int rc = br_await_until(w->f[k], &v, br_now() + 2000);
    if (rc == BR_ETIMEDOUT) rc = br_await(w->f[k], &v);
    if (rc == 0 && PI(v) == k) atomic_fetch_add(&w->seen, 1);
  }
}

static void *ws_task(void *arg) {
  wake_stress *w = arg;
  wait_all_briefly(w, (unsigned)br_task_id(NULL));
  return NULL;
}

static void *ws_loop(void *arg) {
  wake_stress *w = arg;
  for (long r = 0; r < w->rounds; r++) {
    pthread_barrier_wait(&w->start);
    br_loop *L = NULL;
    if (br_loop_new(&L, NULL) == 0) {
      br_task *t[WS_TASKS];
      for (int i = 0; i < WS_TASKS; i++) br_loop_spawn(L, &t[i], ws_task, w, NULL);
      br_loop_run(L);
      for (int i = 0; i < WS_TASKS; i++) br_task_close(t[i]);
      br_loop_free(L);
    }
    pthread_barrier_wait(&w->end);
  }
  return NULL;
}

static void *ws_thread(void *arg) {
  wake_stress *w = arg;
  for (long r = 0; r < w->rounds; r++) {
    pthread_barrier_wait(&w->start);
    wait_all_briefly(w, (unsigned)r * 13u);
    pthread_barrier_wait(&w->end);
  }
  return NULL;
}

static void *ws_completer(void *arg) {
  wake_stress *w = arg;
  int me = atomic_fetch_add(&w->round_done, 1) & 1;
  for (long r = 0; r < w->rounds; r++) {
    pthread_barrier_wait(&w->start);
    for (int i = me; i < WS_FUTS; i += 2) {
      if (i % 8 == 0) sched_yield(); /* spread completions over the waits */
      br_future_set(w->f[i], IP(i));
    }
    pthread_barrier_wait(&w->end);
  }
  return NULL;
}

static void test_wake_stress(void **state) {
  (void)state;
  wake_stress w = {.rounds = br_test_scaled(40)};
  int parties = 2 + WS_THREADS + WS_COMPLETERS + 1;
  pthread_barrier_init(&w.start, NULL, (unsigned)parties);
  pthread_barrier_init(&w.end, NULL, (unsigned)parties);
  pthread_t th[2 + WS_THREADS + WS_COMPLETERS];
  int n = 0;
  for (int i = 0; i < 2; i++) pthread_create(&th[n++], NULL, ws_loop, &w);
  for (int i = 0; i < WS_THREADS; i++) pthread_create(&th[n++], NULL, ws_thread, &w);
  for (int i = 0; i < WS_COMPLETERS; i++) pthread_create(&th[n++], NULL, ws_completer, &w);
  for (long r = 0; r < w.rounds; r++) {
    for (int i = 0; i < WS_FUTS; i++) w.f[i] = tf_future();
    pthread_barrier_wait(&w.start);
    pthread_barrier_wait(&w.end);
    for (int i = 0; i < WS_FUTS; i++) br_future_unref(w.f[i]);
  }
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&w.start);
  pthread_barrier_destroy(&w.end);
  tf_assert_clean();
  long want = w.rounds * WS_FUTS * (2L * WS_TASKS + WS_THREADS);
  assert_int_equal(atomic_load(&w.seen), want);
}

/* --- the core's job machinery (core/job.h) ----------------------------------- */

typedef struct fake_job {
  br__job base; /* first: the ops get it back by a cast */
  bool queued;  /* "in the executor's queue" */
  int *releases;
} fake_job;

static bool fake_cancel(br__job *j) {
  fake_job *f = (fake_job *)j;
  bool taken = f->queued;
  f->queued = false;
  return taken;
}

static void fake_release(br__job *j) {
  fake_job *f = (fake_job *)j;
  ++*f->releases;
  free(f);
}

static const br__job_ops fake_ops = {.cancel = fake_cancel, .release = fake_release};

static fake_job *fake_submit(int *releases, br_future **out) {
  fake_job *j = calloc(1, sizeof *j);
  j->releases = releases;
  j->queued = true;
  if (br__job_init(&j->base, &fake_ops, out) < 0) {
    free(j);
    return NULL;
  }
  return j;
}

static void test_job_records(void **state) {
  (void)state;
  int rel = 0;
  br_future *f;
  /* Cancelled while queued: the hook takes it back and drops both. */
  fake_job *j = fake_submit(&rel, &f);
  assert_non_null(j);
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(rel, 1);
  assert_int_equal(br_future_error(f), BR_ECANCELED);
  br_future_unref(f);
  /* Completed first: the hook never runs; completion drops both. */
  rel = 0;
  j = fake_submit(&rel, &f);
  j->queued = false; /* started */
  assert_int_equal(br__job_complete(&j->base, IP(5), NULL, 0, NULL), 0);
  assert_int_equal(rel, 1);
  assert_int_equal(br_future_cancel(f), BR_EALREADY);
  assert_int_equal(PI(br_future_value(f)), 5);
  br_future_unref(f);
  /* Cancelled while running: the hook drops HOOK, the losing completion RUN
   * (and frees the owned value it could not hand over). */
  rel = 0;
  atomic_store(&owned_frees, 0);
  j = fake_submit(&rel, &f);
  j->queued = false;
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(rel, 0); /* the executor still holds RUN */
  assert_int_equal(br__job_complete(&j->base, malloc(4), count_free, 0, NULL), BR_EALREADY);
  assert_int_equal(rel, 1);
  assert_int_equal(atomic_load(&owned_frees), 1);
  br_future_unref(f);
  /* A failure carries code and message; an owned value the future frees. */
  rel = 0;
  j = fake_submit(&rel, &f);
  assert_int_equal(br__job_complete(&j->base, NULL, NULL, BR_EIO, strdup("bad disk")), 0);
  assert_int_equal(br_future_error(f), BR_EIO);
  assert_string_equal(br_future_message(f), "bad disk");
  br_future_unref(f);
  /* Never visible: abandon undoes everything, the submitter's ref too. */
  rel = 0;
  j = fake_submit(&rel, &f);
  br__job_abandon(&j->base);
  assert_int_equal(rel, 1);
}

/* A job context on a plain thread: br_fail, br_cancelled and br_await ask
 * it; contexts nest. */
typedef struct {
  br__job_ctx ctx;
  int code, waits;
  char *msg;
  int cancelled;
} fake_ctx;

static void fctx_fail(br__job_ctx *c, int code, char *msg) {
  fake_ctx *f = (fake_ctx *)c;
  free(f->msg);
  f->code = code;
  f->msg = msg;
}
static int fctx_cancelled(br__job_ctx *c) { return ((fake_ctx *)c)->cancelled; }
static int fctx_wait(br__job_ctx *c, br_future *f, int64_t deadline) {
  (void)deadline;
  ((fake_ctx *)c)->waits++;
  return br_future_done(f) ? 0 : BR_EDEADLK;
}
static const br__job_ctx_ops fctx_ops = {.fail = fctx_fail, .cancelled = fctx_cancelled,
                                         .wait = fctx_wait};

static void test_job_context(void **state) {
  (void)state;
  fake_ctx outer = {.ctx = {&fctx_ops}}, inner = {.ctx = {&fctx_ops}, .cancelled = BR_ECANCELED};
  assert_null(br__job_current());
  assert_null(br_fail(BR_EIO, "nobody %d", 1)); /* no context: nothing happens */
  br__job_ctx *p0 = br__job_enter(&outer.ctx);
  assert_null(p0);
  assert_null(br_fail(BR_EIO, "outer %d", 1));
  assert_int_equal(br_cancelled(), 0);
  br__job_ctx *p1 = br__job_enter(&inner.ctx);
  assert_ptr_equal(p1, &outer.ctx);
  assert_null(br_fail(42, NULL)); /* a non-negative code becomes BR_EFAILED */
  assert_int_equal(br_cancelled(), BR_ECANCELED);
  br_future *f = tf_future();
  assert_int_equal(br_await(f, NULL), BR_EDEADLK); /* the context's way of waiting */
  br__await_shielded(f);                          /* gives up on EDEADLK, never spins */
  br__job_leave(p1);
  assert_ptr_equal(br__job_current(), &outer.ctx);
  br_future_set(f, IP(3));
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(PI(v), 3);
  br__job_leave(p0);
  assert_null(br__job_current());
  assert_int_equal(outer.code, BR_EIO);
  assert_string_equal(outer.msg, "outer 1");
  assert_int_equal(inner.code, BR_EFAILED);
  assert_null(inner.msg);
  assert_int_equal(inner.waits, 2);
  assert_int_equal(outer.waits, 1);
  free(outer.msg);
  br_future_unref(f);
}

/* br__await_shielded in a cancelled task still waits to the end. */
typedef struct {
  br_future *f;
  int after;
} shield_ctx;

static void *shielded_waiter(void *arg) {
  shield_ctx *c = arg;
  br__await_shielded(c->f);
  c->after = br_future_done(c->f) ? 1 : -1;
  return NULL;
}

static void *late_setter(void *arg) {
  shield_ctx *c = arg;
  struct timespec ts = {0, 30 * 1000000};
  nanosleep(&ts, NULL); /* the completion comes from outside the loop, later */
  br_future_set(c->f, NULL);
  return NULL;
}

static void *m_shielded(void *arg) {
  (void)arg;
  shield_ctx c = {.f = tf_future()};
  br_task *t;
  T_OK(br_spawn(&t, shielded_waiter, &c, NULL));
  T_OK(br_yield());
  T_OK(br_cancel(t));
  pthread_t th;
  pthread_create(&th, NULL, late_setter, &c);
  T_RC(br_join(t, NULL), BR_ECANCELED);
  pthread_join(th, NULL);
  T_EQ(c.after, 1);
  br_future_unref(c.f);
  return NULL;
}

static void test_await_shielded(void **state) {
  (void)state;
  run_main(m_shielded, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_assignment),
      cmocka_unit_test(test_results_free_owned),
      cmocka_unit_test(test_job_records),
      cmocka_unit_test(test_job_context),
      cmocka_unit_test(test_await_shielded),
      cmocka_unit_test(test_wake_outside_lock),
      cmocka_unit_test(test_racing_cancels_run_hook_once),
      cmocka_unit_test(test_wake_stress),
      cmocka_unit_test(test_single_assignment_racing_threads),
      cmocka_unit_test(test_callbacks),
      cmocka_unit_test(test_callback_drops_last_ref),
      cmocka_unit_test(test_refcount),
      cmocka_unit_test(test_cancel_and_hook),
      cmocka_unit_test(test_await_in_task),
      cmocka_unit_test(test_await_blocks_plain_thread),
      cmocka_unit_test(test_plain_thread_waits_for_task),
      cmocka_unit_test(test_completion_wakes_sleeping_loop),
      cmocka_unit_test(test_await_interrupted),
      cmocka_unit_test(test_await_in_loop_callback_refused),
      cmocka_unit_test(test_future_wait_for),
      cmocka_unit_test(test_gather_futures),
      cmocka_unit_test(test_gather_futures_cancelled),
      cmocka_unit_test(test_wait_modes),
      cmocka_unit_test(test_as_completed),
      cmocka_unit_test(test_future_wait_for_other_loop),
      cmocka_unit_test(test_many_futures_many_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
