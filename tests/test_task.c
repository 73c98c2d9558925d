/* SPDX-License-Identifier: MIT */
/* test_task — tasks: spawn, join, results and errors with messages, names,
 * cancellation, close, detach and failure reports, wait_for, gather, and
 * compact (shared-stack) tasks doing the same mixed with normal ones. */
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
#include <unistd.h>

#include "test_util.h"
#include "core_test.h"

#include "core/core.h" /* br__task_get: which memory a handle names */

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* --- spawn / join -------------------------------------------------------- */

static int started;

static void *double_it(void *arg) {
  started++;
  return IP(PI(arg) * 2);
}

static void *m_spawn_join(void *arg) {
  (void)arg;
  started = 0;
  br_task *t;
  T_OK(br_spawn(&t, double_it, IP(21), NULL));
  T_TRUE(t != NULL);
  /* The task starts only when the spawner yields or blocks. */
  T_EQ(started, 0);
  T_TRUE(!br_task_done(t));
  void *r = NULL;
  T_OK(br_join(t, &r));
  T_EQ(started, 1);
  T_EQ(PI(r), 42);
  /* join with result == NULL is allowed */
  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_OK(br_join(t, NULL));
  return IP(7);
}

static void test_spawn_join(void **state) {
  (void)state;
  void *r = run_main(m_spawn_join, NULL);
  assert_int_equal(PI(r), 7);
}

static char order[64];
static int norder;

static void *append_id(void *arg) {
  order[norder++] = (char)('0' + PI(arg));
  return NULL;
}

static void *m_start_order(void *arg) {
  (void)arg;
  norder = 0;
  br_task *t[5];
  for (int i = 0; i < 5; i++) T_OK(br_spawn(&t[i], append_id, IP(i), NULL));
  T_OK(br_yield());
  order[norder] = 0;
  T_STR(order, "01234");
  for (int i = 0; i < 5; i++) {
    T_TRUE(br_task_done(t[i]));
    T_OK(br_join(t[i], NULL));
  }
  return NULL;
}

static void test_start_order(void **state) {
  (void)state;
  run_main(m_start_order, NULL);
}

static char yield_trace[64];
static int ntrace;

static void *yielder(void *arg) {
  for (int i = 0; i < 5; i++) {
    yield_trace[ntrace++] = *(const char *)arg;
    if (br_yield() != 0) return br_fail(BR_EIO, "yield failed");
  }
  return NULL;
}

static void *m_yield_interleaves(void *arg) {
  (void)arg;
  ntrace = 0;
  br_task *a, *b;
  T_OK(br_spawn(&a, yielder, "A", NULL));
  T_OK(br_spawn(&b, yielder, "B", NULL));
  T_OK(br_join(a, NULL));
  T_OK(br_join(b, NULL));
  yield_trace[ntrace] = 0;
  T_STR(yield_trace, "ABABABABAB");
  return NULL;
}

static void test_yield_interleaves(void **state) {
  (void)state;
  run_main(m_yield_interleaves, NULL);
}

/* --- names and ids ------------------------------------------------------- */

static void *report_own_name(void *arg) {
  char *buf = arg;
  snprintf(buf, 64, "%s", br_task_name(NULL));
  if (br_self() == NULL) return br_fail(BR_EIO, "br_self is NULL in a task");
  if (br_task_id(NULL) != br_task_id(br_self())) return br_fail(BR_EIO, "id mismatch");
  return NULL;
}

static void *m_names(void *arg) {
  (void)arg;
  T_STR(br_task_name(NULL), "main");
  T_STR(br_task_name(br_self()), "main");

  char seen[64];
  br_task *t;
  T_OK(br_spawn(&t, report_own_name, seen, NULL));
  char want[64];
  snprintf(want, sizeof want, "task-%llu", (unsigned long long)br_task_id(t));
  T_STR(br_task_name(t), want);
  T_OK(br_join(t, NULL));
  T_STR(seen, want);

  /* A custom name is copied at spawn. */
  char name[40] = "fetcher";
  T_OK(br_spawn(&t, report_own_name, seen, &(br_spawn_opts){.name = name}));
  strcpy(name, "changed");
  T_STR(br_task_name(t), "fetcher");
  T_OK(br_join(t, NULL));
  T_STR(seen, "fetcher");

  /* Long names are truncated to 31 bytes. */
  const char *longname = "abcdefghijklmnopqrstuvwxyz0123456789-very-long";
  T_OK(br_spawn(&t, report_own_name, seen, &(br_spawn_opts){.name = longname}));
  T_EQ(strlen(br_task_name(t)), 31);
  T_TRUE(strncmp(br_task_name(t), longname, 31) == 0);
  T_OK(br_join(t, NULL));

  /* A released handle reads "<released>" (as long as it can be detected). */
  T_OK(br_spawn(&t, report_own_name, seen, &(br_spawn_opts){.name = "gone"}));
  T_OK(br_join(t, NULL));
  T_STR(br_task_name(t), "<released>");
  return NULL;
}

static void test_names(void **state) {
  (void)state;
  run_main(m_names, NULL);
  /* Outside any task: never NULL. */
  assert_non_null(br_task_name(NULL));
  assert_null(br_self());
}

static void *nothing(void *arg) {
  (void)arg;
  return NULL;
}

static void *m_ids(void *arg) {
  (void)arg;
  enum { N = 100 };
  br_task *t[N];
  uint64_t prev = br_task_id(NULL);
  T_TRUE(prev != 0);
  for (int i = 0; i < N; i++) {
    T_OK(br_spawn(&t[i], nothing, NULL, NULL));
    uint64_t id = br_task_id(t[i]);
    T_TRUE(id > prev);
    prev = id;
  }
  for (int i = 0; i < N; i++) T_OK(br_join(t[i], NULL));
  return NULL;
}

static void test_ids_unique(void **state) {
  (void)state;
  run_main(m_ids, NULL);
}

/* --- failures with messages ---------------------------------------------- */

static void *fails_eio(void *arg) {
  return br_fail(BR_EIO, "reading %s", (const char *)arg);
}

static void *fails_twice(void *arg) {
  (void)arg;
  br_fail(BR_EIO, "first");
  return br_fail(BR_ENOENT, "second %d", 2);
}

static void *m_fail_message(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, fails_eio, "cfg.txt", NULL));
  br_future *f = br_task_future(t);
  T_TRUE(f != NULL);
  void *v = IP(1);
  T_RC(br_await(f, &v), BR_EIO);
  T_TRUE(br_task_done(t));
  T_EQ(br_future_error(f), BR_EIO);
  T_STR(br_future_message(f), "reading cfg.txt");
  v = IP(1);
  T_RC(br_join(t, &v), BR_EIO);
  T_TRUE(v == NULL);

  /* The last br_fail wins. */
  T_OK(br_spawn(&t, fails_twice, NULL, NULL));
  T_RC(br_await(br_task_future(t), NULL), BR_ENOENT);
  T_STR(br_future_message(br_task_future(t)), "second 2");
  T_RC(br_join(t, NULL), BR_ENOENT);

  /* A successful task's message is "". */
  T_OK(br_spawn(&t, double_it, IP(2), NULL));
  T_OK(br_await(br_task_future(t), NULL));
  T_STR(br_future_message(br_task_future(t)), "");
  T_OK(br_join(t, NULL));
  return NULL;
}

static void test_fail_message(void **state) {
  (void)state;
  run_main(m_fail_message, NULL);
  /* From a plain thread br_fail does nothing and returns NULL. */
  assert_null(br_fail(BR_EIO, "not a task"));
}

static void *m_main_fails(void *arg) {
  (void)arg;
  return br_fail(BR_ERANGE, "main gave up");
}

static void test_main_failure_is_br_run_code(void **state) {
  (void)state;
  run_main_rc(m_main_fails, NULL, BR_ERANGE);
}

/* --- handle errors ----------------------------------------------------- */

static void *m_handle_errors(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_OK(br_join(t, NULL));
  T_RC(br_join(t, NULL), BR_EHANDLE);
  T_RC(br_task_close(t), BR_EHANDLE);
  T_RC(br_detach(t), BR_EHANDLE);
  T_RC(br_wait_for(t, NULL, 10), BR_EHANDLE);
  T_RC(br_join(NULL, NULL), BR_EHANDLE);
  T_RC(br_cancel(NULL), BR_EHANDLE);
  T_RC(br_join(br_self(), NULL), BR_EDEADLK);
  T_RC(br_wait_for(br_self(), NULL, 10), BR_EDEADLK);
  T_RC(br_task_close(br_self()), BR_EDEADLK);

  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_OK(br_detach(t));
  T_RC(br_detach(t), BR_EHANDLE);
  T_OK(br_yield());
  return NULL;
}

static void test_handle_errors(void **state) {
  (void)state;
  run_main(m_handle_errors, NULL);
}

/* Joining with a task handle from a plain thread: BR_ENOTTASK. */
typedef struct {
  br_task *t;
  int join_rc, yield_rc, sleep_rc, wait_for_rc, spawn_rc, scope_rc, gather_rc;
  bool group_null;
  int group_rc;
} plain_calls;

static void *plain_thread(void *arg) {
  plain_calls *p = arg;
  p->join_rc = br_join(p->t, NULL);
  p->yield_rc = br_yield();
  p->sleep_rc = br_sleep_ms(1);
  p->wait_for_rc = br_wait_for(p->t, NULL, 1);
  p->spawn_rc = br_spawn(&(br_task *){NULL}, nothing, NULL, NULL);
  br_scope s;
  p->scope_rc = br_scope_enter(&s, BR_NEVER, false);
  br_result r[1];
  p->gather_rc = br_gather_tasks(r, &p->t, 1);
  br_group *g = (br_group *)&g;
  p->group_rc = br_group_new(&g);
  p->group_null = g == NULL;
  return NULL;
}

static void *m_task_only_from_thread(void *arg) {
  plain_calls *p = arg;
  T_OK(br_spawn(&p->t, double_it, IP(4), NULL));
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, plain_thread, p), 0);
  /* Blocking the loop thread briefly is fine here: nothing else runs. */
  pthread_join(th, NULL);
  void *r;
  T_OK(br_join(p->t, &r));
  T_EQ(PI(r), 8);
  return NULL;
}

static void test_task_only_calls_from_plain_thread(void **state) {
  (void)state;
  plain_calls p = {0};
  run_main(m_task_only_from_thread, &p);
  assert_int_equal(p.join_rc, BR_ENOTTASK);
  assert_int_equal(p.yield_rc, BR_ENOTTASK);
  assert_int_equal(p.sleep_rc, BR_ENOTTASK);
  assert_int_equal(p.wait_for_rc, BR_ENOTTASK);
  assert_int_equal(p.spawn_rc, BR_ENOTTASK);
  assert_int_equal(p.scope_rc, BR_ENOTTASK);
  assert_int_equal(p.gather_rc, BR_ENOTTASK);
  assert_true(p.group_null);
  assert_int_equal(p.group_rc, BR_ENOTTASK);
  /* And from the main thread with no loop at all. */
  assert_int_equal(br_yield(), BR_ENOTTASK);
  assert_int_equal(br_sleep_ms(1), BR_ENOTTASK);
  assert_int_equal(br_sleep_until(br_now()), BR_ENOTTASK);
  assert_int_equal(br_spawn(&(br_task *){NULL}, nothing, NULL, NULL), BR_ENOTTASK);
  assert_int_equal(br_cancelled(), 0);
  assert_null(br_loop_current());
}

/* --- cancellation -------------------------------------------------------- */

typedef struct {
  int first_rc;      /* what the blocking call returned */
  int later[4];      /* calls made after the cancel */
  bool cleanup;
  int64_t woke_ms;
} cancel_probe;

static void *cancellable_sleeper(void *arg) {
  cancel_probe *p = arg;
  int64_t t0 = br_now();
  p->first_rc = br_sleep_ms(10000);
  p->woke_ms = ms_since(t0);
  p->later[0] = br_sleep_ms(1);
  p->later[1] = br_yield();
  p->later[2] = br_cancelled();
  p->later[3] = br_await(br_task_future(br_self()), NULL); /* EDEADLK wins or ECANCELED */
  p->cleanup = true;
  return NULL;
}

static void *m_cancel_blocked(void *arg) {
  (void)arg;
  cancel_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, cancellable_sleeper, &p, &(br_spawn_opts){.flags = BR_SPAWN_OWN_STACK}));
  T_OK(br_sleep_ms(20));
  T_OK(br_cancel(t));
  T_OK(br_cancel(t)); /* twice is fine */
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_RC(p.first_rc, BR_ECANCELED);
  T_RANGE(p.woke_ms, 15, 1000);
  T_RC(p.later[0], BR_ECANCELED);
  T_RC(p.later[1], BR_ECANCELED);
  T_RC(p.later[2], BR_ECANCELED);
  T_TRUE(p.later[3] == BR_ECANCELED || p.later[3] == BR_EDEADLK);
  T_TRUE(p.cleanup);
  return NULL;
}

static void test_cancel_blocked_call(void **state) {
  (void)state;
  run_main(m_cancel_blocked, NULL);
}

static void *m_cancel_before_start(void *arg) {
  (void)arg;
  cancel_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, cancellable_sleeper, &p, NULL));
  T_OK(br_cancel(t));
  int64_t t0 = br_now();
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_RANGE(ms_since(t0), 0, 500);
  T_RC(p.first_rc, BR_ECANCELED);
  T_TRUE(p.cleanup);
  return NULL;
}

static void test_cancel_before_start(void **state) {
  (void)state;
  run_main(m_cancel_before_start, NULL);
}

static void *m_cancel_finished(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, double_it, IP(5), NULL));
  T_OK(br_yield());
  T_TRUE(br_task_done(t));
  T_OK(br_cancel(t));
  void *r;
  T_OK(br_join(t, &r));
  T_EQ(PI(r), 10);
  return NULL;
}

static void test_cancel_finished_task_is_noop(void **state) {
  (void)state;
  run_main(m_cancel_finished, NULL);
}

/* The task decides how to unwind: a failure it reports wins over the plain
 * cancellation. */
static void *fails_on_cancel(void *arg) {
  (void)arg;
  int rc = br_sleep_ms(10000);
  return br_fail(BR_EIO, "interrupted: %s", br_errname(rc));
}

static void *m_cancel_then_fail(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, fails_on_cancel, NULL, NULL));
  T_OK(br_yield());
  T_OK(br_cancel(t));
  T_RC(br_await(br_task_future(t), NULL), BR_EIO);
  T_STR(br_future_message(br_task_future(t)), "interrupted: ECANCELED");
  T_RC(br_join(t, NULL), BR_EIO);
  return NULL;
}

static void test_cancelled_task_may_fail_its_own_way(void **state) {
  (void)state;
  run_main(m_cancel_then_fail, NULL);
}

/* A joiner that is cancelled cancels its target and waits for it. */
typedef struct {
  br_task *target;
  int join_rc;
  cancel_probe probe;
} joiner_ctx;

static void *joiner(void *arg) {
  joiner_ctx *j = arg;
  j->join_rc = br_join(j->target, NULL);
  return NULL;
}

static void *m_joiner_cancelled(void *arg) {
  (void)arg;
  joiner_ctx j = {0};
  T_OK(br_spawn(&j.target, cancellable_sleeper, &j.probe, NULL));
  br_task *jt;
  T_OK(br_spawn(&jt, joiner, &j, NULL));
  T_OK(br_sleep_ms(10));
  T_OK(br_cancel(jt));
  T_RC(br_join(jt, NULL), BR_ECANCELED);
  T_RC(j.join_rc, BR_ECANCELED);
  T_RC(j.probe.first_rc, BR_ECANCELED);
  T_TRUE(j.probe.cleanup); /* the target unwound before the joiner returned */
  return NULL;
}

static void test_cancelled_joiner_cancels_target(void **state) {
  (void)state;
  run_main(m_joiner_cancelled, NULL);
}

/* --- close ----------------------------------------------------------------- */

static void *m_close(void *arg) {
  (void)arg;
  cancel_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, cancellable_sleeper, &p, NULL));
  T_OK(br_yield());
  int64_t t0 = br_now();
  T_RC(br_task_close(t), BR_ECANCELED);
  T_RANGE(ms_since(t0), 0, 500);
  T_TRUE(p.cleanup);
  T_RC(br_join(t, NULL), BR_EHANDLE);

  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_OK(br_yield());
  T_OK(br_task_close(t)); /* finished fine: its outcome, 0 */

  T_OK(br_spawn(&t, fails_eio, "x", NULL));
  T_OK(br_yield());
  T_RC(br_task_close(t), BR_EIO);

  /* Closing one that has not started yet. */
  memset(&p, 0, sizeof p);
  T_OK(br_spawn(&t, cancellable_sleeper, &p, NULL));
  T_RC(br_task_close(t), BR_ECANCELED);
  T_TRUE(p.cleanup);
  return NULL;
}

static void test_close_cancels_and_joins(void **state) {
  (void)state;
  run_main(m_close, NULL);
}

/* br_task_close from the loop's thread outside any task runs the loop
 * until the task has unwound. */
static void test_close_outside_task(void **state) {
  (void)state;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  assert_non_null(L);
  cancel_probe p = {0};
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, cancellable_sleeper, &p, NULL), 0);
  assert_int_equal(br_task_close(t), BR_ECANCELED);
  assert_true(p.cleanup);
  assert_int_equal(p.first_rc, BR_ECANCELED);

  /* A task that finished before the close keeps its outcome. */
  assert_int_equal(br_loop_spawn(L, &t, double_it, IP(3), NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  assert_true(br_task_done(t));
  assert_int_equal(br_task_close(t), 0);
  assert_int_equal(br_loop_free(L), 0);
  tf_assert_clean();
}

/* --- detach and failure reports ------------------------------------------- */

typedef struct {
  int calls;
  char name[64];
  int code;
  char msg[128];
  int64_t at;
} report_log;

static report_log rlog;

static void on_detached(br_task *t, int code, const char *msg, void *ud) {
  report_log *l = ud;
  l->calls++;
  snprintf(l->name, sizeof l->name, "%s", br_task_name(t));
  l->code = code;
  snprintf(l->msg, sizeof l->msg, "%s", msg ? msg : "(null)");
  l->at = br_now();
}

static int64_t failed_at;

static void *fails_later(void *arg) {
  int rc = br_sleep_ms(PI(arg));
  if (rc) return br_fail(rc, "sleep");
  failed_at = br_now();
  return br_fail(BR_EIO, "disk on fire (%d)", 451);
}

static void *m_detach(void *arg) {
  report_log *l = arg;
  br_task *t;
  /* Fails later, after detach: reported when it fails. */
  T_OK(br_spawn(&t, fails_later, IP(20), &(br_spawn_opts){.name = "worker-x"}));
  T_OK(br_detach(t));
  T_EQ(l->calls, 0);
  T_OK(br_sleep_ms(150));
  T_EQ(l->calls, 1);
  T_STR(l->name, "worker-x");
  T_RC(l->code, BR_EIO);
  T_STR(l->msg, "disk on fire (451)");
  T_RANGE((l->at - failed_at) / 1000000, 0, 20); /* at once, not at loop end */

  /* Already failed when detached: reported by br_detach itself. */
  T_OK(br_spawn(&t, fails_eio, "early", &(br_spawn_opts){.name = "early-bird"}));
  T_OK(br_yield());
  T_TRUE(br_task_done(t));
  T_EQ(l->calls, 1);
  T_OK(br_detach(t));
  T_EQ(l->calls, 2);
  T_STR(l->name, "early-bird");
  T_STR(l->msg, "reading early");

  /* Spawned detached: no handle at all. */
  T_OK(br_spawn(NULL, fails_later, IP(1), &(br_spawn_opts){.name = "born-free", .flags = BR_SPAWN_DETACHED}));
  T_OK(br_sleep_ms(50));
  T_EQ(l->calls, 3);
  T_STR(l->name, "born-free");

  /* A detached task that succeeds is not reported. */
  T_OK(br_spawn(NULL, double_it, IP(1), &(br_spawn_opts){.flags = BR_SPAWN_DETACHED}));
  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_OK(br_detach(t));
  T_OK(br_sleep_ms(10));
  T_EQ(l->calls, 3);
  return NULL;
}

static void test_detach_failure_reported_to_callback(void **state) {
  (void)state;
  memset(&rlog, 0, sizeof rlog);
  br_loop_opts o = {.on_detached_error = on_detached, .ud = &rlog};
  void *r = NULL;
  int rc = br_run_opts(&r, m_detach, &rlog, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
  assert_int_equal(rlog.calls, 3);
}

/* Cancellation is not a failure: a detached task that the runtime cancels
 * at teardown (br_run's end, br_loop_free) must not be reported as "failed"
 * (br_loop_free does not report cancelled unjoined handles either, and
 * groups do not count cancelled siblings). */
static void *sleeps_forever(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void *m_detach_then_leave(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, sleeps_forever, NULL, &(br_spawn_opts){.name = "background"}));
  T_OK(br_detach(t));
  T_OK(br_spawn(NULL, sleeps_forever, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED}));
  T_OK(br_yield());
  return NULL;
}

static void test_detached_cancelled_at_teardown_not_reported(void **state) {
  (void)state;
  memset(&rlog, 0, sizeof rlog);
  br_loop_opts o = {.on_detached_error = on_detached, .ud = &rlog};
  int rc = br_run_opts(NULL, m_detach_then_leave, NULL, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
  if (rlog.calls)
    fail_msg("%d cancelled detached task(s) reported as failed; last: '%s' %s: %s", rlog.calls, rlog.name,
             br_errname(rlog.code), rlog.msg);
}

static void *m_detach_stderr(void *arg) {
  (void)arg;
  br_task *t;
  if (br_spawn(&t, fails_later, IP(5), &(br_spawn_opts){.name = "doomed"}) != 0) return NULL;
  br_detach(t);
  br_sleep_ms(100);
  fprintf(stderr, "MARK-AFTER-SLEEP\n");
  fflush(stderr);
  return NULL;
}

static void child_detach_stderr(void *arg) {
  (void)arg;
  int rc = br_run(NULL, m_detach_stderr, NULL);
  fprintf(stderr, "br_run=%d\n", rc);
}

static void test_detach_failure_reported_on_stderr(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_detach_stderr, NULL, 20000, &r), 0);
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  const char *rep = strstr(r.err, "'doomed'");
  const char *msg = strstr(r.err, "disk on fire (451)");
  const char *mark = strstr(r.err, "MARK-AFTER-SLEEP");
  if (!rep || !msg || !mark || rep > mark || msg > mark || !strstr(r.err, "br_run=0"))
    fail_msg("unexpected stderr:\n%s", r.err);
  br_child_result_free(&r);
}

/* Failures nobody joined are reported when the loop is freed; cancelled and
 * successful ones are not. */
static void *forever(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void *stopper(void *arg) {
  (void)arg;
  br_loop_stop(br_loop_current());
  return NULL;
}

static void child_unjoined_failure(void *arg) {
  (void)arg;
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  if (!L) return;
  br_task *a, *b, *c;
  br_loop_spawn(L, &a, fails_eio, "nobody.txt", &(br_spawn_opts){.name = "forgotten"});
  br_loop_spawn(L, &b, double_it, IP(1), &(br_spawn_opts){.name = "fine-one"});
  br_loop_spawn(L, &c, forever, NULL, &(br_spawn_opts){.name = "sleepy-one"});
  /* Run until the first two are done, then free with c still asleep. */
  br_loop_spawn(L, NULL, stopper, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED});
  br_loop_run(L);
  fprintf(stderr, "FREEING\n");
  int rc = br_loop_free(L);
  fprintf(stderr, "free=%d\n", rc);
}

static void test_unjoined_failure_reported_at_free(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_unjoined_failure, NULL, 20000, &r), 0);
  if (!r.exited) fail_msg("child died (signal %d, timed out %d):\n%s", r.signo, r.timed_out, r.err);
  assert_int_equal(r.exit_code, 0);
  const char *freeing = strstr(r.err, "FREEING");
  const char *rep = strstr(r.err, "'forgotten'");
  if (!freeing || !rep || rep < freeing || !strstr(rep, "reading nobody.txt") ||
      strstr(r.err, "fine-one") || strstr(r.err, "sleepy-one") || !strstr(r.err, "free=0"))
    fail_msg("unexpected stderr:\n%s", r.err);
  br_child_result_free(&r);
}

static void *m_leaves_failure(void *arg) {
  (void)arg;
  br_task *t;
  br_spawn(&t, fails_eio, "left-behind", &(br_spawn_opts){.name = "orphan"});
  br_yield();
  return NULL; /* never joins t */
}

static void child_unjoined_in_br_run(void *arg) {
  (void)arg;
  fprintf(stderr, "br_run=%d\n", br_run(NULL, m_leaves_failure, NULL));
}

static void test_unjoined_failure_reported_by_br_run(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_unjoined_in_br_run, NULL, 20000, &r), 0);
  assert_true(r.exited);
  if (!strstr(r.err, "'orphan'") || !strstr(r.err, "reading left-behind") || !strstr(r.err, "br_run=0"))
    fail_msg("unexpected stderr:\n%s", r.err);
  br_child_result_free(&r);
}

/* br_run hands back main's code only, so main's failure message is reported
 * (once, through the log); a cancelled main and a failure without a message
 * (its code says all) are not, and br_run_result hands the message over. */
static void *m_fails_with_message(void *arg) {
  (void)arg;
  return br_fail(BR_EINVAL, "config file %s is missing", "app.toml");
}

static void *m_fails_bare(void *arg) {
  (void)arg;
  br_fail(BR_ERANGE, NULL);
  return NULL;
}

static void *m_cancelled(void *arg) {
  (void)arg;
  br_cancel(br_self());
  int rc = br_sleep_ms(1000);
  return rc ? br_fail(rc, "woken by the cancellation") : NULL;
}

static void child_main_failures(void *arg) {
  (void)arg;
  fprintf(stderr, "A=%d\n", br_run(NULL, m_fails_with_message, NULL));
  fprintf(stderr, "B=%d\n", br_run(NULL, m_fails_bare, NULL));
  fprintf(stderr, "C=%d\n", br_run(NULL, m_cancelled, NULL));
  /* br_run_result hands the message over instead. */
  br_result res;
  int rc = br_run_result(&res, m_fails_with_message, NULL, NULL);
  fprintf(stderr, "D=%d %d [%s]\n", rc, res.err, res.msg ? res.msg : "(none)");
  br_results_free(&res, 1);
  rc = br_run_result(&res, double_it, IP(21), NULL);
  fprintf(stderr, "E=%d %d %s\n", rc, (int)PI(res.value), res.msg ? res.msg : "(none)");
  br_results_free(&res, 1);
  fprintf(stderr, "F=%d\n", br_run_result(NULL, double_it, IP(1), NULL));
}

static void test_br_run_reports_main_failure(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_main_failures, NULL, 20000, &r), 0);
  assert_true(r.exited);
  char a[32], b[32], c[32];
  snprintf(a, sizeof a, "A=%d", BR_EINVAL);
  snprintf(b, sizeof b, "B=%d", BR_ERANGE);
  snprintf(c, sizeof c, "C=%d", BR_ECANCELED);
  const char *rep = strstr(r.err, "task 'main' failed: ");
  const char *pa = strstr(r.err, a), *pb = strstr(r.err, b), *pc = strstr(r.err, c);
  char d[96], e[32], f[32];
  snprintf(d, sizeof d, "D=%d %d [config file app.toml is missing]", BR_EINVAL, BR_EINVAL);
  snprintf(e, sizeof e, "E=0 42 (none)");
  snprintf(f, sizeof f, "F=%d", BR_EINVAL);
  /* One report, before A's line, with the message; nothing after it. */
  if (!rep || !strstr(rep, "config file app.toml is missing") || !pa || !pb || !pc ||
      rep > pa || strstr(rep + 1, "task 'main'") || strstr(r.err, "cancellation") ||
      !strstr(r.err, d) || !strstr(r.err, e) || !strstr(r.err, f))
    fail_msg("unexpected stderr:\n%s", r.err);
  br_child_result_free(&r);
}

/* --- wait_for ---------------------------------------------------------------- */

static void *sleep_then_value(void *arg) {
  int rc = br_sleep_ms(PI(arg));
  if (rc) return br_fail(rc, "sleep interrupted");
  return IP(99);
}

static void *m_wait_for(void *arg) {
  (void)arg;
  cancel_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, cancellable_sleeper, &p, NULL));
  void *r = IP(1);
  int64_t t0 = br_now();
  T_RC(br_wait_for(t, &r, 50), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 50, 1000);
  T_TRUE(r == NULL);
  T_RC(p.first_rc, BR_ECANCELED); /* target cancelled ... */
  T_TRUE(p.cleanup);              /* ... and its cleanup ran */
  T_RC(br_join(t, NULL), BR_EHANDLE); /* handle given back */

  T_OK(br_spawn(&t, sleep_then_value, IP(10), NULL));
  t0 = br_now();
  T_OK(br_wait_for(t, &r, 5000));
  T_EQ(PI(r), 99);
  T_RANGE(ms_since(t0), 10, 1000);

  T_OK(br_spawn(&t, fails_eio, "w", NULL));
  T_RC(br_wait_for(t, NULL, 5000), BR_EIO);

  /* Already finished: a zero timeout still collects it. */
  T_OK(br_spawn(&t, double_it, IP(4), NULL));
  T_OK(br_yield());
  T_OK(br_wait_for(t, &r, 0));
  T_EQ(PI(r), 8);
  return NULL;
}

static void test_wait_for(void **state) {
  (void)state;
  run_main(m_wait_for, NULL);
}

/* --- gather -------------------------------------------------------------- */

static void *gather_member(void *arg) {
  intptr_t i = PI(arg);
  int rc = br_sleep_ms(1000);
  if (rc) return br_fail(rc, "member %d interrupted", (int)i);
  if (i == 1) return br_fail(BR_EIO, "bad %d", (int)i);
  return IP((i + 1) * 10);
}

static void *m_gather_mixed(void *arg) {
  (void)arg;
  br_task *t[3];
  int64_t t0 = br_now();
  for (int i = 0; i < 3; i++) T_OK(br_spawn(&t[i], gather_member, IP(i), NULL));
  br_result out[3];
  memset(out, 0xab, sizeof out);
  T_RC(br_gather_tasks(out, t, 3), BR_EIO);
  int64_t el = ms_since(t0);
  T_RANGE(el, 1000, 1600); /* concurrently: about 1 s, not 3 */
  T_EQ(PI(out[0].value), 10);
  T_EQ(out[0].err, 0);
  T_TRUE(out[0].msg == NULL);
  T_RC(out[1].err, BR_EIO);
  T_TRUE(out[1].value == NULL);
  T_STR(out[1].msg, "bad 1");
  T_EQ(PI(out[2].value), 30);
  T_EQ(out[2].err, 0);
  T_TRUE(out[2].msg == NULL);
  br_results_free(out, 3);
  for (int i = 0; i < 3; i++) T_RC(br_join(t[i], NULL), BR_EHANDLE);

  /* All fine: 0; nothing: 0. */
  for (int i = 0; i < 3; i++) T_OK(br_spawn(&t[i], double_it, IP(i), NULL));
  T_OK(br_gather_tasks(out, t, 3));
  for (int i = 0; i < 3; i++) T_EQ(PI(out[i].value), 2 * i);
  br_results_free(out, 3);
  T_OK(br_gather_tasks(NULL, NULL, 0));

  /* A cancelled member shows up as BR_ECANCELED with a message. */
  cancel_probe p = {0};
  T_OK(br_spawn(&t[0], double_it, IP(1), NULL));
  T_OK(br_spawn(&t[1], cancellable_sleeper, &p, NULL));
  T_OK(br_yield());
  T_OK(br_cancel(t[1]));
  T_RC(br_gather_tasks(out, t, 2), BR_ECANCELED);
  T_EQ(out[0].err, 0);
  T_RC(out[1].err, BR_ECANCELED);
  T_TRUE(out[1].msg != NULL);
  br_results_free(out, 2);
  return NULL;
}

static void test_gather_tasks_mixed(void **state) {
  (void)state;
  run_main(m_gather_mixed, NULL);
}

typedef struct {
  cancel_probe p[3];
  int rc;
  bool all_clean_at_return;
} gather_ctx;

static void *gatherer(void *arg) {
  gather_ctx *g = arg;
  br_task *t[3];
  for (int i = 0; i < 3; i++)
    if (br_spawn(&t[i], cancellable_sleeper, &g->p[i], NULL)) return br_fail(BR_EIO, "spawn");
  br_result out[3];
  g->rc = br_gather_tasks(out, t, 3);
  g->all_clean_at_return = g->p[0].cleanup && g->p[1].cleanup && g->p[2].cleanup;
  br_results_free(out, 3);
  return NULL;
}

static void *m_gather_cancelled(void *arg) {
  (void)arg;
  gather_ctx g = {0};
  br_task *t;
  T_OK(br_spawn(&t, gatherer, &g, NULL));
  T_OK(br_sleep_ms(20));
  T_OK(br_cancel(t));
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_RC(g.rc, BR_ECANCELED);
  T_TRUE(g.all_clean_at_return);
  return NULL;
}

static void test_gather_tasks_caller_cancelled(void **state) {
  (void)state;
  run_main(m_gather_cancelled, NULL);
}

/* --- many tasks -------------------------------------------------------------- */

static void *m_many(void *arg) {
  (void)arg;
  long n = br_test_scaled(20000);
  br_task **t = calloc((size_t)n, sizeof *t);
  T_TRUE(t != NULL);
  for (long i = 0; i < n; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    int rc = br_spawn(&t[i], double_it, IP(i), &o);
    if (rc) {
      free(t);
      T_OK(rc);
    }
  }
  long long sum = 0;
  for (long i = 0; i < n; i++) {
    void *r;
    int rc = br_join(t[i], &r);
    if (rc) {
      free(t);
      T_OK(rc);
    }
    sum += PI(r);
  }
  free(t);
  T_EQ(sum, (long long)n * (n - 1));
  return NULL;
}

static void test_many_tasks(void **state) {
  (void)state;
  run_main(m_many, NULL);
}

/* --- compact tasks -------------------------------------------------------------- */

/* A compact task's locals must survive its suspensions while other compact
 * and normal tasks run on the shared stack. */
static void *stack_keeper(void *arg) {
  intptr_t seed = PI(arg);
  unsigned char buf[6000];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(seed * 31 + i * 7);
  volatile intptr_t local = seed;
  for (int round = 0; round < 50; round++) {
    int rc = (round % 5 == 0) ? br_sleep_ms(1) : br_yield();
    if (rc) return br_fail(rc, "suspend failed");
    for (size_t i = 0; i < sizeof buf; i += 97)
      if (buf[i] != (unsigned char)(seed * 31 + i * 7)) return br_fail(BR_EIO, "stack clobbered at %zu", i);
    if (local != seed) return br_fail(BR_EIO, "local clobbered");
  }
  for (size_t i = 0; i < sizeof buf; i++)
    if (buf[i] != (unsigned char)(seed * 31 + i * 7)) return br_fail(BR_EIO, "stack clobbered at %zu", i);
  return IP(seed);
}

static void *m_compact_mixed(void *arg) {
  (void)arg;
  enum { N = 24 };
  br_task *t[N];
  for (int i = 0; i < N; i++) {
    br_spawn_opts o = {.flags = (i % 3) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], stack_keeper, IP(i + 1), &o));
  }
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    T_OK(br_join(t[i], &r));
    T_EQ(PI(r), i + 1);
  }

  /* cancel, close, wait_for, failures and gather with compact tasks */
  br_spawn_opts c = {.flags = BR_SPAWN_COMPACT, .name = "compact-one"};
  cancel_probe p = {0};
  T_OK(br_spawn(&t[0], cancellable_sleeper, &p, &c));
  T_STR(br_task_name(t[0]), "compact-one");
  T_OK(br_sleep_ms(5));
  T_OK(br_cancel(t[0]));
  T_RC(br_join(t[0], NULL), BR_ECANCELED);
  T_TRUE(p.cleanup);
  T_RC(p.later[0], BR_ECANCELED);

  memset(&p, 0, sizeof p);
  T_OK(br_spawn(&t[0], cancellable_sleeper, &p, &c));
  T_RC(br_wait_for(t[0], NULL, 20), BR_ETIMEDOUT);
  T_TRUE(p.cleanup);

  memset(&p, 0, sizeof p);
  T_OK(br_spawn(&t[0], cancellable_sleeper, &p, &c));
  T_OK(br_yield());
  T_RC(br_task_close(t[0]), BR_ECANCELED);
  T_TRUE(p.cleanup);

  T_OK(br_spawn(&t[0], fails_eio, "compact", &c));
  T_RC(br_join(t[0], NULL), BR_EIO);

  br_result out[4];
  for (int i = 0; i < 4; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], i == 2 ? fails_eio : stack_keeper, i == 2 ? (void *)"g" : IP(i + 1), &o));
  }
  T_RC(br_gather_tasks(out, t, 4), BR_EIO);
  T_EQ(PI(out[0].value), 1);
  T_EQ(PI(out[1].value), 2);
  T_STR(out[2].msg, "reading g");
  T_EQ(PI(out[3].value), 4);
  br_results_free(out, 4);
  return NULL;
}

static void test_compact_mixed(void **state) {
  (void)state;
  run_main(m_compact_mixed, NULL);
}

static void *m_compact_loop_default(void *arg) {
  (void)arg;
  br_task *t[6];
  for (int i = 0; i < 6; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_OWN_STACK : 0};
    T_OK(br_spawn(&t[i], stack_keeper, IP(i + 100), &o));
  }
  for (int i = 0; i < 6; i++) {
    void *r;
    T_OK(br_join(t[i], &r));
    T_EQ(PI(r), i + 100);
  }
  return NULL;
}

static void test_compact_loop_option(void **state) {
  (void)state;
  br_loop_opts o = {.compact = true};
  int rc = br_run_opts(NULL, m_compact_loop_default, NULL, &o);
  tf_assert_clean();
  assert_int_equal(rc, 0);
}

/* --- handles that cannot lie ---------------------------------------------- */

static void *sleeps_then(void *arg) {
  br_sleep_ms(30);
  return arg;
}

/* After a join the handle is dead for every call. */
static void *m_stale_after_join(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, double_it, IP(4), &(br_spawn_opts){.name = "once"}));
  void *r;
  T_OK(br_join(t, &r));
  T_EQ(PI(r), 8);
  T_RC(br_join(t, NULL), BR_EHANDLE);
  br_result res;
  T_RC(br_join_result(t, &res), BR_EHANDLE);
  T_TRUE(res.msg == NULL && res.value == NULL);
  T_RC(br_wait_for(t, NULL, 10), BR_EHANDLE);
  T_RC(br_task_close(t), BR_EHANDLE);
  T_RC(br_detach(t), BR_EHANDLE);
  T_RC(br_cancel(t), BR_EHANDLE);
  T_TRUE(!br_task_done(t));
  T_EQ(br_task_id(t), 0);
  T_STR(br_task_name(t), "<released>");
  T_TRUE(br_task_future(t) == NULL);
  br_task_stats st;
  T_RC(br_task_get_stats(t, &st), BR_EHANDLE);
  br_task *ts[1] = {t};
  T_RC(br_gather_tasks(&res, ts, 1), BR_EHANDLE);
  /* Garbage that is not a handle at all. */
  int x;
  T_RC(br_join((br_task *)&x, NULL), BR_EHANDLE);
  T_RC(br_cancel((br_task *)(uintptr_t)0xfffffff1u), BR_EHANDLE);
  return NULL;
}

static void test_stale_handle_after_join(void **state) {
  (void)state;
  run_main(m_stale_after_join, NULL);
}

/* The task struct is recycled for the next spawn; the old handle must not
 * reach the new task. */
static void *m_stale_after_reuse(void *arg) {
  (void)arg;
  br_task *old;
  T_OK(br_spawn(&old, double_it, IP(1), NULL));
  struct br__task *mem = br__task_get(old);
  T_TRUE(mem != NULL);
  T_OK(br_join(old, NULL));
  br_task *fresh;
  T_OK(br_spawn(&fresh, sleeps_then, IP(77), &(br_spawn_opts){.name = "fresh"}));
  T_TRUE(br__task_get(fresh) == mem); /* the same memory: the case under test */
  T_TRUE(fresh != old);
  /* Every use of the old handle fails and leaves the new task alone. */
  T_RC(br_cancel(old), BR_EHANDLE);
  T_RC(br_join(old, NULL), BR_EHANDLE);
  T_RC(br_detach(old), BR_EHANDLE);
  T_RC(br_task_close(old), BR_EHANDLE);
  T_TRUE(br_task_future(old) == NULL);
  T_STR(br_task_name(old), "<released>");
  T_STR(br_task_name(fresh), "fresh");
  T_TRUE(!br_task_done(fresh));
  void *r;
  T_OK(br_join(fresh, &r)); /* not cancelled, not joined by the calls above */
  T_EQ(PI(r), 77);
  /* Many generations of the same memory: none of the old handles lives. */
  br_task *hs[64];
  for (int i = 0; i < 64; i++) {
    T_OK(br_spawn(&hs[i], double_it, IP(i), NULL));
    T_OK(br_join(hs[i], NULL));
  }
  for (int i = 0; i < 64; i++) T_RC(br_join(hs[i], NULL), BR_EHANDLE);
  return NULL;
}

static void test_stale_handle_after_reuse(void **state) {
  (void)state;
  run_main(m_stale_after_reuse, NULL);
}

/* A task's future held past br_loop_free stays readable (the task struct
 * outlives its loop); its handle is dead; dropping the future frees it
 * (ASan checks that nothing is read after free). */
static void *fails_io(void *arg) {
  (void)arg;
  return br_fail(BR_EIO, "reading %s", "disk 7");
}

static void *sleeps_long(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void quiet_log(br_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)msg;
  ++*(int *)ud;
}

static void test_future_outlives_loop(void **state) {
  (void)state;
  int logged = 0;
  br_set_log(quiet_log, &logged);
  br_loop *L = NULL;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  br_task *done_t, *pending_t;
  assert_int_equal(br_loop_spawn(L, &done_t, fails_io, NULL, &(br_spawn_opts){.name = "io"}), 0);
  assert_int_equal(br_loop_spawn(L, &pending_t, sleeps_long, NULL, NULL), 0);
  br_future *fd = br_future_ref(br_task_future(done_t));
  br_future *fp = br_future_ref(br_task_future(pending_t));
  assert_non_null(fd);
  assert_non_null(fp);
  /* Run until the first one is done; the second still sleeps. */
  assert_int_equal(br_task_close(done_t) == BR_EIO ? 0 : -1, 0);
  assert_true(!br_future_done(fp));
  assert_int_equal(br_loop_free(L), 0); /* cancels pending_t, releases its handle */
  br_set_log(NULL, NULL);
  assert_true(br_future_done(fd));
  assert_int_equal(br_future_error(fd), BR_EIO);
  assert_string_equal(br_future_message(fd), "reading disk 7");
  assert_true(br_future_done(fp));
  assert_int_equal(br_future_error(fp), BR_ECANCELED);
  /* The handles are given back: no call may use them. */
  assert_int_equal(br_detach(done_t), BR_EHANDLE);
  assert_int_equal(br_detach(pending_t), BR_EHANDLE);
  assert_int_equal(br_task_close(pending_t), BR_EHANDLE);
  br_future_unref(fd);
  br_future_unref(fp);
  /* Now the memory is gone: the handles read as released, without a read of
   * freed memory. */
  assert_string_equal(br_task_name(done_t), "<released>");
  assert_string_equal(br_task_name(pending_t), "<released>");
  assert_int_equal(br_task_id(pending_t), 0);
  assert_null(br_task_future(pending_t));
}

/* --- br_join_result --------------------------------------------------------- */

static void *m_join_result(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, fails_io, NULL, NULL));
  br_result r = {.msg = (char *)"garbage"};
  T_RC(br_join_result(t, &r), BR_EIO);
  T_EQ(r.err, BR_EIO);
  T_STR(r.msg, "reading disk 7");
  T_TRUE(r.value == NULL);
  br_results_free(&r, 1);
  T_TRUE(r.msg == NULL && r.err == 0);
  T_OK(br_spawn(&t, double_it, IP(21), NULL));
  T_OK(br_join_result(t, &r));
  T_EQ(PI(r.value), 42);
  T_TRUE(r.msg == NULL);
  br_results_free(&r, 1);
  /* Cancelled: the code and the message the runtime gave it. */
  T_OK(br_spawn(&t, sleeps_long, NULL, &(br_spawn_opts){.name = "sleepy"}));
  T_OK(br_yield());
  T_OK(br_cancel(t));
  T_RC(br_join_result(t, &r), BR_ECANCELED);
  T_TRUE(r.msg && strstr(r.msg, "sleepy"));
  br_results_free(&r, 1);
  T_RC(br_join_result(NULL, &r), BR_EHANDLE);
  T_OK(br_spawn(&t, double_it, IP(1), NULL));
  T_RC(br_join_result(t, NULL), BR_EINVAL);
  T_OK(br_join(t, NULL));
  return NULL;
}

static void test_join_result_message(void **state) {
  (void)state;
  run_main(m_join_result, NULL);
}

/* --- the log hook ----------------------------------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  int calls;
  br_log_level level;
  char msg[256];
} log_capture;

static void capture_log(br_log_level level, const char *msg, void *ud) {
  log_capture *c = ud;
  pthread_mutex_lock(&c->mu);
  if (!c->calls++) {
    c->level = level;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
  }
  pthread_mutex_unlock(&c->mu);
}

static void *m_detach_fails(void *arg) {
  (void)arg;
  T_OK(br_spawn(NULL, fails_io, NULL, &(br_spawn_opts){.name = "lost", .flags = BR_SPAWN_DETACHED}));
  T_OK(br_sleep_ms(10));
  return NULL;
}

static void child_default_log(void *arg) {
  (void)arg;
  br_set_log(capture_log, &(log_capture){.mu = PTHREAD_MUTEX_INITIALIZER});
  br_set_log(NULL, NULL); /* back to the default */
  int rc = br_run(NULL, m_detach_fails, NULL);
  fprintf(stderr, "br_run=%d\n", rc);
}

static void test_log_hook(void **state) {
  (void)state;
  log_capture c = {.mu = PTHREAD_MUTEX_INITIALIZER};
  br_set_log(capture_log, &c);
  run_main(m_detach_fails, NULL);
  br_set_log(NULL, NULL);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.level, BR_LOG_ERROR);
  assert_non_null(strstr(c.msg, "detached task 'lost' failed"));
  assert_non_null(strstr(c.msg, "reading disk 7"));
  assert_null(strstr(c.msg, "braid:")); /* the prefix belongs to the default sink */
  assert_null(strchr(c.msg, '\n'));
  /* The default: one "braid: ..." line on stderr. */
  br_child_result r;
  assert_int_equal(br_test_run_child(child_default_log, NULL, 20000, &r), 0);
  assert_true(r.exited);
  const char *line = strstr(r.err, "braid: detached task 'lost' failed");
  if (!line || !strstr(r.err, "br_run=0")) fail_msg("unexpected stderr:\n%s", r.err);
  br_child_result_free(&r);
}

/* --- version ------------------------------------------------------------------ */

static void test_version(void **state) {
  (void)state;
  assert_int_equal(BR_VERSION_MAJOR, 0);
  assert_int_equal(BR_VERSION_MINOR, 2);
  assert_int_equal(BR_VERSION_PATCH, 0);
  assert_int_equal(br_version(), (BR_VERSION_MAJOR << 16) | (BR_VERSION_MINOR << 8) | BR_VERSION_PATCH);
  assert_int_equal(br_version(), 0x000200);
  assert_string_equal(br_version_string(), "0.2.0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spawn_join),
      cmocka_unit_test(test_start_order),
      cmocka_unit_test(test_yield_interleaves),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_ids_unique),
      cmocka_unit_test(test_fail_message),
      cmocka_unit_test(test_main_failure_is_br_run_code),
      cmocka_unit_test(test_handle_errors),
      cmocka_unit_test(test_task_only_calls_from_plain_thread),
      cmocka_unit_test(test_cancel_blocked_call),
      cmocka_unit_test(test_cancel_before_start),
      cmocka_unit_test(test_cancel_finished_task_is_noop),
      cmocka_unit_test(test_cancelled_task_may_fail_its_own_way),
      cmocka_unit_test(test_cancelled_joiner_cancels_target),
      cmocka_unit_test(test_close_cancels_and_joins),
      cmocka_unit_test(test_close_outside_task),
      cmocka_unit_test(test_detach_failure_reported_to_callback),
      cmocka_unit_test(test_detach_failure_reported_on_stderr),
      cmocka_unit_test(test_detached_cancelled_at_teardown_not_reported),
      cmocka_unit_test(test_unjoined_failure_reported_at_free),
      cmocka_unit_test(test_unjoined_failure_reported_by_br_run),
      cmocka_unit_test(test_wait_for),
      cmocka_unit_test(test_gather_tasks_mixed),
      cmocka_unit_test(test_gather_tasks_caller_cancelled),
      cmocka_unit_test(test_many_tasks),
      cmocka_unit_test(test_compact_mixed),
      cmocka_unit_test(test_compact_loop_option),
      cmocka_unit_test(test_stale_handle_after_join),
      cmocka_unit_test(test_stale_handle_after_reuse),
      cmocka_unit_test(test_future_outlives_loop),
      cmocka_unit_test(test_join_result_message),
      cmocka_unit_test(test_log_hook),
      cmocka_unit_test(test_br_run_reports_main_failure),
      cmocka_unit_test(test_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
