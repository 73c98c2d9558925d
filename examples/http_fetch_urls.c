/* SPDX-License-Identifier: MIT */
// http_fetch_urls — the articles' aiohttp fetch_urls in C with braid-http:
// every URL is fetched at once through one session, which keeps connections
// alive and lets at most 6 requests per host be in flight.
//
//   async def fetch_urls(urls):
//       async with aiohttp.ClientSession() as session:
//           tasks = [session.get(url) for url in urls]
//           return await asyncio.gather(*tasks)
//
// Give it URLs as arguments. Without any, it serves three slow pages on
// 127.0.0.1 itself (each answers after 500 ms, from a task on the same loop)
// and fetches those: the three take 0.5 s together, not 1.5 s.
//
// link: braid_http
// expect: ^http://127\.0\.0\.1:[0-9]+/page/0 -> 200, 20 bytes: this is page 0 of 3$
// expect: ^http://127\.0\.0\.1:[0-9]+/page/1 -> 200, 20 bytes: this is page 1 of 3$
// expect: ^http://127\.0\.0\.1:[0-9]+/page/2 -> 200, 20 bytes: this is page 2 of 3$
// expect: ^3 URLs in 0\.[5-9][0-9] s$
// expect-time: 0.4..3
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>
#include <braid/http.h>

// fetch_urls: GET all n urls concurrently; out[i] gets urls[i]'s response.
static int fetch_urls(br_http_response *out, const char *const *urls, size_t n) {
  br_http_session *session; // async with aiohttp.ClientSession() as session:
  int rc = br_http_session_new(&session, NULL);
  if (rc != 0) return rc;
  // tasks = [session.get(url) for url in urls]; await asyncio.gather(*tasks)
  rc = br_http_get_all(session, out, urls, n, NULL, br_deadline_ms(30000));
  br_http_session_free(session); // closes the kept-alive connections
  return rc;
}

// --- the demo server: one task per connection, a 500 ms wait per page ---
static void *serve_page(void *arg) {
  int fd = (int)(intptr_t)arg;
  char req[2048];
  ssize_t n = br_read(fd, req, sizeof req - 1, br_deadline_ms(5000));
  if (n > 0) {
    req[n] = 0;
    int page = -1;
    sscanf(req, "GET /page/%d", &page);
    br_sleep_ms(500); // a slow server: only this task waits
    char body[64], resp[256];
    int blen = snprintf(body, sizeof body, "this is page %d of 3\n", page);
    int rlen = snprintf(resp, sizeof resp,
                        "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                        blen, body);
    br_write(fd, resp, (size_t)rlen, br_deadline_ms(5000));
  }
  br_close(fd);
  return NULL;
}

static void *serve(void *arg) {
  int lfd = (int)(intptr_t)arg;
  br_spawn_opts detached = {.flags = BR_SPAWN_DETACHED};
  for (;;) {
    int fd = br_accept(lfd, NULL, BR_NEVER);
    if (fd < 0) return NULL; // cancelled: the demo is over
    if (br_spawn(NULL, serve_page, (void *)(intptr_t)fd, &detached) != 0) br_close(fd);
  }
}

static void *amain(void *arg) {
  char **argv = arg;
  size_t n = 0;
  while (argv[n]) n++;
  const char **urls = (const char **)argv;
  char demo[3][64];
  const char *demo_urls[3];
  br_task *server = NULL;
  int lfd = -1;
  if (n == 0) { // no URLs given: serve three pages ourselves
    lfd = br_tcp_listen("127.0.0.1", 0, 64, 0);
    if (lfd < 0) return br_fail(lfd, "listen: %s", br_strerror(lfd));
    br_addr a;
    br_sock_local(lfd, &a);
    for (int i = 0; i < 3; i++) {
      snprintf(demo[i], sizeof demo[i], "http://127.0.0.1:%d/page/%d", br_addr_port(&a), i);
      demo_urls[i] = demo[i];
    }
    urls = demo_urls;
    n = 3;
    br_spawn(&server, serve, (void *)(intptr_t)lfd, NULL);
  }

  br_http_response *res = calloc(n, sizeof *res);
  int64_t t0 = br_now();
  int rc = fetch_urls(res, urls, n);
  double secs = (double)(br_now() - t0) / 1e9;
  for (size_t i = 0; i < n; i++) {
    if (res[i].err == 0) // the body is NUL-terminated; print its first line
      printf("%s -> %d, %zu bytes: %.*s\n", urls[i], res[i].status, res[i].body_len,
             (int)strcspn(res[i].body, "\r\n"), res[i].body);
    else
      printf("%s -> %s: %s\n", urls[i], br_errname(res[i].err), res[i].error);
  }
  printf("%zu URLs in %.2f s\n", n, secs);
  br_http_responses_free(res, n);
  free(res);

  if (server) br_task_close(server); // cancels its accept
  if (lfd >= 0) br_close(lfd);
  return rc ? br_fail(rc, "fetch_urls: %s", br_strerror(rc)) : NULL;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] != '-') continue;
    bool help = !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help");
    if (!help) fprintf(stderr, "http_fetch_urls: unknown option '%s'\n", argv[i]);
    fprintf(help ? stdout : stderr, "usage: http_fetch_urls [URL...]  (none: a self-test on 127.0.0.1)\n");
    return help ? 0 : 2;
  }
  int rc = br_run(NULL, amain, argv + 1);
  return rc == 0 ? 0 : 1;
}
