/* SPDX-License-Identifier: MIT */
/* test_group — task groups (asyncio.TaskGroup / trio nurseries): the group
 * waits for all, the first failure cancels the siblings and is reported
 * with its message, cancelled siblings are not failures, a cancelled waiter
 * cancels and waits for the whole group. */
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

typedef struct {
  int delay_ms;
  int code;          /* 0: succeed */
  const char *msg;
  int sleep_rc;
  bool cleanup;
  bool done;
  int fail_on_cancel; /* if cancelled, fail with this code instead */
} child_spec;

static void *child(void *arg) {
  child_spec *c = arg;
  c->sleep_rc = br_sleep_ms(c->delay_ms);
  c->cleanup = true;
  c->done = true;
  if (c->sleep_rc) {
    if (c->fail_on_cancel) return br_fail(c->fail_on_cancel, "gave up after cancel");
    return NULL; /* unwinds quietly */
  }
  if (c->code) return br_fail(c->code, "%s", c->msg ? c->msg : "child failed");
  return IP(1);
}

static void *m_all_succeed(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  T_TRUE(g != NULL);
  child_spec c[5];
  memset(c, 0, sizeof c);
  int64_t t0 = br_now();
  for (int i = 0; i < 5; i++) {
    c[i].delay_ms = 10 + 5 * i;
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_group_spawn(g, child, &c[i], &o));
  }
  T_OK(br_group_wait(g));
  T_RANGE(ms_since(t0), 30, 600);
  for (int i = 0; i < 5; i++) T_TRUE(c[i].done && c[i].sleep_rc == 0);
  T_STR(br_group_message(g), "");
  T_RC(br_group_spawn(g, child, &c[0], NULL), BR_ESHUTDOWN); /* waited: closed */
  br_group_free(g);

  /* An empty group. */
  (void)br_group_new(&g);
  T_OK(br_group_wait(g));
  br_group_free(g);
  br_group_free(NULL);
  return NULL;
}

static void test_all_succeed(void **state) {
  (void)state;
  run_main(m_all_succeed, NULL);
}

static void *m_first_failure_cancels(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec a = {.delay_ms = 20, .code = BR_EIO, .msg = "A broke: 7"};
  child_spec b = {.delay_ms = 10000};
  child_spec c = {.delay_ms = 10000, .fail_on_cancel = BR_ECANCELED};
  child_spec d = {.delay_ms = 10000, .fail_on_cancel = BR_EPIPE}; /* still not the group's error */
  int64_t t0 = br_now();
  T_OK(br_group_spawn(g, child, &b, NULL));
  T_OK(br_group_spawn(g, child, &a, NULL));
  T_OK(br_group_spawn(g, child, &c, &(br_spawn_opts){.flags = BR_SPAWN_COMPACT}));
  T_OK(br_group_spawn(g, child, &d, NULL));
  T_RC(br_group_wait(g), BR_EIO);
  T_RANGE(ms_since(t0), 20, 1000);
  T_STR(br_group_message(g), "A broke: 7");
  T_TRUE(b.cleanup && c.cleanup && d.cleanup);
  T_RC(b.sleep_rc, BR_ECANCELED);
  T_RC(c.sleep_rc, BR_ECANCELED);
  T_RC(d.sleep_rc, BR_ECANCELED);
  br_group_free(g);
  return NULL;
}

static void test_first_failure_cancels_siblings(void **state) {
  (void)state;
  run_main(m_first_failure_cancels, NULL);
}

static void *m_first_of_two_failures(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec late = {.delay_ms = 40, .code = BR_EIO, .msg = "late"};
  child_spec early = {.delay_ms = 10, .code = BR_EPIPE, .msg = "early"};
  T_OK(br_group_spawn(g, child, &late, NULL));
  T_OK(br_group_spawn(g, child, &early, NULL));
  /* Spawning into a group that has already failed is refused. */
  T_OK(br_sleep_ms(25));
  child_spec x = {.delay_ms = 1};
  T_RC(br_group_spawn(g, child, &x, NULL), BR_ESHUTDOWN);
  T_RC(br_group_wait(g), BR_EPIPE);
  T_STR(br_group_message(g), "early");
  T_RC(late.sleep_rc, BR_ECANCELED);
  br_group_free(g);

  /* A failure without a message is reported with the code's text. */
  (void)br_group_new(&g);
  child_spec quiet = {.delay_ms = 1, .code = BR_ENOENT, .msg = ""};
  T_OK(br_group_spawn(g, child, &quiet, NULL));
  T_RC(br_group_wait(g), BR_ENOENT);
  T_TRUE(br_group_message(g) != NULL);
  br_group_free(g);
  return NULL;
}

static void test_first_of_two_failures_reported(void **state) {
  (void)state;
  run_main(m_first_of_two_failures, NULL);
}

/* br_group_cancel: the children are cancelled, which is not a failure. */
static void *m_group_cancel(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec c[3];
  memset(c, 0, sizeof c);
  for (int i = 0; i < 3; i++) {
    c[i].delay_ms = 10000;
    T_OK(br_group_spawn(g, child, &c[i], NULL));
  }
  T_OK(br_sleep_ms(5));
  br_group_cancel(g);
  int64_t t0 = br_now();
  int rc = br_group_wait(g);
  T_TRUE(rc == 0 || rc == BR_ECANCELED);
  T_RANGE(ms_since(t0), 0, 500);
  for (int i = 0; i < 3; i++) {
    T_TRUE(c[i].cleanup);
    T_RC(c[i].sleep_rc, BR_ECANCELED);
  }
  br_group_free(g);
  return NULL;
}

static void test_group_cancel(void **state) {
  (void)state;
  run_main(m_group_cancel, NULL);
}

/* The waiter is cancelled: the group's tasks are cancelled and waited for. */
typedef struct {
  child_spec c[3];
  int wait_rc;
  bool all_clean_at_return;
} waiter_ctx;

static void *group_waiter(void *arg) {
  waiter_ctx *w = arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  if (!g) return br_fail(BR_ENOMEM, "group");
  for (int i = 0; i < 3; i++) {
    w->c[i].delay_ms = 10000;
    br_group_spawn(g, child, &w->c[i], (i == 1) ? &(br_spawn_opts){.flags = BR_SPAWN_COMPACT} : NULL);
  }
  w->wait_rc = br_group_wait(g);
  w->all_clean_at_return = w->c[0].cleanup && w->c[1].cleanup && w->c[2].cleanup;
  br_group_free(g);
  return NULL;
}

static void *m_waiter_cancelled(void *arg) {
  (void)arg;
  waiter_ctx w;
  memset(&w, 0, sizeof w);
  br_task *t;
  T_OK(br_spawn(&t, group_waiter, &w, NULL));
  T_OK(br_sleep_ms(10));
  T_OK(br_cancel(t));
  int64_t t0 = br_now();
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_RANGE(ms_since(t0), 0, 500);
  T_RC(w.wait_rc, BR_ECANCELED);
  T_TRUE(w.all_clean_at_return);
  for (int i = 0; i < 3; i++) T_RC(w.c[i].sleep_rc, BR_ECANCELED);
  return NULL;
}

static void test_waiter_cancelled(void **state) {
  (void)state;
  run_main(m_waiter_cancelled, NULL);
}

/* br_group_free with children still running cancels and waits for them. */
static void *m_free_running(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec c[2] = {{.delay_ms = 10000}, {.delay_ms = 10000}};
  T_OK(br_group_spawn(g, child, &c[0], NULL));
  T_OK(br_group_spawn(g, child, &c[1], &(br_spawn_opts){.flags = BR_SPAWN_DETACHED})); /* DETACHED ignored */
  T_OK(br_yield());
  br_group_free(g);
  T_TRUE(c[0].cleanup && c[1].cleanup);
  return NULL;
}

static void test_free_cancels_and_waits(void **state) {
  (void)state;
  run_main(m_free_running, NULL);
}

/* Children may start siblings; a child waiting for its own group deadlocks. */
typedef struct {
  br_group *g;
  child_spec sib;
  int self_wait_rc;
  int spawn_rc;
} sib_ctx;

static void *spawns_sibling(void *arg) {
  sib_ctx *s = arg;
  s->self_wait_rc = br_group_wait(s->g);
  s->sib.delay_ms = 30;
  s->spawn_rc = br_group_spawn(s->g, child, &s->sib, NULL);
  return NULL;
}

static void *m_siblings(void *arg) {
  (void)arg;
  sib_ctx s;
  memset(&s, 0, sizeof s);
  (void)br_group_new(&s.g);
  T_OK(br_group_spawn(s.g, spawns_sibling, &s, NULL));
  int64_t t0 = br_now();
  T_OK(br_group_wait(s.g));
  T_RC(s.self_wait_rc, BR_EDEADLK);
  T_OK(s.spawn_rc);
  T_TRUE(s.sib.done);
  T_RANGE(ms_since(t0), 30, 600);
  br_group_free(s.g);
  return NULL;
}

static void test_children_spawn_siblings(void **state) {
  (void)state;
  run_main(m_siblings, NULL);
}

/* Nested groups: an inner failure surfaces through the outer group. */
static void *inner_group(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec ok = {.delay_ms = 10000};
  child_spec bad = {.delay_ms = 5, .code = BR_ECONNREFUSED, .msg = "db down"};
  br_group_spawn(g, child, &ok, NULL);
  br_group_spawn(g, child, &bad, NULL);
  int rc = br_group_wait(g);
  char msg[64];
  snprintf(msg, sizeof msg, "%s", br_group_message(g));
  br_group_free(g);
  if (rc) return br_fail(rc, "inner: %s", msg);
  return NULL;
}

static void *m_nested(void *arg) {
  (void)arg;
  br_group *g = NULL;
  (void)br_group_new(&g);
  child_spec slow = {.delay_ms = 10000};
  T_OK(br_group_spawn(g, child, &slow, NULL));
  T_OK(br_group_spawn(g, inner_group, NULL, &(br_spawn_opts){.flags = BR_SPAWN_COMPACT}));
  T_RC(br_group_wait(g), BR_ECONNREFUSED);
  T_STR(br_group_message(g), "inner: db down");
  T_TRUE(slow.cleanup);
  br_group_free(g);
  return NULL;
}

static void test_nested_groups(void **state) {
  (void)state;
  run_main(m_nested, NULL);
}

/* Many children, one fails: every other one is cancelled. */
static void *m_many(void *arg) {
  (void)arg;
  long n = br_test_scaled(5000);
  child_spec *c = calloc((size_t)n, sizeof *c);
  T_TRUE(c != NULL);
  br_group *g = NULL;
  (void)br_group_new(&g);
  for (long i = 0; i < n; i++) {
    c[i].delay_ms = (i == n / 2) ? 20 : 10000;
    if (i == n / 2) {
      c[i].code = BR_EIO;
      c[i].msg = "the one";
    }
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_group_spawn(g, child, &c[i], &o));
  }
  T_RC(br_group_wait(g), BR_EIO);
  T_STR(br_group_message(g), "the one");
  long not_cancelled = 0;
  for (long i = 0; i < n; i++)
    if (i != n / 2 && (c[i].sleep_rc != BR_ECANCELED || !c[i].cleanup)) not_cancelled++;
  br_group_free(g);
  free(c);
  T_EQ(not_cancelled, 0);
  return NULL;
}

static void test_many_children_one_fails(void **state) {
  (void)state;
  run_main(m_many, NULL);
}

/* From a plain thread: no group, no waiting. */
typedef struct {
  br_group *g;
  int wait_rc;
} plain_ctx;

static void *plain_group_calls(void *arg) {
  plain_ctx *p = arg;
  p->wait_rc = br_group_wait(p->g);
  return NULL;
}

static void *m_plain_thread(void *arg) {
  plain_ctx *p = arg;
  (void)br_group_new(&p->g);
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, plain_group_calls, p), 0);
  pthread_join(th, NULL);
  T_OK(br_group_wait(p->g));
  br_group_free(p->g);
  T_RC(br_group_wait(NULL), BR_EINVAL);
  T_RC(br_group_spawn(NULL, child, NULL, NULL), BR_EINVAL);
  return NULL;
}

static void test_plain_thread(void **state) {
  (void)state;
  plain_ctx p = {0};
  run_main(m_plain_thread, &p);
  assert_int_equal(p.wait_rc, BR_ENOTTASK);
  /* Outside a task: BR_ENOTTASK, *out cleared. */
  br_group *g = (br_group *)&g;
  assert_int_equal(br_group_new(&g), BR_ENOTTASK);
  assert_null(g);
  assert_int_equal(br_group_new(NULL), BR_EINVAL);
}

/* br_group_free refuses what would deadlock or cross threads, and changes
 * nothing when it refuses. */
typedef struct {
  br_group *g;
  int self_free_rc, thread_free_rc;
} free_ctx;

static void *frees_own_group(void *arg) {
  free_ctx *f = arg;
  f->self_free_rc = br_group_free(f->g);
  return NULL;
}

static void *free_from_thread(void *arg) {
  free_ctx *f = arg;
  f->thread_free_rc = br_group_free(f->g);
  return NULL;
}

static void *m_free_refusals(void *arg) {
  (void)arg;
  free_ctx f = {0};
  T_OK(br_group_new(&f.g));
  T_OK(br_group_spawn(f.g, frees_own_group, &f, NULL));
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, free_from_thread, &f), 0);
  pthread_join(th, NULL);
  T_OK(br_group_wait(f.g));
  T_RC(f.self_free_rc, BR_EDEADLK);
  T_RC(f.thread_free_rc, BR_EPERM);
  T_OK(br_group_free(f.g)); /* still intact: freed once, here */
  T_OK(br_group_free(NULL));
  return NULL;
}

static void test_free_refusals(void **state) {
  (void)state;
  run_main(m_free_refusals, NULL);
}

/* One task waits for a group at a time. A second waiter (another task of
 * the loop) is told BR_EBUSY, and so is a br_group_free meanwhile: taking
 * the first waiter's place would leave it parked for ever, and freeing the
 * group would free what it reads when it wakes. A task of another loop (on
 * another thread) is refused with BR_EPERM: the children would wake it
 * from the wrong thread. */
typedef struct {
  br_group *g;
  int rc;
} second_ctx;

static void *second_waiter(void *arg) {
  second_ctx *w = arg;
  w->rc = br_group_wait(w->g);
  return NULL;
}

static void *foreign_loop_main(void *arg) {
  return second_waiter(arg);
}

static void *foreign_loop_thread(void *arg) {
  second_ctx *w = arg;
  int rc = br_run(NULL, foreign_loop_main, w);
  return rc ? IP(rc) : NULL;
}

static void *m_second_waiter(void *arg) {
  (void)arg;
  child_spec c = {.delay_ms = 20};
  second_ctx w = {.rc = 1};
  T_OK(br_group_new(&w.g));
  T_OK(br_group_spawn(w.g, child, &c, NULL));
  br_task *first;
  T_OK(br_spawn(&first, second_waiter, &w, NULL));
  T_OK(br_yield()); /* the first waiter parks in br_group_wait */
  T_RC(br_group_wait(w.g), BR_EBUSY);
  T_RC(br_group_free(w.g), BR_EBUSY);
  second_ctx fw = {.g = w.g, .rc = 1};
  pthread_t th;
  T_EQ(pthread_create(&th, NULL, foreign_loop_thread, &fw), 0);
  void *trc;
  pthread_join(th, &trc);
  T_TRUE(trc == NULL);
  T_RC(fw.rc, BR_EPERM);
  T_OK(br_join(first, NULL));
  T_OK(w.rc);
  T_TRUE(c.done);
  T_OK(br_group_free(w.g));
  return NULL;
}

static void c_second_waiter(void) { run_main(m_second_waiter, NULL); }

static void test_one_waiter_at_a_time(void **state) {
  (void)state;
  isolated(c_second_waiter, 20000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_all_succeed),
      cmocka_unit_test(test_first_failure_cancels_siblings),
      cmocka_unit_test(test_first_of_two_failures_reported),
      cmocka_unit_test(test_group_cancel),
      cmocka_unit_test(test_waiter_cancelled),
      cmocka_unit_test(test_free_cancels_and_waits),
      cmocka_unit_test(test_children_spawn_siblings),
      cmocka_unit_test(test_nested_groups),
      cmocka_unit_test(test_many_children_one_fails),
      cmocka_unit_test(test_plain_thread),
      cmocka_unit_test(test_free_refusals),
      cmocka_unit_test(test_one_waiter_at_a_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
