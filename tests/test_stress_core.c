/* SPDX-License-Identifier: MIT */
/* test_stress_core — the core at scale: 1,000,000 live tasks each sleeping
 * 10 ms (compact and default stacks) under the stock vm.max_map_count,
 * spawn churn, cancellation storms across every kind of wait, loops on
 * several threads completing each other's futures, and a clear error (never
 * a crash) when memory or mappings run out. Sizes are divided by
 * BRAID_TEST_SCALE. Big cases run in child processes so each one's memory
 * is measured (VmHWM) and given back. */
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
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* ThreadSanitizer keeps one fiber per live task and dies past 8,128. */
static long live_cap(long n) {
#ifdef BRAID_TSAN
  if (n > 6000) n = 6000;
#endif
  return n;
}

static long status_kib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = strtol(line + kl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static long map_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  long n = 0;
  int c;
  while ((c = fgetc(f)) != EOF)
    if (c == '\n') n++;
  fclose(f);
  return n;
}

static long max_map_count(void) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long v = -1;
  if (f) {
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

/* Run fn in a child; it must exit 0 (checks are reported on stderr). */

/* --- a million live sleepers --------------------------------------------- */

typedef struct {
  long n;
  unsigned flags;
  long alive, peak, done, failed;
  long maps_at_peak;
} sleepers_ctx;

static sleepers_ctx sl;

static void *sleeper10(void *arg) {
  (void)arg;
  if (++sl.alive > sl.peak) {
    sl.peak = sl.alive;
    if (sl.peak == sl.n) sl.maps_at_peak = map_count();
  }
  int rc = br_sleep_ms(10);
  sl.alive--;
  sl.done++;
  if (rc) {
    sl.failed++;
    return br_fail(rc, "sleep");
  }
  return NULL;
}

static void *m_sleepers(void *arg) {
  (void)arg;
  br_task **h = malloc((size_t)sl.n * sizeof *h);
  T_TRUE(h != NULL);
  int64_t t0 = br_now();
  br_spawn_opts o = {.flags = sl.flags};
  for (long i = 0; i < sl.n; i++) {
    int rc = br_spawn(&h[i], sleeper10, NULL, &o);
    if (rc) {
      tf_record(__FILE__, __LINE__, "spawn #%ld: %s", i, br_strerror(rc));
      sl.n = i;
      break;
    }
  }
  int64_t spawned = br_now();
  long bad = 0;
  for (long i = 0; i < sl.n; i++)
    if (br_join(h[i], NULL)) bad++;
  int64_t t1 = br_now();
  free(h);
  T_EQ(bad, 0);
  fprintf(stderr, "  %ld %s tasks sleeping 10 ms: spawned in %.2f s, all done after %.2f s, peak live %ld, "
          "%ld mappings at peak (max %ld), VmHWM %ld MiB\n",
          sl.n, sl.flags ? "compact" : "default-stack", (double)(spawned - t0) / 1e9, (double)(t1 - t0) / 1e9,
          sl.peak, sl.maps_at_peak, max_map_count(), status_kib("VmHWM") / 1024);
  return NULL;
}

static void run_sleepers(unsigned flags) {
  memset(&sl, 0, sizeof sl);
  sl.n = live_cap(br_test_scaled(1000000));
  sl.flags = flags;
  long want = sl.n;
  int rc = br_run(NULL, m_sleepers, NULL);
  if (rc) tf_record(__FILE__, __LINE__, "br_run: %s", br_strerror(rc));
  V_EQ(sl.n, want);
  V_EQ(sl.done, want);
  V_EQ(sl.failed, 0);
  V_EQ(sl.peak, want); /* really all alive at once */
}

static void c_sleepers_compact(void) { run_sleepers(BR_SPAWN_COMPACT); }
static void c_sleepers_default(void) { run_sleepers(0); }
/* As on a kernel without MADV_GUARD_INSTALL (< 6.13, e.g. Debian 12's 6.1):
 * guard pages cost mappings, so most stacks must come from the budget-free
 * slabs. */
static void c_sleepers_default_old_kernel(void) {
  setenv("BRAID_NO_LIGHT_GUARDS", "1", 1);
  run_sleepers(0);
}

static void test_million_sleepers_compact(void **state) {
  (void)state;
  isolated(c_sleepers_compact, 280000);
}

static void test_million_sleepers_default_stacks(void **state) {
  (void)state;
  isolated(c_sleepers_default, 280000);
}

static void test_million_sleepers_default_stacks_without_light_guards(void **state) {
  (void)state;
  isolated(c_sleepers_default_old_kernel, 280000);
}

/* --- spawn churn ------------------------------------------------------------ */

static void *plus_one(void *arg) { return IP(PI(arg) + 1); }

static void *m_churn(void *arg) {
  (void)arg;
  long n = br_test_scaled(1000000);
  enum { WAVE = 1000 };
  br_task *h[WAVE];
  long long sum = 0;
  int64_t t0 = br_now();
  for (long base = 0; base < n; base += WAVE) {
    long k = n - base < WAVE ? n - base : WAVE;
    for (long i = 0; i < k; i++) {
      br_spawn_opts o = {.flags = (i % 3 == 0) ? BR_SPAWN_COMPACT : 0};
      T_OK(br_spawn(&h[i], plus_one, IP(base + i), &o));
    }
    for (long i = 0; i < k; i++) {
      void *r;
      T_OK(br_join(h[i], &r));
      sum += PI(r);
    }
  }
  T_EQ(sum, (long long)n * (n + 1) / 2);
  fprintf(stderr, "  churn: %ld tasks in waves of %d: %.0f ns per spawn+join\n", n, WAVE,
          (double)(br_now() - t0) / (double)n);
  return NULL;
}

static void test_spawn_churn(void **state) {
  (void)state;
  run_main(m_churn, NULL);
}

/* --- cancellation storm -------------------------------------------------------- */

typedef struct {
  br_chan *chan;
  br_event *event;
  br_future *future;
  br_mutex *mutex;
  br_sem *sem;
  br_queue *queue;
  long cancelled, other;
} storm_ctx;

static storm_ctx st;

static void *storm_waiter(void *arg) {
  long i = (long)PI(arg);
  int rc;
  int v;
  void *it;
  switch (i % 7) {
  case 0: rc = br_sleep_ms(100000); break;
  case 1: rc = br_chan_recv(st.chan, &v); break;
  case 2: rc = br_event_wait(st.event); break;
  case 3: rc = br_await(st.future, NULL); break;
  case 4: rc = br_mutex_lock(st.mutex); break;
  case 5: rc = br_sem_acquire(st.sem); break;
  default: rc = br_queue_get(st.queue, &it); break;
  }
  if (rc == BR_ECANCELED)
    st.cancelled++;
  else
    st.other++;
  return NULL;
}

static void *m_storm(void *arg) {
  (void)arg;
  long n = live_cap(br_test_scaled(100000));
  memset(&st, 0, sizeof st);
  (void)br_chan_new(&st.chan, sizeof(int), 0);
  (void)br_event_new(&st.event);
  (void)br_future_new(&st.future);
  (void)br_mutex_new(&st.mutex);
  (void)br_sem_new(&st.sem, 0);
  (void)br_queue_new(&st.queue, 0);
  T_OK(br_mutex_lock(st.mutex)); /* held by main: lockers wait */
  br_task **h = malloc((size_t)n * sizeof *h);
  for (long i = 0; i < n; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&h[i], storm_waiter, IP(i), &o));
  }
  T_OK(br_yield());
  T_OK(br_sleep_ms(5));
  /* Cancel in a scattered order. */
  for (long k = 0; k < n; k++) T_OK(br_cancel(h[(k * 7919) % n]));
  long bad = 0;
  for (long i = 0; i < n; i++)
    if (br_join(h[i], NULL) != BR_ECANCELED) bad++;
  free(h);
  T_EQ(bad, 0);
  T_EQ(st.cancelled, n);
  T_EQ(st.other, 0);
  /* Every primitive is idle again and can be freed. */
  T_OK(br_mutex_unlock(st.mutex));
  T_OK(br_chan_free(st.chan));
  T_OK(br_event_free(st.event));
  T_OK(br_mutex_free(st.mutex));
  T_OK(br_sem_free(st.sem));
  T_OK(br_queue_free(st.queue));
  br_future_unref(st.future);
  return NULL;
}

static void test_cancellation_storm(void **state) {
  (void)state;
  run_main(m_storm, NULL);
}

/* --- loops on threads completing each other's futures ---------------------- */

enum { XL = 3 };

typedef struct {
  long n;
  br_future **mine;   /* completed by the next loop's tasks */
  br_future **theirs; /* I complete these */
  long bad;
} xloop;

static void *xl_waiter(void *arg) {
  br_future *f = arg;
  void *v = NULL;
  int rc = br_await(f, &v);
  return rc ? br_fail(rc, "await") : v;
}

static void *xl_setter(void *arg) {
  xloop *x = arg;
  for (long i = 0; i < x->n; i++) {
    br_future_set(x->theirs[i], IP(i + 1));
    if ((i & 63) == 0 && br_yield()) return NULL;
  }
  return NULL;
}

static void *xl_main(void *arg) {
  xloop *x = arg;
  br_task **h = malloc((size_t)x->n * sizeof *h);
  for (long i = 0; i < x->n; i++)
    if (br_spawn(&h[i], xl_waiter, x->mine[i], &(br_spawn_opts){.flags = (i % 2) ? BR_SPAWN_COMPACT : 0}))
      return br_fail(BR_EIO, "spawn");
  br_task *s;
  if (br_spawn(&s, xl_setter, x, NULL)) return br_fail(BR_EIO, "spawn");
  for (long i = 0; i < x->n; i++) {
    void *v = NULL;
    if (br_join(h[i], &v) || PI(v) != i + 1) x->bad++;
  }
  br_join(s, NULL);
  free(h);
  return NULL;
}

static void *xl_thread(void *arg) { return IP(br_run(NULL, xl_main, arg)); }

static void test_loops_complete_each_others_futures(void **state) {
  (void)state;
  long n = live_cap(br_test_scaled(50000)) / XL;
  br_future **f[XL];
  xloop x[XL];
  for (int k = 0; k < XL; k++) {
    f[k] = malloc((size_t)n * sizeof *f[k]);
    for (long i = 0; i < n; i++) f[k][i] = tf_future();
  }
  for (int k = 0; k < XL; k++) x[k] = (xloop){.n = n, .mine = f[k], .theirs = f[(k + 1) % XL]};
  pthread_t th[XL];
  for (int k = 0; k < XL; k++) assert_int_equal(pthread_create(&th[k], NULL, xl_thread, &x[k]), 0);
  for (int k = 0; k < XL; k++) {
    void *r;
    pthread_join(th[k], &r);
    assert_int_equal(PI(r), 0);
    assert_int_equal(x[k].bad, 0);
  }
  for (int k = 0; k < XL; k++) {
    for (long i = 0; i < n; i++) br_future_unref(f[k][i]);
    free(f[k]);
  }
}

/* --- limits: a clear error, never a crash ----------------------------------- */

static void *waits_for_event(void *arg) {
  br_event *e = arg;
  int rc = br_event_wait(e);
  return rc ? br_fail(rc, "wait") : NULL;
}

/* Spawn default-stack tasks until braid refuses; then every spawned task must
 * still complete. */
static bool refused;
static void *m_until_refused(void *arg) {
  long cap = (long)PI(arg);
  br_event *e = NULL;
  (void)br_event_new(&e);
  br_task **h = malloc((size_t)cap * sizeof *h);
  T_TRUE(e && h);
  long n = 0;
  int rc = 0;
  while (n < cap && (rc = br_spawn(&h[n], waits_for_event, e, NULL)) == 0) n++;
  fprintf(stderr, "  refused after %ld tasks: %s (%s)\n", n, br_errname(rc), br_strerror(rc));
  br_event_set(e);
  long bad = 0;
  for (long i = 0; i < n; i++)
    if (br_join(h[i], NULL)) bad++;
  free(h);
  br_event_free(e);
  /* Either the limit was hit and reported as such, or braid did not need
   * the exhausted resource (guard pages without mappings: MADV_GUARD_INSTALL)
   * and every task was spawned. */
  if (n < cap) T_TRUE(rc == BR_ENOMEM || rc == BR_ELIMIT);
  refused = n < cap;
  T_TRUE(n > 0);
  T_EQ(bad, 0);
  return NULL;
}

static void c_address_space_limit(void) {
  /* 2 GiB of address space: a few thousand 256 KiB stacks at most. */
  struct rlimit rl = {(rlim_t)2 << 30, (rlim_t)2 << 30};
  V_EQ(setrlimit(RLIMIT_AS, &rl), 0);
  int rc = br_run(NULL, m_until_refused, IP(1000000));
  V_TRUE(rc == 0);
  V_TRUE(refused); /* 1,000,000 stacks cannot fit in 2 GiB */
}

static void test_address_space_limit_is_a_clear_error(void **state) {
  (void)state;
#if defined(BRAID_ASAN) || defined(BRAID_TSAN)
  skip(); /* the sanitizers reserve terabytes of shadow address space */
#endif
  if (br_test_emulated()) skip(); /* qemu-user does not apply RLIMIT_AS to the guest */
  br_child_result r;
  assert_int_equal(br_test_run_child(isolated_child_body, (void *)c_address_space_limit, 120000, &r), 0);
  bool ok = r.exited && r.exit_code == 0 && strstr(r.err, "braid:") != NULL;
  char msg[3000];
  snprintf(msg, sizeof msg, "exit %d signal %d timed out %d; stderr:\n%.2500s", r.exit_code, r.signo, r.timed_out,
           r.err);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

/* Use up nearly every mapping the process may have, then spawn. */
static void c_mapping_limit(void) {
  long maxmaps = max_map_count();
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  /* One region, every other page made PROT_NONE: each page its own VMA. */
  size_t pages = (size_t)maxmaps + 1000;
  char *base = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  V_TRUE(base != MAP_FAILED);
  size_t i = 0;
  for (; i < pages; i += 2)
    if (mprotect(base + i * ps, ps, PROT_NONE) != 0) break;
  /* Give a few hundred mappings back (merging PROT_NONE neighbours). */
  for (size_t k = 0; k < 400 && i >= 2; k++) {
    i -= 2;
    mprotect(base + i * ps, ps, PROT_READ | PROT_WRITE);
  }
  fprintf(stderr, "  %ld mappings in use (max %ld)\n", map_count(), maxmaps);
  int rc = br_run(NULL, m_until_refused, IP(br_test_scaled(200000)));
  V_TRUE(rc == 0);
  if (refused) fprintf(stderr, "REFUSED\n");
}

static void test_mapping_limit_is_a_clear_error(void **state) {
  (void)state;
#if defined(BRAID_ASAN) || defined(BRAID_TSAN)
  skip(); /* the sanitizers need mappings of their own to report anything */
#endif
  br_child_result r;
  assert_int_equal(br_test_run_child(isolated_child_body, (void *)c_mapping_limit, 120000, &r), 0);
  /* If braid refused a spawn, it said why on stderr. */
  bool ok = r.exited && r.exit_code == 0 && (!strstr(r.err, "REFUSED") || strstr(r.err, "braid:"));
  char msg[3000];
  snprintf(msg, sizeof msg, "exit %d signal %d timed out %d; stderr:\n%.2500s", r.exit_code, r.signo, r.timed_out,
           r.err);
  for (char *line = strtok(r.err, "\n"); line; line = strtok(NULL, "\n"))
    if (strncmp(line, "  ", 2) == 0) fprintf(stderr, "%s\n", line);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_million_sleepers_compact),
      cmocka_unit_test(test_million_sleepers_default_stacks),
      cmocka_unit_test(test_million_sleepers_default_stacks_without_light_guards),
      cmocka_unit_test(test_spawn_churn),
      cmocka_unit_test(test_cancellation_storm),
      cmocka_unit_test(test_loops_complete_each_others_futures),
      cmocka_unit_test(test_address_space_limit_is_a_clear_error),
      cmocka_unit_test(test_mapping_limit_is_a_clear_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
