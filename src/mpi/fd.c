/* SPDX-License-Identifier: MIT */
/* braid-mpi — failure detection, in one place.
 *
 * Open MPI 4 and MPICH 4 without ULFM say nothing when a peer dies: with
 * mpirun --enable-recovery the survivors go on, and sends to the dead rank
 * still "succeed" (measured: MPI_Isend + MPI_Test return MPI_SUCCESS). So
 * braid-mpi finds dead ranks by itself, with three probes, all here:
 *
 *  1. The dying rank says so: its fatal-signal handler (and its watchdog,
 *     when a job overran its timeout) sends a DIED message to rank 0 before
 *     the process ends (serve.c). Best effort: nothing is sent for SIGKILL.
 *  2. A rank on rank 0's host is probed by pid (kill(pid, 0) == ESRCH, or a
 *     zombie in /proc): found within one probe period (~100 ms).
 *  3. A rank on another host that holds work must send a heartbeat every
 *     heartbeat_ms; silence for dead_after_ms counts as death.
 *
 * The worker side uses probe 2 the other way round to notice that rank 0 is
 * gone (then it stops serving instead of waiting forever).
 *
 * A ULFM-capable MPI would replace probes 2 and 3 by the error class
 * MPI_ERR_PROC_FAILED on the pool's communicator (MPI_Comm_set_errhandler
 * with MPI_ERRORS_RETURN is already set) and could then shrink the
 * communicator (MPIX_Comm_shrink) instead of merely avoiding the dead rank;
 * root.c only ever asks this file "is rank r dead, and why".
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "mpi/mpi_int.h"
#include "mpi/mpi_fd.h"

void br__mpfd_init(mp_peer *pe, int pid, const char *host, const char *my_host, int64_t now) {
  pe->pid = pid;
  snprintf(pe->host, sizeof pe->host, "%s", host);
  pe->same_host = strcmp(host, my_host) == 0;
  pe->last_heard = now;
}

void br__mpfd_heard(mp_peer *pe, int64_t now) { pe->last_heard = now; }

/* A process on this host is gone once kill(pid, 0) fails with ESRCH; a
 * zombie (exited, not yet reaped by its launcher daemon) is gone too. */
static bool pid_gone(int pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return errno == ESRCH;
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *rp = strrchr(buf, ')');
  return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

bool br__mpfd_dead(const mp_peer *pe, bool holds_work, int64_t now, int64_t dead_after_ns,
                   char *why, size_t n) {
  if (pe->same_host) {
    if (pid_gone(pe->pid)) {
      snprintf(why, n, "the process is gone");
      return true;
    }
    return false;
  }
  if (holds_work && now - pe->last_heard > dead_after_ns) {
    snprintf(why, n, "no heartbeat for %.1f s", (double)(now - pe->last_heard) / 1e9);
    return true;
  }
  return false;
}

void br__mpfd_describe_died(const w_died *d, char *why, size_t n) {
  if (d->why == DIED_OVERRUN)
    snprintf(why, n, "it ended itself: a job ran %.1f s past its timeout or cancellation",
             (double)d->overrun_ns / 1e9);
  else
    snprintf(why, n, "signal %d (%s)", d->sig, strsignal(d->sig));
}

bool br__mpfd_root_gone(const mp_peer *root) { return root->same_host && pid_gone(root->pid); }
