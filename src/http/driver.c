/* SPDX-License-Identifier: MIT */
/* braid-http — driving a curl multi handle from a braid loop.
 *
 * This is curl's multi-socket interface (docs/examples/ephiperfifo.c) with
 * braid's poller in place of epoll and braid tasks in place of callbacks:
 *
 *  - CURLMOPT_SOCKETFUNCTION tells us which sockets to watch for what. Each
 *    watched socket gets a record (br__http_sock) and a watcher task that
 *    waits with br_wait_fd and then calls curl_multi_socket_action(fd).
 *  - CURLMOPT_TIMERFUNCTION only records the deadline and sets an event; the
 *    timer task wakes at the deadline and calls curl_multi_socket_action
 *    (CURL_SOCKET_TIMEOUT). curl is never called from inside its callbacks.
 *  - After every action, finished transfers are taken off the multi handle
 *    and their requesting tasks woken (check_done).
 *
 * Readiness. braid's poller is edge-triggered and remembers an edge nobody
 * waited for; curl expects level-triggered readiness (it may leave data in a
 * socket and not ask again). So before a watcher waits it asks the kernel
 * (poll with timeout 0) whether the socket is still readable, and if so acts
 * at once, yielding first so one busy socket cannot starve the loop (and
 * stops checking when an action leaves the receive queue as it was).
 *
 * Registrations. Every socket callback for a descriptor drops braid's
 * registration of it (br_fd_forget) and the watcher re-arms it on its next
 * wait, which reports the current state as a fresh edge. Two reasons: it
 * wakes a waiting watcher so it picks up the new interest at once, and curl
 * closes some descriptors (its resolver's socket pair) without our close
 * callback, so a number curl hands us again may be a new socket that braid's
 * table still thinks it has registered. Dropping and re-arming costs two
 * epoll_ctl calls per change of interest, as ephiperfifo's DEL+ADD does.
 */
#include "http_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void hub_free(br__http_hub *h) {
  br_event_free(h->timer_ev);
  free(h);
}

void br__http_hub_release(br__http_hub *h) {
  if (h && --h->refs == 0) hub_free(h);
}

static void sock_unref(br__http_sock *k) {
  if (--k->refs > 0) return;
  br__http_hub *h = k->hub;
  if (k->prev) k->prev->next = k->next;
  else h->socks = k->next;
  if (k->next) k->next->prev = k->prev;
  free(k);
}

/* Finished transfers: take them off the multi handle, wake their tasks. */
static void check_done(br__http_hub *h) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(h->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    br__http_req *r = NULL;
    CURL *e = msg->easy_handle;
    CURLcode rc = msg->data.result;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
    curl_multi_remove_handle(h->multi, e); /* msg is invalid from here */
    if (!r) continue;
    r->added = false;
    r->done = true;
    r->result = rc;
    h->active--;
    br_event_set(r->ev);
  }
}

static void act(br__http_hub *h, curl_socket_t fd, int events) {
  int bits = 0, running = 0;
  if (events & BR_READABLE) bits |= CURL_CSELECT_IN;
  if (events & BR_WRITABLE) bits |= CURL_CSELECT_OUT;
  curl_multi_socket_action(h->multi, fd, bits, &running);
  check_done(h);
}

/* Readable right now? (see "Readiness" above). Only reads are checked:
 * a socket is nearly always writable, and curl asks for writability only
 * while it has something to send, which braid's edges report. */
static int level_ready(int fd, int want) {
  if (!(want & BR_READABLE)) return 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR))) return BR_READABLE;
  return 0;
}

/* Bytes waiting in a socket's receive queue (-1 if unknown). */
static int pending_bytes(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

static void *watcher_main(void *arg) {
  br__http_sock *k = arg;
  br__http_hub *h = k->hub;
  /* Level checks stop when curl leaves the queue as it was (an idle socket
   * whose peer closed, say) and start again after the next real edge, so a
   * socket curl does not read cannot keep the watcher spinning. */
  bool level = true;
  while (k->assigned && k->want && !h->closing) {
    int ev = level ? level_ready(k->fd, k->want) : 0;
    if (ev) {
      if (br_yield() && br_cancelled()) break;
      if (!k->assigned || !k->want || h->closing) break;
      int before = pending_bytes(k->fd);
      act(h, k->fd, ev);
      if (k->assigned && before >= 0 && pending_bytes(k->fd) >= before) level = false;
      continue;
    }
    ev = br_wait_fd(k->fd, k->want, BR_NEVER);
    if (ev == BR_EBADF) {
      /* A socket callback dropped the registration (re-read the interest
       * and wait again), or the descriptor is closed (curl removes it). */
      if (fcntl(k->fd, F_GETFD) < 0) break;
      continue;
    }
    if (ev == BR_EBUSY) {
      /* The previous watcher of this descriptor number has not run since
       * it was told to stop. */
      if (br_yield() && br_cancelled()) break;
      continue;
    }
    if (ev < 0) break; /* cancelled (the loop is going away) or out of memory */
    level = true;
    act(h, k->fd, ev);
  }
  k->watching = false;
  sock_unref(k);
  br__http_hub_release(h);
  return NULL;
}

static int start_watcher(br__http_hub *h, br__http_sock *k) {
  br_spawn_opts o = {.name = "http-socket", .flags = BR_SPAWN_DETACHED};
  k->watching = true;
  k->refs++;
  h->refs++;
  int rc = br_loop_spawn(h->loop, NULL, watcher_main, k, &o);
  if (rc < 0) {
    k->watching = false;
    k->refs--;
    h->refs--;
    h->spawn_error = rc;
  }
  return rc;
}

/* CURLMOPT_SOCKETFUNCTION. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  br__http_hub *h = userp;
  br__http_sock *k = socketp;
  br_fd_forget(fd); /* see "Registrations" above */
  if (what == CURL_POLL_REMOVE) {
    if (k) {
      k->assigned = false;
      k->want = 0;
      sock_unref(k);
    }
    return 0;
  }
  if (!k) {
    k = calloc(1, sizeof *k);
    if (!k) {
      h->spawn_error = BR_ENOMEM;
      return -1;
    }
    k->hub = h;
    k->fd = fd;
    k->assigned = true;
    k->refs = 1;
    k->next = h->socks;
    if (h->socks) h->socks->prev = k;
    h->socks = k;
    curl_multi_assign(h->multi, fd, k);
  }
  k->want = (what & CURL_POLL_IN ? BR_READABLE : 0) | (what & CURL_POLL_OUT ? BR_WRITABLE : 0);
  if (k->want && !k->watching && !h->closing) start_watcher(h, k);
  return 0;
}

static void *timer_main(void *arg) {
  br__http_hub *h = arg;
  while (!h->closing) {
    int64_t dl = h->timer_deadline;
    if (dl == BR_NEVER && h->active == 0) break; /* idle: let the loop end */
    int rc = br_event_wait_until(h->timer_ev, dl);
    if (rc == 0) {
      br_event_clear(h->timer_ev); /* the deadline changed; read it again */
      continue;
    }
    if (h->closing) break;
    if (rc == BR_ETIMEDOUT && br_now() >= dl) {
      h->timer_deadline = BR_NEVER;
      act(h, CURL_SOCKET_TIMEOUT, 0);
      continue;
    }
    if (br_cancelled()) break;
  }
  h->timer_alive = false;
  br__http_hub_release(h);
  return NULL;
}

static int ensure_timer(br__http_hub *h) {
  if (h->timer_alive) return 0;
  br_spawn_opts o = {.name = "http-timer", .flags = BR_SPAWN_DETACHED};
  h->timer_alive = true;
  h->refs++;
  int rc = br_loop_spawn(h->loop, NULL, timer_main, h, &o);
  if (rc < 0) {
    h->timer_alive = false;
    h->refs--;
  }
  return rc;
}

/* CURLMOPT_TIMERFUNCTION: record, never act (curl must not be re-entered). */
static int on_timer(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  br__http_hub *h = userp;
  h->timer_deadline = timeout_ms < 0 ? BR_NEVER : br_now() + (int64_t)timeout_ms * 1000000;
  br_event_set(h->timer_ev);
  return 0;
}

curl_socket_t br__http_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  br__http_hub *h = clientp;
  (void)purpose;
  int fd = socket(a->family, a->socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  if (h && h->connections) (*h->connections)++;
  return fd;
}

int br__http_closesocket(void *clientp, curl_socket_t fd) {
  (void)clientp;
  br_fd_forget(fd);
  return close(fd);
}

int br__http_hub_get(br_http_session *s, br__http_hub **out) {
  if (s->hub) {
    *out = s->hub;
    return 0;
  }
  br__http_hub *h = calloc(1, sizeof *h);
  if (!h) return BR_ENOMEM;
  int rc = br_event_new(&h->timer_ev);
  if (rc < 0) {
    free(h);
    return rc;
  }
  h->multi = curl_multi_init();
  if (!h->multi) {
    hub_free(h);
    return BR_EIO;
  }
  h->loop = br_loop_current();
  h->refs = 1;
  h->timer_deadline = BR_NEVER;
  h->connections = &s->stats.connections;
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->opts.max_per_host);
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)(s->opts.max_total > 8 ? s->opts.max_total : 8));
  s->hub = h;
  *out = h;
  return 0;
}

int br__http_hub_add(br__http_hub *h, br__http_req *r) {
  int rc = ensure_timer(h);
  if (rc < 0) return rc;
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, (char *)r);
  CURLMcode mc = curl_multi_add_handle(h->multi, r->easy);
  if (mc == CURLM_OUT_OF_MEMORY) return BR_ENOMEM;
  if (mc != CURLM_OK) return BR_EIO;
  r->added = true;
  h->active++;
  return 0;
}

void br__http_hub_remove(br__http_hub *h, br__http_req *r) {
  if (!r->added) return;
  /* Removing an unfinished transfer closes its connection (our close
   * callback forgets the descriptor) and drops its sockets from the multi
   * handle (CURL_POLL_REMOVE ends their watchers). */
  curl_multi_remove_handle(h->multi, r->easy);
  r->added = false;
  h->active--;
}

/* Called by br_http_session_free: close everything, let the drivers go. */
void br__http_hub_close(br__http_hub *h);
void br__http_hub_close(br__http_hub *h) {
  if (!h) return;
  h->closing = true;
  curl_multi_cleanup(h->multi); /* closes the cached connections */
  h->multi = NULL;
  /* Records curl did not remove: curl is gone, drop its references and wake
   * the watchers (br_fd_forget wakes a waiter with BR_EBADF). */
  br__http_sock *k = h->socks;
  while (k) {
    br__http_sock *next = k->next;
    if (k->assigned) {
      br_fd_forget(k->fd);
      k->assigned = false;
      sock_unref(k);
    }
    k = next;
  }
  br_event_set(h->timer_ev);
  br__http_hub_release(h);
}
