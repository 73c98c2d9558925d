/* SPDX-License-Identifier: MIT */
/* test_sync — coroutine-aware synchronisation: channels (Go semantics,
 * close), queues (asyncio.Queue with task_done/join and maxsize), mutex
 * (FIFO hand-off, ownership), semaphore (bounding concurrency) and event.
 * Most scenarios run three times: normal tasks, compact tasks, and a mix. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* Spawn mode of the scenario being run: 0 normal, 1 compact, 2 mixed. */
static int mode;

static br_spawn_opts *opts_for(int i) {
  static br_spawn_opts normal = {0}, compact = {.flags = BR_SPAWN_COMPACT};
  if (mode == 0) return &normal;
  if (mode == 1) return &compact;
  return (i % 2) ? &compact : &normal;
}

static int spawn_i(br_task **t, br_task_fn fn, void *arg, int i) { return br_spawn(t, fn, arg, opts_for(i)); }

#define MODES(name)                                               \
  cmocka_unit_test_prestate(name, &modes[0]), cmocka_unit_test_prestate(name, &modes[1]), \
      cmocka_unit_test_prestate(name, &modes[2])
static int modes[3] = {0, 1, 2};

static void run_mode(void **state, br_task_fn fn) {
  mode = *(int *)*state;
  run_main(fn, NULL);
}

/* ======================= channels ======================================= */

typedef struct {
  br_chan *c;
  int n;
  int64_t t0;
  int64_t sent_ms;
  int rc;
  int got[64];
  int ngot;
  int id;
  bool receiving; /* recv_late is about to block in br_chan_recv */
} chan_ctx;

static void *send_one(void *arg) {
  chan_ctx *x = arg;
  int v = 42 + x->id;
  x->rc = br_chan_send(x->c, &v);
  x->sent_ms = ms_since(x->t0);
  return NULL;
}

static void *recv_late(void *arg) {
  chan_ctx *x = arg;
  if (br_sleep_ms(30)) return NULL;
  int v = 0;
  x->receiving = true; /* nothing between here and the park in recv yields */
  int rc = br_chan_recv(x->c, &v);
  if (rc) return br_fail(rc, "recv");
  return IP(v);
}

static void *m_unbuffered(void *arg) {
  (void)arg;
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 0);
  T_TRUE(c != NULL);
  chan_ctx s = {.c = c, .t0 = br_now()};
  br_task *st, *rt;
  T_OK(spawn_i(&st, send_one, &s, 0));
  T_OK(spawn_i(&rt, recv_late, &s, 1));
  void *r;
  T_OK(br_join(rt, &r));
  T_OK(br_join(st, NULL));
  T_EQ(PI(r), 42);
  T_OK(s.rc);
  T_RANGE(s.sent_ms, 29, 1000); /* the send waited for the receiver */

  /* Nobody on the other side: try_ variants would block. */
  int v = 1;
  T_RC(br_chan_try_send(c, &v), BR_EAGAIN);
  T_RC(br_chan_try_recv(c, &v), BR_EAGAIN);
  T_RC(br_chan_send_until(c, &v, br_deadline_ms(10)), BR_ETIMEDOUT);
  T_RC(br_chan_recv_until(c, &v, br_deadline_ms(10)), BR_ETIMEDOUT);

  /* Blocked senders are served FIFO. */
  chan_ctx sx[5];
  br_task *ts[5];
  for (int i = 0; i < 5; i++) {
    sx[i] = (chan_ctx){.c = c, .id = i, .t0 = br_now()};
    T_OK(spawn_i(&ts[i], send_one, &sx[i], i));
    T_OK(br_yield());
  }
  for (int i = 0; i < 5; i++) {
    T_OK(br_chan_recv(c, &v));
    T_EQ(v, 42 + i);
  }
  for (int i = 0; i < 5; i++) T_OK(br_join(ts[i], NULL));

  /* A blocked receiver takes a try_send at once. */
  br_task *rr;
  chan_ctx rx = {.c = c};
  T_OK(spawn_i(&rr, recv_late, &rx, 1));
  /* Not a longer sleep than the receiver's: its 30 ms start when it first
   * runs, which a busy machine (or ThreadSanitizer's first switch) can put
   * after our own timer. Tasks of one loop take turns, so once the flag is
   * up the receiver is parked in br_chan_recv. */
  while (!rx.receiving) T_OK(br_sleep_ms(5));
  v = 7;
  T_OK(br_chan_try_send(c, &v));
  T_OK(br_join(rr, &r));
  T_EQ(PI(r), 7);
  T_OK(br_chan_free(c));
  return NULL;
}

static void test_chan_unbuffered(void **state) { run_mode(state, m_unbuffered); }

typedef struct {
  char data[200];
  int seq;
} big_elem;

typedef struct {
  br_chan *c;
  int n;
  long bad;
} stream_ctx;

static void fill_elem(big_elem *e, int seq) {
  e->seq = seq;
  for (size_t i = 0; i < sizeof e->data; i++) e->data[i] = (char)(seq * 13 + (int)i);
}

static void *producer(void *arg) {
  stream_ctx *s = arg;
  for (int i = 0; i < s->n; i++) {
    big_elem e;
    fill_elem(&e, i);
    int rc = br_chan_send(s->c, &e);
    if (rc) return br_fail(rc, "send %d", i);
  }
  return NULL;
}

static void *consumer(void *arg) {
  stream_ctx *s = arg;
  for (int i = 0; i < s->n; i++) {
    big_elem e, want;
    memset(&e, 0, sizeof e);
    int rc = br_chan_recv(s->c, &e);
    if (rc) return br_fail(rc, "recv %d", i);
    fill_elem(&want, i);
    if (memcmp(&e, &want, sizeof e) != 0) s->bad++;
  }
  return NULL;
}

static void *m_stream(void *arg) {
  (void)arg;
  size_t caps[] = {0, 1, 7};
  for (size_t k = 0; k < 3; k++) {
    stream_ctx s = {.c = tf_chan(sizeof(big_elem), caps[k]), .n = (int)br_test_scaled(5000)};
    T_TRUE(s.c != NULL);
    br_task *p, *q;
    T_OK(spawn_i(&p, producer, &s, 0));
    T_OK(spawn_i(&q, consumer, &s, 1));
    T_OK(br_join(p, NULL));
    T_OK(br_join(q, NULL));
    T_EQ(s.bad, 0);
    T_OK(br_chan_free(s.c));
  }
  return NULL;
}

static void test_chan_stream_in_order(void **state) { run_mode(state, m_stream); }

static void *m_buffered(void *arg) {
  (void)arg;
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 3);
  T_TRUE(c != NULL);
  /* Three sends fit without a receiver. */
  for (int i = 1; i <= 3; i++) T_OK(br_chan_send_until(c, &i, br_deadline_ms(1)));
  int v = 4;
  T_RC(br_chan_try_send(c, &v), BR_EAGAIN);
  T_RC(br_chan_send_until(c, &v, br_deadline_ms(10)), BR_ETIMEDOUT);
  /* A blocked sender moves into the buffer when room appears. */
  chan_ctx s = {.c = c, .id = 100 - 42, .t0 = br_now()};
  br_task *st;
  T_OK(spawn_i(&st, send_one, &s, 1));
  T_OK(br_yield());
  for (int want = 1; want <= 3; want++) {
    T_OK(br_chan_recv(c, &v));
    T_EQ(v, want);
  }
  T_OK(br_chan_recv(c, &v));
  T_EQ(v, 100);
  T_OK(br_join(st, NULL));
  T_RC(br_chan_try_recv(c, &v), BR_EAGAIN);
  T_OK(br_chan_free(c));
  return NULL;
}

static void test_chan_buffered(void **state) { run_mode(state, m_buffered); }

static void *blocked_recv(void *arg) {
  chan_ctx *x = arg;
  int v;
  x->rc = br_chan_recv(x->c, &v);
  return NULL;
}

static void *m_close(void *arg) {
  (void)arg;
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 4);
  for (int i = 1; i <= 3; i++) T_OK(br_chan_send(c, &i));
  T_OK(br_chan_close(c));
  T_RC(br_chan_close(c), BR_ECLOSED);
  int v = 9;
  T_RC(br_chan_send(c, &v), BR_ECLOSED);
  T_RC(br_chan_try_send(c, &v), BR_ECLOSED);
  /* Buffered items are still delivered, then BR_ECLOSED, for good. */
  for (int want = 1; want <= 3; want++) {
    T_OK(br_chan_recv(c, &v));
    T_EQ(v, want);
  }
  T_RC(br_chan_recv(c, &v), BR_ECLOSED);
  T_RC(br_chan_try_recv(c, &v), BR_ECLOSED);
  T_RC(br_chan_recv_until(c, &v, br_deadline_ms(10)), BR_ECLOSED);
  T_OK(br_chan_free(c));

  /* Close wakes every blocked receiver ... */
  (void)br_chan_new(&c, sizeof(int), 0);
  chan_ctx r[3];
  br_task *rt[3];
  for (int i = 0; i < 3; i++) {
    r[i] = (chan_ctx){.c = c};
    T_OK(spawn_i(&rt[i], blocked_recv, &r[i], i));
  }
  T_OK(br_sleep_ms(5));
  T_RC(br_chan_free(c), BR_EBUSY); /* waiters */
  T_OK(br_chan_close(c));
  for (int i = 0; i < 3; i++) {
    T_OK(br_join(rt[i], NULL));
    T_RC(r[i].rc, BR_ECLOSED);
  }
  T_OK(br_chan_free(c));

  /* ... and every blocked sender. */
  (void)br_chan_new(&c, sizeof(int), 1);
  v = 0;
  T_OK(br_chan_send(c, &v));
  chan_ctx s = {.c = c, .t0 = br_now()};
  br_task *st;
  T_OK(spawn_i(&st, send_one, &s, 1));
  T_OK(br_sleep_ms(5));
  T_OK(br_chan_close(c));
  T_OK(br_join(st, NULL));
  T_RC(s.rc, BR_ECLOSED);
  T_OK(br_chan_recv(c, &v)); /* the one buffered before the close */
  T_EQ(v, 0);
  T_RC(br_chan_recv(c, &v), BR_ECLOSED);
  T_OK(br_chan_free(c));
  return NULL;
}

static void test_chan_close(void **state) { run_mode(state, m_close); }

/* A cancelled receiver does not swallow the next element. */
static void *m_chan_cancel(void *arg) {
  (void)arg;
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 0);
  chan_ctx a = {.c = c}, b = {.c = c};
  br_task *ta, *tb;
  T_OK(spawn_i(&ta, blocked_recv, &a, 0));
  T_OK(spawn_i(&tb, blocked_recv, &b, 1));
  T_OK(br_sleep_ms(5));
  T_OK(br_cancel(ta));
  T_OK(br_yield());
  int v = 5;
  T_OK(br_chan_send_until(c, &v, br_deadline_ms(1000)));
  T_OK(br_join(tb, NULL));
  T_OK(b.rc);
  T_RC(br_join(ta, NULL), BR_ECANCELED);
  T_RC(a.rc, BR_ECANCELED);
  T_OK(br_chan_free(c));
  return NULL;
}

static void test_chan_cancelled_receiver(void **state) { run_mode(state, m_chan_cancel); }

static void test_chan_bad_input(void **state) {
  (void)state;
  br_chan *bad = (br_chan *)&bad;
  assert_int_equal(br_chan_new(&bad, 0, 4), BR_EINVAL);
  assert_null(bad);
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 1);
  int v = 0;
  assert_int_equal(br_chan_send(c, &v), BR_ENOTTASK); /* plain thread */
  assert_int_equal(br_chan_recv(c, &v), BR_ENOTTASK);
  assert_int_equal(br_chan_send(NULL, &v), BR_EINVAL);
  assert_int_equal(br_chan_recv(NULL, &v), BR_EINVAL);
  assert_int_equal(br_chan_close(NULL), BR_EINVAL);
  assert_int_equal(br_chan_free(NULL), 0);
  assert_int_equal(br_chan_free(c), 0);
}

/* ======================= queues ========================================= */

static void *late_put(void *arg) {
  br_queue *q = arg;
  if (br_sleep_ms(20)) return NULL;
  return IP(br_queue_put(q, IP(77)));
}

static void *m_queue_basic(void *arg) {
  (void)arg;
  br_queue *q = NULL;
  (void)br_queue_new(&q, 0);
  T_TRUE(q != NULL);
  for (intptr_t i = 1; i <= 1000; i++) T_OK(br_queue_put(q, IP(i)));
  T_EQ(br_queue_size(q), 1000);
  for (intptr_t i = 1; i <= 1000; i++) {
    void *it;
    T_OK(br_queue_get(q, &it));
    T_EQ(PI(it), i);
  }
  T_EQ(br_queue_size(q), 0);
  void *it;
  T_RC(br_queue_try_get(q, &it), BR_EAGAIN);
  T_RC(br_queue_get_until(q, &it, br_deadline_ms(10)), BR_ETIMEDOUT);

  /* A getter blocks until a put. */
  br_task *t;
  T_OK(spawn_i(&t, late_put, q, 1));
  int64_t t0 = br_now();
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 77);
  T_RANGE(ms_since(t0), 19, 1000);
  T_OK(br_join(t, NULL));
  for (int i = 0; i < 1001; i++) T_OK(br_queue_task_done(q));
  T_RC(br_queue_task_done(q), BR_EINVAL); /* more than were put */
  T_OK(br_queue_join(q)); /* nothing outstanding: at once */
  T_OK(br_queue_free(q));
  return NULL;
}

static void test_queue_fifo(void **state) { run_mode(state, m_queue_basic); }

typedef struct {
  br_queue *q;
  int rc;
  int64_t t0, put_ms;
} put_ctx;

static void *blocking_put(void *arg) {
  put_ctx *p = arg;
  p->rc = br_queue_put(p->q, IP(3));
  p->put_ms = ms_since(p->t0);
  return NULL;
}

static void *m_queue_maxsize(void *arg) {
  (void)arg;
  br_queue *q = NULL;
  (void)br_queue_new(&q, 2);
  T_OK(br_queue_put(q, IP(1)));
  T_OK(br_queue_try_put(q, IP(2)));
  T_RC(br_queue_try_put(q, IP(9)), BR_EFULL);
  T_RC(br_queue_put_until(q, IP(9), br_deadline_ms(10)), BR_ETIMEDOUT);
  T_EQ(br_queue_size(q), 2);
  put_ctx p = {.q = q, .t0 = br_now()};
  br_task *t;
  T_OK(spawn_i(&t, blocking_put, &p, 1));
  T_OK(br_sleep_ms(20));
  T_EQ(br_queue_size(q), 2);
  void *it;
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 1);
  T_OK(br_join(t, NULL));
  T_OK(p.rc);
  T_RANGE(p.put_ms, 19, 1000);
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 2);
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 3);
  T_RC(br_queue_free(q), 0);
  return NULL;
}

static void test_queue_maxsize(void **state) { run_mode(state, m_queue_maxsize); }

typedef struct {
  br_queue *q;
  int processed;
  int active_max, active;
} work_ctx;

static void *worker(void *arg) {
  work_ctx *w = arg;
  for (;;) {
    void *it;
    int rc = br_queue_get(w->q, &it);
    if (rc == BR_ECANCELED) return NULL;
    if (rc) return br_fail(rc, "get");
    if (br_sleep_ms(1)) return NULL;
    w->processed++;
    br_queue_task_done(w->q);
  }
}

static void *m_queue_join(void *arg) {
  (void)arg;
  work_ctx w = {.q = tf_queue(4)};
  br_task *ws[3];
  for (int i = 0; i < 3; i++) T_OK(spawn_i(&ws[i], worker, &w, i));
  int n = 30;
  for (int i = 0; i < n; i++) T_OK(br_queue_put(w.q, IP(i)));
  T_OK(br_queue_join(w.q));
  T_EQ(w.processed, n); /* every item processed before join returned */
  for (int i = 0; i < 3; i++) T_RC(br_task_close(ws[i]), BR_ECANCELED);
  T_OK(br_queue_free(w.q));
  return NULL;
}

static void test_queue_task_done_join(void **state) { run_mode(state, m_queue_join); }

static void *blocked_get(void *arg) {
  void *it;
  return IP(br_queue_get(arg, &it));
}

static void *m_queue_busy(void *arg) {
  (void)arg;
  br_queue *q = NULL;
  (void)br_queue_new(&q, 0);
  br_task *t;
  T_OK(spawn_i(&t, blocked_get, q, 0));
  T_OK(br_yield());
  T_RC(br_queue_free(q), BR_EBUSY);
  void *r;
  T_OK(br_queue_put(q, IP(1)));
  T_OK(br_join(t, &r));
  T_OK(PI(r));
  T_OK(br_queue_free(q));
  return NULL;
}

static void test_queue_free_busy(void **state) { run_mode(state, m_queue_busy); }

/* ======================= mutex ========================================= */

typedef struct {
  br_mutex *m;
  int order[16];
  int n;
  int id;
  int in_cs, max_in_cs;
  long counter;
  int rc;
} mx_ctx;

static mx_ctx mx;

static void *locker(void *arg) {
  int id = (int)PI(arg);
  int rc = br_mutex_lock(mx.m);
  if (rc) return br_fail(rc, "lock %d", id);
  mx.order[mx.n++] = id;
  br_yield();
  br_yield();
  rc = br_mutex_unlock(mx.m);
  if (rc) return br_fail(rc, "unlock %d", id);
  return NULL;
}

static void *m_mutex_fifo(void *arg) {
  (void)arg;
  memset(&mx, 0, sizeof mx);
  (void)br_mutex_new(&mx.m);
  T_TRUE(mx.m != NULL);
  T_OK(br_mutex_lock(mx.m));
  br_task *t[5];
  for (int i = 0; i < 5; i++) {
    T_OK(spawn_i(&t[i], locker, IP(i), i));
    T_OK(br_yield()); /* task i queues up behind the previous ones */
  }
  T_OK(br_mutex_unlock(mx.m));
  /* Handed to the longest waiter: no barging by the unlocker. */
  T_RC(br_mutex_trylock(mx.m), BR_EBUSY);
  T_OK(br_mutex_lock(mx.m)); /* queues behind all five */
  T_EQ(mx.n, 5);
  for (int i = 0; i < 5; i++) T_EQ(mx.order[i], i);
  T_OK(br_mutex_unlock(mx.m));
  for (int i = 0; i < 5; i++) T_OK(br_join(t[i], NULL));
  T_OK(br_mutex_free(mx.m));
  return NULL;
}

static void test_mutex_fifo(void **state) { run_mode(state, m_mutex_fifo); }

static void *try_unlock(void *arg) {
  (void)arg;
  mx.rc = br_mutex_unlock(mx.m);
  return NULL;
}

static void *plain_unlock(void *arg) {
  (void)arg;
  mx.rc = br_mutex_unlock(mx.m);
  return NULL;
}

static void *m_mutex_ownership(void *arg) {
  (void)arg;
  memset(&mx, 0, sizeof mx);
  (void)br_mutex_new(&mx.m);
  T_RC(br_mutex_unlock(mx.m), BR_EPERM); /* not locked */
  T_OK(br_mutex_lock(mx.m));
  br_task *t;
  mx.rc = 1;
  T_OK(spawn_i(&t, try_unlock, NULL, 1));
  T_OK(br_join(t, NULL));
  T_RC(mx.rc, BR_EPERM); /* not the owner */
  mx.rc = 1;
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, plain_unlock, NULL), 0);
  pthread_join(th, NULL);
  T_RC(mx.rc, BR_EPERM); /* a plain thread owns nothing */
  T_RC(br_mutex_trylock(mx.m), BR_EBUSY);
  T_RC(br_mutex_free(mx.m), BR_EBUSY);
  T_TRUE(br_mutex_lock(mx.m) != 0); /* relocking: an error, never a hang */
  T_TRUE(br_mutex_lock_until(mx.m, br_deadline_ms(10)) != 0);
  T_OK(br_mutex_unlock(mx.m));
  T_RC(br_mutex_unlock(mx.m), BR_EPERM);
  T_OK(br_mutex_trylock(mx.m));
  T_OK(br_mutex_unlock(mx.m));
  T_OK(br_mutex_free(mx.m));
  return NULL;
}

static void test_mutex_ownership(void **state) { run_mode(state, m_mutex_ownership); }

static void *timed_locker(void *arg) {
  (void)arg;
  return IP(br_mutex_lock_until(mx.m, br_deadline_ms(20)));
}

static void *m_mutex_cancel_timeout(void *arg) {
  (void)arg;
  memset(&mx, 0, sizeof mx);
  (void)br_mutex_new(&mx.m);
  T_OK(br_mutex_lock(mx.m));
  br_task *a, *b, *c;
  T_OK(spawn_i(&a, locker, IP(1), 0));
  T_OK(spawn_i(&b, timed_locker, NULL, 1));
  T_OK(spawn_i(&c, locker, IP(3), 2));
  T_OK(br_sleep_ms(40)); /* b timed out meanwhile */
  void *r;
  T_OK(br_join(b, &r));
  T_RC((int)PI(r), BR_ETIMEDOUT);
  T_OK(br_cancel(a)); /* a gives up waiting */
  T_OK(br_yield());
  T_OK(br_mutex_unlock(mx.m)); /* goes to c, skipping a and b */
  T_RC(br_join(a, NULL), BR_ECANCELED);
  T_OK(br_join(c, NULL));
  T_EQ(mx.n, 1);
  T_EQ(mx.order[0], 3);
  T_OK(br_mutex_free(mx.m)); /* nobody holds it */
  return NULL;
}

static void test_mutex_skips_cancelled_and_timed_out(void **state) { run_mode(state, m_mutex_cancel_timeout); }

static void *incrementer(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    int rc = br_mutex_lock(mx.m);
    if (rc) return br_fail(rc, "lock");
    if (++mx.in_cs > mx.max_in_cs) mx.max_in_cs = mx.in_cs;
    long v = mx.counter;
    br_yield();
    mx.counter = v + 1;
    mx.in_cs--;
    br_mutex_unlock(mx.m);
  }
  return NULL;
}

static void *m_mutex_exclusion(void *arg) {
  (void)arg;
  memset(&mx, 0, sizeof mx);
  (void)br_mutex_new(&mx.m);
  br_task *t[10];
  for (int i = 0; i < 10; i++) T_OK(spawn_i(&t[i], incrementer, NULL, i));
  for (int i = 0; i < 10; i++) T_OK(br_join(t[i], NULL));
  T_EQ(mx.counter, 1000);
  T_EQ(mx.max_in_cs, 1);
  T_OK(br_mutex_free(mx.m));
  return NULL;
}

static void test_mutex_exclusion(void **state) { run_mode(state, m_mutex_exclusion); }

/* ======================= semaphore ======================================= */

typedef struct {
  br_sem *s;
  int active, max_active, done;
} sem_ctx;

static sem_ctx sm;

static void *sem_user(void *arg) {
  int i = (int)PI(arg);
  int rc = br_sem_acquire(sm.s);
  if (rc) return br_fail(rc, "acquire");
  if (++sm.active > sm.max_active) sm.max_active = sm.active;
  rc = (i % 2) ? br_sleep_ms(2) : br_yield();
  sm.active--;
  sm.done++;
  br_sem_release(sm.s);
  return rc ? br_fail(rc, "inside") : NULL;
}

static void *m_sem_bounds(void *arg) {
  (void)arg;
  unsigned limits[] = {1, 3, 7};
  for (int k = 0; k < 3; k++) {
    memset(&sm, 0, sizeof sm);
    (void)br_sem_new(&sm.s, limits[k]);
    br_task *t[40];
    for (int i = 0; i < 40; i++) T_OK(spawn_i(&t[i], sem_user, IP(i), i));
    for (int i = 0; i < 40; i++) T_OK(br_join(t[i], NULL));
    T_EQ(sm.done, 40);
    T_EQ(sm.max_active, (int)limits[k]); /* reached, never exceeded */
    T_OK(br_sem_free(sm.s));
  }
  return NULL;
}

static void test_sem_bounds_concurrency(void **state) { run_mode(state, m_sem_bounds); }

static void *sem_waiter(void *arg) {
  (void)arg;
  return IP(br_sem_acquire(sm.s));
}

static void *m_sem_misc(void *arg) {
  (void)arg;
  memset(&sm, 0, sizeof sm);
  (void)br_sem_new(&sm.s, 0);
  T_RC(br_sem_acquire_until(sm.s, br_deadline_ms(10)), BR_ETIMEDOUT);
  br_task *a, *b;
  T_OK(spawn_i(&a, sem_waiter, NULL, 0));
  T_OK(spawn_i(&b, sem_waiter, NULL, 1));
  T_OK(br_yield());
  T_RC(br_sem_free(sm.s), BR_EBUSY);
  T_OK(br_cancel(a));
  T_OK(br_yield());
  T_OK(br_sem_release(sm.s)); /* to b: a's cancelled wait takes nothing */
  void *r;
  T_OK(br_join(b, &r));
  T_OK(PI(r));
  T_RC(br_join(a, &r), BR_ECANCELED);
  T_RC((int)PI(r), BR_ECANCELED);
  /* The unit went to b: none left. */
  T_RC(br_sem_acquire_until(sm.s, br_deadline_ms(1)), BR_ETIMEDOUT);
  T_OK(br_sem_release(sm.s));
  T_OK(br_sem_acquire(sm.s));
  T_OK(br_sem_free(sm.s));
  return NULL;
}

static void test_sem_timeout_cancel(void **state) { run_mode(state, m_sem_misc); }

/* ======================= event ============================================ */

typedef struct {
  br_event *e;
  int woke;
  int rc[16];
} ev_ctx;

static ev_ctx ev;

static void *ev_waiter(void *arg) {
  int i = (int)PI(arg);
  ev.rc[i] = br_event_wait(ev.e);
  if (!ev.rc[i]) ev.woke++;
  return NULL;
}

static void *m_event(void *arg) {
  (void)arg;
  memset(&ev, 0, sizeof ev);
  (void)br_event_new(&ev.e);
  T_TRUE(!br_event_is_set(ev.e));
  br_task *t[10];
  for (int i = 0; i < 10; i++) T_OK(spawn_i(&t[i], ev_waiter, IP(i), i));
  T_OK(br_sleep_ms(5));
  T_EQ(ev.woke, 0);
  T_RC(br_event_free(ev.e), BR_EBUSY);
  br_event_set(ev.e);
  br_event_set(ev.e); /* twice is fine */
  T_TRUE(br_event_is_set(ev.e));
  for (int i = 0; i < 10; i++) T_OK(br_join(t[i], NULL));
  T_EQ(ev.woke, 10);
  for (int i = 0; i < 10; i++) T_OK(ev.rc[i]);
  /* Set: waits return at once. */
  T_OK(br_event_wait_until(ev.e, br_deadline_ms(1)));
  /* Cleared: waits block again. */
  br_event_clear(ev.e);
  T_TRUE(!br_event_is_set(ev.e));
  T_RC(br_event_wait_until(ev.e, br_deadline_ms(10)), BR_ETIMEDOUT);
  T_OK(br_event_free(ev.e));
  return NULL;
}

static void test_event_wakes_all(void **state) { run_mode(state, m_event); }

static void test_sync_from_plain_thread(void **state) {
  (void)state;
  br_queue *q = NULL;
  (void)br_queue_new(&q, 0);
  void *it;
  assert_int_equal(br_queue_put(q, NULL), BR_ENOTTASK);
  assert_int_equal(br_queue_get(q, &it), BR_ENOTTASK);
  assert_int_equal(br_queue_join(q), BR_ENOTTASK);
  assert_int_equal(br_queue_free(q), 0);
  br_mutex *m = NULL;
  (void)br_mutex_new(&m);
  assert_int_equal(br_mutex_lock(m), BR_ENOTTASK);
  assert_int_equal(br_mutex_free(m), 0);
  br_sem *s = NULL;
  (void)br_sem_new(&s, 1);
  assert_int_equal(br_sem_acquire(s), BR_ENOTTASK);
  assert_int_equal(br_sem_free(s), 0);
  br_event *e = NULL;
  (void)br_event_new(&e);
  assert_int_equal(br_event_wait(e), BR_ENOTTASK);
  br_event_set(e); /* setting from anywhere is harmless with no waiter */
  assert_true(br_event_is_set(e));
  assert_int_equal(br_event_free(e), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      MODES(test_chan_unbuffered),
      MODES(test_chan_stream_in_order),
      MODES(test_chan_buffered),
      MODES(test_chan_close),
      MODES(test_chan_cancelled_receiver),
      cmocka_unit_test(test_chan_bad_input),
      MODES(test_queue_fifo),
      MODES(test_queue_maxsize),
      MODES(test_queue_task_done_join),
      MODES(test_queue_free_busy),
      MODES(test_mutex_fifo),
      MODES(test_mutex_ownership),
      MODES(test_mutex_skips_cancelled_and_timed_out),
      MODES(test_mutex_exclusion),
      MODES(test_sem_bounds_concurrency),
      MODES(test_sem_timeout_cancel),
      MODES(test_event_wakes_all),
      cmocka_unit_test(test_sync_from_plain_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
