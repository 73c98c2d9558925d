/* SPDX-License-Identifier: MIT */
/* http_testsrv — a small HTTP/1.1 server on braid that misbehaves on request,
 * for braid-http's tests (tests/test_http*.c) and `braid fetch`'s.
 *
 *   http_testsrv [port]      listens on 127.0.0.1 (port 0 or none: a free
 *                            one), prints "PORT <n>\n" on stdout, serves until
 *                            its standard input reaches end of file (the test
 *                            holds the other end, so it never outlives it).
 *
 * Keep-alive HTTP/1.1; every path takes its parameters from the query:
 *   /ok?size=N&linger=MS  200 with N bytes ("hello\n" without size); with
 *                         linger, close the connection after MS idle ms
 *   /delay?ms=N&size=N    wait N ms, then as /ok
 *   /status?code=N        that status, a short body
 *   /flaky?key=K&fail=N&code=C&retry_after=S
 *                         the first N requests with key K answer C (default
 *                         503; with "Retry-After: S" when given, S sent as
 *                         written after %XX decoding: a number, a date or
 *                         garbage), later ones 200 "ok\n"; the answer's
 *                         X-Attempt says which try
 *   /reset                close the connection at once with a reset (RST)
 *   /truncate?size=N&reset=1
 *                         announce N bytes, send half, close (with reset:
 *                         with a reset, RST, instead of an orderly close)
 *   /slow?chunks=N&ms=M&size=B
 *                         N chunks of B bytes (default 1024), M ms apart
 *   /nolength?size=N      no Content-Length: the body ends with the connection
 *   /redirect?to=URL&code=C&body=N
 *                         C (default 302) to URL (after %XX decoding), with
 *                         a chunked body of N bytes (default: 6, not chunked)
 *   /echo                 the request's headers and body back as the body
 *   /chunked?size=N       N bytes in chunked encoding (no Content-Length)
 *   /lie?claim=N&size=M&late=MS
 *                         Content-Length N, then M bytes (fewer: closed;
 *                         more: with late, those past N MS ms later, once
 *                         the client has taken the response as complete)
 *   /info?n=N             N interim responses (102) before a 200
 *   /garbage              an SSH greeting instead of a response, then close
 *   /bodied?code=C        status C with a 6-byte body, even to HEAD or
 *                         for a 304 (which have none)
 *   /_stats               "connections=C requests=R inflight=I max_inflight=M"
 *   /_reset               zero the counters and the /flaky keys
 * A connection counts once it carries a request other than those two.
 * max_inflight counts requests between their request line and the end of
 * their response, over all connections (/_stats and /_reset excluded). */
#include <braid.h>

#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct flaky {
  struct flaky *next;
  char key[64];
  int seen;
} flaky;

static struct {
  long connections, requests, inflight, max_inflight;
  flaky *keys;
} st;

static long qint(const char *query, const char *name, long dflt) {
  if (!query) return dflt;
  size_t n = strlen(name);
  for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name, n) == 0 && p[n] == '=') return strtol(p + n + 1, NULL, 10);
  }
  return dflt;
}

static void qstr(const char *query, const char *name, char *out, size_t cap) {
  out[0] = 0;
  if (!query) return;
  size_t n = strlen(name);
  for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name, n) == 0 && p[n] == '=') {
      const char *v = p + n + 1;
      size_t i = 0;
      while (v[i] && v[i] != '&' && i + 1 < cap) {
        out[i] = v[i];
        i++;
      }
      out[i] = 0;
      return;
    }
  }
}

/* Decode %XX escapes in place (a Retry-After date has spaces and commas). */
static void pct_decode(char *s) {
  char *o = s;
  for (char *p = s; *p; p++) {
    unsigned v;
    if (*p == '%' && sscanf(p + 1, "%2x", &v) == 1) {
      *o++ = (char)v;
      p += 2;
    } else {
      *o++ = *p;
    }
  }
  *o = 0;
}

static int send_all(int fd, const void *p, size_t n) {
  return br_write(fd, p, n, br_deadline_ms(30000)) < 0 ? -1 : 0;
}

static int respond(int fd, bool head_only, int code, const char *extra, const char *body, size_t len) {
  char head[512];
  int h = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n%s\r\n",
                   code, len, extra ? extra : "");
  if (send_all(fd, head, (size_t)h)) return -1;
  return len && !head_only ? send_all(fd, body, len) : 0;
}

/* Bodies are the alphabet over and over, byte i being 'a' + i % 26. */
static void fill_at(char *b, size_t n, size_t off) {
  for (size_t i = 0; i < n; i++) b[i] = (char)('a' + (off + i) % 26);
}

static char *filler(size_t n) {
  char *b = malloc(n ? n : 1);
  fill_at(b, n, 0);
  return b;
}

static int respond_size(int fd, bool head, long size) {
  if (size < 0) return respond(fd, head, 200, NULL, "hello\n", 6);
  char *b = filler((size_t)size);
  int rc = respond(fd, head, 200, NULL, b, (size_t)size);
  free(b);
  return rc;
}

/* code with size bytes in chunks of 1000 (no Content-Length: nothing tells
 * the client the size before the end). 1: keep the connection, 0: close. */
static int respond_chunked(int fd, int code, const char *extra, long size) {
  char h[700];
  int hl = snprintf(h, sizeof h, "HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n%s\r\n", code,
                    extra);
  int keep = send_all(fd, h, (size_t)hl) ? 0 : 1;
  char *b = filler(1000);
  for (long off = 0; keep && off < size; off += 1000) {
    long n = size - off < 1000 ? size - off : 1000;
    char line[32];
    int l = snprintf(line, sizeof line, "%lx\r\n", n);
    if (send_all(fd, line, (size_t)l) || send_all(fd, b, (size_t)n) || send_all(fd, "\r\n", 2))
      keep = 0;
  }
  if (keep && send_all(fd, "0\r\n\r\n", 5)) keep = 0;
  free(b);
  return keep;
}

/* Serve one request; 1: keep the connection, 0: close it, -1: reset it. */
static int serve(int fd, bool *counted, long *idle_ms, char *req, size_t reqlen, const char *body, size_t blen) {
  char method[16], target[1024];
  if (sscanf(req, "%15s %1023s", method, target) != 2) return 0;
  char *query = strchr(target, '?');
  if (query) *query++ = 0;
  const char *path = target;
  bool head = strcmp(method, "HEAD") == 0; /* headers only */

  if (strcmp(path, "/_stats") == 0) {
    char b[256];
    int n = snprintf(b, sizeof b, "connections=%ld requests=%ld inflight=%ld max_inflight=%ld\n",
                     st.connections, st.requests, st.inflight, st.max_inflight);
    return respond(fd, head, 200, NULL, b, (size_t)n) ? 0 : 1;
  }
  if (strcmp(path, "/_reset") == 0) {
    st.connections = 0;
    st.requests = st.max_inflight = 0;
    while (st.keys) {
      flaky *k = st.keys;
      st.keys = k->next;
      free(k);
    }
    return respond(fd, head, 200, NULL, "reset\n", 6) ? 0 : 1;
  }

  if (!*counted) {
    *counted = true;
    st.connections++;
  }
  st.requests++;
  if (++st.inflight > st.max_inflight) st.max_inflight = st.inflight;
  int keep = 1;
  if (strcmp(path, "/ok") == 0) {
    keep = respond_size(fd, head, qint(query, "size", -1)) ? 0 : 1;
    *idle_ms = qint(query, "linger", *idle_ms);
  } else if (strcmp(path, "/delay") == 0) {
    br_sleep_ms(qint(query, "ms", 100));
    keep = respond_size(fd, head, qint(query, "size", -1)) ? 0 : 1;
  } else if (strcmp(path, "/status") == 0) {
    int code = (int)qint(query, "code", 500);
    char b[64];
    int n = snprintf(b, sizeof b, "status %d\n", code);
    keep = respond(fd, head, code, NULL, b, (size_t)n) ? 0 : 1;
  } else if (strcmp(path, "/flaky") == 0) {
    char key[64];
    qstr(query, "key", key, sizeof key);
    flaky *k = st.keys;
    while (k && strcmp(k->key, key) != 0) k = k->next;
    if (!k) {
      k = calloc(1, sizeof *k);
      snprintf(k->key, sizeof k->key, "%s", key);
      k->next = st.keys;
      st.keys = k;
    }
    int attempt = ++k->seen;
    char extra[256], ra[128];
    qstr(query, "retry_after", ra, sizeof ra);
    pct_decode(ra);
    int n = snprintf(extra, sizeof extra, "X-Attempt: %d\r\n", attempt);
    if (attempt <= qint(query, "fail", 1)) {
      if (ra[0]) snprintf(extra + n, sizeof extra - (size_t)n, "Retry-After: %s\r\n", ra);
      keep = respond(fd, head, (int)qint(query, "code", 503), extra, "fail\n", 5) ? 0 : 1;
    } else {
      keep = respond(fd, head, 200, extra, "ok\n", 3) ? 0 : 1;
    }
  } else if (strcmp(path, "/reset") == 0) {
    keep = -1;
  } else if (strcmp(path, "/truncate") == 0) {
    long size = qint(query, "size", 1000);
    char head[128];
    int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n", size);
    char *b = filler((size_t)size);
    if (!send_all(fd, head, (size_t)h)) send_all(fd, b, (size_t)size / 2);
    free(b);
    keep = qint(query, "reset", 0) ? -1 : 0;
  } else if (strcmp(path, "/slow") == 0) {
    long chunks = qint(query, "chunks", 10), ms = qint(query, "ms", 100);
    long size = qint(query, "size", 1024);
    char head[128];
    int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n",
                     chunks * size);
    char *b = filler((size_t)size);
    keep = send_all(fd, head, (size_t)h) ? 0 : 1;
    for (long i = 0; keep && i < chunks; i++) {
      fill_at(b, (size_t)size, (size_t)(i * size));
      if (br_sleep_ms(ms) || send_all(fd, b, (size_t)size)) keep = 0;
    }
    free(b);
  } else if (strcmp(path, "/headers") == 0) {
    /* lines header lines of size bytes each, then a small body (or the
     * connection closed if the client gives up first) */
    long lines = qint(query, "lines", 10), size = qint(query, "size", 40);
    char *line = malloc((size_t)size + 16);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n";
    keep = send_all(fd, head, strlen(head)) ? 0 : 1;
    for (long i = 0; keep && line && i < lines; i++) {
      int n = snprintf(line, 16, "X-%ld: ", i % 100000);
      memset(line + n, 'h', (size_t)size);
      memcpy(line + n + size, "\r\n", 2);
      if (send_all(fd, line, (size_t)n + (size_t)size + 2)) keep = 0;
    }
    if (keep && send_all(fd, "\r\nok\n", 5)) keep = 0;
    free(line);
  } else if (strcmp(path, "/nolength") == 0) {
    long size = qint(query, "size", 1000);
    const char *head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
    char *b = filler((size_t)size);
    if (!send_all(fd, head, strlen(head))) send_all(fd, b, (size_t)size);
    free(b);
    keep = 0;
  } else if (strcmp(path, "/chunked") == 0) {
    keep = respond_chunked(fd, 200, "", qint(query, "size", 1000));
  } else if (strcmp(path, "/lie") == 0) {
    /* Content-Length: claim, then size bytes (more: junk left on the
     * connection; fewer: then the connection is closed) */
    long claim = qint(query, "claim", 5), size = qint(query, "size", 10);
    long late = qint(query, "late", 0); /* ms before the bytes past claim */
    char h[128];
    int l = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n", claim);
    char *b = filler((size_t)size);
    long first = late && size > claim ? claim : size;
    keep = send_all(fd, h, (size_t)l) || send_all(fd, b, (size_t)first) ? 0 : 1;
    if (keep && first < size &&
        (br_sleep_ms(late) || send_all(fd, b + first, (size_t)(size - first))))
      keep = 0;
    free(b);
    if (size < claim) keep = 0;
  } else if (strcmp(path, "/info") == 0) {
    /* n interim responses (102 Processing) before a 200 */
    long n = qint(query, "n", 10);
    const char *i1 = "HTTP/1.1 102 Processing\r\n\r\n";
    for (long i = 0; keep && i < n; i++)
      if (send_all(fd, i1, strlen(i1))) keep = 0;
    if (keep) keep = respond(fd, head, 200, NULL, "hello\n", 6) ? 0 : 1;
  } else if (strcmp(path, "/garbage") == 0) {
    /* not HTTP at all (another protocol's greeting), then close */
    const char *g = "SSH-2.0-OpenSSH_9.2\r\n";
    send_all(fd, g, strlen(g));
    keep = 0;
  } else if (strcmp(path, "/bodied") == 0) {
    /* code (304, or 200 to HEAD) with a body that must not be there:
     * Content-Length and the bytes, which a client must not take for the
     * next response on the connection */
    int code = (int)qint(query, "code", 304);
    keep = respond(fd, false, code, NULL, "JUNK\r\n", 6) ? 0 : 1;
  } else if (strcmp(path, "/redirect") == 0) {
    char to[512], extra[600];
    qstr(query, "to", to, sizeof to);
    pct_decode(to); /* a Location with its own query ("...%3Fms%3D50") */
    snprintf(extra, sizeof extra, "Location: %s\r\n", to[0] ? to : "/ok");
    int code = (int)qint(query, "code", 302);
    long big = qint(query, "body", 0); /* a chunked body of that many bytes */
    if (big > 0) keep = respond_chunked(fd, code, extra, big);
    else keep = respond(fd, head, code, extra, "moved\n", 6) ? 0 : 1;
  } else if (strcmp(path, "/echo") == 0) {
    size_t n = reqlen + blen;
    char *b = malloc(n + 1);
    memcpy(b, req, reqlen);
    memcpy(b + reqlen, body, blen);
    keep = respond(fd, head, 200, NULL, b, n) ? 0 : 1;
    free(b);
  } else {
    keep = respond(fd, head, 404, NULL, "not found\n", 10) ? 0 : 1;
  }
  st.inflight--;
  return keep;
}

static void *conn_main(void *arg) {
  int fd = (int)(intptr_t)arg;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  bool counted = false;
  long idle_ms = 60000; /* how long an idle connection stays open */
  for (;;) {
    char *end = NULL;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      if (len == cap) goto out;
      ssize_t n = br_read(fd, buf + len, cap - len, br_deadline_ms(idle_ms));
      if (n <= 0) goto out;
      len += (size_t)n;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    char save = buf[hlen - 1];
    buf[hlen - 1] = 0;
    /* A request body (Content-Length only). */
    size_t blen = 0;
    for (char *p = strchr(buf, '\n'); p; p = strchr(p + 1, '\n'))
      if (strncasecmp(p + 1, "Content-Length:", 15) == 0) blen = strtoul(p + 16, NULL, 10);
    buf[hlen - 1] = save;
    if (hlen + blen > cap) goto out;
    while (len < hlen + blen) {
      ssize_t n = br_read(fd, buf + len, cap - len, br_deadline_ms(60000));
      if (n <= 0) goto out;
      len += (size_t)n;
    }
    char *req = malloc(hlen + 1);
    memcpy(req, buf, hlen);
    req[hlen] = 0;
    int keep = serve(fd, &counted, &idle_ms, req, hlen, buf + hlen, blen);
    free(req);
    memmove(buf, buf + hlen + blen, len - hlen - blen);
    len -= hlen + blen;
    if (keep < 0) {
      struct linger l = {.l_onoff = 1, .l_linger = 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      break;
    }
    if (keep == 0) break;
  }
out:
  free(buf);
  br_close(fd);
  return NULL;
}

static void *stdin_watch(void *arg) {
  (void)arg;
  br_set_nonblocking(0);
  char b[64];
  while (br_read(0, b, sizeof b, BR_NEVER) > 0) {
  }
  /* The test is gone or done. _exit: connections may still be open and
   * their tasks alive; this process has nothing to clean up or report. */
  _exit(0);
}

static void *server_main(void *arg) {
  int port = (int)(intptr_t)arg;
  int lfd = br_tcp_listen("127.0.0.1", port, 1024, 0);
  if (lfd < 0) return br_fail(lfd, "listen");
  br_addr a;
  br_sock_local(lfd, &a);
  printf("PORT %d\n", br_addr_port(&a));
  fflush(stdout);
  br_spawn_opts d = {.name = "stdin", .flags = BR_SPAWN_DETACHED};
  br_spawn(NULL, stdin_watch, NULL, &d);
  for (;;) {
    int fd = br_accept_flags(lfd, NULL, BR_SOCK_NODELAY, BR_NEVER);
    if (fd < 0) continue;
    br_spawn_opts o = {.name = "conn", .flags = BR_SPAWN_DETACHED};
    if (br_spawn(NULL, conn_main, (void *)(intptr_t)fd, &o)) br_close(fd);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int port = argc > 1 ? atoi(argv[1]) : 0;
  int rc = br_run(NULL, server_main, (void *)(intptr_t)port);
  fprintf(stderr, "http_testsrv: %s\n", br_strerror(rc));
  return 1;
}
