/* SPDX-License-Identifier: MIT */
/* nginx_fixture.h — a real nginx on loopback for the scraper's tests, started
 * and stopped by the test itself, and the generated site it serves.
 *
 * Header-only (static functions): tests/CMakeLists.txt builds every test from
 * one source file, so a test includes this and uses what it needs.
 *
 *   nx_fixture nx;
 *   nx_site site = {.pages = 3000};
 *   int rc = nx_start(&nx, "scraper-fixture", &site);  // 0, or NX_SKIP
 *   ... crawl http://127.0.0.1:<nx.port>/ ...
 *   nx_stop(&nx);                                     // always, also on failure
 *   nx_count_requests(&nx, ...) reads the access log afterwards
 *
 * nginx runs in the foreground as a child of the test (`daemon off;
 * master_process off;`: one process, no privilege drop, nothing forked behind
 * our back) on a free port of 127.0.0.1, with its configuration, logs, pid and
 * temporary files under <dir>/nginx/ and the site under <dir>/site/. The child
 * has PR_SET_PDEATHSIG(SIGKILL): if the test process dies (a crash, ctest's
 * timeout), nginx goes with it, so it is never left running.
 *
 * The site (nx_site_generate), deterministic for a given page count and port:
 *   /index.html          -> /p/0.html
 *   /p/<i>.html          "Page <i>": links to i+1 (absolute path), 2i+1
 *                        (relative), 3i+2 (../p/..#frag, with a fragment),
 *                        5i+3 (absolute URL on the same host), all mod pages;
 *                        off-host links that must not be followed: another
 *                        host, https on the same host name, the same server
 *                        as http://localhost:<port>, mailto: and javascript:;
 *                        every 97th page (i % 97 == 5) links to
 *                        /missing/<i>.html (404, no such file) and every
 *                        211th (i % 211 == 7) to /broken/<i> (nginx answers
 *                        500); every 50th page is padded with ~20 KB of text.
 * The access log has one line per request: "<host> <uri> <status>".
 */
#ifndef BRAID_TEST_NGINX_FIXTURE_H
#define BRAID_TEST_NGINX_FIXTURE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* nx_start's "cannot run here" result (no nginx binary): the test skips. */
#define NX_SKIP 77

typedef struct nx_site {
  int pages;           /* /p/0.html .. /p/<pages-1>.html */
  /* filled by nx_site_generate: */
  int missing;         /* distinct /missing/ links (404) */
  int broken;          /* distinct /broken/ links (500) */
} nx_site;

typedef struct nx_fixture {
  char dir[PATH_MAX];  /* <cwd>/<name>-<pid> */
  char site[PATH_MAX + 8];
  char conf[PATH_MAX + 32];
  char access_log[PATH_MAX + 32];
  char error_log[PATH_MAX + 32];
  int port;
  pid_t pid;           /* nginx, 0 when not running */
} nx_fixture;

static inline const char *nx_nginx_binary(void) {
  static const char *const candidates[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx",
                                           "/usr/bin/nginx", NULL};
  const char *env = getenv("BRAID_TEST_NGINX");
  if (env && *env) return access(env, X_OK) == 0 ? env : NULL;
  for (int i = 0; candidates[i]; i++)
    if (access(candidates[i], X_OK) == 0) return candidates[i];
  return NULL;
}

static inline int nx_mkdirs(const char *path) {
  char tmp[PATH_MAX + 64];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

static inline int nx_write_file(const char *path, const char *text, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = -errno;
      close(fd);
      return e;
    }
    off += (size_t)w;
  }
  return close(fd) == 0 ? 0 : -errno;
}

/* A growable string for building pages. */
typedef struct nx_buf {
  char *p;
  size_t len, cap;
} nx_buf;

static inline void nx_printf(nx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void nx_printf(nx_buf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    if (b->p && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) abort();
    b->p = np;
    b->cap = cap;
  }
}

/* nx_site_generate: write the site described above under dir (which must
 * exist) for a server on 127.0.0.1:port. Fills site->missing/broken. */
static inline int nx_site_generate(const char *dir, int port, nx_site *site) {
  char path[PATH_MAX + 64];
  nx_buf b = {0};
  int n = site->pages, rc;
  site->missing = site->broken = 0;
  snprintf(path, sizeof path, "%s/p", dir);
  if ((rc = nx_mkdirs(path)) < 0) return rc;

  nx_printf(&b, "<!DOCTYPE html>\n<html><head><title>Index</title></head>\n"
                "<body><h1>Index</h1><p><a href=\"/p/0.html\">start</a></p></body></html>\n");
  snprintf(path, sizeof path, "%s/index.html", dir);
  if ((rc = nx_write_file(path, b.p, b.len)) < 0) goto out;

  for (int i = 0; i < n; i++) {
    b.len = 0;
    nx_printf(&b,
              "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
              "<title>Page %d</title></head>\n<body>\n<h1>Page %d</h1>\n<ul>\n"
              "<li><a href=\"/p/%d.html\">next</a></li>\n"
              "<li><a href=\"%d.html\">relative</a></li>\n"
              "<li><a href=\"../p/%d.html#section-2\">with a fragment</a></li>\n"
              "<li><A HREF=\"http://127.0.0.1:%d/p/%d.html\">absolute</A></li>\n"
              "<li><a href=\"http://offsite.invalid/p/%d.html\">another host</a></li>\n"
              "<li><a href=\"https://127.0.0.1:%d/p/%d.html\">https</a></li>\n"
              "<li><a href=\"http://localhost:%d/p/%d.html\">same server, other name</a></li>\n"
              "<li><a href=\"mailto:page%d@example.invalid\">mail</a></li>\n"
              "<li><a href=\"javascript:void(0)\">script</a></li>\n"
              "<li><a href=\"#top\">this page</a></li>\n",
              i, i, (i + 1) % n, (2 * i + 1) % n, (3 * i + 2) % n, port, (5 * i + 3) % n, i, port,
              i, port, i, i);
    if (i % 97 == 5) {
      nx_printf(&b, "<li><a href=\"/missing/%d.html\">gone</a></li>\n", i);
      site->missing++;
    }
    if (i % 211 == 7) {
      nx_printf(&b, "<li><a href=\"/broken/%d\">server error</a></li>\n", i);
      site->broken++;
    }
    nx_printf(&b, "</ul>\n");
    if (i % 50 == 0)
      for (int k = 0; k < 200; k++)
        nx_printf(&b, "<p>Paragraph %d of page %d: <b>bold</b>, <i>italic</i> and plain "
                      "text to make the page longer.</p>\n", k, i);
    nx_printf(&b, "<p>Unclosed <b>markup <i>on purpose\n</body></html>\n");
    snprintf(path, sizeof path, "%s/p/%d.html", dir, i);
    if ((rc = nx_write_file(path, b.p, b.len)) < 0) goto out;
  }
  rc = 0;
out:
  free(b.p);
  return rc;
}

/* A port nobody listens on right now (the kernel's pick for port 0). Another
 * process may take it before nginx binds it: nx_start retries then. */
static inline int nx_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd < 0) return -errno;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static inline int nx_try_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0) return -errno;
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

static inline int nx_write_conf(nx_fixture *nx) {
  char text[8192];
  int n = snprintf(text, sizeof text,
                   "daemon off;\n"
                   "master_process off;\n"
                   "worker_processes 1;\n"
                   "pid %s/nginx/nginx.pid;\n"
                   "error_log %s warn;\n"
                   "events { worker_connections 1024; }\n"
                   "http {\n"
                   "  default_type text/html;\n"
                   "  types { text/html html; }\n"
                   "  log_format probe '$host $request_uri $status';\n"
                   "  access_log %s probe;\n"
                   "  client_body_temp_path %s/nginx/body;\n"
                   "  proxy_temp_path %s/nginx/proxy;\n"
                   "  fastcgi_temp_path %s/nginx/fastcgi;\n"
                   "  uwsgi_temp_path %s/nginx/uwsgi;\n"
                   "  scgi_temp_path %s/nginx/scgi;\n"
                   "  keepalive_requests 1000000;\n"
                   "  server {\n"
                   "    listen 127.0.0.1:%d;\n"
                   "    root %s;\n"
                   "    index index.html;\n"
                   "    location /broken/ { return 500; }\n"
                   "    location /loop/ { return 302 /loop/; }\n"
                   "  }\n"
                   "}\n",
                   nx->dir, nx->error_log, nx->access_log, nx->dir, nx->dir, nx->dir, nx->dir,
                   nx->dir, nx->port, nx->site);
  if (n < 0 || (size_t)n >= sizeof text) return -ENAMETOOLONG;
  return nx_write_file(nx->conf, text, (size_t)n);
}

static inline int nx_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* nx_cleanup: remove the fixture's directory (nginx must be stopped). */
static inline void nx_cleanup(nx_fixture *nx) {
  if (nx->dir[0]) nftw(nx->dir, nx_rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* nx_stop: stop nginx (SIGTERM: fast shutdown) and reap it; 0 when it was
 * not running. Safe to call twice. */
static inline int nx_stop(nx_fixture *nx) {
  int status = 0;
  if (nx->pid <= 0) return 0;
  kill(nx->pid, SIGTERM);
  while (waitpid(nx->pid, &status, 0) < 0 && errno == EINTR) {
  }
  nx->pid = 0;
  return 0;
}

/* nx_start: generate site->pages pages and start nginx serving them under
 * <cwd>/<name>-<pid>/. Returns 0 (nx->port is set), NX_SKIP without an nginx
 * binary, or a negative errno. On failure nothing is left running. */
static inline int nx_start(nx_fixture *nx, const char *name, nx_site *site) {
  const char *bin = nx_nginx_binary();
  char cwd[PATH_MAX / 2];
  int rc;
  memset(nx, 0, sizeof *nx);
  if (!bin) return NX_SKIP;
  if (!getcwd(cwd, sizeof cwd)) return -errno;
  snprintf(nx->dir, sizeof nx->dir, "%s/%s-%d", cwd, name, (int)getpid());
  snprintf(nx->site, sizeof nx->site, "%s/site", nx->dir);
  snprintf(nx->conf, sizeof nx->conf, "%s/nginx/nginx.conf", nx->dir);
  snprintf(nx->access_log, sizeof nx->access_log, "%s/nginx/access.log", nx->dir);
  snprintf(nx->error_log, sizeof nx->error_log, "%s/nginx/error.log", nx->dir);
  char sub[PATH_MAX + 32];
  snprintf(sub, sizeof sub, "%s/nginx", nx->dir);
  if ((rc = nx_mkdirs(sub)) < 0 || (rc = nx_mkdirs(nx->site)) < 0) return rc;

  for (int attempt = 0; attempt < 5; attempt++) {
    if ((nx->port = nx_free_port()) < 0) return nx->port;
    /* The site has absolute links with the port in them. */
    if ((rc = nx_site_generate(nx->site, nx->port, site)) < 0) return rc;
    if ((rc = nx_write_conf(nx)) < 0) return rc;
    unlink(nx->access_log);
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() == 1) _exit(127); /* the test is already gone */
      int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
      }
      execl(bin, bin, "-q", "-p", nx->dir, "-c", nx->conf, "-e", nx->error_log, (char *)NULL);
      _exit(127);
    }
    nx->pid = pid;
    /* Ready when it accepts a connection; gone when it exits (the port was
     * taken meanwhile, or the configuration is refused). Bounded: 10 s. */
    struct timespec pause = {0, 2 * 1000 * 1000};
    for (int i = 0; i < 5000; i++) {
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        nx->pid = 0;
        break;
      }
      if (nx_try_connect(nx->port) == 0) return 0;
      nanosleep(&pause, NULL);
    }
    nx_stop(nx);
  }
  return -EADDRINUSE;
}

/* nx_count_requests: read the access log (after nx_stop) and call fn for each
 * request line (host, uri, status). Returns the number of lines, or -errno. */
static inline int nx_each_request(nx_fixture *nx, void (*fn)(const char *host, const char *uri,
                                                      int status, void *ud),
                           void *ud) {
  FILE *f = fopen(nx->access_log, "r");
  char line[4096], host[1024], uri[2048];
  int status, n = 0;
  if (!f) return -errno;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%1023s %2047s %d", host, uri, &status) != 3) continue;
    fn(host, uri, status, ud);
    n++;
  }
  fclose(f);
  return n;
}

#endif
