/* SPDX-License-Identifier: MIT */
/* test_badinput — misuse of the core API gets a clear error code, never a
 * crash or a silent hang: NULL functions and handles, zero or absurd stack
 * sizes, awaiting or joining yourself, joining twice, handles of another
 * loop, calls from the wrong thread, duplicates. Each case runs in a child
 * process with a timeout, so a crash or a hang fails that case alone. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* Run fn in a child: it must exit 0 (checks recorded with T_/V_ are
 * reported by the child on stderr), neither crash nor hang. */

static void *nothing(void *arg) {
  (void)arg;
  return NULL;
}

static void *returns_arg(void *arg) { return arg; }

static void noop_cb(void *arg) { (void)arg; }

static void *sleeper(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void run_checks(br_task_fn fn) {
  int rc = br_run(NULL, fn, NULL);
  if (rc) tf_record(__FILE__, __LINE__, "br_run returned %s", br_errname(rc));
}

/* --- spawn ------------------------------------------------------------------- */

static void *m_spawn(void *arg) {
  (void)arg;
  br_task *t = IP(1);
  T_RC(br_spawn(&t, NULL, NULL, NULL), BR_EINVAL);
  T_TRUE(t == NULL || t == IP(1));
  T_RC(br_spawn(NULL, nothing, NULL, NULL), BR_EINVAL); /* no handle and not detached */
  T_OK(br_spawn(NULL, nothing, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED}));
  const size_t bad[] = {1, 100, 4096, 16 * 1024 - 1, ((size_t)1 << 30) + 1, (size_t)1 << 40, SIZE_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    br_spawn_opts o = {.stack_size = bad[i]};
    T_RC(br_spawn(&t, nothing, NULL, &o), BR_EINVAL);
    o.flags = BR_SPAWN_COMPACT;
    int rc = br_spawn(&t, nothing, NULL, &o);
    T_TRUE(rc == BR_EINVAL || rc == 0); /* compact tasks share the loop's stack */
    if (rc == 0) T_OK(br_join(t, NULL));
  }
  /* Zero means "the loop's default" (braid.h), not an error. */
  T_OK(br_spawn(&t, returns_arg, IP(5), &(br_spawn_opts){.stack_size = 0}));
  void *r0;
  T_OK(br_join(t, &r0));
  T_EQ(PI(r0), 5);
  /* The limits themselves work (a 1 GiB stack is only reserved). */
  const size_t good[] = {16 * 1024, 16 * 1024 + 1, 1000000, (size_t)1 << 30};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    T_OK(br_spawn(&t, returns_arg, IP(i + 1), &(br_spawn_opts){.stack_size = good[i]}));
    void *r;
    T_OK(br_join(t, &r));
    T_EQ(PI(r), i + 1);
  }
  /* An empty name means the default one. */
  T_OK(br_spawn(&t, nothing, NULL, &(br_spawn_opts){.name = ""}));
  T_TRUE(strncmp(br_task_name(t), "task-", 5) == 0);
  T_OK(br_join(t, NULL));
  T_TRUE(br_loop_spawn(NULL, &t, nothing, NULL, NULL) < 0);
  return NULL;
}

static void c_spawn(void) {
  run_checks(m_spawn);
  /* No loop at all. */
  br_task *t;
  V_RC(br_spawn(&t, nothing, NULL, NULL), BR_ENOTTASK);
}

static void test_spawn_bad_input(void **state) {
  (void)state;
  isolated(c_spawn, 60000);
}

/* A loop's tasks can only be spawned from its own thread. */
typedef struct {
  br_loop *loop;
  int rc;
} spawn_other;

static void *spawn_from_other(void *arg) {
  spawn_other *s = arg;
  br_task *t;
  s->rc = br_loop_spawn(s->loop, &t, nothing, NULL, NULL);
  return NULL;
}

static void c_spawn_other_thread(void) {
  spawn_other s = {0};
  V_OK(br_loop_new(&s.loop, NULL));
  pthread_t th;
  pthread_create(&th, NULL, spawn_from_other, &s);
  pthread_join(th, NULL);
  V_TRUE(s.rc < 0);
  V_OK(br_loop_free(s.loop));
}

static void test_spawn_from_other_thread(void **state) {
  (void)state;
  isolated(c_spawn_other_thread, 30000);
}

/* --- handles --------------------------------------------------------------- */

static void *m_handles(void *arg) {
  (void)arg;
  br_task *t, *keep;
  /* Spawned first: a released task's memory is recycled by the next spawn,
   * and a stale pointer to it then names the new task (undetectable). */
  T_OK(br_spawn(&keep, nothing, NULL, NULL));
  T_OK(br_spawn(&t, nothing, NULL, NULL));
  T_OK(br_join(t, NULL));
  T_RC(br_join(t, NULL), BR_EHANDLE);     /* joining twice */
  T_RC(br_task_close(t), BR_EHANDLE);
  T_RC(br_detach(t), BR_EHANDLE);
  T_RC(br_wait_for(t, NULL, 1), BR_EHANDLE);
  T_RC(br_cancel(t), BR_EHANDLE);
  br_task_stats st;
  T_RC(br_task_get_stats(t, &st), BR_EHANDLE);
  T_TRUE(br_task_future(t) == NULL);
  T_TRUE(!br_task_done(t));
  T_EQ(br_task_id(t), 0);
  T_STR(br_task_name(t), "<released>");

  T_RC(br_join(NULL, NULL), BR_EHANDLE);
  T_RC(br_task_close(NULL), BR_EHANDLE);
  T_RC(br_detach(NULL), BR_EHANDLE);
  T_RC(br_wait_for(NULL, NULL, 1), BR_EHANDLE);
  T_RC(br_cancel(NULL), BR_EHANDLE);

  /* Yourself. */
  T_RC(br_join(br_self(), NULL), BR_EDEADLK);
  T_RC(br_wait_for(br_self(), NULL, 10), BR_EDEADLK);
  T_RC(br_task_close(br_self()), BR_EDEADLK);
  T_RC(br_await(br_task_future(br_self()), NULL), BR_EDEADLK);
  T_RC(br_future_wait_for(br_task_future(br_self()), NULL, 10), BR_EDEADLK);
  br_task *self = br_self();
  br_result out[1];
  br_future *own = br_task_future(self);
  T_RC(br_gather(out, &own, 1), BR_EDEADLK);

  /* Gather: a released handle, a NULL entry. */
  br_task *ts[2];
  ts[0] = keep;
  ts[1] = t; /* released */
  br_result o2[2];
  T_RC(br_gather_tasks(o2, ts, 2), BR_EHANDLE);
  ts[1] = NULL;
  T_RC(br_gather_tasks(o2, ts, 2), BR_EHANDLE);
  T_RC(br_gather_tasks(NULL, ts, 1), BR_EINVAL);
  ts[1] = self;
  T_RC(br_gather_tasks(o2, ts, 2), BR_EDEADLK);
  /* The valid handle was not consumed by the refused calls. */
  T_OK(br_join(ts[0], NULL));
  return NULL;
}

static void c_handles(void) { run_checks(m_handles); }

static void test_handles(void **state) {
  (void)state;
  isolated(c_handles, 30000);
}

/* The same handle twice in one gather would be given back twice: refused. */
static void *m_gather_dup(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, returns_arg, IP(3), NULL));
  br_task *ts[2] = {t, t};
  br_result out[2];
  T_RC(br_gather_tasks(out, ts, 2), BR_EINVAL);
  /* Refused before anything happened: the handle is still the caller's. */
  void *r;
  T_OK(br_join(t, &r));
  T_EQ(PI(r), 3);
  return NULL;
}

static void c_gather_dup(void) { run_checks(m_gather_dup); }

static void test_gather_duplicate_handle(void **state) {
  (void)state;
  isolated(c_gather_dup, 30000);
}

/* --- handles of another loop ------------------------------------------------- */

static br_task *foreign;

static void *m_foreign_join(void *arg) {
  (void)arg;
  int64_t t0 = br_now();
  T_TRUE(br_join(foreign, NULL) < 0);
  T_RANGE(ms_since(t0), 0, 1000);
  return NULL;
}

static void *m_foreign_wait_for(void *arg) {
  (void)arg;
  int64_t t0 = br_now();
  int rc = br_wait_for(foreign, NULL, 50);
  /* Not a plain timeout: the task is on a loop that is not even running;
   * it cannot be waited for (or cancelled) from here. */
  T_TRUE(rc < 0 && rc != BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 0, 1000);
  return NULL;
}

static void *m_foreign_gather(void *arg) {
  (void)arg;
  br_result out[1];
  int64_t t0 = br_now();
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(2000), false);
  int rc = br_gather_tasks(out, &foreign, 1);
  br_scope_exit(&s);
  T_TRUE(rc < 0 && rc != BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 0, 1000);
  return NULL;
}

static void foreign_case(br_task_fn fn) {
  br_loop *A = NULL;
  (void)br_loop_new(&A, NULL);
  V_OK(br_loop_spawn(A, &foreign, returns_arg, IP(1), NULL));
  run_checks(fn); /* a second loop on this thread, A idle */
  /* A's task is still collectable (never run: closing cancels it first). */
  int rc = br_task_close(foreign);
  V_TRUE(rc == 0 || rc == BR_ECANCELED);
  V_OK(br_loop_free(A));
}

static void c_foreign_join(void) { foreign_case(m_foreign_join); }
static void c_foreign_wait_for(void) { foreign_case(m_foreign_wait_for); }
static void c_foreign_gather(void) { foreign_case(m_foreign_gather); }

static void test_join_task_of_other_loop(void **state) {
  (void)state;
  isolated(c_foreign_join, 20000);
}

static void test_wait_for_task_of_other_loop(void **state) {
  (void)state;
  isolated(c_foreign_wait_for, 20000);
}

static void test_gather_task_of_other_loop(void **state) {
  (void)state;
  isolated(c_foreign_gather, 20000);
}

/* --- wrong thread ------------------------------------------------------------- */

/* br_cancel is for the task's loop thread: from any other thread it must be
 * refused (it would edit the run queue under the loop's feet), whether or
 * not that thread runs a loop of its own. */
typedef struct {
  br_task *t;
  int rc;
} xcancel;

static void *cancel_from_plain(void *arg) {
  xcancel *x = arg;
  x->rc = br_cancel(x->t);
  return NULL;
}

static void *m_cancel_plain(void *arg) {
  (void)arg;
  xcancel x = {0};
  T_OK(br_spawn(&x.t, sleeper, NULL, NULL));
  T_OK(br_yield());
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, cancel_from_plain, &x), 0);
  pthread_join(th, NULL);
  int rc = x.rc;
  T_RC(br_task_close(x.t), BR_ECANCELED);
  T_RC(rc, BR_EPERM);
  return NULL;
}

static void c_cancel_plain(void) { run_checks(m_cancel_plain); }

static void test_cancel_from_plain_thread(void **state) {
  (void)state;
  isolated(c_cancel_plain, 20000);
}

/* br_detach from another thread is refused like br_cancel: giving the
 * handle back may put a finished task into its loop's cache, which only the
 * loop's thread may touch. The handle stays held, so the owner closes it. */
static void *detach_from_plain(void *arg) {
  xcancel *x = arg;
  x->rc = br_detach(x->t);
  return NULL;
}

static void *m_detach_plain(void *arg) {
  (void)arg;
  const br_task_fn bodies[] = {sleeper, nothing}; /* parked; finished */
  for (int i = 0; i < 2; i++) {
    xcancel x = {0};
    T_OK(br_spawn(&x.t, bodies[i], NULL, NULL));
    T_OK(br_yield());
    pthread_t th;
    T_EQ(pthread_create(&th, NULL, detach_from_plain, &x), 0);
    pthread_join(th, NULL);
    int rc = x.rc;
    T_RC(br_task_close(x.t), i == 0 ? BR_ECANCELED : 0);
    T_RC(rc, BR_EPERM);
  }
  return NULL;
}

static void c_detach_plain(void) { run_checks(m_detach_plain); }

static void test_detach_from_plain_thread(void **state) {
  (void)state;
  isolated(c_detach_plain, 20000);
}

/* br_scope_exit on a scope that is not the caller's: one whose enter was
 * refused (a plain thread: the local still holds garbage), and another
 * task's. Each is BR_EINVAL and leaves the owner's scope stack alone. */
typedef struct {
  br_scope *s;
  int rc;
} xscope;

static void *exit_foreign_scope(void *arg) {
  xscope *x = arg;
  x->rc = br_scope_exit(x->s);
  return NULL;
}

static void *m_scope_foreign(void *arg) {
  (void)arg;
  br_scope s;
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  xscope x = {.s = &s, .rc = 1};
  br_task *t;
  T_OK(br_spawn(&t, exit_foreign_scope, &x, NULL));
  T_OK(br_join(t, NULL));
  T_RC(x.rc, BR_EINVAL);
  x.rc = 1;
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, exit_foreign_scope, &x), 0);
  pthread_join(th, NULL);
  T_RC(x.rc, BR_EINVAL);
  T_OK(br_scope_exit(&s)); /* still the innermost scope of this task */
  return NULL;
}

static void c_scope_misuse(void) {
  br_scope s;
  memset(&s, 0xa5, sizeof s); /* what an uninitialised local may hold */
  if (br_scope_enter(&s, BR_NEVER, false) != BR_ENOTTASK) tf_record(__FILE__, __LINE__, "enter outside a task");
  if (br_scope_exit(&s) != BR_EINVAL) tf_record(__FILE__, __LINE__, "exit of a refused scope");
  run_checks(m_scope_foreign);
}

static void test_scope_misuse(void **state) {
  (void)state;
  isolated(c_scope_misuse, 20000);
}

/* Loop-thread-only calls made from a loop callback (outside any task): the
 * refusal must not have side effects. */
typedef struct {
  br_task *t;
  int close_rc, join_rc;
  bool ran;
} cb_ctx;

static void misuse_cb(void *arg) {
  cb_ctx *c = arg;
  c->close_rc = br_task_close(c->t);
  c->join_rc = br_join(c->t, NULL);
  c->ran = true;
}

static void *sleep_then_value(void *arg) {
  (void)arg;
  if (br_sleep_ms(30)) return br_fail(BR_ECANCELED, "was cancelled");
  return IP(9);
}

static void *m_cb_misuse(void *arg) {
  (void)arg;
  cb_ctx c = {0};
  T_OK(br_spawn(&c.t, sleep_then_value, NULL, NULL));
  T_OK(br_call_soon(br_loop_current(), misuse_cb, &c));
  for (int i = 0; i < 100 && !c.ran; i++) T_OK(br_sleep_ms(1));
  T_TRUE(c.ran);
  T_TRUE(c.close_rc < 0);
  T_RC(c.join_rc, BR_ENOTTASK);
  void *r = NULL;
  T_OK(br_join(c.t, &r)); /* the refused close did not cancel it */
  T_EQ(PI(r), 9);
  return NULL;
}

static void c_cb_misuse(void) { run_checks(m_cb_misuse); }

static void test_refused_close_has_no_side_effect(void **state) {
  (void)state;
  isolated(c_cb_misuse, 20000);
}

/* --- futures and waits ------------------------------------------------------ */

static void *m_wait_own(void *arg) {
  (void)arg;
  br_future *own = br_task_future(br_self());
  int64_t t0 = br_now();
  int rc = br_wait(&own, 1, BR_WAIT_ALL, br_deadline_ms(200));
  T_RC(rc, BR_EDEADLK); /* waiting for one's own end: refused, not a timeout */
  T_RANGE(ms_since(t0), 0, 150);
  br_as_completed *it = NULL;
  (void)br_as_completed_new(&it, &own, 1);
  t0 = br_now();
  rc = br_as_completed_next(it, br_deadline_ms(200));
  br_as_completed_free(it);
  T_RC(rc, BR_EDEADLK);
  return NULL;
}

static void c_wait_own(void) { run_checks(m_wait_own); }

static void test_wait_on_own_future(void **state) {
  (void)state;
  isolated(c_wait_own, 20000);
}

static void c_null_futures(void) {
  V_RC(br_future_set(NULL, NULL), BR_EINVAL);
  V_RC(br_future_fail(NULL, BR_EIO, "x"), BR_EINVAL);
  V_RC(br_future_cancel(NULL), BR_EINVAL);
  V_RC(br_await(NULL, NULL), BR_EINVAL);
  V_RC(br_await_until(NULL, NULL, BR_NEVER), BR_EINVAL);
  V_RC(br_future_wait_for(NULL, NULL, 1), BR_EINVAL);
  V_RC(br_future_on_done(NULL, noop_cb, NULL), BR_EINVAL);
  V_TRUE(!br_future_done(NULL));
  V_TRUE(br_future_value(NULL) == NULL);
  V_TRUE(br_future_message(NULL) != NULL);
  br_future_unref(NULL);
  br_future_set_cancel_hook(NULL, NULL, NULL);
  br_future *fs[2] = {tf_future(), NULL};
  br_result out[2];
  V_RC(br_gather(out, fs, 2), BR_EINVAL);
  V_RC(br_wait(fs, 2, BR_WAIT_ALL, BR_NEVER), BR_EINVAL);
  V_RC(br_wait(NULL, 1, BR_WAIT_ALL, BR_NEVER), BR_EINVAL);
  br_as_completed *it = NULL;
  V_RC(br_as_completed_new(&it, NULL, 3), BR_EINVAL);
  V_TRUE(it == NULL);
  V_RC(br_as_completed_new(NULL, fs, 1), BR_EINVAL);
  V_RC(br_future_new(NULL), BR_EINVAL);
  V_RC(br_as_completed_next(NULL, BR_NEVER), BR_EINVAL);
  br_as_completed_free(NULL);
  br_future_unref(fs[0]);
  br_results_free(NULL, 3);
  V_TRUE(br_strdupf(NULL) == NULL);
}

static void test_null_futures(void **state) {
  (void)state;
  isolated(c_null_futures, 20000);
}

/* --- sync, scopes, groups, loops: NULL everywhere -------------------------- */

static void *m_null_sync(void *arg) {
  (void)arg;
  int v = 0;
  void *it;
  T_RC(br_chan_send(NULL, &v), BR_EINVAL);
  T_RC(br_chan_recv(NULL, &v), BR_EINVAL);
  T_RC(br_chan_try_send(NULL, &v), BR_EINVAL);
  T_RC(br_chan_try_recv(NULL, &v), BR_EINVAL);
  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof v, 1);
  T_RC(br_chan_send(c, NULL), BR_EINVAL);
  T_RC(br_chan_recv(c, NULL), BR_EINVAL);
  T_OK(br_chan_free(c));
  br_chan *bad = NULL;
  T_RC(br_chan_new(&bad, 0, 0), BR_EINVAL);
#if !defined(BRAID_ASAN) && !defined(BRAID_TSAN) /* their malloc aborts on absurd sizes */
  T_TRUE(br_chan_new(&bad, 1, SIZE_MAX) < 0); /* absurd capacity: refused, no crash */
#endif
  T_RC(br_chan_new(&bad, SIZE_MAX, 2), BR_EINVAL);
  T_TRUE(bad == NULL);
  T_RC(br_chan_new(NULL, 1, 1), BR_EINVAL);
  T_RC(br_queue_new(NULL, 1), BR_EINVAL);
  T_RC(br_mutex_new(NULL), BR_EINVAL);
  T_RC(br_sem_new(NULL, 1), BR_EINVAL);
  T_RC(br_event_new(NULL), BR_EINVAL);
  T_RC(br_queue_put(NULL, NULL), BR_EINVAL);
  T_RC(br_queue_get(NULL, &it), BR_EINVAL);
  T_RC(br_queue_try_put(NULL, NULL), BR_EINVAL);
  T_RC(br_queue_try_get(NULL, &it), BR_EINVAL);
  T_RC(br_queue_task_done(NULL), BR_EINVAL);
  T_RC(br_queue_join(NULL), BR_EINVAL);
  T_EQ(br_queue_size(NULL), 0);
  br_queue *q = NULL;
  (void)br_queue_new(&q, 0);
  T_RC(br_queue_get(q, NULL), BR_EINVAL);
  T_OK(br_queue_free(q));
  T_OK(br_queue_free(NULL));
  T_RC(br_mutex_lock(NULL), BR_EINVAL);
  T_RC(br_mutex_trylock(NULL), BR_EINVAL);
  T_RC(br_mutex_unlock(NULL), BR_EINVAL);
  T_OK(br_mutex_free(NULL));
  T_RC(br_sem_acquire(NULL), BR_EINVAL);
  T_RC(br_sem_release(NULL), BR_EINVAL);
  T_OK(br_sem_free(NULL));
  br_sem *s = NULL;
  (void)br_sem_new(&s, UINT32_MAX);
  T_RC(br_sem_release(s), BR_EOVERFLOW);
  T_OK(br_sem_free(s));
  T_RC(br_event_wait(NULL), BR_EINVAL);
  br_event_set(NULL);
  br_event_clear(NULL);
  T_TRUE(!br_event_is_set(NULL));
  T_OK(br_event_free(NULL));
  br_scope sc;
  T_RC(br_scope_enter(NULL, BR_NEVER, false), BR_EINVAL);
  T_RC(br_scope_exit(NULL), BR_EINVAL);
  memset(&sc, 0, sizeof sc);
  T_RC(br_scope_exit(&sc), BR_EINVAL); /* never entered */
  br_scope_cancel(NULL);
  br_scope_cancel(&sc);
  T_RC(br_group_spawn(NULL, nothing, NULL, NULL), BR_EINVAL);
  T_RC(br_group_wait(NULL), BR_EINVAL);
  br_group_cancel(NULL);
  T_STR(br_group_message(NULL), "");
  br_group_free(NULL);
  br_group *g = NULL;
  (void)br_group_new(&g);
  T_RC(br_group_spawn(g, NULL, NULL, NULL), BR_EINVAL);
  T_OK(br_group_wait(g));
  br_group_free(g);
  T_RC(br_wait_fd(-1, BR_READABLE, BR_NEVER), BR_EBADF);
  T_RC(br_wait_fd(0, 0, BR_NEVER), BR_EINVAL);
  T_RC(br_wait_fd(0, BR_READABLE | 4, BR_NEVER), BR_EINVAL); /* POLLIN|POLLPRI-style bits */
  T_RC(br_call_soon(NULL, noop_cb, NULL), BR_EINVAL);
  T_RC(br_call_soon_threadsafe(NULL, noop_cb, NULL), BR_EINVAL);
  T_RC(br_loop_run(NULL), BR_EINVAL);
  br_loop_stop(NULL);
  T_RC(br_loop_free(br_loop_current()), BR_EBUSY);
  T_RC(br_loop_run(br_loop_current()), BR_EBUSY);
  T_RC(br_run(NULL, nothing, NULL), BR_EBUSY);
  return NULL;
}

static void c_null_sync(void) {
  run_checks(m_null_sync);
  V_RC(br_run(NULL, NULL, NULL), BR_EINVAL);
  V_OK(br_loop_free(NULL));
  V_RC(br_wait_fd(0, BR_READABLE, BR_NEVER), BR_ENOTTASK);
  br_fd_forget(3); /* no loop: nothing to do */
}

static void test_null_everywhere(void **state) {
  (void)state;
  isolated(c_null_sync, 30000);
}

/* Spawning while the loop is being freed (a cleanup that spawns) is refused
 * cleanly. */
static int spawn_during_free_rc = 1;

static void *spawns_in_cleanup(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  br_task *t;
  spawn_during_free_rc = br_spawn(&t, nothing, NULL, NULL);
  if (spawn_during_free_rc == 0) br_task_close(t);
  return NULL;
}

static void *stopper(void *arg) {
  (void)arg;
  br_loop_stop(br_loop_current());
  return NULL;
}

static void c_spawn_during_free(void) {
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  br_task *t;
  V_OK(br_loop_spawn(L, &t, spawns_in_cleanup, NULL, NULL));
  br_loop_spawn(L, NULL, stopper, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED});
  br_loop_run(L);
  V_OK(br_loop_free(L));
  V_TRUE(spawn_during_free_rc != 1);
}

static void test_spawn_during_free(void **state) {
  (void)state;
  isolated(c_spawn_during_free, 20000);
}

/* br_wait_fd on a descriptor that is not open: BR_EBADF (braid.h), on each
 * poller backend. */
static void *m_wait_fd_closed(void *arg) {
  (void)arg;
  int fd = 987;
  T_TRUE(fcntl(fd, F_GETFD) < 0); /* not open */
  T_RC(br_wait_fd(fd, BR_READABLE, br_deadline_ms(100)), BR_EBADF);
  T_RC(br_wait_fd(fd, BR_WRITABLE, br_deadline_ms(100)), BR_EBADF);
  return NULL;
}

static void c_wait_fd_epoll(void) {
  setenv("BRAID_BACKEND", "epoll", 1);
  run_checks(m_wait_fd_closed);
}

static void c_wait_fd_uring(void) {
  setenv("BRAID_BACKEND", "io_uring", 1);
  run_checks(m_wait_fd_closed);
}

static void test_wait_fd_not_open_epoll(void **state) {
  (void)state;
  isolated(c_wait_fd_epoll, 20000);
}

static void test_wait_fd_not_open_io_uring(void **state) {
  (void)state;
  isolated(c_wait_fd_uring, 20000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spawn_bad_input),
      cmocka_unit_test(test_spawn_from_other_thread),
      cmocka_unit_test(test_handles),
      cmocka_unit_test(test_gather_duplicate_handle),
      cmocka_unit_test(test_join_task_of_other_loop),
      cmocka_unit_test(test_wait_for_task_of_other_loop),
      cmocka_unit_test(test_gather_task_of_other_loop),
      cmocka_unit_test(test_cancel_from_plain_thread),
      cmocka_unit_test(test_detach_from_plain_thread),
      cmocka_unit_test(test_scope_misuse),
      cmocka_unit_test(test_refused_close_has_no_side_effect),
      cmocka_unit_test(test_wait_on_own_future),
      cmocka_unit_test(test_null_futures),
      cmocka_unit_test(test_null_everywhere),
      cmocka_unit_test(test_spawn_during_free),
      cmocka_unit_test(test_wait_fd_not_open_epoll),
      cmocka_unit_test(test_wait_fd_not_open_io_uring),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
