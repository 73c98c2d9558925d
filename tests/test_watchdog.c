/* The blocking-call watchdog: a task that blocks its loop is reported with
 * its name (its own or "task-<id>", formatted inside the signal handler),
 * how long, and a backtrace of the stuck thread, through the handler or the
 * log hook; idle loops and loops that keep yielding are not. */
#include <braid.h>

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "test_io_util.h"

typedef struct seen {
  pthread_mutex_t mu;
  int stalls, ends;
  char task[32];
  int64_t stalled_ns, total_ns;
  int nframes;
  bool in_blocker; /* a frame lies inside blocking_call() */
} seen;

static seen S = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Not static, not inlined: its address range identifies the stuck frame. */
__attribute__((noinline)) void blocking_call(int ms);
__attribute__((noinline)) void blocking_call(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  __asm__ volatile("" ::: "memory");
}

static void handler(const br_watchdog_report *r, void *ud) {
  (void)ud;
  pthread_mutex_lock(&S.mu);
  if (r->nframes < 0) {
    S.ends++;
    S.total_ns = r->stalled_ns;
  } else {
    S.stalls++;
    snprintf(S.task, sizeof S.task, "%s", r->task);
    S.stalled_ns = r->stalled_ns;
    S.nframes = r->nframes;
    for (int i = 0; i < r->nframes; i++) {
      uintptr_t pc = (uintptr_t)r->frames[i], f = (uintptr_t)blocking_call;
      if (pc >= f && pc < f + 512) S.in_blocker = true;
    }
  }
  pthread_mutex_unlock(&S.mu);
}

static void *blocker(void *arg) {
  (void)arg;
  blocking_call(300); /* the mistake the watchdog is for */
  return NULL;
}

static void *yielder(void *arg) {
  (void)arg;
  /* Busy for 300 ms, but giving the loop back all the time: fine. */
  int64_t end = br_now() + 300000000;
  while (br_now() < end) br_yield();
  return NULL;
}

static void *body(void *arg) {
  (void)arg;
  assert_int_equal(br_watchdog_enable(br_loop_current(), 50), 0);
  /* Idle in the poller for a while: not a stall. */
  br_sleep_ms(200);
  pthread_mutex_lock(&S.mu);
  assert_int_equal(S.stalls, 0);
  pthread_mutex_unlock(&S.mu);
  /* A yielding task: not a stall either. */
  br_task *t;
  br_spawn(&t, yielder, NULL, &(br_spawn_opts){.name = "yielder"});
  br_join(t, NULL);
  pthread_mutex_lock(&S.mu);
  assert_int_equal(S.stalls, 0);
  pthread_mutex_unlock(&S.mu);
  /* A blocking call: reported once, with name, duration and backtrace. */
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "blocker"});
  br_join(t, NULL);
  br_sleep_ms(100); /* the monitor sees the loop move again */
  pthread_mutex_lock(&S.mu);
  assert_int_equal(S.stalls, 1);
  assert_string_equal(S.task, "blocker");
  assert_true(S.stalled_ns >= 50000000 && S.stalled_ns < 300000000);
  assert_true(S.nframes > 0);
  assert_true(S.in_blocker);
  assert_int_equal(S.ends, 1);
  assert_true(S.total_ns >= 250000000);
  pthread_mutex_unlock(&S.mu);
  br_watchdog_disable(br_loop_current());
  /* Disabled: no more reports. */
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "blocker"});
  br_join(t, NULL);
  br_sleep_ms(50);
  pthread_mutex_lock(&S.mu);
  assert_int_equal(S.stalls, 1);
  pthread_mutex_unlock(&S.mu);
  return NULL;
}

static void test_reports(void **state) {
  (void)state;
  br_watchdog_set_handler(handler, NULL);
  io_run(body, NULL);
  br_watchdog_set_handler(NULL, NULL);
}

/* The default report goes to stderr, with a symbolised backtrace. */
static void *stderr_body(void *arg) {
  (void)arg;
  br_watchdog_enable(br_loop_current(), 0); /* default: BRAID_WATCHDOG_MS */
  br_sleep_ms(1); /* (br_run's first iteration has no heartbeat yet) */
  br_task *t;
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "parser"});
  br_join(t, NULL);
  br_sleep_ms(100);
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void child_stderr(void *arg) {
  (void)arg;
  setenv("BRAID_WATCHDOG_MS", "100", 1);
  br_run(NULL, stderr_body, NULL);
}

static void test_stderr(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_stderr, NULL, 20000, &r), 0);
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  if (!strstr(r.err, "in task 'parser' (watchdog threshold 100 ms)")) fprintf(stderr, "%s", r.err);
  assert_non_null(strstr(r.err, "braid: loop blocked for "));
  assert_non_null(strstr(r.err, "in task 'parser' (watchdog threshold 100 ms)"));
  assert_non_null(strstr(r.err, "braid: where the loop thread is now:"));
  assert_non_null(strstr(r.err, "braid: loop was blocked for "));
  br_child_result_free(&r);
}

/* The default report goes through the log hook: the stall at BR_LOG_WARN,
 * then one message per frame. */
typedef struct logged {
  pthread_mutex_t mu;
  int stall_msgs, frame_msgs, end_msgs, other_level;
  char stall[256];
} logged;

static logged LG = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_hook(br_log_level level, const char *msg, void *ud) {
  (void)ud;
  pthread_mutex_lock(&LG.mu);
  if (level != BR_LOG_WARN) LG.other_level++;
  if (strncmp(msg, "loop blocked for ", 17) == 0) {
    LG.stall_msgs++;
    snprintf(LG.stall, sizeof LG.stall, "%s", msg);
  } else if (strncmp(msg, "  #", 3) == 0) {
    LG.frame_msgs++;
  } else if (strncmp(msg, "loop was blocked for ", 21) == 0) {
    LG.end_msgs++;
  }
  pthread_mutex_unlock(&LG.mu);
}

static void *log_body(void *arg) {
  (void)arg;
  assert_int_equal(br_watchdog_enable(br_loop_current(), 50), 0);
  br_sleep_ms(1);
  br_task *t;
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "logged"});
  br_join(t, NULL);
  br_sleep_ms(100);
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void test_log_hook(void **state) {
  (void)state;
  br_set_log(log_hook, NULL);
  io_run(log_body, NULL);
  br_set_log(NULL, NULL);
  pthread_mutex_lock(&LG.mu);
  assert_int_equal(LG.stall_msgs, 1);
  assert_non_null(strstr(LG.stall, "in task 'logged' (watchdog threshold 50 ms)"));
  assert_true(LG.frame_msgs > 0);
  assert_int_equal(LG.end_msgs, 1);
  assert_int_equal(LG.other_level, 0);
  pthread_mutex_unlock(&LG.mu);
}

/* A task without a name is reported as br_task_name() calls it,
 * "task-<id>": the signal handler formats the id itself (no stdio). */
static void *unnamed_body(void *arg) {
  uint64_t *id = arg;
  assert_int_equal(br_watchdog_enable(br_loop_current(), 50), 0);
  br_sleep_ms(1);
  br_task *t;
  br_spawn(&t, blocker, NULL, NULL);
  *id = br_task_id(t);
  br_join(t, NULL);
  br_sleep_ms(100);
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void test_unnamed_task(void **state) {
  (void)state;
  memset(&S.stalls, 0, sizeof S - offsetof(seen, stalls));
  br_watchdog_set_handler(handler, NULL);
  uint64_t id = 0;
  io_run(unnamed_body, &id);
  br_watchdog_set_handler(NULL, NULL);
  char want[32];
  snprintf(want, sizeof want, "task-%llu", (unsigned long long)id);
  assert_true(id > 0);
  assert_int_equal(S.stalls, 1);
  assert_string_equal(S.task, want);
}

/* BRAID_DEBUG=1 watches every loop with no code at all. */
static void *debug_body(void *arg) {
  (void)arg;
  br_sleep_ms(1); /* (br_run's first iteration has no heartbeat yet) */
  br_task *t;
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "legacy-call"});
  br_join(t, NULL);
  br_sleep_ms(100);
  return NULL;
}

static void child_debug(void *arg) {
  (void)arg;
  setenv("BRAID_DEBUG", "1", 1);
  unsetenv("BRAID_WATCHDOG_MS");
  br_run(NULL, debug_body, NULL);
}

static void test_braid_debug(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(child_debug, NULL, 20000, &r), 0);
  assert_true(r.exited);
  assert_int_equal(r.exit_code, 0);
  if (!strstr(r.err, "in task 'legacy-call' (watchdog threshold 100 ms)")) fprintf(stderr, "%s", r.err);
  assert_non_null(strstr(r.err, "in task 'legacy-call' (watchdog threshold 100 ms)"));
  br_child_result_free(&r);
}

/* br_loop_opts.watchdog_ms: watched from birth, forgotten at free. */
static void test_loop_option(void **state) {
  (void)state;
  memset(&S.stalls, 0, sizeof S - offsetof(seen, stalls));
  br_watchdog_set_handler(handler, NULL);
  br_loop_opts o = {.watchdog_ms = 50};
  void *res;
  assert_int_equal(br_run_opts(&res, debug_body, NULL, &o), 0);
  br_watchdog_set_handler(NULL, NULL);
  assert_int_equal(S.stalls, 1);
  assert_string_equal(S.task, "legacy-call");
}

/* Several loops on several threads, one monitor. */
static void *thread_loop(void *arg) {
  (void)arg;
  br_loop *L;
  assert_int_equal(br_loop_new(&L, NULL), 0);
  br_watchdog_enable(L, 50);
  br_task *t;
  br_loop_spawn(L, &t, blocker, NULL, &(br_spawn_opts){.name = "blocker"});
  br_loop_run(L);
  br_watchdog_disable(L);
  br_loop_free(L);
  return NULL;
}

static void test_many_loops(void **state) {
  (void)state;
  memset(&S.stalls, 0, sizeof S - offsetof(seen, stalls));
  br_watchdog_set_handler(handler, NULL);
  pthread_t th[3];
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, thread_loop, NULL);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  br_watchdog_set_handler(NULL, NULL);
  /* Sampling one stuck loop takes a moment: all three must still be seen. */
  assert_int_equal(S.stalls, 3);
  assert_int_equal(br_watchdog_enable(NULL, 10), BR_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    /* First, while the process has one thread: the child it forks starts
     * threads, which ThreadSanitizer refuses after a multi-threaded fork. */
    cmocka_unit_test(test_stderr),
    cmocka_unit_test(test_braid_debug),
    cmocka_unit_test(test_reports),
    cmocka_unit_test(test_loop_option),
    cmocka_unit_test(test_log_hook),
    cmocka_unit_test(test_unnamed_task),
    cmocka_unit_test(test_many_loops),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
