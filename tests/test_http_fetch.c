/* SPDX-License-Identifier: MIT */
/* `braid fetch` end to end: the real program against the in-project test
 * server — exit statuses (0 all fetched, 1 any failed, 2 bad usage with a
 * one-line error), JSON lines, the summary, URLs from stdin, -o DIR, no
 * progress bar when standard error is not a terminal. */
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

#include <dirent.h>
#include <sys/stat.h>

static http_server srv;

typedef struct out {
  int status;  /* exit status, or -signal */
  char *out, *err;
} out;

/* Run the braid program with argv (NULL-terminated, argv[0] is ignored),
 * feeding `input` on stdin; collect stdout and stderr. Plain blocking code:
 * no braid loop runs in this process meanwhile. */
static out run_braid(const char *input, char *const *argv) {
  char ofile[] = "/tmp/braid-fetch-out.XXXXXX", efile[] = "/tmp/braid-fetch-err.XXXXXX";
  int ofd = mkstemp(ofile), efd = mkstemp(efile);
  assert_true(ofd >= 0 && efd >= 0);
  int in[2];
  assert_int_equal(pipe(in), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(ofd, 1);
    dup2(efd, 2);
    close(in[1]);
    char *args[64];
    int n = 0;
    args[n++] = (char *)BRAID_CLI;
    for (int i = 1; argv[i] && n < 63; i++) args[n++] = argv[i];
    args[n] = NULL;
    execv(BRAID_CLI, args);
    _exit(127);
  }
  close(in[0]);
  if (input) assert_int_equal(write(in[1], input, strlen(input)), (ssize_t)strlen(input));
  close(in[1]);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  out o = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st)};
  o.out = br_test_read_file(ofile, NULL);
  o.err = br_test_read_file(efile, NULL);
  close(ofd);
  close(efd);
  unlink(ofile);
  unlink(efile);
  return o;
}

static void out_free(out *o) {
  free(o->out);
  free(o->err);
}

static int count_lines(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p++) n++;
  return n;
}

static char *url(const char *path) {
  static char b[16][256];
  static int i;
  char *u = b[i++ % 16];
  snprintf(u, 256, "%s%s", srv.base, path);
  return u;
}

static void test_all_ok(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char *argv[] = {"braid", "fetch", url("/ok"), url("/ok?size=1000"), url("/delay?ms=50"), NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "fetched 3 URLs in "));
  assert_non_null(strstr(o.out, "3 ok, 0 failed"));
  assert_non_null(strstr(o.out, "received"));
  assert_non_null(strstr(o.out, "URLs/s"));
  assert_string_equal(o.err, ""); /* not a terminal: no progress bar */
  out_free(&o);
}

static void test_failures(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char dead[64];
  snprintf(dead, sizeof dead, "http://127.0.0.1:%d/", fx_free_port());
  char *argv[] = {"braid",          "fetch",           "--retries", "1",
                  url("/ok"),       url("/status?code=404"), url("/truncate"),
                  dead,             url("/flaky?key=cli&fail=1"), NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1);
  assert_non_null(strstr(o.out, "fetched 5 URLs"));
  assert_non_null(strstr(o.out, "2 ok, 3 failed"));
  assert_non_null(strstr(o.out, "1 HTTP 404"));
  assert_non_null(strstr(o.out, "1 bad-response"));
  assert_non_null(strstr(o.out, "1 connect"));
  assert_int_equal(count_lines(o.err, "FAIL "), 3);
  assert_non_null(strstr(o.err, "/status?code=404: HTTP 404"));
  out_free(&o);
}

static void test_json(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char *argv[] = {"braid", "fetch", "--json", url("/ok?size=123"), url("/status?code=503"),
                  "--retries", "0", NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1);
  assert_int_equal(count_lines(o.out, "\n"), 2); /* one line per URL, nothing else */
  assert_int_equal(count_lines(o.out, "{\"url\":"), 2);
  char want[512];
  snprintf(want, sizeof want,
           "{\"url\":\"%s\",\"ok\":true,\"status\":200,\"bytes\":123,", url("/ok?size=123"));
  assert_non_null(strstr(o.out, want));
  snprintf(want, sizeof want, "{\"url\":\"%s\",\"ok\":false,\"status\":503,",
           url("/status?code=503"));
  assert_non_null(strstr(o.out, want));
  assert_non_null(strstr(o.out, "\"error\":\"EHTTP\",\"reason\":\"HTTP 503\""));
  assert_non_null(strstr(o.out, "\"attempts\":1"));
  assert_non_null(strstr(o.err, "fetched 2 URLs")); /* the summary moves to stderr */
  out_free(&o);
}

/* Whether s is well-formed UTF-8 without a raw control byte (what a JSON
 * line must be). */
static bool json_text_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    if (*p == '\n') {
      p++;
      continue;
    }
    if (*p < 0x20) return false;
    size_t n = *p < 0x80 ? 1 : *p >= 0xc2 && *p <= 0xdf ? 2 : *p >= 0xe0 && *p <= 0xef ? 3
             : *p >= 0xf0 && *p <= 0xf4 ? 4 : 0;
    if (n == 0) return false;
    for (size_t i = 1; i < n; i++)
      if ((p[i] & 0xc0) != 0x80) return false;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
      return false;
    p += n;
  }
  return true;
}

/* --json stays JSON whatever bytes a URL holds: quotes, backslashes and
 * control characters escaped, bytes that are not UTF-8 as U+FFFD, UTF-8
 * kept as it is. */
static void test_json_odd_urls(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char quoted[256], binary[256], spaced[256];
  snprintf(quoted, sizeof quoted, "%s/ok?a=\"q\\x", srv.base);
  snprintf(binary, sizeof binary, "%s/ok?\xff\x01\xc3\xa9\xed\xa0\x80\x1f", srv.base);
  snprintf(spaced, sizeof spaced, "%s/ok?a b\tc", srv.base);
  char *argv[] = {"braid", "fetch", "--json", quoted, binary, spaced, NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1); /* the last two are not valid URLs */
  assert_int_equal(count_lines(o.out, "\n"), 3);
  assert_true(json_text_ok(o.out));
  char want[512];
  snprintf(want, sizeof want, "{\"url\":\"%s/ok?a=\\\"q\\\\x\",\"ok\":true,", srv.base);
  assert_non_null(strstr(o.out, want));
  snprintf(want, sizeof want,
           "{\"url\":\"%s/ok?\\ufffd\\u0001\xc3\xa9\\ufffd\\ufffd\\ufffd\\u001f\",\"ok\":false,",
           srv.base);
  assert_non_null(strstr(o.out, want));
  snprintf(want, sizeof want, "{\"url\":\"%s/ok?a b\\tc\",\"ok\":false,", srv.base);
  assert_non_null(strstr(o.out, want));
  out_free(&o);
}

/* A --timeout below a millisecond is a tiny timeout, not none. */
static void test_tiny_timeout(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char *argv[] = {"braid", "fetch", "--timeout", "0.0001", url("/delay?ms=3000"), NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1);
  assert_non_null(strstr(o.out, "0 ok, 1 failed (1 timeout)"));
  out_free(&o);
}

/* The server's request count (/_stats), over a plain socket. */
static long srv_requests(void) {
  char b[512];
  long n = -1;
  assert_int_equal(fx_plain_get(&srv, "/_stats", "requests=", b, sizeof b), 0);
  const char *p = strstr(b, "requests=");
  assert_non_null(p);
  assert_int_equal(sscanf(p, "requests=%ld", &n), 1);
  return n;
}

/* `braid crawl` keeps to the start's site even when a page redirects: a
 * redirect to the same server under another name (localhost, not
 * 127.0.0.1) is reported as a broken page and never requested, while one on
 * the site is followed. */
static void test_crawl_stays_on_site(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char start[256];
  snprintf(start, sizeof start, "%s/redirect?to=http://localhost:%d/ok", srv.base, srv.port);
  char b[256];
  assert_int_equal(fx_plain_get(&srv, "/_reset", "reset", b, sizeof b), 0);
  char *argv[] = {"braid", "crawl", start, NULL};
  out o = run_braid(NULL, argv);
  if (strstr(o.err, "built without")) {
    out_free(&o);
    skip();
  }
  assert_int_equal(o.status, 1); /* nothing on the site could be fetched */
  assert_int_equal(srv_requests(), 1); /* the redirect, not its target */
  assert_non_null(strstr(o.out, "redirected off the site"));
  assert_non_null(strstr(o.out, "0 ok, 1 broken"));
  out_free(&o);

  snprintf(start, sizeof start, "%s/redirect?to=/ok", srv.base);
  assert_int_equal(fx_plain_get(&srv, "/_reset", "reset", b, sizeof b), 0);
  char *on_site[] = {"braid", "crawl", start, NULL};
  o = run_braid(NULL, on_site);
  assert_int_equal(o.status, 0);
  assert_int_equal(srv_requests(), 2);
  assert_non_null(strstr(o.out, "1 ok, 0 broken"));
  out_free(&o);
}

static void test_stdin_and_dir(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char input[2048];
  snprintf(input, sizeof input, "# a comment\n%s\n\n  %s  \n%s\n", url("/ok?size=10"),
           url("/ok?size=20"), url("/ok?size=10"));
  char dir[] = "/tmp/braid-fetch-dir.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char *argv[] = {"braid", "fetch", "-o", dir, "-", NULL};
  out o = run_braid(input, argv);
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "fetched 3 URLs"));
  out_free(&o);
  /* Three files: the same URL twice gets a second name. */
  char p[512], cmd[600];
  size_t len;
  snprintf(p, sizeof p, "%s/127.0.0.1_%d_ok_size_20", dir, srv.port);
  char *body = br_test_read_file(p, &len);
  assert_non_null(body);
  assert_int_equal(len, 20);
  assert_memory_equal(body, "abcdefghijklmnopqrst", 20);
  free(body);
  snprintf(p, sizeof p, "%s/127.0.0.1_%d_ok_size_10.1", dir, srv.port);
  body = br_test_read_file(p, &len);
  assert_non_null(body);
  assert_int_equal(len, 10);
  free(body);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* -o a/b/c with a/b missing makes them (mkdir -p); a file in the way is
 * one line and exit status 1. */
static void test_dir_parents(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char top[] = "/tmp/braid-fetch-parents.XXXXXX";
  assert_non_null(mkdtemp(top));
  char dir[256], p[512], cmd[600];
  snprintf(dir, sizeof dir, "%s/a/b/c", top);
  char *argv[] = {"braid", "fetch", "-o", dir, url("/ok?size=10"), NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "fetched 1 URL"));
  out_free(&o);
  snprintf(p, sizeof p, "%s/127.0.0.1_%d_ok_size_10", dir, srv.port);
  size_t len;
  char *body = br_test_read_file(p, &len);
  assert_non_null(body);
  assert_int_equal(len, 10);
  free(body);
  /* A regular file where a parent should be. */
  snprintf(p, sizeof p, "%s/file", top);
  assert_int_equal(system(strcat(strcpy(cmd, "touch "), p)), 0);
  snprintf(dir, sizeof dir, "%s/file/x", top);
  o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1);
  assert_int_equal(count_lines(o.err, "\n"), 1);
  assert_non_null(strstr(o.err, "braid fetch: cannot create "));
  assert_non_null(strstr(o.err, "Not a directory"));
  out_free(&o);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
  assert_int_equal(system(cmd), 0);
}

static int write_file(const char *path, const char *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

/* The entries of dir, not counting "." and "..". */
static int dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* -o into a directory that holds an earlier run's files: a URL that fails
 * now leaves its earlier file as it was (and no partial file); one that
 * succeeds replaces it, with the usual permissions. */
static void test_dir_keeps_old_files(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char dir[] = "/tmp/braid-fetch-keep.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char failing[512], ok[512];
  snprintf(failing, sizeof failing, "%s/127.0.0.1_%d_truncate_size_100000", dir, srv.port);
  snprintf(ok, sizeof ok, "%s/127.0.0.1_%d_ok_size_5", dir, srv.port);
  assert_int_equal(write_file(failing, "earlier\n", 8), 0);
  assert_int_equal(write_file(ok, "earlier\n", 8), 0);
  char *argv[] = {"braid", "fetch", "--retries", "0", "-o", dir, url("/truncate?size=100000"),
                  url("/ok?size=5"), NULL};
  out o = run_braid(NULL, argv);
  assert_int_equal(o.status, 1);
  assert_non_null(strstr(o.out, "1 ok, 1 failed"));
  out_free(&o);
  size_t len;
  char *body = br_test_read_file(failing, &len);
  assert_non_null(body);
  assert_int_equal(len, 8);
  assert_memory_equal(body, "earlier\n", 8);
  free(body);
  body = br_test_read_file(ok, &len);
  assert_non_null(body);
  assert_int_equal(len, 5);
  assert_memory_equal(body, "abcde", 5);
  free(body);
  struct stat sb;
  assert_int_equal(stat(ok, &sb), 0);
  mode_t mask = umask(022);
  umask(mask);
  assert_int_equal(sb.st_mode & 0777, 0666 & ~mask);
  assert_int_equal(dir_entries(dir), 2); /* nothing left behind */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static void test_usage(void **state) {
  (void)state;
  if (access(BRAID_CLI, X_OK)) skip();
  char *bad[][6] = {
    {"braid", "fetch", NULL},
    {"braid", "fetch", "-c", "0", "http://x/", NULL},
    {"braid", "fetch", "-c", "many", "http://x/", NULL},
    {"braid", "fetch", "--per-host", NULL},
    {"braid", "fetch", "--timeout", "-1", "http://x/", NULL},
    {"braid", "fetch", "--retries", "x", "http://x/", NULL},
    {"braid", "fetch", "--frobnicate", "http://x/", NULL},
    {"braid", "fetch", "-", "http://x/", NULL},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    out o = run_braid("", bad[i]);
    assert_int_equal(o.status, 2);
    assert_int_equal(count_lines(o.err, "\n"), 1); /* one line */
    assert_non_null(strstr(o.err, "braid fetch: "));
    assert_string_equal(o.out, "");
    out_free(&o);
  }
  char *help[] = {"braid", "fetch", "--help", NULL};
  out o = run_braid(NULL, help);
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "usage: braid fetch"));
  out_free(&o);
  /* Listed by `braid help`. */
  char *h[] = {"braid", "help", NULL};
  o = run_braid(NULL, h);
  assert_non_null(strstr(o.out, "fetch"));
  out_free(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_all_ok),        cmocka_unit_test(test_failures),
    cmocka_unit_test(test_json),          cmocka_unit_test(test_json_odd_urls),
    cmocka_unit_test(test_tiny_timeout),  cmocka_unit_test(test_crawl_stays_on_site),
    cmocka_unit_test(test_stdin_and_dir), cmocka_unit_test(test_dir_keeps_old_files),
    cmocka_unit_test(test_dir_parents),   cmocka_unit_test(test_usage),
  };
  return HTTP_SERVER_MAIN(srv, tests);
}
#endif
