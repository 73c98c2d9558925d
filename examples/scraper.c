/* SPDX-License-Identifier: MIT */
/* scraper — the articles' web scraper: "fetches thousands of pages and then
 * parses their HTML. The fetching part is I/O-bound, the parsing part is
 * CPU-bound." Each half gets the model that fits it, and the program measures
 * both halves and says so at the end.
 *
 *   scraper [options] URL       crawl URL's site
 *   scraper --parse-files DIR   parse every .html file under DIR on the pool
 *                               (no network): the parse half alone
 *   scraper                     crawl a small demo site this program serves
 *                               itself on 127.0.0.1 (a braid task per
 *                               connection)
 *
 * Options: -c N  fetches in flight (default 32); -n N  fetch at most N URLs
 * (default 1000); -t N  parse threads (default: one per CPU); -q  no line per
 * page; --json  end with one JSON line of figures; --timeout MS per fetch
 * (default 30000).
 *
 * How it works:
 *  - Fetching: one task per URL in flight, on one loop, through one
 *    braid-http session (libcurl's multi-socket interface driven by the
 *    loop, keep-alive connections). A br_sem bounds the fetches in flight,
 *    and with them the bodies held in memory.
 *  - Parsing: the fetching task submits its page to the CPU pool
 *    (br_pool_submit) and awaits the job (br_await): only that task
 *    suspends, the loop goes on fetching, and the loop thread never parses.
 *    The job parses with libxml2's HTML parser (through its SAX interface:
 *    no tree is built), takes the <title> and every <a href>, resolves each link against the page's URL
 *    (fragment dropped) and keeps those on the start URL's scheme, host and
 *    port.
 *  - Bookkeeping: the crawling task alone owns the seen-set and the
 *    frontier; finished pages come back to it through a br_chan whose
 *    capacity is the number of fetches in flight, so a fetcher never waits
 *    to hand its page over and nothing piles up. A URL is admitted (seen,
 *    queued) only while fewer than -n URLs have been admitted, so the
 *    frontier and the seen-set never hold more than -n entries; the seen-set
 *    keeps 64-bit fingerprints (16 bytes per URL), the frontier the URLs
 *    themselves. Memory is therefore the in-flight pages plus a few dozen
 *    bytes per admitted URL, whatever the size of the site.
 *  - Measuring: each fetching task reads its own accounting
 *    (br_task_get_stats: time it spent running) around the request; each
 *    parse job reads its thread's CPU clock. The verdicts compare those with
 *    the wall time the same work took.
 *
 * A status other than 200, or a transfer error, is a broken page (reported,
 * not parsed); redirects are followed on the site (a redirect to another
 * site is a broken page, and not requested); retries are off (the first
 * answer is what the crawl reports).
 */
// link: braid_http LibXml2::LibXml2
// expect: ^broken 404 http://127\.0\.0\.1:[0-9]+/missing\.html
// expect: ^crawled 152 URLs .* 151 ok, 1 broken
// expect: ^fetch: .* on CPU .*-> I/O-bound: coroutines
// expect: ^parse: .* on CPU.* -> CPU-bound: the pool
// expect-time: ..60
// example-args: -q
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <braid.h>
#include <braid/http.h>

#include <libxml/HTMLparser.h>
#include <libxml/uri.h>

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Pages                                                                     */

typedef struct crawl crawl;

/* One URL's journey: created by the crawler, filled by its fetching task and
 * its parse job, handed back to the crawler through the channel. */
typedef struct page {
  crawl *c;
  char *url;         /* as admitted (no fragment) */
  int status;        /* HTTP status, 0 when the transfer failed */
  int err;           /* 0, the fetch error, or the parse job's error */
  char *error;       /* why it is broken (malloc'd), NULL when fine */
  bool fetch_failed; /* the error is the transfer's (even after a status line came) */
  /* the response, while the page is being parsed */
  const char *body;
  size_t body_len;
  const char *base;  /* the URL after redirects, to resolve links against */
  /* what the parse job found (malloc'd) */
  char *title;
  char **links;      /* on-host, resolved, without fragment */
  size_t nlinks, links_cap;
  size_t offhost;    /* links to another scheme, host or port (not followed) */
  /* accounting, in ns */
  int64_t fetch_run, fetch_wall;  /* the fetching task, around the request */
  int64_t parse_cpu, parse_wall;  /* the parse job */
  int64_t parse_queued;           /* ...of its wall time, waiting for a CPU */
} page;

static void page_free(page *p) {
  if (!p) return;
  for (size_t i = 0; i < p->nlinks; i++) free(p->links[i]);
  free(p->links);
  free(p->title);
  free(p->error);
  free(p->url);
  free(p);
}

/* ------------------------------------------------------------------------ */
/* URLs: resolution and the same-origin rule (libxml2's RFC 3986 code)       */

typedef struct origin {
  char scheme[16];
  char host[256];
  int port;
} origin;

static int default_port(const char *scheme) {
  return strcasecmp(scheme, "https") == 0 ? 443 : 80;
}

/* origin_of: scheme, host and port of an absolute http(s) URL; -1 if it is
 * not one. */
static int origin_of(const char *url, origin *o) {
  xmlURIPtr u = xmlParseURI(url);
  int rc = -1;
  if (!u) return -1;
  if (u->scheme && u->server && u->server[0] &&
      (strcasecmp(u->scheme, "http") == 0 || strcasecmp(u->scheme, "https") == 0) &&
      strlen(u->scheme) < sizeof o->scheme && strlen(u->server) < sizeof o->host) {
    size_t i;
    for (i = 0; u->scheme[i]; i++) o->scheme[i] = (char)tolower((unsigned char)u->scheme[i]);
    o->scheme[i] = '\0';
    for (i = 0; u->server[i]; i++) o->host[i] = (char)tolower((unsigned char)u->server[i]);
    o->host[i] = '\0';
    o->port = u->port > 0 ? u->port : default_port(o->scheme);
    rc = 0;
  }
  xmlFreeURI(u);
  return rc;
}

static bool same_origin(const origin *a, const origin *b) {
  return a->port == b->port && strcmp(a->scheme, b->scheme) == 0 && strcmp(a->host, b->host) == 0;
}

/* resolve: href resolved against base, without its fragment (malloc'd), or
 * NULL if it does not make a URL. */
static char *resolve(const char *href, const char *base) {
  while (isspace((unsigned char)*href)) href++;
  xmlChar *abs = xmlBuildURI((const xmlChar *)href, (const xmlChar *)base);
  if (!abs) return NULL;
  char *s = strdup((const char *)abs);
  xmlFree(abs);
  if (!s) return NULL;
  char *hash = strchr(s, '#'); /* a literal '#' only ever starts the fragment */
  if (hash) *hash = '\0';
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

/* ------------------------------------------------------------------------ */
/* The parse job: runs on a CPU-pool worker                                  */

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The calling thread's time spent runnable but waiting for a CPU (ns), from
 * /proc/thread-self/schedstat; 0 where it cannot be read. A job on a busy
 * machine is preempted: its wall time then counts time it wanted a CPU and
 * did not get, which is no sign of waiting for I/O. Each thread keeps the
 * file open (closed when the thread exits). */
static pthread_key_t sched_key;
static pthread_once_t sched_once = PTHREAD_ONCE_INIT;

static void sched_close(void *p) {
  close((int)(intptr_t)p - 1);
}

static void sched_init(void) {
  pthread_key_create(&sched_key, sched_close);
}

static int64_t thread_runqueue_ns(void) {
  pthread_once(&sched_once, sched_init);
  int fd = (int)(intptr_t)pthread_getspecific(sched_key) - 1;
  if (fd < 0) {
    fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    pthread_setspecific(sched_key, (void *)(intptr_t)(fd + 1));
  }
  char buf[128];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  long long run, wait;
  if (n <= 0) return 0;
  buf[n] = '\0';
  return sscanf(buf, "%lld %lld", &run, &wait) == 2 ? (int64_t)wait : 0;
}

static char *trimmed_copy(const char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) n--;
  char *out = malloc(n + 1);
  if (!out) return NULL;
  /* Titles are printed on one line: fold inner whitespace runs to spaces. */
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = isspace((unsigned char)s[i]) ? ' ' : s[i];
    if (ch == ' ' && j && out[j - 1] == ' ') continue;
    out[j++] = ch;
  }
  out[j] = '\0';
  return out;
}

static int add_link(page *p, char *url) {
  if (p->nlinks == p->links_cap) {
    size_t cap = p->links_cap ? 2 * p->links_cap : 16;
    char **nl = realloc(p->links, cap * sizeof *nl);
    if (!nl) return -1;
    p->links = nl;
    p->links_cap = cap;
  }
  p->links[p->nlinks++] = url;
  return 0;
}

struct crawl {
  /* the crawl's parameters */
  origin start;
  size_t limit;
  int concurrency;
  int64_t timeout_ms;
  bool quiet, json;
  /* the executors */
  br_http_session *http;
  br_pool *pool;
  int threads;
  /* the bounded pipeline */
  br_sem *inflight;   /* at most `concurrency` pages between admission... */
  br_chan *done;      /* ...and their return to the crawler (page *) */
  br_group *fetchers; /* every fetching task, joined at the end */
  /* owned by the crawling task alone */
  uint64_t *seen;     /* open addressing, 0 = empty slot */
  size_t seen_cap, admitted;
  char **frontier;    /* ring of admitted URLs not yet fetched */
  size_t front_head, front_len, front_cap;
  /* results */
  size_t pages, ok, broken, offhost, links, parse_failed, cancelled;
  size_t max_inflight, live;
  int64_t fetch_run, fetch_wall, parse_cpu, parse_wall, parse_queued, parse_bytes;
  int64_t loop_cpu;   /* CPU time of the loop thread over the crawl */
};

/* What the parser's callbacks collect for one page. */
typedef struct parse_state {
  page *p;
  const origin *start;
  int in_title;        /* inside the first <title> */
  char title[512];
  size_t title_len;
  bool failed;         /* out of memory */
} parse_state;

static void on_start(void *ud, const xmlChar *name, const xmlChar **atts) {
  parse_state *st = ud;
  /* The HTML parser hands element and attribute names in lower case. */
  if (name[0] == 'a' && name[1] == '\0') {
    for (size_t i = 0; atts && atts[i]; i += 2) {
      if (strcmp((const char *)atts[i], "href") != 0 || !atts[i + 1]) continue;
      char *url = resolve((const char *)atts[i + 1], st->p->base);
      origin o;
      if (url && origin_of(url, &o) == 0 && same_origin(&o, st->start)) {
        if (add_link(st->p, url) == 0) url = NULL;
        else st->failed = true;
      } else if (url) {
        st->p->offhost++;
      }
      free(url);
      break;
    }
  } else if (!st->p->title && !st->in_title && strcmp((const char *)name, "title") == 0) {
    st->in_title = 1;
  }
}

static void on_end(void *ud, const xmlChar *name) {
  parse_state *st = ud;
  if (st->in_title && strcmp((const char *)name, "title") == 0) {
    st->in_title = 0;
    st->title[st->title_len] = '\0';
    st->p->title = trimmed_copy(st->title);
    if (!st->p->title) st->failed = true;
  }
}

static void on_text(void *ud, const xmlChar *text, int len) {
  parse_state *st = ud;
  if (!st->in_title || len <= 0) return;
  size_t room = sizeof st->title - 1 - st->title_len, n = (size_t)len < room ? (size_t)len : room;
  memcpy(st->title + st->title_len, text, n);
  st->title_len += n;
}

/* parse_job: fill p->title, p->links and p->offhost from p->body. The page
 * belongs to this job until it returns (its fetching task waits, shielded).
 *
 * libxml2's HTML parser (the one htmlReadMemory uses: error recovery, implied
 * and auto-closed elements, entities, the charset of <meta>) is driven through
 * its SAX interface: the job needs the title and the links, not a tree, and
 * not building one costs a third less CPU per page (77 us instead of 116 us
 * for the benchmark's 12 KB pages). Links are resolved against the URL after
 * redirects; <base href> is not honoured. */
static void *parse_job(void *arg) {
  page *p = arg;
  int64_t cpu0 = thread_cpu_ns(), rq0 = thread_runqueue_ns(), wall0 = br_now();
  if (p->body_len > (size_t)INT32_MAX) return br_fail(BR_EOVERFLOW, "page too large to parse");
  parse_state st = {.p = p, .start = &p->c->start};
  htmlSAXHandler sax = {0};
  sax.startElement = on_start;
  sax.endElement = on_end;
  sax.characters = on_text;
  sax.cdataBlock = on_text;
  sax.ignorableWhitespace = on_text;
  htmlParserCtxtPtr ctxt = htmlCreateMemoryParserCtxt(p->body, (int)p->body_len);
  if (!ctxt) return br_fail(BR_ENOMEM, "libxml2 could not make a parser");
  /* Swap in our callbacks; the context frees its own handler at the end. */
  htmlSAXHandlerPtr own = (htmlSAXHandlerPtr)ctxt->sax;
  ctxt->sax = &sax;
  ctxt->userData = &st;
  htmlCtxtUseOptions(ctxt, HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                               HTML_PARSE_NONET);
  htmlParseDocument(ctxt);
  ctxt->sax = own;
  htmlFreeParserCtxt(ctxt);
  if (st.in_title) on_end(&st, (const xmlChar *)"title"); /* <title> never closed */
  if (st.failed) return br_fail(BR_ENOMEM, "out of memory while parsing");
  p->parse_cpu = thread_cpu_ns() - cpu0;
  p->parse_queued = thread_runqueue_ns() - rq0;
  p->parse_wall = br_now() - wall0;
  /* The thread CPU clock and the monotonic clock are read microseconds
   * apart: on a tiny page the CPU time may come out a little larger. */
  if (p->parse_wall < p->parse_cpu) p->parse_wall = p->parse_cpu;
  return p;
}

/* ------------------------------------------------------------------------ */
/* The fetching task                                                         */

static bool is_html(const br_http_response *r) {
  const char *ct = br_http_header_get(r, "content-type");
  return !ct || strncasecmp(ct, "text/html", 9) == 0 || strncasecmp(ct, "application/xhtml", 17) == 0;
}

enum { MAX_REDIRECTS = 10 }; /* as many as curl follows by default */

static bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* get_on_site: GET url into *r, following redirects on the start's site
 * only. curl would follow a Location anywhere; the crawl must not request a
 * page of another site, so it follows them itself. Returns 0 (r is the
 * final response, r->url its URL) or a code (r->error says why). */
static int get_on_site(crawl *c, const char *url, br_http_response *r, int64_t deadline) {
  br_http_request_opts ro = {.retries = BR_HTTP_OFF, .flags = BR_HTTP_NO_REDIRECTS};
  int rc = br_http_get(c->http, r, url, &ro, deadline);
  for (int hops = 0; rc == 0 && is_redirect(r->status); hops++) {
    const char *loc = br_http_header_get(r, "location");
    if (!loc) break; /* nowhere to go: the 3xx is the answer */
    char *next = resolve(loc, r->url && r->url[0] ? r->url : url);
    origin o;
    if (!next || origin_of(next, &o) < 0 || !same_origin(&o, &c->start)) {
      snprintf(r->error, sizeof r->error, "redirected off the site, to %.200s", loc);
      free(next);
      return BR_EIO;
    }
    if (hops == MAX_REDIRECTS) {
      snprintf(r->error, sizeof r->error, "too many redirects (more than %d)", MAX_REDIRECTS);
      free(next);
      return BR_EIO;
    }
    br_http_response_free(r);
    rc = br_http_get(c->http, r, next, &ro, deadline);
    free(next);
  }
  return rc;
}

static void *fetch_task(void *arg) {
  page *p = arg;
  crawl *c = p->c;
  br_http_response r;
  br_task_stats s0, s1;

  br_task_get_stats(NULL, &s0);
  int64_t w0 = br_now();
  int rc = get_on_site(c, p->url, &r, br_deadline_ms(c->timeout_ms));
  br_task_get_stats(NULL, &s1);
  p->fetch_run = s1.run_ns - s0.run_ns;
  p->fetch_wall = br_now() - w0;
  p->status = r.status;

  if (rc < 0) {
    p->err = rc;
    p->fetch_failed = true; /* a redirect loop or off the site, a body cut short or too large, a timeout */
    p->error = strdup(r.error[0] ? r.error : br_strerror(rc));
  } else if (r.status != 200) {
    p->err = BR_EHTTP;
  } else if (is_html(&r)) {
    /* The CPU-bound half: hand the page to the pool and wait for it. Only
     * this task suspends; the loop keeps the other transfers going. */
    p->body = r.body;
    p->body_len = r.body_len;
    p->base = r.url && r.url[0] ? r.url : p->url;
    br_future *f = NULL;
    rc = br_pool_submit(c->pool, &f, parse_job, p);
    if (rc == 0) {
      /* The job uses the page and the response: wait for it even if this
       * task is cancelled meanwhile (a shielded scope hides that). */
      br_scope shield;
      br_scope_enter(&shield, BR_NEVER, true);
      rc = br_await(f, NULL);
      br_scope_exit(&shield);
      if (rc < 0) p->error = strdup(br_future_message(f));
      br_future_unref(f);
    }
    if (rc < 0) {
      p->err = rc;
      if (!p->error) p->error = strdup(br_strerror(rc));
    }
    p->body = p->base = NULL;
  }
  br_http_response_free(&r);

  /* Hand the page back, then make room for the next fetch. The channel has
   * a slot for every page in flight, so this send never waits; it is
   * shielded so that a cancelled fetcher (Ctrl-C) still hands its page back
   * instead of dropping it. */
  br_scope shield;
  br_scope_enter(&shield, BR_NEVER, true);
  br_chan_send(c->done, &p);
  br_scope_exit(&shield);
  br_sem_release(c->inflight);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* The crawler: seen-set, frontier, printing                                 */

static uint64_t fingerprint(const char *s) { /* FNV-1a, 64 bits; never 0 */
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h ? h : 1;
}

/* admit: if url is new and the limit allows, remember it and queue it (the
 * frontier takes ownership) and return 1; otherwise free it and return 0. */
static int admit(crawl *c, char *url) {
  if (c->admitted >= c->limit) goto drop;
  uint64_t h = fingerprint(url);
  size_t mask = c->seen_cap - 1, i = (size_t)h & mask;
  while (c->seen[i]) {
    if (c->seen[i] == h) goto drop;
    i = (i + 1) & mask;
  }
  c->seen[i] = h;
  c->admitted++;
  c->frontier[(c->front_head + c->front_len) % c->front_cap] = url;
  c->front_len++;
  return 1;
drop:
  free(url);
  return 0;
}

static char *frontier_pop(crawl *c) {
  char *u = c->frontier[c->front_head];
  c->front_head = (c->front_head + 1) % c->front_cap;
  c->front_len--;
  return u;
}

static void finish_page(crawl *c, page *p) {
  c->live--;
  c->pages++;
  c->fetch_run += p->fetch_run;
  c->fetch_wall += p->fetch_wall;
  c->parse_cpu += p->parse_cpu;
  c->parse_wall += p->parse_wall;
  c->parse_queued += p->parse_queued;
  c->offhost += p->offhost;
  c->links += p->nlinks + p->offhost;
  if (p->err == BR_ECANCELED) {
    c->cancelled++; /* stopped by Ctrl-C: neither fetched nor broken */
    c->pages--;
  } else if (p->err == BR_EHTTP || p->fetch_failed) {
    c->broken++;
    if (p->err == BR_EHTTP) printf("broken %d %s\n", p->status, p->url);
    else printf("broken error %s: %s\n", p->url, p->error ? p->error : "?");
  } else if (p->err < 0) {
    c->parse_failed++;
    printf("unparsed %s: %s\n", p->url, p->error ? p->error : "?");
  } else {
    c->ok++;
    if (!c->quiet)
      printf("page %d %s \"%s\" (%zu link%s)\n", p->status, p->url, p->title ? p->title : "",
             p->nlinks + p->offhost, p->nlinks + p->offhost == 1 ? "" : "s");
  }
  for (size_t i = 0; i < p->nlinks; i++) {
    admit(c, p->links[i]);
    p->links[i] = NULL;
  }
  p->nlinks = 0;
  page_free(p);
}

static int start_fetch(crawl *c) {
  page *p = calloc(1, sizeof *p);
  if (!p) return BR_ENOMEM;
  p->c = c;
  p->url = frontier_pop(c);
  br_spawn_opts so = {.name = "fetch"};
  int rc = br_group_spawn(c->fetchers, fetch_task, p, &so);
  if (rc < 0) {
    page_free(p);
    return rc;
  }
  if (++c->live > c->max_inflight) c->max_inflight = c->live;
  return 0;
}

static double pct(int64_t part, int64_t whole) {
  return whole > 0 ? 100.0 * (double)part / (double)whole : 0.0;
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

/* The two halves' verdicts, from the accounting. The fetch side: the time
 * the fetching tasks ran, against the time their requests took. The parse
 * side: the CPU time of the parse jobs against their wall time; time a job
 * spent runnable but waiting for a CPU (a busy machine) counts as wanting
 * CPU, not as waiting for I/O. */
static void print_verdicts(const crawl *c, int64_t wall) {
  if (c->fetch_wall > 0) {
    double f = pct(c->fetch_run, c->fetch_wall);
    printf("fetch: %.1f%% of wall time on CPU (the loop thread was %.0f%% busy) -> %s\n", f,
           pct(c->loop_cpu, wall), f < 50 ? "I/O-bound: coroutines" : "CPU-bound: the pool");
  }
  if (c->parse_wall > 0) {
    double p = pct(c->parse_cpu, c->parse_wall), q = pct(c->parse_queued, c->parse_wall);
    printf("parse: %.1f%% on CPU", p);
    if (q >= 5) printf(" and %.0f%% waiting for one (the machine is busy)", q);
    printf(", %.2f s CPU on %d thread%s -> %s\n", (double)c->parse_cpu / 1e9, c->threads,
           c->threads == 1 ? "" : "s", p + q < 50 ? "I/O-bound: coroutines" : "CPU-bound: the pool");
  }
}

/* How error messages name the program (`braid crawl` sets its own name),
 * and whether the crawl already said what went wrong (the command line then
 * does not repeat it as a bare error code). */
static const char *prog_name = "scraper";
static bool error_reported;

static int crawl_run(crawl *c, const char *start_url) {
  int rc;
  c->seen_cap = 64;
  while (c->seen_cap < 2 * c->limit) c->seen_cap *= 2;
  c->seen = calloc(c->seen_cap, sizeof *c->seen);
  c->front_cap = c->limit + 1;
  c->frontier = calloc(c->front_cap, sizeof *c->frontier);
  if (!c->seen || !c->frontier) return BR_ENOMEM;

  br_http_opts ho = {.max_total = c->concurrency, .max_per_host = c->concurrency,
                     .max_body = 16 << 20, .user_agent = "braid-scraper"};
  if ((rc = br_http_session_new(&c->http, &ho)) < 0) return rc;
  if ((rc = br_pool_new(&c->pool, c->threads, NULL)) < 0) return rc;
  c->threads = br_pool_size(c->pool);
  if ((rc = br_sem_new(&c->inflight, (unsigned)c->concurrency)) < 0 ||
      (rc = br_chan_new(&c->done, sizeof(page *), (size_t)c->concurrency)) < 0 ||
      (rc = br_group_new(&c->fetchers)) < 0)
    return rc;

  char *first = resolve(start_url, start_url);
  if (!first || origin_of(first, &c->start) < 0) {
    free(first);
    fprintf(stderr, "%s: not an http(s) URL: '%s'\n", prog_name, start_url);
    error_reported = true;
    return BR_EINVAL;
  }
  admit(c, first);

  int64_t t0 = br_now(), cpu0 = thread_cpu_ns();
  rc = 0;
  while (c->front_len || c->live) {
    page *p;
    if (c->front_len) {
      /* Room for one more fetch? While we wait, finished fetchers queue
       * their pages in the channel (there is a slot for each). */
      if ((rc = br_sem_acquire(c->inflight)) < 0) break;
      /* The page whose fetcher just made room is in the channel already:
       * take it first, so at most -c pages are ever alive. */
      while (br_chan_try_recv(c->done, &p) == 0) finish_page(c, p);
      if ((rc = start_fetch(c)) < 0) {
        br_sem_release(c->inflight);
        break;
      }
    } else {
      if ((rc = br_chan_recv(c->done, &p)) < 0) break;
      finish_page(c, p);
    }
    while (br_chan_try_recv(c->done, &p) == 0) finish_page(c, p);
  }
  int64_t wall = br_now() - t0;
  c->loop_cpu = thread_cpu_ns() - cpu0;

  /* Cancelled (Ctrl-C) or failed: stop the fetchers, then collect what they
   * handed back. Otherwise they have all finished already. */
  if (rc < 0) br_group_cancel(c->fetchers);
  br_group_wait(c->fetchers);
  page *p;
  while (br_chan_try_recv(c->done, &p) == 0) finish_page(c, p);

  double s = (double)wall / 1e9;
  printf("crawled %zu URL%s in %.2f s (%.0f pages/s): %zu ok, %zu broken", c->pages,
         c->pages == 1 ? "" : "s", s, s > 0 ? (double)c->pages / s : 0.0, c->ok, c->broken);
  if (c->parse_failed) printf(", %zu unparsable", c->parse_failed);
  if (c->cancelled) printf(", %zu cancelled in flight", c->cancelled);
  printf("; %zu links, %zu off-host not followed\n", c->links, c->offhost);
  print_verdicts(c, wall);
  if (c->json)
    printf("{\"impl\":\"braid\",\"pages\":%zu,\"ok\":%zu,\"broken\":%zu,\"unparsed\":%zu,"
           "\"offhost\":%zu,\"links\":%zu,\"elapsed_s\":%.6f,\"pages_per_s\":%.1f,"
           "\"fetch_cpu_share\":%.4f,\"parse_cpu_share\":%.4f,\"parse_cpu_s\":%.6f,"
           "\"parse_queued_share\":%.4f,\"loop_cpu_share\":%.4f,"
           "\"fetch_run_s\":%.6f,\"threads\":%d,\"concurrency\":%d,\"max_inflight\":%zu,"
           "\"limit\":%zu,\"rss_kib\":%ld}\n",
           c->pages, c->ok, c->broken, c->parse_failed, c->offhost, c->links, s,
           s > 0 ? (double)c->pages / s : 0.0, pct(c->fetch_run, c->fetch_wall) / 100,
           pct(c->parse_cpu, c->parse_wall) / 100, (double)c->parse_cpu / 1e9,
           pct(c->parse_queued, c->parse_wall) / 100, pct(c->loop_cpu, wall) / 100,
           (double)c->fetch_run / 1e9, c->threads, c->concurrency, c->max_inflight, c->limit,
           vmhwm_kib());
  return rc;
}

static void crawl_free(crawl *c) {
  br_group_free(c->fetchers);
  br_chan_free(c->done);
  br_sem_free(c->inflight);
  br_pool_free(c->pool);
  br_http_session_free(c->http);
  while (c->front_len) free(frontier_pop(c));
  free(c->frontier);
  free(c->seen);
}

/* ------------------------------------------------------------------------ */
/* --parse-files DIR: the parse half alone                                   */

typedef struct file_list {
  char **paths;
  size_t n, cap;
} file_list;

/* The directories on the way down from DIR, so that a symbolic link back
 * up the tree is not walked for ever. */
typedef struct dir_seen {
  dev_t dev;
  ino_t ino;
  const struct dir_seen *up;
} dir_seen;

static void find_html_in(const char *dir, file_list *l, const dir_seen *up) {
  DIR *d = opendir(dir);
  struct dirent *e;
  if (!d) return;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *path = br_strdupf("%s/%s", dir, e->d_name);
    struct stat st;
    if (!path || stat(path, &st) != 0) {
      free(path);
      continue;
    }
    size_t len = strlen(e->d_name);
    if (S_ISDIR(st.st_mode)) {
      bool loop = false;
      for (const dir_seen *s = up; s && !loop; s = s->up) loop = s->dev == st.st_dev && s->ino == st.st_ino;
      dir_seen here = {st.st_dev, st.st_ino, up};
      if (!loop) find_html_in(path, l, &here);
      free(path);
    } else if (S_ISREG(st.st_mode) && len > 5 && strcmp(e->d_name + len - 5, ".html") == 0) {
      /* (Only regular files: a FIFO would never end, a device not be a page.) */
      if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->paths = realloc(l->paths, l->cap * sizeof *l->paths);
        if (!l->paths) abort();
      }
      l->paths[l->n++] = path;
    } else {
      free(path);
    }
  }
  closedir(d);
}

static void find_html(const char *dir, file_list *l) {
  struct stat st;
  dir_seen top = {0, 0, NULL};
  if (stat(dir, &st) == 0) top = (dir_seen){st.st_dev, st.st_ino, NULL};
  find_html_in(dir, l, &top);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) {
    buf[n] = '\0';
    *len = (size_t)n;
  }
  return buf;
}

static int parse_files(crawl *c, const char *dir) {
  file_list l = {0};
  DIR *top = opendir(dir);
  if (!top) {
    int e = errno;
    fprintf(stderr, "%s: cannot read %s: %s\n", prog_name, dir, strerror(e));
    error_reported = true;
    return -e;
  }
  closedir(top);
  find_html(dir, &l);
  if (!l.n) {
    fprintf(stderr, "%s: no .html files under %s\n", prog_name, dir);
    error_reported = true;
    return BR_ENOENT;
  }
  int rc = br_pool_new(&c->pool, c->threads, NULL);
  if (rc < 0) return rc;
  c->threads = br_pool_size(c->pool);
  if (origin_of("http://localhost/", &c->start) < 0) return BR_EINVAL;
  page **pages = calloc(l.n, sizeof *pages);
  char **bodies = calloc(l.n, sizeof *bodies);
  br_future **futs = calloc(l.n, sizeof *futs);
  if (!pages || !bodies || !futs) return BR_ENOMEM;
  for (size_t i = 0; i < l.n; i++) {
    pages[i] = calloc(1, sizeof **pages);
    if (!pages[i]) return BR_ENOMEM;
    pages[i]->c = c;
    pages[i]->url = br_strdupf("http://localhost/%s", l.paths[i] + strlen(dir));
    bodies[i] = read_file(l.paths[i], &pages[i]->body_len);
    pages[i]->body = bodies[i] ? bodies[i] : "";
    pages[i]->base = pages[i]->url;
    c->parse_bytes += (int64_t)pages[i]->body_len;
  }

  /* All the files are in memory: time only the parsing. */
  int64_t t0 = br_now();
  size_t submitted = 0;
  for (; submitted < l.n; submitted++)
    if ((rc = br_pool_submit(c->pool, &futs[submitted], parse_job, pages[submitted])) < 0) break;
  for (size_t i = 0; i < submitted; i++) {
    if (br_await(futs[i], NULL) < 0) c->parse_failed++;
    br_future_unref(futs[i]);
  }
  int64_t wall = br_now() - t0;

  for (size_t i = 0; i < l.n; i++) {
    c->parse_cpu += pages[i]->parse_cpu;
    c->parse_wall += pages[i]->parse_wall;
    c->parse_queued += pages[i]->parse_queued;
    c->links += pages[i]->nlinks + pages[i]->offhost;
    free(bodies[i]);
    page_free(pages[i]);
    free(l.paths[i]);
  }
  double s = (double)wall / 1e9;
  printf("parsed %zu files (%.1f MB) in %.3f s on %d thread%s: %.0f pages/s, %zu links\n", l.n,
         (double)c->parse_bytes / 1e6, s, c->threads, c->threads == 1 ? "" : "s",
         s > 0 ? (double)l.n / s : 0.0, c->links);
  print_verdicts(c, wall);
  if (c->json)
    printf("{\"impl\":\"braid\",\"mode\":\"parse\",\"files\":%zu,\"bytes\":%lld,\"elapsed_s\":%.6f,"
           "\"pages_per_s\":%.1f,\"parse_cpu_s\":%.6f,\"parse_cpu_share\":%.4f,\"threads\":%d,"
           "\"failed\":%zu,\"rss_kib\":%ld}\n",
           l.n, (long long)c->parse_bytes, s, s > 0 ? (double)l.n / s : 0.0,
           (double)c->parse_cpu / 1e9, pct(c->parse_cpu, c->parse_wall) / 100, c->threads,
           c->parse_failed, vmhwm_kib());
  free(pages);
  free(bodies);
  free(futs);
  free(l.paths);
  br_pool_free(c->pool);
  c->pool = NULL;
  return c->parse_failed ? BR_EIO : 0;
}

/* ------------------------------------------------------------------------ */
/* The demo site: with no URL, the scraper crawls pages it serves itself     */

enum { DEMO_PAGES = 150 };

/* demo_page: the HTML of path, or NULL for 404. Page i links to i+1 and
 * 7i+3 (mod DEMO_PAGES), to another host, and page 17 to a missing page. */
static char *demo_page(const char *path) {
  int i;
  char tail;
  if (strcmp(path, "/") == 0)
    return br_strdupf("<!DOCTYPE html><html><head><title>Demo</title></head><body>"
                      "<a href=\"/p/0.html\">start</a></body></html>\n");
  if (sscanf(path, "/p/%d.htm%c", &i, &tail) != 2 || tail != 'l' || i < 0 || i >= DEMO_PAGES)
    return NULL;
  return br_strdupf("<!DOCTYPE html><html><head><title>Demo page %d</title></head><body>"
                    "<h1>Demo page %d</h1><p>Some <b>text</b> and links: "
                    "<a href=\"/p/%d.html\">next</a>, <a href=\"%d.html#x\">another</a>, "
                    "<a href=\"https://example.invalid/\">elsewhere</a>%s</p></body></html>\n",
                    i, i, (i + 1) % DEMO_PAGES, (7 * i + 3) % DEMO_PAGES,
                    i == 17 ? ", <a href=\"/missing.html\">gone</a>" : "");
}

/* One keep-alive connection: read a request head, answer, repeat. */
static void *demo_conn(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[8192];
  size_t have = 0;
  for (;;) {
    char *end;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
      if (have == sizeof buf) goto out;
      ssize_t r = br_read(fd, buf + have, sizeof buf - have, br_deadline_ms(10000));
      if (r <= 0) goto out;
      have += (size_t)r;
    }
    char path[1024] = "";
    if (sscanf(buf, "GET %1023s HTTP/1.1", path) != 1) goto out;
    char *body = demo_page(path);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %s\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n\r\n",
                      body ? "200 OK" : "404 Not Found", body ? strlen(body) : (size_t)0);
    int rc = (int)br_write(fd, head, (size_t)hn, br_deadline_ms(10000));
    if (rc >= 0 && body) rc = (int)br_write(fd, body, strlen(body), br_deadline_ms(10000));
    free(body);
    if (rc < 0) goto out;
    size_t used = (size_t)(end + 4 - buf);
    memmove(buf, buf + used, have - used);
    have -= used;
  }
out:
  br_close(fd);
  return NULL;
}

typedef struct demo_server {
  int lfd;
  br_group *conns;
} demo_server;

static void *demo_accept(void *arg) {
  demo_server *d = arg;
  for (;;) {
    int fd = br_accept(d->lfd, NULL, BR_NEVER);
    if (fd < 0) break; /* cancelled at the end of the crawl */
    br_spawn_opts so = {.name = "demo-conn"};
    if (br_group_spawn(d->conns, demo_conn, (void *)(intptr_t)fd, &so) < 0) br_close(fd);
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

typedef struct args {
  crawl c;
  const char *url, *parse_dir;
} args;

static void *scraper_main(void *arg) {
  args *a = arg;
  crawl *c = &a->c;
  int rc;
  if (a->parse_dir) {
    rc = parse_files(c, a->parse_dir);
    return rc < 0 ? br_fail(rc, "parsing %s", a->parse_dir) : NULL;
  }
  demo_server d = {.lfd = -1};
  br_task *server = NULL;
  char demo_url[64];
  const char *url = a->url;
  if (!url) {
    br_addr local;
    if ((d.lfd = br_tcp_listen("127.0.0.1", 0, 128, 0)) < 0 || br_sock_local(d.lfd, &local) < 0 ||
        br_group_new(&d.conns) < 0)
      return br_fail(d.lfd < 0 ? d.lfd : BR_EIO, "starting the demo site");
    snprintf(demo_url, sizeof demo_url, "http://127.0.0.1:%d/", br_addr_port(&local));
    br_spawn_opts so = {.name = "demo-accept"};
    if ((rc = br_spawn(&server, demo_accept, &d, &so)) < 0) return br_fail(rc, "demo site");
    printf("demo: crawling a %d-page site served by this program at %s\n", DEMO_PAGES, demo_url);
    url = demo_url;
  }
  rc = crawl_run(c, url);
  crawl_free(c);
  if (server) {
    br_task_close(server);
    br_group_free(d.conns);
    br_close(d.lfd);
  }
  return rc < 0 ? br_fail(rc, "crawling %s", url) : NULL;
}

static void usage(FILE *f, const char *prog) {
  fprintf(f,
          "usage: %s [-c N] [-n LIMIT] [-t THREADS] [-q] [--json] [--timeout MS] [URL]\n"
          "       %s --parse-files DIR [-t THREADS] [--json]\n"
          "Crawl URL's site (scheme, host and port): fetch concurrently with braid-http,\n"
          "parse on the CPU pool with libxml2, follow links on the same site up to LIMIT\n"
          "URLs; print each page's title and each broken link, then whether fetching and\n"
          "parsing were I/O- or CPU-bound. Without URL: crawl a demo site served locally.\n"
          "  -c N           fetches in flight (default 32)\n"
          "  -n LIMIT       fetch at most LIMIT URLs (default 1000)\n"
          "  -t THREADS     parse threads, 1 to 1024 (default, or 0: one per CPU)\n"
          "  -q             no line per page (broken ones are still printed)\n"
          "  --json         end with one line of figures in JSON\n"
          "  --timeout MS   per fetch (default 30000)\n"
          "  --parse-files DIR  parse every .html file under DIR (no network)\n",
          prog, prog);
}

/* scraper_cli: the whole program; `braid crawl` runs it too
 * (tools/braid/crawl.c). Exit status: 0, 1 when the crawl failed, 2 for bad
 * usage, 130 after Ctrl-C (the summary printed). */
int scraper_cli(int argc, char **argv);
int scraper_cli(int argc, char **argv) {
  const char *prog = argc > 0 ? argv[0] : "scraper";
  prog_name = prog;
  static args a;
  crawl *c = &a.c;
  c->limit = 1000;
  c->concurrency = 32;
  c->threads = BR_CPUS;
  c->timeout_ms = 30000;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    bool more = i + 1 < argc;
    long long v = 0;
    if (strcmp(s, "-c") == 0 || strcmp(s, "-n") == 0 || strcmp(s, "-t") == 0 ||
        strcmp(s, "--timeout") == 0) {
      /* A whole number in range, or a usage error naming the option. */
      /* -t: 0 is "one per CPU", the pool's own default. */
      long long lo = strcmp(s, "-t") == 0 ? 0 : 1,
                hi = strcmp(s, "--timeout") == 0 ? 86400000 : strcmp(s, "-t") == 0 ? BR_POOL_MAX_THREADS : 1000000000;
      char *end = NULL;
      errno = 0;
      if (more) v = strtoll(argv[i + 1], &end, 10);
      if (!more || errno || end == argv[i + 1] || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s wants a whole number from %lld to %lld, not '%s'\n", prog, s, lo,
                hi, more ? argv[i + 1] : "");
        return 2;
      }
      i++;
    }
    if (strcmp(s, "-c") == 0) c->concurrency = (int)v;
    else if (strcmp(s, "-n") == 0) c->limit = (size_t)v;
    else if (strcmp(s, "-t") == 0) c->threads = (int)v;
    else if (strcmp(s, "--timeout") == 0) c->timeout_ms = v;
    else if (strcmp(s, "--parse-files") == 0 && more) a.parse_dir = argv[++i];
    else if (strcmp(s, "-q") == 0) c->quiet = true;
    else if (strcmp(s, "--json") == 0) c->json = true;
    else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
      usage(stdout, prog);
      return 0;
    } else if (s[0] != '-' && !a.url) a.url = s;
    else {
      if (s[0] != '-') fprintf(stderr, "%s: one URL only, got '%s' and '%s'", prog, a.url, s);
      else if (strcmp(s, "--parse-files") == 0) fprintf(stderr, "%s: --parse-files needs a directory", prog);
      else fprintf(stderr, "%s: unknown option '%s'", prog, s);
      fprintf(stderr, " (see '%s --help')\n", prog);
      return 2;
    }
  }
  if (c->concurrency < 1 || c->limit < 1 || c->threads < 0) {
    usage(stderr, prog);
    return 2;
  }
  /* libxml2 must be initialised once before threads use it. */
  xmlInitParser();
  /* br_run_result: the failure's message is ours to print, in our words. */
  br_result res;
  int rc = br_run_result(&res, scraper_main, &a, NULL);
  xmlCleanupParser();
  if (rc == BR_ECANCELED) {
    /* Ctrl-C: the summary of what was crawled is printed; exit as a shell
     * reports a program that SIGINT ended. */
    fprintf(stderr, "%s: interrupted\n", prog);
    br_results_free(&res, 1);
    return 130;
  }
  if (rc < 0 && !error_reported) {
    if (res.msg) fprintf(stderr, "%s: %s: %s\n", prog, res.msg, br_strerror(rc));
    else fprintf(stderr, "%s: %s\n", prog, br_strerror(rc));
  }
  br_results_free(&res, 1);
  if (rc == 0 && !a.parse_dir && c->ok == 0) {
    /* Broken links are findings; a start page that could not be fetched
     * is a failed crawl. */
    fprintf(stderr, "%s: nothing could be fetched from %s\n", prog, a.url ? a.url : "the demo site");
    return 1;
  }
  return rc < 0 ? 1 : 0;
}

#ifndef SCRAPER_NO_MAIN
int main(int argc, char **argv) {
  return scraper_cli(argc, argv);
}
#endif
