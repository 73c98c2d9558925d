/* SPDX-License-Identifier: MIT */
/* test_faults_core — the core under faults and races an attacker or a busy
 * machine brings: futures dropped on another thread while their loop is
 * freed, br_call_soon_threadsafe racing br_loop_free (and its bound), SIGINT
 * while br_run frees its loop or when it is ignored, br_bytes_resize with
 * sizes that wrap, and SIGSEGV/SIGBUS sent by kill() rather than raised by a
 * fault. Each case runs in a child process: before the fixes they crashed,
 * hung or corrupted memory, and a crash must not take the other cases down. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <braid/procpool.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "core/core.h"
#include "core/loop.h"
#include "exec/jobs.h"

#define CHILD_MS 60000

/* Run fn in a child; it reports "ok" on stderr when every check passed. */
static void expect_child_ok(void (*fn)(void *), void *arg) {
  br_child_result r;
  assert_int_equal(br_test_run_child(fn, arg, CHILD_MS, &r), 0);
  if (!r.exited || r.exit_code != 0 || !strstr(r.err, "ok\n"))
    fail_msg("child: exited %d code %d signal %d timed out %d; stderr:\n%s", r.exited,
             r.exit_code, r.signo, r.timed_out, r.err);
  br_child_result_free(&r);
}

#define CHECK(c)                                                          \
  do {                                                                    \
    if (!(c)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      _exit(3);                                                           \
    }                                                                     \
  } while (0)

static void spin(long n) {
  for (volatile long i = 0; i < n; i++) {
  }
}

/* --- the last reference to task futures dropped on another thread while
 * br_loop_free runs --------------------------------------------------------- */

typedef struct {
  br_future **fs;
  long n;
  int64_t start, span; /* drop i at start + span * i / n (br_now()) */
  atomic_int go;
} drop_ctx;

static void *dropper(void *arg) {
  drop_ctx *d = arg;
  while (!atomic_load(&d->go)) sched_yield();
  for (long i = 0; i < d->n; i++) {
    int64_t at = d->start + (int64_t)((double)d->span * (double)i / (double)d->n);
    while (br_now() < at) spin(50);
    /* Everything about the task is readable until the last reference goes. */
    if (br_future_done(d->fs[i])) (void)br_future_error(d->fs[i]);
    /* Cancelling from a thread that is not the task's loop: refused, or
     * done already, whatever phase of the free the loop is in. */
    int c = br_future_cancel(d->fs[i]);
    CHECK(c == BR_EPERM || c == BR_EALREADY);
    br_future_unref(d->fs[i]);
  }
  return NULL;
}

static void *sleeps_long(void *arg) {
  (void)arg;
  br_sleep_ms(60000);
  return NULL;
}

static void *returns_at_once(void *arg) { return arg; }

/* LeakSanitizer's check, where the build has it: the child ends with
 * _exit, which skips the check at exit. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void drop_child(void *arg) {
  (void)arg;
  long n = br_test_scaled(20000);
  long structs_before = br__task_structs_live();
  /* The drops are spread over the time the previous free took (half of it,
   * all of it, half as long again), so that some land in each of its
   * phases: cancelling, draining, marking orphans, releasing the loop. */
  int64_t took = 0;
  for (int round = 0; round < 12; round++) {
    br_loop *L = NULL;
    CHECK(br_loop_new(&L, NULL) == 0);
    drop_ctx d = {.n = n, .span = took * (round % 3 + 1) / 2};
    d.fs = calloc((size_t)n, sizeof *d.fs);
    CHECK(d.fs);
    /* Half finish before the free, half are cancelled by it: either way the
     * dropper's reference is the last one, dropped before, during or after
     * br_loop_free. */
    for (int half = 0; half < 2; half++) {
      /* even places: finished before the free; odd ones: asleep */
      for (long i = half; i < n; i += 2) {
        br_task *t;
        CHECK(br_loop_spawn(L, &t, half ? sleeps_long : returns_at_once, NULL, NULL) == 0);
        d.fs[i] = br_future_ref(br_task_future(t));
        CHECK(br_detach(t) == 0);
      }
      if (!half) CHECK(br_loop_run(L) == 0);
    }
    pthread_t th;
    CHECK(pthread_create(&th, NULL, dropper, &d) == 0);
    d.start = br_now();
    atomic_store(&d.go, 1);
    CHECK(br_loop_free(L) == 0);
    took = br_now() - d.start;
    pthread_join(th, NULL);
    free(d.fs);
  }
  /* Every task struct came back: none was handed to a loop already past its
   * last drain. */
  CHECK(br__task_structs_live() == structs_before);
  if (__lsan_do_recoverable_leak_check) CHECK(__lsan_do_recoverable_leak_check() == 0);
  fprintf(stderr, "ok\n");
}

static void test_futures_dropped_during_loop_free(void **state) {
  (void)state;
  expect_child_ok(drop_child, NULL);
}

/* --- br_call_soon_threadsafe from several threads while the loop is freed -- */

#define POSTERS 4

typedef struct {
  br_loop *loop;
  atomic_long accepted, ran, closed, full, bad, after_closed;
  atomic_int started;
} post_ctx;

static void count_cb(void *arg) {
  post_ctx *p = arg;
  atomic_fetch_add(&p->ran, 1);
}

static void *poster(void *arg) {
  post_ctx *p = arg;
  atomic_fetch_add(&p->started, 1);
  long closed_seen = 0;
  while (closed_seen < 20000) {
    int rc = br_call_soon_threadsafe(p->loop, count_cb, p);
    if (rc == 0) {
      atomic_fetch_add(&p->accepted, 1);
      if (closed_seen) atomic_fetch_add(&p->after_closed, 1);
    } else if (rc == BR_ECLOSED) {
      closed_seen++;
    } else if (rc == BR_EAGAIN) {
      atomic_fetch_add(&p->full, 1);
      sched_yield();
    } else {
      atomic_fetch_add(&p->bad, 1);
    }
  }
  atomic_fetch_add(&p->closed, closed_seen);
  return NULL;
}

static void *naps(void *arg) {
  (void)arg;
  br_sleep_ms(30);
  /* The posters never stop handing callbacks over: the loop would always
   * have more to run. */
  br_loop_stop(br_loop_current());
  return NULL;
}

static void post_child(void *arg) {
  (void)arg;
  for (int round = 0; round < 10; round++) {
    post_ctx p = {0};
    CHECK(br_loop_new(&p.loop, NULL) == 0);
    pthread_t th[POSTERS];
    for (int i = 0; i < POSTERS; i++) CHECK(pthread_create(&th[i], NULL, poster, &p) == 0);
    while (atomic_load(&p.started) < POSTERS || atomic_load(&p.accepted) < 100) sched_yield();
    /* Run a little (callbacks run), then free while the posters go on. */
    br_task *t;
    CHECK(br_loop_spawn(p.loop, &t, naps, NULL, NULL) == 0);
    CHECK(br_loop_run(p.loop) == 0);
    CHECK(br_task_close(t) == 0);
    CHECK(br_loop_free(p.loop) == 0);
    /* The posters keep calling with the freed loop's pointer: BR_ECLOSED. */
    for (int i = 0; i < POSTERS; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&p.bad) == 0);
    CHECK(atomic_load(&p.after_closed) == 0);
    CHECK(atomic_load(&p.accepted) == atomic_load(&p.ran)); /* nothing lost, nothing twice */
  }
  fprintf(stderr, "ok\n");
}

static void test_call_soon_threadsafe_races_loop_free(void **state) {
  (void)state;
  expect_child_ok(post_child, NULL);
}

/* The queue of callbacks handed over by other threads is bounded: a loop
 * that does not run does not grow without limit. */
typedef struct {
  br_loop *loop;
  long accepted;
  int last_rc;
} fill_ctx;

static int fill_ran;
static void fill_cb(void *arg) {
  (void)arg;
  fill_ran++;
}

static void *filler(void *arg) {
  fill_ctx *f = arg;
  for (;;) {
    int rc = br_call_soon_threadsafe(f->loop, fill_cb, NULL);
    if (rc) {
      f->last_rc = rc;
      break;
    }
    if (++f->accepted > 10L * BR_CALL_SOON_THREADSAFE_MAX) break;
  }
  return NULL;
}

static void test_call_soon_threadsafe_is_bounded(void **state) {
  (void)state;
  br_loop *L = NULL;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  fill_ctx f = {.loop = L};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, filler, &f), 0);
  pthread_join(th, NULL);
  assert_int_equal(f.last_rc, BR_EAGAIN);
  assert_int_equal(f.accepted, BR_CALL_SOON_THREADSAFE_MAX);
  /* The same from the loop's own thread. */
  assert_int_equal(br_call_soon_threadsafe(L, fill_cb, NULL), BR_EAGAIN);
  /* Once the loop has run them, there is room again. */
  assert_int_equal(br_loop_run(L), 0);
  assert_int_equal(br_call_soon_threadsafe(L, fill_cb, NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  assert_int_equal(fill_ran, BR_CALL_SOON_THREADSAFE_MAX + 1);
  assert_int_equal(br_loop_free(L), 0);
  /* A freed loop: BR_ECLOSED, without touching its memory. */
  assert_int_equal(br_call_soon_threadsafe(L, fill_cb, NULL), BR_ECLOSED);
  br_loop_stop(L); /* a no-op now */
}

/* --- SIGINT and br_run ------------------------------------------------------ */

static atomic_int user_sigints;
static void user_sigint(int sig) {
  (void)sig;
  atomic_fetch_add(&user_sigints, 1);
}

static atomic_int freed_loops;

/* Called by br_loop_free before it releases anything: a SIGINT now must
 * reach the program's handler, not br_run's (which would wake a loop about
 * to be freed, or, a moment later, already freed). */
static void sigint_at_free(br_loop *L, bool created) {
  (void)L;
  if (created) return;
  atomic_fetch_add(&freed_loops, 1);
  raise(SIGINT);
}

static void *quick_main(void *arg) { return arg; }

static void sigint_at_free_child(void *arg) {
  (void)arg;
  struct sigaction sa = {0};
  sa.sa_handler = user_sigint;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGINT, &sa, NULL) == 0);
  br__loop_set_observer(sigint_at_free);
  for (int i = 0; i < 200; i++) {
    void *res = NULL;
    CHECK(br_run(&res, quick_main, (void *)(intptr_t)7) == 0);
    CHECK((intptr_t)res == 7);
  }
  br__loop_set_observer(NULL);
  CHECK(atomic_load(&freed_loops) == 200);
  CHECK(atomic_load(&user_sigints) == 200);
  struct sigaction now;
  sigaction(SIGINT, NULL, &now);
  CHECK(now.sa_handler == user_sigint);
  fprintf(stderr, "ok\n");
}

static void test_sigint_while_br_run_frees_its_loop(void **state) {
  (void)state;
  expect_child_ok(sigint_at_free_child, NULL);
}

static void *raises_sigint_then_sleeps(void *arg) {
  (void)arg;
  raise(SIGINT);
  kill(getpid(), SIGINT);
  int rc = br_sleep_ms(100);
  return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

/* A program started in the background (`cmd &`) inherits SIGINT ignored:
 * br_run must leave it ignored, as Python does. */
static void sigint_ignored_child(void *arg) {
  (void)arg;
  signal(SIGINT, SIG_IGN);
  void *res = NULL;
  CHECK(br_run(&res, raises_sigint_then_sleeps, NULL) == 0);
  CHECK((intptr_t)res == 1); /* not cancelled */
  struct sigaction now;
  sigaction(SIGINT, NULL, &now);
  CHECK(now.sa_handler == SIG_IGN);
  fprintf(stderr, "ok\n");
}

static void test_br_run_keeps_sigint_ignored(void **state) {
  (void)state;
  expect_child_ok(sigint_ignored_child, NULL);
}

/* --- br_bytes_resize with sizes that wrap ----------------------------------- */

static void check_huge_resizes(void) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  /* Sizes no allocator can give (below PTRDIFF_MAX a sanitizer's malloc
   * would report the request instead of failing it). */
  const size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - pg + 2, SIZE_MAX / 4 * 3 + 1,
                         SIZE_MAX / 2 + 1, (size_t)PTRDIFF_MAX + 1,
                         /* need + need / 4 wraps to 10239: three pages */
                         SIZE_MAX / 5 * 4 + 8192};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    br_bytes b = {0};
    assert_int_equal(br_bytes_set(&b, "abc", 3), 0);
    void *before = b.data;
    assert_null(br_bytes_resize(&b, huge[i]));
    /* b unchanged */
    assert_ptr_equal(b.data, before);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "abc", 3);
    assert_int_not_equal(br_bytes_append(&b, "x", huge[i]), 0);
    assert_int_equal(b.len, 3);
    /* Still usable. */
    char *p = br_bytes_resize(&b, 2 << 20);
    assert_non_null(p);
    assert_memory_equal(p, "abc", 3);
    p[(2 << 20) - 1] = 1;
    assert_null(br_bytes_resize(&b, huge[i]));
    assert_int_equal(b.len, 2 << 20);
    br_bytes_clear(&b);
  }
}

static void test_bytes_resize_huge(void **state) {
  (void)state;
  check_huge_resizes(); /* heap-backed buffers */
  /* In a worker, big buffers are memfd-backed: the page rounding of their
   * size must not wrap either. */
  bool was = br__in_worker;
  br__in_worker = true;
  check_huge_resizes();
  br__in_worker = was;
}

/* --- SIGSEGV / SIGBUS sent, not raised by a fault ---------------------------- */

typedef struct {
  int sig;
  int how;  /* 0: kill() from the loop's thread outside a task, 1: raise() in a
             * task, 2: another thread's kill() while a task runs */
} sent_case;

static void *sends_from_thread(void *arg) {
  sent_case *c = arg;
  usleep(20 * 1000);
  kill(getpid(), c->sig);
  return NULL;
}

static void *task_gets_signal(void *arg) {
  sent_case *c = arg;
  if (c->how == 1) {
    raise(c->sig);
  } else {
    pthread_t th;
    pthread_create(&th, NULL, sends_from_thread, c);
    /* Keep a task running (the handler finds a current task). */
    int64_t end = br_now() + 2000 * 1000000LL;
    while (br_now() < end) spin(1000);
    pthread_join(th, NULL);
  }
  return NULL;
}

static void sent_child(void *arg) {
  sent_case *c = arg;
  br_loop *L = NULL;
  CHECK(br_loop_new(&L, NULL) == 0); /* installs the overflow handler */
  if (c->how == 0) {
    kill(getpid(), c->sig);
  } else {
    br_task *t;
    CHECK(br_loop_spawn(L, &t, task_gets_signal, c, NULL) == 0);
    br_loop_run(L);
  }
  usleep(100 * 1000);
  fprintf(stderr, "survived\n");
}

static void test_sent_fault_signals_kill(void **state) {
  (void)state;
  static const int sigs[] = {SIGSEGV, SIGBUS};
  for (int s = 0; s < 2; s++) {
    for (int how = 0; how < 3; how++) {
      /* qemu-user (7.2) drops a SIGSEGV or SIGBUS another thread sends
       * with kill(): no handler runs and no default action is taken, with
       * or without braid. */
      if (how == 2 && br_test_emulated()) continue;
      sent_case c = {.sig = sigs[s], .how = how};
      br_child_result r;
      assert_int_equal(br_test_run_child(sent_child, &c, CHILD_MS, &r), 0);
      if (!r.signaled || r.signo != c.sig || strstr(r.err, "survived") || strstr(r.err, "overflowed"))
        fail_msg("signal %d how %d: exited %d code %d signal %d; stderr:\n%s", c.sig, how, r.exited,
                 r.exit_code, r.signo, r.err);
      br_child_result_free(&r);
    }
  }
}

/* A handler installed before the loop still gets the signal (chained), and
 * an ignored one stays ignored. */
static atomic_int user_segvs;
static void user_segv(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  if (si->si_code <= 0) atomic_fetch_add(&user_segvs, 1);
}

static void chained_child(void *arg) {
  (void)arg;
  struct sigaction sa = {0};
  sa.sa_sigaction = user_segv;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
  signal(SIGBUS, SIG_IGN);
  br_loop *L = NULL;
  CHECK(br_loop_new(&L, NULL) == 0);
  kill(getpid(), SIGSEGV);
  kill(getpid(), SIGBUS);
  raise(SIGSEGV);
  CHECK(atomic_load(&user_segvs) == 2);
  CHECK(br_loop_free(L) == 0);
  fprintf(stderr, "ok\n");
}

static void test_sent_fault_signals_chain(void **state) {
  (void)state;
  expect_child_ok(chained_child, NULL);
}

/* A real fault outside any guard page is still a plain SIGSEGV. The page
 * is the lowest one (never mapped: vm.mmap_min_addr), far from every task
 * stack: a fresh mapping could land right below one, where a fault does
 * count as that stack's overflow. */
static void *touches_bad_page(void *arg) {
  volatile char *p = arg;
  *p = 1;
  return NULL;
}

static void real_fault_child(void *arg) {
  (void)arg;
  br_loop *L = NULL;
  CHECK(br_loop_new(&L, NULL) == 0);
  char *page = (char *)(uintptr_t)64;
  br_task *t;
  CHECK(br_loop_spawn(L, &t, touches_bad_page, page, NULL) == 0);
  br_loop_run(L);
  fprintf(stderr, "survived\n");
}

static void test_real_fault_still_kills(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(real_fault_child, NULL, CHILD_MS, &r), 0);
  if (!r.signaled || r.signo != SIGSEGV || strstr(r.err, "survived") || strstr(r.err, "overflowed"))
    fail_msg("exited %d code %d signal %d; stderr:\n%s", r.exited, r.exit_code, r.signo, r.err);
  br_child_result_free(&r);
}

int main(void) {
  if (getenv("BRAID_TEST_FILTER")) cmocka_set_test_filter(getenv("BRAID_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_futures_dropped_during_loop_free),
      cmocka_unit_test(test_call_soon_threadsafe_races_loop_free),
      cmocka_unit_test(test_call_soon_threadsafe_is_bounded),
      cmocka_unit_test(test_sigint_while_br_run_frees_its_loop),
      cmocka_unit_test(test_br_run_keeps_sigint_ignored),
      cmocka_unit_test(test_bytes_resize_huge),
      cmocka_unit_test(test_sent_fault_signals_kill),
      cmocka_unit_test(test_sent_fault_signals_chain),
      cmocka_unit_test(test_real_fault_still_kills),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
