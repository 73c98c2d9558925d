/* SPDX-License-Identifier: MIT */
/* braid — the io_uring backend (liburing).
 *
 * Readiness: each armed descriptor has one multishot POLL_ADD for
 * POLLIN|POLLOUT|POLLRDHUP. The kernel posts a completion whenever the
 * descriptor's wait queue is woken with a matching event, which is the edge
 * the loop expects (epoll's EPOLLET fires on the same wake-ups). A multishot
 * poll ends by itself now and then (a completion without IORING_CQE_F_MORE:
 * overflow of the completion queue, errors); we then re-arm it. Kernels
 * before 5.13 reject multishot with -EINVAL: we switch to one-shot polls,
 * re-armed after every completion, which is level-triggered in effect (a
 * descriptor kept readable fires every iteration) — correct, just slower.
 *
 * Every submission carries a tagged user_data (low 3 bits):
 *   0  a submitted operation (submit): the rest is its br__io_req *
 *   1  a readiness poll: fd and a generation number (below)
 *   2  the wake-up eventfd's poll
 *   3  bookkeeping (poll cancellations): ignored
 * The generation makes a late completion of a removed poll harmless when
 * the descriptor number has been reused and re-armed meanwhile.
 *
 * Submission: arm and submitted operations only queue SQEs; poll() submits them
 * together with its wait, so a loop iteration costs one io_uring_enter no
 * matter how many descriptors changed. disarm submits at once, because the
 * poll holds a reference on the file: until the removal runs, a closed
 * socket would not really close (no FIN, a listener still taking
 * connections), a closed pipe would give its reader no end-of-file. It is
 * an ASYNC_CANCEL, not a POLL_REMOVE: POLL_REMOVE fails (-EALREADY) while
 * the poll's wake-up is being delivered (a descriptor that is ready as the
 * poll is armed, or one the kernel reported and we have not collected), and
 * the poll lived on; a cancel completes it in any state.
 *
 * Sockets: on kernels with IORING_RECVSEND_POLL_FIRST (5.19+, recognised by
 * the cancel-by-descriptor of the same release, probed at open), RECV and
 * SEND are performed here too (sock_io). A RECV carries POLL_FIRST: the
 * caller only asks after the socket was drained, so the kernel arms its poll
 * at once instead of trying a receive that fails; the poll checks the
 * socket's current state, so data or an end of stream already there is not
 * missed. Such a socket has no readiness poll; the core takes a pending
 * operation back with `cancel` (br_close, a deadline), submitted at once
 * because the operation holds the file.
 *
 * open() fails with a negative errno where io_uring cannot be used
 * (-ENOSYS: no kernel support or built without liburing; -EPERM: seccomp,
 * io_uring_disabled), and the loop falls back to epoll.
 */
#include "core/poller.h"

#include <errno.h>

#ifndef BRAID_HAVE_LIBURING

static int uring_open(br__poller *p) {
  (void)p;
  return -ENOSYS;
}

const br__poller_ops br__poller_uring = {.name = "io_uring", .open = uring_open};

#else

#include <braid.h> /* BR_READABLE, BR_WRITABLE */
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define SQ_ENTRIES 512
#define CQ_ENTRIES 8192

enum { TAG_OP = 0, TAG_FD = 1, TAG_WAKE = 2, TAG_IGNORE = 3, TAG_MASK = 7 };

#define POLL_MASK (POLLIN | POLLOUT | POLLRDHUP | POLLERR | POLLHUP)

typedef struct fdslot {
  uint32_t gen;   /* bumped on every arm */
  bool armed;
} fdslot;

typedef struct uring {
  struct io_uring ring;
  fdslot *slots;
  size_t nslots;
  bool multishot;  /* false after the kernel refused a multishot poll */
  bool wake_armed;
  bool skip_ok;    /* IOSQE_CQE_SKIP_SUCCESS supported */
} uring;

static inline uint64_t fd_ud(int fd, uint32_t gen) {
  return ((uint64_t)(gen & 0x1fffffffu) << 35) | ((uint64_t)(uint32_t)fd << 3) | TAG_FD;
}

/* Get an SQE, pushing queued ones to the kernel when the ring is full. */
static struct io_uring_sqe *get_sqe(uring *u) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (sqe) return sqe;
  for (int tries = 0; tries < 4; tries++) {
    int rc = io_uring_submit(&u->ring);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return NULL;
    sqe = io_uring_get_sqe(&u->ring);
    if (sqe) return sqe;
  }
  return NULL;
}

static void prep_fd_poll(uring *u, struct io_uring_sqe *sqe, int fd, uint32_t gen) {
  if (u->multishot)
    io_uring_prep_poll_multishot(sqe, fd, POLL_MASK);
  else
    io_uring_prep_poll_add(sqe, fd, POLL_MASK);
  io_uring_sqe_set_data64(sqe, fd_ud(fd, gen));
}

static int arm_wake(br__poller *p, uring *u) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe) return -EBUSY;
  if (u->multishot)
    io_uring_prep_poll_multishot(sqe, p->wake_fd, POLLIN);
  else
    io_uring_prep_poll_add(sqe, p->wake_fd, POLLIN);
  io_uring_sqe_set_data64(sqe, TAG_WAKE);
  u->wake_armed = true;
  return 0;
}

/* Whether the kernel is 5.19 or later (POLL_FIRST for RECV and SEND, which
 * cannot be probed without a socket): a cancel by
 * descriptor, new in that release, of everything on the ring's own
 * descriptor, where nothing is pending, finds nothing (-ENOENT) where it is
 * understood and is refused (-EINVAL) where it is not. One round trip, at
 * open. */
static bool probe_sockets(uring *u) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe) return false;
  io_uring_prep_cancel_fd(sqe, u->ring.ring_fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, TAG_IGNORE);
  struct io_uring_cqe *cqe = NULL;
  int rc;
  do rc = io_uring_submit_and_wait(&u->ring, 1);
  while (rc == -EINTR);
  if (rc < 0 || io_uring_peek_cqe(&u->ring, &cqe) != 0) return false;
  bool ok = cqe->res == -ENOENT || cqe->res == 0;
  io_uring_cqe_seen(&u->ring, cqe);
  return ok;
}

static int uring_open(br__poller *p) {
  uring *u = calloc(1, sizeof *u);
  if (!u) return -ENOMEM;
  struct io_uring_params prm;
  /* Try the cheapest task-work mode first, then plainer setups for older
   * kernels (each flag is refused with -EINVAL where unknown). */
  const unsigned flag_sets[] = {
    /* COOP_TASKRUN: completions are not pushed with an interrupt but run
     * when we next enter the kernel; TASKRUN_FLAG tells us (in the SQ ring
     * flags) when some are waiting, so a non-blocking poll can fetch them. */
    IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
        IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_CQSIZE,
    0,
  };
  int rc = -ENOSYS;
  for (size_t i = 0; i < sizeof flag_sets / sizeof *flag_sets; i++) {
    memset(&prm, 0, sizeof prm);
    prm.flags = flag_sets[i];
    prm.cq_entries = CQ_ENTRIES;
    rc = io_uring_queue_init_params(SQ_ENTRIES, &u->ring, &prm);
    if (rc != -EINVAL) break;
  }
  if (rc < 0) {
    free(u);
    return rc; /* -ENOSYS, -EPERM (seccomp, io_uring_disabled), -ENOMEM */
  }
  /* Poll, its cancellation and the file operations must all be there; kernels
   * without a probe (< 5.6) are too old for us anyway. */
  struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
  static const int need[] = {IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL, IORING_OP_READ,
                             IORING_OP_WRITE,    IORING_OP_OPENAT,      IORING_OP_CLOSE,
                             IORING_OP_FSYNC};
  bool ok = probe != NULL;
  for (size_t i = 0; ok && i < sizeof need / sizeof *need; i++)
    ok = io_uring_opcode_supported(probe, need[i]);
  bool sock_ops = ok && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                  io_uring_opcode_supported(probe, IORING_OP_SEND);
  if (probe) io_uring_free_probe(probe);
  if (!ok) {
    io_uring_queue_exit(&u->ring);
    free(u);
    return -ENOSYS;
  }
  u->multishot = true;
  u->skip_ok = (prm.features & IORING_FEAT_CQE_SKIP) != 0;
  p->fd = u->ring.ring_fd;
  p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->wake_fd < 0) {
    rc = -errno;
    io_uring_queue_exit(&u->ring);
    free(u);
    return rc;
  }
  p->impl = u;
  p->sock_io = sock_ops && probe_sockets(u);
  arm_wake(p, u);
  return 0;
}

static void uring_close(br__poller *p) {
  uring *u = p->impl;
  if (!u) return;
  /* A submitted operation's caller waits for it (pinned) before its task
   * can end, and a loop is only freed once its tasks are done: nothing is
   * in flight here any more. */
  io_uring_queue_exit(&u->ring);
  close(p->wake_fd);
  free(u->slots);
  free(u);
  p->impl = NULL;
}

static fdslot *slot(uring *u, int fd, bool grow) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= u->nslots) {
    if (!grow) return NULL;
    size_t n = u->nslots ? u->nslots : 256;
    while (n <= (size_t)fd) n *= 2;
    fdslot *s = realloc(u->slots, n * sizeof *s);
    if (!s) return NULL;
    memset(s + u->nslots, 0, (n - u->nslots) * sizeof *s);
    u->slots = s;
    u->nslots = n;
  }
  return &u->slots[fd];
}

static int uring_arm(br__poller *p, int fd) {
  uring *u = p->impl;
  fdslot *s = slot(u, fd, true);
  if (!s) return -ENOMEM;
  if (s->armed) return -EEXIST;
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe) return -EBUSY;
  s->gen++;
  s->armed = true;
  prep_fd_poll(u, sqe, fd, s->gen);
  return 0;
}

/* Cancel the request whose user_data is ud and submit at once; the
 * cancellation's own completion is not wanted. */
static int cancel_now(uring *u, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe) return -EBUSY;
  io_uring_prep_cancel64(sqe, ud, 0);
  io_uring_sqe_set_data64(sqe, TAG_IGNORE);
  if (u->skip_ok) io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
  int rc;
  do rc = io_uring_submit(&u->ring);
  while (rc == -EINTR);
  return rc < 0 ? rc : 0;
}

static int uring_disarm(br__poller *p, int fd) {
  uring *u = p->impl;
  fdslot *s = slot(u, fd, false);
  if (!s || !s->armed) return -ENOENT;
  s->armed = false;
  /* Now: the pending poll keeps the file open (see the top). */
  return cancel_now(u, fd_ud(fd, s->gen));
}

static int poll_events(int res) {
  int r = 0;
  if (res & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) r |= BR_READABLE;
  if (res & (POLLOUT | POLLHUP | POLLERR)) r |= BR_WRITABLE;
  return r;
}

/* Handle one completion; returns 1 if it reported a descriptor. */
static int handle_cqe(br__poller *p, uring *u, struct io_uring_cqe *cqe, br__ready_fn ready,
                      void *ctx) {
  uint64_t ud = cqe->user_data;
  bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  switch (ud & TAG_MASK) {
  case TAG_OP: {
    br__io_req *req = (br__io_req *)(uintptr_t)ud;
    if (req) req->done(req, cqe->res);
    return 0;
  }
  case TAG_WAKE: {
    /* One read resets the counter (not a semaphore eventfd). */
    uint64_t v;
    ssize_t r = read(p->wake_fd, &v, sizeof v);
    (void)r;
    if (cqe->res == -EINVAL && u->multishot) u->multishot = false;
    if (!more) u->wake_armed = false;
    return 0;
  }
  case TAG_FD: {
    int fd = (int)(uint32_t)(ud >> 3);
    uint32_t gen = (uint32_t)(ud >> 35);
    fdslot *s = slot(u, fd, false);
    if (!s || !s->armed || (s->gen & 0x1fffffffu) != gen) return 0; /* stale */
    int reported = 0;
    if (cqe->res == -EINVAL && u->multishot) {
      /* No multishot poll in this kernel: one-shot from now on. */
      u->multishot = false;
    } else if (cqe->res < 0) {
      /* -EBADF and friends: wake whoever waits so they see the error from
       * their own system call. */
      ready(ctx, fd, BR_READABLE | BR_WRITABLE);
      reported = 1;
      if (cqe->res == -EBADF) {
        s->armed = false;
        return reported;
      }
    } else if (cqe->res > 0) {
      int ev = poll_events(cqe->res);
      if (ev) {
        ready(ctx, fd, ev);
        reported = 1;
      }
    }
    /* `ready` may have woken a task, never run one, so s is still valid;
     * re-arm a poll that has ended. */
    if (!more && s->armed) {
      struct io_uring_sqe *sqe = get_sqe(u);
      if (sqe)
        prep_fd_poll(u, sqe, fd, s->gen);
      else
        s->armed = false; /* cannot happen with a sane ring; don't lose it silently */
    }
    return reported;
  }
  default:
    return 0;
  }
}

#ifdef BRAID_TSAN
#include <signal.h>
/* ThreadSanitizer runs a signal's handler only when the thread next enters
 * a function it intercepts, and io_uring_enter (a raw system call in
 * liburing) is not one: a SIGINT caught while the loop was about to wait,
 * or one that interrupted the wait, would keep its handler (the loop's
 * wake-up) pending while the loop sleeps on for good. So under TSan a wait
 * lasts at most TSAN_WAIT_NS, and after each one an intercepted call lets a
 * pending handler run. (Without TSan the kernel runs the handler at once,
 * and it wakes the loop through the ring.) */
#define TSAN_WAIT_NS 20000000
static void tsan_run_pending_signals(void) {
  sigset_t cur;
  (void)pthread_sigmask(SIG_BLOCK, NULL, &cur);
}
#endif

static int uring_poll(br__poller *p, int64_t timeout_ns, br__ready_fn ready, void *ctx) {
  uring *u = p->impl;
  if (!u->wake_armed) arm_wake(p, u);
#ifdef BRAID_TSAN
  if (timeout_ns < 0 || timeout_ns > TSAN_WAIT_NS) timeout_ns = TSAN_WAIT_NS;
#endif
  struct io_uring_cqe *cqe = NULL;
  int rc;
  if (timeout_ns == 0) {
    rc = io_uring_submit(&u->ring);
    if (rc >= 0 && !io_uring_cq_ready(&u->ring)) {
      /* With COOP_TASKRUN, completions may be parked as task work until we
       * enter the kernel; io_uring_get_events runs it without waiting. */
      if (IO_URING_READ_ONCE(*u->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW))
        io_uring_get_events(&u->ring);
    }
  } else if (timeout_ns < 0) {
    rc = io_uring_submit_and_wait(&u->ring, 1);
  } else {
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                   .tv_nsec = timeout_ns % 1000000000};
    rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
  }
#ifdef BRAID_TSAN
  tsan_run_pending_signals();
#endif
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) return rc;

  int reported = 0;
  unsigned head, seen = 0;
  /* Completions are handled in batches; handling may queue new SQEs (re-arms)
   * but never reaps, so iterating the ring in place is safe. */
  io_uring_for_each_cqe(&u->ring, head, cqe) {
    reported += handle_cqe(p, u, cqe, ready, ctx);
    seen++;
  }
  io_uring_cq_advance(&u->ring, seen);
  return reported;
}

static void uring_wake(br__poller *p) {
  uint64_t one = 1;
  /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
  ssize_t r = write(p->wake_fd, &one, sizeof one);
  (void)r;
}

/* Submitted I/O: prepare one SQE; it goes to the kernel with the next poll. */
static int uring_submit(br__poller *p, br__io_req *req) {
  uring *u = p->impl;
  unsigned n = (unsigned)(req->n > 0x7ffff000 ? 0x7ffff000 : req->n);
  uint64_t off = req->off < 0 ? (uint64_t)-1 : (uint64_t)req->off;
  if (req->op > BR__IO_SEND || (req->op >= BR__IO_RECV && !p->sock_io)) return -ENOSYS;
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe) return -EAGAIN;
  switch (req->op) {
  case BR__IO_OPEN:
    io_uring_prep_openat(sqe, AT_FDCWD, req->path, req->flags | O_CLOEXEC, (mode_t)req->mode);
    break;
  case BR__IO_READ:
    io_uring_prep_read(sqe, req->fd, req->buf, n, off);
    break;
  case BR__IO_WRITE:
    io_uring_prep_write(sqe, req->fd, req->buf, n, off);
    break;
  case BR__IO_FSYNC:
    io_uring_prep_fsync(sqe, req->fd, 0);
    break;
  case BR__IO_RECV:
    io_uring_prep_recv(sqe, req->fd, req->buf, n, 0);
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    break;
  case BR__IO_SEND:
    io_uring_prep_send(sqe, req->fd, req->buf, n, MSG_NOSIGNAL);
    break;
  }
  io_uring_sqe_set_data(sqe, req); /* TAG_OP: pointers are 8-aligned */
  return 0;
}

/* End a submitted request early. Its own completion follows (-ECANCELED, or
 * its result if it won the race). */
static int uring_cancel(br__poller *p, br__io_req *req) {
  /* At once, as disarm: the operation holds the file (a closed socket would
   * send no FIN until the loop next polls). */
  return cancel_now(p->impl, (uint64_t)(uintptr_t)req);
}

const br__poller_ops br__poller_uring = {
  .name = "io_uring",
  .open = uring_open,
  .close = uring_close,
  .arm = uring_arm,
  .disarm = uring_disarm,
  .poll = uring_poll,
  .wake = uring_wake,
  .submit = uring_submit,
  .cancel = uring_cancel,
};

#endif
