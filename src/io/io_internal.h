/* SPDX-License-Identifier: MIT */
/* braid — helpers shared by the I/O layer's files (not public). */
#ifndef BRAID_IO_INTERNAL_H
#define BRAID_IO_INTERNAL_H

#include <braid.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

/* Consecutive I/O calls that completed without waiting before the caller is
 * made to yield once. A task whose socket always has data (a fast peer, an
 * accept queue that never drains) would otherwise never give the loop back:
 * the same cooperative budget Tokio uses. Yielding is also the point where
 * such a task sees its cancellation. */
#define BR__IO_BUDGET 128

/* br__io_budget: count one immediate success; every BR__IO_BUDGET-th call
 * yields and returns what br_yield returned (0, BR_ECANCELED, BR_ETIMEDOUT).
 * Call before the system call so a cancelled task stops before it consumes
 * data. The counter is per thread: a loop's tasks share it, which only
 * makes the yields a little early. */
int br__io_budget(void);

/* br__io_wait: br_wait_fd, and resets the budget (the task gave the loop
 * back). Returns > 0 or a negative code. */
int br__io_wait(int fd, int events, int64_t deadline);

/* br__await_pinned: await a future whose producer (a pool thread, the ring)
 * still uses memory the caller owns. If the wait is interrupted (cancel,
 * deadline) the call keeps waiting, shielded, until the producer is done, and
 * then returns the interruption code with *value set to the producer's
 * result (so the caller can release what it produced, e.g. close an fd).
 * Returns 0 when the future completed normally (its value in *value), the
 * future's own error, or BR_ECANCELED / BR_ETIMEDOUT. */
int br__await_pinned(br_future *f, void **value, int64_t deadline);

/* br__in_task: whether the caller runs inside a braid task. */
static inline bool br__in_task(void) { return br_self() != NULL; }

/* br__block_sigpipe: block SIGPIPE in the calling thread (once per thread),
 * so a write to a pipe or socket whose reader is gone fails with EPIPE
 * instead of killing the process; br__eat_sigpipe consumes the signal that
 * write left pending. Children get a clean mask (see process.c). */
void br__block_sigpipe(void);
void br__eat_sigpipe(void);

/* Absolute deadline for a relative step, capped at `deadline`. */
static inline int64_t br__min64(int64_t a, int64_t b) { return a < b ? a : b; }

#endif
