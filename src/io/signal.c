/* SPDX-License-Identifier: MIT */
/* braid — signals as something a task can wait for (signalfd).
 *
 * A signal handler can do almost nothing safely; a signalfd turns signals
 * into readable data, so a task waits for SIGTERM exactly as it waits for a
 * socket. The signals must be blocked, or the kernel delivers them the old
 * way: we block them in the calling thread (threads created later inherit
 * the mask; braid's pool threads block everything). */
#include <braid.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"
#include "sys/fd_link.h"
#ifdef BRAID_TSAN
#include "core/core.h"
#endif

int br_signal_open(const int *signals, size_t n) {
  if (!signals || n == 0) return BR_EINVAL;
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < n; i++) {
    if (signals[i] <= 0 || signals[i] == SIGKILL || signals[i] == SIGSTOP) return BR_EINVAL;
    if (sigaddset(&set, signals[i]) < 0) return BR_EINVAL;
  }
  int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (rc) {
    close(fd);
    return -rc;
  }
#ifdef BRAID_TSAN
  if (sigismember(&set, SIGINT)) br__tsan_sigint_claimed(); /* stays blocked (core/loop.c) */
#endif
  return fd;
}

/* 0 if fd is a signalfd, BR_EINVAL if it is something else, or the error
 * of fstat (BR_EBADF). Checked before the first read: a read of 128 bytes
 * from a socket, a pipe or a file would consume the caller's data and
 * return a "signal" made of it. A signalfd is an anonymous inode (no file
 * type in its mode); /proc, where mounted, names which kind. */
static int check_signalfd(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if ((st.st_mode & S_IFMT) != 0) return BR_EINVAL;
  char link[40];
  if (br__fd_link(0, fd, link, sizeof link) < 0) return 0; /* no /proc: the mode is all we can tell */
  return strcmp(link, "anon_inode:[signalfd]") == 0 ? 0 : BR_EINVAL;
}

int br_signal_wait(int sfd, int64_t deadline) {
  if (!br__in_task()) return BR_ENOTTASK;
  int rc = check_signalfd(sfd);
  if (rc < 0) return rc;
  rc = br__io_budget();
  if (rc < 0) return rc;
  for (;;) {
    struct signalfd_siginfo si;
    ssize_t r = read(sfd, &si, sizeof si);
    if (r == (ssize_t)sizeof si) return (int)si.ssi_signo;
    if (r >= 0) return BR_EIO;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    rc = br__io_wait(sfd, BR_READABLE, deadline);
    if (rc < 0) return rc;
  }
}
