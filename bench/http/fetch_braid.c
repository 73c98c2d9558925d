/* SPDX-License-Identifier: MIT */
/* fetch_braid: braid-http in the fetch benchmark (bench/http_run.py).
 *
 * n GETs of one URL with at most c in flight: c tasks on one loop share one
 * braid-http session (its limits raised to c in total and per host, retries
 * off) and take requests from a shared counter until n have been made, like
 * the peers' c goroutines / coroutines / threads.
 *
 *   fetch_braid URL [-n 1000] [-c 100]
 *
 * Prints one JSON line: elapsed_s (first request to last body), n, ok, bytes,
 * loop_cpu_s (CPU time of the loop thread), rss_kib (VmHWM). Built by
 * bench/http_run.py against the build tree's libbraid and libbraid-http.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <braid.h>
#include <braid/http.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bench {
  const char *url;
  long n, c, next, ok, failed;
  size_t bytes;
  int64_t *lat; /* each request's latency (ns), in completion order */
  br_http_session *http;
} bench;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static long vmhwm_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg) {
  bench *b = arg;
  br_http_request_opts ro = {.retries = BR_HTTP_OFF};
  /* One loop, one thread: the counter needs no atomics. */
  while (b->next < b->n) {
    b->next++;
    br_http_response r;
    int64_t t0 = br_now();
    int rc = br_http_get(b->http, &r, b->url, &ro, br_deadline_ms(30000));
    b->lat[b->ok + b->failed] = br_now() - t0;
    if (rc == 0 && r.status == 200) {
      b->ok++;
      b->bytes += r.body_len;
    } else {
      b->failed++;
      fprintf(stderr, "fetch_braid: %s (HTTP %d)\n", rc ? r.error : "status", r.status);
    }
    br_http_response_free(&r);
  }
  return NULL;
}

static void *bench_main(void *arg) {
  bench *b = arg;
  br_http_opts ho = {.max_total = (int)b->c, .max_per_host = (int)b->c, .retries = BR_HTTP_OFF};
  int rc = br_http_session_new(&b->http, &ho);
  if (rc < 0) return br_fail(rc, "session");
  br_group *g;
  if ((rc = br_group_new(&g)) < 0) return br_fail(rc, "group");
  double cpu0 = thread_cpu_s();
  int64_t t0 = br_now();
  for (long i = 0; i < b->c && rc == 0; i++) rc = br_group_spawn(g, worker, b, NULL);
  int wrc = br_group_wait(g);
  double el = (double)(br_now() - t0) / 1e9;
  double cpu = thread_cpu_s() - cpu0;
  br_group_free(g);
  br_http_session_free(b->http);
  if (rc < 0 || wrc < 0) return br_fail(rc ? rc : wrc, "workers");
  size_t done = (size_t)(b->ok + b->failed);
  qsort(b->lat, done, sizeof *b->lat, cmp_i64);
  printf("{\"impl\":\"braid\",\"elapsed_s\":%.6f,\"n\":%ld,\"ok\":%ld,\"bytes\":%zu,"
         "\"loop_cpu_s\":%.6f,\"lat_p50_ms\":%.2f,\"lat_p99_ms\":%.2f,\"lat_max_ms\":%.2f,"
         "\"rss_kib\":%ld}\n",
         el, b->n, b->ok, b->bytes, cpu, done ? (double)b->lat[done / 2] / 1e6 : 0.0,
         done ? (double)b->lat[done * 99 / 100] / 1e6 : 0.0,
         done ? (double)b->lat[done - 1] / 1e6 : 0.0, vmhwm_kib());
  return NULL;
}

int main(int argc, char **argv) {
  bench b = {.n = 1000, .c = 100};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) b.n = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) b.c = strtol(argv[++i], NULL, 10);
    else b.url = argv[i];
  }
  if (!b.url || b.n <= 0 || b.c <= 0) {
    fprintf(stderr, "usage: fetch_braid URL [-n N] [-c C]\n");
    return 2;
  }
  b.lat = calloc((size_t)b.n, sizeof *b.lat);
  if (!b.lat) return 1;
  int rc = br_run(NULL, bench_main, &b);
  free(b.lat);
  if (rc < 0) fprintf(stderr, "fetch_braid: %s\n", br_strerror(rc));
  return rc < 0 || b.ok != b.n ? 1 : 0;
}
