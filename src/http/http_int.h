/* SPDX-License-Identifier: MIT */
/* braid-http — internal structures shared by the files of src/http.
 *
 * Threading: everything here belongs to the session's loop thread. There is
 * no lock anywhere in braid-http: every curl call and every callback curl
 * makes runs on that thread, inside one of three kinds of task:
 *  - the requesting task (br_http_request): adds its easy handle, waits on
 *    its request's event, delivers streamed body pieces, removes the handle;
 *  - one watcher task per socket curl asks us to watch (driver.c): waits
 *    with br_wait_fd and calls curl_multi_socket_action;
 *  - the session's timer task (driver.c): sleeps until curl's timeout and
 *    calls curl_multi_socket_action(CURL_SOCKET_TIMEOUT).
 * No curl call is ever made from inside a curl callback (the callbacks only
 * record state, spawn watchers and set events), and no task ever suspends
 * while inside curl (our callbacks never block; the user's body callback runs
 * in the requesting task, outside curl), so curl is never re-entered.
 *
 * Memory reachable from curl callbacks (br__http_req, br__http_sock) is on the
 * heap, never on a task's stack: compact tasks move their stacks while they
 * are suspended.
 */
#ifndef BRAID_HTTP_INT_H
#define BRAID_HTTP_INT_H

#include <braid.h>
#include <braid/http.h>
#include <curl/curl.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct br__http_hub br__http_hub;
typedef struct br__http_host br__http_host;

/* One socket curl asked us to watch, or one our open-socket callback made.
 * References: one held by curl's assignment (curl_multi_assign, dropped on
 * CURL_POLL_REMOVE or when the multi handle is cleaned up), one by the
 * watcher task while it runs, and one by hub->byfd for a socket we opened,
 * until our close-socket callback closes it (so a kept-alive connection
 * keeps its record, and braid's registration, between transfers). */
typedef struct br__http_sock {
  struct br__http_sock *prev, *next; /* in hub->socks */
  br__http_hub *hub;
  int fd;
  int want;          /* BR_READABLE | BR_WRITABLE, as curl last asked */
  int wait_want;     /* what the watcher waits for while waiting */
  bool assigned;     /* curl still knows it */
  bool watching;     /* a watcher task runs for it */
  bool waiting;      /* the watcher is inside br_wait_fd */
  bool ours;         /* opened by br__http_opensocket, not closed yet */
  bool closed;       /* closed by br__http_closesocket */
  int refs;
} br__http_sock;

/* The curl side of a session: one multi handle on one loop. It outlives the
 * session while its driver tasks still run (refs: the session's, plus one per
 * live driver task). */
struct br__http_hub {
  CURLM *multi;
  br_loop *loop;
  int refs;
  bool closing;           /* the session is being freed: drivers exit */
  int active;             /* easy handles added and not yet removed */
  br__http_sock *socks;   /* every socket record still alive */
  br__http_sock **byfd;   /* the sockets we opened, by descriptor */
  size_t nbyfd;
  /* The timer task. */
  bool timer_alive;
  br_event *timer_ev;     /* set when the timer task must look again */
  int64_t timer_deadline; /* br_now() ns at which curl wants a timeout call */
  int64_t timer_sleep;    /* the deadline the timer task sleeps to; INT64_MIN
                           * while it runs (it reads timer_deadline itself) */
  uint64_t *connections;  /* the session's counter, for opensocket */
  int spawn_error;        /* a watcher could not be spawned (code) */
};

/* Politeness state of one scheme://host:port. */
struct br__http_host {
  struct br__http_host *next;
  char *key;
  br_sem *slots;      /* max_per_host */
  int64_t next_start; /* rate limit: earliest start of the next request */
};

/* What an easy handle was set up for, apart from what changes with every
 * request (URL, timeouts, header list, body, callback data): a handle set up
 * for the same again is given only those (curl keeps the rest), not reset
 * and set up from scratch. */
typedef struct br__http_prof {
  bool valid;            /* the handle has been set up */
  unsigned char method;  /* 0 GET, 1 HEAD, 2 POST, 3 another (CUSTOMREQUEST) */
  bool body;             /* POSTFIELDS set */
  bool h2, timeout;
  unsigned flags;
  int64_t idle_ms, max_body;
} br__http_prof;

typedef struct br__http_easy {
  CURL *e;
  br__http_prof prof;
} br__http_easy;

/* An origin as written in a URL ("http://Example.com:8080"), and its host. */
#define BR__HTTP_ORIGINS 8

/* The most bytes of headers one response may send (every line, folded or
 * not, and those of any interim 1xx responses before it): a server that
 * keeps sending header lines, or interim responses, is cut off here. nginx
 * takes 8-32 KiB of request headers, libcurl 8 accepts 300 KB of response
 * headers. */
#define BR__HTTP_MAX_HEADERS (256 * 1024)
typedef struct br__http_origin {
  char text[120];
  size_t len; /* 0: unused */
  br__http_host *host;
} br__http_origin;

struct br_http_session {
  br_http_opts opts;        /* resolved defaults (strings copied) */
  char **strs;              /* copies owned by the session */
  size_t nstrs;
  br__http_hub *hub;        /* created on first use, on the session's loop */
  br_loop *loop;
  br_sem *total;            /* max_total */
  br__http_host **hosts;    /* hash table of hosts */
  size_t nhosts_buckets;
  double budget;            /* retry tokens */
  double budget_max;
  uint64_t rng;             /* jitter */
  int calls;                /* br_http_request calls inside this session */
  br__http_origin origins[BR__HTTP_ORIGINS]; /* recent origins, to skip parsing */
  unsigned origin_next;
  br__http_easy easy_free[16]; /* reusable easy handles */
  size_t neasy_free;
  struct br__http_req *req_free[16]; /* finished request records, for reuse */
  size_t nreq_free;
  br_http_stats stats;
};

/* One attempt in flight: what the curl callbacks fill in and the requesting
 * task reads. Heap-allocated (see the note at the top). */
typedef struct br__http_req {
  br__http_hub *hub;
  CURL *easy;
  br__http_prof prof;     /* what easy is set up for */
  br_event *ev;           /* set on completion and when streamed data waits */
  bool added;             /* in the multi handle */
  bool done;
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  /* Limits and mode for this attempt. */
  int64_t max_body;       /* < 0: none */
  bool stream;            /* body goes to the requesting task in pieces */
  bool discard_retryable; /* drop bodies of responses we will retry */
  bool follow;            /* redirects are followed (by request.c, hop by hop) */
  bool redirecting;       /* this response is a redirect that will be followed */
  bool too_big;
  bool headers_too_big;   /* the attempt's headers (1xx responses' included)
                           * passed BR__HTTP_MAX_HEADERS */
  bool discarding;        /* this response's body is being dropped */
  bool paused;
  /* The response being received. */
  long status;
  char *hdr;              /* raw header lines of the latest response */
  size_t hdr_len, hdr_cap;
  size_t hdr_total;       /* header bytes of every response of this attempt */
  char *body;             /* collected body, or pending streamed bytes */
  size_t body_len, body_cap;
  uint64_t received;      /* body bytes accepted by the write callback */
  uint64_t dropped;       /* body bytes of discarded responses (redirects,
                           * retried ones) in this attempt */
} br__http_req;

/* driver.c */
int br__http_hub_get(br_http_session *s, br__http_hub **out);
void br__http_hub_release(br__http_hub *h);
int br__http_hub_add(br__http_hub *h, br__http_req *r);
void br__http_hub_remove(br__http_hub *h, br__http_req *r);
/* Socket open/close callbacks set on every easy handle. */
curl_socket_t br__http_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr);
int br__http_closesocket(void *clientp, curl_socket_t fd);

/* session.c */
int br__http_host_get(br_http_session *s, const char *key, br__http_host **out);
double br__http_random(br_http_session *s); /* uniform in [0, 1) */

/* request.c */
int br__http_map_curl(CURLcode rc, CURL *easy, const br__http_req *r);
void br__http_req_free(br__http_req *r); /* and its event, buffers */

#endif
