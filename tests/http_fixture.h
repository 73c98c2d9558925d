/* SPDX-License-Identifier: MIT */
/* http_fixture — servers for braid-http's tests (tests/test_http*.c):
 *  - the in-project misbehaving server (tests/http_testsrv.c), one process
 *    per test program, started and stopped here;
 *  - a real nginx from Debian on loopback, with a generated configuration and
 *    site in the build directory, on a free port, never left running (it
 *    dies with the test: PR_SET_PDEATHSIG, and is stopped at the end).
 * Call the start functions from the test's main thread before any loop runs.
 */
#ifndef BRAID_HTTP_FIXTURE_H
#define BRAID_HTTP_FIXTURE_H

#include <braid.h>
#include <braid/http.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct http_server {
  pid_t pid;
  int port;
  int stdin_fd; /* the server's standard input: closing it stops the server */
  char base[64]; /* "http://127.0.0.1:<port>" */
} http_server;

static inline pid_t fx_spawn(char *const argv[], int *stdin_w, int *stdout_r) {
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  if (stdin_w && pipe2(in, O_CLOEXEC)) return -1;
  if (stdout_r && pipe2(out, O_CLOEXEC)) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (stdin_w) dup2(in[0], 0);
    if (stdout_r) dup2(out[1], 1);
    execvp(argv[0], argv);
    _exit(127);
  }
  if (stdin_w) {
    close(in[0]);
    *stdin_w = in[1];
  }
  if (stdout_r) {
    close(out[1]);
    *stdout_r = out[0];
  }
  return pid;
}

/* Start tests/http_testsrv (path from HTTP_TESTSRV, set by CMake). */
static inline int http_server_start(http_server *s) {
  memset(s, 0, sizeof *s);
  char *argv[] = {(char *)HTTP_TESTSRV, NULL};
  int out;
  s->pid = fx_spawn(argv, &s->stdin_fd, &out);
  if (s->pid < 0) return -errno;
  FILE *f = fdopen(out, "r");
  if (!f || fscanf(f, "PORT %d", &s->port) != 1) {
    if (f) fclose(f);
    return -EIO;
  }
  fclose(f);
  snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
  return 0;
}

static inline void http_server_stop(http_server *s) {
  if (s->pid <= 0) return;
  close(s->stdin_fd); /* it exits at end of file */
  int st;
  struct timespec ts = {0, 10 * 1000 * 1000};
  for (int i = 0; i < 300; i++) {
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      s->pid = 0;
      return;
    }
    nanosleep(&ts, NULL);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, &st, 0);
  s->pid = 0;
}

/* The start of a test program's main against the in-project server: SIGPIPE
 * ignored (a test may write to a connection the server dropped), the server
 * started into *s. Returns 0, or non-zero with the reason on stderr. */
static inline int http_server_begin(http_server *s) {
  signal(SIGPIPE, SIG_IGN);
  int rc = http_server_start(s);
  if (rc) fprintf(stderr, "cannot start %s: %s\n", HTTP_TESTSRV, br_strerror(rc));
  return rc;
}

static inline int http_server_end(http_server *s, int rc) {
  http_server_stop(s);
  return rc;
}

/* A test program's whole main: `return HTTP_SERVER_MAIN(srv, tests);` runs
 * the cmocka group `tests` with the server up in `srv` (exit status 1 if it
 * cannot start). */
#define HTTP_SERVER_MAIN(srv, tests)                                                       \
  (http_server_begin(&(srv)) ? 1 : http_server_end(&(srv), cmocka_run_group_tests((tests), NULL, NULL)))

/* GET path from the server over a plain blocking socket (for a process that
 * runs no loop meanwhile): the response, up to the end of the line on which
 * `until` first occurs, into buf (n bytes, NUL-terminated). Returns 0, or -1
 * if the server could not be reached or closed before that. */
static inline int fx_plain_get(const http_server *s, const char *path, const char *until,
                               char *buf, size_t n) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0) return -1;
  char req[256];
  int l = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
  size_t got = 0;
  buf[0] = 0;
  int rc = -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)l) == l) {
    while (got + 1 < n) {
      ssize_t r = read(fd, buf + got, n - 1 - got);
      if (r <= 0) break;
      got += (size_t)r;
      buf[got] = 0;
      const char *m = strstr(buf, until);
      if (m && strchr(m, '\n')) {
        rc = 0;
        break;
      }
    }
  }
  close(fd);
  return rc;
}

/* A free loopback port (bound, read, closed: another program could take it
 * before nginx does; the caller retries). */
static inline int fx_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
      getsockname(fd, (struct sockaddr *)&a, &l)) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

static inline bool fx_can_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

static inline int fx_write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -errno;
  size_t w = fwrite(data, 1, n, f);
  fclose(f);
  return w == n ? 0 : -EIO;
}

typedef struct http_nginx {
  pid_t pid;
  int port, tls_port; /* tls_port 0 when no certificate could be made */
  char dir[256];      /* the prefix: nginx.conf, site/, access.log, cert.pem */
  char base[64], tls_base[64];
} http_nginx;

/* The site: index.html, big.bin (1 MiB of a known pattern), text.txt
 * (compressible, 64 KiB), f0.txt .. f99.txt ("file <i>\n"). */
static inline int fx_make_site(const char *dir) {
  char p[700];
  snprintf(p, sizeof p, "%s/site", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/site/index.html", dir);
  const char *idx = "<html><body>braid-http test site</body></html>\n";
  if (fx_write_file(p, idx, strlen(idx))) return -EIO;
  size_t n = 1 << 20;
  unsigned char *b = malloc(n);
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)((i * 2654435761u) >> 13);
  snprintf(p, sizeof p, "%s/site/big.bin", dir);
  int rc = fx_write_file(p, b, n);
  free(b);
  if (rc) return rc;
  char *t = malloc(65536);
  for (size_t i = 0; i < 65536; i++) t[i] = "braid http text, compressible. "[i % 31];
  snprintf(p, sizeof p, "%s/site/text.txt", dir);
  rc = fx_write_file(p, t, 65536);
  free(t);
  for (int i = 0; i < 100 && !rc; i++) {
    char c[32];
    int l = snprintf(c, sizeof c, "file %d\n", i);
    snprintf(p, sizeof p, "%s/site/f%d.txt", dir, i);
    rc = fx_write_file(p, c, (size_t)l);
  }
  return rc;
}

/* Start nginx (Debian's /usr/sbin/nginx) in <cwd>/http_nginx.<pid>/.
 * Returns 0, or -ENOENT when nginx is not installed (skip the test). */
static inline int http_nginx_start(http_nginx *n) {
  memset(n, 0, sizeof *n);
  const char *bin = access("/usr/sbin/nginx", X_OK) == 0 ? "/usr/sbin/nginx" : NULL;
  if (!bin) return -ENOENT;
  char cwd[200];
  if (!getcwd(cwd, sizeof cwd)) return -errno;
  snprintf(n->dir, sizeof n->dir, "%s/http_nginx.%d", cwd, (int)getpid());
  mkdir(n->dir, 0755);
  int rc = fx_make_site(n->dir);
  if (rc) return rc;
  char p[512], cmd[1024];
  /* A self-signed certificate for 127.0.0.1 / localhost (for the TLS tests). */
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
           "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s/key.pem "
           "-out %s/cert.pem >/dev/null 2>&1",
           n->dir, n->dir);
  bool tls = system(cmd) == 0;
  for (int tries = 0; tries < 5; tries++) {
    n->port = fx_free_port();
    n->tls_port = tls ? fx_free_port() : 0;
    if (n->port <= 0 || n->tls_port == n->port) continue;
    char tls_server[2048] = "";
    if (tls)
      snprintf(tls_server, sizeof tls_server,
               "  server { listen 127.0.0.1:%d ssl http2; root %s/site;\n"
               "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem;\n"
               "    location /slow/ { alias %s/site/; limit_rate 20k; } }\n",
               n->tls_port, n->dir, n->dir, n->dir, n->dir);
    char conf[8192];
    int l = snprintf(conf, sizeof conf,
                     "daemon off;\nmaster_process off;\nworker_processes 1;\n"
                     "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
                     "events { worker_connections 512; }\n"
                     "http {\n"
                     "  log_format conn '$connection $connection_requests $status "
                     "$server_protocol $request_uri';\n"
                     "  access_log %s/access.log conn;\n"
                     "  client_body_temp_path %s/tmp_body; proxy_temp_path %s/tmp_proxy;\n"
                     "  fastcgi_temp_path %s/tmp_fcgi; uwsgi_temp_path %s/tmp_uwsgi;\n"
                     "  scgi_temp_path %s/tmp_scgi;\n"
                     "  default_type application/octet-stream;\n"
                     "  types { text/html html; text/plain txt; }\n"
                     "  keepalive_requests 10000; keepalive_timeout 60s;\n"
                     "  gzip on; gzip_types text/plain; gzip_min_length 256;\n"
                     "  server { listen 127.0.0.1:%d; root %s/site;\n"
                     "    location /slow/ { alias %s/site/; limit_rate 20k; } }\n"
                     "%s}\n",
                     n->dir, n->dir, n->dir, n->dir, n->dir, n->dir, n->dir, n->dir, n->port,
                     n->dir, n->dir, tls_server);
    snprintf(p, sizeof p, "%s/nginx.conf", n->dir);
    if (fx_write_file(p, conf, (size_t)l)) return -EIO;
    char *argv[] = {(char *)bin, "-p", n->dir, "-c", p, "-e", "stderr", NULL};
    /* -e (the early error log) exists since nginx 1.19.5. */
    n->pid = fx_spawn(argv, NULL, NULL);
    if (n->pid < 0) return -errno;
    struct timespec ts = {0, 20 * 1000 * 1000};
    bool up = false;
    for (int i = 0; i < 250 && !up; i++) {
      int st;
      if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
        n->pid = 0;
        break; /* it failed (a port taken meanwhile?): try other ports */
      }
      up = fx_can_connect(n->port) && (!tls || fx_can_connect(n->tls_port));
      if (!up) nanosleep(&ts, NULL);
    }
    if (up) {
      snprintf(n->base, sizeof n->base, "http://127.0.0.1:%d", n->port);
      if (tls) snprintf(n->tls_base, sizeof n->tls_base, "https://127.0.0.1:%d", n->tls_port);
      return 0;
    }
    if (n->pid > 0) {
      kill(n->pid, SIGKILL);
      waitpid(n->pid, NULL, 0);
      n->pid = 0;
    }
  }
  return -EADDRINUSE;
}

static inline void http_nginx_stop(http_nginx *n) {
  if (n->pid <= 0) return;
  kill(n->pid, SIGTERM);
  int st;
  waitpid(n->pid, &st, 0);
  n->pid = 0;
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", n->dir);
}

/* The access log's lines so far (nginx writes each line when the request
 * ends). Caller frees. */
static inline char *http_nginx_log(const http_nginx *n) {
  char p[600];
  snprintf(p, sizeof p, "%s/access.log", n->dir);
  return br_test_read_file(p, NULL);
}

/* Truncate the access log (nginx keeps appending to the same file). */
static inline void http_nginx_log_clear(const http_nginx *n) {
  char p[600];
  snprintf(p, sizeof p, "%s/access.log", n->dir);
  int fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd >= 0) close(fd);
}

/* Distinct connection numbers ($connection) of the log lines whose request
 * contains `match` (NULL: every line), and how many lines matched. */
static inline int http_nginx_log_connections(const http_nginx *n, const char *match, int *lines) {
  char *log = http_nginx_log(n);
  if (!log) return -1;
  long seen[4096];
  int ns = 0, nl = 0;
  for (char *p = log; *p;) {
    char *e = strchr(p, '\n');
    if (e) *e = 0;
    if (!match || strstr(p, match)) {
      long c = strtol(p, NULL, 10);
      nl++;
      bool dup = false;
      for (int i = 0; i < ns; i++) dup |= seen[i] == c;
      if (!dup && ns < 4096) seen[ns++] = c;
    }
    if (!e) break;
    p = e + 1;
  }
  free(log);
  if (lines) *lines = nl;
  return ns;
}

/* nginx writes a request's log line after the response has gone out, so
 * the client may see the response first: wait (from a task) until `want`
 * lines match, at most 5 s. Returns http_nginx_log_connections(). */
static inline int http_nginx_log_wait(const http_nginx *n, const char *match, int want,
                                      int *lines) {
  int64_t end = br_deadline_ms(5000);
  int c;
  while ((c = http_nginx_log_connections(n, match, lines)) >= 0 && *lines < want &&
         br_now() < end)
    br_sleep_ms(5);
  return c;
}

#endif
