/* SPDX-License-Identifier: MIT */
/* curl_multi: the plain-libcurl peer of the fetch benchmark (bench/http_run.py).
 *
 * n GETs of one URL with at most c in flight, the way a C programmer uses
 * libcurl without an event loop of their own: c easy handles on one multi
 * handle, driven by curl_multi_perform() + curl_multi_poll(); a handle that
 * finishes is given the next request at once, so the multi's connection cache
 * reuses its keep-alive connection. Bodies are counted and discarded.
 *
 *   curl_multi URL [-n 1000] [-c 100]
 *
 * Prints one JSON line: elapsed_s (first request to last body), n, ok, bytes,
 * rss_kib (VmHWM). Build: cc -O2 curl_multi.c -lcurl (bench/http_run.py does).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t nbytes;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  nbytes += size * n;
  return size * n;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

int main(int argc, char **argv) {
  const char *url = NULL;
  long n = 1000, c = 100;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) n = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) c = strtol(argv[++i], NULL, 10);
    else url = argv[i];
  }
  if (!url || n <= 0 || c <= 0) {
    fprintf(stderr, "usage: curl_multi URL [-n N] [-c C]\n");
    return 2;
  }
  if (c > n) c = n;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM *multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, c);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, c);

  CURL **easy = calloc((size_t)c, sizeof *easy);
  long started = 0, done = 0, ok = 0;
  double t0 = now_s();
  for (long i = 0; i < c; i++) {
    easy[i] = curl_easy_init();
    curl_easy_setopt(easy[i], CURLOPT_URL, url);
    curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(multi, easy[i]);
    started++;
  }
  int running = 1;
  while (done < n) {
    curl_multi_perform(multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left))) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL *e = m->easy_handle;
      long status = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result == CURLE_OK && status == 200) ok++;
      else fprintf(stderr, "curl_multi: %s (HTTP %ld)\n", curl_easy_strerror(m->data.result), status);
      done++;
      curl_multi_remove_handle(multi, e);
      if (started < n) { /* the same handle, so its connection is reused */
        curl_multi_add_handle(multi, e);
        started++;
      }
    }
    if (done < n) curl_multi_poll(multi, NULL, 0, 1000, NULL);
  }
  double el = now_s() - t0;
  printf("{\"impl\":\"curl_multi\",\"elapsed_s\":%.6f,\"n\":%ld,\"ok\":%ld,\"bytes\":%zu,\"rss_kib\":%ld}\n",
         el, n, ok, nbytes, vmhwm_kib());
  for (long i = 0; i < c; i++) {
    curl_multi_remove_handle(multi, easy[i]);
    curl_easy_cleanup(easy[i]);
  }
  free(easy);
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  return ok == n ? 0 : 1;
}
