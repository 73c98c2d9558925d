/* SPDX-License-Identifier: MIT */
/* braid — byte streams on non-blocking descriptors: read, write, vectors,
 * shutdown, sendfile, close, pipes.
 *
 * Every call tries the system call first and parks the task on br_wait_fd
 * only when the kernel says EAGAIN (readiness is edge-triggered: after
 * EAGAIN the next edge is guaranteed to wake us). Plain read/write/readv/
 * writev work on sockets, pipes and ttys alike; SIGPIPE is blocked in the
 * calling thread so a vanished reader gives EPIPE (see br__block_sigpipe).
 */
#include <braid.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/job.h"
#include "core/loop.h"
#include "io/io_internal.h"

static _Thread_local unsigned io_budget;
static _Thread_local bool sigpipe_blocked;

int br__io_budget(void) {
  if (++io_budget < BR__IO_BUDGET) return 0;
  io_budget = 0;
  return br_yield();
}

int br__io_wait(int fd, int events, int64_t deadline) {
  io_budget = 0;
  return br_wait_fd(fd, events, deadline);
}

/* br__sock_io, counted as a wait (the task parked) when it ran. */
static ssize_t sock_io(int fd, bool send, void *buf, size_t n, int64_t deadline) {
  ssize_t r = br__sock_io(fd, send, buf, n, deadline);
  if (r != BR_ENOSYS) io_budget = 0;
  return r;
}

void br__block_sigpipe(void) {
  if (sigpipe_blocked) return;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  sigpipe_blocked = true;
}

void br__eat_sigpipe(void) {
  sigset_t s, pending;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
}

int br__await_pinned(br_future *f, void **value, int64_t deadline) {
  int rc = br_await_until(f, NULL, deadline);
  if (br_future_done(f)) {
    if (value) *value = br_future_value(f);
    return br_future_error(f);
  }
  /* Interrupted while the producer still owns our memory: wait it out. */
  br__await_shielded(f);
  if (value) *value = br_future_value(f);
  return rc;
}

/* Common shape of the read-like calls. */
#define BR__IO_LOOP(fd, ev, deadline, syscall_expr)                           \
  do {                                                                        \
    if (!br__in_task()) return BR_ENOTTASK;                                   \
    int brc_ = br__io_budget();                                               \
    if (brc_ < 0) return brc_;                                                \
    for (;;) {                                                                \
      ssize_t r_ = (syscall_expr);                                            \
      if (r_ >= 0) return r_;                                                 \
      if (errno == EINTR) continue;                                           \
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;             \
      int w_ = br__io_wait((fd), (ev), (deadline));                           \
      if (w_ < 0) return w_;                                                  \
    }                                                                         \
  } while (0)

/* A read that found the socket drained: on io_uring the loop's ring
 * receives for the task (no second read after the wake-up); elsewhere, or
 * for anything but a socket, wait for readiness and read again. */
static ssize_t read_drained(int fd, void *buf, size_t n, int64_t deadline) {
  ssize_t r = sock_io(fd, false, buf, n, deadline);
  if (r != BR_ENOSYS) return r;
  for (;;) {
    int w = br__io_wait(fd, BR_READABLE, deadline);
    if (w < 0) return w;
    r = read(fd, buf, n);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
  }
}

ssize_t br_read(int fd, void *buf, size_t n, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int b = br__io_budget();
  if (b < 0) return b;
  for (;;) {
    ssize_t r = read(fd, buf, n);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    return read_drained(fd, buf, n, deadline);
  }
}

/* With readiness, waiting before the first attempt would save the attempt
 * that fails with EAGAIN after a short read, but it misses an end of stream
 * that arrived with the last data: the kernel raised one edge for both, the
 * short read's wait consumed it, and no edge follows, so the wait would last
 * until the deadline (the poller's hang-up report is folded into "readable"
 * by the core, so nothing tells the two cases apart without a system call):
 * there it reads first. The ring's receive waits first without that risk
 * (its poll looks at the socket's state, not at an edge). */
ssize_t br_read_ready(int fd, void *buf, size_t n, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  ssize_t r = sock_io(fd, false, buf, n, deadline);
  if (r != BR_ENOSYS) return r;
  return br_read(fd, buf, n, deadline);
}

ssize_t br_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline) {
  if (iovcnt < 0 || iovcnt > IOV_MAX) return BR_EINVAL;
  BR__IO_LOOP(fd, BR_READABLE, deadline, readv(fd, iov, iovcnt));
}

ssize_t br_read_full(int fd, void *buf, size_t n, int64_t deadline) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = br_read(fd, (char *)buf + got, n - got, deadline);
    if (r < 0) return r;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* One write attempt loop: returns bytes written (> 0) or an error. */
static ssize_t write_once(int fd, const void *buf, size_t n, int64_t deadline) {
  /* On io_uring a socket's send goes out with the loop's next submission,
   * together with every other task's (and cannot raise SIGPIPE). */
  ssize_t s = sock_io(fd, true, (void *)buf, n, deadline);
  if (s != BR_ENOSYS) return s;
  br__block_sigpipe();
  for (;;) {
    ssize_t r = write(fd, buf, n);
    if (r >= 0) return r;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int w = br__io_wait(fd, BR_WRITABLE, deadline);
      if (w < 0) return w;
      continue;
    }
    if (e == EPIPE) br__eat_sigpipe();
    return -e;
  }
}

ssize_t br_write_some(int fd, const void *buf, size_t n, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int b = br__io_budget();
  if (b < 0) return b;
  if (n == 0) return 0;
  return write_once(fd, buf, n, deadline);
}

ssize_t br_write(int fd, const void *buf, size_t n, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int b = br__io_budget();
  if (b < 0) return b;
  size_t done = 0;
  while (done < n) {
    ssize_t r = write_once(fd, (const char *)buf + done, n - done, deadline);
    if (r < 0) return r;
    done += (size_t)r;
  }
  return (ssize_t)n;
}

ssize_t br_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  if (iovcnt < 0 || iovcnt > IOV_MAX) return BR_EINVAL;
  int b = br__io_budget();
  if (b < 0) return b;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
  br__block_sigpipe();

  /* Fast path: the whole vector goes out in one call (the usual case). */
  ssize_t r;
  do r = writev(fd, iov, iovcnt);
  while (r < 0 && errno == EINTR);
  if (r >= 0 && (size_t)r == total) return r;
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    int e = errno;
    if (e == EPIPE) br__eat_sigpipe();
    return -e;
  }
  /* Partial: continue on a private copy of the vector (the caller's array
   * is const), skipping what was written. */
  struct iovec small[16];
  struct iovec *v = iovcnt <= 16 ? small : malloc(sizeof *v * (size_t)iovcnt);
  if (!v) return BR_ENOMEM;
  memcpy(v, iov, sizeof *v * (size_t)iovcnt);
  struct iovec *cur = v;
  int cnt = iovcnt;
  size_t done = r > 0 ? (size_t)r : 0;
  size_t skip = done;
  ssize_t ret = (ssize_t)total;
  for (;;) {
    while (cnt > 0 && skip >= cur->iov_len) {
      skip -= cur->iov_len;
      cur++;
      cnt--;
    }
    if (cnt == 0) break;
    cur->iov_base = (char *)cur->iov_base + skip;
    cur->iov_len -= skip;
    skip = 0;
    r = writev(fd, cur, cnt);
    if (r >= 0) {
      done += (size_t)r;
      skip = (size_t)r;
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int w = br__io_wait(fd, BR_WRITABLE, deadline);
      if (w < 0) {
        ret = w;
        break;
      }
      continue;
    }
    if (e == EPIPE) br__eat_sigpipe();
    ret = -e;
    break;
  }
  if (v != small) free(v);
  return ret;
}

int br_shutdown(int fd, int how) { return shutdown(fd, how) < 0 ? -errno : 0; }

ssize_t br_sendfile(int out_fd, int in_fd, off_t *offset, size_t count, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int b = br__io_budget();
  if (b < 0) return b;
  br__block_sigpipe();
  size_t done = 0;
  while (done < count) {
    size_t chunk = count - done;
    if (chunk > 0x7ffff000) chunk = 0x7ffff000;
    ssize_t r = sendfile(out_fd, in_fd, offset, chunk);
    if (r > 0) {
      done += (size_t)r;
      continue;
    }
    if (r == 0) break; /* end of file */
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int w = br__io_wait(out_fd, BR_WRITABLE, deadline);
      if (w < 0) return w;
      continue;
    }
    if (e == EPIPE) br__eat_sigpipe();
    return -e;
  }
  return (ssize_t)done;
}

int br_close(int fd) {
  if (fd < 0) return BR_EBADF;
  if (br_loop_current()) br_fd_forget(fd);
  /* Linux always releases the descriptor, even when close reports EINTR:
   * never retry (the number may already be someone else's). */
  if (close(fd) < 0 && errno != EINTR) return -errno;
  return 0;
}

int br_set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  int fdf = fcntl(fd, F_GETFD);
  if (fdf < 0) return -errno;
  if (!(fdf & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdf | FD_CLOEXEC) < 0) return -errno;
  return 0;
}

int br_pipe(int fds[2]) {
  if (!fds) return BR_EINVAL;
  return pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0 ? -errno : 0;
}
