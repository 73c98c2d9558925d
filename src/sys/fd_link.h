/* SPDX-License-Identifier: MIT */
/* braid — what a descriptor is, as /proc names it (sys layer). */
#ifndef BRAID_SYS_FD_LINK_H
#define BRAID_SYS_FD_LINK_H

#include <stddef.h>
#include <sys/types.h>

/* The target of /proc/<pid>/fd/<fd> (pid 0: this process), such as
 * "socket:[123]", "anon_inode:[signalfd]" or a path, NUL-terminated in buf
 * (cut to size - 1 bytes). Returns its length, or -1 when it cannot be read
 * (no /proc, no such descriptor or process). Any thread. */
ssize_t br__fd_link(pid_t pid, int fd, char *buf, size_t size);

#endif
