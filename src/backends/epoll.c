/* SPDX-License-Identifier: MIT */
/* braid — the epoll backend: edge-triggered, one registration per fd for
 * both directions, an eventfd for wake-ups from other threads. */
#include "core/poller.h"

#include <braid.h>
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256

static int ep_open(br__poller *p) {
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  if (p->fd < 0) return -errno;
  p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->wake_fd < 0) {
    int e = errno;
    close(p->fd);
    return -e;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = -1};
  if (epoll_ctl(p->fd, EPOLL_CTL_ADD, p->wake_fd, &ev) < 0) {
    int e = errno;
    close(p->wake_fd);
    close(p->fd);
    return -e;
  }
  return 0;
}

static void ep_close(br__poller *p) {
  close(p->wake_fd);
  close(p->fd);
}

static int ep_arm(br__poller *p, int fd) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
  if (epoll_ctl(p->fd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  return 0;
}

static int ep_disarm(br__poller *p, int fd) {
  if (epoll_ctl(p->fd, EPOLL_CTL_DEL, fd, NULL) < 0) return -errno;
  return 0;
}

static int ep_poll(br__poller *p, int64_t timeout_ns, br__ready_fn ready, void *ctx) {
  struct epoll_event evs[BATCH];
  int n;
  if (timeout_ns < 0) {
    n = epoll_wait(p->fd, evs, BATCH, -1);
  } else {
    /* epoll_pwait2 takes nanoseconds: timers keep sub-millisecond accuracy. */
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    n = epoll_pwait2(p->fd, evs, BATCH, &ts, NULL);
    if (n < 0 && errno == ENOSYS) {
      int ms = (int)((timeout_ns + 999999) / 1000000);
      n = epoll_wait(p->fd, evs, BATCH, ms);
    }
  }
  if (n < 0) return errno == EINTR ? 0 : -errno;
  int reported = 0;
  for (int i = 0; i < n; i++) {
    if (evs[i].data.fd == -1) {
      uint64_t v;
      while (read(p->wake_fd, &v, sizeof v) > 0) {
      }
      continue;
    }
    uint32_t e = evs[i].events;
    int r = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) r |= BR_READABLE;
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) r |= BR_WRITABLE;
    ready(ctx, evs[i].data.fd, r);
    reported++;
  }
  return reported;
}

static void ep_wake(br__poller *p) {
  uint64_t one = 1;
  ssize_t r = write(p->wake_fd, &one, sizeof one);
  (void)r; /* EAGAIN means a wake-up is already pending */
}

const br__poller_ops br__poller_epoll = {
    .name = "epoll",
    .open = ep_open,
    .close = ep_close,
    .arm = ep_arm,
    .disarm = ep_disarm,
    .poll = ep_poll,
    .wake = ep_wake,
};
