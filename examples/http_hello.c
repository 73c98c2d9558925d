/* SPDX-License-Identifier: MIT */
// http_hello — a minimal HTTP/1.1 keep-alive "hello" server: one task per
// connection, pipelined requests answered in batches of one write each, a
// keep-alive idle deadline, a deadline for each whole request (a client
// that trickles its request byte by byte cannot hold the connection:
// slowloris), bad requests answered with 400 and closed. The parser is
// examples/http_parse.h (fuzzed by tests/fuzz_http_parse.c).
//
//   http_hello                     self-test: serve, query it, print, exit
//   http_hello --port 8080         serve until Ctrl-C (one loop)
//   http_hello --port 8080 --loops 2   one loop per thread, SO_REUSEPORT
//
// expect: ^GET / -> HTTP/1.1 200 OK, body 'Hello, World!'$
// expect: ^pipelined 3 requests -> 3 responses$
// expect: ^pipelined 400 requests -> 400 responses$
// expect: ^bad request -> HTTP/1.1 400 Bad Request, closed$
// expect: ^slow request -> HTTP/1.1 408 Request Timeout, closed$
// expect: ^50 slow requests -> 50 answered 408 and closed; a client meanwhile: served$
// expect: ^served 200 requests on 20 keep-alive connections$
#include <braid.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

#define IDLE_MS 10000 /* keep-alive: close connections idle this long */

/* A request must arrive whole within this long of its first byte, however
 * often single bytes trickle in (each read has the idle deadline, which a
 * slow client would renew forever). The self-test lowers it. */
static int request_ms = 10000;

static const char HELLO[] = "HTTP/1.1 200 OK\r\nServer: braid\r\nContent-Type: text/plain\r\n"
                            "Content-Length: 13\r\n\r\nHello, World!";
static const char HELLO_CLOSE[] = "HTTP/1.1 200 OK\r\nServer: braid\r\nContent-Type: text/plain\r\n"
                                  "Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";

static const char *error_response(int64_t rc) {
  switch (rc) {
  case HTTP_TOO_LARGE:
    return "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  case HTTP_UNSUPPORTED:
    return "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  default:
    return "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  }
}

static const char TIMEOUT[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void *connection(void *arg) {
  int fd = (int)(intptr_t)arg;
  char in[8192], out[8192];
  size_t have = 0;
  bool drained = false;
  int64_t request_deadline = BR_NEVER; /* for the partial request in `in` */
  for (;;) {
    /* Answer the complete requests in the buffer (pipelining), as many as
     * fit in one write. */
    size_t off = 0, outn = 0;
    bool close_after = false, out_full = false;
    while (!close_after) {
      if (outn + sizeof HELLO_CLOSE >= sizeof out) {
        out_full = true; /* more may be waiting: answer them next round */
        break;
      }
      http_request r;
      int64_t h = http_parse(in + off, have - off, &r);
      if (h == HTTP_INCOMPLETE) break;
      const char *resp;
      size_t len;
      if (h < 0 || r.content_length > (int64_t)sizeof in) {
        resp = h < 0 ? error_response(h) : error_response(HTTP_TOO_LARGE);
        close_after = true;
      } else {
        size_t body = r.content_length > 0 ? (size_t)r.content_length : 0;
        if (have - off < (size_t)h + body) break; /* body not all here yet */
        off += (size_t)h + body;
        resp = r.keep_alive ? HELLO : HELLO_CLOSE;
        close_after = !r.keep_alive;
      }
      len = strlen(resp);
      memcpy(out + outn, resp, len);
      outn += len;
    }
    if (outn && br_write(fd, out, outn, br_deadline_ms(IDLE_MS)) < 0) break;
    if (close_after) break;
    memmove(in, in + off, have - off);
    have -= off;
    if (off) /* a new request starts with what is left, if anything */
      request_deadline = have ? br_deadline_ms(request_ms) : BR_NEVER;
    if (out_full) continue; /* the client may wait for these before it sends more */
    if (have == sizeof in) { /* a head that does not fit */
      br_write(fd, error_response(HTTP_TOO_LARGE), strlen(error_response(HTTP_TOO_LARGE)), br_deadline_ms(1000));
      break;
    }
    /* Wait for more: idle connections for IDLE_MS, a started request only
     * until its own deadline. After a short read the socket was empty:
     * wait before reading again. */
    int64_t deadline = br_deadline_ms(IDLE_MS);
    if (have && request_deadline < deadline) deadline = request_deadline;
    size_t room = sizeof in - have;
    ssize_t n = drained ? br_read_ready(fd, in + have, room, deadline)
                        : br_read(fd, in + have, room, deadline);
    if (n == BR_ETIMEDOUT && have) { /* too slow: say so, then close */
      br_write(fd, TIMEOUT, sizeof TIMEOUT - 1, br_deadline_ms(1000));
      break;
    }
    if (n <= 0) break; /* peer closed, reset, idle too long, or cancelled */
    drained = (size_t)n < room;
    if (!have) request_deadline = br_deadline_ms(request_ms);
    have += (size_t)n;
  }
  br_close(fd);
  return NULL;
}

static int listen_port;

/* Accept until cancelled; the connections live in a group, so cancelling
 * the server cancels them and waits for them to close. */
static void *serve(void *arg) {
  int lfd = (int)(intptr_t)arg;
  br_group *conns;
  int rc = br_group_new(&conns);
  if (rc < 0) return br_fail(rc, "no group for the connections");
  for (;;) {
    int fd = br_accept_flags(lfd, NULL, BR_SOCK_NODELAY, BR_NEVER);
    if (fd < 0) break; /* cancelled */
    if (br_group_spawn(conns, connection, (void *)(intptr_t)fd, &(br_spawn_opts){.name = "http-conn"}) < 0)
      br_close(fd);
  }
  br_group_free(conns);
  return NULL;
}

/* One loop of the multi-loop server: its own SO_REUSEPORT listener. */
static void *loop_main(void *arg) {
  (void)arg;
  int lfd = br_tcp_listen("127.0.0.1", listen_port, 1024, BR_SOCK_REUSEPORT);
  if (lfd < 0) return br_fail(lfd, "listen on port %d", listen_port);
  serve((void *)(intptr_t)lfd);
  br_close(lfd);
  return NULL;
}

/* --- self-test ---------------------------------------------------------------- */

static int port_of(int fd) {
  br_addr a;
  br_sock_local(fd, &a);
  return br_addr_port(&a);
}

/* Read until `count` hello responses have arrived; returns the bytes read
 * (the responses are NUL-terminated in buf) or -1. */
static ssize_t read_responses(int fd, char *buf, size_t cap, int count) {
  size_t have = 0;
  buf[0] = '\0';
  int seen = 0;
  const char *scan = buf;
  for (;;) {
    for (const char *p; (p = strstr(scan, "Hello, World!")) != NULL; scan = p + 1) seen++;
    if (seen >= count) return (ssize_t)have;
    /* rescan the tail: a body may have been cut in two */
    if (buf + have - scan > 13) scan = buf + have - 13;
    ssize_t n = br_read(fd, buf + have, cap - have - 1, br_deadline_ms(5000));
    if (n <= 0) return -1;
    have += (size_t)n;
    buf[have] = '\0';
  }
}

/* Count the responses to n pipelined requests sent in one write. */
static int pipelined(int port, int n) {
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  if (fd < 0) return -1;
  static const char one[] = "GET /p HTTP/1.1\r\n\r\n";
  size_t len = sizeof one - 1, cap = 200 * (size_t)n + 1;
  char *req = malloc(len * (size_t)n), *buf = malloc(cap);
  int got = -1;
  if (req && buf) {
    for (int i = 0; i < n; i++) memcpy(req + len * (size_t)i, one, len);
    if (br_write(fd, req, len * (size_t)n, br_deadline_ms(5000)) >= 0) {
      ssize_t r = read_responses(fd, buf, cap, n);
      got = 0;
      for (const char *p = buf; r > 0 && (p = strstr(p, "HTTP/1.1 200 OK")) != NULL; p++) got++;
    }
  }
  free(req);
  free(buf);
  br_close(fd);
  return got;
}

/* A client that sends its request one byte every 50 ms and never finishes
 * it: the server must answer 408 and close once the request deadline
 * passes, not keep the connection while every byte renews the idle
 * deadline. Returns what it saw in *seen ("no answer" if nothing) and
 * whether the server closed the connection. */
typedef struct slow_client {
  int port;
  char seen[128];
  bool closed;
} slow_client;

static void *slow_request(void *arg) {
  slow_client *c = arg;
  strcpy(c->seen, "no answer");
  int fd = br_tcp_connect("127.0.0.1", c->port, BR_SOCK_NODELAY, br_deadline_ms(5000));
  if (fd < 0) return NULL;
  static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  char buf[256] = {0};
  size_t have = 0;
  for (size_t i = 0; i < sizeof req - 1 && !c->closed; i++) {
    if (br_write(fd, req + i, 1, br_deadline_ms(1000)) < 0) break; /* server gone */
    for (;;) {
      ssize_t n = br_read(fd, buf + have, sizeof buf - 1 - have, br_deadline_ms(50));
      if (n == BR_ETIMEDOUT) break; /* nothing yet: send the next byte */
      if (n <= 0) {
        c->closed = true;
        break;
      }
      have += (size_t)n;
    }
  }
  buf[have] = '\0';
  if (have) snprintf(c->seen, sizeof c->seen, "%.*s", (int)strcspn(buf, "\r"), buf);
  br_close(fd);
  return NULL;
}

static void *client(void *arg) {
  int port = (int)(intptr_t)arg;
  int fd = br_tcp_connect("127.0.0.1", port, BR_SOCK_NODELAY, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "connect");
  for (int i = 0; i < 10; i++) {
    const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[512] = {0};
    if (br_write(fd, req, sizeof req - 1, br_deadline_ms(5000)) < 0 ||
        read_responses(fd, buf, sizeof buf, 1) < 0) {
      br_close(fd);
      return br_fail(BR_EIO, "request %d", i);
    }
  }
  br_close(fd);
  return NULL;
}

static void *self_test(void *arg) {
  (void)arg;
  int lfd = br_tcp_listen("127.0.0.1", 0, 128, 0);
  if (lfd < 0) return br_fail(lfd, "listen");
  int port = port_of(lfd);
  br_task *server;
  br_spawn(&server, serve, (void *)(intptr_t)lfd, &(br_spawn_opts){.name = "server"});

  char buf[1024] = {0};
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  const char get[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  br_write(fd, get, sizeof get - 1, BR_NEVER);
  ssize_t n = read_responses(fd, buf, sizeof buf, 1);
  if (n > 0) printf("GET / -> %.*s, body '%s'\n", (int)strcspn(buf, "\r"), buf, strstr(buf, "\r\n\r\n") + 4);

  /* Three requests in one write: three responses, in order. */
  const char three[] = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
  br_write(fd, three, sizeof three - 1, BR_NEVER);
  n = read_responses(fd, buf, sizeof buf, 3);
  int got = 0;
  for (const char *p = buf; n > 0 && (p = strstr(p, "HTTP/1.1 200 OK")) != NULL; p++) got++;
  printf("pipelined 3 requests -> %d responses\n", got);
  br_close(fd);
  /* More than one output buffer's worth (~88 responses): every one. */
  printf("pipelined 400 requests -> %d responses\n", pipelined(port, 400));

  fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  const char bad[] = "GET / HTTP/1.1\r\nBad Header\r\n\r\n";
  br_write(fd, bad, sizeof bad - 1, BR_NEVER);
  memset(buf, 0, sizeof buf);
  n = br_read_full(fd, buf, sizeof buf - 1, br_deadline_ms(5000));
  printf("bad request -> %.*s, %s\n", (int)strcspn(buf, "\r"), buf,
         n > 0 && br_read(fd, buf, 1, br_deadline_ms(5000)) == 0 ? "closed" : "open?");
  br_close(fd);

  /* Slowloris: 50 clients trickle their requests at once. Each must get
   * 408 and be closed once the 500 ms request deadline passes, and a real
   * client must be served meanwhile. */
  request_ms = 500; /* (the server's tasks read it at each wait) */
  enum { SLOW = 50 };
  slow_client slow[SLOW] = {{0}};
  br_group *sg;
  if (br_group_new(&sg) < 0) return br_fail(BR_ENOMEM, "no group");
  for (int i = 0; i < SLOW; i++) {
    slow[i].port = port;
    br_group_spawn(sg, slow_request, &slow[i], NULL);
  }
  int served = client((void *)(intptr_t)port) == NULL;
  br_group_wait(sg);
  br_group_free(sg);
  int cut = 0;
  for (int i = 0; i < SLOW; i++) cut += slow[i].closed && !strcmp(slow[i].seen, "HTTP/1.1 408 Request Timeout");
  printf("slow request -> %s, %s\n", slow[0].seen, slow[0].closed ? "closed" : "still open");
  printf("%d slow requests -> %d answered 408 and closed; a client meanwhile: %s\n", SLOW, cut,
         served ? "served" : "not served");
  request_ms = 10000;

  br_group *g;
  if (br_group_new(&g) < 0) return br_fail(BR_ENOMEM, "no group");
  for (int i = 0; i < 20; i++) br_group_spawn(g, client, (void *)(intptr_t)port, NULL);
  int rc = br_group_wait(g);
  if (rc == 0) printf("served 200 requests on 20 keep-alive connections\n");
  else fprintf(stderr, "clients failed: %s\n", br_group_message(g));
  br_group_free(g);
  br_task_close(server);
  br_close(lfd);
  return rc ? br_fail(rc, "self-test") : NULL;
}

int main(int argc, char **argv) {
  int loops = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port")) listen_port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--loops")) loops = atoi(argv[i + 1]);
  }
  if (!listen_port) return br_run(NULL, self_test, NULL) == 0 ? 0 : 1;
  fprintf(stderr, "http_hello: serving on 127.0.0.1:%d with %d loop(s)\n", listen_port, loops);
  int rc = br_run_loops(loops, loop_main, NULL, NULL);
  return rc == 0 || rc == BR_ECANCELED ? 0 : 1;
}
