/* SPDX-License-Identifier: MIT */
/* http_libuv — the libuv peer of examples/http_hello.c for bench/io_run.py:
 * the same behaviour (HTTP/1.1 keep-alive, pipelined requests answered in
 * one write, the same 13-byte body), written the way libuv is meant to be
 * used: one loop, uv_read_start callbacks, uv_try_write first.
 *   bench_http_libuv PORT */
#include <uv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char HELLO[] = "HTTP/1.1 200 OK\r\nServer: libuv\r\nContent-Type: text/plain\r\n"
                            "Content-Length: 13\r\n\r\nHello, World!";

typedef struct conn {
  uv_tcp_t tcp;
  char in[8192];
  size_t have;
} conn;

typedef struct wreq {
  uv_write_t req;
  char *buf;
} wreq;

static void on_close(uv_handle_t *h) { free(h->data); }

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)sz;
  conn *c = h->data;
  *b = uv_buf_init(c->in + c->have, (unsigned)(sizeof c->in - c->have));
}

static void write_done(uv_write_t *r, int status) {
  (void)status;
  wreq *w = (wreq *)r;
  free(w->buf);
  free(w);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn *c = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  c->have += (size_t)n;
  /* Count complete request heads (GET, no body) and answer them together. */
  size_t off = 0, count = 0;
  char *end;
  while ((end = memmem(c->in + off, c->have - off, "\r\n\r\n", 4)) != NULL) {
    off = (size_t)(end - c->in) + 4;
    count++;
  }
  memmove(c->in, c->in + off, c->have - off);
  c->have -= off;
  if (c->have == sizeof c->in) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (!count) return;
  size_t len = (sizeof HELLO - 1) * count;
  char *out = malloc(len);
  for (size_t i = 0; i < count; i++) memcpy(out + i * (sizeof HELLO - 1), HELLO, sizeof HELLO - 1);
  uv_buf_t ob = uv_buf_init(out, (unsigned)len);
  int w = uv_try_write(s, &ob, 1);
  if (w == (int)len) {
    free(out);
    return;
  }
  if (w < 0) w = 0;
  wreq *r = malloc(sizeof *r);
  r->buf = out;
  ob = uv_buf_init(out + w, (unsigned)(len - (size_t)w));
  uv_write(&r->req, s, &ob, 1, write_done);
}

static void on_conn(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn *c = calloc(1, sizeof *c);
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  } else {
    uv_close((uv_handle_t *)&c->tcp, on_close);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) ||
      uv_listen((uv_stream_t *)&server, 1024, on_conn)) {
    fprintf(stderr, "cannot listen\n");
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
