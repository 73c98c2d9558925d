/* SPDX-License-Identifier: MIT */
/* braid — process pool: passing descriptors over a Unix socket.
 *
 * Who runs this: all three processes of a pool — the parent (its manager
 * thread and submitters, under the pool's mutex), the fork server and the
 * workers — each on its own sockets. No shared state, no locks.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec/procpool_shm.h"

int br__pp_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(PP_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    mh.msg_control = u.b;
    mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
    if (n >= 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int br__pp_recv_fds_ex(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags,
                       bool *truncated) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(PP_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                      .msg_controllen = sizeof u.b};
  *nfds = 0;
  ssize_t n;
  do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  /* MSG_CTRUNC: descriptors were dropped, because our buffer was too small
   * for them or because this process had no free descriptor number to
   * install them in (RLIMIT_NOFILE reached: the kernel discards them). */
  if (truncated) *truncated = (mh.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int got[PP_MAX_FDS];
    memcpy(got, CMSG_DATA(c), (size_t)k * sizeof(int));
    for (int i = 0; i < k; i++) {
      if (*nfds < maxfds) fds[(*nfds)++] = got[i];
      else close(got[i]);
    }
  }
  return (int)n;
}

int br__pp_recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags) {
  return br__pp_recv_fds_ex(sock, buf, len, fds, maxfds, nfds, flags, NULL);
}
