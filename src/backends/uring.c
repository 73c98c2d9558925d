/* io_uring backend placeholder: reports ENOSYS so `auto` picks epoll. The
 * I/O work (issue 4) replaces this file with the liburing implementation. */
#include "backends/poller.h"

#include <errno.h>

static int uring_open(br__poller *p) { (void)p; return -ENOSYS; }

const br__poller_ops br__poller_uring = {
  .name = "io_uring", .open = uring_open,
};
