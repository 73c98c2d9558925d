/* SPDX-License-Identifier: MIT */
/* braid-http against a real nginx (Debian's), started by the test on loopback
 * with a generated configuration and site (tests/http_fixture.h): bodies
 * byte for byte, gzip, keep-alive reuse and the per-host limit as nginx's own
 * access log counts connections, TLS errors and verification, HTTP/2
 * multiplexing over one connection, cancelling a rate-limited download.
 * Skipped when nginx is not installed. */
#include <braid.h>
#include <braid/http.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_util.h"

#ifndef BRAID_HAVE_HTTP
int main(void) { br_test_skip("braid-http is not built (no libcurl)"); }
#else

#include "http_fixture.h"

static http_nginx ng;

static void run(br_task_fn body) {
  void *res = NULL;
  int rc = br_run(&res, body, NULL);
  if (rc) fprintf(stderr, "main failed: %s\n", br_strerror(rc));
  assert_int_equal(rc, 0);
}

static char *site_file(const char *name, size_t *len) {
  char p[700];
  snprintf(p, sizeof p, "%s/site/%s", ng.dir, name);
  return br_test_read_file(p, len);
}

static void *body_files(void *arg) {
  (void)arg;
  br_http_session *s;
  assert_int_equal(br_http_session_new(&s, NULL), 0);
  char u[256];
  br_http_response r;
  snprintf(u, sizeof u, "%s/", ng.base);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body, "braid-http test site"));
  assert_non_null(strstr(br_http_header_get(&r, "Server"), "nginx"));
  br_http_response_free(&r);

  /* 1 MiB, byte for byte. */
  size_t n;
  char *want = site_file("big.bin", &n);
  snprintf(u, sizeof u, "%s/big.bin", ng.base);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
  assert_int_equal(r.body_len, n);
  assert_memory_equal(r.body, want, n);
  br_http_response_free(&r);
  free(want);

  /* Compressed on the wire (gzip), handed over decoded. */
  want = site_file("text.txt", &n);
  snprintf(u, sizeof u, "%s/text.txt", ng.base);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
  assert_string_equal(br_http_header_get(&r, "Content-Encoding"), "gzip");
  assert_int_equal(r.body_len, n);
  assert_memory_equal(r.body, want, n);
  br_http_response_free(&r);
  free(want);

  snprintf(u, sizeof u, "%s/missing", ng.base);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
  assert_int_equal(r.status, 404);
  br_http_response_free(&r);
  assert_int_equal(br_http_session_free(s), 0);
  return NULL;
}

static void test_files(void **state) {
  (void)state;
  run(body_files);
}

typedef struct one {
  br_http_session *s;
  char url[256];
  int i, rc;
  bool right;
} one;

static void *get_one(void *arg) {
  one *o = arg;
  br_http_response r;
  o->rc = br_http_get(o->s, &r, o->url, NULL, br_deadline_ms(30000));
  char want[32];
  snprintf(want, sizeof want, "file %d\n", o->i);
  o->right = o->rc == 0 && r.status == 200 && r.body && strcmp(r.body, want) == 0;
  br_http_response_free(&r);
  return NULL;
}

/* n concurrent GETs of f0..f(n-1) from base; all must be right. */
static void get_many(br_http_session *s, const char *base, int n) {
  one *o = calloc((size_t)n, sizeof *o);
  br_task **t = calloc((size_t)n, sizeof *t);
  for (int i = 0; i < n; i++) {
    o[i].s = s;
    o[i].i = i;
    snprintf(o[i].url, sizeof o[i].url, "%s/f%d.txt", base, i);
    assert_int_equal(br_spawn(&t[i], get_one, &o[i], NULL), 0);
  }
  for (int i = 0; i < n; i++) {
    br_join(t[i], NULL);
    assert_int_equal(o[i].rc, 0);
    assert_true(o[i].right);
  }
  free(o);
  free(t);
}

static void *body_reuse(void *arg) {
  (void)arg;
  br_http_session *s;
  assert_int_equal(br_http_session_new(&s, NULL), 0);
  char u[256];
  /* Sequential: one connection for all 50 requests. */
  http_nginx_log_clear(&ng);
  for (int i = 0; i < 50; i++) {
    br_http_response r;
    snprintf(u, sizeof u, "%s/f%d.txt", ng.base, i);
    assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
    assert_int_equal(r.status, 200);
    br_http_response_free(&r);
  }
  int lines = 0;
  assert_int_equal(http_nginx_log_wait(&ng, ".txt", 50, &lines), 1);
  assert_int_equal(lines, 50);
  br_http_stats st;
  br_http_session_get_stats(s, &st);
  assert_int_equal(st.connections, 1);

  /* 100 at once: at most 6 connections (the per-host default), all reused. */
  http_nginx_log_clear(&ng);
  get_many(s, ng.base, 100);
  int conns = http_nginx_log_wait(&ng, ".txt", 100, &lines);
  assert_int_equal(lines, 100);
  assert_true(conns >= 1 && conns <= 6);
  br_http_session_get_stats(s, &st);
  assert_true(st.connections <= 6);
  assert_int_equal(st.max_in_flight, 6);
  assert_int_equal(br_http_session_free(s), 0);
  return NULL;
}

static void test_reuse(void **state) {
  (void)state;
  run(body_reuse);
}

static void *body_tls(void *arg) {
  (void)arg;
  char u[256], ca[600];
  snprintf(u, sizeof u, "%s/f1.txt", ng.tls_base);
  snprintf(ca, sizeof ca, "%s/cert.pem", ng.dir);
  br_http_response r;
  /* A self-signed certificate does not verify. */
  br_http_session *s;
  assert_int_equal(br_http_session_new(&s, NULL), 0);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), BR_ETLS);
  assert_int_equal(r.attempts, 1); /* not retried */
  assert_true(r.error[0] != 0);
  br_http_response_free(&r);
  assert_int_equal(br_http_session_free(s), 0);

  br_http_opts in = {.insecure = true};
  assert_int_equal(br_http_session_new(&s, &in), 0);
  assert_int_equal(br_http_get(s, &r, u, NULL, BR_NEVER), 0);
  assert_string_equal(r.body, "file 1\n");
  br_http_response_free(&r);
  assert_int_equal(br_http_session_free(s), 0);

  /* Trusting its certificate: verified, and HTTP/2 multiplexes 40
   * concurrent requests over one connection. */
  br_http_opts co = {.ca_file = ca};
  assert_int_equal(br_http_session_new(&s, &co), 0);
  char idx[256];
  snprintf(idx, sizeof idx, "%s/index.html", ng.tls_base);
  assert_int_equal(br_http_get(s, &r, idx, NULL, BR_NEVER), 0);
  br_http_response_free(&r);
  http_nginx_log_clear(&ng);
  get_many(s, ng.tls_base, 40);
  int lines = 0;
  int conns = http_nginx_log_wait(&ng, ".txt", 40, &lines);
  assert_int_equal(lines, 40);
  assert_int_equal(conns, 1);
  char *log = http_nginx_log(&ng);
  assert_non_null(strstr(log, "HTTP/2.0"));
  assert_null(strstr(log, "HTTP/1.1"));
  free(log);
  br_http_stats st;
  br_http_session_get_stats(s, &st);
  assert_int_equal(st.connections, 1);
  assert_int_equal(br_http_session_free(s), 0);
  return NULL;
}

static void test_tls(void **state) {
  (void)state;
  if (!ng.tls_port) skip();
  run(body_tls);
}

typedef struct dl {
  br_http_session *s;
  char url[256];
  int rc;
} dl;

static void *download(void *arg) {
  dl *d = arg;
  br_http_response r;
  d->rc = br_http_get(d->s, &r, d->url, NULL, BR_NEVER);
  br_http_response_free(&r);
  return NULL;
}

static void *body_cancel(void *arg) {
  (void)arg;
  int fd0 = br_test_count_fds();
  br_http_session *s;
  assert_int_equal(br_http_session_new(&s, NULL), 0);
  /* /slow/ sends at 20 KB/s: 1 MiB takes ~50 s. Cancel both downloads
   * after 300 ms (one over HTTP/1.1, one over HTTP/2 when TLS is there). */
  dl d[2] = {{.s = s}, {.s = s}};
  snprintf(d[0].url, sizeof d[0].url, "%s/slow/big.bin", ng.base);
  snprintf(d[1].url, sizeof d[1].url, "%s/slow/big.bin", ng.tls_port ? ng.tls_base : ng.base);
  br_http_opts in = {.insecure = true};
  br_http_session *s2;
  assert_int_equal(br_http_session_new(&s2, &in), 0);
  d[1].s = s2;
  br_task *t[2];
  for (int i = 0; i < 2; i++) assert_int_equal(br_spawn(&t[i], download, &d[i], NULL), 0);
  br_sleep_ms(300);
  assert_true(br_test_count_fds() > fd0);
  int64_t t0 = br_now();
  for (int i = 0; i < 2; i++) br_cancel(t[i]);
  for (int i = 0; i < 2; i++) {
    br_join(t[i], NULL);
    assert_int_equal(d[i].rc, BR_ECANCELED);
  }
  assert_true(br_now() - t0 < 100000000);
  assert_int_equal(br_http_session_free(s), 0);
  assert_int_equal(br_http_session_free(s2), 0);
  assert_int_equal(br_test_count_fds(), fd0);
  return NULL;
}

static void test_cancel(void **state) {
  (void)state;
  run(body_cancel);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  int rc = http_nginx_start(&ng);
  if (rc == -ENOENT) br_test_skip("nginx is not installed (Debian: nginx)");
  if (rc) {
    fprintf(stderr, "cannot start nginx: %s\n", br_strerror(rc));
    return 1;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_files),
    cmocka_unit_test(test_reuse),
    cmocka_unit_test(test_tls),
    cmocka_unit_test(test_cancel),
  };
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  http_nginx_stop(&ng);
  return rc;
}
#endif
