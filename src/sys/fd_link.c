/* SPDX-License-Identifier: MIT */
/* braid — what a descriptor is, as /proc names it (sys/fd_link.h). */
#include "sys/fd_link.h"

#include <stdio.h>
#include <unistd.h>

ssize_t br__fd_link(pid_t pid, int fd, char *buf, size_t size) {
  if (size == 0) return -1;
  char path[64];
  if (pid) snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  else snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, buf, size - 1);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}
