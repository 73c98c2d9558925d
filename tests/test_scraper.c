/* SPDX-License-Identifier: MIT */
/* test_scraper — examples/scraper.c against a real nginx on loopback.
 *
 * Each test generates a site of thousands of linked pages (tests/nginx_fixture.h:
 * relative, absolute and fragment links, off-host links, links to missing pages
 * and to a location that answers 500), starts nginx on a free port of
 * 127.0.0.1 in the build directory, runs the scraper program on it, stops
 * nginx, and checks the scraper's report against the site and against nginx's
 * own access log:
 *  - every page is reported exactly once and requested exactly once;
 *  - the page limit (-n) is respected to the request;
 *  - no off-host link is followed (not even the same server under another
 *    name: nginx logs the Host of every request);
 *  - broken pages (404, 500) are reported as broken, each once;
 *  - memory stays bounded: the peak RSS of a 6,000-URL crawl is within 15 %
 *    of a 1,000-URL crawl's (not judged under a sanitizer), and at most -c
 *    pages are ever in flight.
 * Sizes are divided by BRAID_TEST_SCALE (sanitizer and emulated runs).
 *
 * The scraper is the example program (build/examples/scraper, or the path in
 * BRAID_SCRAPER); without it (braid-http or libxml2 not built) or without
 * nginx the test is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "nginx_fixture.h"
#include "test_util.h"

/* Built with a sanitizer (then the scraper program is too). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static const char *scraper_path(void) {
  const char *env = getenv("BRAID_SCRAPER");
  return env && *env ? env : "../examples/scraper";
}

/* What one scraper run printed. */
typedef struct run {
  int status;       /* exit status, -1 if it did not exit */
  char *out;        /* all of stdout */
  char *err;        /* all of stderr */
  char **urls;      /* every URL of a page/broken line, in order */
  int *codes;       /* their status (page: 200, broken: 404/500/0) */
  char **titles;    /* page titles (NULL for broken lines) */
  size_t n;
  long crawled;     /* "crawled N URLs" */
  long rss_kib, max_inflight, offhost;
} run;

static void run_free(run *r) {
  for (size_t i = 0; i < r->n; i++) {
    free(r->urls[i]);
    free(r->titles[i]);
  }
  free(r->urls);
  free(r->codes);
  free(r->titles);
  free(r->out);
  free(r->err);
  memset(r, 0, sizeof *r);
}

static long json_long(const char *text, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(text, pat);
  return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static void add_entry(run *r, const char *url, int code, const char *title) {
  r->urls = realloc(r->urls, (r->n + 1) * sizeof *r->urls);
  r->codes = realloc(r->codes, (r->n + 1) * sizeof *r->codes);
  r->titles = realloc(r->titles, (r->n + 1) * sizeof *r->titles);
  assert_non_null(r->urls);
  assert_non_null(r->codes);
  assert_non_null(r->titles);
  r->urls[r->n] = strdup(url);
  r->codes[r->n] = code;
  r->titles[r->n] = title ? strdup(title) : NULL;
  r->n++;
}

/* The whole of a file, NUL-terminated (the caller frees it); the file is
 * removed. */
static char *slurp(const char *path) {
  char *buf = br_test_read_file(path, NULL);
  assert_non_null(buf);
  unlink(path);
  return buf;
}

/* run_scraper: run the scraper with args (NULL-terminated) on url, capture
 * and parse its output. */
static void run_scraper(run *r, const char *url, ...) {
  const char *argv[32];
  int argc = 0;
  char outpath[64];
  va_list ap;
  memset(r, 0, sizeof *r);
  argv[argc++] = scraper_path();
  va_start(ap, url);
  for (const char *a; (a = va_arg(ap, const char *)) && argc < 29;) argv[argc++] = a;
  va_end(ap);
  argv[argc++] = url;
  argv[argc] = NULL;

  char errpath[64];
  snprintf(outpath, sizeof outpath, "scraper-out-%d.txt", (int)getpid());
  snprintf(errpath, sizeof errpath, "scraper-err-%d.txt", (int)getpid());
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || efd < 0) _exit(126);
    dup2(fd, 1);
    dup2(efd, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r->out = slurp(outpath);
  r->err = slurp(errpath);
  fputs(r->err, stderr); /* what the scraper said stays in the test's log */

  char *save = NULL, *copy = strdup(r->out);
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char u[2048], title[512];
    int code;
    if (sscanf(line, "page %d %2047s \"%511[^\"]\"", &code, u, title) == 3) {
      add_entry(r, u, code, title);
    } else if (sscanf(line, "broken %d %2047s", &code, u) == 2) {
      add_entry(r, u, code, NULL);
    } else if (sscanf(line, "broken error %2047s", u) == 1) {
      size_t ul = strlen(u);
      if (ul && u[ul - 1] == ':') u[ul - 1] = '\0';
      add_entry(r, u, 0, NULL);
    } else if (strncmp(line, "crawled ", 8) == 0) {
      r->crawled = strtol(line + 8, NULL, 10);
    } else if (line[0] == '{') {
      r->rss_kib = json_long(line, "rss_kib");
      r->max_inflight = json_long(line, "max_inflight");
      r->offhost = json_long(line, "offhost");
    }
  }
  free(copy);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The access log, gathered. */
typedef struct reqs {
  char **uris;
  size_t n;
  size_t other_host; /* requests whose Host was not 127.0.0.1 */
  size_t status[600];
} reqs;

static void on_request(const char *host, const char *uri, int status, void *ud) {
  reqs *q = ud;
  q->uris = realloc(q->uris, (q->n + 1) * sizeof *q->uris);
  assert_non_null(q->uris);
  q->uris[q->n++] = strdup(uri);
  if (strcmp(host, "127.0.0.1") != 0) q->other_host++;
  if (status >= 0 && status < 600) q->status[status]++;
}

static void reqs_free(reqs *q) {
  for (size_t i = 0; i < q->n; i++) free(q->uris[i]);
  free(q->uris);
}

/* No string twice in v[0..n) (sorts v). */
static void assert_unique(char **v, size_t n, const char *what) {
  qsort(v, n, sizeof *v, cmp_str);
  for (size_t i = 1; i < n; i++)
    if (strcmp(v[i - 1], v[i]) == 0) fail_msg("%s twice: %s", what, v[i]);
}

/* The fixture of the running test: its teardown stops nginx and removes the
 * site even when an assertion failed half-way. */
static nx_fixture g_nx;

static int teardown(void **state) {
  (void)state;
  nx_stop(&g_nx);
  nx_cleanup(&g_nx);
  return 0;
}

static void start_or_skip(nx_fixture *nx, nx_site *site) {
  if (access(scraper_path(), X_OK) != 0) {
    br_test_skip("no scraper program at %s (braid-http or libxml2 not built)", scraper_path());
  }
  int rc = nx_start(nx, "scraper-site", site);
  if (rc == NX_SKIP) br_test_skip("nginx not found");
  assert_int_equal(rc, 0);
}

/* The whole site: every page once, broken ones reported, nothing off-host. */
static void test_whole_site(void **state) {
  (void)state;
  nx_fixture *nx = &g_nx;
  nx_site site = {.pages = (int)br_test_scaled(3000)};
  start_or_skip(nx, &site);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", nx->port);
  run r;
  run_scraper(&r, url, "-c", "24", "-n", "100000", "--json", (char *)NULL);
  reqs q = {0};
  nx_stop(nx);
  int logged = nx_each_request(nx, on_request, &q);

  size_t expect = 1 + (size_t)site.pages + (size_t)site.missing + (size_t)site.broken;
  assert_int_equal(r.status, 0);
  assert_int_equal(r.crawled, (long)expect);
  assert_int_equal(r.n, expect);
  assert_int_equal(logged, (int)expect);
  assert_int_equal(q.n, expect);

  /* Each page once, with its title; each broken link once, with its code. */
  size_t pages = 0, missing = 0, broken = 0;
  char *titles_seen = calloc((size_t)site.pages, 1);
  assert_non_null(titles_seen);
  for (size_t i = 0; i < r.n; i++) {
    int k;
    char tail;
    if (r.codes[i] == 200 && r.titles[i] && sscanf(r.titles[i], "Page %d%c", &k, &tail) == 1) {
      assert_true(k >= 0 && k < site.pages);
      assert_int_equal(titles_seen[k], 0);
      titles_seen[k] = 1;
      pages++;
    } else if (r.codes[i] == 404) {
      assert_non_null(strstr(r.urls[i], "/missing/"));
      missing++;
    } else if (r.codes[i] == 500) {
      assert_non_null(strstr(r.urls[i], "/broken/"));
      broken++;
    } else {
      assert_int_equal(r.codes[i], 200);
      assert_string_equal(r.titles[i], "Index");
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "http://127.0.0.1:%d/", nx->port);
    assert_int_equal(strncmp(r.urls[i], prefix, strlen(prefix)), 0);
    assert_null(strchr(r.urls[i], '#'));
  }
  free(titles_seen);
  assert_int_equal(pages, (size_t)site.pages);
  assert_int_equal(missing, (size_t)site.missing);
  assert_int_equal(broken, (size_t)site.broken);
  assert_int_equal(q.status[404], (size_t)site.missing);
  assert_int_equal(q.status[500], (size_t)site.broken);
  assert_unique(r.urls, r.n, "reported");

  /* The server saw each URL once, all under the start's host name: no
   * off-host link was followed (localhost:<port> is the same server). */
  assert_unique(q.uris, q.n, "requested");
  assert_int_equal(q.other_host, 0);
  /* 5 off-host links per page (another host, https, localhost, mailto:,
   * javascript:), counted where they were found. */
  assert_int_equal(r.offhost, 5L * site.pages);
  assert_true(r.max_inflight >= 1 && r.max_inflight <= 24);

  reqs_free(&q);
  run_free(&r);
  }

/* -n N: exactly N requests, whatever the site's size. */
static void test_page_limit(void **state) {
  (void)state;
  nx_fixture *nx = &g_nx;
  nx_site site = {.pages = (int)br_test_scaled(3000)};
  start_or_skip(nx, &site);
  char url[64], limit[32];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", nx->port);
  int n = site.pages / 4 + 27; /* 777, or a quarter of a scaled-down site */
  snprintf(limit, sizeof limit, "%d", n);
  run r;
  run_scraper(&r, url, "-c", "16", "-n", limit, "--json", (char *)NULL);
  reqs q = {0};
  nx_stop(nx);
  int logged = nx_each_request(nx, on_request, &q);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.crawled, n);
  assert_int_equal(r.n, (size_t)n);
  assert_int_equal(logged, n);
  assert_unique(q.uris, q.n, "requested");
  assert_unique(r.urls, r.n, "reported");
  reqs_free(&q);
  run_free(&r);
  }

/* A server that is gone: every fetch fails and is reported, nothing hangs,
 * and the exit status says the crawl failed. */
static void test_unreachable(void **state) {
  (void)state;
  if (access(scraper_path(), X_OK) != 0) br_test_skip("no scraper program at %s", scraper_path());
  int port = nx_free_port();
  assert_true(port > 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  run r;
  run_scraper(&r, url, "--json", (char *)NULL);
  assert_int_equal(r.status, 1); /* nothing could be fetched: a failed crawl */
  assert_int_equal(r.crawled, 1);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.codes[0], 0); /* "broken error URL: why" */
  run_free(&r);
}

/* A transfer that fails after a status line came (here a redirect loop:
 * every answer is a 302 to itself, until curl's redirect limit) is a broken
 * page, with curl's reason; never an unparsed one. */
static void test_failed_transfer_is_broken(void **state) {
  (void)state;
  nx_fixture *nx = &g_nx;
  nx_site site = {.pages = 10};
  start_or_skip(nx, &site);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/loop/", nx->port);
  run r;
  run_scraper(&r, url, "--json", (char *)NULL);
  assert_int_equal(r.status, 1); /* nothing could be fetched */
  assert_int_equal(r.crawled, 1);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.codes[0], 0); /* "broken error URL: why" */
  assert_string_equal(r.urls[0], url);
  if (!strstr(r.out, "edirect")) fail_msg("no redirect in the reason: %s", r.out);
  if (!strncmp(r.out, "unparsed ", 9) || strstr(r.out, "\nunparsed "))
    fail_msg("counted as unparsed: %s", r.out);
  if (!strstr(r.out, "\"unparsed\":0")) fail_msg("JSON summary: %s", r.out);
  run_free(&r);
}

/* Bad input: a usage error (2) or a failure (1), never a crawl, nothing
 * printed on stdout. (run_scraper puts its url argument last.) */
static void test_bad_input(void **state) {
  (void)state;
  if (access(scraper_path(), X_OK) != 0) br_test_skip("no scraper program at %s", scraper_path());
  static const struct {
    const char *last, *first;
    int status;
    const char *says; /* the one line on stderr contains this */
  } cases[] = {
      {"--bogus", NULL, 2, "unknown option '--bogus'"},
      {"http://b/", "http://a/", 2, "one URL only"},
      {"--parse-files", NULL, 2, "--parse-files needs a directory"},
      {"x", "-n", 2, "-n wants a whole number"},
      {"ftp://x/", NULL, 1, "not an http(s) URL: 'ftp://x/'"},
      {"/nonexistent-dir", "--parse-files", 1, "cannot read /nonexistent-dir: No such file"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run r;
    run_scraper(&r, cases[i].last, cases[i].first, (char *)NULL);
    if (r.status != cases[i].status)
      fail_msg("scraper %s %s: exit status %d, want %d", cases[i].first ? cases[i].first : "", cases[i].last,
               r.status, cases[i].status);
    assert_int_equal(r.crawled, 0);
    assert_int_equal(r.n, 0);
    if (!strstr(r.err, cases[i].says)) fail_msg("stderr lacks \"%s\": %s", cases[i].says, r.err);
    const char *nl = strchr(r.err, '\n');
    if (!nl || nl[1]) fail_msg("want one line on stderr, got: %s", r.err); /* said once, not twice */
    run_free(&r);
  }
}

/* --parse-files walks a tree of pages: a FIFO or a device named *.html is
 * not a page (a FIFO would never end), and a link back up the tree is not
 * walked twice. */
static void test_parse_files_tree(void **state) {
  (void)state;
  if (access(scraper_path(), X_OK) != 0) br_test_skip("no scraper program at %s", scraper_path());
  char dir[] = "/tmp/braid-scraper-files-XXXXXX", p[160];
  assert_non_null(mkdtemp(dir));
  snprintf(p, sizeof p, "%s/sub", dir);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/a.html", dir);
  FILE *f = fopen(p, "w");
  fputs("<html><title>a</title><a href=\"sub/b.html\">b</a></html>", f);
  fclose(f);
  snprintf(p, sizeof p, "%s/sub/b.html", dir);
  f = fopen(p, "w");
  fputs("<html><title>b</title></html>", f);
  fclose(f);
  snprintf(p, sizeof p, "%s/fifo.html", dir);
  assert_int_equal(mkfifo(p, 0644), 0);
  snprintf(p, sizeof p, "%s/zero.html", dir);
  assert_int_equal(symlink("/dev/zero", p), 0);
  snprintf(p, sizeof p, "%s/sub/up", dir);
  assert_int_equal(symlink(dir, p), 0);
  run r;
  run_scraper(&r, dir, "-q", "--parse-files", (char *)NULL);
  assert_int_equal(r.status, 0);
  if (!strstr(r.out, "parsed 2 files")) fail_msg("want the two pages parsed once each: %s", r.out);
  run_free(&r);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* Memory: bounded by what is in flight, not by the size of the crawl. */
static void test_memory_bounded(void **state) {
  (void)state;
  nx_fixture *nx = &g_nx;
  nx_site site = {.pages = (int)br_test_scaled(6000)};
  start_or_skip(nx, &site);
  char url[64], n_small[32], n_large[32];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", nx->port);
  snprintf(n_small, sizeof n_small, "%d", site.pages / 6);
  snprintf(n_large, sizeof n_large, "%d", site.pages);
  run small, large;
  run_scraper(&small, url, "-q", "-c", "32", "-n", n_small, "--json", (char *)NULL);
  run_scraper(&large, url, "-q", "-c", "32", "-n", n_large, "--json", (char *)NULL);
  nx_stop(nx);
  assert_int_equal(small.status, 0);
  assert_int_equal(large.status, 0);
  assert_int_equal(small.crawled, site.pages / 6);
  assert_int_equal(large.crawled, site.pages);
  assert_true(small.max_inflight <= 32 && large.max_inflight <= 32);
  assert_true(small.rss_kib > 0 && large.rss_kib > 0);
  fprintf(stderr, "peak RSS: %ld KiB at %d URLs, %ld KiB at %d URLs\n", small.rss_kib,
          site.pages / 6, large.rss_kib, site.pages);
#if SANITIZED
  /* ASan's quarantine and TSan's shadow grow with what was ever allocated:
   * their RSS says nothing about the program's. */
#else
  /* Six times the pages; the seen-set and frontier add ~100 KiB, the rest
   * is what is in flight. Allow 15 % (allocator noise). */
  assert_true(large.rss_kib <= small.rss_kib + small.rss_kib * 15 / 100);
#endif
  run_free(&small);
  run_free(&large);
  }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_whole_site, teardown),
      cmocka_unit_test_teardown(test_page_limit, teardown),
      cmocka_unit_test(test_unreachable),
      cmocka_unit_test_teardown(test_failed_transfer_is_broken, teardown),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_parse_files_tree),
      cmocka_unit_test_teardown(test_memory_bounded, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
