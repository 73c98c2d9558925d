/* SPDX-License-Identifier: MIT */
/* Ctrl-C in `braid fetch` and `braid crawl`: the real programs against the
 * in-project test server, one SIGINT sent once the server has seen the
 * transfers start. Each must exit on that one signal (a second one would end
 * it at once with status 130 but no summary, so the summary proves it was
 * not needed), well before its 30-second transfers could have finished
 * (they were cancelled, not completed), with status 130 and a summary that
 * counts what was done, what was cut short and what never started. */
#include <braid.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_util.h"

#ifndef BRAID_HAVE_HTTP
int main(void) { br_test_skip("braid-http is not built (no libcurl)"); }
#else

#include <braid/http.h>

#include "http_fixture.h"

static http_server srv;

/* Each slow URL would take 600 x 50 ms = 30 s to answer. */
#define SLOW "/slow?chunks=600&ms=50&size=64"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The server's counters, over a plain blocking socket (no loop runs in this
 * process). */
typedef struct counters {
  long requests, inflight;
} counters;

static counters server_counters(void) {
  counters c = {-1, -1};
  char b[1024];
  /* max_inflight= is on the body's last line. */
  assert_int_equal(fx_plain_get(&srv, "/_stats", "max_inflight=", b, sizeof b), 0);
  const char *p = strstr(b, "requests=");
  assert_non_null(p);
  c.requests = strtol(p + 9, NULL, 10);
  p = strstr(b, " inflight=");
  assert_non_null(p);
  c.inflight = strtol(p + 10, NULL, 10);
  return c;
}

/* Poll the server until it has seen `requests` requests with `inflight` of
 * them unanswered (the evidence that the transfers run), within 30 s. */
static void wait_server(long requests, long inflight) {
  int64_t end = mono_ms() + 30000;
  counters c;
  while ((c = server_counters()).requests != requests || c.inflight != inflight) {
    if (mono_ms() > end)
      fail_msg("the server saw %ld requests, %ld in flight; waited for %ld and %ld", c.requests,
               c.inflight, requests, inflight);
    pause_ms(2);
  }
}

/* A clean start: the previous test's connections are gone (the server
 * notices at its next write, 50 ms at most), counters zeroed. */
static void reset_server(void) {
  int64_t end = mono_ms() + 30000;
  while (server_counters().inflight != 0) {
    if (mono_ms() > end) fail_msg("the server still has requests in flight");
    pause_ms(5);
  }
  char b[512];
  assert_int_equal(fx_plain_get(&srv, "/_reset", "reset", b, sizeof b), 0);
}

typedef struct child {
  pid_t pid;
  char ofile[64], efile[64];
} child;

/* Start the braid program with argv (argv[0] ignored), stdin from /dev/null,
 * stdout and stderr to files, SIGINT at its default (the test may itself run
 * with SIGINT ignored, which exec would pass on). */
static child start_braid(char *const *argv) {
  child c;
  snprintf(c.ofile, sizeof c.ofile, "/tmp/braid-sigint-out.XXXXXX");
  snprintf(c.efile, sizeof c.efile, "/tmp/braid-sigint-err.XXXXXX");
  int ofd = mkstemp(c.ofile), efd = mkstemp(c.efile);
  assert_true(ofd >= 0 && efd >= 0);
  c.pid = fork();
  assert_true(c.pid >= 0);
  if (c.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(ofd, 1);
    dup2(efd, 2);
    int n = 0;
    while (argv[n]) n++;
    char **args = calloc((size_t)n + 1, sizeof *args);
    if (!args) _exit(127);
    args[0] = (char *)BRAID_CLI;
    for (int i = 1; i < n; i++) args[i] = argv[i];
    execv(BRAID_CLI, args);
    _exit(127);
  }
  close(ofd);
  close(efd);
  return c;
}

typedef struct ended {
  int status; /* exit status, or -signal */
  int64_t ms; /* from the SIGINT to the exit */
  char *out, *err;
} ended;

/* One SIGINT, then wait for the exit: at most 15 s (the transfers would take
 * 30 s), else the program hangs on one Ctrl-C: kill it and fail. */
static ended interrupt(child *c) {
  int64_t t0 = mono_ms();
  assert_int_equal(kill(c->pid, SIGINT), 0);
  int st = 0;
  pid_t w;
  while ((w = waitpid(c->pid, &st, WNOHANG)) == 0) {
    if (mono_ms() - t0 > 15000) {
      /* Evidence for the hang: braid's own dump of its tasks (SIGQUIT) and,
       * where gdb is installed, every thread's stack. */
      kill(c->pid, SIGQUIT);
      pause_ms(1000);
      char cmd[512];
      snprintf(cmd, sizeof cmd,
               "grep '^Sig\\|^Shd' /proc/%d/status >> %s; command -v gdb >/dev/null && "
               "gdb -p %d -batch -ex 'thread apply all bt' -ex 'p sigints' -ex 'p fg_loop' -ex 'p in_handler' >> %s 2>&1",
               (int)c->pid, c->efile, (int)c->pid, c->efile);
      if (system(cmd) != 0) fprintf(stderr, "(no stacks: gdb is not installed or could not attach)\n");
      kill(c->pid, SIGKILL);
      waitpid(c->pid, &st, 0);
      char *err = br_test_read_file(c->efile, NULL); /* what it said before it hung */
      fprintf(stderr, "its standard error:\n%s\n", err ? err : "");
      fail_msg("still running 15 s after one SIGINT (its standard error is above)");
    }
    pause_ms(2);
  }
  assert_int_equal(w, c->pid);
  ended e = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), .ms = mono_ms() - t0};
  e.out = br_test_read_file(c->ofile, NULL);
  e.err = br_test_read_file(c->efile, NULL);
  unlink(c->ofile);
  unlink(c->efile);
  return e;
}

static void ended_free(ended *e) {
  free(e->out);
  free(e->err);
}

/* needle in hay, else fail showing hay. */
#define assert_has(hay, needle)                                                        \
  do {                                                                                 \
    if (!strstr((hay), (needle))) fail_msg("'%s' not in:\n%s", (needle), (hay));      \
  } while (0)

static int count(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p++) n++;
  return n;
}

/* argv for braid fetch: opts, then 3 fast URLs and `slow` slow ones. */
static char **fetch_argv(const char *const *opts, int slow) {
  char **v = calloc(64, sizeof *v);
  int n = 0;
  v[n++] = "braid";
  v[n++] = "fetch";
  for (; *opts; opts++) v[n++] = (char *)*opts;
  for (int i = 0; i < 3; i++) v[n++] = br_strdupf("%s/ok?size=100&i=%d", srv.base, i);
  for (int i = 0; i < slow; i++) v[n++] = br_strdupf("%s" SLOW "&i=%d", srv.base, i);
  v[n] = NULL;
  return v;
}

static void argv_free(char **v, int nopts) {
  for (int i = 2 + nopts; v[i]; i++) free(v[i]);
  free(v);
}

/* 3 fast URLs and 30 slow ones, 8 at a time: once the server has seen 11
 * requests with 8 unanswered, the 3 fast ones are done (each freed the slot
 * a slow one took), 8 run, 22 wait. */
static void test_fetch(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  reset_server();
  const char *opts[] = {"-c", "8", "--per-host", "8", NULL};
  char **argv = fetch_argv(opts, 30);
  child c = start_braid(argv);
  wait_server(11, 8);
  ended e = interrupt(&c);
  argv_free(argv, 4);
  assert_int_equal(e.status, 130);
  assert_true(e.ms < 15000);
  /* The summary, on standard error (standard output may be a pipe whose
   * reader the same Ctrl-C ended). */
  assert_has(e.err, "interrupted after ");
  assert_has(e.err, "fetched 3 of 33 URLs: 3 ok, 0 failed; "
                                "8 cancelled in flight, 22 not started\n");
  assert_has(e.err, "received");
  assert_null(strstr(e.err, "FAIL ")); /* cancelled is not failed */
  assert_null(strstr(e.err, "second interrupt"));
  assert_string_equal(e.out, "");
  ended_free(&e);
}

/* With --json, one line per URL: the 3 fetched, the 8 cut short (a transfer
 * started: attempts 1) and the 22 that waited for a slot (attempts 0). */
static void test_fetch_json(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  reset_server();
  const char *opts[] = {"--json", "-c", "8", "--per-host", "8", NULL};
  char **argv = fetch_argv(opts, 30);
  child c = start_braid(argv);
  wait_server(11, 8);
  ended e = interrupt(&c);
  argv_free(argv, 5);
  assert_int_equal(e.status, 130);
  assert_int_equal(count(e.out, "\n"), 33);
  assert_int_equal(count(e.out, "\"ok\":true,\"status\":200,\"bytes\":100,"), 3);
  assert_int_equal(count(e.out, "\"reason\":\"interrupted\""), 30);
  assert_int_equal(count(e.out, "\"error\":\"ECANCELED\""), 30);
  assert_int_equal(count(e.out, "\"attempts\":1,\"error\":\"ECANCELED\""), 8);
  assert_int_equal(count(e.out, "\"attempts\":0,\"error\":\"ECANCELED\""), 22);
  assert_has(e.err, "fetched 3 of 33 URLs: 3 ok, 0 failed; "
                                "8 cancelled in flight, 22 not started\n");
  ended_free(&e);
}

/* Ctrl-C while braid fetch is still starting its tasks (more URLs than it
 * lets wait at once): it stops starting them. */
static void test_fetch_many(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  reset_server();
  /* 3 + 500 URLs, 4 at a time: braid fetch keeps at most 256 tasks alive. */
  char **v = calloc(520, sizeof *v);
  int n = 0;
  v[n++] = "braid";
  v[n++] = "fetch";
  v[n++] = "-q";
  v[n++] = "-c";
  v[n++] = "4";
  for (int i = 0; i < 3; i++) v[n++] = br_strdupf("%s/ok?i=%d", srv.base, i);
  for (int i = 0; i < 500; i++) v[n++] = br_strdupf("%s" SLOW "&i=%d", srv.base, i);
  v[n] = NULL;
  child c = start_braid(v);
  wait_server(7, 4);
  ended e = interrupt(&c);
  for (int i = 5; v[i]; i++) free(v[i]);
  free(v);
  assert_int_equal(e.status, 130);
  assert_has(e.err, "fetched 3 of 503 URLs: 3 ok, 0 failed; "
                                "4 cancelled in flight, 496 not started\n");
  ended_free(&e);
}

/* braid crawl: the start page never finishes; Ctrl-C ends the crawl with its
 * summary and status 130. */
static void test_crawl(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char *help[] = {"braid", "crawl", "--help", NULL};
  child h = start_braid(help);
  int st;
  assert_int_equal(waitpid(h.pid, &st, 0), h.pid);
  char *ho = br_test_read_file(h.ofile, NULL), *he = br_test_read_file(h.efile, NULL);
  unlink(h.ofile);
  unlink(h.efile);
  bool built = ho && !strstr(ho, "not built") && !strstr(he ? he : "", "not built");
  free(ho);
  free(he);
  if (!built) skip(); /* no libxml2 */
  reset_server();
  char *start = br_strdupf("%s" SLOW, srv.base);
  char *argv[] = {"braid", "crawl", "-c", "4", start, NULL};
  child c = start_braid(argv);
  wait_server(1, 1);
  ended e = interrupt(&c);
  free(start);
  assert_int_equal(e.status, 130);
  assert_has(e.out, "crawled 0 URLs in ");
  assert_has(e.out, "1 cancelled in flight");
  assert_has(e.err, "braid crawl: interrupted\n");
  assert_null(strstr(e.err, "second interrupt"));
  ended_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fetch),
    cmocka_unit_test(test_fetch_json),
    cmocka_unit_test(test_fetch_many),
    cmocka_unit_test(test_crawl),
  };
  return HTTP_SERVER_MAIN(srv, tests);
}
#endif
