/* SPDX-License-Identifier: MIT */
/* braid — sockets: addresses, listen/accept/connect for TCP (IPv4, IPv6)
 * and Unix, socket pairs, UDP.
 *
 * Every socket is created SOCK_NONBLOCK | SOCK_CLOEXEC in the same system
 * call (no window where a concurrent fork+exec could inherit it).
 */
#include <braid.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */

int br_addr_ip(br_addr *out, const char *host, int port) {
  if (!out || port < 0 || port > 65535) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  if (!host || !*host) {
    out->u.in6.sin6_family = AF_INET6;
    out->u.in6.sin6_addr = in6addr_any;
    out->u.in6.sin6_port = htons((uint16_t)port);
    out->len = sizeof out->u.in6;
    return 0;
  }
  if (inet_pton(AF_INET, host, &out->u.in4.sin_addr) == 1) {
    out->u.in4.sin_family = AF_INET;
    out->u.in4.sin_port = htons((uint16_t)port);
    out->len = sizeof out->u.in4;
    return 0;
  }
  /* IPv6, optionally in brackets and with a %scope (interface). */
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 4];
  size_t len = strlen(host);
  if (len >= sizeof buf) return BR_EINVAL;
  memcpy(buf, host, len + 1);
  char *h = buf;
  if (h[0] == '[') {
    if (len < 2 || h[len - 1] != ']') return BR_EINVAL;
    h[len - 1] = '\0';
    h++;
  }
  char *scope = strchr(h, '%');
  if (scope) *scope++ = '\0';
  if (inet_pton(AF_INET6, h, &out->u.in6.sin6_addr) != 1) return BR_EINVAL;
  if (scope) {
    unsigned idx = if_nametoindex(scope);
    if (!idx) {
      char *end;
      unsigned long v = strtoul(scope, &end, 10);
      if (*end || !*scope) return BR_EINVAL;
      idx = (unsigned)v;
    }
    out->u.in6.sin6_scope_id = idx;
  }
  out->u.in6.sin6_family = AF_INET6;
  out->u.in6.sin6_port = htons((uint16_t)port);
  out->len = sizeof out->u.in6;
  return 0;
}

int br_addr_unix(br_addr *out, const char *path) {
  if (!out || !path || !*path) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  size_t len = strlen(path);
  if (len >= sizeof out->u.un.sun_path) return BR_E2BIG;
  out->u.un.sun_family = AF_UNIX;
  memcpy(out->u.un.sun_path, path, len);
  if (path[0] == '@') {
    /* abstract: a leading NUL, and the length says where the name ends */
    out->u.un.sun_path[0] = '\0';
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  return 0;
}

int br_addr_port(const br_addr *a) {
  if (!a) return BR_EINVAL;
  if (a->u.sa.sa_family == AF_INET) return ntohs(a->u.in4.sin_port);
  if (a->u.sa.sa_family == AF_INET6) return ntohs(a->u.in6.sin6_port);
  return BR_EINVAL;
}

int br_addr_format(const br_addr *a, char *buf, size_t n) {
  if (!a || (!buf && n)) return BR_EINVAL;
  char ip[INET6_ADDRSTRLEN];
  switch (a->u.sa.sa_family) {
  case AF_INET:
    inet_ntop(AF_INET, &a->u.in4.sin_addr, ip, sizeof ip);
    return snprintf(buf, n, "%s:%d", ip, ntohs(a->u.in4.sin_port));
  case AF_INET6:
    inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
    return snprintf(buf, n, "[%s]:%d", ip, ntohs(a->u.in6.sin6_port));
  case AF_UNIX: {
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if (a->len <= off) return snprintf(buf, n, "<unnamed>");
    size_t plen = a->len - off;
    if (a->u.un.sun_path[0] == '\0')
      return snprintf(buf, n, "@%.*s", (int)(plen - 1), a->u.un.sun_path + 1);
    return snprintf(buf, n, "%.*s", (int)strnlen(a->u.un.sun_path, plen), a->u.un.sun_path);
  }
  default:
    return BR_EINVAL;
  }
}

int br_sock_local(int fd, br_addr *out) {
  if (!out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  socklen_t len = sizeof out->u;
  if (getsockname(fd, &out->u.sa, &len) < 0) return -errno;
  out->len = len;
  return 0;
}

int br_sock_peer(int fd, br_addr *out) {
  if (!out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  socklen_t len = sizeof out->u;
  if (getpeername(fd, &out->u.sa, &len) < 0) return -errno;
  out->len = len;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                 */

static int set_int(int fd, int level, int opt, int v) {
  return setsockopt(fd, level, opt, &v, sizeof v) < 0 ? -errno : 0;
}

static void apply_nodelay(int fd, int family, unsigned flags) {
  if ((flags & BR_SOCK_NODELAY) && (family == AF_INET || family == AF_INET6))
    set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

/* Bind a fresh socket of type to a with the options of flags. */
static int bound_socket(const br_addr *a, int type, unsigned flags) {
  if (!a || a->len == 0) return BR_EINVAL;
  int family = a->u.sa.sa_family;
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc = 0;
  if (family == AF_INET || family == AF_INET6) {
    if (type == SOCK_STREAM) rc = set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!rc && (flags & BR_SOCK_REUSEPORT)) rc = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (!rc && family == AF_INET6)
      rc = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, (flags & BR_SOCK_V6ONLY) ? 1 : 0);
  } else if (family == AF_UNIX && a->u.un.sun_path[0] != '\0') {
    /* A socket file left by an earlier run makes bind fail with EADDRINUSE;
     * remove it if nobody listens there (asyncio does the same). */
    struct stat st;
    if (stat(a->u.un.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
      int probe = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (probe >= 0) {
        if (connect(probe, &a->u.sa, a->len) < 0 && errno == ECONNREFUSED)
          unlink(a->u.un.sun_path);
        close(probe);
      }
    }
  }
  if (!rc && bind(fd, &a->u.sa, a->len) < 0) rc = -errno;
  if (rc) {
    close(fd);
    return rc;
  }
  return fd;
}

int br_listen(const br_addr *a, int backlog, unsigned flags) {
  int fd = bound_socket(a, SOCK_STREAM, flags);
  if (fd < 0) return fd;
  if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* Turn host/port into an address: numeric at once, names via br_resolve. */
static int host_addr(br_addr *out, const char *host, int port, int64_t deadline) {
  if (br_addr_ip(out, host, port) == 0) return 0;
  if (port < 0 || port > 65535) return BR_EINVAL;
  char svc[8];
  snprintf(svc, sizeof svc, "%d", port);
  int n = br_resolve(out, 1, host, svc, AF_UNSPEC, deadline);
  return n < 0 ? n : 0;
}

int br_tcp_listen(const char *host, int port, int backlog, unsigned flags) {
  br_addr a;
  int rc = host_addr(&a, host, port, BR_NEVER);
  if (rc < 0) return rc;
  int fd = br_listen(&a, backlog, flags);
  if (fd == -EAFNOSUPPORT && (!host || !*host)) {
    /* No IPv6 in this kernel: the IPv4 wildcard instead. */
    a.u.in4 = (struct sockaddr_in){.sin_family = AF_INET,
                                   .sin_port = htons((uint16_t)port),
                                   .sin_addr = {htonl(INADDR_ANY)}};
    a.len = sizeof a.u.in4;
    fd = br_listen(&a, backlog, flags);
  }
  return fd;
}

int br_unix_listen(const char *path, int backlog) {
  br_addr a;
  int rc = br_addr_unix(&a, path);
  if (rc < 0) return rc;
  return br_listen(&a, backlog, 0);
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                 */

/* Whether fd is a listening socket (SO_ACCEPTCONN). */
static bool is_listening(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

int br_accept_flags(int lfd, br_addr *peer, unsigned flags, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int rc = br__io_budget();
  if (rc < 0) return rc;
  int64_t backoff = 1000000; /* 1 ms, doubling to 100 ms */
  for (;;) {
    br_addr tmp;
    socklen_t len = sizeof tmp.u;
    int fd = accept4(lfd, &tmp.u.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      apply_nodelay(fd, tmp.u.sa.sa_family, flags);
      if (peer) {
        *peer = tmp;
        peer->len = len;
      }
      return fd;
    }
    int e = errno;
    switch (e) {
    case EINTR:
    /* The peer gave up before we accepted, or a transient network error
     * Linux passes on to accept (see accept(2), "Error handling"). */
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH:
      continue;
    case EOPNOTSUPP:
      /* A pending error of TCP, or a socket that can never accept (UDP,
       * a Unix datagram socket), which says it for ever: retrying that
       * would spin the loop past any deadline. */
      if (!is_listening(lfd)) return BR_EINVAL;
      continue;
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      rc = br__io_wait(lfd, BR_READABLE, deadline);
      if (rc < 0) return rc;
      continue;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: {
      /* Out of descriptors or memory. Failing would make a typical accept
       * loop exit (or spin): instead back off while the other tasks go on,
       * and retry. The connection stays in the backlog meanwhile. */
      int64_t now = br_now();
      if (now >= deadline) return BR_ETIMEDOUT;
      rc = br_sleep_until(br__min64(now + backoff, deadline));
      if (rc < 0) return rc;
      backoff = br__min64(backoff * 2, 100000000);
      continue;
    }
    default:
      return -e;
    }
  }
}

int br_accept(int lfd, br_addr *peer, int64_t deadline) {
  return br_accept_flags(lfd, peer, 0, deadline);
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                                */

int br_connect(const br_addr *a, unsigned flags, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  if (!a || a->len == 0) return BR_EINVAL;
  int rc = br__io_budget();
  if (rc < 0) return rc;
  int family = a->u.sa.sa_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  apply_nodelay(fd, family, flags);
  int64_t backoff = 1000000;
  for (;;) {
    if (connect(fd, &a->u.sa, a->len) == 0) return fd;
    int e = errno;
    if (e == EINPROGRESS || e == EINTR) {
      /* In progress (EINTR: it goes on asynchronously): wait until the
       * socket is writable, then read the outcome. */
      rc = br__io_wait(fd, BR_WRITABLE, deadline);
      if (rc < 0) goto fail;
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err) {
        rc = -err;
        goto fail;
      }
      return fd;
    }
    if (e == EAGAIN && family == AF_UNIX) {
      /* A Unix listener's backlog is full; there is no readiness event for
       * room in it, so poll with back-off. */
      int64_t now = br_now();
      if (now >= deadline) {
        rc = BR_ETIMEDOUT;
        goto fail;
      }
      rc = br_sleep_until(br__min64(now + backoff, deadline));
      if (rc < 0) goto fail;
      backoff = br__min64(backoff * 2, 50000000);
      continue;
    }
    rc = -e;
    goto fail;
  }
fail:
  br_close(fd);
  return rc;
}

int br_tcp_connect(const char *host, int port, unsigned flags, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  br_addr addrs[8];
  int n;
  if (br_addr_ip(&addrs[0], host, port) == 0 && host && *host) {
    n = 1;
  } else {
    if (!host || !*host) return BR_EINVAL;
    if (port < 0 || port > 65535) return BR_EINVAL;
    char svc[8];
    snprintf(svc, sizeof svc, "%d", port);
    n = br_resolve(addrs, 8, host, svc, AF_UNSPEC, deadline);
    if (n < 0) return n;
  }
  int rc = BR_ECONNREFUSED;
  for (int i = 0; i < n; i++) {
    rc = br_connect(&addrs[i], flags, deadline);
    if (rc >= 0 || rc == BR_ECANCELED || rc == BR_ETIMEDOUT) return rc;
  }
  return rc;
}

int br_unix_connect(const char *path, int64_t deadline) {
  br_addr a;
  int rc = br_addr_unix(&a, path);
  if (rc < 0) return rc;
  return br_connect(&a, 0, deadline);
}

int br_socketpair(int fds[2], int type) {
  if (!fds || (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET))
    return BR_EINVAL;
  return socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------------------ */
/* UDP                                                                       */

int br_udp_bind(const br_addr *a, unsigned flags) {
  return bound_socket(a, SOCK_DGRAM, flags);
}

int br_udp_open(int family) {
  if (family != AF_INET && family != AF_INET6) return BR_EINVAL;
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

ssize_t br_sendto(int fd, const void *buf, size_t n, const br_addr *to, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int rc = br__io_budget();
  if (rc < 0) return rc;
  for (;;) {
    ssize_t r = sendto(fd, buf, n, MSG_NOSIGNAL, to ? &to->u.sa : NULL, to ? to->len : 0);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    rc = br__io_wait(fd, BR_WRITABLE, deadline);
    if (rc < 0) return rc;
  }
}

ssize_t br_recvfrom(int fd, void *buf, size_t n, br_addr *from, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int rc = br__io_budget();
  if (rc < 0) return rc;
  for (;;) {
    br_addr tmp;
    socklen_t len = sizeof tmp.u;
    ssize_t r = recvfrom(fd, buf, n, MSG_TRUNC, &tmp.u.sa, &len);
    if (r >= 0) {
      if (from) {
        *from = tmp;
        from->len = len;
      }
      return (size_t)r > n ? (ssize_t)n : r;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    rc = br__io_wait(fd, BR_READABLE, deadline);
    if (rc < 0) return rc;
  }
}
