/* SPDX-License-Identifier: MIT */
/* The blocking-call watchdog: a task that blocks its loop is reported with
 * its name (its own or "task-<id>", formatted inside the signal handler),
 * how long, and a backtrace of the stuck thread, through the handler or the
 * log hook; idle loops and loops that keep yielding are not. */
#include <braid.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "test_io_util.h"

/* What the handler saw. Only reports about the task a test expects to
 * stall (`want`) are counted as stalls; reports about any other task go to
 * `others` (on a loaded machine a loop can really stand still elsewhere,
 * e.g. descheduled between two polls). */
typedef struct seen {
  pthread_mutex_t mu;
  char want[32];
  int stalls, ends; /* about `want`, and the ends that followed them */
  int others;
  char task[32];
  int64_t stalled_ns, total_ns;
  int nframes;
  bool in_blocker; /* a frame lies inside blocking_call() */
  bool last_wanted;
  char syscall[24], waits_on[16], evidence[320]; /* the stall's evidence */
  double cpu_share;
} seen;

static seen S = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Not static, not inlined: its address range identifies the stuck frame. */
__attribute__((noinline)) void blocking_call(int ms);
__attribute__((noinline)) void blocking_call(int ms) {
  /* In 10 ms steps: a sanitizer may hold a signal back until the system
   * call it arrived in returns, and the sample must still land in here. */
  int64_t end = br_now() + (int64_t)ms * 1000000;
  while (br_now() < end) {
    struct timespec ts = {0, 10000000L};
    nanosleep(&ts, NULL);
  }
  __asm__ volatile("" ::: "memory");
}

static void handler(const br_watchdog_report *r, void *ud) {
  (void)ud;
  pthread_mutex_lock(&S.mu);
  if (r->nframes < 0) {
    if (S.last_wanted) {
      S.ends++;
      S.total_ns = r->stalled_ns;
    }
    S.last_wanted = false;
  } else if (strcmp(r->task, S.want) != 0) {
    S.others++;
    S.last_wanted = false;
  } else {
    S.last_wanted = true;
    S.stalls++;
    snprintf(S.task, sizeof S.task, "%s", r->task);
    S.stalled_ns = r->stalled_ns;
    S.nframes = r->nframes;
    snprintf(S.syscall, sizeof S.syscall, "%s", r->syscall);
    snprintf(S.waits_on, sizeof S.waits_on, "%s", r->waits_on);
    snprintf(S.evidence, sizeof S.evidence, "%s", r->evidence);
    S.cpu_share = r->cpu_share;
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

/* The longest the loop may have stayed away from its poller while the
 * yielder ran: a busy loop polls only every 32 rounds (BUSY_POLL_EVERY in
 * core/loop.c), so this is the longest span of 33 consecutive yields. On a
 * loaded machine (sanitizers, parallel tests) that can pass the threshold,
 * and then a report is right. */
static int64_t yield_max_gap;

static void *yielder(void *arg) {
  (void)arg;
  /* Busy for 300 ms, but giving the loop back all the time: fine. */
  enum { SPAN = 33 };
  int64_t ring[SPAN];
  int64_t end = br_now() + 300000000, now = br_now();
  for (int i = 0; i < SPAN; i++) ring[i] = now;
  yield_max_gap = 0;
  for (unsigned k = 0; now < end; k++) {
    br_yield();
    now = br_now();
    int64_t gap = now - ring[k % SPAN]; /* since SPAN yields ago */
    if (gap > yield_max_gap) yield_max_gap = gap;
    ring[k % SPAN] = now;
  }
  return NULL;
}

/* A copy of what the handler saw, taken under its lock: assertions run on
 * the copy, so a failing one never leaves the lock held (the monitor
 * thread's handler would wait for it forever). */
typedef struct seen_copy {
  int stalls, ends, others;
  char task[32];
  int64_t stalled_ns, total_ns;
  int nframes;
  bool in_blocker;
  char syscall[24], waits_on[16], evidence[320];
  double cpu_share;
} seen_copy;

static seen_copy snapshot(void) {
  pthread_mutex_lock(&S.mu);
  seen_copy c = {.stalls = S.stalls, .ends = S.ends, .others = S.others, .stalled_ns = S.stalled_ns,
                 .total_ns = S.total_ns, .nframes = S.nframes, .in_blocker = S.in_blocker};
  memcpy(c.task, S.task, sizeof c.task);
  memcpy(c.syscall, S.syscall, sizeof c.syscall);
  memcpy(c.waits_on, S.waits_on, sizeof c.waits_on);
  memcpy(c.evidence, S.evidence, sizeof c.evidence);
  c.cpu_share = S.cpu_share;
  pthread_mutex_unlock(&S.mu);
  return c;
}

/* Wait (at most 10 s) until the handler has seen `ends` stall ends. */
static void wait_ends(int ends) {
  for (int i = 0; i < 2000 && snapshot().ends < ends; i++) br_sleep_ms(5);
}

/* Forget what was seen; expect stalls of the task named want. */
static void expect(const char *want) {
  pthread_mutex_lock(&S.mu);
  memset(&S.want, 0, sizeof S - offsetof(seen, want));
  snprintf(S.want, sizeof S.want, "%s", want);
  pthread_mutex_unlock(&S.mu);
}

static void *body(void *arg) {
  (void)arg;
  assert_int_equal(br_watchdog_enable(br_loop_current(), 50), 0);
  /* Idle in the poller for a while: not a stall. */
  expect("idle");
  br_sleep_ms(200);
  assert_int_equal(snapshot().others, 0);
  /* A yielding task: not a stall either (unless the machine itself held
   * the loop back that long). */
  expect("yielder");
  br_task *t;
  br_spawn(&t, yielder, NULL, &(br_spawn_opts){.name = "yielder"});
  br_join(t, NULL);
  if (yield_max_gap < 50000000) assert_int_equal(snapshot().stalls, 0);
  /* A blocking call: reported once, with name, duration and backtrace. */
  expect("blocker");
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "blocker"});
  br_join(t, NULL);
  wait_ends(1); /* the monitor sees the loop move again */
  seen_copy c = snapshot();
  assert_int_equal(c.stalls, 1);
  assert_string_equal(c.task, "blocker");
  /* Reported during the stall, which lasted the blocking call's 300 ms. */
  assert_true(c.stalled_ns >= 50000000 && c.stalled_ns <= c.total_ns);
  assert_true(c.nframes > 0);
  assert_true(c.in_blocker);
  /* The evidence: in a sleep (glibc's nanosleep is clock_nanosleep), off a
   * CPU, with advice. */
  if (strcmp(c.syscall, "nanosleep") && strcmp(c.syscall, "clock_nanosleep"))
    fail_msg("syscall '%s': %s", c.syscall, c.evidence);
  assert_string_equal(c.waits_on, "sleep");
  assert_true(c.cpu_share >= 0 && c.cpu_share < 0.3);
  assert_non_null(strstr(c.evidence, "br_sleep_ms"));
  assert_int_equal(c.ends, 1);
  assert_true(c.total_ns >= 250000000);
  br_watchdog_disable(br_loop_current());
  /* Disabled: no more reports. */
  br_spawn(&t, blocker, NULL, &(br_spawn_opts){.name = "blocker"});
  br_join(t, NULL);
  br_sleep_ms(50);
  assert_int_equal(snapshot().stalls, 1);
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
  assert_non_null(strstr(r.err, "braid: the loop thread is blocked in "));
  assert_non_null(strstr(r.err, "braid: where the loop thread is now:"));
  assert_non_null(strstr(r.err, "braid: loop was blocked for "));
  br_child_result_free(&r);
}

/* The default report goes through the log hook: the stall at BR_LOG_WARN,
 * then one message per frame. */
typedef struct logged {
  pthread_mutex_t mu;
  int stall_msgs, frame_msgs, end_msgs, other_level;
  bool last_wanted;
  char stall[256];
} logged;

static logged LG = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_hook(br_log_level level, const char *msg, void *ud) {
  (void)ud;
  pthread_mutex_lock(&LG.mu);
  if (level != BR_LOG_WARN) LG.other_level++;
  /* (Stalls of other tasks, on a loaded machine, are not counted.) */
  if (strncmp(msg, "loop blocked for ", 17) == 0) {
    LG.last_wanted = strstr(msg, "in task 'logged'") != NULL;
    if (LG.last_wanted) {
      LG.stall_msgs++;
      snprintf(LG.stall, sizeof LG.stall, "%s", msg);
    }
  } else if (strncmp(msg, "  #", 3) == 0) {
    if (LG.last_wanted) LG.frame_msgs++;
  } else if (strncmp(msg, "loop was blocked for ", 21) == 0) {
    if (LG.last_wanted) LG.end_msgs++;
    LG.last_wanted = false;
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
  for (int i = 0; i < 2000; i++) { /* until the end of the stall is logged */
    pthread_mutex_lock(&LG.mu);
    int ends = LG.end_msgs;
    pthread_mutex_unlock(&LG.mu);
    if (ends) break;
    br_sleep_ms(5);
  }
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void test_log_hook(void **state) {
  (void)state;
  br_set_log(log_hook, NULL);
  io_run(log_body, NULL);
  br_set_log(NULL, NULL);
  pthread_mutex_lock(&LG.mu);
  int stall_msgs = LG.stall_msgs, frame_msgs = LG.frame_msgs, end_msgs = LG.end_msgs;
  int other_level = LG.other_level;
  char stall[sizeof LG.stall];
  memcpy(stall, LG.stall, sizeof stall);
  pthread_mutex_unlock(&LG.mu);
  assert_int_equal(stall_msgs, 1);
  assert_non_null(strstr(stall, "in task 'logged' (watchdog threshold 50 ms)"));
  assert_true(frame_msgs > 0);
  assert_int_equal(end_msgs, 1);
  assert_int_equal(other_level, 0);
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
  char want[32];
  snprintf(want, sizeof want, "task-%llu", (unsigned long long)*id);
  expect(want); /* before the blocker runs: it runs when we join */
  br_join(t, NULL);
  wait_ends(1);
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void test_unnamed_task(void **state) {
  (void)state;
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
  expect("legacy-call");
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
  expect("blocker");
  br_watchdog_set_handler(handler, NULL);
  pthread_t th[3];
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, thread_loop, NULL);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  br_watchdog_set_handler(NULL, NULL);
  /* Sampling one stuck loop takes a moment: all three must still be seen. */
  assert_int_equal(S.stalls, 3);
  assert_int_equal(br_watchdog_enable(NULL, 10), BR_EINVAL);
}


/* The evidence tells the kinds of stall apart: computing, a blocking read
 * on a pipe, a lock held by another thread. */
static int ev_pipe[2];
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;

static void *computer(void *arg) {
  (void)arg;
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  int64_t until = ts.tv_sec * 1000000000LL + ts.tv_nsec + 300000000LL;
  volatile uint64_t x = 1;
  for (;;) {
    for (int i = 0; i < 10000; i++) x = x * 6364136223846793005u + 1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (ts.tv_sec * 1000000000LL + ts.tv_nsec >= until) break;
  }
  return NULL;
}

static atomic_int reading;
static void *pipe_reader(void *arg) {
  (void)arg;
  char c;
  atomic_store(&reading, 1);
  while (read(ev_pipe[0], &c, 1) < 0 && errno == EINTR) {}
  return NULL;
}

static void *lock_taker(void *arg) {
  (void)arg;
  while (pthread_mutex_lock(&ev_lock) != 0) {}
  pthread_mutex_unlock(&ev_lock);
  return NULL;
}

static void nap_300ms(void) {
  struct timespec ts = {0, 300000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Another thread: 300 ms after the reader started reading, unblock it. */
static void *pipe_releaser(void *arg) {
  (void)arg;
  while (!atomic_load(&reading)) {
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
  }
  nap_300ms();
  ssize_t w = write(ev_pipe[1], "x", 1);
  (void)w;
  return NULL;
}

/* Another thread: hold the lock for 300 ms (a mutex is unlocked by the
 * thread that locked it). */
static atomic_int lock_held;
static void *lock_holder(void *arg) {
  (void)arg;
  pthread_mutex_lock(&ev_lock);
  atomic_store(&lock_held, 1);
  nap_300ms();
  pthread_mutex_unlock(&ev_lock);
  return NULL;
}

static seen_copy stall_of(br_task_fn fn, const char *name) {
  expect(name);
  br_task *t;
  br_spawn(&t, fn, NULL, &(br_spawn_opts){.name = name});
  br_join(t, NULL);
  wait_ends(1);
  return snapshot();
}

static void *evidence_body(void *arg) {
  (void)arg;
  assert_int_equal(br_watchdog_enable(br_loop_current(), 50), 0);
  br_sleep_ms(1);
  seen_copy c = stall_of(computer, "computer");
  assert_int_equal(c.stalls, 1);
  /* On a CPU, or waiting for one on a busy machine: never in a call. */
  if (strcmp(c.waits_on, "cpu") && strcmp(c.waits_on, "runqueue"))
    fail_msg("computing reported as '%s' (%s)", c.waits_on, c.evidence);
  assert_string_equal(c.syscall, "");
  assert_non_null(strstr(c.evidence, "CPU pool"));

  assert_int_equal(pipe(ev_pipe), 0);
  pthread_t rel;
  atomic_store(&reading, 0);
  pthread_create(&rel, NULL, pipe_releaser, NULL);
  /* Back to the poller before the stall: under TSan pthread_create waits
   * for the new thread, a stall of its own that must not merge with this. */
  br_sleep_ms(1);
  c = stall_of(pipe_reader, "reader");
  pthread_join(rel, NULL);
  assert_int_equal(c.stalls, 1);
  assert_string_equal(c.syscall, "read");
  assert_string_equal(c.waits_on, "pipe");
  assert_true(c.cpu_share >= 0 && c.cpu_share < 0.3);
  assert_non_null(strstr(c.evidence, "blocked in read (pipe)"));
  close(ev_pipe[0]);
  close(ev_pipe[1]);

  atomic_store(&lock_held, 0);
  pthread_create(&rel, NULL, lock_holder, NULL);
  while (!atomic_load(&lock_held)) sched_yield(); /* the holder has it before we ask */
  br_sleep_ms(1); /* back to the poller (above) */
  c = stall_of(lock_taker, "locker");
  pthread_join(rel, NULL);
  assert_int_equal(c.stalls, 1);
  assert_string_equal(c.syscall, "futex");
  assert_string_equal(c.waits_on, "lock");
  assert_non_null(strstr(c.evidence, "br_mutex"));
  br_watchdog_disable(br_loop_current());
  return NULL;
}

static void test_evidence(void **state) {
  (void)state;
  br_watchdog_set_handler(handler, NULL);
  io_run(evidence_body, NULL);
  br_watchdog_set_handler(NULL, NULL);
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
    cmocka_unit_test(test_evidence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
