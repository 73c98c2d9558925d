/* SPDX-License-Identifier: MIT */
/* braid — hooks the loop offers to the facilities above the core (io, obs).
 * Not public API. */
#ifndef BRAID_CORE_LOOP_H
#define BRAID_CORE_LOOP_H

#include <braid.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/poller.h"

/* The loop's poller. */
br__poller *br__loop_poller(br_loop *loop);
/* Submitted I/O: hand req (copied) to the loop's poller if it performs I/O
 * itself (io_uring), and store in *out a future completed, on the loop's
 * thread, with (void *)(intptr_t)res (>= 0, or a negative errno). Errors:
 * BR_ENOSYS when the poller does not offer it (fall back, e.g. to the
 * blocking pool), BR_EAGAIN when it has no room now (yield and retry),
 * BR_ENOMEM. The memory req names must stay valid until the future
 * completes, even if the waiter is cancelled: wait for it to the end.
 * Loop thread only. */
int br__loop_submit_io(br_loop *loop, const br__io_req *req, br_future **out);
/* br__sock_io: receive (send=false) into or send from buf, n bytes at most,
 * on socket fd by the calling task's loop poller (io_uring), suspending only
 * the task: the caller found the socket drained (receive) or tries a send the
 * kernel does with the poller's next submission. Returns the bytes moved,
 * 0 at end of stream, BR_ETIMEDOUT at deadline, BR_ECANCELED, BR_EBADF when
 * the descriptor was closed (br_close) meanwhile, BR_EBUSY when another task
 * reads fd already, another negated errno; or BR_ENOSYS when this path is not
 * taken here (not a task, a compact task, a poller without socket operations,
 * no room now, not a socket, n == 0, another task's send in flight or waiting
 * on fd, the task already cancelled or past deadline): do the system call and
 * use readiness instead. Bytes that arrived are returned even if the wait was
 * interrupted meanwhile (the interruption then shows at the next call). buf
 * belongs to the kernel until the call returns. Loop thread, tasks only. */
ssize_t br__sock_io(int fd, bool send, void *buf, size_t n, int64_t deadline);
/* br_now() at the loop's last return from its poller; 0 while it sleeps in
 * the poller (idle is not stuck). Read racily by the watchdog thread: a torn
 * read is impossible for an aligned int64 on our targets. */
int64_t br__loop_heartbeat(br_loop *loop);
pthread_t br__loop_thread(br_loop *loop);
/* The options the loop was created with (watchdog_ms, ...). */
const br_loop_opts *br__loop_opts(br_loop *loop);
/* Whether t runs in compact mode (its stack variables move while it waits,
 * so nobody may write into them asynchronously). */
bool br__task_is_compact(br_task *t);
/* Register the one observer told about every loop created (created=true,
 * from br_loop_new, on the creating thread) and freed (created=false, from
 * br_loop_free before anything is released). The obs layer uses it for the
 * watchdog; the core never includes obs. Any thread. */
void br__loop_set_observer(void (*fn)(br_loop *loop, bool created));
/* br_fail, br_cancelled and the waits of br_await / br_gather on an
 * executor's threads: see the job context in core/job.h. */

#endif
