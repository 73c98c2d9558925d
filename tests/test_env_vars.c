/* SPDX-License-Identifier: MIT */
/* test_env_vars — braid's environment variables: a value braid does not
 * understand is said once on the log, naming the variable and what it
 * accepts, and ignored (the default applies: nothing fails because of it);
 * a good value takes effect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

static char logged[4][256];
static int nlogged;

static void hook(br_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  if (nlogged < 4) snprintf(logged[nlogged], sizeof logged[0], "%s", msg);
  nlogged++;
}

/* Make a loop with default options under NAME=VALUE; what was logged. */
static void loop_with(const char *name, const char *value) {
  nlogged = 0;
  setenv(name, value, 1);
  br_loop *L;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  br_loop_free(L);
  unsetenv(name);
}

static void bad_values_are_said_once_and_ignored(void **state) {
  (void)state;
  br_set_log(hook, NULL);
  static const struct {
    const char *name, *value, *says;
  } cases[] = {
      {"BRAID_STACK_SIZE", "12", "BRAID_STACK_SIZE=12 is not a whole number in 16384 .. "},
      {"BRAID_ACCOUNTING", "bogus", "BRAID_ACCOUNTING=bogus is not one of off, fast, precise"},
      {"BRAID_COMPACT", "yes", "BRAID_COMPACT=yes is not one of 0, 1"},
      {"BRAID_URING_SOCKETS", "on", "BRAID_URING_SOCKETS=on is not one of 0, 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    loop_with(cases[i].name, cases[i].value);
    assert_int_equal(nlogged, 1);
    if (!strstr(logged[0], cases[i].says)) fail_msg("%s: logged '%s'", cases[i].name, logged[0]);
    /* Once: the next loop says nothing more. */
    loop_with(cases[i].name, cases[i].value);
    assert_int_equal(nlogged, 0);
  }
  br_set_log(NULL, NULL);
}

/* 100 frames of 4 KiB: 400 KiB of stack, more than the default 256 KiB. */
__attribute__((noinline)) static int deep(int n) {
  volatile char pad[4096];
  pad[0] = (char)n;
  pad[4095] = (char)n;
  return n ? deep(n - 1) + pad[0] - pad[4095] : 0;
}

static void *deep_task(void *arg) {
  (void)arg;
  return (void *)(intptr_t)(deep(100) + 1);
}

static void *spin_task(void *arg) {
  (void)arg;
  int64_t end = br_now() + 2000000;
  while (br_now() < end) {}
  return NULL;
}

static void *accounting_body(void *arg) {
  uint64_t *run = arg;
  br_task *t;
  if (br_spawn(&t, spin_task, NULL, NULL)) return br_fail(BR_EIO, "spawn");
  br_await(br_task_future(t), NULL);
  br_task_stats st;
  if (br_task_get_stats(t, &st)) return br_fail(BR_EIO, "stats");
  *run = st.run_ns;
  br_join(t, NULL);
  return NULL;
}

static void good_values_take_effect(void **state) {
  (void)state;
  br_set_log(hook, NULL);
  nlogged = 0;
  /* A bigger default stack: a task that needs 400 KiB runs. */
  setenv("BRAID_STACK_SIZE", "0x100000", 1);
  void *r = NULL;
  assert_int_equal(br_run(&r, deep_task, NULL), 0);
  assert_int_equal((intptr_t)r, 1);
  unsetenv("BRAID_STACK_SIZE");
  /* Accounting off: a task that ran 2 ms has no run time. */
  uint64_t run = 1;
  setenv("BRAID_ACCOUNTING", "off", 1);
  assert_int_equal(br_run(NULL, accounting_body, &run), 0);
  assert_int_equal(run, 0);
  setenv("BRAID_ACCOUNTING", "fast", 1);
  assert_int_equal(br_run(NULL, accounting_body, &run), 0);
  assert_true(run >= 2000000);
  unsetenv("BRAID_ACCOUNTING");
  assert_int_equal(nlogged, 0);
  br_set_log(NULL, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bad_values_are_said_once_and_ignored),
      cmocka_unit_test(good_values_take_effect),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
