/* SPDX-License-Identifier: MIT */
/* braid — the core picks the poller backend at run time (core/poller.h). */
#include "core/poller.h"

#include "core/env.h"
#include "core/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

int br__poller_open(br__poller *p, const char *name) {
  if (!name) name = getenv("BRAID_BACKEND");
  if (!name || !*name) name = "auto";
  bool debug = getenv("BRAID_DEBUG") && strcmp(getenv("BRAID_DEBUG"), "0");
  p->impl = NULL;
  p->sock_io = false;
  /* BRAID_URING_SOCKETS=0: sockets on readiness on io_uring too, as on epoll
   * (to compare). Read whatever the backend, so a bad value is always said. */
  static const char *const onoff[] = {"0", "1", NULL};
  static atomic_bool warned;
  bool ring_sockets = br__env_choice("BRAID_URING_SOCKETS", onoff, &warned) != 0;
  if (!strcmp(name, "epoll")) {
    p->ops = &br__poller_epoll;
    return p->ops->open(p);
  }
  if (!strcmp(name, "io_uring") || !strcmp(name, "auto")) {
    p->ops = &br__poller_uring;
    int rc = p->ops->open(p);
    if (rc == 0) {
      if (!ring_sockets) p->sock_io = false;
      return 0;
    }
    if (!strcmp(name, "io_uring")) {
      br__log(BR_LOG_WARN, "BRAID_BACKEND=io_uring but io_uring is unavailable (%s); using epoll",
              strerror(-rc));
    } else if (debug) {
      br__log(BR_LOG_INFO, "io_uring unavailable (%s); using epoll", strerror(-rc));
    }
    p->ops = &br__poller_epoll;
    return p->ops->open(p);
  }
  br__log(BR_LOG_ERROR, "unknown BRAID_BACKEND '%s' (want auto, epoll or io_uring)", name);
  return -EINVAL;
}
