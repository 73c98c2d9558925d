/* SPDX-License-Identifier: MIT */
/* braid — getaddrinfo off the loop (br_resolve).
 *
 * Lookups run as jobs of the blocking pool's DNS class: its own threads
 * (4 by default) and queue, so a slow resolver neither takes the threads of
 * file operations and user jobs nor is starved by them.
 *
 * An interrupted wait (deadline, cancel) abandons the job: the job marks
 * itself abandoned under no lock — the waiter hands the job's memory to a
 * completion callback on the future, which frees it whenever the lookup
 * ends (or at once if it already has). A job abandoned before it started
 * skips the lookup.
 */
#include <braid.h>

#include <netdb.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/job.h"
#include "io/io_internal.h"

typedef struct dns_job {
  char *host, *service;
  int family;
  atomic_bool abandoned;
  struct addrinfo *res;
  int rc;
  br_future *f;
} dns_job;

static int map_gai(int rc) {
  switch (rc) {
  case 0:
    return 0;
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
  case EAI_ADDRFAMILY:
#endif
    return BR_ENOENT;
  case EAI_AGAIN:
    return BR_EAGAIN;
  case EAI_MEMORY:
    return BR_ENOMEM;
  case EAI_SYSTEM:
    return errno ? -errno : BR_EIO;
  case EAI_FAIL:
    return BR_EIO;
  default: /* EAI_SERVICE, EAI_FAMILY, EAI_SOCKTYPE, EAI_BADFLAGS */
    return BR_EINVAL;
  }
}

static int lookup(const char *host, const char *service, int family, int extra_flags,
                  struct addrinfo **res) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG | extra_flags | (host ? 0 : AI_PASSIVE);
  errno = 0;
  int rc = getaddrinfo(host, service ? service : "0", &hints, res);
  if (rc == EAI_NONAME && (hints.ai_flags & AI_ADDRCONFIG)) {
    /* AI_ADDRCONFIG hides ::1 and 127.0.0.1 on a host with loopback only:
     * ask again without it before saying "no such host". */
    hints.ai_flags &= ~AI_ADDRCONFIG;
    rc = getaddrinfo(host, service ? service : "0", &hints, res);
  }
  return map_gai(rc);
}

static int copy_out(const struct addrinfo *ai, br_addr *out, size_t max) {
  size_t n = 0;
  for (; ai && n < max; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof out[n].u) continue;
    memset(&out[n], 0, sizeof out[n]);
    memcpy(&out[n].u, ai->ai_addr, ai->ai_addrlen);
    out[n].len = ai->ai_addrlen;
    n++;
  }
  return n ? (int)n : BR_ENOENT;
}

static void *dns_run(void *arg) {
  dns_job *j = arg;
  if (!atomic_load(&j->abandoned)) j->rc = lookup(j->host, j->service, j->family, 0, &j->res);
  return j;
}

static void dns_free(dns_job *j) {
  if (j->res) freeaddrinfo(j->res);
  free(j->host);
  free(j->service);
  free(j);
}

static void dns_abandoned_done(void *arg) {
  dns_job *j = arg;
  br_future *f = j->f;
  dns_free(j);
  br_future_unref(f);
}

static bool is_numeric_service(const char *s) {
  if (!s) return true;
  if (!*s) return false;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return false;
  return true;
}

int br_resolve(br_addr *out, size_t max, const char *host, const char *service, int family,
               int64_t deadline) {
  if (!out || max == 0) return BR_EINVAL;
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return BR_EINVAL;
  struct addrinfo *res = NULL;
  int rc;

  /* Numeric host and port: getaddrinfo answers without any I/O. */
  if (is_numeric_service(service)) {
    rc = lookup(host, service, family, AI_NUMERICHOST | AI_NUMERICSERV, &res);
    if (rc == 0) goto done;
    if (!host) return rc;
  }
  if (!br__in_task()) {
    /* A plain thread may block. */
    rc = lookup(host, service, family, 0, &res);
    goto done;
  }

  dns_job *j = calloc(1, sizeof *j);
  if (!j) return BR_ENOMEM;
  j->family = family;
  j->host = host ? strdup(host) : NULL;
  j->service = service ? strdup(service) : NULL;
  if ((host && !j->host) || (service && !j->service)) {
    dns_free(j);
    return BR_ENOMEM;
  }
  br_future *f;
  rc = br_to_thread_class(&f, BR_BLOCKING_DNS, dns_run, j);
  if (rc < 0) {
    /* The pool refused the job (queue full, no thread): it never ran. */
    dns_free(j);
    return rc;
  }
  j->f = f;
  rc = br_await_until(f, NULL, deadline);
  if (!br_future_done(f)) {
    /* Interrupted: leave the job to finish on its own. */
    atomic_store(&j->abandoned, true);
    if (br_future_on_done(f, dns_abandoned_done, j) < 0) {
      /* No memory for the callback: wait it out rather than leak. */
      br__await_shielded(f);
      dns_abandoned_done(j);
    }
    return rc;
  }
  rc = j->rc;
  res = j->res;
  j->res = NULL;
  dns_free(j);
  br_future_unref(f);

done:
  if (rc < 0) return rc;
  rc = copy_out(res, out, max);
  freeaddrinfo(res);
  return rc;
}
