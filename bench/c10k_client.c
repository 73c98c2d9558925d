/* SPDX-License-Identifier: MIT */
/* c10k_client — the load of bench/io_run.py's C10K run, written with braid:
 * N connections (one compact task each) to an echo server, all held open,
 * each sending a 32-byte message once per second for S seconds (spread
 * evenly over the second) and timing the echo.
 *   bench_c10k_client PORT N S
 * Prints "CONNECTED" when every connection is up (io_run.py samples the
 * server's memory then), then one JSON line with the latency percentiles. */
#include <braid.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int port, nconn, secs;
static int64_t *lat; /* nconn * secs, ns; -1 for a failure */
static int connected, errors;
static br_event *all_up;
static int64_t t_start;

static void *conn_task(void *arg) {
  int i = (int)(intptr_t)arg;
  int fd = -1;
  for (int tries = 0; tries < 5 && fd < 0; tries++) {
    fd = br_tcp_connect("127.0.0.1", port, BR_SOCK_NODELAY, br_deadline_ms(10000));
    if (fd < 0) br_sleep_ms(50 * (tries + 1));
  }
  if (fd < 0) {
    errors++;
    for (int s = 0; s < secs; s++) lat[(size_t)i * (size_t)secs + (size_t)s] = -1;
    if (++connected == nconn) br_event_set(all_up);
    return NULL;
  }
  if (++connected == nconn) br_event_set(all_up);
  br_event_wait(all_up);
  char msg[32], back[32];
  memset(msg, 'a' + i % 26, sizeof msg);
  int64_t offset = (int64_t)i * 1000000000LL / nconn;
  for (int s = 0; s < secs; s++) {
    br_sleep_until(t_start + (int64_t)s * 1000000000LL + offset);
    int64_t t0 = br_now();
    ssize_t w = br_write(fd, msg, sizeof msg, br_deadline_ms(10000));
    ssize_t r = w < 0 ? w : br_read_full(fd, back, sizeof back, br_deadline_ms(10000));
    lat[(size_t)i * (size_t)secs + (size_t)s] = r == (ssize_t)sizeof back ? br_now() - t0 : -1;
    if (r != (ssize_t)sizeof back) errors++;
  }
  br_close(fd);
  return NULL;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void *main_task(void *arg) {
  (void)arg;
  int rc = br_event_new(&all_up);
  if (rc < 0) return br_fail(rc, "event");
  br_task **t = calloc((size_t)nconn, sizeof *t);
  for (int i = 0; i < nconn; i++) {
    br_spawn(&t[i], conn_task, (void *)(intptr_t)i, &(br_spawn_opts){.flags = BR_SPAWN_COMPACT});
    if (i % 500 == 499) br_sleep_ms(5); /* don't overflow the listen backlog */
  }
  br_event_wait(all_up);
  t_start = br_now() + 200000000;
  printf("CONNECTED\n");
  fflush(stdout);
  for (int i = 0; i < nconn; i++) br_join(t[i], NULL);
  free(t);
  br_event_free(all_up);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s PORT N SECONDS\n", argv[0]);
    return 2;
  }
  port = atoi(argv[1]);
  nconn = atoi(argv[2]);
  secs = atoi(argv[3]);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  lat = calloc((size_t)nconn * (size_t)secs, sizeof *lat);
  int rc = br_run(NULL, main_task, NULL);
  size_t n = 0, total = (size_t)nconn * (size_t)secs;
  for (size_t i = 0; i < total; i++)
    if (lat[i] >= 0) lat[n++] = lat[i];
  qsort(lat, n, sizeof *lat, cmp64);
#define PCT(p) (n ? lat[(size_t)((double)(n - 1) * (p))] / 1000.0 : -1.0)
  printf("{\"connections\": %d, \"messages\": %zu, \"errors\": %d, \"p50_us\": %.1f, "
         "\"p99_us\": %.1f, \"max_us\": %.1f}\n",
         nconn, n, errors, PCT(0.5), PCT(0.99), PCT(1.0));
  free(lat);
  return rc == 0 ? 0 : 1;
}
