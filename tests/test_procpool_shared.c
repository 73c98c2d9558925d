/* SPDX-License-Identifier: MIT */
/* test_procpool_shared — the process's one fork server, shared by all its
 * pools (src/exec/procpool_spawn.c): a later pool reuses it (no new exec),
 * it outlives its pools and dies with the process, a server killed from
 * outside between pools is replaced, pools from several threads at once
 * share it, a fork() child starts its own, and create / shut down cycles
 * leave the descriptor table and the process tree as they found them. The
 * server is observed through br__pp_server_peek (procpool_int.h) and
 * /proc. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the shared jobs' helpers */
#include "test_procpool_jobs.h"
#pragma GCC diagnostic pop
#include "exec/procpool_int.h"
#include "test_util.h"

/* The worker's working directory. */
static int cwd_fn(const void *in, size_t len, br_bytes *out) {
  (void)in;
  (void)len;
  char buf[4096];
  if (!getcwd(buf, sizeof buf)) return -errno;
  return br_bytes_set(out, buf, strlen(buf) + 1);
}
BR_JOB(cwd_of, cwd_fn);

static br_procpool *new_pool(int n) {
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, n, NULL);
  assert_int_equal(r, 0);
  assert_non_null(p);
  return p;
}

/* One job through p, checked. */
static void one_job(br_procpool *p, uint32_t id) {
  tjob j = tj(id, A_OK, 0);
  br_future *f;
  void *v;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  assert_int_equal(br_await_until(f, &v, br_deadline_ms(20000)), 0);
  assert_int_equal(tresult(v), id); /* frees v */
  br_future_unref(f);
}

/* Create a pool, run a job, free it. */
static void cycle(int workers, uint32_t id) {
  br_procpool *p = new_pool(workers);
  one_job(p, id);
  assert_int_equal(br_procpool_free(p), 0);
}

/* The parent pid and state letter of process pid, from /proc/<pid>/stat;
 * false if there is no such process. */
static bool proc_stat(pid_t pid, pid_t *ppid, char *state) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *e = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
  int pp = 0;
  if (!e || sscanf(e + 1, " %c %d", state, &pp) != 2) return false;
  *ppid = pp;
  return true;
}

/* The children of process `parent` (up to max pids in out); counts zombies
 * in *zombies. Returns how many. */
static int children_of(pid_t parent, pid_t *out, int max, int *zombies) {
  DIR *d = opendir("/proc");
  assert_non_null(d);
  int n = 0;
  *zombies = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    pid_t pid = (pid_t)atoi(e->d_name);
    pid_t pp;
    char st;
    if (pid <= 0 || !proc_stat(pid, &pp, &st) || pp != parent) continue;
    if (st == 'Z') (*zombies)++;
    if (n < max) out[n] = pid;
    n++;
  }
  closedir(d);
  return n;
}

/* Wait until child pid has died, without reaping it (the pool must). With
 * a pool running, that pool may have reaped it first (then: ECHILD). */
static void wait_dead_unreaped(pid_t pid, bool may_be_reaped) {
  siginfo_t si;
  int r;
  do r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0 && may_be_reaped && errno == ECHILD) return;
  assert_int_equal(r, 0);
}

static void test_second_pool_reuses_server(void **state) {
  (void)state;
  cycle(2, 1);
  pid_t pid1, pid2;
  uint64_t n1, n2;
  br__pp_server_peek(&pid1, &n1);
  assert_true(pid1 > 0);
  assert_true(n1 >= 1);
  /* It outlives the pool: still running, still our child. */
  pid_t pp;
  char st;
  assert_true(proc_stat(pid1, &pp, &st));
  assert_int_equal(pp, getpid());
  assert_true(st != 'Z');
  for (uint32_t k = 0; k < 5; k++) cycle(1 + (int)(k % 3), 10 + k);
  /* Two pools at once share it too. */
  br_procpool *a = new_pool(2), *b = new_pool(1);
  one_job(a, 20);
  one_job(b, 21);
  br_procpool_free(a);
  br_procpool_free(b);
  br__pp_server_peek(&pid2, &n2);
  assert_int_equal(pid2, pid1);
  assert_int_equal(n2, n1); /* no new exec */
}

static void test_killed_between_pools(void **state) {
  (void)state;
  cycle(2, 1);
  pid_t old, now;
  uint64_t n_old, n_now;
  br__pp_server_peek(&old, &n_old);
  assert_true(old > 0);
  assert_int_equal(kill(old, SIGKILL), 0);
  wait_dead_unreaped(old, false);
  /* The next pool notices, reaps the dead one and starts another. */
  cycle(2, 2);
  br__pp_server_peek(&now, &n_now);
  assert_true(now > 0);
  assert_true(now != old);
  assert_int_equal(n_now, n_old + 1);
  siginfo_t si = {0};
  assert_int_equal(waitid(P_PID, (id_t)old, &si, WEXITED | WNOHANG), -1);
  assert_int_equal(errno, ECHILD); /* reaped: no zombie left */
  cycle(1, 3);
  br__pp_server_peek(&now, &n_now);
  assert_int_equal(n_now, n_old + 1);
}

/* A pool that outlives a killed server: it replaces the server and goes on,
 * and the pools after it use the replacement. */
static void test_killed_under_pool(void **state) {
  (void)state;
  br_procpool *p = new_pool(2);
  one_job(p, 1);
  pid_t old, now;
  uint64_t n_old, n_now;
  br__pp_server_peek(&old, &n_old);
  assert_int_equal(kill(old, SIGKILL), 0);
  /* Once it is dead, so are its workers (PR_SET_PDEATHSIG: sent as it
   * exits), and the jobs after can only run on the replacement, which the
   * pool starts when it sees the server's connection close. */
  wait_dead_unreaped(old, true);
  for (uint32_t i = 0; i < 20; i++) {
    tjob j = tj(100 + i, A_OK, 0);
    br_future *f;
    void *v;
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
    int r = br_await_until(f, &v, br_deadline_ms(20000));
    if (r == 0) {
      assert_int_equal(tresult(v), 100 + i);
    } else {
      assert_int_equal(r, BR_EWORKERDIED); /* it was running as the server died */
    }
    br_future_unref(f);
  }
  one_job(p, 200);
  br__pp_server_peek(&now, &n_now);
  assert_true(now != old);
  assert_int_equal(n_now, n_old + 1);
  br_procpool_free(p);
  cycle(2, 201);
  br__pp_server_peek(&now, &n_now);
  assert_int_equal(n_now, n_old + 1);
}

#define NTHREADS 4
#define ROUNDS 6

static void *pools_in_thread(void *arg) {
  uint32_t base = (uint32_t)(uintptr_t)arg;
  for (uint32_t k = 0; k < ROUNDS; k++) {
    br_procpool *p = NULL;
    if (br_procpool_new(&p, 1 + (int)(k % 2), NULL) != 0) return (void *)1;
    tjob j = tj(base + k, A_OK, 0);
    br_future *f;
    void *v = NULL;
    int r = br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL);
    if (r == 0) {
      r = br_await_until(f, &v, br_deadline_ms(20000));
      if (r == 0 && tresult(v) != base + k) r = -1;
      br_future_unref(f);
    }
    if (br_procpool_free(p) != 0 || r != 0) return (void *)1;
  }
  return NULL;
}

static void test_pools_from_threads(void **state) {
  (void)state;
  cycle(1, 1);
  pid_t before, after;
  uint64_t n_before, n_after;
  br__pp_server_peek(&before, &n_before);
  pthread_t t[NTHREADS];
  for (uintptr_t i = 0; i < NTHREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, pools_in_thread, (void *)(1000 * (i + 1))), 0);
  for (int i = 0; i < NTHREADS; i++) {
    void *r;
    pthread_join(t[i], &r);
    assert_null(r);
  }
  br__pp_server_peek(&after, &n_after);
  assert_int_equal(after, before);
  assert_int_equal(n_after, n_before);
}

/* The same open descriptors, as "fd -> target" lines. */
static char *fd_table(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  size_t cap = 8192, len = 0;
  char *s = calloc(1, cap);
  assert_non_null(s);
  int dfd = dirfd(d);
  struct dirent *e;
  int fds[1024], n = 0;
  while ((e = readdir(d)) && n < 1024) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] != '.' && fd != dfd) fds[n++] = fd;
  }
  closedir(d);
  for (int i = 1; i < n; i++) /* readdir order is not sorted */
    for (int k = i; k > 0 && fds[k - 1] > fds[k]; k--) {
      int x = fds[k];
      fds[k] = fds[k - 1];
      fds[k - 1] = x;
    }
  for (int i = 0; i < n; i++) {
    char path[64], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
    ssize_t t = readlink(path, target, sizeof target - 1);
    if (t < 0) continue;
    target[t] = 0;
    if (len + 300 > cap) {
      cap *= 2;
      s = realloc(s, cap);
      assert_non_null(s);
    }
    len += (size_t)snprintf(s + len, cap - len, "%d -> %s\n", fds[i], target);
  }
  return s;
}

static void test_fds_and_processes_after_cycles(void **state) {
  (void)state;
  cycle(2, 1); /* the server and its socket exist from here on */
  pid_t srv;
  br__pp_server_peek(&srv, NULL);
  char *before = fd_table();
  for (uint32_t k = 0; k < 10; k++) cycle(2, 10 + k);
  char *after = fd_table();
  assert_string_equal(after, before);
  free(before);
  free(after);
  /* Our only child is the server, alive; it has no children left: a
   * shutdown returns once every worker of the pool has been reaped. */
  pid_t kids[8];
  int zombies;
  int n = children_of(getpid(), kids, 8, &zombies);
  assert_int_equal(zombies, 0);
  assert_int_equal(n, 1);
  assert_int_equal(kids[0], srv);
  assert_int_equal(children_of(srv, kids, 8, &zombies), 0);
}

/* A worker starts in the directory its pool was created in, not in the one
 * the shared server was started in. */
static void test_workers_start_in_pools_cwd(void **state) {
  (void)state;
  char home[4096], dir[] = "/tmp/braid-pp-cwd-XXXXXX";
  assert_non_null(getcwd(home, sizeof home));
  cycle(1, 1); /* the server runs, started in `home` (or earlier) */
  assert_non_null(mkdtemp(dir));
  assert_int_equal(chdir(dir), 0);
  br_procpool *p = new_pool(2);
  br_future *f;
  void *v;
  assert_int_equal(br_procpool_submit(p, &f, "cwd_of", NULL, 0, NULL), 0);
  assert_int_equal(br_await_until(f, &v, br_deadline_ms(20000)), 0);
  br_bytes *b = v;
  assert_string_equal((const char *)b->data, dir);
  br_bytes_free(b);
  br_future_unref(f);
  br_procpool_free(p);
  assert_int_equal(chdir(home), 0);
  assert_int_equal(rmdir(dir), 0);
}

/* In a fork() child: the parent's server is forgotten, a pool starts the
 * child's own server, and that one dies with the child. */
static void in_fork_child(int wfd, pid_t parent_srv) {
  pid_t pid;
  br__pp_server_peek(&pid, NULL);
  int bad = pid != 0; /* forgotten */
  br_procpool *p = NULL;
  if (br_procpool_new(&p, 1, NULL) != 0) _exit(2);
  tjob j = tj(7, A_OK, 0);
  br_future *f;
  void *v;
  if (br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL) != 0 ||
      br_await_until(f, &v, br_deadline_ms(20000)) != 0 || tresult(v) != 7)
    _exit(3);
  br_future_unref(f);
  br_procpool_free(p);
  br__pp_server_peek(&pid, NULL);
  pid_t pp;
  char st;
  if (pid <= 0 || pid == parent_srv || !proc_stat(pid, &pp, &st) || pp != getpid()) bad |= 4;
  if (write(wfd, &pid, sizeof pid) != (ssize_t)sizeof pid) bad |= 8;
  _exit(bad);
}

static void test_fork_child_has_its_own(void **state) {
  (void)state;
  cycle(2, 1);
  pid_t srv;
  br__pp_server_peek(&srv, NULL);
  /* Orphans (the child's server, once the child is gone) come back to us,
   * so that we can see it exit. */
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  pid_t c = fork();
  assert_true(c >= 0);
  if (c == 0) {
    close(pfd[0]);
    in_fork_child(pfd[1], srv);
  }
  close(pfd[1]);
  pid_t child_srv = 0;
  assert_int_equal(read(pfd[0], &child_srv, sizeof child_srv), (ssize_t)sizeof child_srv);
  close(pfd[0]);
  int st;
  assert_int_equal(waitpid(c, &st, 0), c);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  /* The child's server saw its socket close and exited by itself. */
  assert_int_equal(waitpid(child_srv, &st, 0), child_srv);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  /* Ours is untouched. */
  pid_t now;
  br__pp_server_peek(&now, NULL);
  assert_int_equal(now, srv);
  cycle(2, 2);
  br__pp_server_peek(&now, NULL);
  assert_int_equal(now, srv);
}

int main(void) {
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_second_pool_reuses_server),
      cmocka_unit_test(test_killed_between_pools),
      cmocka_unit_test(test_killed_under_pool),
      cmocka_unit_test(test_pools_from_threads),
      cmocka_unit_test(test_fds_and_processes_after_cycles),
      cmocka_unit_test(test_workers_start_in_pools_cwd),
      cmocka_unit_test(test_fork_child_has_its_own),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
