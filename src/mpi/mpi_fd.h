/* SPDX-License-Identifier: MIT */
/* braid-mpi — failure detection (fd.c has the whole story). */
#ifndef BRAID_MPI_FD_H
#define BRAID_MPI_FD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpi/mpi_int.h"

/* What rank 0 knows of a peer (or a worker of rank 0). */
typedef struct mp_peer {
  int pid;
  char host[MP_HOST_MAX];
  bool same_host;
  int64_t last_heard; /* br_now() of its last message */
} mp_peer;

/* How often root.c runs the probes (ns). */
#define MP_FD_PERIOD_NS (100 * 1000 * 1000)

void br__mpfd_init(mp_peer *pe, int pid, const char *host, const char *my_host, int64_t now);
void br__mpfd_heard(mp_peer *pe, int64_t now);
/* Is the peer dead? If so, true with the reason in why. holds_work: it has
 * units in flight (only then is silence suspicious). */
bool br__mpfd_dead(const mp_peer *pe, bool holds_work, int64_t now, int64_t dead_after_ns,
                   char *why, size_t n);
/* The reason a DIED message gives. */
void br__mpfd_describe_died(const w_died *d, char *why, size_t n);
/* Worker side: is rank 0 gone? (Only known for a rank 0 on the same host.) */
bool br__mpfd_root_gone(const mp_peer *root);

#endif
