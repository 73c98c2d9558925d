/* SPDX-License-Identifier: MIT */
/* braid — waiting for file descriptors.
 *
 * Each fd the loop has seen gets a record: who waits to read, who waits to
 * write, and readiness bits that arrived while nobody waited (edge-triggered
 * polling reports an edge once, so it must not be lost). On io_uring the
 * loop's ring can also do a socket's receive or send itself (br__sock_io). */
#include "core/core.h"
#include "core/loop.h"
#include "core/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

static br__fdrec *fdrec(struct br_loop *L, int fd, bool create) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= L->nfds) {
    if (!create) return NULL;
    /* The table grows to the highest descriptor waited on: a number that
     * is not open (a stale or made-up fd such as 1 << 30) must not make it
     * allocate and clear gigabytes. Checked only when the table grows. */
    if (fcntl(fd, F_GETFD) < 0) return NULL;
    size_t n = L->nfds ? L->nfds : 64;
    while (n <= (size_t)fd) n *= 2;
    br__fdrec *a = realloc(L->fds, n * sizeof *a);
    if (!a) return NULL;
    memset(a + L->nfds, 0, (n - L->nfds) * sizeof *a);
    L->fds = a;
    L->nfds = n;
  }
  return &L->fds[fd];
}

void br__fd_ready(void *ctx, int fd, int events) {
  struct br_loop *L = ctx;
  br__fdrec *r = fdrec(L, fd, false);
  if (!r) return;
  r->ready |= (uint8_t)events;
  if ((events & BR_READABLE) && r->reader) {
    struct br__task *t = r->reader;
    r->reader = NULL;
    br__wake(t, BR_READABLE);
  }
  if ((events & BR_WRITABLE) && r->writer) {
    struct br__task *t = r->writer;
    r->writer = NULL;
    br__wake(t, BR_WRITABLE);
  }
}

/* Register fd with the poller the first time the loop waits on it. */
static int arm_once(struct br_loop *L, br__fdrec *r, int fd) {
  if (r->armed) return 0;
  /* Completion-based backends arm asynchronously: check the descriptor
   * now, once, so a closed one is BR_EBADF on every backend. */
  if (fcntl(fd, F_GETFD) < 0) return -errno;
  int rc = L->poller.ops->arm(&L->poller, fd);
  if (rc == -EEXIST) rc = 0;
  if (rc) return rc;
  r->armed = true;
  /* A fresh registration reports the current state as an edge. */
  return 0;
}

int br_wait_fd(int fd, int events, int64_t deadline) {
  struct br__task *t = br__require_task();
  if (!t) return BR_ENOTTASK;
  if (fd < 0) return BR_EBADF;
  if (!events || (events & ~(BR_READABLE | BR_WRITABLE))) return BR_EINVAL;
  struct br_loop *L = t->loop;
  br__fdrec *r = fdrec(L, fd, true);
  if (!r) return fcntl(fd, F_GETFD) < 0 ? BR_EBADF : BR_ENOMEM;
  int rc = arm_once(L, r, fd);
  if (rc) return rc;
  rc = br__checkpoint(t);
  if (rc) return rc;
  if (r->ready & events) {
    int got = r->ready & events;
    r->ready &= (uint8_t)~got;
    return got;
  }
  /* One reader and one writer at a time, waiting for readiness or in the
   * poller's own receive or send (br__sock_io) alike. */
  if (((events & BR_READABLE) && ((r->reader && r->reader != t) || r->rx)) ||
      ((events & BR_WRITABLE) && ((r->writer && r->writer != t) || r->tx)))
    return BR_EBUSY;
  if (events & BR_READABLE) r->reader = t;
  if (events & BR_WRITABLE) r->writer = t;
  br__wait_default(t, BR_WAIT_FD, (events & BR_READABLE) ? (events & BR_WRITABLE) ? "read/write" : "read" : "write", NULL, NULL, fd);
  br__park_begin(t);
  rc = br__park_end(t, deadline, true);
  r = fdrec(L, fd, false); /* the table may have moved */
  if (r) {
    if (r->reader == t) r->reader = NULL;
    if (r->writer == t) r->writer = NULL;
  }
  if (rc > 0) {
    if (r) r->ready &= (uint8_t)~rc;
    return rc;
  }
  if (rc == BR_ETIMEDOUT && !br__scope_expired(t) && deadline > br_now()) return BR_ETIMEDOUT;
  return rc;
}

/* --- receive and send done by the poller (io_uring) ------------------------ */

/* One socket operation in flight: lives on the waiting task's own stack
 * (never a compact task's: that stack is shared while it waits), so the
 * task does not return before the kernel has completed it. */
typedef struct br__sockop {
  br__io_req req; /* first: done(req) finds the record */
  struct br__task *t;
  int64_t res;
  bool done;
  bool closed; /* br_fd_forget took it back: the descriptor is being closed */
} sockop;

static void sockop_done(br__io_req *r, int64_t res) {
  sockop *o = (sockop *)r;
  o->res = res;
  o->done = true;
  br__wake(o->t, 0); /* no-op if an interruption woke it already */
}

ssize_t br__sock_io(int fd, bool send, void *buf, size_t n, int64_t deadline) {
  struct br__task *t = br__require_task();
  if (!t || t->compact || n == 0) return BR_ENOSYS;
  struct br_loop *L = t->loop;
  if (!L->poller.sock_io) return BR_ENOSYS;
  br__fdrec *r = fdrec(L, fd, true);
  /* A descriptor that is not open (fd < 0, a closed one): the system call
   * the caller falls back to reports it (BR_EBADF), as on epoll. */
  if (!r) return fd < 0 || fcntl(fd, F_GETFD) < 0 ? BR_ENOSYS : BR_ENOMEM;
  if (r->not_socket) return BR_ENOSYS;
  /* One reader at a time, as with readiness (br_wait_fd). A second writer
   * writes itself, as it would without the ring: it succeeds if there is
   * room, and is told BR_EBUSY only if it would have to wait too. */
  if (send ? r->tx || r->writer : r->rx || r->reader) return send ? BR_ENOSYS : BR_EBUSY;
  /* Cancelled, or out of time already: the plain system call still does
   * what it can do at once, as everywhere else (a write to a socket with
   * room succeeds), and readiness reports the interruption. The descriptor
   * is not armed for readiness here: the ring's own poll for the operation
   * is all the kernel needs to watch (a readiness poll would post a
   * completion for every segment that arrives, for nobody). */
  if (br__checkpoint(t) || (deadline != BR_NEVER && deadline <= br_now())) return BR_ENOSYS;
  if (n > 0x7ffff000) n = 0x7ffff000; /* as read(2) and write(2) */
  sockop o = {.req = {.op = send ? BR__IO_SEND : BR__IO_RECV, .fd = fd, .buf = buf, .n = n,
                      .done = sockop_done},
              .t = t};
  int rc = L->poller.ops->submit(&L->poller, &o.req);
  if (rc) return rc == -EAGAIN || rc == -ENOSYS ? BR_ENOSYS : rc;
  if (send)
    r->tx = &o;
  else
    r->rx = &o;
  const char *what = send ? "write" : "read";
  br__wait_default(t, BR_WAIT_FD, what, NULL, NULL, fd);
  br__park_begin(t);
  int why = br__park_end(t, deadline, true);
  bool taken_back = false;
  while (!o.done) {
    /* Interrupted (deadline, cancel) while the kernel owns buf: take the
     * operation back and wait, uninterruptibly, for its completion, which
     * follows at once (a ring without room retries a millisecond later). */
    if (!taken_back && !o.closed) taken_back = L->poller.ops->cancel(&L->poller, &o.req) == 0;
    br__wait_default(t, BR_WAIT_FD, what, NULL, NULL, fd);
    br__park_begin(t);
    (void)br__park_end(t, taken_back || o.closed ? BR_NEVER : br_now() + 1000000, false);
  }
  r = fdrec(L, fd, false); /* the table may have moved */
  if (r && r->rx == &o) r->rx = NULL;
  if (r && r->tx == &o) r->tx = NULL;
  if (o.res >= 0) return (ssize_t)o.res; /* bytes moved are never dropped */
  if (o.closed) return BR_EBADF;
  if (o.res == -ECANCELED) return why < 0 ? why : BR_ECANCELED;
  if (o.res == -ENOTSOCK) {
    if (r) r->not_socket = true;
    return BR_ENOSYS;
  }
  return (ssize_t)o.res;
}

void br_fd_forget(int fd) {
  struct br_loop *L = br__tls_loop;
  if (!L) return;
  br__fdrec *r = fdrec(L, fd, false);
  if (!r) return;
  /* Operations the poller performs hold the file open: take them back at
   * once (their tasks wake with BR_EBADF when the kernel lets go of the
   * buffers). */
  sockop *inflight[2] = {r->rx, r->tx};
  for (int i = 0; i < 2; i++) {
    sockop *o = inflight[i];
    if (o && !o->done && !o->closed) {
      o->closed = true;
      L->poller.ops->cancel(&L->poller, &o->req);
    }
  }
  if (r->armed) L->poller.ops->disarm(&L->poller, fd);
  struct br__task *rd = r->reader, *wr = r->writer;
  memset(r, 0, sizeof *r);
  if (rd) br__wake(rd, BR_EBADF);
  if (wr && wr != rd) br__wake(wr, BR_EBADF);
}

void br__fds_free(struct br_loop *L) {
  free(L->fds);
  L->fds = NULL;
  L->nfds = 0;
}
