/* SPDX-License-Identifier: MIT */
/* test_procpool_threaded — a program whose fork server already has threads
 * before braid's start-up hook runs (as when a shared library's
 * constructor starts a thread pool: OpenBLAS does). A constructor that runs
 * before braid's (priority 100) starts a thread in the fork server that
 * holds a mutex forever. A worker forked from that server would inherit the
 * mutex locked, with no thread to unlock it; the server must notice its
 * threads and exec its workers instead, so every job finds the mutex free.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the shared jobs' helpers */
#include "test_procpool_jobs.h"
#pragma GCC diagnostic pop
#include "exec/procpool_int.h"
#include "test_util.h"

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int holding;

static void *hold_forever(void *arg) {
  (void)arg;
  pthread_mutex_lock(&held);
  atomic_store(&holding, 1);
  for (;;) pause();
  return NULL;
}

/* In the fork server only (its marker starts with "3"): a thread holding a
 * lock, before braid's hook (priority 101) runs — as a shared library's
 * constructor would (those all run before the program's). Priority 100 is
 * reserved to the implementation, which is what this stands in for. */
#pragma GCC diagnostic push
#if defined(__clang__)
#if __has_warning("-Wprio-ctor-dtor")
#pragma clang diagnostic ignored "-Wprio-ctor-dtor"
#endif
#else
#pragma GCC diagnostic ignored "-Wprio-ctor-dtor"
#endif
__attribute__((constructor(100))) static void start_thread_early(void) {
  const char *m = getenv("BRAID_PROCPOOL_SERVER");
  if (!m || m[0] != '3') return;
  pthread_t t;
  if (pthread_create(&t, NULL, hold_forever, NULL) != 0) return;
  while (!atomic_load(&holding)) sched_yield();
}
#pragma GCC diagnostic pop

/* The result: 0 if the mutex was free in this worker, else trylock's code. */
static int probe_fn(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  int32_t r = pthread_mutex_trylock(&held);
  if (r == 0) pthread_mutex_unlock(&held);
  return br_bytes_set(out, &r, sizeof r);
}
BR_JOB(probe, probe_fn);

/* n probes through p: every worker found the mutex free. */
static void probe_all(br_procpool *p, int n) {
  br_future *f[8];
  for (int i = 0; i < n; i++)
    assert_int_equal(br_procpool_submit(p, &f[i], "probe", NULL, 0, NULL), 0);
  for (int i = 0; i < n; i++) {
    void *v;
    assert_int_equal(br_await_until(f[i], &v, br_deadline_ms(20000)), 0);
    br_bytes *b = v;
    int32_t code;
    assert_int_equal(b->len, sizeof code);
    memcpy(&code, b->data, sizeof code);
    if (code != 0) fail_msg("the worker inherited a held lock (trylock: %d)", code);
    br_bytes_free(b);
    br_future_unref(f[i]);
  }
}

static void test_threaded_server_execs_workers(void **state) {
  (void)state;
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, 2, NULL);
  if (r == BR_ENOSYS && br_test_emulated()) skip();
  assert_int_equal(r, 0);
  for (int round = 0; round < 2; round++) {
    probe_all(p, 8);
    /* A crash: its replacement is started the same way. */
    tjob j = tj(1, A_SEGV, 0);
    br_future *g;
    assert_int_equal(br_procpool_submit(p, &g, "tjob", &j, sizeof j, NULL), 0);
    assert_int_equal(br_await_until(g, NULL, br_deadline_ms(20000)), BR_EWORKERDIED);
    br_future_unref(g);
  }
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.worker_deaths, 2);
  assert_int_equal(br_procpool_free(p), 0);
}

/* A second pool reuses the same (threaded) server, whose workers are
 * exec'd just the same. */
static void test_threaded_server_shared(void **state) {
  (void)state;
  pid_t s1, s2;
  uint64_t n1, n2;
  br__pp_server_peek(&s1, &n1);
  assert_true(s1 > 0); /* the first test's pool started it */
  br_procpool *p = NULL;
  assert_int_equal(br_procpool_new(&p, 2, NULL), 0);
  probe_all(p, 4);
  assert_int_equal(br_procpool_free(p), 0);
  br__pp_server_peek(&s2, &n2);
  assert_int_equal(s2, s1);
  assert_int_equal(n2, n1);
}

int main(void) {
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threaded_server_execs_workers),
      cmocka_unit_test(test_threaded_server_shared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
