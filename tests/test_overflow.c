/* SPDX-License-Identifier: MIT */
/* test_overflow — a task that overflows its stack is reported by name
 * ("task 'NAME' overflowed its N KiB stack") and the process dies of
 * SIGSEGV; ordinary C code (printf, getaddrinfo, big-but-legal frames) fits
 * the default stack. Every case runs in a child process: the parent never
 * creates a loop, so each child installs braid's fault handler afresh. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "test_util.h"
#include "core_test.h"

/* Recursion the compiler can neither turn into a loop nor elide; it never
 * reaches stop_depth. */
static volatile int stop_depth = -1;

__attribute__((noinline)) static int recurse(volatile char *prev, int depth) {
  volatile char frame[512];
  if (depth == stop_depth) return 0;
  frame[0] = (char)depth;
  frame[511] = prev ? prev[0] : 0;
  return recurse(frame, depth + 1) + frame[17];
}

/* Frames bigger than a guard page, filled from their low end first (as
 * memset does): each new frame's first touch jumps past a single guard
 * page. */
__attribute__((noinline)) static int recurse_big(int depth) {
  char frame[12 * 1024];
  if (depth == stop_depth) return 0;
  memset(frame, depth & 0xff, sizeof frame);
  __asm__ __volatile__("" : : "r"(frame) : "memory");
  return recurse_big(depth + 1) + frame[depth % sizeof frame];
}

static void *overflow_body(void *arg) {
  if (arg) return (void *)(intptr_t)recurse_big(0);
  return (void *)(intptr_t)recurse(NULL, 0);
}

typedef struct {
  const char *name;   /* NULL: default name */
  unsigned flags;
  size_t stack_size;
  bool big_frames;
  bool on_thread;     /* run the loop on a second thread */
  int before;         /* tasks to keep alive before (use up the guard budget) */
  const char *env_guard;
  bool no_light_guards; /* as on kernels without MADV_GUARD_INSTALL (< 6.13) */
} ovf_case;

static void *idle(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void *ovf_main(void *arg) {
  ovf_case *c = arg;
  for (int i = 0; i < c->before; i++) br_spawn(NULL, idle, NULL, &(br_spawn_opts){.flags = BR_SPAWN_DETACHED});
  br_task *t;
  br_spawn_opts o = {.name = c->name, .flags = c->flags, .stack_size = c->stack_size};
  int rc = br_spawn(&t, overflow_body, c->big_frames ? (void *)1 : NULL, &o);
  if (rc) {
    fprintf(stderr, "spawn failed: %s\n", br_strerror(rc));
    return NULL;
  }
  br_join(t, NULL);
  fprintf(stderr, "SURVIVED\n");
  return NULL;
}

static void *ovf_thread(void *arg) {
  br_run(NULL, ovf_main, arg);
  return NULL;
}

static void ovf_child(void *arg) {
  ovf_case *c = arg;
  if (c->env_guard) setenv("BRAID_GUARD_STACKS", c->env_guard, 1);
  if (c->no_light_guards) setenv("BRAID_NO_LIGHT_GUARDS", "1", 1);
  if (c->on_thread) {
    pthread_t th;
    pthread_create(&th, NULL, ovf_thread, c);
    pthread_join(th, NULL);
  } else {
    br_run(NULL, ovf_main, c);
  }
}

static void expect_overflow(ovf_case *c, const char *want_name, const char *want_size) {
  br_child_result r;
  assert_int_equal(br_test_run_child(ovf_child, c, 60000, &r), 0);
  char want[96];
  snprintf(want, sizeof want, "task '%s' overflowed its", want_name);
  const char *hit = strstr(r.err, want);
  bool size_ok = !want_size || (hit && strstr(hit, want_size));
  bool ok = r.signaled && r.signo == SIGSEGV && hit && size_ok;
  char msg[2600];
  snprintf(msg, sizeof msg,
           "want death by SIGSEGV with \"%s\"%s%s; got exited=%d code=%d signaled=%d signo=%d timed_out=%d, "
           "stderr:\n%.2000s",
           want, want_size ? " and " : "", want_size ? want_size : "", r.exited, r.exit_code, r.signaled, r.signo,
           r.timed_out, r.err);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

static void test_normal_task_overflow(void **state) {
  (void)state;
  ovf_case c = {.name = "deep-one"};
  expect_overflow(&c, "deep-one", "256 KiB stack");
}

static void test_compact_task_overflow(void **state) {
  (void)state;
  ovf_case c = {.name = "compact-deep", .flags = BR_SPAWN_COMPACT};
  expect_overflow(&c, "compact-deep", "KiB stack");
}

static void test_default_name_in_report(void **state) {
  (void)state;
  ovf_case c = {0};
  /* main is task-1, the first task it spawns task-2 */
  expect_overflow(&c, "task-2", NULL);
}

static void test_small_stack_overflow(void **state) {
  (void)state;
  ovf_case c = {.name = "tiny", .stack_size = 16 * 1024};
  expect_overflow(&c, "tiny", "16 KiB stack");
}

static void test_big_frames_overflow(void **state) {
  (void)state;
  ovf_case c = {.name = "big-frames", .big_frames = true};
  expect_overflow(&c, "big-frames", "256 KiB stack");
}

static void test_overflow_on_second_thread(void **state) {
  (void)state;
  ovf_case c = {.name = "on-thread", .on_thread = true};
  expect_overflow(&c, "on-thread", NULL);
}

/* Past the guard-page budget stacks are carved from unguarded slabs (one
 * mapping for many stacks): an overflow must still be reported by name, not
 * run silently into the neighbouring task's stack. BRAID_NO_LIGHT_GUARDS
 * keeps the kernel's mapping-free guard pages out of it. */
/* Under ASan an overflow into the neighbouring stacks hits their redzones
 * first and ASan reports it itself (stack-buffer-underflow): only a guarded
 * stack gets to braid's handler there. */
#ifdef BRAID_ASAN
#define SKIP_UNDER_ASAN() skip()
#else
#define SKIP_UNDER_ASAN() ((void)0)
#endif

static void test_unguarded_stack_overflow(void **state) {
  (void)state;
  SKIP_UNDER_ASAN();
  ovf_case c = {.name = "unguarded", .env_guard = "0", .before = 8, .no_light_guards = true};
  expect_overflow(&c, "unguarded", NULL);
}

/* The same with stock settings on a kernel without MADV_GUARD_INSTALL
 * (Debian 12's 6.1): the guard budget is vm.max_map_count / 8 stacks (8,191
 * at 65,530); a program with more live tasks than that gets unguarded
 * stacks. (Where the kernel has light guards, BRAID_NO_LIGHT_GUARDS=1
 * reproduces the older kernel.) */
static void test_overflow_past_default_guard_budget(void **state) {
  (void)state;
  SKIP_UNDER_ASAN();
#ifdef BRAID_TSAN
  skip(); /* ThreadSanitizer dies past 8,128 live fibers (tasks) */
#endif
  ovf_case c = {.name = "past-budget", .before = 8400, .no_light_guards = true};
  expect_overflow(&c, "past-budget", NULL);
}

static void test_unguarded_compact_overflow(void **state) {
  (void)state;
  ovf_case c = {.name = "unguarded-compact", .flags = BR_SPAWN_COMPACT, .env_guard = "0", .no_light_guards = true};
  expect_overflow(&c, "unguarded-compact", NULL);
}

/* --- ordinary C code fits the default stack --------------------------- */

static void *ordinary(void *arg) {
  (void)arg;
  char buf[4096];
  snprintf(buf, sizeof buf, "%s %d %f %g %Lf", "printf-sized", 42, 3.14, 2.5e10, (long double)1.5);
  fprintf(stderr, "%s\n", buf);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int rc = getaddrinfo("localhost", "80", &hints, &res);
  if (rc == 0) freeaddrinfo(res);
  fprintf(stderr, "getaddrinfo=%d\n", rc);
  /* A big but legal frame. */
  volatile char big[96 * 1024];
  for (size_t i = 0; i < sizeof big; i += 512) big[i] = (char)i;
  if (br_yield()) return br_fail(BR_EIO, "yield");
  return (void *)(intptr_t)(big[512] == (char)512 ? 1 : 2);
}

static void *ordinary_main(void *arg) {
  (void)arg;
  for (int k = 0; k < 2; k++) {
    br_task *t;
    br_spawn(&t, ordinary, NULL, &(br_spawn_opts){.flags = k ? BR_SPAWN_COMPACT : 0});
    void *r = NULL;
    int rc = br_join(t, &r);
    fprintf(stderr, "task %d: rc=%d r=%d\n", k, rc, (int)(intptr_t)r);
  }
  return NULL;
}

static void ordinary_child(void *arg) {
  (void)arg;
  fprintf(stderr, "br_run=%d\n", br_run(NULL, ordinary_main, NULL));
}

static void test_ordinary_code_fits_default_stack(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(ordinary_child, NULL, 60000, &r), 0);
  if (!r.exited || r.exit_code != 0 || !strstr(r.err, "task 0: rc=0 r=1") || !strstr(r.err, "task 1: rc=0 r=1") ||
      !strstr(r.err, "br_run=0"))
    fail_msg("exited=%d code=%d signo=%d, stderr:\n%.2000s", r.exited, r.exit_code, r.signo, r.err);
  br_child_result_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_normal_task_overflow),
      cmocka_unit_test(test_compact_task_overflow),
      cmocka_unit_test(test_default_name_in_report),
      cmocka_unit_test(test_small_stack_overflow),
      cmocka_unit_test(test_big_frames_overflow),
      cmocka_unit_test(test_overflow_on_second_thread),
      cmocka_unit_test(test_unguarded_stack_overflow),
      cmocka_unit_test(test_overflow_past_default_guard_budget),
      cmocka_unit_test(test_unguarded_compact_overflow),
      cmocka_unit_test(test_ordinary_code_fits_default_stack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
