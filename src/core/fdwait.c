/* SPDX-License-Identifier: MIT */
/* braid — waiting for file descriptors.
 *
 * Each fd the loop has seen gets a record: who waits to read, who waits to
 * write, and readiness bits that arrived while nobody waited (edge-triggered
 * polling reports an edge once, so it must not be lost). */
#include "core/core.h"
#include "core/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

static br__fdrec *fdrec(struct br_loop *L, int fd, bool create) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= L->nfds) {
    if (!create) return NULL;
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

int br_wait_fd(int fd, int events, int64_t deadline) {
  struct br__task *t = br__require_task();
  if (!t) return BR_ENOTTASK;
  if (fd < 0) return BR_EBADF;
  if (!events || (events & ~(BR_READABLE | BR_WRITABLE))) return BR_EINVAL;
  struct br_loop *L = t->loop;
  br__fdrec *r = fdrec(L, fd, true);
  if (!r) return BR_ENOMEM;
  if (!r->armed) {
    /* Completion-based backends arm asynchronously: check the descriptor
     * now, once, so a closed one is BR_EBADF on every backend. */
    if (fcntl(fd, F_GETFD) < 0) return -errno;
    int rc = L->poller.ops->arm(&L->poller, fd);
    if (rc == -EEXIST) rc = 0;
    if (rc) return rc;
    r->armed = true;
    /* A fresh registration reports the current state as an edge. */
  }
  int rc = br__checkpoint(t);
  if (rc) return rc;
  if (r->ready & events) {
    int got = r->ready & events;
    r->ready &= (uint8_t)~got;
    return got;
  }
  if (((events & BR_READABLE) && r->reader && r->reader != t) ||
      ((events & BR_WRITABLE) && r->writer && r->writer != t))
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

void br_fd_forget(int fd) {
  struct br_loop *L = br__tls_loop;
  if (!L) return;
  br__fdrec *r = fdrec(L, fd, false);
  if (!r) return;
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
