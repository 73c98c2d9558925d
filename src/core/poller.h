/* SPDX-License-Identifier: MIT */
/* braid — the poller interface (core layer); backends implement it.
 *
 * A poller tells the loop which file descriptors became ready and lets other
 * threads wake the loop. The core owns this interface and picks the backend
 * (br__poller_open, core/poller.c); the backends (src/backends/: epoll,
 * always available, and io_uring, chosen at run time with a fallback to
 * epoll) are siblings that only fill in the table below. A backend never
 * calls into the rest of braid: it reports through the callbacks it is
 * given (ready, and a submitted request's done).
 *
 * Readiness model: edge-triggered. The loop registers a descriptor once
 * (arm) for both directions and keeps per-descriptor readiness bits; the
 * poller reports each edge through the `ready` callback. A backend that is
 * completion-based (io_uring) re-arms internally so the loop sees the same
 * edge semantics.
 *
 * Submitted I/O (optional). A backend that can perform an operation itself
 * (io_uring: the file operations of many tasks go to the kernel with the
 * loop's next poll, in one system call) offers `submit`; others leave it
 * NULL and the caller falls back (the blocking pool). The core wraps it for
 * the io layer as br__loop_submit_io (core/loop.h), which completes a future.
 */
#ifndef BRAID_CORE_POLLER_H
#define BRAID_CORE_POLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct br__poller br__poller;

/* Called by poll() once per ready descriptor: events is BR_READABLE |
 * BR_WRITABLE (errors and hang-ups are reported as both). */
typedef void (*br__ready_fn)(void *ctx, int fd, int events);

/* An operation for `submit`. The memory it names (path, buf) and the
 * request itself stay valid until done runs. */
typedef enum br__io_op {
  BR__IO_OPEN,
  BR__IO_READ,
  BR__IO_WRITE,
  BR__IO_FSYNC,
  /* Sockets (only where br__poller.sock_io): RECV waits for data before its
   * first attempt (the caller knows the socket is drained); SEND never raises
   * SIGPIPE. Both may be cut short by `cancel`. */
  BR__IO_RECV,
  BR__IO_SEND,
} br__io_op;

typedef struct br__io_req {
  br__io_op op;
  int fd;           /* READ, WRITE, FSYNC */
  const char *path; /* OPEN (relative to the working directory) */
  int flags, mode;  /* OPEN */
  void *buf;        /* READ, WRITE */
  size_t n;         /* READ, WRITE: at most 0x7ffff000 bytes per call */
  int64_t off;      /* READ, WRITE: -1 for the current file position */
  /* Called once, on the loop's thread from inside poll(), with the result
   * (>= 0) or a negative errno. */
  void (*done)(struct br__io_req *req, int64_t res);
} br__io_req;

typedef struct br__poller_ops {
  const char *name;
  /* Create the backend state; 0 or a negative errno. */
  int (*open)(br__poller *p);
  void (*close)(br__poller *p);
  /* Start watching fd for both directions, edge-triggered. */
  int (*arm)(br__poller *p, int fd);
  /* Stop watching fd (before it is closed). */
  int (*disarm)(br__poller *p, int fd);
  /* Wait up to timeout_ns (-1: forever, 0: don't block) and report ready
   * descriptors through ready(ctx, ...). Returns the number reported, or a
   * negative errno. A wake-up from wake() returns early. */
  int (*poll)(br__poller *p, int64_t timeout_ns, br__ready_fn ready, void *ctx);
  /* Make a concurrent or future poll() return. Any thread, async-signal-safe. */
  void (*wake)(br__poller *p);
  /* Optional (NULL: not offered): queue req; it is performed and
   * req->done called from a later poll(). 0, or -EAGAIN (no room now: try
   * again after a poll), -ENOSYS (not for this operation). Loop thread. */
  int (*submit)(br__poller *p, br__io_req *req);
  /* Optional, with submit: ask the kernel, at once, to end a submitted
   * request early (it still completes through done, with its result or
   * -ECANCELED). 0 or a negative errno. Loop thread. */
  int (*cancel)(br__poller *p, br__io_req *req);
} br__poller_ops;

struct br__poller {
  const br__poller_ops *ops;
  int fd;      /* epoll fd or ring fd */
  int wake_fd; /* eventfd used by wake() */
  void *impl;  /* backend-private state */
  /* The backend performs BR__IO_RECV/SEND (set by open); a pending one is
   * ended with cancel, which the backend submits at once. */
  bool sock_io;
};

/* The backends (src/backends/). */
extern const br__poller_ops br__poller_epoll;
extern const br__poller_ops br__poller_uring; /* open() fails with -ENOSYS
                                                 when built without liburing */

/* br__poller_open: pick a backend by name ("auto", "epoll", "io_uring"; NULL
 * reads BRAID_BACKEND, default auto) and open it. auto tries io_uring and
 * falls back to epoll, saying why when BRAID_DEBUG is set. */
int br__poller_open(br__poller *p, const char *name);

#endif
