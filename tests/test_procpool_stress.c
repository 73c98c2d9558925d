/* SPDX-License-Identifier: MIT */
/* test_procpool_stress — volume and concurrency: 100,000 small jobs; two
 * threads submitting at once while a CPU pool and a loop run in the same
 * process; recycling (max_jobs_per_worker) while jobs crash and the pool
 * shuts down, in both modes (DRAIN and CANCEL; the mix that deadlocked
 * Python's pool, cpython#115634). Every job must end exactly once: run once and
 * reported, or never run and reported cancelled. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

static br_procpool *new_pool(int n, const br_procpool_opts *o) {
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, n, o);
  if (r == BR_ENOSYS && br_test_emulated()) br_test_skip("no exec of /proc/self/exe under qemu");
  assert_int_equal(r, 0);
  return p;
}

static void test_100k_small_jobs(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  uint32_t n = (uint32_t)br_test_scaled(100000);
  br_future **f = calloc(n, sizeof *f);
  int64_t t0 = br_now();
  for (uint32_t i = 0; i < n; i++) {
    tjob j = tj(i, A_OK, 0);
    assert_int_equal(br_procpool_submit(p, &f[i], "tjob", &j, sizeof j, NULL), 0);
  }
  for (uint32_t i = 0; i < n; i++) {
    void *v;
    assert_int_equal(br_await(f[i], &v), 0);
    assert_int_equal(tresult(v), i);
    br_future_unref(f[i]);
  }
  int64_t dt = br_now() - t0;
  printf("# %u jobs: %.2f us per job\n", n, (double)dt / 1e3 / n);
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.submitted, n);
  assert_int_equal(st.completed, n);
  assert_int_equal(st.failed, 0);
  br_procpool_free(p);
  for (uint32_t i = 0; i < n; i++) assert_int_equal(t.c[i], 1);
  free(f);
  tcounter_close(&t);
}

/* ---- two submitting threads + a CPU pool + a loop */

typedef struct sub_arg {
  br_procpool *p;
  uint32_t base, n;
  int bad;
} sub_arg;

static void *submitter(void *arg) {
  sub_arg *a = arg;
  br_future **f = calloc(a->n, sizeof *f);
  for (uint32_t i = 0; i < a->n; i++) {
    tjob j = tj(a->base + i, i % 97 == 13 ? A_SEGV : A_OK, 0);
    if (br_procpool_submit(a->p, &f[i], "tjob", &j, sizeof j, NULL) != 0) a->bad++;
  }
  for (uint32_t i = 0; i < a->n; i++) {
    void *v = NULL;
    int r = br_await(f[i], &v);
    if (i % 97 == 13) {
      if (r != BR_EWORKERDIED) a->bad++;
    } else if (r != 0 || tresult(v) != a->base + i) {
      a->bad++;
    }
    br_future_unref(f[i]);
  }
  free(f);
  return NULL;
}

static void *cpu_work(void *arg) {
  volatile uint64_t x = (uintptr_t)arg;
  for (int i = 0; i < 200000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return (void *)(uintptr_t)(x | 1);
}

typedef struct loop_arg {
  br_procpool *p;
  int awaited, ticks;
} loop_arg;

static void *loop_ticker(void *arg) {
  loop_arg *a = arg;
  while (br_sleep_ms(1) == 0) a->ticks++;
  return NULL;
}

static void *loop_main(void *arg) {
  loop_arg *a = arg;
  br_task *t;
  assert_int_equal(br_spawn(&t, loop_ticker, a, NULL), 0);
  for (uint32_t i = 0; i < 200; i++) {
    tjob j = tj(900000 + i, A_OK, 0);
    br_future *f;
    assert_int_equal(br_procpool_submit(a->p, &f, "tjob", &j, sizeof j, NULL), 0);
    void *v;
    assert_int_equal(br_await(f, &v), 0);
    assert_int_equal(tresult(v), 900000 + i);
    br_future_unref(f);
    a->awaited++;
  }
  br_task_close(t);
  return NULL;
}

static void test_threads_cpu_pool_and_loop(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  br_pool *cpu;
  assert_int_equal(br_pool_new(&cpu, 2, NULL), 0);
  br_future *cf[64];
  for (int i = 0; i < 64; i++)
    assert_int_equal(br_pool_submit(cpu, &cf[i], cpu_work, (void *)(uintptr_t)i), 0);
  uint32_t n = (uint32_t)br_test_scaled(20000);
  sub_arg a = {p, 0, n, 0}, b = {p, 400000, n, 0};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, submitter, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, submitter, &b), 0);
  loop_arg la = {.p = p};
  assert_int_equal(br_run(NULL, loop_main, &la), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(a.bad, 0);
  assert_int_equal(b.bad, 0);
  assert_int_equal(la.awaited, 200);
  for (int i = 0; i < 64; i++) {
    void *v;
    assert_int_equal(br_await(cf[i], &v), 0);
    br_future_unref(cf[i]);
  }
  br_pool_free(cpu);
  br_procpool_free(p);
  for (uint32_t i = 0; i < n; i++) {
    assert_int_equal(t.c[i], 1);
    assert_int_equal(t.c[400000 + i], 1);
  }
  for (uint32_t i = 0; i < 200; i++) assert_int_equal(t.c[900000 + i], 1);
  tcounter_close(&t);
}

/* ---- recycling while jobs crash and the pool shuts down */

static void recycle_crash_shutdown(br_shutdown_mode mode) {
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  o.max_jobs_per_worker = 3;
  br_procpool *p = new_pool(3, &o);
  uint32_t n = (uint32_t)br_test_scaled(3000);
  br_future **f = calloc(n, sizeof *f);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t action = i % 11 == 3 ? A_SEGV : i % 11 == 7 ? A_ABORT : i % 13 == 5 ? A_EXIT : A_OK;
    tjob j = tj(i, action, 0);
    assert_int_equal(br_procpool_submit(p, &f[i], "tjob", &j, sizeof j, NULL), 0);
  }
  /* Let some of it run, then shut down while recycling and crashing. */
  br_await(f[n / 10], NULL); /* the value is taken in the loop below */
  assert_int_equal(br_procpool_shutdown(p, mode), 0);
  tjob j = tj(0, A_OK, 0);
  br_future *late;
  assert_int_equal(br_procpool_submit(p, &late, "tjob", &j, sizeof j, NULL), BR_ESHUTDOWN);
  uint32_t ok = 0, died = 0, cancelled = 0;
  for (uint32_t i = 0; i < n; i++) {
    assert_true(br_future_done(f[i])); /* shutdown completed every future */
    void *v = NULL;
    int r = br_await(f[i], &v);
    uint32_t action = i % 11 == 3 ? A_SEGV : i % 11 == 7 ? A_ABORT : i % 13 == 5 ? A_EXIT : A_OK;
    if (r == 0) {
      assert_int_equal(action, A_OK);
      assert_int_equal(tresult(v), i);
      assert_int_equal(t.c[i], 1);
      ok++;
    } else if (r == BR_EWORKERDIED) {
      assert_true(action != A_OK);
      assert_int_equal(t.c[i], 1);
      died++;
    } else {
      assert_int_equal(r, BR_ECANCELED);
      assert_int_equal(mode, BR_SHUTDOWN_CANCEL);
      assert_true(t.c[i] <= 1);
      cancelled++;
    }
    br_future_unref(f[i]);
  }
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  printf("# %s: %u ok, %u died, %u cancelled; %llu recycled, %llu deaths, %llu started\n",
         mode == BR_SHUTDOWN_DRAIN ? "drain" : "cancel", ok, died, cancelled,
         (unsigned long long)st.recycled, (unsigned long long)st.worker_deaths,
         (unsigned long long)st.started);
  if (mode == BR_SHUTDOWN_DRAIN) {
    assert_int_equal(cancelled, 0);
    assert_int_equal(ok + died, n);
    assert_true(st.recycled > 0);
  }
  assert_int_equal(st.completed, n);
  br_procpool_free(p);
  free(f);
  tcounter_close(&t);
}

static void test_recycle_crash_drain_shutdown(void **state) {
  (void)state;
  recycle_crash_shutdown(BR_SHUTDOWN_DRAIN);
}

static void test_recycle_crash_cancel_shutdown(void **state) {
  (void)state;
  recycle_crash_shutdown(BR_SHUTDOWN_CANCEL);
}

/* Shutdown from another thread while a thread is blocked in map. */
typedef struct map_arg {
  br_procpool *p;
  int r;
  int errs[64];
} map_arg;

static void *mapper(void *arg) {
  map_arg *a = arg;
  tjob items[64];
  for (uint32_t i = 0; i < 64; i++) items[i] = tj(i, A_SLEEP, 20);
  uint64_t out[64];
  br_procpool_map_opts mo = {.chunksize = 2};
  for (int i = 0; i < 64; i++) a->errs[i] = 1;
  a->r = br_procpool_map_fixed(a->p, out, 8, a->errs, "tjob", items, sizeof(tjob), 64, &mo);
  return NULL;
}

static void test_shutdown_during_map(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  map_arg a = {.p = p, .r = 1};
  pthread_t th;
  pthread_create(&th, NULL, mapper, &a);
  /* Shut down once the map runs: its first item has started. */
  while (atomic_load(&t.c[0]) == 0) sched_yield();
  assert_int_equal(br_procpool_shutdown(p, BR_SHUTDOWN_CANCEL), 0);
  pthread_join(th, NULL);
  int r = a.r;
  br_procpool_free(p);
  tcounter_close(&t);
  /* Cancelled mid-way (or, on a machine so loaded that this thread did not
   * run for the map's whole 0.6 s, done before the shutdown). */
  if (!(r == BR_ECANCELED || r == 0 || r == BR_ESHUTDOWN))
    fail_msg("map during shutdown returned %d (%s)", r, br_errname(r));
  /* Every item finished or was cancelled, including the other items of a
   * chunk whose worker the shutdown killed (never BR_EWORKERDIED), or was
   * not submitted yet (BR_ESHUTDOWN, on a machine so busy that the map had
   * not submitted its 32 chunks before the first one ran). */
  for (int i = 0; i < 64; i++)
    if (a.errs[i] != 0 && a.errs[i] != BR_ECANCELED && a.errs[i] != BR_ESHUTDOWN)
      fail_msg("item %d: %d (%s)", i, a.errs[i], br_errname(a.errs[i]));
}

/* A shutdown while map is still submitting: what went in completes (DRAIN),
 * the rest fails BR_ESHUTDOWN, and every item gets an outcome. */
typedef struct bigmap_arg {
  br_procpool *p;
  uint32_t n;
  tjob *items;
  uint64_t *out;
  int *errs;
  int r;
} bigmap_arg;

static void *big_mapper(void *arg) {
  bigmap_arg *a = arg;
  br_procpool_map_opts mo = {.chunksize = 1};
  a->r = br_procpool_map_fixed(a->p, a->out, 8, a->errs, "tjob", a->items, sizeof(tjob), a->n,
                               &mo);
  return NULL;
}

static void test_shutdown_while_map_submits(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  bigmap_arg a = {.p = p, .n = (uint32_t)br_test_scaled(200000), .r = 1};
  a.items = calloc(a.n, sizeof *a.items);
  a.out = calloc(a.n, sizeof *a.out);
  a.errs = calloc(a.n, sizeof *a.errs);
  for (uint32_t i = 0; i < a.n; i++) {
    a.items[i] = tj(i, A_OK, 0);
    a.errs[i] = 1; /* not written by map */
  }
  pthread_t th;
  pthread_create(&th, NULL, big_mapper, &a);
  while (atomic_load(&t.c[0]) == 0) sched_yield();
  assert_int_equal(br_procpool_shutdown(p, BR_SHUTDOWN_DRAIN), 0);
  pthread_join(th, NULL);
  uint32_t done = 0, shut = 0;
  for (uint32_t i = 0; i < a.n; i++) {
    if (a.errs[i] == 0) {
      assert_int_equal(a.out[i], i);
      assert_int_equal(t.c[i], 1);
      assert_int_equal(shut, 0); /* the submitted ones come first */
      done++;
    } else if (a.errs[i] == BR_ESHUTDOWN) {
      assert_int_equal(t.c[i], 0);
      shut++;
    } else {
      fail_msg("item %u: %d (%s)", i, a.errs[i], br_errname(a.errs[i]));
    }
  }
  printf("# %u done, %u not submitted\n", done, shut);
  assert_int_equal(a.r, shut ? BR_ESHUTDOWN : 0);
  br_procpool_free(p);
  free(a.items);
  free(a.out);
  free(a.errs);
  tcounter_close(&t);
}

/* Many pools created and freed, some from threads at once. */
static void *pool_cycle(void *arg) {
  (void)arg;
  for (int k = 0; k < 5; k++) {
    br_procpool *p = NULL;
    if (br_procpool_new(&p, 2, NULL) != 0) return (void *)1;
    tjob j = tj(0, A_OK, 0);
    br_future *f;
    if (br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL) != 0) return (void *)1;
    void *v;
    if (br_await(f, &v) != 0) return (void *)1;
    br_bytes_free(v);
    br_future_unref(f);
    br_procpool_free(p);
  }
  return NULL;
}

static void test_pools_from_threads(void **state) {
  (void)state;
  int before = br_test_count_fds();
  pthread_t th[3];
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, pool_cycle, NULL);
  for (int i = 0; i < 3; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  assert_int_equal(br_test_count_fds(), before);
}

int main(void) {
  /* qemu-user can neither exec this foreign-architecture program (no
   * binfmt_misc) nor, on our CI machines, create threads reliably. */
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_100k_small_jobs),
      cmocka_unit_test(test_threads_cpu_pool_and_loop),
      cmocka_unit_test(test_recycle_crash_drain_shutdown),
      cmocka_unit_test(test_recycle_crash_cancel_shutdown),
      cmocka_unit_test(test_shutdown_during_map),
      cmocka_unit_test(test_shutdown_while_map_submits),
      cmocka_unit_test(test_pools_from_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
