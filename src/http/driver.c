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
 * Registrations. A socket our open-socket callback made keeps its record
 * (hub->byfd) and braid's registration from its first wait until our
 * close-socket callback, across the transfers of a kept-alive connection:
 * curl removes a connection's socket when a transfer ends (CURL_POLL_REMOVE)
 * and hands it in again for the next one, and re-registering it each time
 * cost a poller call to drop it and another to arm it again, per request.
 * A kept registration has recorded every edge since; only an edge a watcher
 * took without curl reading everything is missing, which the level check
 * below covers for reads. So a change of interest drops the registration
 * only where a fresh one is needed: to wake a watcher waiting for something
 * else, and when curl starts asking for writability (a fresh registration
 * reports a writable socket at once; a kept one may have spent that edge).
 * Every other socket (the resolver's socket pair, which curl closes without
 * our close callback, so the number may come back as a new socket that
 * braid's table still thinks it has registered) is dropped and re-armed on
 * every change of interest, as ephiperfifo's epoll DEL+ADD does; and a
 * descriptor our open callback gets from the kernel has any stale
 * registration of its number dropped first.
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
  free(h->byfd);
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

static br__http_sock *sock_new(br__http_hub *h, int fd) {
  br__http_sock *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->hub = h;
  k->fd = fd;
  k->next = h->socks;
  if (h->socks) h->socks->prev = k;
  h->socks = k;
  return k;
}

/* One transfer fewer: with none left, the timer task may end. */
static void transfer_gone(br__http_hub *h) {
  if (--h->active == 0) br_event_set(h->timer_ev);
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
    br_event_set(r->ev);
    transfer_gone(h);
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
  while (k->assigned && k->want && !k->closed && !h->closing) {
    int ev = level ? level_ready(k->fd, k->want) : 0;
    if (ev) {
      if (br_yield() && br_cancelled()) break;
      if (!k->assigned || !k->want || h->closing) break;
      int before = pending_bytes(k->fd);
      act(h, k->fd, ev);
      if (k->assigned && before >= 0 && pending_bytes(k->fd) >= before) level = false;
      continue;
    }
    k->waiting = true;
    k->wait_want = k->want;
    ev = br_wait_fd(k->fd, k->want, BR_NEVER);
    k->waiting = false;
    if (ev == BR_EBADF) {
      /* A socket callback dropped the registration (re-read the interest
       * and wait again), or the descriptor is closed (curl removes it). */
      if (k->closed || fcntl(k->fd, F_GETFD) < 0) break;
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

/* Watchers are compact tasks (BR_SPAWN_COMPACT): one is started for nearly
 * every transfer (curl hands a kept-alive socket in again for each request)
 * and lives for one response, and while it waits its live stack is two
 * frames (this loop and br_wait_fd); curl's deep frames exist only inside
 * act(), which never suspends. An own stack would cost a fresh mapping's
 * page faults for each of the first hundred sockets and a cached stack's
 * hand-over for every later one. Nothing curl keeps points into a watcher's
 * stack (see http_int.h), so moving it while the watcher waits is safe. */
static int start_watcher(br__http_hub *h, br__http_sock *k) {
  br_spawn_opts o = {.name = "http-socket", .flags = BR_SPAWN_DETACHED | BR_SPAWN_COMPACT};
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
  int want = what == CURL_POLL_REMOVE ? 0
             : (what & CURL_POLL_IN ? BR_READABLE : 0) | (what & CURL_POLL_OUT ? BR_WRITABLE : 0);
  if (!k && what != CURL_POLL_REMOVE) {
    k = fd >= 0 && (size_t)fd < h->nbyfd ? h->byfd[fd] : NULL; /* ours, between transfers */
    if (k && k->assigned) k = NULL; /* cannot happen: curl would have handed it in */
    if (!k) {
      br_fd_forget(fd);
      if (!(k = sock_new(h, fd))) {
        h->spawn_error = BR_ENOMEM;
        return -1;
      }
    }
    k->assigned = true;
    k->refs++;
    curl_multi_assign(h->multi, fd, k);
  }
  /* See "Registrations" above. */
  if (!k || !k->ours || (k->waiting && want != k->wait_want) ||
      ((want & BR_WRITABLE) && !(k->want & BR_WRITABLE)))
    br_fd_forget(fd);
  if (!k) return 0;
  k->want = want;
  if (what == CURL_POLL_REMOVE) {
    k->assigned = false;
    sock_unref(k);
    return 0;
  }
  if (want && !k->watching && !h->closing) start_watcher(h, k);
  return 0;
}

static void *timer_main(void *arg) {
  br__http_hub *h = arg;
  while (!h->closing) {
    int64_t dl = h->timer_deadline;
    if (dl == BR_NEVER && h->active == 0) break; /* idle: let the loop end */
    if (dl != BR_NEVER && br_now() >= dl) {
      h->timer_deadline = BR_NEVER;
      act(h, CURL_SOCKET_TIMEOUT, 0);
      continue;
    }
    h->timer_sleep = dl;
    int rc = br_event_wait_until(h->timer_ev, dl);
    h->timer_sleep = INT64_MIN;
    if (rc == 0) br_event_clear(h->timer_ev); /* an earlier deadline, or no transfers */
    else if (rc != BR_ETIMEDOUT && br_cancelled()) break;
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

/* CURLMOPT_TIMERFUNCTION: record, never act (curl must not be re-entered).
 * The timer task is woken only for a deadline earlier than the one it sleeps
 * to (one that moves later is read when it wakes): curl moves its timeout on
 * nearly every call, mostly later. */
static int on_timer(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  br__http_hub *h = userp;
  int64_t dl = timeout_ms < 0 ? BR_NEVER : br_now() + (int64_t)timeout_ms * 1000000;
  h->timer_deadline = dl;
  if (dl < h->timer_sleep) br_event_set(h->timer_ev);
  return 0;
}

curl_socket_t br__http_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  br__http_hub *h = clientp;
  (void)purpose;
  int fd = socket(a->family, a->socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  /* A new descriptor: whatever braid's table says about its number is stale
   * (see "Registrations" above). */
  br_fd_forget(fd);
  if (!h) return fd;
  if (h->connections) (*h->connections)++;
  if ((size_t)fd >= h->nbyfd) {
    size_t n = h->nbyfd ? h->nbyfd : 64;
    while (n <= (size_t)fd) n *= 2;
    br__http_sock **a2 = realloc(h->byfd, n * sizeof *a2);
    if (!a2) return fd; /* no record: watched like a socket of curl's own */
    memset(a2 + h->nbyfd, 0, (n - h->nbyfd) * sizeof *a2);
    h->byfd = a2;
    h->nbyfd = n;
  }
  br__http_sock *old = h->byfd[fd];
  if (old) { /* closed without our callback: cannot happen, but never keep it */
    h->byfd[fd] = NULL;
    old->ours = false;
    old->closed = true;
    sock_unref(old);
  }
  br__http_sock *k = sock_new(h, fd);
  if (!k) return fd;
  k->ours = true;
  k->refs = 1;
  h->byfd[fd] = k;
  return fd;
}

int br__http_closesocket(void *clientp, curl_socket_t fd) {
  br__http_hub *h = clientp;
  br_fd_forget(fd); /* wakes a watcher with BR_EBADF */
  br__http_sock *k = h && fd >= 0 && (size_t)fd < h->nbyfd ? h->byfd[fd] : NULL;
  if (k) {
    h->byfd[fd] = NULL;
    k->ours = false;
    k->closed = true;
    sock_unref(k);
  }
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
  h->timer_sleep = INT64_MIN;
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
  transfer_gone(h);
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
    bool assigned = k->assigned, ours = k->ours;
    if (assigned || ours) br_fd_forget(k->fd);
    if (ours) { /* a socket curl kept open: no longer ours to track */
      h->byfd[k->fd] = NULL;
      k->ours = false;
      k->closed = true;
    }
    k->assigned = false;
    int drops = (int)assigned + (int)ours; /* curl's reference, the table's */
    if (drops) {
      k->refs -= drops - 1;
      sock_unref(k);
    }
    k = next;
  }
  br_event_set(h->timer_ev);
  br__http_hub_release(h);
}
