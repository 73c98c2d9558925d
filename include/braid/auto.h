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
 *    in a task too: the call runs on the task and its br_fail fails the
 *    call's future, not the task;
 *  - to the blocking pool (br_to_thread) when it mostly waits: blocking
 *    system calls, sleeps, locks — so it never stalls a loop or a CPU worker;
 *  - to the CPU pool (br_pool, one worker per CPU) when it computes;
 *  - to the process pool (br_procpool, one worker per CPU) for a registered
 *    job (BR_JOB) submitted with br_auto_submit_job and allow_processes: when
 *    it computes for longer than two hand-offs to a worker process, measured
 *    on its own calls. Isolation is never imposed: without allow_processes a
 *    job runs in this process like a function.
 *
 * The first call of a function measures it on the CPU pool; calls that
 * arrive meanwhile wait (each with its future) for that measurement, unless
 * it takes longer than 0.2 ms, and then follow it — so a burst of tiny
 * calls pays no thread hand-off each. Afterwards it keeps measuring (every
 * call on the pools, the length of every 16th inline, every 8th call of the
 * process-pool route run in this process) and moves a function when its
 * behaviour changes — a function that starts blocking leaves the CPU pool.
 * br_auto_explain says where a function's calls go and why. Measurements
 * are kept for up to 1024 distinct functions and jobs; the calls of any
 * further one go to the blocking pool, unmeasured (safe whatever it does),
 * until br_auto_shutdown forgets them all.
 *
 * Every call returns the same br_future as every other executor: await it
 * from a task (the task suspends), wait for it from a thread, gather it with
 * futures of any kind. A function fails the usual way, `return br_fail(code,
 * "fmt", ...)`, a job by returning a negative code (and br_fail for the
 * message), whichever route it took.
 */
#ifndef BRAID_AUTO_H
#define BRAID_AUTO_H

#include <stdbool.h>
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
  BR_AUTO_CPU_POOL = 3,  /* the CPU pool */
  BR_AUTO_PROCPOOL = 4   /* the process pool (registered jobs that allow it) */
} br_auto_route;

typedef struct br_auto_opts {
  /* The call may run in a worker process (isolation): taken for a job that
   * computes long enough to pay for the hand-off to a process. false: this
   * process only. */
  bool allow_processes;
} br_auto_opts;

/* br_auto_submit: run fn(arg) where its measurements say it belongs and
 * store a new future for its outcome in *out (the caller owns that
 * reference: br_future_unref it). An inline call has completed when this
 * returns. The CPU pool is started at the first call (one worker per CPU)
 * and stopped by br_auto_shutdown. Errors (no future made): BR_EINVAL (NULL
 * out or fn), BR_ENOMEM, and the errors of starting the pools. Any thread: a
 * task, a plain thread, a pool job. */
int br_auto_submit(br_future **out, br_task_fn fn, void *arg);

/* br_auto_submit_job: the same for the job registered as `job` (BR_JOB, see
 * braid/procpool.h) with the input arg[0..len) (copied: the caller's buffer
 * may go at once). The future's value is a br_bytes* that the caller owns
 * (br_bytes_free), as with br_procpool_submit, whatever the route. With
 * opts->allow_processes the process pool is one of the routes; it is
 * started at the first call that goes there (if it cannot start, that is
 * logged once and jobs stay in this process). opts may be NULL. Errors:
 * BR_EINVAL (NULL out or job, NULL arg with len > 0), BR_ENOJOB (no such
 * job), BR_ENOMEM, the errors of starting the pools and of
 * br_procpool_submit. Any thread. */
int br_auto_submit_job(br_future **out, const char *job, const void *arg, size_t len,
                       const br_auto_opts *opts);

/* br_auto_route_of: the route fn's next call takes (BR_AUTO_MEASURING for a
 * function never submitted; BR_AUTO_BLOCKING for one that found no room
 * among the 1024 measured). Any thread. */
br_auto_route br_auto_route_of(br_task_fn fn);

/* br_auto_route_of_job: the same for a registered job (its last call's
 * allow_processes decides between the CPU pool and the process pool).
 * BR_AUTO_MEASURING for a job never submitted or unknown. Any thread. */
br_auto_route br_auto_route_of_job(const char *job);

/* br_auto_explain: write one line into buf (NUL-terminated, truncated to
 * size) saying where fn's calls go and why, e.g. "12 calls, 4.10 ms each,
 * 98 % on a CPU, never blocked -> CPU pool (a hand-off costs 21 us here)".
 * Returns the length the full line has (like snprintf), BR_EINVAL for a NULL
 * buf with size > 0. Any thread. */
int br_auto_explain(char *buf, size_t size, br_task_fn fn);

/* br_auto_explain_job: the same for a registered job. */
int br_auto_explain_job(char *buf, size_t size, const char *job);

/* br_auto_route_name: "measuring", "inline", "blocking pool", "CPU pool",
 * "process pool". */
const char *br_auto_route_name(br_auto_route r);

/* br_auto_shutdown: wait for the calls in flight to finish, whatever their
 * route (a task suspends meanwhile), stop the auto executor's CPU pool and
 * process pool and forget every function's measurements (a later
 * br_auto_submit starts afresh; what a hand-off to the CPU pool costs, a
 * fact about the machine, is kept). Returns 0, BR_EDEADLK from one of the
 * CPU pool's own jobs or from inside a call the executor runs on a thread,
 * not a task (it would wait for itself). Not concurrently with
 * br_auto_submit. Any other thread. */
int br_auto_shutdown(void);

#ifdef __cplusplus
}
#endif

#endif
