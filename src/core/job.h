/* SPDX-License-Identifier: MIT */
/* braid — job context, job/future machinery and shielded waits for every executor (ready) */
/*
 * Core layer, not public. Nothing executor-specific lives here: the CPU
 * pool, the blocking pool and the process pool each embed these records in
 * their own and fill in the ops tables.
 *
 * 1. The job context (convention 7 of the API)
 *
 * A thread that runs a unit of work for an executor (a CPU-pool job, fork
 * child or map range; a br_to_thread call; a process-pool job in its worker)
 * enters a job context for the duration:
 *
 *     br__job_ctx *prev = br__job_enter(&mine->ctx);
 *     v = fn(arg);
 *     br__job_leave(prev);
 *
 * Contexts nest (a pool job that helps run another job enters that one's
 * context, then restores its own). The pointer is thread-local, so the ops
 * run on the job's own thread. While a context is current:
 *  - br_fail(code, fmt, ...) on that thread calls ops->fail(ctx, code, msg)
 *    with code < 0 and a malloc'd message (or NULL) the op now owns;
 *  - br_cancelled() returns ops->cancelled(ctx) (0 or BR_ECANCELED);
 *  - br_await / br_await_until / br_gather / br_wait on that thread call
 *    ops->wait(ctx, f, deadline) instead of blocking the thread: it returns
 *    0 once f is complete, or BR_ETIMEDOUT / BR_EDEADLK / BR_ECANCELED
 *    (e.g. a CPU-pool worker helps run other jobs and reports a job waiting
 *    on its own future). ops->wait == NULL means "block the thread".
 * A task always comes first: inside a task (a loop running in a pool job),
 * br_fail and br_cancelled answer for the task. Any op may be NULL.
 *
 * 2. The job record and its reference protocol
 *
 * Every executor's job record embeds a br__job. It holds the executor's
 * reference to the job's future and installs itself as the future's cancel
 * hook. The record is reference-counted because br_future_cancel may run on
 * any thread while the executor is starting or finishing the job:
 *
 *   - br__job_init leaves TWO references on the record:
 *       RUN:  held by the executor, i.e. by whoever will run the job or
 *             unlink it from a queue;
 *       HOOK: held by the future's cancel hook.
 *     and TWO references on the future: the record's (job->fut) and the
 *     submitter's (*out).
 *   - The executor finishes a job with br__job_complete(). If that
 *     completion won (returns 0), no cancel can complete the future any
 *     more, so the hook will never run: both references are dropped. If it
 *     lost (BR_EALREADY: the future was cancelled first), the hook has run
 *     or is running and drops HOOK itself: only RUN is dropped.
 *   - br_future_cancel, when it is what completed the future, runs the hook
 *     on the cancelling thread: ops->cancel(job) is asked to take the job
 *     back. It returns true if the job had not started and the executor
 *     will never run it (e.g. it was unlinked from the queue under the
 *     executor's lock): the hook then drops RUN on the executor's behalf.
 *     It returns false if the job already runs (the executor may signal it,
 *     e.g. set a cancelled flag or kill a worker process): the executor
 *     still holds RUN and will call br__job_complete (which loses) or
 *     br__job_unref. Either way the hook then drops HOOK.
 *   - An executor that gives up a job another way (it removed the job from
 *     its queue itself after the future was completed elsewhere) drops RUN
 *     with br__job_unref. An executor that needs extra references (a record
 *     sitting in two lists) takes them with br__job_ref.
 *   - A job that never became visible (submission refused) is undone with
 *     br__job_abandon: it removes the hook and drops RUN, HOOK and the
 *     submitter's future reference; the caller must not use *out.
 *   - When the last reference goes, the record's future reference is
 *     dropped, then ops->release(job) frees the executor's record.
 * ops->cancel runs on whatever thread cancels, never under the future's
 * lock; it may take the executor's own locks (they must be leaves with
 * respect to future calls).
 *
 * 3. Shielded waits
 *
 * br__await_shielded(f) waits until f is complete even if the caller has
 * been cancelled: for an executor that still uses the caller's memory after
 * a wait was interrupted (a map over the caller's array, a pool shutdown).
 * In a task it waits in a shielding scope; on a thread with a job context
 * whose ops->wait is set it waits that way (a pool worker helps); otherwise
 * the thread blocks.
 */
#ifndef BRAID_CORE_JOB_H
#define BRAID_CORE_JOB_H

#include <braid.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct br__job_ctx br__job_ctx;

typedef struct br__job_ctx_ops {
  /* Record the job's failure: code < 0, msg malloc'd (may be NULL) and now
   * owned by the op. The last call wins. */
  void (*fail)(br__job_ctx *ctx, int code, char *msg);
  /* 0, or BR_ECANCELED if the job has been asked to stop. */
  int (*cancelled)(br__job_ctx *ctx);
  /* Wait until f completes or the deadline (ns) passes: 0, BR_ETIMEDOUT,
   * BR_EDEADLK (f cannot complete before the caller does), BR_ECANCELED. */
  int (*wait)(br__job_ctx *ctx, br_future *f, int64_t deadline);
} br__job_ctx_ops;

/* Embed in the executor's per-job (or per-worker) record; recover the
 * record with a container_of-style cast in the ops. */
struct br__job_ctx {
  const br__job_ctx_ops *ops;
};

/* Make ctx the calling thread's current job context; returns the previous
 * one, to be given back to br__job_leave. ctx may be NULL (no job). */
br__job_ctx *br__job_enter(br__job_ctx *ctx);
void br__job_leave(br__job_ctx *prev);
/* The calling thread's current job context, or NULL. */
br__job_ctx *br__job_current(void);

/* --- job records --------------------------------------------------------- */

typedef struct br__job br__job;

typedef struct br__job_ops {
  /* Take the job back if it has not started; true if the executor will
   * never run it (see the protocol above). May be NULL (never taken back). */
  bool (*cancel)(br__job *job);
  /* Free the executor's record (the last reference went). Required. */
  void (*release)(br__job *job);
  /* What a task awaiting the job's future waits on (br_wait_kind:
   * BR_WAIT_POOL, _BLOCKING, _PROCPOOL); 0: a future in general. */
  unsigned char origin;
} br__job_ops;

struct br__job {
  const br__job_ops *ops;
  br_future *fut;    /* the record's reference to the job's future */
  atomic_int refs;
};

/* Initialise job with a new pending future: RUN + HOOK references on the
 * record, and the submitter's own reference to the future in *out.
 * BR_ENOMEM (then nothing is left to undo). */
int br__job_init(br__job *job, const br__job_ops *ops, br_future **out);

/* Complete the job's future with value (value_free: the future owns value,
 * as br_future_set_owned; NULL: the value stays the user's), or with err < 0
 * and msg (malloc'd, owned by the call) when err != 0. Then drops RUN, and
 * HOOK too if this completion won. Returns 0 if it won, BR_EALREADY if the
 * future was already complete (cancelled): then msg is freed, and an owned
 * value is freed with value_free. The record may be gone when it returns. */
int br__job_complete(br__job *job, void *value, void (*value_free)(void *), int err, char *msg);

void br__job_ref(br__job *job);
void br__job_unref(br__job *job);

/* Undo br__job_init for a job nobody else ever saw: drops every reference
 * init created, including the submitter's future reference. */
void br__job_abandon(br__job *job);

/* --- shielded wait ------------------------------------------------------- */

/* Wait until f completes, even if the caller is cancelled (see above). */
void br__await_shielded(br_future *f);

/* --- a task's outcome around an inline call ------------------------------ */

/* In a task, br_fail records the task's own failure (a task comes first),
 * so an executor that runs a unit of work inline, on the calling task
 * (the auto executor's inline route), sets the task's outcome aside first
 * and gives it back afterwards, taking what the work recorded:
 *
 *     br__outcome saved, got;
 *     bool in_task = br__outcome_save(&saved);
 *     v = fn(arg);                 // br_fail in fn lands in the task
 *     if (in_task) br__outcome_restore(&saved, &got);  // got: fn's br_fail
 *
 * br__outcome_save returns false (and does nothing) outside a task; then
 * the caller catches br_fail with a job context as usual. got.msg is
 * malloc'd (or NULL) and now the caller's; got.code is 0 when fn did not
 * call br_fail. The work must not end the task (it returns normally); a
 * switch to another task in between (fn awaits) is fine: the outcome
 * belongs to the task, not to the thread. Task-only, on the task itself. */
typedef struct br__outcome {
  int code;
  char *msg;
} br__outcome;

bool br__outcome_save(br__outcome *saved);
void br__outcome_restore(const br__outcome *saved, br__outcome *got);

#endif
