/* SPDX-License-Identifier: MIT */
/* braid-http — sessions: defaults, politeness state (hosts, the total
 * limit, the retry budget), reusable easy handles, statistics. */
#include "http_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void br__http_hub_close(br__http_hub *h);

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

const char *br_http_version_string(void) {
  pthread_once(&curl_once, curl_init);
  return curl_version();
}

static const char *keep(br_http_session *s, const char *str, int *err) {
  if (!str) return NULL;
  char **a = realloc(s->strs, (s->nstrs + 1) * sizeof *a);
  if (!a) {
    *err = BR_ENOMEM;
    return NULL;
  }
  s->strs = a;
  char *c = strdup(str);
  if (!c) {
    *err = BR_ENOMEM;
    return NULL;
  }
  s->strs[s->nstrs++] = c;
  return c;
}

/* 0 means the default, BR_HTTP_OFF (kept as -1) means off, other negatives
 * are invalid. */
static int pick(int64_t *v, int64_t dflt) {
  if (*v == 0) *v = dflt;
  else if (*v < 0 && *v != BR_HTTP_OFF) return BR_EINVAL;
  return 0;
}

static void session_release(br_http_session *s) {
  for (size_t i = 0; i < s->nhosts_buckets; i++) {
    br__http_host *h = s->hosts[i];
    while (h) {
      br__http_host *n = h->next;
      br_sem_free(h->slots);
      free(h->key);
      free(h);
      h = n;
    }
  }
  free(s->hosts);
  for (size_t i = 0; i < s->neasy_free; i++) curl_easy_cleanup(s->easy_free[i].e);
  for (size_t i = 0; i < s->nreq_free; i++) br__http_req_free(s->req_free[i]);
  br_sem_free(s->total);
  for (size_t i = 0; i < s->nstrs; i++) free(s->strs[i]);
  free(s->strs);
  free((void *)s->opts.headers);
  free(s);
}

int br_http_session_new(br_http_session **out, const br_http_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK) return BR_EIO;
  br_http_opts o = opts ? *opts : (br_http_opts){0};
  if (o.max_total < 0 || o.max_per_host < 0 || o.per_host_rps < 0 || o.retry_budget < 0 ||
      (o.nheaders && !o.headers))
    return BR_EINVAL;
  if (o.max_total == 0) o.max_total = 100;
  if (o.max_per_host == 0) o.max_per_host = 6;
  if (o.max_per_host > o.max_total) o.max_per_host = o.max_total;
  int rc = 0;
  if ((rc = pick(&o.connect_timeout_ms, 10000)) || (rc = pick(&o.timeout_ms, 300000)) ||
      (rc = pick(&o.idle_timeout_ms, 30000)) || (rc = pick(&o.max_body, 64 << 20)) ||
      (rc = pick(&o.backoff_ms, 100)) || (rc = pick(&o.max_backoff_ms, 30000)))
    return rc;
  if (o.retries == 0) o.retries = 2;
  else if (o.retries < 0 && o.retries != BR_HTTP_OFF) return BR_EINVAL;
  if (o.max_redirects == 0) o.max_redirects = 10;
  else if (o.max_redirects < 0 && o.max_redirects != BR_HTTP_OFF) return BR_EINVAL;
  if (o.retry_budget == 0) o.retry_budget = 0.2;

  br_http_session *s = calloc(1, sizeof *s);
  if (!s) return BR_ENOMEM;
  s->opts = o;
  s->opts.headers = NULL;
  s->opts.nheaders = 0;
  char ua[64];
  snprintf(ua, sizeof ua, "braid-http/%d.%d.%d", BR_VERSION_MAJOR, BR_VERSION_MINOR,
           BR_VERSION_PATCH);
  s->opts.user_agent = keep(s, o.user_agent ? o.user_agent : ua, &rc);
  s->opts.ca_file = keep(s, o.ca_file, &rc);
  if (o.nheaders) {
    br_http_header *hs = calloc(o.nheaders, sizeof *hs);
    if (!hs) rc = BR_ENOMEM;
    s->opts.headers = hs;
    for (size_t i = 0; hs && i < o.nheaders; i++) {
      if (!o.headers[i].name) rc = BR_EINVAL;
      hs[i].name = keep(s, o.headers[i].name ? o.headers[i].name : "", &rc);
      hs[i].value = keep(s, o.headers[i].value ? o.headers[i].value : "", &rc);
    }
    s->opts.nheaders = o.nheaders;
  }
  s->nhosts_buckets = 64;
  s->hosts = calloc(s->nhosts_buckets, sizeof *s->hosts);
  if (!s->hosts && !rc) rc = BR_ENOMEM;
  if (!rc) rc = br_sem_new(&s->total, (unsigned)s->opts.max_total);
  if (rc) {
    session_release(s);
    return rc;
  }
  /* The retry budget starts with 10 retries in reserve, earns retry_budget
   * per request and holds at most 10 + 100 * retry_budget. */
  s->budget = 10;
  s->budget_max = 10 + 100 * s->opts.retry_budget;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uintptr_t)s;
  if (!s->rng) s->rng = 0x9e3779b97f4a7c15ull;
  s->loop = br_loop_current();
  *out = s;
  return 0;
}

int br_http_session_free(br_http_session *s) {
  if (!s) return 0;
  if (s->loop && br_loop_current() != s->loop) return BR_EPERM;
  if (s->calls > 0) return BR_EBUSY;
  br__http_hub_close(s->hub);
  session_release(s);
  return 0;
}

int br_http_session_get_stats(br_http_session *s, br_http_stats *out) {
  if (!s || !out) return BR_EINVAL;
  *out = s->stats;
  return 0;
}

double br__http_random(br_http_session *s) {
  /* xorshift64*: jitter needs spread, not cryptographic quality. */
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static size_t hash(const char *k) {
  size_t h = 1469598103934665603ull;
  for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ull;
  return h;
}

int br__http_host_get(br_http_session *s, const char *key, br__http_host **out) {
  size_t b = hash(key) % s->nhosts_buckets;
  for (br__http_host *h = s->hosts[b]; h; h = h->next)
    if (strcmp(h->key, key) == 0) {
      *out = h;
      return 0;
    }
  br__http_host *h = calloc(1, sizeof *h);
  if (!h) return BR_ENOMEM;
  h->key = strdup(key);
  int rc = h->key ? br_sem_new(&h->slots, (unsigned)s->opts.max_per_host) : BR_ENOMEM;
  if (rc) {
    free(h->key);
    free(h);
    return rc;
  }
  h->next = s->hosts[b];
  s->hosts[b] = h;
  *out = h;
  return 0;
}
