/* SPDX-License-Identifier: MIT */
/* braid-http — one request: limits, attempts, retries, streaming, errors.
 *
 * br_http_request runs in the requesting task from start to end:
 *   take a slot of the host (max_per_host), then one of the session
 *   (max_total); wait for the host's rate limit; run one attempt (add the easy
 *   handle, wait on the request's event, deliver streamed pieces); give the
 *   slots back; after a redirect go again for its Location (the next hop's
 *   host, whose slots and rate limit apply to it: curl is never asked to
 *   follow, as it would talk to the next host on the first one's slot);
 *   else decide whether to retry (cause, attempts left, budget, time left),
 *   sleep the backoff or Retry-After, go again.
 * The per-host slot is taken before the total one so that a task waiting for
 * a busy host never holds a slot other hosts could use.
 */
#include "http_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Streamed bytes queued for the requesting task before the transfer pauses. */
#define STREAM_HIGH (256 * 1024)

/* ------------------------------------------------------------------------ */
/* curl callbacks (run inside curl, in whichever task drives it: never block) */

static bool retryable_status(long st) {
  return st == 408 || st == 429 || (st >= 500 && st <= 599);
}

/* The statuses whose Location is followed (RFC 9110 15.4; 300, 304 and 305
 * are answers, not directions). */
static bool redirect_status(long st) {
  return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  br__http_req *r = ud;
  size_t len = size * n;
  /* The limit counts every response of the transfer, interim ones (1xx)
   * included: a server sending "102 Processing" for ever would otherwise
   * keep a call busy until its total timeout, as bytes keep coming. */
  r->hdr_total += len;
  if (r->hdr_total > BR__HTTP_MAX_HEADERS) {
    r->headers_too_big = true;
    return CURL_WRITEFUNC_ERROR;
  }
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    /* A new response (a redirect's, a 100 Continue's, the final one): keep
     * only the latest one's headers. */
    r->hdr_len = 0;
    if (r->hdr) r->hdr[0] = 0;
    r->discarding = false;
    long st = 0;
    const char *sp = memchr(p, ' ', len);
    if (sp) st = strtol(sp + 1, NULL, 10);
    r->status = st;
    r->redirecting = false;
    return len;
  }
  /* A redirect we follow: its body is not the caller's, and the call goes on
   * to the Location once this transfer ends (request() follows it, not
   * curl: see there). */
  if (r->follow && len >= 9 && strncasecmp(p, "Location:", 9) == 0 && redirect_status(r->status))
    r->redirecting = true;
  /* (hdr_len <= hdr_total: a server sending header lines for ever cannot
   * take all memory; libcurl 7.88 limits one line to 100 KB, not their
   * sum.) */
  if (r->hdr_len + len + 1 > r->hdr_cap) {
    size_t cap = r->hdr_cap ? r->hdr_cap * 2 : 1024;
    while (cap < r->hdr_len + len + 1) cap *= 2;
    char *b = realloc(r->hdr, cap);
    if (!b) return CURL_WRITEFUNC_ERROR;
    r->hdr = b;
    r->hdr_cap = cap;
  }
  memcpy(r->hdr + r->hdr_len, p, len);
  r->hdr_len += len;
  r->hdr[r->hdr_len] = 0;
  return len;
}

/* Room for need bytes; exact room when exact (a Content-Length known before
 * the first byte: no 16 KiB buffer for a 512-byte body). */
static int reserve(br__http_req *r, size_t need, bool exact) {
  if (need <= r->body_cap) return 0;
  size_t cap = need;
  if (!exact) {
    cap = r->body_cap ? r->body_cap : 16384;
    while (cap < need) cap *= 2;
  }
  char *b = realloc(r->body, cap);
  if (!b) return -1;
  r->body = b;
  r->body_cap = cap;
  return 0;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  br__http_req *r = ud;
  size_t len = size * n;
  long st = r->status;
  /* Bodies of redirects we follow, and of responses we are going to retry
   * while streaming, are not the caller's. */
  if (r->redirecting || (r->discard_retryable && retryable_status(st))) {
    r->discarding = true;
    /* Dropped bytes still cost the transfer: a redirect or a 503 with an
     * endless (chunked) body is cut off at max_body as any body is. */
    r->dropped += len;
    if (r->max_body >= 0 && r->dropped > (uint64_t)r->max_body) {
      r->too_big = true;
      return CURL_WRITEFUNC_ERROR;
    }
    return len;
  }
  if (r->max_body >= 0 && r->received + len > (uint64_t)r->max_body) {
    r->too_big = true;
    return CURL_WRITEFUNC_ERROR;
  }
  if (r->stream && r->body_len >= STREAM_HIGH) {
    r->paused = true;
    return CURL_WRITEFUNC_PAUSE; /* not consumed: curl offers it again */
  }
  if (!r->stream && r->body_len == 0) {
    curl_off_t cl = -1;
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl > 0 && (r->max_body < 0 || cl <= r->max_body) && cl < (64 << 20))
      (void)reserve(r, (size_t)cl + 1, true);
  }
  if (reserve(r, r->body_len + len + 1, false)) return CURL_WRITEFUNC_ERROR;
  memcpy(r->body + r->body_len, p, len);
  r->body_len += len;
  r->body[r->body_len] = 0;
  r->received += len;
  if (r->stream) br_event_set(r->ev);
  return len;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

int br__http_map_curl(CURLcode rc, CURL *easy, const br__http_req *r) {
  long oserr = 0;
  switch (rc) {
  case CURLE_OK:
    return 0;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return BR_ENOENT;
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &oserr);
    if (oserr == ENETUNREACH || oserr == EHOSTUNREACH) return -(int)oserr;
    return BR_ECONNREFUSED;
  case CURLE_OPERATION_TIMEDOUT:
    return BR_ETIMEDOUT;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED:
    return BR_ETLS;
  case CURLE_FILESIZE_EXCEEDED:
    return BR_EOVERFLOW;
  case CURLE_WRITE_ERROR:
    if (r && r->too_big) return BR_EOVERFLOW;
    if (r && r->headers_too_big) return BR_EIO;
    return BR_ENOMEM;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
    return BR_ECONNRESET;
  case CURLE_UNSUPPORTED_PROTOCOL:
    /* The URL's scheme was checked before curl saw it (host_key), and
     * redirects are followed by request(), not curl: from a transfer this
     * is a response that is not HTTP/1.x ("Received HTTP/0.9"), such as the
     * bytes a previous response sent past its Content-Length, left on a
     * kept-alive connection. The server's fault, not the caller's URL. */
    if (r) return BR_EIO;
    return BR_EINVAL;
  case CURLE_URL_MALFORMAT:
    if (r && r->status) return BR_EIO;
    return BR_EINVAL;
  case CURLE_BAD_FUNCTION_ARGUMENT:
    return BR_EINVAL;
  case CURLE_OUT_OF_MEMORY:
    /* libcurl 7.88 says this of a header line over 100 KB as well: once a
     * status line came, it is the response that is bad. */
    if (r && r->status) return BR_EIO;
    return BR_ENOMEM;
  default:
    return BR_EIO; /* PARTIAL_FILE (truncated), TOO_MANY_REDIRECTS, ... */
  }
}

/* ------------------------------------------------------------------------ */
/* The effective options of one call                                         */

typedef struct call_opts {
  int64_t connect_ms, idle_ms, max_body;
  int retries;
  unsigned flags;
  br_http_body_fn on_body;
  void *body_ud;
  int body_fd;
  const void *body;
  size_t body_len;
  const br_http_header *headers;
  size_t nheaders;
} call_opts;

static int64_t over(int64_t call, int64_t session) {
  if (call == 0) return session;
  return call < 0 ? BR_HTTP_OFF : call;
}

static int resolve_opts(br_http_session *s, const br_http_request_opts *ro, int64_t deadline,
                        call_opts *c, int64_t *dl) {
  br_http_request_opts z = {0};
  if (!ro) ro = &z;
  if ((ro->connect_timeout_ms < 0 && ro->connect_timeout_ms != BR_HTTP_OFF) ||
      (ro->timeout_ms < 0 && ro->timeout_ms != BR_HTTP_OFF) ||
      (ro->idle_timeout_ms < 0 && ro->idle_timeout_ms != BR_HTTP_OFF) ||
      (ro->max_body < 0 && ro->max_body != BR_HTTP_OFF) ||
      (ro->retries < 0 && ro->retries != BR_HTTP_OFF) || (ro->nheaders && !ro->headers) ||
      (ro->body_len && !ro->body) || ((ro->flags & BR_HTTP_TO_FD) && ro->body_fd < 0) ||
      ((ro->flags & BR_HTTP_TO_FD) && ro->on_body))
    return BR_EINVAL;
  c->connect_ms = over(ro->connect_timeout_ms, s->opts.connect_timeout_ms);
  c->idle_ms = over(ro->idle_timeout_ms, s->opts.idle_timeout_ms);
  c->max_body = over(ro->max_body, s->opts.max_body);
  c->retries = ro->retries ? ro->retries : s->opts.retries;
  if (c->retries < 0) c->retries = 0;
  c->flags = ro->flags;
  c->on_body = ro->on_body;
  c->body_ud = ro->body_ud;
  c->body_fd = ro->body_fd;
  c->body = ro->body;
  c->body_len = ro->body_len;
  c->headers = ro->headers;
  c->nheaders = ro->nheaders;
  int64_t total = over(ro->timeout_ms, s->opts.timeout_ms);
  *dl = deadline;
  if (total > 0) {
    int64_t t = br_deadline_ms(total);
    if (t < *dl) *dl = t;
  }
  return 0;
}

/* scheme://host:port of url, lower-case host, default ports filled in.
 * BR_EINVAL says why in why[]: curl's word for a URL it cannot parse (a
 * port past 65535, a bad host), or that the scheme is not http(s). */
static int host_key(const char *url, char *key, size_t n, char *why, size_t whylen) {
  CURLU *u = curl_url();
  if (!u) return BR_ENOMEM;
  char *scheme = NULL, *host = NULL, *port = NULL;
  int rc = 0;
  CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
  if (uc != CURLUE_OK) {
    rc = uc == CURLUE_OUT_OF_MEMORY ? BR_ENOMEM : BR_EINVAL;
    snprintf(why, whylen, "bad URL (%s)", curl_url_strerror(uc));
  } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
    rc = BR_EINVAL;
    snprintf(why, whylen, "not an http(s) URL");
  } else {
    for (char *p = host; *p; p++) *p = (char)tolower((unsigned char)*p);
    snprintf(key, n, "%s://%s:%s", scheme, host, port);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return rc;
}

/* The length of url's "scheme://authority" if it is plain enough to stand
 * for its host key as written (0 otherwise: parse it). */
static size_t origin_len(const char *url) {
  const char *p = url;
  while (isalpha((unsigned char)*p)) p++;
  if (p == url || strncmp(p, "://", 3) != 0) return 0;
  p += 3;
  const char *a = p;
  while (isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == ':' || *p == '[' ||
         *p == ']')
    p++;
  if (p == a || (*p && *p != '/' && *p != '?' && *p != '#')) return 0;
  size_t n = (size_t)(p - url);
  /* Spaces and control bytes make curl refuse the URL: leave that to the
   * parse, which says why. */
  for (; *p; p++)
    if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) return 0;
  return n < sizeof ((br__http_origin *)0)->text ? n : 0;
}

/* The host of url: from the session's cache of origins as written (a URL of
 * an origin seen before is not parsed again: most requests of a session go
 * to a few hosts), else parsed (host_key) and remembered. */
static int host_of(br_http_session *s, const char *url, br__http_host **out, char *why, size_t whylen) {
  size_t n = origin_len(url);
  for (size_t i = 0; n && i < BR__HTTP_ORIGINS; i++) {
    br__http_origin *o = &s->origins[i];
    if (o->len == n && memcmp(o->text, url, n) == 0) {
      *out = o->host;
      return 0;
    }
  }
  char key[512];
  int rc = host_key(url, key, sizeof key, why, whylen);
  if (rc) return rc;
  if ((rc = br__http_host_get(s, key, out))) return rc;
  if (n) {
    br__http_origin *o = &s->origins[s->origin_next++ % BR__HTTP_ORIGINS];
    memcpy(o->text, url, n);
    o->len = n;
    o->host = *out;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* One attempt                                                               */

/* A handle for r (r->easy, and r->prof what it is set up for). */
static int easy_get(br_http_session *s, br__http_req *r) {
  if (s->neasy_free) {
    br__http_easy *h = &s->easy_free[--s->neasy_free];
    r->easy = h->e;
    r->prof = h->prof;
    return 0;
  }
  r->easy = curl_easy_init();
  r->prof = (br__http_prof){0};
  return r->easy ? 0 : BR_ENOMEM;
}

static void easy_put(br_http_session *s, br__http_req *r) {
  if (!r->easy) return;
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, NULL); /* r->errbuf goes with r */
  if (s->neasy_free < sizeof s->easy_free / sizeof s->easy_free[0])
    s->easy_free[s->neasy_free++] = (br__http_easy){r->easy, r->prof};
  else
    curl_easy_cleanup(r->easy);
  r->easy = NULL;
}

static bool prof_same(const br__http_prof *a, const br__http_prof *b) {
  return a->valid && b->valid && a->method == b->method && a->body == b->body &&
         a->h2 == b->h2 && a->timeout == b->timeout &&
         a->flags == b->flags && a->idle_ms == b->idle_ms && a->max_body == b->max_body;
}

static struct curl_slist *add_header(struct curl_slist *l, const br_http_header *h, int *err) {
  char *line = br_strdupf("%s: %s", h->name, h->value ? h->value : "");
  if (h->value && !h->value[0]) {
    /* curl sends "Name;" for a header with an empty value. */
    free(line);
    line = br_strdupf("%s;", h->name);
  }
  if (!line) {
    *err = BR_ENOMEM;
    return l;
  }
  struct curl_slist *n = curl_slist_append(l, line);
  free(line);
  if (!n) {
    *err = BR_ENOMEM;
    return l;
  }
  return n;
}

static int64_t ms_until(int64_t deadline) {
  if (deadline == BR_NEVER) return -1;
  int64_t left = (deadline - br_now()) / 1000000;
  return left < 1 ? 1 : left;
}

static void setup_easy(br_http_session *s, br__http_req *r, const char *method, const char *url,
                       const call_opts *c, int64_t deadline, struct curl_slist *hdrs) {
  CURL *e = r->easy;
  const char *m = method ? method : (c->body ? "POST" : "GET");
  int64_t left = ms_until(deadline);
  br__http_prof p = {
      .valid = true,
      .method = strcmp(m, "GET") == 0 ? 0 : strcmp(m, "HEAD") == 0 ? 1 : strcmp(m, "POST") == 0 ? 2 : 3,
      .body = c->body || strcmp(m, "POST") == 0,
      /* Wait for a connection that may multiplex (HTTP/2, learnt from TLS's
       * ALPN) rather than open another; over plain http:// there is no
       * HTTP/2 here, and waiting would serialise the first request with the
       * others. */
      .h2 = !(c->flags & BR_HTTP_HTTP1) && strncasecmp(url, "https:", 6) == 0,
      .timeout = left > 0,
      .flags = c->flags & BR_HTTP_HTTP1,
      .idle_ms = c->idle_ms > 0 ? c->idle_ms : 0,
      .max_body = c->max_body >= 0 ? c->max_body : -1,
  };
  r->follow = !(c->flags & BR_HTTP_NO_REDIRECTS) && s->opts.max_redirects > 0;
  if (!prof_same(&p, &r->prof)) {
    if (r->prof.valid) curl_easy_reset(e);
    r->prof = p;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L); /* never wait for a resolver thread */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, p.h2 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, s->opts.user_agent);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, br__http_opensocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, br__http_closesocket);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No CURLOPT_FOLLOWLOCATION: request() follows redirects itself. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                     (c->flags & BR_HTTP_HTTP1) ? (long)CURL_HTTP_VERSION_1_1
                                                : (long)CURL_HTTP_VERSION_2TLS);
    if (s->opts.insecure) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (s->opts.ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, s->opts.ca_file);
    if (p.idle_ms > 0) {
      long secs = (long)((p.idle_ms + 999) / 1000);
      curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
      curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, secs);
    }
    if (p.max_body >= 0) curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)p.max_body);
    if (p.method == 1) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  }
  /* What changes with every request. */
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r->hub);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, r->hub);
  /* Timeouts: curl enforces the connect and idle ones; the total one and the
   * deadline are enforced by our wait, and given to curl as well so that its
   * error says which. */
  int64_t conn = c->connect_ms > 0 ? c->connect_ms : 0;
  if (left > 0 && (conn == 0 || left < conn)) conn = left;
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)conn);
  if (left > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)left);
  if (p.method == 3) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
  if (p.body) {
    /* Copied: the caller's buffer may be on a compact task's stack, which
     * moves while the task is suspended and curl sends from other tasks. */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, c->body ? (const char *)c->body : "");
  }
}

/* Hand the queued streamed bytes to the caller. Returns 0 or the code the
 * caller's callback (or br_write) failed with. */
static int deliver(br__http_req *r, const call_opts *c, int64_t deadline) {
  while (r->body_len > 0) {
    /* Take the bytes out first: the callback may block, and curl fills the
     * buffer again meanwhile (up to STREAM_HIGH). */
    char *p = r->body;
    size_t n = r->body_len;
    r->body = NULL;
    r->body_len = 0;
    r->body_cap = 0;
    int rc = 0;
    if (c->on_body) rc = c->on_body(c->body_ud, p, n);
    else {
      ssize_t w = br_write(c->body_fd, p, n, deadline);
      rc = w < 0 ? (int)w : 0;
    }
    free(p);
    if (rc < 0) return rc;
  }
  if (r->paused && r->added) {
    r->paused = false;
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
  }
  return 0;
}

/* Credentials the caller gave for the first host of a call, which a redirect
 * to another host must not carry there (as libcurl does when it follows). */
static bool first_host_only(const br_http_header *h) {
  return strcasecmp(h->name, "Authorization") == 0 || strcasecmp(h->name, "Cookie") == 0;
}

/* Run one attempt to its end. Returns 0 (a complete response) or a code;
 * *why is set for the caller's error text when the code is ours. other_host:
 * url is a redirect's, to another origin than the call's first. */
static int attempt(br_http_session *s, br__http_req *r, const char *method, const char *url,
                   const call_opts *c, int64_t deadline, bool retry_possible, bool other_host,
                   const char **why) {
  int err = 0;
  struct curl_slist *hdrs = NULL;
  for (size_t i = 0; i < s->opts.nheaders && !err; i++)
    if (!other_host || !first_host_only(&s->opts.headers[i]))
      hdrs = add_header(hdrs, &s->opts.headers[i], &err);
  for (size_t i = 0; i < c->nheaders && !err; i++)
    if (!other_host || !first_host_only(&c->headers[i]))
      hdrs = add_header(hdrs, &c->headers[i], &err);
  if (!err) err = easy_get(s, r);
  if (err) {
    curl_slist_free_all(hdrs);
    return err;
  }
  r->stream = c->on_body || (c->flags & BR_HTTP_TO_FD);
  r->discard_retryable = r->stream && retry_possible;
  r->max_body = c->max_body;
  setup_easy(s, r, method, url, c, deadline, hdrs);
  s->stats.attempts++;
  err = br__http_hub_add(r->hub, r);
  if (!err) {
    s->stats.in_flight++;
    if (s->stats.in_flight > s->stats.max_in_flight) s->stats.max_in_flight = s->stats.in_flight;
  }
  bool counted = !err;
  while (!err) {
    int rc = br_event_wait_until(r->ev, deadline);
    if (rc < 0) {
      err = rc;
      *why = rc == BR_ECANCELED ? "cancelled" : "deadline";
      break;
    }
    br_event_clear(r->ev);
    if (r->stream) {
      rc = deliver(r, c, deadline);
      if (rc < 0) {
        err = rc;
        *why = c->on_body ? "the body callback failed" : "writing the body failed";
        break;
      }
    }
    if (r->done) {
      err = br__http_map_curl(r->result, r->easy, r);
      break;
    }
    if (r->hub->spawn_error && !r->done) {
      err = r->hub->spawn_error;
      *why = "could not start a socket watcher";
      break;
    }
  }
  br__http_hub_remove(r->hub, r); /* no-op once curl finished it */
  if (counted) s->stats.in_flight--;
  s->stats.bytes += r->received;
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(hdrs);
  return err;
}

/* ------------------------------------------------------------------------ */
/* The response                                                              */

static void fill_response(br_http_response *out, br__http_req *r, const char *url_eff) {
  out->status = (int)r->status;
  /* Headers: count lines, then one block holds the array and the strings. */
  size_t nh = 0;
  for (size_t i = 0; i < r->hdr_len; i++)
    if (r->hdr[i] == '\n') nh++;
  size_t ulen = strlen(url_eff);
  size_t sz = nh * sizeof(br_http_header) + r->hdr_len + 1 + ulen + 1;
  char *mem = malloc(sz);
  if (!mem) return;
  br_http_header *hs = (br_http_header *)mem;
  char *txt = mem + nh * sizeof(br_http_header);
  memcpy(txt, r->hdr ? r->hdr : "", r->hdr_len);
  txt[r->hdr_len] = 0;
  char *u = txt + r->hdr_len + 1;
  memcpy(u, url_eff, ulen + 1);
  size_t k = 0;
  char *line = txt;
  while (*line && k < nh) {
    char *eol = strchr(line, '\n');
    if (!eol) break;
    char *end = eol;
    if (end > line && end[-1] == '\r') end--;
    *end = 0;
    char *colon = strchr(line, ':');
    if (colon && colon != line) {
      *colon = 0;
      char *v = colon + 1;
      while (*v == ' ' || *v == '\t') v++;
      char *ve = end;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = 0;
      hs[k].name = line;
      hs[k].value = v;
      k++;
    }
    line = eol + 1;
  }
  out->headers = k ? hs : NULL;
  out->nheaders = k;
  out->url = u;
  out->br__private.mem = mem;
}

const char *br_http_header_get(const br_http_response *r, const char *name) {
  if (!r || !name) return NULL;
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
  return NULL;
}

void br_http_response_free(br_http_response *r) {
  if (!r) return;
  free(r->body);
  free(r->br__private.mem);
  memset(r, 0, sizeof *r);
  r->url = "";
}

void br_http_responses_free(br_http_response *r, size_t n) {
  for (size_t i = 0; r && i < n; i++) br_http_response_free(&r[i]);
}

/* Retry-After: delay-seconds or an HTTP-date. -1 if absent or unreadable. */
static int64_t retry_after_ms(const br__http_req *r) {
  if (!r->hdr) return -1;
  const char *p = r->hdr;
  while (p && *p) {
    if (strncasecmp(p, "Retry-After:", 12) == 0) {
      const char *v = p + 12;
      while (*v == ' ' || *v == '\t') v++;
      if (isdigit((unsigned char)*v)) {
        /* Any number of digits may come: more seconds than fit in the ms
         * count are as good as for ever (saturated, never wrapped). But
         * only digits: "120abc" is neither delay-seconds nor a date (no
         * HTTP-date starts with a digit), so it is ignored (RFC 9110
         * 10.2.3). */
        char *end;
        errno = 0;
        long long secs = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t') end++;
        if (*end != '\r' && *end != '\n' && *end) return -1;
        if (errno == ERANGE || secs > INT64_MAX / 1000) return INT64_MAX;
        return (int64_t)secs * 1000;
      }
      char date[128];
      size_t i = 0;
      while (v[i] && v[i] != '\r' && v[i] != '\n' && i + 1 < sizeof date) {
        date[i] = v[i];
        i++;
      }
      date[i] = 0;
      time_t t = curl_getdate(date, NULL);
      if (t < 0) return -1;
      time_t now = time(NULL);
      return t > now ? (int64_t)(t - now) * 1000 : 0;
    }
    p = strchr(p, '\n');
    if (p) p++;
  }
  return -1;
}

/* Backoff before retry n (0, 1, ...): a random time between d/2 and d, d =
 * backoff_ms * 2^n capped at max_backoff_ms (BR_HTTP_OFF: no cap; a
 * backoff_ms of BR_HTTP_OFF: none). */
static int64_t backoff_ms(br_http_session *s, int n) {
  if (s->opts.backoff_ms < 0) return 0;
  double d = (double)s->opts.backoff_ms * (double)(1u << (n < 20 ? n : 20));
  if (s->opts.max_backoff_ms >= 0 && d > (double)s->opts.max_backoff_ms)
    d = (double)s->opts.max_backoff_ms;
  if (d > 1e15) d = 1e15; /* ~30,000 years: converts to int64_t, and passes any deadline */
  return (int64_t)(d / 2 + br__http_random(s) * d / 2); /* equal jitter */
}

static bool idempotent(const char *m) {
  return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") ||
         !strcmp(m, "DELETE") || !strcmp(m, "OPTIONS");
}

/* ------------------------------------------------------------------------ */

/* A request record: a finished one of this session (its event and header
 * buffer kept), or a new one. */
static int req_get(br_http_session *s, br__http_req **out) {
  br__http_req *r;
  if (s->nreq_free) {
    r = s->req_free[--s->nreq_free];
    br_event *ev = r->ev;
    char *hdr = r->hdr;
    size_t cap = r->hdr_cap;
    memset(r, 0, sizeof *r);
    r->ev = ev;
    r->hdr = hdr;
    r->hdr_cap = cap;
    if (hdr) hdr[0] = 0;
    br_event_clear(ev);
    *out = r;
    return 0;
  }
  r = calloc(1, sizeof *r);
  if (!r) return BR_ENOMEM;
  int rc = br_event_new(&r->ev);
  if (rc) {
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

static void req_put(br_http_session *s, br__http_req *r) {
  free(r->body);
  r->body = NULL;
  if (s->nreq_free < sizeof s->req_free / sizeof s->req_free[0] && r->hdr_cap <= 16384) {
    s->req_free[s->nreq_free++] = r;
    return;
  }
  br__http_req_free(r);
}

void br__http_req_free(br__http_req *r) {
  free(r->body);
  free(r->hdr);
  br_event_free(r->ev);
  free(r);
}

static int request(br_http_session *s, br_http_response *out, const char *method,
                   const char *url, const br_http_request_opts *ro, int64_t deadline) {
  int64_t t0 = br_now();
  call_opts c;
  int64_t dl;
  int rc = resolve_opts(s, ro, deadline, &c, &dl);
  if (rc) {
    snprintf(out->error, sizeof out->error, "invalid request options");
    return rc;
  }
  br__http_host *host;
  br__http_hub *hub;
  char bad[160] = "";
  rc = host_of(s, url, &host, bad, sizeof bad);
  if (rc) {
    if (rc == BR_EINVAL) snprintf(out->error, sizeof out->error, "%s", bad); /* (the caller has the URL) */
    return rc;
  }
  if ((rc = br__http_hub_get(s, &hub))) return rc;

  br__http_req *r;
  if ((rc = req_get(s, &r))) return rc;
  r->hub = hub;
  hub->refs++;
  s->budget += s->opts.retry_budget;
  if (s->budget > s->budget_max) s->budget = s->budget_max;

  const char *why = NULL;
  char whybuf[200];
  bool refused = false;
  int err = 0;
  /* Redirects are followed here, one transfer per hop, not by curl: each hop
   * waits for a slot of the host it goes to (and its rate limit), so the
   * per-host limit holds for the host actually being talked to. n counts
   * the retries made, over all hops. */
  const char *m = method ? method : (c.body ? "POST" : "GET");
  const char *url0 = url; /* the caller's, for the error text */
  br__http_host *first = host;
  char *hop_url = NULL; /* the current hop's URL once a redirect was followed */
  int redirects = 0;
  for (int n = 0;;) {
    why = NULL;
    /* A fresh attempt state (the easy handle is reused across attempts). */
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    r->hdr_len = 0;
    if (r->hdr) r->hdr[0] = 0;
    r->status = 0;
    r->received = 0;
    r->done = r->too_big = r->headers_too_big = r->paused = r->discarding = false;
    r->redirecting = false;
    r->hdr_total = 0;
    r->dropped = 0;
    r->errbuf[0] = 0;

    err = br_sem_acquire_until(host->slots, dl);
    if (err == 0) {
      err = br_sem_acquire_until(s->total, dl);
      if (err) br_sem_release(host->slots);
    }
    if (err) {
      why = err == BR_ECANCELED ? "cancelled" : "deadline, waiting for a slot";
      break;
    }
    if (s->opts.per_host_rps > 0) {
      int64_t now = br_now(), slot = host->next_start > now ? host->next_start : now;
      host->next_start = slot + (int64_t)(1e9 / s->opts.per_host_rps);
      if (slot > now) err = br_sleep_until(slot < dl ? slot : dl);
      if (!err && slot >= dl) err = BR_ETIMEDOUT;
      if (err) why = err == BR_ECANCELED ? "cancelled" : "deadline, waiting for the rate limit";
    }
    if (!err) {
      bool retry_possible = n < c.retries && s->budget >= 1;
      out->attempts = n + 1; /* counts transfers started, not slots waited for */
      err = attempt(s, r, m, url, &c, dl, retry_possible, host != first, &why);
    }
    br_sem_release(s->total);
    br_sem_release(host->slots);

    if (err == 0 && r->redirecting) {
      /* Where curl would have gone (CURLINFO_REDIRECT_URL: the Location
       * resolved against this hop's URL); NULL when it does not parse. */
      char *loc = NULL;
      curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &loc);
      br__http_host *next = NULL;
      char *copy = loc ? strdup(loc) : NULL;
      if (redirects >= s->opts.max_redirects) {
        err = BR_EIO;
        snprintf(whybuf, sizeof whybuf, "more than %d redirects", s->opts.max_redirects);
      } else if (!loc) {
        err = BR_EIO;
        snprintf(whybuf, sizeof whybuf, "a redirect to a Location that is not a URL");
      } else if (!copy) {
        err = BR_ENOMEM;
      } else if ((err = host_of(s, copy, &next, bad, sizeof bad)) == BR_EINVAL) {
        err = BR_EIO; /* the server's Location is bad, not the caller's URL */
        snprintf(whybuf, sizeof whybuf, "a redirect to %.120s: %.60s", copy, bad);
      }
      if (err) {
        free(copy);
        why = whybuf;
        if (err == BR_ENOMEM) why = NULL;
        break;
      }
      free(hop_url);
      url = hop_url = copy;
      host = next;
      redirects++;
      /* As browsers and curl do: a 303 turns anything but HEAD into a GET,
       * a 301 or 302 turns a POST into one; 307 and 308 keep both the
       * method and the body. */
      long st = r->status;
      if ((st == 303 && strcmp(m, "HEAD") != 0) ||
          ((st == 301 || st == 302) && strcmp(m, "POST") == 0)) {
        m = "GET";
        c.body = NULL;
        c.body_len = 0;
      }
      easy_put(s, r); /* the next hop takes a handle again */
      continue;
    }

    /* Retry? */
    bool transient = (err == 0 && retryable_status(r->status)) ||
                     err == BR_ECONNREFUSED || err == -ENETUNREACH || err == -EHOSTUNREACH ||
                     (err == BR_ECONNRESET && idempotent(m));
    if (err == BR_EIO && r->status == 0 && r->result == CURLE_UNSUPPORTED_PROTOCOL &&
        idempotent(m)) {
      /* Not HTTP at all, on a connection used before: the bytes an earlier
       * response sent past its end (a body on a 304 or a HEAD answer, a
       * Content-Length that lied), not this request's answer. curl closes
       * that connection; another try takes a fresh one. */
      long fresh = 1;
      curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &fresh);
      if (fresh == 0) transient = true;
    }
    if (err == BR_ETIMEDOUT && !why) {
      /* A connect timeout (no connection made) is worth another try. */
      curl_off_t ct = 0;
      curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &ct);
      if (ct == 0 && br_now() < dl) transient = true;
    }
    if (!transient || n >= c.retries) break;
    /* Streamed bytes the caller has been handed cannot be taken back: a
     * retry would hand the start of the body over again (after a 5xx that
     * was not discarded, or a reset in the middle of the body). */
    if (r->stream && r->received > 0) break;
    if (s->budget < 1) {
      refused = true;
      s->stats.budget_refusals++;
      break;
    }
    int64_t wait_ms = -1;
    if (err == 0 && (r->status == 429 || r->status == 503 || r->status == 408))
      wait_ms = retry_after_ms(r);
    /* max_backoff_ms is BR_HTTP_OFF (-1) for no cap at all. */
    bool capped = s->opts.max_backoff_ms >= 0;
    if (wait_ms < 0) {
      wait_ms = backoff_ms(s, n);
    } else if (capped && wait_ms > s->opts.max_backoff_ms) {
      break; /* the server asks for longer than we wait */
    }
    /* No time left for another try? (Compared in ms first: wait_ms may be
     * far too large to turn into ns.) */
    int64_t now = br_now();
    if (wait_ms > (dl - now) / 1000000 || now + wait_ms * 1000000 >= dl) break;
    int64_t until = now + wait_ms * 1000000;
    n++;
    s->budget -= 1;
    s->stats.retries++;
    easy_put(s, r); /* the next attempt takes a handle again */
    int sr = br_sleep_until(until);
    if (sr < 0) {
      err = sr;
      why = sr == BR_ECANCELED ? "cancelled during backoff" : "deadline, during backoff";
      break;
    }
  }

  /* The outcome. */
  char *eff = NULL;
  if (r->easy) curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &eff);
  out->redirects = redirects;
  fill_response(out, r, eff ? eff : url);
  if (!r->stream && err == 0) {
    out->body = r->body ? r->body : calloc(1, 1);
    r->body = NULL;
  }
  out->body_len = (size_t)r->received;
  if (err == 0 && (c.flags & BR_HTTP_RAISE) && r->status >= 400) {
    err = BR_EHTTP;
    snprintf(out->error, sizeof out->error, "HTTP %ld from %.200s", r->status, url0);
  } else if (err) {
    const char *detail = why ? why : (r->errbuf[0] ? r->errbuf : br_strerror(err));
    if (err == BR_EOVERFLOW)
      snprintf(out->error, sizeof out->error, "body larger than %lld bytes",
               (long long)c.max_body);
    else if (r->headers_too_big)
      snprintf(out->error, sizeof out->error, "response headers larger than %d KiB",
               BR__HTTP_MAX_HEADERS >> 10);
    else if (err == BR_ETIMEDOUT && why)
      snprintf(out->error, sizeof out->error, "timed out after %lld ms (%s)",
               (long long)((br_now() - t0) / 1000000), why);
    else
      snprintf(out->error, sizeof out->error, "%s", detail);
    size_t l = strlen(out->error);
    while (l && (out->error[l - 1] == '\n' || out->error[l - 1] == '\r')) out->error[--l] = 0;
    if (out->attempts > 1 && l + 40 < sizeof out->error)
      snprintf(out->error + l, sizeof out->error - l, " (after %d attempts%s)", out->attempts,
               refused ? ", retry budget spent" : "");
  } else if (refused) {
    /* A retryable status kept because the budget was spent: not an error. */
  }
  out->elapsed_ns = br_now() - t0;
  free(hop_url); /* fill_response copied the URL */
  easy_put(s, r);
  br__http_hub_release(hub);
  req_put(s, r);
  return err;
}

/* An HTTP method is a token (RFC 9110 5.6.2): anything else would be sent
 * as written and could smuggle a header or a second request line. */
static bool method_ok(const char *m) {
  if (!m) return true; /* GET, or POST with a body */
  if (!*m || strlen(m) > 32) return false;
  for (const char *p = m; *p; p++)
    if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p))) return false;
  return true;
}

int br_http_request(br_http_session *s, br_http_response *out, const char *method,
                    const char *url, const br_http_request_opts *opts, int64_t deadline) {
  if (!out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  out->url = "";
  int rc;
  if (!url) {
    rc = BR_EINVAL;
  } else if (!method_ok(method)) {
    rc = BR_EINVAL;
    snprintf(out->error, sizeof out->error, "not an HTTP method: '%.64s'", method);
  } else if (!br_self()) {
    rc = BR_ENOTTASK;
  } else if (!s) {
    br_http_session *tmp;
    rc = br_http_session_new(&tmp, NULL);
    if (rc == 0) {
      rc = br_http_request(tmp, out, method, url, opts, deadline);
      br_http_session_free(tmp);
    }
    return rc;
  } else {
    if (!s->loop) s->loop = br_loop_current();
    if (s->loop != br_loop_current()) {
      rc = BR_EPERM;
    } else {
      s->calls++;
      s->stats.requests++;
      rc = request(s, out, method, url, opts, deadline);
      s->calls--;
      if (rc) s->stats.failures++;
    }
  }
  out->err = rc;
  if (rc && !out->error[0]) snprintf(out->error, sizeof out->error, "%s", br_strerror(rc));
  return rc;
}

int br_http_get(br_http_session *s, br_http_response *out, const char *url,
                const br_http_request_opts *opts, int64_t deadline) {
  return br_http_request(s, out, "GET", url, opts, deadline);
}

/* One GET of br_http_get_all. Its fields live on the heap: the caller may be
 * a compact task, whose stack moves while it waits in the gather. */
typedef struct get_job {
  br_http_session *s;
  br_http_response *out;
  const char *url;
  const br_http_request_opts *opts; /* the heap copy below */
  int64_t deadline;
} get_job;

static void *get_task(void *arg) {
  get_job *j = arg;
  int rc = br_http_get(j->s, j->out, j->url, j->opts, j->deadline);
  if (rc) return br_fail(rc, "%s", j->out->error);
  return NULL;
}

int br_http_get_all(br_http_session *s, br_http_response *out, const char *const *urls,
                    size_t n, const br_http_request_opts *opts, int64_t deadline) {
  if (n == 0) return 0;
  if (!out || !urls) return BR_EINVAL;
  if (!br_self()) return BR_ENOTTASK;
  for (size_t i = 0; i < n; i++) {
    memset(&out[i], 0, sizeof out[i]);
    out[i].url = "";
  }
  br_http_session *own = NULL;
  if (!s) {
    int rc = br_http_session_new(&own, NULL);
    if (rc) return rc;
    s = own;
  }
  get_job *jobs = calloc(n, sizeof *jobs);
  br_task **tasks = calloc(n, sizeof *tasks);
  br_result *res = calloc(n, sizeof *res);
  br_http_request_opts *o = opts ? malloc(sizeof *o) : NULL;
  int rc = (!jobs || !tasks || !res || (opts && !o)) ? BR_ENOMEM : 0;
  if (o) *o = *opts;
  size_t spawned = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    jobs[i] = (get_job){s, &out[i], urls[i], o, deadline};
    /* Compact: a waiting GET costs a few hundred bytes, so n can be large;
     * nothing here hands a pointer into a task's stack to another task. */
    br_spawn_opts so = {.name = "http-get", .flags = BR_SPAWN_COMPACT};
    rc = br_spawn(&tasks[i], get_task, &jobs[i], &so);
    if (!rc) spawned++;
  }
  if (rc) {
    for (size_t i = 0; i < spawned; i++) br_task_close(tasks[i]);
  } else {
    int g = br_gather_tasks(res, tasks, n);
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = out[i].err;
    if (!rc && g == BR_ECANCELED) rc = g;
    br_results_free(res, n);
  }
  free(jobs);
  free(tasks);
  free(res);
  free(o);
  if (own) br_http_session_free(own);
  return rc;
}
