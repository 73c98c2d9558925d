/* SPDX-License-Identifier: MIT */
/* test_hostile_sync_threads — the entry points documented as callable from
 * any thread (futures, br_call_soon_threadsafe, refs) driven by helper
 * threads while tasks await, wait, gather and get cancelled on the loop;
 * and the task-side calls a helper thread must be refused (br_cancel,
 * br_scope_cancel). Meant for TSan as much as for the plain build: every
 * outcome is checked exactly (each value delivered once, each wait ended
 * once, each cancel hook run iff the cancel won). */
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

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

enum { NF = 64 };

/* --- awaits racing a helper's completions and the loop's cancels --------- */

typedef struct {
  br_future *f[NF];
  atomic_int go;
} helper_set;

static void *complete_all(void *arg) {
  helper_set *h = arg;
  while (!atomic_load(&h->go)) {
  }
  for (int i = NF - 1; i >= 0; i--) {
    int rc = i % 3 ? br_future_set(h->f[i], IP(i + 1)) : br_future_fail(h->f[i], BR_EIO, "job %d", i);
    if (rc != 0) tf_record(__FILE__, __LINE__, "complete %d: %s", i, br_errname(rc));
    br_future_unref(h->f[i]); /* the helper's reference */
  }
  return NULL;
}

typedef struct {
  br_future *f;
  int rc;
  void *v;
} awaiter;

static void *await_one(void *arg) {
  awaiter *a = arg;
  a->rc = br_await(a->f, &a->v);
  return NULL;
}

static void *m_await_race(void *arg) {
  (void)arg;
  long rounds = br_test_scaled(300);
  for (long r = 0; r < rounds; r++) {
    helper_set h = {0};
    awaiter a[NF];
    br_task *t[NF];
    for (int i = 0; i < NF; i++) {
      h.f[i] = tf_future();
      T_TRUE(h.f[i]);
      br_future_ref(h.f[i]);
      a[i] = (awaiter){.f = h.f[i], .rc = 99};
      T_OK(br_spawn(&t[i], await_one, &a[i], NULL));
    }
    T_OK(br_yield()); /* every awaiter parks */
    pthread_t th;
    T_OK(pthread_create(&th, NULL, complete_all, &h));
    atomic_store(&h.go, 1);
    for (int i = 0; i < NF; i += 2) T_OK(br_cancel(t[i])); /* races the helper */
    for (int i = 0; i < NF; i++) br_join(t[i], NULL);
    T_OK(pthread_join(th, NULL));
    for (int i = 0; i < NF; i++) {
      T_TRUE(br_future_done(a[i].f));
      if (a[i].rc == BR_ECANCELED) {
        T_TRUE(i % 2 == 0);
        T_TRUE(a[i].v == NULL);
      } else if (i % 3) {
        T_OK(a[i].rc);
        T_EQ(PI(a[i].v), i + 1);
      } else {
        T_RC(a[i].rc, BR_EIO);
      }
      br_future_unref(a[i].f);
    }
  }
  return NULL;
}

static void test_await_race(void **state) {
  (void)state;
  run_main(m_await_race, NULL);
}

/* --- wait, as_completed and gather over futures a helper completes ------- */

static void *m_wait_race(void *arg) {
  (void)arg;
  long rounds = br_test_scaled(300);
  for (long r = 0; r < rounds; r++) {
    helper_set h = {0};
    br_future *fs[NF];
    for (int i = 0; i < NF; i++) {
      fs[i] = h.f[i] = tf_future();
      T_TRUE(fs[i]);
      br_future_ref(fs[i]);
    }
    pthread_t th;
    T_OK(pthread_create(&th, NULL, complete_all, &h));
    atomic_store(&h.go, 1);
    br_as_completed *it;
    T_OK(br_as_completed_new(&it, fs, NF));
    unsigned char seen[NF] = {0};
    int n = 0, rc;
    while ((rc = br_as_completed_next(it, br_deadline_ms(10000))) >= 0) {
      T_RANGE(rc, 0, NF - 1);
      T_TRUE(!seen[rc]);
      T_TRUE(br_future_done(fs[rc]));
      seen[rc] = 1;
      n++;
    }
    T_RC(rc, BR_ECLOSED);
    T_EQ(n, NF);
    br_as_completed_free(it);
    T_EQ(br_wait(fs, NF, BR_WAIT_ALL, BR_NEVER), NF - 1);
    T_EQ(br_wait(fs, NF, BR_WAIT_FIRST_ERROR, BR_NEVER), 0); /* job 0 failed */
    br_result res[NF];
    T_RC(br_gather(res, fs, NF), BR_EIO);
    for (int i = 0; i < NF; i++) T_EQ(res[i].err, i % 3 ? 0 : BR_EIO);
    br_results_free(res, NF);
    T_OK(pthread_join(th, NULL));
    for (int i = 0; i < NF; i++) br_future_unref(fs[i]);
  }
  return NULL;
}

static void test_wait_race(void **state) {
  (void)state;
  run_main(m_wait_race, NULL);
}

/* --- br_future_cancel against br_future_set on two threads --------------- */

typedef struct {
  br_future *f;
  atomic_int go;
  int set_rc, cancel_rc;
  atomic_int hook_runs;
} duel;

static void duel_hook(void *arg) {
  duel *d = arg;
  atomic_fetch_add(&d->hook_runs, 1);
}

static void *duel_set(void *arg) {
  duel *d = arg;
  while (!atomic_load(&d->go)) {
  }
  d->set_rc = br_future_set(d->f, IP(42));
  return NULL;
}

static void *duel_cancel(void *arg) {
  duel *d = arg;
  while (!atomic_load(&d->go)) {
  }
  d->cancel_rc = br_future_cancel(d->f);
  return NULL;
}

/* A task awaits each duelled future: it ends once, with whichever won. */
static void *m_duel(void *arg) {
  (void)arg;
  long rounds = br_test_scaled(2000);
  for (long r = 0; r < rounds; r++) {
    duel d = {0};
    d.f = tf_future();
    T_TRUE(d.f);
    br_future_set_cancel_hook(d.f, duel_hook, &d);
    awaiter a = {.f = d.f, .rc = 99};
    br_task *t;
    T_OK(br_spawn(&t, await_one, &a, NULL));
    T_OK(br_yield());
    pthread_t t1, t2;
    T_OK(pthread_create(&t1, NULL, duel_set, &d));
    T_OK(pthread_create(&t2, NULL, duel_cancel, &d));
    atomic_store(&d.go, 1);
    T_OK(br_join(t, NULL));
    T_OK(pthread_join(t1, NULL));
    T_OK(pthread_join(t2, NULL));
    if (d.set_rc == 0) {
      T_RC(d.cancel_rc, BR_EALREADY);
      T_EQ(atomic_load(&d.hook_runs), 0);
      T_OK(a.rc);
      T_EQ(PI(a.v), 42);
    } else {
      T_RC(d.set_rc, BR_EALREADY);
      T_OK(d.cancel_rc);
      T_EQ(atomic_load(&d.hook_runs), 1);
      T_RC(a.rc, BR_ECANCELED);
    }
    br_future_unref(d.f);
  }
  return NULL;
}

static void test_cancel_set_duel(void **state) {
  (void)state;
  run_main(m_duel, NULL);
}

/* --- sync objects fed from other threads through call_soon_threadsafe ---- */

typedef struct {
  br_loop *loop;
  br_chan *c;
  br_sem *s;
  br_event *e;
  atomic_long posted;
  long per_thread;
} feed;

typedef struct {
  feed *fd;
  int v;
} feed_item;

/* Runs on the loop: hands the value to a receiver or the buffer, and one
 * semaphore unit. */
static void feed_cb(void *arg) {
  feed_item *it = arg;
  int rc = br_chan_try_send(it->fd->c, &it->v);
  if (rc) tf_record(__FILE__, __LINE__, "try_send: %s", br_errname(rc));
  rc = br_sem_release(it->fd->s);
  if (rc) tf_record(__FILE__, __LINE__, "sem_release: %s", br_errname(rc));
  free(it);
}

static void *feeder(void *arg) {
  feed *fd = arg;
  for (long i = 0; i < fd->per_thread; i++) {
    feed_item *it = malloc(sizeof *it);
    if (!it) return NULL;
    it->fd = fd;
    it->v = 1;
    int rc;
    while ((rc = br_call_soon_threadsafe(fd->loop, feed_cb, it)) == BR_EAGAIN) {
    }
    if (rc) {
      tf_record(__FILE__, __LINE__, "call_soon_threadsafe: %s", br_errname(rc));
      free(it);
      return NULL;
    }
    atomic_fetch_add(&fd->posted, 1);
  }
  return NULL;
}

typedef struct {
  feed *fd;
  long sum;
  int rc;
} consumer;

static void *consume(void *arg) {
  consumer *k = arg;
  int v;
  while ((k->rc = br_chan_recv(k->fd->c, &v)) == 0) k->sum += v;
  return NULL;
}

static void *sem_taker(void *arg) {
  consumer *k = arg;
  while ((k->rc = br_sem_acquire(k->fd->s)) == 0) k->sum++;
  return NULL;
}

static void *cancel_from_thread(void *arg) {
  return IP(br_cancel(arg));
}

static void *m_feed(void *arg) {
  (void)arg;
  feed fd = {.loop = br_loop_current(), .per_thread = br_test_scaled(20000)};
  long total = 2 * fd.per_thread;
  T_TRUE(fd.c = tf_chan(sizeof(int), (size_t)total)); /* room for all: try_send never fails */
  T_OK(br_sem_new(&fd.s, 0));
  consumer k[3] = {{.fd = &fd}, {.fd = &fd}, {.fd = &fd}};
  br_task *ct[3];
  T_OK(br_spawn(&ct[0], consume, &k[0], NULL));
  T_OK(br_spawn(&ct[1], consume, &k[1], NULL));
  T_OK(br_spawn(&ct[2], sem_taker, &k[2], NULL));
  pthread_t th[2];
  for (int i = 0; i < 2; i++) T_OK(pthread_create(&th[i], NULL, feeder, &fd));
  /* Cancel one consumer half-way: what it did not take, the other does. */
  while (k[0].sum + k[1].sum < total / 2) T_OK(br_sleep_ms(1));
  T_OK(br_cancel(ct[0]));
  while (k[0].sum + k[1].sum < total || k[2].sum < total) T_OK(br_sleep_ms(1));
  for (int i = 0; i < 2; i++) T_OK(pthread_join(th[i], NULL));
  T_OK(br_chan_close(fd.c));
  T_RC(br_join(ct[0], NULL), BR_ECANCELED);
  T_OK(br_join(ct[1], NULL));
  /* br_cancel from another thread is refused and changes nothing. */
  pthread_t x;
  T_OK(pthread_create(&x, NULL, cancel_from_thread, ct[2]));
  void *xr;
  T_OK(pthread_join(x, &xr));
  T_RC((int)PI(xr), BR_EPERM);
  T_OK(br_sem_release(fd.s));
  while (k[2].sum < total + 1) T_OK(br_sleep_ms(1));
  T_RC(br_task_close(ct[2]), BR_ECANCELED);
  T_RC(k[0].rc, BR_ECANCELED);
  T_RC(k[1].rc, BR_ECLOSED);
  T_RC(k[2].rc, BR_ECANCELED);
  T_EQ(k[0].sum + k[1].sum, total);
  T_EQ(k[2].sum, total + 1);
  T_EQ(atomic_load(&fd.posted), total);
  T_OK(br_chan_free(fd.c));
  T_OK(br_sem_free(fd.s));
  return NULL;
}

static void test_feed_from_threads(void **state) {
  (void)state;
  run_main(m_feed, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_await_race),
      cmocka_unit_test(test_wait_race),
      cmocka_unit_test(test_cancel_set_duel),
      cmocka_unit_test(test_feed_from_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
