/* SPDX-License-Identifier: MIT */
// echo_server — a TCP echo server: one task per connection, each closed
// after 10 s of silence. Without arguments it serves on a free port, talks
// to itself through 50 concurrent clients, prints what it saw and exits.
//
//   echo_server                 self-test
//   echo_server --port 7000     serve until Ctrl-C (try: nc localhost 7000)
//
// expect: ^listening on 127\.0\.0\.1:[0-9]+$
// expect: ^50 clients: 500 messages echoed intact$
// expect: ^server closed 50 connections$
#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int closed;
static int expected;           /* self-test: connections it waits to see closed */
static br_event *all_closed;   /* set when `expected` of them are */

static void *echo(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  ssize_t n;
  /* Until the peer closes (0), resets, or stays silent for 10 s. */
  while ((n = br_read(fd, buf, sizeof buf, br_deadline_ms(10000))) > 0)
    if (br_write(fd, buf, (size_t)n, br_deadline_ms(10000)) < 0) break;
  br_close(fd);
  if (++closed == expected && all_closed) br_event_set(all_closed);
  return NULL;
}

static void *server(void *arg) {
  int lfd = (int)(intptr_t)arg;
  br_group *conns;
  int rc = br_group_new(&conns);
  if (rc < 0) return br_fail(rc, "no group for the connections");
  for (;;) {
    int fd = br_accept(lfd, NULL, BR_NEVER);
    if (fd < 0) break; /* cancelled: stop accepting */
    br_group_spawn(conns, echo, (void *)(intptr_t)fd, &(br_spawn_opts){.name = "echo"});
  }
  br_group_free(conns); /* cancels and waits for the connections */
  return NULL;
}

static void *client(void *arg) {
  int port = (int)(intptr_t)arg;
  int fd = br_tcp_connect("127.0.0.1", port, 0, br_deadline_ms(5000));
  if (fd < 0) return br_fail(fd, "connect");
  for (int i = 0; i < 10; i++) {
    char msg[64], back[64];
    int len = snprintf(msg, sizeof msg, "message %d from %d", i, fd);
    if (br_write(fd, msg, (size_t)len, br_deadline_ms(5000)) != len ||
        br_read_full(fd, back, (size_t)len, br_deadline_ms(5000)) != len || memcmp(msg, back, (size_t)len)) {
      br_close(fd);
      return br_fail(BR_EIO, "echo mismatch");
    }
  }
  br_close(fd);
  return NULL;
}

static void *self_test(void *arg) {
  (void)arg;
  int lfd = br_tcp_listen("127.0.0.1", 0, 128, 0);
  if (lfd < 0) return br_fail(lfd, "listen");
  br_addr a;
  br_sock_local(lfd, &a);
  char name[64];
  br_addr_format(&a, name, sizeof name);
  printf("listening on %s\n", name);
  expected = 50;
  if (br_event_new(&all_closed) < 0) return br_fail(BR_ENOMEM, "no event");
  br_task *srv;
  br_spawn(&srv, server, (void *)(intptr_t)lfd, &(br_spawn_opts){.name = "server"});
  br_group *g;
  if (br_group_new(&g) < 0) return br_fail(BR_ENOMEM, "no group");
  for (int i = 0; i < 50; i++) br_group_spawn(g, client, (void *)(intptr_t)br_addr_port(&a), NULL);
  int rc = br_group_wait(g);
  printf(rc ? "clients failed: %s\n" : "50 clients: 500 messages echoed intact\n", br_group_message(g));
  br_group_free(g);
  /* The server sees every client leave. */
  int wrc = br_event_wait_until(all_closed, br_deadline_ms(10000));
  br_event_free(all_closed);
  br_task_close(srv);
  br_close(lfd);
  printf("server closed %d connections\n", closed);
  if (wrc) return br_fail(wrc, "the server saw only %d clients leave", closed);
  return rc ? br_fail(rc, "self-test") : NULL;
}

static void *serve_forever(void *arg) {
  int port = (int)(intptr_t)arg;
  int lfd = br_tcp_listen(NULL, port, 0, 0); /* IPv6 and IPv4 */
  if (lfd < 0) return br_fail(lfd, "listen on port %d", port);
  fprintf(stderr, "echo_server: listening on port %d\n", port);
  server((void *)(intptr_t)lfd);
  br_close(lfd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--port")) {
    int rc = br_run(NULL, serve_forever, (void *)(intptr_t)atoi(argv[2]));
    return rc == 0 || rc == BR_ECANCELED ? 0 : 1;
  }
  return br_run(NULL, self_test, NULL) == 0 ? 0 : 1;
}
