/* SPDX-License-Identifier: MIT */
/* braid/auto.h — the auto executor: measure each function, then route it.
 *
 * The articles braid grew from say it four times: classify the work first,
 * then pick the model. br_auto_submit does that per function, at run time.
 * It measures the first calls of each function it is given (CPU time against
 * wall time on the thread that ran it, whether it blocked in the kernel, how
 * long it ran) and what a hand-off to another thread costs on this machine,
 * and routes the next calls of that function:
 *
 *  - inline, on the caller's thread, when a call is shorter than a hand-off
 *    and computes (waiting for another thread would cost more than the call);
 *  - to the blocking pool (br_to_thread) when it mostly waits: blocking
 *    system calls, sleeps, locks — so it never stalls a loop or a CPU worker;
 *  - to the CPU pool (br_pool, one worker per CPU) when it computes.
 *
 * It keeps measuring (every call on the pools, every eighth inline) and moves
 * a function when its behaviour changes — a function that starts blocking
 * leaves the CPU pool. br_auto_explain says where a function's calls go and
 * why. The process pool is not among the routes: a br_task_fn's argument is
 * a pointer, which does not cross processes; for isolation submit registered
 * jobs to br_procpool yourself.
 *
 * Every call returns the same br_future as every other executor: await it
 * from a task (the task suspends), wait for it from a thread, gather it with
 * futures of any kind. A function fails the usual way, `return br_fail(code,
 * "fmt", ...)`, whichever route it took.
 */
#ifndef BRAID_AUTO_H
#define BRAID_AUTO_H

#include <stddef.h>

#include "braid.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where br_auto_submit sends a function's calls now. */
typedef enum br_auto_route {
  BR_AUTO_MEASURING = 0, /* not enough calls seen yet (they run on the blocking pool) */
  BR_AUTO_INLINE = 1,    /* on the caller's thread */
  BR_AUTO_BLOCKING = 2,  /* the blocking pool (br_to_thread) */
  BR_AUTO_CPU_POOL = 3   /* the CPU pool */
} br_auto_route;

/* br_auto_submit: run fn(arg) where its measurements say it belongs and
 * store a new future for its outcome in *out (the caller owns that
 * reference: br_future_unref it). An inline call has completed when this
 * returns. Inside a task the inline route is replaced by the CPU pool (an
 * inline call's br_fail would fail the task itself). The CPU pool is
 * started at the first call (one worker per CPU) and stopped by
 * br_auto_shutdown. Errors (no future made): BR_EINVAL (NULL out or fn),
 * BR_ENOMEM, and the errors of starting the pools. Any thread: a task, a
 * plain thread, a pool job. */
int br_auto_submit(br_future **out, br_task_fn fn, void *arg);

/* br_auto_route_of: the route fn's next call takes (BR_AUTO_MEASURING for a
 * function never submitted). Any thread. */
br_auto_route br_auto_route_of(br_task_fn fn);

/* br_auto_explain: write one line into buf (NUL-terminated, truncated to
 * size) saying where fn's calls go and why, e.g. "12 calls, 4.10 ms each,
 * 98 % on a CPU, never blocked -> CPU pool (a hand-off costs 21 us here)".
 * Returns the length the full line has (like snprintf), BR_EINVAL for a NULL
 * buf with size > 0. Any thread. */
int br_auto_explain(char *buf, size_t size, br_task_fn fn);

/* br_auto_route_name: "measuring", "inline", "blocking pool", "CPU pool". */
const char *br_auto_route_name(br_auto_route r);

/* br_auto_shutdown: let the calls in flight finish, stop the auto
 * executor's CPU pool and forget every measurement (a later br_auto_submit
 * starts afresh). Returns 0, BR_EDEADLK from one of the CPU pool's own
 * jobs. Not concurrently with br_auto_submit. Any other thread. */
int br_auto_shutdown(void);

#ifdef __cplusplus
}
#endif

#endif
