/* braid — the poller interface (backends layer).
 *
 * A poller tells the loop which file descriptors became ready and lets other
 * threads wake the loop. Backends are siblings behind this one small table of
 * function pointers: epoll (always available) and io_uring (liburing, chosen
 * at run time, falls back to epoll). The loop owns one poller.
 *
 * Readiness model: edge-triggered. The loop registers a descriptor once
 * (arm) for both directions and keeps per-descriptor readiness bits; the
 * poller reports each edge through the `ready` callback. A backend that is
 * completion-based (io_uring) re-arms internally so the loop sees the same
 * edge semantics.
 */
#ifndef BRAID_BACKENDS_POLLER_H
#define BRAID_BACKENDS_POLLER_H

#include <stdint.h>

typedef struct br__poller br__poller;

/* Called by poll() once per ready descriptor: events is BR_READABLE |
 * BR_WRITABLE (errors and hang-ups are reported as both). */
typedef void (*br__ready_fn)(void *ctx, int fd, int events);

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
   * negative errno. A wake-up from br__poller_wake() returns early. */
  int (*poll)(br__poller *p, int64_t timeout_ns, br__ready_fn ready, void *ctx);
  /* Make a concurrent or future poll() return. Any thread, async-signal-safe. */
  void (*wake)(br__poller *p);
} br__poller_ops;

struct br__poller {
  const br__poller_ops *ops;
  int fd;      /* epoll fd or ring fd */
  int wake_fd; /* eventfd used by wake() */
  void *impl;  /* backend-private state */
};

extern const br__poller_ops br__poller_epoll;
extern const br__poller_ops br__poller_uring; /* open() fails with -ENOSYS
                                                 when built without liburing */

/* br__poller_open: pick a backend by name ("auto", "epoll", "io_uring"; NULL
 * reads BRAID_BACKEND, default auto) and open it. auto tries io_uring and
 * falls back to epoll, saying why when BRAID_DEBUG is set. */
int br__poller_open(br__poller *p, const char *name);

#endif
