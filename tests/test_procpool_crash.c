/* SPDX-License-Identifier: MIT */
/* test_procpool_crash — isolation: a job that segfaults, aborts, exits, is
 * killed with SIGKILL mid-job, never returns (timeout), exceeds its CPU or
 * memory limit, or takes the fork server down with it fails alone, with an
 * error naming what happened; its worker is replaced and every other job
 * completes exactly once. Also the 100 MiB result, jobs that close or
 * dup2 over descriptors they did not open, initializers slower than a
 * job's timeout or hanging, and a forked child that returns from its job. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>

#include "exec/procpool_int.h" /* PP_EARLY_DEATHS_MAX */
#include "test_procpool_jobs.h"
#include "test_util.h"

static br_procpool *new_pool(int n, const br_procpool_opts *o) {
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, n, o);
  if (r == BR_ENOSYS && br_test_emulated()) br_test_skip("no exec of /proc/self/exe under qemu");
  assert_int_equal(r, 0);
  return p;
}

static br_future *submit(br_procpool *p, tjob j) {
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  return f;
}

/* Under the sanitizers a crash is caught by the sanitizer's own handler,
 * which prints its report and exits with its exit code (ASan 1, TSan 66):
 * the pool then names that status. */
static bool san_status(const char *m) {
#if defined(BRAID_ASAN)
  return strstr(m, "exited with status 1") != NULL;
#elif defined(BRAID_TSAN)
  return strstr(m, "exited with status 66") != NULL;
#else
  (void)m;
  return false;
#endif
}

/* Submit `bad` among 40 good jobs; check the bad one fails with code and a
 * message containing `what`, every good one succeeds, each ran once. */
static void one_bad_among_good(uint32_t action, int code, const char *what) {
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  br_future *f[41];
  for (uint32_t i = 0; i < 41; i++) f[i] = submit(p, tj(i, i == 20 ? action : A_SLEEP, 2));
  for (uint32_t i = 0; i < 41; i++) {
    void *v = NULL;
    int r = br_await(f[i], &v);
    if (i == 20) {
      assert_int_equal(r, code);
      const char *m = br_future_message(f[i]);
      if (!strstr(m, what) && !san_status(m))
        fail_msg("message '%s' does not name '%s'", m, what);
    } else {
      assert_int_equal(r, 0);
      assert_int_equal(tresult(v), i);
    }
    br_future_unref(f[i]);
  }
  /* The pool goes on. */
  br_future *g = submit(p, tj(100, A_OK, 0));
  void *v;
  assert_int_equal(br_await(g, &v), 0);
  assert_int_equal(tresult(v), 100);
  br_future_unref(g);
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.worker_deaths, 1);
  assert_true(st.started >= 3);
  br_procpool_free(p);
  for (uint32_t i = 0; i < 41; i++) assert_int_equal(t.c[i], 1);
  tcounter_close(&t);
}

static void test_segfault(void **state) {
  (void)state;
  one_bad_among_good(A_SEGV, BR_EWORKERDIED, "SIGSEGV");
}

static void test_abort(void **state) {
  (void)state;
  one_bad_among_good(A_ABORT, BR_EWORKERDIED, "SIGABRT");
}

static void test_exit(void **state) {
  (void)state;
  one_bad_among_good(A_EXIT, BR_EWORKERDIED, "exited with status 3");
}

static int wait_pid_file(const char *path) {
  for (int i = 0; i < 2000; i++) {
    FILE *f = fopen(path, "r");
    if (f) {
      int pid = 0;
      int ok = fscanf(f, "%d", &pid);
      fclose(f);
      if (ok == 1 && pid > 0) return pid;
    }
    tsleep_ms(5);
  }
  return -1;
}

static void test_kill9_mid_job(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  tjob victim = tj(0, A_PIDHANG, 0);
  snprintf(victim.path, sizeof victim.path, "%s.pid", t.path);
  br_future *fv = submit(p, victim);
  br_future *f[30];
  for (uint32_t i = 0; i < 30; i++) f[i] = submit(p, tj(1 + i, A_SLEEP, 3));
  int pid = wait_pid_file(victim.path);
  assert_true(pid > 0);
  assert_int_equal(kill(pid, SIGKILL), 0);
  assert_int_equal(br_await(fv, NULL), BR_EWORKERDIED);
  assert_non_null(strstr(br_future_message(fv), "SIGKILL"));
  br_future_unref(fv);
  for (uint32_t i = 0; i < 30; i++) {
    void *v;
    assert_int_equal(br_await(f[i], &v), 0);
    assert_int_equal(tresult(v), 1 + i);
    br_future_unref(f[i]);
  }
  br_procpool_free(p);
  unlink(victim.path);
  for (uint32_t i = 0; i < 31; i++) assert_int_equal(t.c[i], 1);
  tcounter_close(&t);
}

static void test_timeout(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  o.timeout_ms = 10000; /* pool default, overridden below */
  br_procpool *p = new_pool(2, &o);
  br_procpool_submit_opts so = {.timeout_ms = 150};
  tjob h = tj(0, A_HANG, 0);
  br_future *fh;
  int64_t t0 = br_now();
  assert_int_equal(br_procpool_submit(p, &fh, "tjob", &h, sizeof h, &so), 0);
  tjob s = tj(1, A_SPIN, 0);
  br_future *fs;
  assert_int_equal(br_procpool_submit(p, &fs, "tjob", &s, sizeof s, &so), 0);
  br_future *f[20];
  for (uint32_t i = 0; i < 20; i++) f[i] = submit(p, tj(2 + i, A_OK, 0));
  assert_int_equal(br_await(fh, NULL), BR_ETIMEDOUT);
  assert_non_null(strstr(br_future_message(fh), "timed out after 150 ms"));
  assert_int_equal(br_await(fs, NULL), BR_ETIMEDOUT);
  int64_t took = br_now() - t0;
  assert_true(took >= 150 * 1000000LL);
  assert_true(took < 5000 * 1000000LL);
  br_future_unref(fh);
  br_future_unref(fs);
  for (uint32_t i = 0; i < 20; i++) {
    void *v;
    assert_int_equal(br_await(f[i], &v), 0);
    assert_int_equal(tresult(v), 2 + i);
    br_future_unref(f[i]);
  }
  /* Per-item timeout inside a map chunk: the hanging item times out, the
   * items of its chunk before it are lost, after it not run; the other
   * chunks complete. */
  tjob items[12];
  for (uint32_t i = 0; i < 12; i++) items[i] = tj(100 + i, i == 5 ? A_HANG : A_OK, 0);
  uint64_t out[12];
  int errs[12];
  br_procpool_map_opts mo = {.chunksize = 4, .timeout_ms = 150};
  int r = br_procpool_map_fixed(p, out, 8, errs, "tjob", items, sizeof(tjob), 12, &mo);
  assert_int_equal(r, BR_EWORKERDIED); /* item 4, first failing in index order */
  for (int i = 0; i < 12; i++) {
    int want = i < 4 || i >= 8 ? 0 : i == 5 ? BR_ETIMEDOUT : BR_EWORKERDIED;
    assert_int_equal(errs[i], want);
    if (!want) assert_int_equal(out[i], 100 + (uint64_t)i);
  }
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.timeouts, 3);
  br_procpool_free(p);
  for (uint32_t i = 0; i < 22; i++) assert_int_equal(t.c[i], 1);
  for (uint32_t i = 100; i < 112; i++) assert_int_equal(t.c[i], i == 106 || i == 107 ? 0 : 1);
  tcounter_close(&t);
}

static void test_cpu_limit(void **state) {
  (void)state;
  br_procpool_opts o = {.cpu_limit_s = 1};
  br_procpool *p = new_pool(1, &o);
  br_future *f = submit(p, tj(0, A_SPIN, 0));
  assert_int_equal(br_await(f, NULL), BR_EWORKERDIED);
  const char *m = br_future_message(f);
  if (!strstr(m, "SIGXCPU") && !strstr(m, "SIGKILL") && !san_status(m))
    fail_msg("unexpected: %s", m);
  br_future_unref(f);
  f = submit(p, tj(1, A_OK, 0));
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(tresult(v), 1);
  br_future_unref(f);
  br_procpool_free(p);
}

static void test_mem_limit(void **state) {
  (void)state;
  br_procpool_opts o = {.mem_limit = (uint64_t)256 << 20};
#if defined(BRAID_ASAN) || defined(BRAID_TSAN)
  /* The sanitizers reserve tens of terabytes of shadow up front, so no
   * address-space limit leaves them room to work: exercise the option with
   * a limit too high to bite, and the job may succeed. */
  o.mem_limit = (uint64_t)1 << 62;
  bool may_succeed = true;
#else
  bool may_succeed = false;
#endif
  br_procpool *p = new_pool(1, &o);
  br_future *f = submit(p, tj(0, A_ALLOC, 1024));
  void *v0 = NULL;
  int r = br_await(f, &v0);
  if (r == 0) br_bytes_free(v0);
  assert_true(r == BR_ENOMEM || r == BR_EWORKERDIED || (may_succeed && r == 0));
  br_future_unref(f);
  f = submit(p, tj(1, A_ALLOC, 16));
  void *v;
  r = br_await(f, &v);
  assert_int_equal(r, 0);
  assert_int_equal(tresult(v), 1);
  br_future_unref(f);
  br_procpool_free(p);
}

/* Await f, failing the test instead of hanging if it never completes. */
static int await_or_fail(br_future *f, void **v) {
  int r = br_await_until(f, v, br_deadline_ms(60000));
  if (r == BR_ETIMEDOUT && !br_future_done(f)) fail_msg("a job's future never completed");
  return r;
}

/* A job may close or dup2 over descriptors it did not open (a daemon-style
 * loop over 0..10, closefrom(3) before an exec). The worker keeps its own
 * out of the low numbers, so the first harms nothing and the worker goes
 * on; after the second the worker notices before it uses them again, exits
 * and is replaced: a small result (already in the ring) still arrives, one
 * that needs the worker's socket fails with a message saying why. Never a
 * hang, and every job runs once. */
static void test_job_closes_descriptors(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(1, &o);
  static const struct {
    uint32_t action, ms;
    int code;
  } steps[] = {{A_DUP2LOW, 0, 0}, {A_OK, 0, 0},        {A_CLOSEALL, 0, 0},
               {A_OK, 0, 0},      {A_CLOSEALL, 1, BR_EWORKERDIED}, {A_OK, 0, 0}};
  enum { NSTEPS = sizeof steps / sizeof *steps };
  for (uint32_t i = 0; i < NSTEPS; i++) {
    br_future *f = submit(p, tj(i, steps[i].action, steps[i].ms));
    void *v = NULL;
    int r = await_or_fail(f, &v);
    if (r != steps[i].code) fail_msg("step %u: %s (%s)", i, br_errname(r), br_future_message(f));
    if (r == 0) {
      br_bytes *b = v;
      assert_int_equal(b->len, steps[i].ms ? (size_t)steps[i].ms << 20 : 8);
      if (!steps[i].ms) assert_int_equal(tresult(v), i);
      else br_bytes_free(b);
    } else {
      const char *m = br_future_message(f);
      if (!strstr(m, "closed or replaced the worker's own descriptors"))
        fail_msg("message '%s' does not say why", m);
    }
    br_future_unref(f);
    if (i == 1) { /* the dup2 over 0..10 touched nothing of the worker's */
      br_procpool_stats st;
      br_procpool_get_stats(p, &st);
      assert_int_equal(st.worker_deaths, 0);
      assert_int_equal(st.started, 1);
    }
  }
  for (uint32_t i = 0; i < NSTEPS; i++) assert_int_equal(atomic_load(&t.c[i]), 1);
  assert_int_equal(br_procpool_free(p), 0);
  tcounter_close(&t);
}

/* A job's timeout counts from its start: an initializer slower than the
 * timeout (plus the pool's one second of slack) delays the job, it does not
 * kill the worker (which made a pool whose initializer takes 2 s useless
 * for jobs with a 500 ms timeout). The pool's own timeout_ms bounds the
 * initializer: one that hangs breaks the pool, with a message naming it. */
static void test_slow_initializer(void **state) {
  (void)state;
  uint32_t ms = 2000;
  br_procpool_opts o = {.initializer = "tslowinit", .init_arg = &ms, .init_arg_len = sizeof ms};
  br_procpool *p = new_pool(1, &o);
  tjob j = tj(0, A_OK, 0);
  br_procpool_submit_opts so = {.timeout_ms = 500};
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, &so), 0);
  void *v = NULL;
  int r = await_or_fail(f, &v);
  if (r != 0) fail_msg("%s: %s", br_errname(r), br_future_message(f));
  assert_int_equal(tresult(v), 0);
  br_future_unref(f);
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.timeouts, 0);
  assert_int_equal(st.worker_deaths, 0);
  assert_int_equal(st.started, 1);
  assert_int_equal(br_procpool_free(p), 0);

  ms = 3600 * 1000; /* hangs */
  o.timeout_ms = 100;
  p = new_pool(1, &o);
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  r = await_or_fail(f, NULL);
  const char *m = br_future_message(f);
  assert_int_equal(r, BR_EFAILED);
  if (!strstr(m, "initializer 'tslowinit' ran past the pool's timeout of 100 ms"))
    fail_msg("message '%s' does not say why", m);
  br_future_unref(f);
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.started, PP_EARLY_DEATHS_MAX);
  assert_int_equal(br_procpool_free(p), 0);
}

/* A job forks a child that returns from the job instead of calling _exit()
 * (an easy mistake): the child must end there, not go on as a second worker
 * on the same rings, publishing over the worker's results and running every
 * later job a second time. */
static void test_fork_child_returns(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(1, &o);
  enum { N = 21 };
  for (uint32_t i = 0; i < N; i++) {
    br_future *f = submit(p, tj(i, i == 0 ? A_FORKRET : A_OK, 0));
    void *v = NULL;
    int r = await_or_fail(f, &v);
    if (r != 0) fail_msg("job %u: %s (%s)", i, br_errname(r), br_future_message(f));
    assert_int_equal(tresult(v), i);
    br_future_unref(f);
  }
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_int_equal(st.worker_deaths, 0);
  assert_int_equal(br_procpool_free(p), 0);
  for (uint32_t i = 0; i < N; i++)
    if (atomic_load(&t.c[i]) != 1) fail_msg("job %u ran %u times", i, (unsigned)t.c[i]);
  tcounter_close(&t);
}

static void test_100mib_result(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  br_future *f = submit(p, tj(0, A_BIG, 100));
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  br_bytes *b = v;
  assert_int_equal(b->len, (size_t)100 << 20);
  const unsigned char *d = b->data;
  for (size_t i = 0; i < b->len; i++)
    if (d[i] != (unsigned char)(i * 7 + 1)) fail_msg("byte %zu differs", i);
  br_bytes_free(b);
  br_future_unref(f);
  br_procpool_free(p);
}

/* The pid of our child named braid-procpool-server. */
static int find_server(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = -1;
  while (d && (e = readdir(d))) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    int ppid = 0;
    if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1 || ppid != getpid()) continue;
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    f = fopen(path, "r");
    if (!f) continue;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strcmp(buf, "braid-procpool-server") == 0) found = pid;
  }
  if (d) closedir(d);
  return found;
}

static void test_server_killed(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(2, &o);
  br_future *f[40];
  for (uint32_t i = 0; i < 40; i++) f[i] = submit(p, tj(i, A_SLEEP, 5));
  /* posix_spawn returns once the exec has begun, before the kernel sets
   * the new image's argv: look for a little while. */
  int spid = -1;
  for (int i = 0; i < 400 && spid <= 0; i++) {
    spid = find_server();
    if (spid <= 0) tsleep_ms(5);
  }
  assert_true(spid > 0);
  assert_int_equal(kill(spid, SIGKILL), 0);
  int ok = 0, died = 0;
  bool failed[40] = {0};
  for (uint32_t i = 0; i < 40; i++) {
    void *v = NULL;
    int r = br_await(f[i], &v);
    if (r == 0) {
      assert_int_equal(tresult(v), i);
      ok++;
    } else {
      assert_int_equal(r, BR_EWORKERDIED);
      failed[i] = true;
      died++;
    }
    br_future_unref(f[i]);
  }
  assert_true(died <= 2); /* at most the jobs running when it died */
  assert_int_equal(ok + died, 40);
  br_future *g = submit(p, tj(50, A_OK, 0));
  void *v;
  assert_int_equal(br_await(g, &v), 0);
  assert_int_equal(tresult(v), 50);
  br_future_unref(g);
  br_procpool_free(p);
  /* A job that failed had started (it may have been killed before its first
   * instruction); every other one ran exactly once. */
  for (uint32_t i = 0; i < 40; i++)
    if (failed[i] ? t.c[i] > 1 : t.c[i] != 1)
      fail_msg("job %u ran %u times", i, (unsigned)t.c[i]);
  tcounter_close(&t);
}

/* A job that leaves a process running in the background and returns: the
 * process answers with the pid of its child, which waits for ever. */
static int bg_child_fn(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  pid_t c = fork();
  if (c < 0) {
    int e = -errno;
    br_fail(e, "fork");
    return e;
  }
  if (c == 0)
    for (;;) pause(); /* until something kills it */
  int64_t pid = c;
  return br_bytes_set(out, &pid, sizeof pid);
}
BR_JOB(bg_child, bg_child_fn);

/* Whether pid names a process that runs (not gone, not a zombie). */
static bool process_alive(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  char *st = br_test_read_file(path, NULL);
  if (!st) return false;
  const char *paren = strrchr(st, ')');
  bool alive = paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
  free(st);
  return alive;
}

/* What a job left running dies with its worker: when the pool is freed,
 * and when the worker is recycled (max_jobs_per_worker). */
static void test_background_child_dies_with_worker(void **state) {
  (void)state;
  for (int recycle = 0; recycle < 2; recycle++) {
    br_procpool_opts o = {.max_jobs_per_worker = recycle ? 1 : 0};
    br_procpool *p = new_pool(1, &o);
    br_future *f;
    assert_int_equal(br_procpool_submit(p, &f, "bg_child", NULL, 0, NULL), 0);
    void *v = NULL;
    assert_int_equal(br_await(f, &v), 0);
    int64_t pid;
    memcpy(&pid, ((br_bytes *)v)->data, sizeof pid);
    br_bytes_free(v);
    br_future_unref(f);
    int64_t second = 0;
    if (recycle) { /* a second job: the first worker has gone by then */
      assert_int_equal(br_procpool_submit(p, &f, "bg_child", NULL, 0, NULL), 0);
      assert_int_equal(br_await(f, &v), 0);
      memcpy(&second, ((br_bytes *)v)->data, sizeof second);
      br_bytes_free(v);
      br_future_unref(f);
    } else {
      assert_true(process_alive((pid_t)pid));
      assert_int_equal(br_procpool_free(p), 0);
    }
    /* The kill is asynchronous: wait for it, 10 s at the most. */
    for (int i = 0; i < 1000 && process_alive((pid_t)pid); i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
    bool alive = process_alive((pid_t)pid);
    if (alive) kill((pid_t)pid, SIGKILL);
    if (recycle) assert_int_equal(br_procpool_free(p), 0);
    if (second) kill((pid_t)second, SIGKILL); /* gone with the pool already, unless it failed */
    if (alive) fail_msg("the job's background process %lld outlived its worker (%s)", (long long)pid,
                        recycle ? "recycled" : "pool freed");
  }
}

int main(void) {
  /* qemu-user can neither exec this foreign-architecture program (no
   * binfmt_misc) nor, on our CI machines, create threads reliably. */
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_segfault),      cmocka_unit_test(test_abort),
      cmocka_unit_test(test_exit),          cmocka_unit_test(test_kill9_mid_job),
      cmocka_unit_test(test_timeout),       cmocka_unit_test(test_cpu_limit),
      cmocka_unit_test(test_mem_limit),     cmocka_unit_test(test_100mib_result),
      cmocka_unit_test(test_server_killed), cmocka_unit_test(test_job_closes_descriptors),
      cmocka_unit_test(test_slow_initializer), cmocka_unit_test(test_fork_child_returns),
      cmocka_unit_test(test_background_child_dies_with_worker),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
