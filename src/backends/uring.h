/* braid — what the io_uring backend offers beyond the poller interface:
 * native operations (files) submitted to the loop's own ring. Not public.
 *
 * Protocol, on the loop's thread, from a task:
 *   sqe = br__uring_get_sqe(p);          // NULL: not io_uring, or no room
 *   io_uring_prep_read(sqe, ...);        // any prep_* that sets no user_data
 *   br__uring_commit(p, sqe, f);         // f completes with the CQE's res
 *   br_await(f, &v);                     // (intptr_t)v is cqe->res
 * The SQE is submitted with everything else at the loop's next poll (so the
 * operations of many tasks go to the kernel in one system call), and the
 * ring holds a reference on f until the completion arrives. Memory that the
 * kernel reads or writes must stay valid until then, and must not be on a
 * compact task's stack.
 */
#ifndef BRAID_BACKENDS_URING_H
#define BRAID_BACKENDS_URING_H

#include <braid.h>
#include <stdbool.h>

#include "backends/poller.h"

struct io_uring_sqe;

/* Whether p is an opened io_uring poller. */
bool br__uring_active(const br__poller *p);

#ifdef BRAID_HAVE_LIBURING
/* A free SQE of p's ring (flushing the queue to the kernel if it is full),
 * or NULL when p is not io_uring or no SQE can be had. */
struct io_uring_sqe *br__uring_get_sqe(br__poller *p);

/* Tie a prepared SQE to future f: the ring takes a reference on f and
 * completes it with (void *)(intptr_t)cqe->res. */
void br__uring_commit(br__poller *p, struct io_uring_sqe *sqe, br_future *f);
#endif

#endif
