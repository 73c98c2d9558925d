/* SPDX-License-Identifier: MIT */
/* test_hostile_sync — hostile use of tasks, cancellation, groups and the
 * sync primitives: cancelling waiters mid-operation (nothing lost, nothing
 * delivered twice, no lock left held), closing channels under blocked
 * peers, groups cancelled while their children still spawn, groups freed
 * from outside the loop while children unwind at different speeds, odd
 * timer durations, and wrong use that must get a clear code. */
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

/* --- channels ------------------------------------------------------------ */

typedef struct {
  br_chan *c;
  int rc;
  int val;
} chan_arg;

static void *ch_recv(void *arg) {
  chan_arg *a = arg;
  a->rc = br_chan_recv(a->c, &a->val);
  return NULL;
}

static void *ch_send(void *arg) {
  chan_arg *a = arg;
  a->rc = br_chan_send(a->c, &a->val);
  return NULL;
}

/* Receivers cancelled while parked never take an element; the element goes
 * to the next live receiver; every element is delivered exactly once. */
static void *m_chan_cancel(void *arg) {
  (void)arg;
  br_chan *c = tf_chan(sizeof(int), 0);
  T_TRUE(c);
  chan_arg a[4];
  br_task *t[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (chan_arg){.c = c, .rc = 99, .val = -1};
    T_OK(br_spawn(&t[i], ch_recv, &a[i], NULL));
  }
  T_OK(br_yield()); /* all four park */
  T_OK(br_cancel(t[0]));
  T_OK(br_cancel(t[2]));
  int v = 7;
  T_OK(br_chan_send(c, &v));
  v = 8;
  T_OK(br_chan_send(c, &v));
  for (int i = 0; i < 4; i++) br_join(t[i], NULL);
  T_RC(a[0].rc, BR_ECANCELED);
  T_RC(a[2].rc, BR_ECANCELED);
  T_OK(a[1].rc);
  T_OK(a[3].rc);
  T_EQ(a[1].val, 7);
  T_EQ(a[3].val, 8);
  T_EQ(a[0].val, -1);
  T_RC(br_chan_try_recv(c, &v), BR_EAGAIN);

  /* Close with blocked receivers (unbuffered) and blocked senders
   * (buffered, full): all wake with BR_ECLOSED; the buffered element is
   * still delivered, then BR_ECLOSED. */
  br_chan *b = tf_chan(sizeof(int), 1);
  v = 1;
  T_OK(br_chan_send(b, &v));
  for (int i = 0; i < 2; i++) {
    a[i] = (chan_arg){.c = c, .rc = 99};
    T_OK(br_spawn(&t[i], ch_recv, &a[i], NULL));
    a[2 + i] = (chan_arg){.c = b, .rc = 99, .val = 100 + i};
    T_OK(br_spawn(&t[2 + i], ch_send, &a[2 + i], NULL));
  }
  T_OK(br_yield());
  T_RC(br_chan_free(c), BR_EBUSY);
  T_OK(br_chan_close(c));
  T_OK(br_chan_close(b));
  T_RC(br_chan_close(b), BR_ECLOSED);
  for (int i = 0; i < 4; i++) T_OK(br_join(t[i], NULL));
  for (int i = 0; i < 4; i++) T_RC(a[i].rc, BR_ECLOSED);
  T_OK(br_chan_recv(b, &v));
  T_EQ(v, 1);
  T_RC(br_chan_recv(b, &v), BR_ECLOSED);
  T_RC(br_chan_send(b, &v), BR_ECLOSED);
  T_OK(br_chan_free(c));
  T_OK(br_chan_free(b));
  return NULL;
}

static void test_chan_cancel_and_close(void **state) {
  (void)state;
  run_main(m_chan_cancel, NULL);
}

/* --- mutex, semaphore, event, queue --------------------------------------- */

typedef struct {
  br_mutex *m;
  br_sem *s;
  br_event *e;
  br_queue *q;
  int rc;
  void *item;
  int got;
} sync_arg;

static void *mu_lock(void *arg) {
  sync_arg *a = arg;
  a->rc = br_mutex_lock(a->m);
  if (a->rc == 0) {
    a->got = 1;
    T_OK(br_mutex_unlock(a->m));
  }
  return NULL;
}

static void *se_acq(void *arg) {
  sync_arg *a = arg;
  a->rc = br_sem_acquire(a->s);
  if (a->rc == 0) {
    a->got = 1;
    T_OK(br_sem_release(a->s));
  }
  return NULL;
}

static void *ev_wait(void *arg) {
  sync_arg *a = arg;
  a->rc = br_event_wait(a->e);
  return NULL;
}

static void *q_get(void *arg) {
  sync_arg *a = arg;
  a->rc = br_queue_get(a->q, &a->item);
  return NULL;
}

static void *q_put(void *arg) {
  sync_arg *a = arg;
  a->rc = br_queue_put(a->q, a->item);
  return NULL;
}

static void *m_locks_cancel(void *arg) {
  (void)arg;
  sync_arg a[3];
  br_task *t[3];
  br_mutex *m;
  T_OK(br_mutex_new(&m));
  T_OK(br_mutex_lock(m));
  for (int i = 0; i < 3; i++) {
    a[i] = (sync_arg){.m = m, .rc = 99};
    T_OK(br_spawn(&t[i], mu_lock, &a[i], NULL));
  }
  T_OK(br_yield());
  T_OK(br_cancel(t[0]));
  T_OK(br_cancel(t[1]));
  T_OK(br_mutex_unlock(m));
  for (int i = 0; i < 3; i++) br_join(t[i], NULL);
  T_RC(a[0].rc, BR_ECANCELED);
  T_RC(a[1].rc, BR_ECANCELED);
  T_OK(a[2].rc);
  T_EQ(a[2].got, 1);
  T_OK(br_mutex_trylock(m)); /* nobody holds it */
  T_OK(br_mutex_unlock(m));
  T_RC(br_mutex_unlock(m), BR_EPERM);
  T_OK(br_mutex_free(m));

  br_sem *s;
  T_OK(br_sem_new(&s, 0));
  for (int i = 0; i < 3; i++) {
    a[i] = (sync_arg){.s = s, .rc = 99};
    T_OK(br_spawn(&t[i], se_acq, &a[i], NULL));
  }
  T_OK(br_yield());
  T_OK(br_cancel(t[1]));
  T_OK(br_sem_release(s));
  for (int i = 0; i < 3; i++) br_join(t[i], NULL);
  T_OK(a[0].rc);
  T_RC(a[1].rc, BR_ECANCELED);
  T_OK(a[2].rc);
  /* Exactly the one unit is back. */
  T_OK(br_sem_acquire_until(s, br_now()));
  T_RC(br_sem_acquire_until(s, br_now()), BR_ETIMEDOUT);
  T_OK(br_sem_free(s));

  br_event *e;
  T_OK(br_event_new(&e));
  for (int i = 0; i < 3; i++) {
    a[i] = (sync_arg){.e = e, .rc = 99};
    T_OK(br_spawn(&t[i], ev_wait, &a[i], NULL));
  }
  T_OK(br_yield());
  T_OK(br_cancel(t[0]));
  br_event_set(e);
  br_event_clear(e);
  for (int i = 0; i < 3; i++) br_join(t[i], NULL);
  T_RC(a[0].rc, BR_ECANCELED);
  T_OK(a[1].rc);
  T_OK(a[2].rc);
  T_OK(br_event_free(e));

  /* Queue getters: a cancelled getter never takes the item. */
  br_queue *q = tf_queue(1);
  for (int i = 0; i < 2; i++) {
    a[i] = (sync_arg){.q = q, .rc = 99};
    T_OK(br_spawn(&t[i], q_get, &a[i], NULL));
  }
  T_OK(br_yield());
  T_OK(br_cancel(t[0]));
  T_OK(br_queue_put(q, IP(5)));
  for (int i = 0; i < 2; i++) br_join(t[i], NULL);
  T_RC(a[0].rc, BR_ECANCELED);
  T_OK(a[1].rc);
  T_EQ(PI(a[1].item), 5);
  T_EQ(br_queue_size(q), 0);
  /* Putters on a full queue: a cancelled putter's item is not put. */
  T_OK(br_queue_put(q, IP(1)));
  for (int i = 0; i < 2; i++) {
    a[i] = (sync_arg){.q = q, .rc = 99, .item = IP(10 + i)};
    T_OK(br_spawn(&t[i], q_put, &a[i], NULL));
  }
  T_OK(br_yield());
  T_OK(br_cancel(t[0]));
  void *it;
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 1);
  for (int i = 0; i < 2; i++) br_join(t[i], NULL);
  T_RC(a[0].rc, BR_ECANCELED);
  T_OK(a[1].rc);
  T_OK(br_queue_get(q, &it));
  T_EQ(PI(it), 11);
  T_RC(br_queue_try_get(q, &it), BR_EAGAIN);
  for (int i = 0; i < 3; i++) T_OK(br_queue_task_done(q));
  T_RC(br_queue_task_done(q), BR_EINVAL);
  T_OK(br_queue_free(q));
  return NULL;
}

static void test_sync_cancel_waiters(void **state) {
  (void)state;
  run_main(m_locks_cancel, NULL);
}

/* --- groups ---------------------------------------------------------------- */

static br_group *g_group;
static int g_unwound;
static int g_late_rc;

/* Sleeps until cancelled, then spends `arg` ms on shielded cleanup. */
static void *slow_unwind(void *arg) {
  int rc = br_sleep_ms(100000);
  if (rc != BR_ECANCELED) return br_fail(BR_EFAILED, "sleep: %s", br_errname(rc));
  br_scope s;
  T_OK(br_scope_enter(&s, BR_NEVER, true));
  T_OK(br_sleep_ms(PI(arg)));
  T_OK(br_scope_exit(&s));
  g_unwound++;
  return NULL;
}

static void *setup_group(void *arg) {
  (void)arg;
  T_OK(br_group_new(&g_group));
  /* Newest children come first in the group's list: the quick one is
   * waited for first, the slow one must still be waited for. */
  T_OK(br_group_spawn(g_group, slow_unwind, IP(60), NULL));
  T_OK(br_group_spawn(g_group, slow_unwind, IP(1), NULL));
  br_loop_stop(br_loop_current());
  return NULL;
}

/* br_group_free from the loop's thread outside the loop cancels and waits
 * for every child, however long each takes to unwind. */
static void test_group_free_outside_waits_all(void **state) {
  (void)state;
  br_loop *L;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  g_unwound = 0;
  assert_int_equal(br_loop_spawn(L, NULL, setup_group, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED}), 0);
  assert_int_equal(br_loop_run(L), 0);
  tf_assert_clean();
  assert_non_null(g_group);
  assert_int_equal(br_group_free(g_group), 0);
  g_group = NULL;
  tf_assert_clean();
  assert_int_equal(g_unwound, 2);
  assert_int_equal(br_loop_free(L), 0);
}

static void *late_child(void *arg) {
  (void)arg;
  /* Bounded, so that a child nobody cancels fails the test, not hangs it. */
  g_late_rc = br_sleep_ms(3000);
  return NULL;
}

/* Once cancelled, spawns one more child into its group (a worker handing
 * work on while it unwinds). */
static void *spawner_child(void *arg) {
  br_group *g = arg;
  int rc = br_sleep_ms(100000);
  if (rc != BR_ECANCELED) return br_fail(BR_EFAILED, "sleep: %s", br_errname(rc));
  rc = br_group_spawn(g, late_child, NULL, NULL);
  if (rc != 0 && rc != BR_ESHUTDOWN) T_OK(rc);
  if (rc == BR_ESHUTDOWN) g_late_rc = BR_ECANCELED;
  return NULL;
}

static void *group_waiter(void *arg) {
  return IP(br_group_wait(arg));
}

static void *m_group_cancel_spawn(void *arg) {
  (void)arg;
  br_group *g;
  T_OK(br_group_new(&g));
  g_late_rc = 99;
  T_OK(br_group_spawn(g, spawner_child, g, NULL));
  br_task *w;
  T_OK(br_spawn(&w, group_waiter, g, NULL));
  T_OK(br_sleep_ms(5));
  int64_t t0 = br_now();
  T_OK(br_cancel(w));
  void *r;
  T_RC(br_join(w, &r), BR_ECANCELED); /* the waiter was cancelled */
  T_RC((int)PI(r), BR_ECANCELED);     /* and so was its br_group_wait */
  T_RANGE(ms_since(t0), 0, 2500);
  T_RC(g_late_rc, BR_ECANCELED);
  T_OK(br_group_free(g));

  /* br_group_cancel, then a spawn: the new child is cancelled too. */
  T_OK(br_group_new(&g));
  g_late_rc = 99;
  br_group_cancel(g);
  int rc = br_group_spawn(g, late_child, NULL, NULL);
  if (rc != BR_ESHUTDOWN) {
    T_OK(rc);
    T_OK(br_group_wait(g));
    T_RC(g_late_rc, BR_ECANCELED);
  }
  T_OK(br_group_free(g));
  return NULL;
}

static void test_group_cancel_then_spawn(void **state) {
  (void)state;
  run_main(m_group_cancel_spawn, NULL);
}

/* --- timers and deadlines -------------------------------------------------- */

static void *m_odd_durations(void *arg) {
  (void)arg;
  T_OK(br_sleep_ms(0));
  T_OK(br_sleep_ms(-5));
  T_OK(br_sleep_ms(INT64_MIN));
  T_OK(br_sleep_until(INT64_MIN));
  T_OK(br_sleep_until(0));
  br_scope s;
  int64_t t0 = br_now();
  T_OK(br_scope_enter(&s, br_deadline_ms(20), false));
  T_RC(br_sleep_ms(INT64_MAX), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  T_OK(br_scope_enter(&s, br_deadline_ms(20), false));
  T_RC(br_sleep_until(INT64_MAX - 1), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 38, 3000);
  /* Deadlines far in the past or the future on a scope. */
  T_OK(br_scope_enter(&s, INT64_MIN, false));
  T_RC(br_yield(), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  T_OK(br_scope_enter(&s, INT64_MAX - 1, false));
  T_OK(br_sleep_ms(1));
  T_OK(br_scope_exit(&s));
  /* Nested: inner earlier, inner later than outer. */
  br_scope o, i;
  t0 = br_now();
  T_OK(br_scope_enter(&o, br_deadline_ms(200), false));
  T_OK(br_scope_enter(&i, br_deadline_ms(10), false));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&i), BR_ETIMEDOUT);
  T_OK(br_sleep_ms(1));
  T_OK(br_scope_exit(&o));
  T_RANGE(ms_since(t0), 10, 180);
  t0 = br_now();
  T_OK(br_scope_enter(&o, br_deadline_ms(10), false));
  T_OK(br_scope_enter(&i, br_deadline_ms(1000), false));
  T_RC(br_sleep_ms(2000), BR_ETIMEDOUT);
  T_OK(br_scope_exit(&i)); /* the inner's own deadline did not pass */
  T_RC(br_scope_exit(&o), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 10, 900);
  /* Awaits with odd deadlines. */
  br_future *f = tf_future();
  T_TRUE(f);
  T_RC(br_await_until(f, NULL, INT64_MIN), BR_ETIMEDOUT);
  T_RC(br_await_until(f, NULL, 0), BR_ETIMEDOUT);
  T_RC(br_future_wait_for(f, NULL, -1), BR_ETIMEDOUT);
  T_RC(br_future_error(f), BR_ECANCELED);
  br_future_unref(f);
  return NULL;
}

static void test_odd_durations(void **state) {
  (void)state;
  run_main(m_odd_durations, NULL);
}

/* --- handles ---------------------------------------------------------------- */

static void *quick(void *arg) { return arg; }
static void *failing(void *arg) {
  (void)arg;
  return br_fail(BR_EIO, "boom");
}

static void *m_handles(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, quick, IP(3), NULL));
  void *r;
  T_OK(br_join(t, &r));
  T_EQ(PI(r), 3);
  T_RC(br_join(t, &r), BR_EHANDLE);
  T_RC(br_detach(t), BR_EHANDLE);
  T_RC(br_task_close(t), BR_EHANDLE);
  T_RC(br_cancel(t), BR_EHANDLE);
  T_TRUE(br_task_future(t) == NULL);
  T_OK(br_spawn(&t, quick, NULL, NULL));
  T_OK(br_yield());
  T_TRUE(br_task_done(t));
  T_OK(br_cancel(t)); /* finished: nothing */
  T_OK(br_detach(t));
  T_RC(br_join(t, NULL), BR_EHANDLE);
  T_RC(br_join(br_self(), NULL), BR_EDEADLK);
  T_RC(br_task_close(br_self()), BR_EDEADLK);
  T_OK(br_spawn(&t, failing, NULL, NULL));
  T_RC(br_task_close(t), BR_EIO);
  T_RC(br_task_close(t), BR_EHANDLE);
  /* Zero and one item to gather / wait / as_completed. */
  br_result res[1];
  T_OK(br_gather(res, NULL, 0));
  T_OK(br_gather_tasks(res, NULL, 0));
  T_RC(br_wait(NULL, 0, BR_WAIT_ALL, BR_NEVER), BR_EINVAL);
  br_as_completed *it;
  T_OK(br_as_completed_new(&it, NULL, 0));
  T_RC(br_as_completed_next(it, BR_NEVER), BR_ECLOSED);
  br_as_completed_free(it);
  br_future *f = tf_future();
  T_OK(br_as_completed_new(&it, &f, 1));
  T_RC(br_as_completed_next(it, br_deadline_ms(1)), BR_ETIMEDOUT);
  T_OK(br_future_set(f, IP(1)));
  T_EQ(br_as_completed_next(it, BR_NEVER), 0);
  T_RC(br_as_completed_next(it, BR_NEVER), BR_ECLOSED);
  br_as_completed_free(it);
  T_EQ(br_wait(&f, 1, BR_WAIT_FIRST, BR_NEVER), 0);
  T_OK(br_gather(res, &f, 1));
  T_EQ(PI(res[0].value), 1);
  br_results_free(res, 1);
  br_future_unref(f);
  return NULL;
}

static void test_handles(void **state) {
  (void)state;
  run_main(m_handles, NULL);
}


/* --- a mutex whose owner ended holding it --------------------------------- */

/* The mutex stays locked (as asyncio's Lock does), and the tasks that come
 * after, whose structs recycle the owner's, are not its owner: no unlock
 * by them (it was allowed: the owner was a pointer), no BR_EDEADLK. */
static void *mx_lock_and_leave(void *arg) {
  return IP(br_mutex_lock(arg));
}

typedef struct {
  br_mutex *m;
  int unlock_rc, lock_rc, try_rc;
} mx_probe;

static void *mx_probe_task(void *arg) {
  mx_probe *p = arg;
  p->unlock_rc = br_mutex_unlock(p->m);
  p->try_rc = br_mutex_trylock(p->m);
  p->lock_rc = br_mutex_lock_until(p->m, br_deadline_ms(5));
  return NULL;
}

static void *m_mutex_owner_gone(void *arg) {
  (void)arg;
  br_mutex *m;
  T_OK(br_mutex_new(&m));
  br_task *t;
  T_OK(br_spawn(&t, mx_lock_and_leave, m, NULL));
  void *v;
  T_OK(br_join(t, &v));
  T_OK(PI(v));
  for (int i = 0; i < 8; i++) {
    mx_probe p = {.m = m};
    T_OK(br_spawn(&t, mx_probe_task, &p, NULL));
    T_OK(br_join(t, NULL));
    T_RC(p.unlock_rc, BR_EPERM);
    T_RC(p.try_rc, BR_EBUSY);
    T_RC(p.lock_rc, BR_ETIMEDOUT);
  }
  /* Held by a live task: not freed under it. Its owner ended and joined:
   * nobody can unlock it, so it can be freed. */
  br_mutex *held;
  T_OK(br_mutex_new(&held));
  T_OK(br_mutex_lock(held));
  T_RC(br_mutex_free(held), BR_EBUSY);
  T_OK(br_mutex_unlock(held));
  T_OK(br_mutex_free(held));
  T_OK(br_mutex_free(m));
  return NULL;
}

static void test_mutex_owner_gone(void **state) {
  (void)state;
  run_main(m_mutex_owner_gone, NULL);
}

/* --- br_scope_cancel: who may call it -------------------------------------- */

typedef struct {
  br_scope *scope; /* published while the owner sleeps inside it */
  int sleep_rc, exit_rc;
  int64_t ms;
} scoped_sleep;

static void *sleep_in_scope(void *arg) {
  scoped_sleep *p = arg;
  br_scope s;
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  p->scope = &s;
  int64_t t0 = br_now();
  p->sleep_rc = br_sleep_ms(60);
  p->ms = ms_since(t0);
  p->scope = NULL;
  p->exit_rc = br_scope_exit(&s);
  return NULL;
}

static void *cancel_from_thread(void *arg) {
  return IP(br_scope_cancel(arg));
}

static void *m_scope_cancel_callers(void *arg) {
  (void)arg;
  /* From a plain thread: refused, and the owner's sleep is untouched (a
   * wake-up from there would race with the loop's run queue). */
  scoped_sleep p = {0};
  br_task *t;
  T_OK(br_spawn(&t, sleep_in_scope, &p, NULL));
  T_OK(br_yield());
  T_TRUE(p.scope);
  pthread_t th;
  T_OK(pthread_create(&th, NULL, cancel_from_thread, p.scope));
  void *r;
  T_OK(pthread_join(th, &r));
  T_RC((int)PI(r), BR_EPERM);
  T_OK(br_join(t, NULL));
  T_OK(p.sleep_rc);
  T_OK(p.exit_rc);
  T_RANGE(p.ms, 60, 5000);

  /* From another task of the loop: allowed. */
  p = (scoped_sleep){0};
  T_OK(br_spawn(&t, sleep_in_scope, &p, NULL));
  T_OK(br_yield());
  T_OK(br_scope_cancel(p.scope));
  T_OK(br_join(t, NULL));
  T_RC(p.sleep_rc, BR_ECANCELED);
  T_RC(p.exit_rc, BR_ECANCELED);

  /* A compact task's scope from another task: refused, untouched. */
  p = (scoped_sleep){0};
  scoped_sleep q = {0};
  br_task *u;
  br_spawn_opts co = {.flags = BR_SPAWN_COMPACT};
  T_OK(br_spawn(&t, sleep_in_scope, &p, &co));
  T_OK(br_spawn(&u, sleep_in_scope, &q, &co)); /* takes the shared stack next */
  T_OK(br_yield());
  T_TRUE(p.scope && q.scope);
  T_RC(br_scope_cancel(p.scope), BR_EPERM);
  T_RC(br_scope_cancel(q.scope), BR_EPERM);
  T_OK(br_join(t, NULL));
  T_OK(br_join(u, NULL));
  T_OK(p.sleep_rc);
  T_OK(q.sleep_rc);
  T_OK(p.exit_rc);
  T_OK(q.exit_rc);

  /* Not entered, exited, NULL. */
  br_scope s;
  memset(&s, 0, sizeof s);
  T_RC(br_scope_cancel(NULL), BR_EINVAL);
  T_RC(br_scope_cancel(&s), BR_EINVAL);
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  T_OK(br_scope_cancel(&s));
  T_RC(br_scope_exit(&s), BR_ECANCELED);
  T_RC(br_scope_cancel(&s), BR_EINVAL);

  /* Entering an open scope again is refused and leaves it as it was
   * (accepted, it would be its own parent, and the next checkpoint would
   * walk that cycle for ever). */
  br_scope o;
  T_OK(br_scope_enter(&o, BR_NEVER, false));
  T_OK(br_scope_enter(&s, br_deadline_ms(5), false));
  T_RC(br_scope_enter(&s, BR_NEVER, false), BR_EBUSY);
  T_RC(br_scope_enter(&o, BR_NEVER, false), BR_EBUSY);
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT); /* s's deadline still holds */
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  T_OK(br_sleep_ms(1));
  T_OK(br_scope_exit(&o));
  T_RC(br_scope_exit(&o), BR_EINVAL);
  /* Exited, it may be entered again. */
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  T_OK(br_scope_exit(&s));
  return NULL;
}

/* A compact task cancels its own scope. */
static void *compact_self_cancel(void *arg) {
  (void)arg;
  br_scope s;
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  T_OK(br_scope_cancel(&s));
  T_RC(br_sleep_ms(1000), BR_ECANCELED);
  T_RC(br_scope_exit(&s), BR_ECANCELED);
  return IP(1);
}

static void *m_compact_self(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, compact_self_cancel, NULL, &(br_spawn_opts){.flags = BR_SPAWN_COMPACT}));
  void *r;
  T_OK(br_join(t, &r));
  T_EQ(PI(r), 1);
  return NULL;
}

static void test_scope_cancel_callers(void **state) {
  (void)state;
  run_main(m_scope_cancel_callers, NULL);
  run_main(m_compact_self, NULL);
}

/* --- churn: every hostile case above, many times (ASan checks leaks) ------ */

static void *fail_now(void *arg) {
  (void)arg;
  return br_fail(BR_EIO, "child failed");
}

static void *wait_event(void *arg) {
  int rc = br_event_wait(arg);
  return rc == BR_ECANCELED ? NULL : br_fail(BR_EFAILED, "event wait: %s", br_errname(rc));
}

static void *m_churn(void *arg) {
  (void)arg;
  long n = br_test_scaled(100000);
  br_chan *c = tf_chan(sizeof(int), 0);
  br_queue *q = tf_queue(1);
  br_mutex *m;
  br_event *e;
  T_OK(br_mutex_new(&m));
  T_OK(br_event_new(&e));
  long sent = 0, got = 0;
  for (long i = 0; i < n; i++) {
    /* A receiver cancelled or served, at random points. */
    chan_arg a = {.c = c, .rc = 99, .val = -1};
    br_task *t;
    T_OK(br_spawn(&t, ch_recv, &a, NULL));
    if (i % 3) T_OK(br_yield());
    if (i % 2) {
      T_OK(br_cancel(t));
      int v = (int)i;
      if (br_chan_try_send(c, &v) == 0) sent++;
    } else {
      int v = (int)i;
      T_OK(br_chan_send(c, &v));
      sent++;
    }
    br_join(t, NULL);
    if (a.rc == 0) {
      got++;
      T_EQ(a.val, (int)i);
    }
    /* A mutex waiter cancelled while the lock is handed over. */
    sync_arg ma = {.m = m, .rc = 99};
    T_OK(br_mutex_lock(m));
    T_OK(br_spawn(&t, mu_lock, &ma, NULL));
    T_OK(br_yield());
    if (i % 2) T_OK(br_cancel(t));
    T_OK(br_mutex_unlock(m));
    if (!(i % 2)) T_OK(br_cancel(t)); /* after the hand-off: it owns it */
    br_join(t, NULL);
    T_OK(br_mutex_trylock(m)); /* never left held */
    T_OK(br_mutex_unlock(m));
    /* A queue getter cancelled against a put. */
    sync_arg qa = {.q = q, .rc = 99};
    T_OK(br_spawn(&t, q_get, &qa, NULL));
    T_OK(br_yield());
    if (i % 2) T_OK(br_cancel(t));
    T_OK(br_queue_put(q, IP(i + 1)));
    br_join(t, NULL);
    void *it = NULL;
    if (qa.rc == 0)
      T_EQ(PI(qa.item), i + 1);
    else
      T_OK(br_queue_try_get(q, &it));
    T_EQ(br_queue_size(q), 0);
    T_OK(br_queue_task_done(q));
    /* A group whose child fails while another is blocked. */
    br_group *g;
    T_OK(br_group_new(&g));
    T_OK(br_group_spawn(g, wait_event, e, NULL));
    T_OK(br_group_spawn(g, fail_now, NULL, NULL));
    T_RC(br_group_wait(g), BR_EIO);
    T_STR(br_group_message(g), "child failed");
    T_OK(br_group_free(g));
    /* Scopes: a past deadline, a cancelled one, nested. */
    br_scope s1, s2;
    T_OK(br_scope_enter(&s1, br_deadline_ms(1000), false));
    T_OK(br_scope_enter(&s2, br_now() - 1, false));
    T_RC(br_chan_recv(c, &a.val), BR_ETIMEDOUT);
    T_RC(br_scope_exit(&s2), BR_ETIMEDOUT);
    T_OK(br_scope_cancel(&s1));
    T_RC(br_queue_get(q, &it), BR_ECANCELED);
    T_RC(br_scope_exit(&s1), BR_ECANCELED);
    /* Gather and as_completed, interrupted and not. */
    br_future *f[2] = {tf_future(), tf_future()};
    T_OK(br_future_set(f[i % 2], IP(1)));
    T_EQ(br_wait(f, 2, BR_WAIT_FIRST, BR_NEVER), (int)(i % 2));
    T_OK(br_scope_enter(&s1, br_now(), false));
    br_result res[2];
    T_RC(br_gather(res, f, 2), BR_ETIMEDOUT);
    T_RC(br_scope_exit(&s1), BR_ETIMEDOUT);
    T_RC(res[(i + 1) % 2].err, BR_ECANCELED);
    br_results_free(res, 2);
    br_future_unref(f[0]);
    br_future_unref(f[1]);
  }
  T_EQ(sent, got);
  T_OK(br_chan_free(c));
  T_OK(br_queue_free(q));
  T_OK(br_mutex_free(m));
  T_OK(br_event_free(e));
  return NULL;
}

static void test_churn(void **state) {
  (void)state;
  run_main(m_churn, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chan_cancel_and_close),
      cmocka_unit_test(test_sync_cancel_waiters),
      cmocka_unit_test(test_group_free_outside_waits_all),
      cmocka_unit_test(test_group_cancel_then_spawn),
      cmocka_unit_test(test_odd_durations),
      cmocka_unit_test(test_handles),
      cmocka_unit_test(test_mutex_owner_gone),
      cmocka_unit_test(test_scope_cancel_callers),
      cmocka_unit_test(test_churn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
