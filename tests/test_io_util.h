/* SPDX-License-Identifier: MIT */
/* Helpers shared by the I/O tests (test_io_*.c, test_net_*.c). Header-only:
 * every test is its own program. */
#ifndef BRAID_TEST_IO_UTIL_H
#define BRAID_TEST_IO_UTIL_H

#include <braid.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_util.h"

/* Run body as a braid main task and require it to succeed. */
static inline void io_run(br_task_fn body, void *arg) {
  void *res = NULL;
  int rc = br_run(&res, body, arg);
  if (rc != 0) fprintf(stderr, "main failed: %s\n", br_strerror(rc));
  assert_int_equal(rc, 0);
}

/* Descriptors the process inherited (from a shell, ctest, ...): not ours
 * to judge. Filled by io_fd_baseline() at the start of main. */
static unsigned char io_inherited[4096];

static inline void io_fd_baseline(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] != '.' && fd >= 0 && fd < 4096) io_inherited[fd] = 1;
  }
  closedir(d);
}

/* Every descriptor opened since io_fd_baseline() is close-on-exec. */
static inline void io_assert_all_cloexec(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd <= 2 || fd == self || (fd < 4096 && io_inherited[fd])) continue;
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC)) {
      char path[64], target[256] = "";
      snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      ssize_t n = readlink(path, target, sizeof target - 1);
      if (n > 0) target[n] = '\0';
      fprintf(stderr, "fd %d (%s) is not close-on-exec\n", fd, target);
      fail();
    }
  }
  closedir(d);
}

/* A new task group (convention: int br_group_new(&g)). */
static inline br_group *io_group(void) {
  br_group *g = NULL;
  assert_int_equal(br_group_new(&g), 0);
  assert_non_null(g);
  return g;
}

/* A listener on 127.0.0.1 (or host) with an ephemeral port. */
static inline int io_listen(const char *host, int *port) {
  int lfd = br_tcp_listen(host ? host : "127.0.0.1", 0, 128, 0);
  assert_true(lfd >= 0);
  br_addr a;
  assert_int_equal(br_sock_local(lfd, &a), 0);
  *port = br_addr_port(&a);
  return lfd;
}

/* Name of the backend the current loop really uses. */
static inline const char *io_backend(void) {
  const char *b = getenv("BRAID_BACKEND");
  return b ? b : "auto";
}

#endif
