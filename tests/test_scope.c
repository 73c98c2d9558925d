/* SPDX-License-Identifier: MIT */
/* test_scope — cancel scopes and deadlines (trio's move_on_after /
 * fail_after): expiry, nesting, shields against outer cancellation and
 * deadlines, br_scope_cancel from another task, scopes over every kind of
 * blocking call, and scopes in compact tasks. */
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

static void busy_ms(int ms) {
  int64_t end = br_now() + (int64_t)ms * 1000000;
  while (br_now() < end) {
  }
}

/* --- move_on_after / fail_after ------------------------------------------- */

static void *m_move_on_after(void *arg) {
  (void)arg;
  br_scope s;
  int64_t t0 = br_now();
  T_OK(br_scope_enter(&s, br_deadline_ms(50), false));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  int64_t el = ms_since(t0);
  T_RANGE(el, 50, 600);
  /* Once expired, every blocking call in the scope fails at once. */
  int64_t t1 = br_now();
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RC(br_yield(), BR_ETIMEDOUT);
  T_RC(br_cancelled(), BR_ETIMEDOUT);
  T_RANGE(ms_since(t1), 0, 100);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT); /* move_on_after: ignore it */
  /* Outside the scope all is normal again. */
  T_OK(br_cancelled());
  T_OK(br_sleep_ms(5));
  T_OK(br_yield());

  /* Not expired: exit says 0. */
  T_OK(br_scope_enter(&s, br_deadline_ms(2000), false));
  T_OK(br_sleep_ms(5));
  T_OK(br_scope_exit(&s));
  /* No deadline at all. */
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  T_OK(br_sleep_ms(1));
  T_OK(br_scope_exit(&s));

  /* The deadline passes during CPU work with no blocking call: exit still
   * reports it (fail_after must fail). */
  T_OK(br_scope_enter(&s, br_deadline_ms(10), false));
  busy_ms(20);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);

  /* A deadline in the past: the first blocking call fails at once. */
  T_OK(br_scope_enter(&s, br_now() - 1, false));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RC(br_scope_exit(&s), BR_ETIMEDOUT);
  return NULL;
}

static void test_move_on_after(void **state) {
  (void)state;
  run_main(m_move_on_after, NULL);
}

static void *fail_after_body(void *arg) {
  (void)arg;
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(30), false);
  br_sleep_ms(1000);
  int rc = br_scope_exit(&s);
  if (rc) return br_fail(rc, "took too long");
  return IP(1);
}

static void *m_fail_after(void *arg) {
  (void)arg;
  br_task *t;
  T_OK(br_spawn(&t, fail_after_body, NULL, NULL));
  int64_t t0 = br_now();
  T_RC(br_join(t, NULL), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 30, 600);
  return NULL;
}

static void test_fail_after(void **state) {
  (void)state;
  run_main(m_fail_after, NULL);
}

/* --- nesting ------------------------------------------------------------- */

static void *m_nested(void *arg) {
  (void)arg;
  br_scope outer, inner;
  /* Outer deadline first. */
  int64_t t0 = br_now();
  T_OK(br_scope_enter(&outer, br_deadline_ms(50), false));
  T_OK(br_scope_enter(&inner, br_deadline_ms(300), false));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 50, 250);
  T_OK(br_scope_exit(&inner)); /* its own deadline has not passed */
  T_RC(br_scope_exit(&outer), BR_ETIMEDOUT);

  /* Inner deadline first: after it, the outer one still governs. */
  t0 = br_now();
  T_OK(br_scope_enter(&outer, br_deadline_ms(150), false));
  T_OK(br_scope_enter(&inner, br_deadline_ms(40), false));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 40, 140);
  T_RC(br_scope_exit(&inner), BR_ETIMEDOUT);
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 150, 700);
  T_RC(br_scope_exit(&outer), BR_ETIMEDOUT);

  /* Out of order and misuse. */
  T_OK(br_scope_enter(&outer, BR_NEVER, false));
  T_OK(br_scope_enter(&inner, BR_NEVER, false));
  T_RC(br_scope_exit(&outer), BR_EINVAL);
  T_OK(br_scope_exit(&inner));
  T_OK(br_scope_exit(&outer));
  T_RC(br_scope_exit(&outer), BR_EINVAL); /* twice */
  T_RC(br_scope_exit(NULL), BR_EINVAL);
  T_RC(br_scope_enter(NULL, BR_NEVER, false), BR_EINVAL);
  return NULL;
}

static void test_nested_scopes(void **state) {
  (void)state;
  run_main(m_nested, NULL);
  br_scope s;
  assert_int_equal(br_scope_enter(&s, BR_NEVER, false), BR_ENOTTASK);
}

/* --- shields ----------------------------------------------------------- */

typedef struct {
  int shielded_rc, after_rc, cancelled_inside, exit_rc;
  int64_t shielded_ms;
  int64_t shield_end; /* br_now() when the shielded sleep returned */
  br_scope *scope; /* published for br_scope_cancel */
  int scope_rc, scope_exit_rc, after_scope_rc;
} shield_probe;

static void *shielded_cleanup(void *arg) {
  shield_probe *p = arg;
  br_scope sh;
  br_scope_enter(&sh, BR_NEVER, true);
  int64_t t0 = br_now();
  p->shielded_rc = br_sleep_ms(100);
  p->shielded_ms = ms_since(t0);
  p->shield_end = br_now();
  p->cancelled_inside = br_cancelled();
  p->exit_rc = br_scope_exit(&sh);
  p->after_rc = br_sleep_ms(1000);
  return NULL;
}

static void *m_shield_hides_cancel(void *arg) {
  (void)arg;
  shield_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, shielded_cleanup, &p, NULL));
  T_OK(br_yield()); /* the task runs first: it enters its shield and parks */
  int64_t cancelled_at = br_now();
  T_OK(br_cancel(t));
  T_RC(br_join(t, NULL), BR_ECANCELED);
  int64_t joined_at = br_now();
  T_TRUE(cancelled_at < p.shield_end); /* the cancel came while it was shielded */
  T_OK(p.shielded_rc);                 /* ... and did not cut the shielded sleep */
  T_RANGE(p.shielded_ms, 100, 600);
  T_OK(p.cancelled_inside);
  T_OK(p.exit_rc);
  T_RC(p.after_rc, BR_ECANCELED); /* seen as soon as the shield is gone */
  T_RANGE((joined_at - p.shield_end) / 1000000, 0, 600);

  /* Cancelled before it even entered the shield: the shield still holds. */
  memset(&p, 0, sizeof p);
  T_OK(br_spawn(&t, shielded_cleanup, &p, NULL));
  T_OK(br_cancel(t));
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_OK(p.shielded_rc);
  T_RANGE(p.shielded_ms, 100, 600);
  T_RC(p.after_rc, BR_ECANCELED);
  return NULL;
}

static void test_shield_hides_outer_cancel(void **state) {
  (void)state;
  run_main(m_shield_hides_cancel, NULL);
}

static void *m_shield_hides_deadline(void *arg) {
  (void)arg;
  br_scope outer, sh;
  int64_t t0 = br_now();
  T_OK(br_scope_enter(&outer, br_deadline_ms(30), false));
  T_OK(br_scope_enter(&sh, BR_NEVER, true));
  T_OK(br_sleep_ms(80));
  T_RANGE(ms_since(t0), 80, 600);
  T_OK(br_scope_exit(&sh));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT); /* the outer deadline, at once */
  T_RANGE(ms_since(t0), 80, 700);
  T_RC(br_scope_exit(&outer), BR_ETIMEDOUT);

  /* A shield's own deadline still applies. */
  t0 = br_now();
  T_OK(br_scope_enter(&sh, br_deadline_ms(30), true));
  T_RC(br_sleep_ms(1000), BR_ETIMEDOUT);
  T_RANGE(ms_since(t0), 30, 600);
  T_RC(br_scope_exit(&sh), BR_ETIMEDOUT);
  return NULL;
}

static void test_shield_hides_outer_deadline(void **state) {
  (void)state;
  run_main(m_shield_hides_deadline, NULL);
}

/* --- br_scope_cancel ------------------------------------------------------ */

static void *scoped_sleeper(void *arg) {
  shield_probe *p = arg;
  br_scope s;
  br_scope_enter(&s, BR_NEVER, false);
  p->scope = &s;
  p->scope_rc = br_sleep_ms(10000);
  p->scope_exit_rc = br_scope_exit(&s);
  p->scope = NULL;
  p->after_scope_rc = br_sleep_ms(1); /* the task itself is not cancelled */
  return IP(5);
}

static void *m_scope_cancel_other(void *arg) {
  (void)arg;
  shield_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, scoped_sleeper, &p, NULL));
  T_OK(br_sleep_ms(10));
  T_TRUE(p.scope != NULL);
  int64_t t0 = br_now();
  br_scope_cancel(p.scope);
  void *r = NULL;
  T_OK(br_join(t, &r));
  T_RANGE(ms_since(t0), 0, 500);
  T_EQ(PI(r), 5);
  T_RC(p.scope_rc, BR_ECANCELED);
  T_RC(p.scope_exit_rc, BR_ECANCELED);
  T_OK(p.after_scope_rc);
  return NULL;
}

static void test_scope_cancel_from_other_task(void **state) {
  (void)state;
  run_main(m_scope_cancel_other, NULL);
}

typedef struct {
  br_scope *outer;
  int inner_rc, inner_exit, outer_exit;
} outer_probe;

static void *inner_in_outer(void *arg) {
  outer_probe *p = arg;
  br_scope outer, inner;
  br_scope_enter(&outer, BR_NEVER, false);
  p->outer = &outer;
  br_scope_enter(&inner, BR_NEVER, false);
  p->inner_rc = br_sleep_ms(10000);
  p->inner_exit = br_scope_exit(&inner);
  p->outer = NULL;
  p->outer_exit = br_scope_exit(&outer);
  return NULL;
}

static void *m_scope_cancel_self_and_outer(void *arg) {
  (void)arg;
  /* Cancelling one's own scope: the next blocking call fails at once. */
  br_scope s;
  T_OK(br_scope_enter(&s, BR_NEVER, false));
  br_scope_cancel(&s);
  int64_t t0 = br_now();
  T_RC(br_sleep_ms(1000), BR_ECANCELED);
  T_RANGE(ms_since(t0), 0, 100);
  T_RC(br_scope_exit(&s), BR_ECANCELED);
  T_OK(br_sleep_ms(1));

  /* Cancelling an outer scope reaches a call inside an inner one. */
  outer_probe p = {0};
  br_task *t;
  T_OK(br_spawn(&t, inner_in_outer, &p, NULL));
  T_OK(br_sleep_ms(5));
  T_TRUE(p.outer != NULL);
  br_scope_cancel(p.outer);
  T_OK(br_join(t, NULL));
  T_RC(p.inner_rc, BR_ECANCELED);
  T_OK(p.inner_exit);
  T_RC(p.outer_exit, BR_ECANCELED);
  br_scope_cancel(NULL); /* harmless */
  return NULL;
}

static void test_scope_cancel_self_and_outer(void **state) {
  (void)state;
  run_main(m_scope_cancel_self_and_outer, NULL);
}

/* --- scopes over every blocking call ---------------------------------------- */

static void *forever(void *arg) {
  int *cleanup = arg;
  br_sleep_ms(100000);
  *cleanup = 1;
  return NULL;
}

static void *m_scope_over_calls(void *arg) {
  (void)arg;
  br_scope s;
  int64_t t0;
#define EXPECT_TIMEOUT(call)                                       \
  do {                                                             \
    t0 = br_now();                                                 \
    T_OK(br_scope_enter(&s, br_deadline_ms(20), false));           \
    T_RC(call, BR_ETIMEDOUT);                                      \
    T_RANGE(ms_since(t0), 20, 600);                                \
    T_RC(br_scope_exit(&s), BR_ETIMEDOUT);                         \
  } while (0)

  br_future *f = NULL;
  (void)br_future_new(&f);
  EXPECT_TIMEOUT(br_await(f, NULL));
  br_future_unref(f);

  br_chan *c = NULL;
  (void)br_chan_new(&c, sizeof(int), 0);
  int v = 1;
  EXPECT_TIMEOUT(br_chan_recv(c, &v));
  EXPECT_TIMEOUT(br_chan_send(c, &v));
  T_OK(br_chan_free(c));

  br_queue *q = NULL;
  (void)br_queue_new(&q, 1);
  void *item;
  EXPECT_TIMEOUT(br_queue_get(q, &item));
  T_OK(br_queue_put(q, NULL));
  EXPECT_TIMEOUT(br_queue_put(q, NULL));
  EXPECT_TIMEOUT(br_queue_join(q));
  T_OK(br_queue_get(q, &item));
  T_OK(br_queue_task_done(q));
  T_OK(br_queue_free(q));

  br_event *e = NULL;
  (void)br_event_new(&e);
  EXPECT_TIMEOUT(br_event_wait(e));
  T_OK(br_event_free(e));

  br_sem *sem = NULL;
  (void)br_sem_new(&sem, 0);
  EXPECT_TIMEOUT(br_sem_acquire(sem));
  T_OK(br_sem_free(sem));

  /* join under a deadline: the target is cancelled and waited for. */
  int cleanup = 0;
  br_task *t;
  T_OK(br_spawn(&t, forever, &cleanup, NULL));
  EXPECT_TIMEOUT(br_join(t, NULL));
  T_EQ(cleanup, 1);
  T_RC(br_join(t, NULL), BR_EHANDLE);
#undef EXPECT_TIMEOUT
  return NULL;
}

static void test_scope_over_every_blocking_call(void **state) {
  (void)state;
  run_main(m_scope_over_calls, NULL);
}

/* --- compact tasks ------------------------------------------------------------ */

/* A compact task's scope lives on the shared stack while it runs, and in its
 * save buffer while it is suspended. Cancelling it from another compact task
 * must look at the real scope (shield or not), not at whatever the running
 * task has at that address.
 *
 * Both roles run the same function, so their frames sit at the same
 * addresses of the shared stack: the canceller's zeroed `s` overlays the
 * victim's shielding scope. */
typedef struct {
  int role; /* 0 victim, 1 canceller */
  br_task *victim;
  int rc, after_rc;
  int64_t ms;
} cs_ctx;

static void *compact_scoped(void *arg) {
  cs_ctx *c = arg;
  br_scope s;
  memset(&s, 0, sizeof s);
  if (c->role == 0) {
    br_scope_enter(&s, BR_NEVER, true);
    int64_t t0 = br_now();
    c->rc = br_sleep_ms(100);
    c->ms = ms_since(t0);
    br_scope_exit(&s);
    c->after_rc = br_sleep_ms(1000);
  } else {
    c->rc = br_cancel(c->victim);
  }
  return NULL;
}

static void *m_compact_shield(void *arg) {
  (void)arg;
  cs_ctx v = {.role = 0}, k = {.role = 1};
  br_spawn_opts co = {.flags = BR_SPAWN_COMPACT};
  br_task *vt, *kt;
  T_OK(br_spawn(&vt, compact_scoped, &v, &co));
  T_OK(br_sleep_ms(5)); /* the victim sleeps inside its shield */
  k.victim = vt;
  T_OK(br_spawn(&kt, compact_scoped, &k, &co));
  T_OK(br_join(kt, NULL));
  T_OK(k.rc);
  T_RC(br_join(vt, NULL), BR_ECANCELED);
  T_OK(v.rc); /* the shield held */
  T_RANGE(v.ms, 100, 600);
  T_RC(v.after_rc, BR_ECANCELED);
  return NULL;
}

static void test_compact_shield_cancelled_by_compact_task(void **state) {
  (void)state;
  run_main(m_compact_shield, NULL);
}

/* The same from a normal task, and scope deadlines in compact tasks. */
static void *compact_deadlines(void *arg) {
  (void)arg;
  br_scope outer, inner;
  int64_t t0 = br_now();
  if (br_scope_enter(&outer, br_deadline_ms(60), false)) return br_fail(BR_EIO, "enter");
  br_scope_enter(&inner, br_deadline_ms(20), false);
  int a = br_sleep_ms(1000);
  int64_t m1 = ms_since(t0);
  int b = br_scope_exit(&inner);
  int c = br_sleep_ms(1000);
  int64_t m2 = ms_since(t0);
  int d = br_scope_exit(&outer);
  if (a != BR_ETIMEDOUT || b != BR_ETIMEDOUT || c != BR_ETIMEDOUT || d != BR_ETIMEDOUT)
    return br_fail(BR_EIO, "codes %d %d %d %d", a, b, c, d);
  if (m1 < 20 || m1 > 55 || m2 < 60 || m2 > 600) return br_fail(BR_EIO, "times %lld %lld", (long long)m1, (long long)m2);
  return NULL;
}

static void *m_compact_mixed(void *arg) {
  (void)arg;
  shield_probe p = {0};
  br_spawn_opts co = {.flags = BR_SPAWN_COMPACT};
  br_task *t;
  T_OK(br_spawn(&t, shielded_cleanup, &p, &co));
  T_OK(br_sleep_ms(10));
  T_OK(br_cancel(t));
  T_RC(br_join(t, NULL), BR_ECANCELED);
  T_OK(p.shielded_rc);
  T_RC(p.after_rc, BR_ECANCELED);

  br_task *d[6];
  for (int i = 0; i < 6; i++) T_OK(br_spawn(&d[i], compact_deadlines, NULL, (i % 2) ? &co : NULL));
  for (int i = 0; i < 6; i++) {
    int rc = br_join(d[i], NULL);
    if (rc) T_STR(br_errname(rc), "OK");
  }
  return NULL;
}

static void test_compact_scopes(void **state) {
  (void)state;
  run_main(m_compact_mixed, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_move_on_after),
      cmocka_unit_test(test_fail_after),
      cmocka_unit_test(test_nested_scopes),
      cmocka_unit_test(test_shield_hides_outer_cancel),
      cmocka_unit_test(test_shield_hides_outer_deadline),
      cmocka_unit_test(test_scope_cancel_from_other_task),
      cmocka_unit_test(test_scope_cancel_self_and_outer),
      cmocka_unit_test(test_scope_over_every_blocking_call),
      cmocka_unit_test(test_compact_scopes),
      cmocka_unit_test(test_compact_shield_cancelled_by_compact_task),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
