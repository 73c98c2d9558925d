/* SPDX-License-Identifier: MIT */
/* test_profile — `braid profile` and br_profile on workloads this test builds.
 *
 * The workloads are modes of this very executable (`test_profile --workload
 * NAME`), so every run builds them afresh: one thread computing, two
 * threads computing, a sleeper, a reader of a slow pipe, a client of a slow
 * TCP server, two threads taking turns under one lock (an interpreter lock's
 * shape), a pipeline whose reader and writer wait on its queues while two
 * workers compute (a multi-threaded compressor's shape, alone and held to
 * one CPU), a program that computes and waits in turns, a parent whose
 * CPU-burning child outlives it. Each test checks the verdict `braid profile
 * --json` gives, and the main ingredient of the time, every run. Work is
 * sized in CPU time, not wall time, so a busy machine stretches the runs
 * instead of changing what they are.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <braid.h>
#include <braid/profile.h>

#include "test_util.h"

/* ------------------------------------------------------------------------ */
/* Workloads                                                                 */

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Burn ms of this thread's CPU time. */
static void burn_ms(int ms) {
  int64_t until = thread_cpu_ns() + (int64_t)ms * 1000000;
  volatile uint64_t x = 1;
  while (thread_cpu_ns() < until)
    for (int i = 0; i < 20000; i++) x = x * 6364136223846793005u + 1;
}

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static void *burn_thread(void *arg) {
  burn_ms((int)(intptr_t)arg);
  return NULL;
}

static void w_cpu2(void) {
  pthread_t a, b;
  pthread_create(&a, NULL, burn_thread, (void *)600);
  pthread_create(&b, NULL, burn_thread, (void *)600);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
}

static void *slow_writer(void *arg) {
  int fd = (int)(intptr_t)arg;
  for (int i = 0; i < 15; i++) {
    nap_ms(40);
    if (write(fd, "x", 1) != 1) break;
  }
  close(fd);
  return NULL;
}

static void w_pipe(void) {
  int p[2];
  if (pipe(p) != 0) exit(3);
  pthread_t w;
  pthread_create(&w, NULL, slow_writer, (void *)(intptr_t)p[1]);
  char c;
  while (read(p[0], &c, 1) == 1) {}
  pthread_join(w, NULL);
}

static void *slow_server(void *arg) {
  int lfd = (int)(intptr_t)arg;
  int c = accept(lfd, NULL, NULL);
  for (int i = 0; i < 15 && c >= 0; i++) {
    nap_ms(40);
    if (send(c, "x", 1, MSG_NOSIGNAL) != 1) break;
  }
  if (c >= 0) close(c);
  return NULL;
}

static void w_net(void) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1) ||
      getsockname(lfd, (struct sockaddr *)&a, &len))
    exit(3);
  pthread_t s;
  pthread_create(&s, NULL, slow_server, (void *)(intptr_t)lfd);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) exit(3);
  char c;
  while (recv(fd, &c, 1, 0) == 1) {}
  close(fd);
  pthread_join(s, NULL);
  close(lfd);
}

/* Two threads that compute only while holding the turn: the shape of
 * Python threads under the GIL. The turn is handed over explicitly, so each
 * thread computes half the time and waits on a futex the other half. */
static pthread_mutex_t turn_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;
static int turn;

static void *turn_taker(void *arg) {
  int me = (int)(intptr_t)arg;
  for (int round = 0; round < 40; round++) {
    pthread_mutex_lock(&turn_mu);
    while (turn != me) pthread_cond_wait(&turn_cv, &turn_mu);
    burn_ms(10);
    turn = 1 - me;
    pthread_cond_broadcast(&turn_cv);
    pthread_mutex_unlock(&turn_mu);
  }
  return NULL;
}

static void w_lock(void) {
  pthread_t a, b;
  pthread_create(&a, NULL, turn_taker, (void *)0);
  pthread_create(&b, NULL, turn_taker, (void *)1);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
}

/* A reader, two workers and a writer, the shape of a multi-threaded
 * compressor (zstd -T2, pigz): the main thread prepares each job (2 ms) and
 * hands it over through a queue of two; the workers compute the jobs (16 ms
 * each) in parallel; a writer takes each result (2 ms). The reader and the
 * writer spend most of their lives waiting on the queues' lock, the workers
 * hardly any: this is parallel work, on a busy machine starved work, never
 * threads serialized by a lock. */
enum { PIPE_JOBS = 40, PIPE_DEPTH = 2 };
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static int q_len, q_done, q_results;

static void *pipe_worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&q_mu);
    while (q_len == 0 && !q_done) pthread_cond_wait(&q_cv, &q_mu);
    if (q_len == 0) {
      pthread_mutex_unlock(&q_mu);
      return NULL;
    }
    q_len--;
    pthread_cond_broadcast(&q_cv);
    pthread_mutex_unlock(&q_mu);
    burn_ms(16);
    pthread_mutex_lock(&q_mu);
    q_results++;
    pthread_cond_broadcast(&q_cv);
    pthread_mutex_unlock(&q_mu);
  }
}

static void *pipe_writer(void *arg) {
  (void)arg;
  for (int j = 0; j < PIPE_JOBS; j++) {
    pthread_mutex_lock(&q_mu);
    while (q_results == 0) pthread_cond_wait(&q_cv, &q_mu);
    q_results--;
    pthread_mutex_unlock(&q_mu);
    burn_ms(2);
  }
  return NULL;
}

static void w_pipeline(bool one_cpu) {
  if (one_cpu) {
    /* Every thread on one CPU: the workers ask for two cores and get one,
     * as on a machine busy with other work. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) exit(3);
  }
  pthread_t w[3];
  for (int i = 0; i < 2; i++) pthread_create(&w[i], NULL, pipe_worker, NULL);
  pthread_create(&w[2], NULL, pipe_writer, NULL);
  for (int j = 0; j < PIPE_JOBS; j++) {
    burn_ms(2);
    pthread_mutex_lock(&q_mu);
    while (q_len == PIPE_DEPTH) pthread_cond_wait(&q_cv, &q_mu);
    q_len++;
    pthread_cond_broadcast(&q_cv);
    pthread_mutex_unlock(&q_mu);
  }
  pthread_mutex_lock(&q_mu);
  q_done = 1;
  pthread_cond_broadcast(&q_cv);
  pthread_mutex_unlock(&q_mu);
  for (int i = 0; i < 3; i++) pthread_join(w[i], NULL);
}

static void w_mixed(void) {
  for (int i = 0; i < 5; i++) {
    burn_ms(100);
    nap_ms(100);
  }
}

static void w_orphan(void) {
  pid_t p = fork();
  if (p == 0) {
    burn_ms(500);
    _exit(0);
  }
  _exit(p > 0 ? 0 : 3); /* the parent leaves its child behind */
}

/* A script's shape: one short child after another, each computing 25 ms,
 * the parent waiting for each. On a busy machine most children live less
 * than a sampling interval and are never sampled. */
static void w_forks(void) {
  for (int i = 0; i < 12; i++) {
    pid_t p = fork();
    if (p == 0) {
      burn_ms(25);
      _exit(0);
    }
    if (p < 0 || waitpid(p, NULL, 0) != p) exit(3);
  }
}

/* Direct reads of a file this workload writes first: thousands of waits
 * on the disk, each too short to be caught in a sample. Exits 77 where the
 * file system refuses O_DIRECT (tmpfs). */
static int w_direct(void) {
  char path[] = "braid-profile-direct-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 3;
  close(fd);
  fd = open(path, O_RDWR | O_DIRECT);
  unlink(path);
  if (fd < 0) return 77;
  enum { BLOCK = 4096, BLOCKS = 2048 };
  void *buf;
  if (posix_memalign(&buf, BLOCK, BLOCK)) return 3;
  memset(buf, 'x', BLOCK);
  int rc = 0;
  for (int i = 0; i < BLOCKS && !rc; i++)
    if (pwrite(fd, buf, BLOCK, (off_t)i * BLOCK) != BLOCK) rc = 77;
  for (int pass = 0; pass < 3 && !rc; pass++)
    for (int i = 0; i < BLOCKS && !rc; i++)
      if (pread(fd, buf, BLOCK, (off_t)i * BLOCK) != BLOCK) rc = 77;
  free(buf);
  close(fd);
  return rc;
}

static int workload(const char *name) {
  if (!strcmp(name, "cpu1")) burn_ms(600);
  else if (!strcmp(name, "cpu2")) w_cpu2();
  else if (!strcmp(name, "cpu-short")) burn_ms(150);
  else if (!strcmp(name, "forks")) w_forks();
  else if (!strcmp(name, "sleep")) nap_ms(500);
  else if (!strcmp(name, "pipe")) w_pipe();
  else if (!strcmp(name, "net")) w_net();
  else if (!strcmp(name, "lock")) w_lock();
  else if (!strcmp(name, "mixed")) w_mixed();
  else if (!strcmp(name, "pipeline")) w_pipeline(false);
  else if (!strcmp(name, "pipeline-1cpu")) w_pipeline(true);
  else if (!strcmp(name, "orphan")) w_orphan();
  else if (!strcmp(name, "exit3")) return 3;
  else if (!strcmp(name, "direct")) return w_direct();
  else if (!strcmp(name, "sigterm")) raise(SIGTERM);
  else return 99;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Running `braid profile`                                                   */

static char self_exe[PATH_MAX], braid_cli[PATH_MAX + 32];

typedef struct run {
  int status; /* braid profile's exit code */
  char out[8192];
  char err[8192];
} run;

static void read_all(int fd, char *buf, size_t size) {
  size_t n = 0;
  ssize_t r;
  while (n + 1 < size && (r = read(fd, buf + n, size - 1 - n)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    n += (size_t)r;
  }
  buf[n] = '\0';
}

/* A file run_braid gives braid as its stdout instead of the pipe (NULL:
 * the pipe). */
static const char *braid_stdout;

/* Run braid with args (NULL-terminated), collect stdout, stderr, status. */
static void run_braid(run *r, const char *const *args) {
  char *argv[16];
  int n = 0;
  argv[n++] = braid_cli;
  for (; *args && n < 15; args++) argv[n++] = (char *)*args;
  argv[n] = NULL;
  int out[2], err[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(err), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    if (braid_stdout) {
      int fd = open(braid_stdout, O_WRONLY);
      if (fd < 0) _exit(121);
      dup2(fd, 1);
    }
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    execv(braid_cli, argv);
    _exit(120);
  }
  close(out[1]);
  close(err[1]);
  read_all(out[0], r->out, sizeof r->out); /* the workloads write nothing big */
  read_all(err[0], r->err, sizeof r->err);
  close(out[0]);
  close(err[0]);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  r->status = WEXITSTATUS(st);
}

static void profile_workload(run *r, const char *name) {
  const char *args[] = {"profile", "--json", "--", self_exe, "--workload", name, NULL};
  run_braid(r, args);
  if (r->status != 0) fprintf(stderr, "braid profile (%s): %d\n%s\n", name, r->status, r->err);
  assert_int_equal(r->status, 0);
}

/* The value of "key" in the JSON object: a number, or a string copied out. */
static double json_num(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  if (!p) fail_msg("no key %s in %s", key, json);
  return strtod(p + strlen(pat), NULL);
}

static void json_str(const char *json, const char *key, char *out, size_t size) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *p = strstr(json, pat);
  if (!p) fail_msg("no key %s in %s", key, json);
  p += strlen(pat);
  size_t n = strcspn(p, "\"");
  if (n >= size) n = size - 1;
  memcpy(out, p, n);
  out[n] = '\0';
}

static void expect_verdict(const run *r, const char *verdict) {
  char v[32];
  json_str(r->out, "verdict", v, sizeof v);
  if (strcmp(v, verdict)) fail_msg("verdict %s, expected %s: %s", v, verdict, r->out);
}

/* The sub-verdict is `want` or, when `or_else` is not NULL, that one. */
static void expect_detail(const run *r, const char *want, const char *or_else) {
  char d[32];
  json_str(r->out, "detail", d, sizeof d);
  if (strcmp(d, want) && (!or_else || strcmp(d, or_else)))
    fail_msg("detail %s, expected %s%s%s: %s", d, want, or_else ? " or " : "", or_else ? or_else : "", r->out);
}

static void expect_at_least(const run *r, const char *key, double min) {
  double v = json_num(r->out, key);
  if (!(v >= min)) fail_msg("%s = %.3f, expected at least %.3f: %s", key, v, min, r->out);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void cli_one_thread_computing(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "cpu1");
  expect_verdict(&r, "cpu-bound");
  /* On a CPU, or waiting for one when the machine is busy. */
  assert_true(json_num(r.out, "cpu") + json_num(r.out, "runqueue") >= 0.8);
  expect_at_least(&r, "busy_threads", 1);
  expect_at_least(&r, "samples", 3);
}

static void cli_two_threads_computing(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "cpu2");
  expect_verdict(&r, "cpu-bound");
  expect_at_least(&r, "busy_threads", 2);
  /* Two cores free: parallel; a busy machine: starved. Never serialized. */
  if (br_cpu_count() >= 2) expect_detail(&r, "parallel", "starved");
}

static void cli_sleeper(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "sleep");
  expect_verdict(&r, "io-bound");
  expect_at_least(&r, "sleep", 0.7);
  expect_at_least(&r, "wall_s", 0.45);
}

static void cli_slow_pipe(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "pipe");
  expect_verdict(&r, "io-bound");
  expect_at_least(&r, "pipe", 0.3);
}

static void cli_slow_server(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "net");
  expect_verdict(&r, "io-bound");
  expect_at_least(&r, "network", 0.3);
}

static void cli_serialized_by_a_lock(void **state) {
  (void)state;
  if (br_cpu_count() < 2) br_test_skip("one CPU: serialization cannot be told apart");
  run r;
  profile_workload(&r, "lock");
  expect_verdict(&r, "cpu-bound");
  expect_detail(&r, "serialized", NULL);
  expect_at_least(&r, "lock", 0.1);
}

/* Threads that wait on a lock but ask for two cores are not serialized:
 * the reader and writer of a pipeline wait on its queues while two workers
 * compute. */
static void cli_pipeline_is_parallel(void **state) {
  (void)state;
  if (br_cpu_count() < 2) br_test_skip("one CPU: nothing can be parallel");
  run r;
  profile_workload(&r, "pipeline");
  expect_verdict(&r, "cpu-bound");
  expect_at_least(&r, "busy_threads", 3);
  expect_detail(&r, "parallel", "starved");
}

/* The same pipeline held to one CPU gets one core of the two it asks for:
 * starved, as on a machine busy with other work, not serialized. */
static void cli_pipeline_on_one_cpu_is_starved(void **state) {
  (void)state;
  if (br_cpu_count() < 2) br_test_skip("one CPU: starvation cannot be told apart");
  run r;
  profile_workload(&r, "pipeline-1cpu");
  expect_verdict(&r, "cpu-bound");
  expect_detail(&r, "starved", NULL);
  expect_at_least(&r, "runqueue", 0.25);
}

/* A busy machine, made here: two busy-loop processes per CPU at the same
 * priority as the profiled command, outside its tree. Each dies with this
 * process and after 60 s in any case. */
enum { MAX_HOGS = 64 };
static pid_t hogs[MAX_HOGS];
static int nhogs;

static void hogs_start(void) {
  nhogs = 2 * br_cpu_count();
  if (nhogs > MAX_HOGS) nhogs = MAX_HOGS;
  for (int i = 0; i < nhogs; i++) {
    hogs[i] = fork();
    assert_true(hogs[i] >= 0);
    if (hogs[i] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      alarm(60);
      volatile uint64_t x = 1;
      for (;;) x = x * 6364136223846793005u + 1;
    }
  }
}

static void hogs_stop(void) {
  for (int i = 0; i < nhogs; i++) {
    kill(hogs[i], SIGKILL);
    waitpid(hogs[i], NULL, 0);
  }
  nhogs = 0;
}

/* On a busy machine the verdict stays what the work is: a short computation
 * and a script of short computing children stay cpu-bound (their start, end
 * and unsampled children wait for a CPU too, and are not waiting work), a
 * lock still serializes, computing and sleeping in turns stays mixed, and a
 * program that does nothing is too short to be worth anything. */
static void cli_busy_machine(void **state) {
  (void)state;
  static const struct { const char *workload, *verdict, *detail; } cases[] = {
      {"cpu-short", "cpu-bound", "starved"},
      {"forks", "cpu-bound", "starved"},
      {"lock", "cpu-bound", "serialized"},
      {"mixed", "mixed", "starved"},
      {"sleep", "io-bound", ""},
      /* A program that does nothing, in every build: true(1). (This test
       * program is not: under a sanitizer its start alone takes ~10 ms of
       * CPU.) A busy machine stretches it past 10 ms of wall time. */
      {"true", NULL, "too-short"},
  };
  hogs_start();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run r;
    if (!strcmp(cases[i].workload, "true")) {
      const char *args[] = {"profile", "--json", "--", "true", NULL};
      run_braid(&r, args);
      assert_int_equal(r.status, 0);
    } else {
      profile_workload(&r, cases[i].workload);
    }
    if (br_cpu_count() < 2 && !strcmp(cases[i].workload, "lock")) continue;
    char v[32];
    json_str(r.out, "verdict", v, sizeof v);
    if (cases[i].verdict && strcmp(v, cases[i].verdict)) {
      hogs_stop();
      fail_msg("%s: verdict %s, expected %s: %s", cases[i].workload, v, cases[i].verdict, r.out);
    }
    char d[32];
    json_str(r.out, "detail", d, sizeof d);
    const char *want = cases[i].detail;
    if (!strcmp(want, "starved")) {
      /* Starved when the work spent a quarter of its runnable time waiting
       * for a CPU. The hogs make that likely, not certain: in a short run
       * the scheduler may give the work more than its share. What must hold
       * is that the hogs were felt, and that the sub-verdict follows what
       * was measured. */
      double cpu = json_num(r.out, "cpu"), rq = json_num(r.out, "runqueue");
      if (!(rq >= 0.05)) {
        hogs_stop();
        fail_msg("%s: the busy loops did not keep it waiting for a CPU: %s", cases[i].workload, r.out);
      }
      if (rq / (cpu + rq) < 0.25) want = "";
    }
    if (strcmp(d, want)) {
      hogs_stop();
      fail_msg("%s: detail %s, expected %s: %s", cases[i].workload, d, want, r.out);
    }
  }
  hogs_stop();
}

/* Waits on the disk too short to be seen in a sample are still the disk's:
 * the process read and wrote storage, not the page cache. */
static void cli_direct_io_waits_on_the_disk(void **state) {
  (void)state;
  run r;
  const char *args[] = {"profile", "--json", "--", self_exe, "--workload", "direct", NULL};
  run_braid(&r, args);
  if (r.status == 77) skip(); /* no O_DIRECT on this file system */
  assert_int_equal(r.status, 0);
  expect_at_least(&r, "disk", 0.1);
  /* What it read and wrote, counted once: a process sampled many times is
   * one process, and a shell's totals include those of the children it
   * reaped (the second run). */
  const double read = 3.0 * 2048 * 4096, written = 2048.0 * 4096;
  expect_at_least(&r, "read_bytes", read);
  assert_true(json_num(r.out, "read_bytes") < 1.25 * read);
  expect_at_least(&r, "write_bytes", written);
  assert_true(json_num(r.out, "write_bytes") < 1.25 * written);
  assert_true(json_num(r.out, "other") < json_num(r.out, "disk"));
  const char *in_shell[] = {"profile", "--json", "--", "/bin/sh", "-c", "\"$0\" --workload direct; sleep 0.3",
                            self_exe, NULL};
  run_braid(&r, in_shell);
  assert_int_equal(r.status, 0);
  expect_at_least(&r, "read_bytes", read);
  assert_true(json_num(r.out, "read_bytes") < 1.25 * read);
}

static void cli_compute_then_wait(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "mixed");
  expect_verdict(&r, "mixed");
}

static void cli_orphan_keeps_counting(void **state) {
  (void)state;
  run r;
  profile_workload(&r, "orphan");
  expect_verdict(&r, "cpu-bound");
  expect_at_least(&r, "processes", 2);
  expect_at_least(&r, "wall_s", 0.45); /* it waited for the orphan */
  expect_at_least(&r, "cpu_s", 0.4);
}

static void cli_exit_status_and_text(void **state) {
  (void)state;
  run r;
  const char *a1[] = {"profile", "--", self_exe, "--workload", "exit3", NULL};
  run_braid(&r, a1);
  assert_int_equal(r.status, 3);
  assert_non_null(strstr(r.err, "verdict"));
  if (strstr(r.err, "ended           exit status 3") == NULL) fail_msg("no 'ended' line: %s", r.err);
  const char *a2[] = {"profile", "--", self_exe, "--workload", "sigterm", NULL};
  run_braid(&r, a2);
  assert_int_equal(r.status, 128 + SIGTERM);
  if (strstr(r.err, "killed by signal 15") == NULL) fail_msg("no signal said: %s", r.err);
  /* JSON: the shell's status, and the signal apart. */
  const char *a3[] = {"profile", "--json", "--", self_exe, "--workload", "exit3", NULL};
  run_braid(&r, a3);
  assert_int_equal(r.status, 3);
  if (!strstr(r.out, "\"exit_status\":3,\"signal\":0")) fail_msg("JSON: %s", r.out);
  const char *a4[] = {"profile", "--json", "--", self_exe, "--workload", "sigterm", NULL};
  run_braid(&r, a4);
  if (!strstr(r.out, "\"exit_status\":143,\"signal\":15")) fail_msg("JSON: %s", r.out);
}

static void cli_bad_input(void **state) {
  (void)state;
  run r;
  const char *none[] = {"profile", NULL};
  run_braid(&r, none);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "no command"));
  const char *opt[] = {"profile", "--frobnicate", "--", "true", NULL};
  run_braid(&r, opt);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "--frobnicate"));
  const char *iv[] = {"profile", "--interval", "abc", "--", "true", NULL};
  run_braid(&r, iv);
  assert_int_equal(r.status, 2);
  const char *missing[] = {"profile", "--", "/nonexistent/braid-no-such-command", NULL};
  run_braid(&r, missing);
  assert_int_equal(r.status, 127);
  assert_non_null(strstr(r.err, "braid profile: cannot run '/nonexistent/braid-no-such-command'"));
  /* said once: one line */
  if (strchr(r.err, '\n') != strrchr(r.err, '\n')) fail_msg("more than one line: %s", r.err);
  /* A trace file it cannot write is named as such, and the command never runs. */
  const char *tr[] = {"profile", "--trace", "/nonexistent/dir/t.json", "--", self_exe, "--workload",
                      "exit3", NULL};
  run_braid(&r, tr);
  assert_int_equal(r.status, 2);
  if (!strstr(r.err, "cannot write the trace file '/nonexistent/dir/t.json'") || strstr(r.err, "verdict"))
    fail_msg("unexpected: %s", r.err);
  /* "--trace -- CMD": the file name was forgotten, "--" is not taken for it. */
  const char *notrace[] = {"profile", "--trace", "--", self_exe, "--workload", "exit3", NULL};
  run_braid(&r, notrace);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "--trace needs a file name"));
  /* A JSON report that cannot be written (stdout on a full disk) is said in
   * one line and fails the run, unless the command failed already: then
   * its status stays. */
  if (access("/dev/full", W_OK) == 0) {
    const char *full[] = {"profile", "--json", "--", "true", NULL};
    braid_stdout = "/dev/full";
    run_braid(&r, full);
    braid_stdout = NULL; /* (before any assertion: a failing one must not leave it for the next test) */
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "braid profile: writing the report failed"));
    if (strchr(r.err, '\n') != strrchr(r.err, '\n')) fail_msg("more than one line: %s", r.err);
    const char *full3[] = {"profile", "--json", "--", self_exe, "--workload", "exit3", NULL};
    braid_stdout = "/dev/full";
    run_braid(&r, full3);
    braid_stdout = NULL;
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, "braid profile: writing the report failed"));
  }
}

static void cli_trace_file(void **state) {
  (void)state;
  char path[] = "/tmp/braid-profile-trace-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  run r;
  const char *args[] = {"profile", "--json", "--trace", path, "--", self_exe, "--workload",
                        "cpu1", NULL};
  run_braid(&r, args);
  assert_int_equal(r.status, 0);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  unlink(path);
  assert_non_null(strstr(buf, "\"traceEvents\":["));
  assert_non_null(strstr(buf, "\"name\":\"cpu\",\"cat\":\"braid.profile\",\"ph\":\"X\""));
  assert_non_null(strstr(buf, "\"thread_name\""));
  assert_non_null(strstr(buf, "]}"));
}

/* br_profile: one call of this process. */
static void *fn_burn(void *arg) {
  burn_ms((int)(intptr_t)arg);
  return (void *)7;
}
static void *fn_sleep(void *arg) {
  nap_ms((int)(intptr_t)arg);
  return NULL;
}
static void *job_burn(void *arg) {
  burn_ms((int)(intptr_t)arg);
  return NULL;
}
static void *fn_pool(void *arg) {
  br_pool *pool = arg;
  void *items[4] = {(void *)200, (void *)200, (void *)200, (void *)200};
  br_result out[4];
  int rc = br_pool_map(pool, out, job_burn, items, 4, 1);
  br_results_free(out, 4);
  return (void *)(intptr_t)rc;
}

static void api_profile_a_call(void **state) {
  (void)state;
  br_profile_report r;
  void *value = NULL;
  assert_int_equal(br_profile(&r, &value, fn_burn, (void *)400, NULL), 0);
  assert_ptr_equal(value, (void *)7);
  assert_int_equal(r.verdict, BR_PROFILE_CPU_BOUND);
  assert_true(r.time[BR_PROFILE_T_CPU] + r.time[BR_PROFILE_T_RUNQUEUE] > 0.4);

  assert_int_equal(br_profile(&r, NULL, fn_sleep, (void *)300, NULL), 0);
  assert_int_equal(r.verdict, BR_PROFILE_IO_BOUND);
  assert_true(r.wall_s >= 0.29);

  br_pool *pool;
  assert_int_equal(br_pool_new(&pool, 2, NULL), 0);
  assert_int_equal(br_profile(&r, &value, fn_pool, pool, NULL), 0);
  assert_int_equal((int)(intptr_t)value, 0);
  assert_int_equal(r.verdict, BR_PROFILE_CPU_BOUND);
  assert_true(r.busy_threads >= 1);
  assert_int_equal(br_pool_free(pool), 0);

  assert_int_equal(br_profile(NULL, NULL, fn_burn, NULL, NULL), BR_EINVAL);
  assert_int_equal(br_profile(&r, NULL, NULL, NULL, NULL), BR_EINVAL);
}

static void api_names_and_printing(void **state) {
  (void)state;
  assert_string_equal(br_profile_verdict_name(BR_PROFILE_IO_BOUND), "io-bound");
  assert_string_equal(br_profile_detail_name(BR_PROFILE_SERIALIZED), "serialized");
  assert_string_equal(br_profile_time_name(BR_PROFILE_T_NET), "network");
  br_profile_report r;
  assert_int_equal(br_profile(&r, NULL, fn_sleep, (void *)50, NULL), 0);
  char buf[4096];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  assert_int_equal(br_profile_print_json(f, &r), 0);
  fclose(f);
  assert_non_null(strstr(buf, "{\"verdict\":\"io-bound\""));
  f = fmemopen(buf, sizeof buf, "w");
  assert_int_equal(br_profile_print(f, &r), 0);
  fclose(f);
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
    assert_true(strlen(line) <= 80);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--workload")) return workload(argv[2]);
  if (br_test_emulated()) br_test_skip("/proc sampling under qemu-user sees the emulator");
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n <= 0) br_test_skip("no /proc/self/exe");
  self_exe[n] = '\0';
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", self_exe);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0';
  snprintf(braid_cli, sizeof braid_cli, "%s/../tools/braid/braid", dir);
  bool have_cli = access(braid_cli, X_OK) == 0;

  const struct CMUnitTest cli[] = {
      cmocka_unit_test(cli_one_thread_computing), cmocka_unit_test(cli_two_threads_computing),
      cmocka_unit_test(cli_sleeper),              cmocka_unit_test(cli_slow_pipe),
      cmocka_unit_test(cli_slow_server),          cmocka_unit_test(cli_serialized_by_a_lock),
      cmocka_unit_test(cli_pipeline_is_parallel), cmocka_unit_test(cli_pipeline_on_one_cpu_is_starved),
      cmocka_unit_test(cli_compute_then_wait),    cmocka_unit_test(cli_orphan_keeps_counting),
      cmocka_unit_test(cli_exit_status_and_text), cmocka_unit_test(cli_bad_input),
      cmocka_unit_test(cli_trace_file),           cmocka_unit_test(cli_busy_machine),
      cmocka_unit_test(cli_direct_io_waits_on_the_disk),
  };
  const struct CMUnitTest api[] = {
      cmocka_unit_test(api_profile_a_call),
      cmocka_unit_test(api_names_and_printing),
  };
  int failed = cmocka_run_group_tests_name("br_profile", api, NULL, NULL);
  if (have_cli) failed += cmocka_run_group_tests_name("braid profile", cli, NULL, NULL);
  else fprintf(stderr, "braid profile tests skipped: no %s (tools not built)\n", braid_cli);
  return failed ? 1 : 0;
}
