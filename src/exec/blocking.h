/* SPDX-License-Identifier: MIT */
/* braid — blocking pool internals shared with the I/O layer (not public). */
#ifndef BRAID_EXEC_BLOCKING_H
#define BRAID_EXEC_BLOCKING_H

#include <braid.h>
#include <stdbool.h>

/* Whether the calling thread is running a blocking-pool job. */
bool br__blocking_in_job(void);

/* Test hook: the next n attempts to create a pool thread fail with EAGAIN,
 * as when RLIMIT_NPROC or memory runs out. */
void br__blocking_fail_thread_creates(int n);

#endif
