/* SPDX-License-Identifier: MIT */
/* braid/http.h — an HTTP client for braid tasks (library braid-http).
 *
 * A call such as br_http_get() suspends only the calling task: the transfer
 * runs on libcurl's multi-socket interface, driven by the task's own loop
 * (its sockets are waited on with br_wait_fd, its timers are braid timers;
 * no helper thread, no curl_multi_poll). Thousands of requests can be in
 * flight on one loop, and HTTP/2 requests to one host share a connection.
 *
 * The session (aiohttp's ClientSession) holds the defaults and the
 * connection pool: create one, make every request of a program through it,
 * free it at the end. It is polite by default: at most 6 requests in flight
 * per host and 100 in total, retries with exponential backoff and jitter on
 * connection errors, 408, 429 and 5xx (honouring Retry-After), within a
 * session-wide retry budget. Every default is an option below.
 *
 * Link with braid-http (pkg-config braid-http, or the CMake target
 * braid::http). Include <braid/http.h> after or instead of <braid.h>.
 *
 * Conventions (braid.h's, plus):
 *  - Every call that can fail returns 0 or a negative braid code
 *    (braid/errno.h). Arguments come in the order receiver, out-parameters,
 *    inputs, options (NULL for defaults), deadline.
 *  - In the option structs a zero field means "the default"; BR_HTTP_OFF
 *    (-1) turns a limit or a timeout off.
 *  - The requesting calls are task-only (BR_ENOTTASK from a plain thread),
 *    take an absolute deadline (br_now() ns, BR_NEVER for none) and honour
 *    the enclosing cancel scope's deadline. Cancelling the task aborts its
 *    transfer at once: the call returns BR_ECANCELED and no descriptor or
 *    memory is left behind.
 *  - A session belongs to one loop: the loop running when it is created, or
 *    the first loop that uses it when it is created from a plain thread.
 *    Calls from another thread return BR_EPERM. One session per loop for
 *    programs with several loops (br_run_loops).
 *
 * Errors, by cause (the response's `error` text names the details):
 *   BR_ENOENT       the host name could not be resolved (as br_resolve)
 *   BR_ECONNREFUSED the connection was refused or the host is unreachable
 *   BR_ECONNRESET   the server closed or reset the connection before a
 *                   complete response
 *   BR_ETLS         TLS handshake or certificate verification failed
 *   BR_ETIMEDOUT    a timeout (connect, idle, total) or the deadline passed
 *   BR_ECANCELED    the calling task was cancelled
 *   BR_EOVERFLOW    the body is larger than max_body
 *   BR_EIO          a malformed or truncated response (headers over 256 KiB
 *                   in all, interim 1xx responses' included, count as
 *                   one), or another transfer error
 *   BR_EHTTP        the status is >= 400 and BR_HTTP_RAISE was asked for
 *   BR_EINVAL       a bad URL or option; BR_ENOMEM.
 */
#ifndef BRAID_HTTP_H
#define BRAID_HTTP_H

#include <braid.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An option value that turns a timeout, a limit or retries off. */
#define BR_HTTP_OFF (-1)

typedef struct br_http_session br_http_session;

/* One header line, split. Both strings are NUL-terminated. */
typedef struct br_http_header {
  const char *name;
  const char *value;
} br_http_header;

/* Session defaults. Zero-initialise and set what you need; NULL for all
 * defaults. Every timeout and limit can be overridden per request. */
typedef struct br_http_opts {
  int max_total;           /* requests in flight in total (0: 100) */
  int max_per_host;        /* requests in flight per scheme://host:port
                              (0: 6); a redirected request counts for the
                              host of the hop it is at */
  double per_host_rps;     /* at most this many request starts per second
                              per host, each redirect followed being one
                              (0: no limit) */
  int64_t connect_timeout_ms; /* per attempt (0: 10 000) */
  int64_t timeout_ms;      /* whole call, retries included (0: 300 000) */
  int64_t idle_timeout_ms; /* abort when no byte arrives for this long
                              (0: 30 000; rounded up to whole seconds) */
  int64_t max_body;        /* bytes of body accepted (0: 64 MiB), also of
                              a body braid-http drops (a redirect's) */
  int retries;             /* retries per request (0: 2; BR_HTTP_OFF: none) */
  int64_t backoff_ms;      /* first backoff; doubles each retry, with
                              jitter (0: 100) */
  int64_t max_backoff_ms;  /* cap of one backoff or Retry-After wait
                              (0: 30 000; BR_HTTP_OFF: no cap); a longer
                              Retry-After gives up */
  double retry_budget;     /* retries allowed per first attempt, session-wide
                              (0: 0.2, i.e. 20 %, plus 10 in reserve) */
  int max_redirects;       /* redirects followed (0: 10; BR_HTTP_OFF: none) */
  const char *user_agent;  /* copied (NULL: "braid-http/<version>") */
  const br_http_header *headers; /* sent with every request; copied */
  size_t nheaders;
  bool insecure;           /* do not verify TLS certificates */
  const char *ca_file;     /* CA bundle (NULL: the system's); copied */
} br_http_opts;

/* Flags of a request (br_http_request_opts.flags). */
enum {
  BR_HTTP_RAISE = 1 << 0,       /* a final status >= 400 fails the call
                                   with BR_EHTTP (raise_for_status) */
  BR_HTTP_NO_REDIRECTS = 1 << 1, /* do not follow redirects */
  BR_HTTP_TO_FD = 1 << 2,       /* write the body to body_fd */
  BR_HTTP_HTTP1 = 1 << 3        /* HTTP/1.1 only (default: HTTP/2 over
                                   TLS when the server offers it) */
};

/* Called with each piece of the body, in the requesting task, in order.
 * It may block (e.g. br_write): the transfer is paused meanwhile once a
 * little data has queued up. Return 0 to go on, or a negative code to abort
 * the transfer: the request then fails with that code. data is valid only
 * during the call. */
typedef int (*br_http_body_fn)(void *ud, const void *data, size_t n);

/* Per-request options; NULL for the session's defaults. */
typedef struct br_http_request_opts {
  const br_http_header *headers; /* extra headers (after the session's) */
  size_t nheaders;
  const void *body;        /* request body, borrowed for the call */
  size_t body_len;
  unsigned flags;          /* BR_HTTP_* */
  /* Streaming: with on_body set, or BR_HTTP_TO_FD, the body is delivered
   * as it arrives instead of being collected into the response (its
   * `body` stays NULL; body_len counts the bytes delivered). Only the final
   * attempt's body is delivered: while a retry is still possible, the body
   * of a retryable response (408, 429, 5xx) is dropped, and once any byte
   * has been delivered the request is not retried (a reset mid-body fails
   * the call with BR_ECONNRESET). */
  br_http_body_fn on_body;
  void *body_ud;
  int body_fd;             /* with BR_HTTP_TO_FD: written with br_write */
  /* 0: the session's value; BR_HTTP_OFF: off. */
  int64_t connect_timeout_ms;
  int64_t timeout_ms;
  int64_t idle_timeout_ms;
  int64_t max_body;
  int retries;
} br_http_request_opts;

/* The outcome of one call. The call fills it in whatever happens (zeroed
 * first); release it with br_http_response_free(). */
typedef struct br_http_response {
  int err;                 /* the call's return value: 0 or a code */
  int status;              /* final HTTP status, 0 if none arrived */
  char *body;              /* the body, NUL-terminated (the NUL is not in
                              body_len); NULL when streamed or on failure */
  size_t body_len;         /* bytes of body received (or delivered) */
  br_http_header *headers; /* the final response's headers, in order */
  size_t nheaders;
  const char *url;         /* the URL after redirects ("" if none) */
  int attempts;            /* 1 + retries made (a redirect followed is not
                              a retry); 0 if the call ended (cancelled,
                              deadline) before the first transfer had a
                              connection slot */
  int redirects;           /* redirects followed */
  int64_t elapsed_ns;      /* the whole call, backoffs included */
  char error[256];         /* why it failed, one line ("" on success) */
  /* private: do not touch; may change in any release */
  struct {
    char *mem;             /* one block holding headers and url */
  } br__private;
} br_http_response;

/* ------------------------------------------------------------------------ */
/* Sessions                                                                  */

/* br_http_session_new: create a session with the given defaults (opts may be
 * NULL; it is copied, strings included) and store it in *out (NULL on
 * failure). No connection is made yet. Errors: BR_EINVAL (a negative limit
 * other than BR_HTTP_OFF, max_total or max_per_host < 0), BR_ENOMEM, BR_EIO
 * (libcurl failed to initialise). Any thread; see the header's note on
 * which loop the session belongs to. */
int br_http_session_new(br_http_session **out, const br_http_opts *opts);

/* br_http_session_free: close the session's idle connections and free it.
 * NULL is a no-op returning 0. Requests still in flight: BR_EBUSY (cancel
 * or wait for their tasks first). BR_EPERM from a thread other than the
 * session's loop thread. Call it from a task of that loop or from that
 * thread outside the loop. */
int br_http_session_free(br_http_session *s);

typedef struct br_http_stats {
  uint64_t requests;       /* calls made */
  uint64_t attempts;       /* transfers started (requests + retries +
                              redirects followed) */
  uint64_t retries;        /* retries made */
  uint64_t budget_refusals;/* retries refused because the budget ran out */
  uint64_t failures;       /* calls that returned an error */
  uint64_t connections;    /* sockets opened */
  uint64_t bytes;          /* body bytes received */
  int in_flight;           /* transfers running now */
  int max_in_flight;       /* the most seen at once */
} br_http_stats;

/* br_http_session_get_stats: counters since the session was created.
 * BR_EINVAL for NULL. Session's loop thread (values are not synchronised). */
int br_http_session_get_stats(br_http_session *s, br_http_stats *out);

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

/* br_http_request: perform one request with the given method ("GET",
 * "POST", "HEAD", "PUT", "DELETE", ...; NULL means GET, or POST with a
 * body) on url (http:// or https://) and wait for its response, suspending
 * only the calling task. s may be NULL: a session with default options is
 * made for this one call (no connection reuse). *out is zeroed first and
 * always filled (free it with br_http_response_free, also on failure).
 * Returns 0 once a complete response arrived, whatever its status (unless
 * BR_HTTP_RAISE), or a code listed at the top of this header (also stored
 * in out->err, with out->error saying why). Retries follow the session's
 * policy; the deadline, timeout_ms and the enclosing scope's deadline bound
 * the whole call, retries and backoffs included. Task-only; the task must
 * run on the session's loop (BR_EPERM otherwise). A method that is not an
 * HTTP token (empty, spaces, CR/LF, over 32 bytes) is BR_EINVAL before
 * anything is sent. */
int br_http_request(br_http_session *s, br_http_response *out, const char *method,
                    const char *url, const br_http_request_opts *opts, int64_t deadline);

/* br_http_get: br_http_request with method GET. */
int br_http_get(br_http_session *s, br_http_response *out, const char *url,
                const br_http_request_opts *opts, int64_t deadline);

/* br_http_get_all: GET the n urls concurrently (one task each, within the
 * session's limits) and wait for all of them: out[i] receives urls[i]'s
 * response (asyncio.gather over session.get). Returns 0 if every call
 * succeeded, else the first failure's code in index order; each out[i].err
 * tells its own. If the caller is cancelled, every transfer is cancelled
 * and BR_ECANCELED returned. Free each response with br_http_response_free
 * (or all with br_http_responses_free). The GETs run in other tasks: out,
 * urls and what opts points to (headers, body) must not be locals of a
 * compact task (opts itself is copied). BR_EINVAL for NULL arrays with
 * n > 0, BR_ENOMEM. Task-only. */
int br_http_get_all(br_http_session *s, br_http_response *out, const char *const *urls,
                    size_t n, const br_http_request_opts *opts, int64_t deadline);

/* br_http_response_free: release what a response holds (body, headers,
 * url) and zero it; the struct itself is the caller's. NULL or an already
 * freed (zeroed) response is a no-op. Any thread. */
void br_http_response_free(br_http_response *r);

/* br_http_responses_free: br_http_response_free on each of n responses
 * (r may be NULL). Any thread. */
void br_http_responses_free(br_http_response *r, size_t n);

/* br_http_header_get: the value of the first header called name
 * (case-insensitive) in r, or NULL. Borrowed from r. Any thread. */
const char *br_http_header_get(const br_http_response *r, const char *name);

/* br_http_version_string: libcurl's version line ("libcurl/7.88.1
 * OpenSSL/3.0.19 ..."), static. Any thread. */
const char *br_http_version_string(void);

#ifdef __cplusplus
}
#endif

#endif
