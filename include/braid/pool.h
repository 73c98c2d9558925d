/* SPDX-License-Identifier: MIT */
/* braid/pool.h — the work-stealing CPU pool (parallelism).
 *
 * "If the task is computing, use parallelism": a br_pool runs CPU work on N
 * worker threads, one per CPU the process may really use by default
 * (br_cpu_count()). Each worker owns a Chase-Lev deque; idle workers steal
 * from the others and from a shared queue that receives the jobs submitted
 * from outside the pool. Included by braid.h (and it includes braid.h).
 *
 * What you can do with it:
 *  - br_pool_submit: run one job, get a br_future (await it from a task: only
 *    the task suspends; wait for it from a plain thread: the thread blocks).
 *  - br_pool_map / br_pool_map_fixed / br_pool_for / br_pool_reduce: data
 *    parallelism over an array or an index range, split recursively and
 *    balanced by stealing.
 *  - br_pool_fork / br_pool_join: nested fork-join inside jobs, cheap enough
 *    for one fork per call of a recursive function (a fork + join that is not
 *    stolen costs a few nanoseconds and allocates nothing: the br_fork lives
 *    on the caller's stack).
 *  - br_pool_shutdown: stop, draining or cancelling what is queued, and
 *    report what was done.
 *
 * Jobs and their outcomes. A job is a br_pool_fn: it receives its argument
 * and returns its result (a pointer, or an integer cast to one; ownership is
 * the caller's business). To fail like an exception, a job returns
 * br_fail(code, "fmt", ...) (braid.h), exactly as a task does: its future
 * fails with that code and message, br_pool_join returns the code,
 * br_pool_join_result and br_pool_map hand over both. br_fail counts for
 * whatever piece of pool work the calling thread runs: a submitted job, a
 * fork child, a map item, a for / reduce range. br_cancelled() (braid.h)
 * tells pool work that its job was cancelled or its pool is shutting down
 * with BR_SHUTDOWN_CANCEL.
 *
 * Threads. Unless a function says otherwise it may be called from any
 * thread: a plain thread (its waits block it), a loop task (its waits
 * suspend only the task; the loop goes on), or a job running in the pool
 * (its waits run other pool work meanwhile instead of blocking the worker).
 * The same holds for braid.h's br_await / br_await_until / br_gather called
 * inside a pool job: while the future is pending the worker runs other
 * queued and stealable jobs of its pool (to a bounded nesting depth; deeper
 * than that only the awaited job itself, if it is still queued; then it
 * parks), and waiting for a job that cannot finish before the caller does
 * (the calling job itself, or one this worker runs further down its stack)
 * returns BR_EDEADLK. Caveat of every helping wait: a job it runs meanwhile
 * sits on top of the caller's stack, so it must not itself wait for
 * something the caller would only do after its wait returns.
 *
 * Errors are braid's negative codes (braid/errno.h). The pool-specific ones:
 * BR_ESHUTDOWN (the pool is shutting down), BR_EDEADLK (a job waiting for
 * itself, a worker shutting down its own pool), BR_EPERM (a pool-only call
 * made outside a pool job). See docs/pool.md for the design and measurements.
 */
#ifndef BRAID_POOL_H
#define BRAID_POOL_H

#include "braid.h" /* br_future, br_result; braid.h includes this header at its end */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_pool br_pool;

/* A job: fn(arg) -> result. Same shape as br_task_fn. */
typedef void *(*br_pool_fn)(void *arg);

/* The most worker threads a pool may have. More is certainly a mistake (a
 * negative number cast to unsigned, a byte count passed as a count). */
#define BR_POOL_MAX_THREADS 1024

typedef struct br_pool_opts {
  /* Stack size of each worker thread in bytes (0: 8 MiB). Nested fork-join
   * runs on these stacks; leapfrogging keeps their use proportional to the
   * nesting depth of the work (see br_pool_join). 64 KiB .. 1 GiB. */
  size_t stack_size;
  /* How long an idle worker keeps looking for work before it parks on a
   * futex, in nanoseconds (0: 50 us, about twice what waking a parked worker
   * on another core costs; negative: park at once). A parked worker costs
   * nothing; a spinning one burns its core. */
  int64_t spin_ns;
  /* Prefix of the worker threads' names, shown by top/gdb ("<name>-<i>",
   * truncated to 15 bytes). NULL: "br-pool". Copied. */
  const char *name;
} br_pool_opts;

/* br_pool_new: start a pool of nthreads workers (BR_CPUS, i.e. 0: one per
 * CPU the process may use, br_cpu_count(), at most BR_POOL_MAX_THREADS) and
 * store it in *out; the caller owns it and frees it with br_pool_free(). opts
 * may be NULL for defaults. Returns 0; on failure *out is NULL and nothing
 * is left running: BR_EINVAL for a NULL out, nthreads < 0 or >
 * BR_POOL_MAX_THREADS, or options out of range; BR_ENOMEM; BR_EAGAIN when
 * the system refuses more threads. Any thread. */
int br_pool_new(br_pool **out, int nthreads, const br_pool_opts *opts);

/* br_pool_size: the number of worker threads (> 0). NULL: 0. */
int br_pool_size(const br_pool *pool);

/* br_pool_current: the pool whose worker is calling, or NULL from any other
 * thread. br_pool_worker_index: that worker's index in 0 .. size-1, or -1. */
br_pool *br_pool_current(void);
int br_pool_worker_index(void);

/* ------------------------------------------------------------------------ */
/* Jobs and futures                                                          */

/* br_pool_submit: queue fn(arg) on the pool and store a new future for its
 * outcome in *out; the caller owns that reference (br_future_unref() it when
 * done; dropping it does not cancel the job). The future completes with fn's
 * result, with the code and message of br_fail(), or with BR_ECANCELED if
 * it was cancelled before the job started (br_future_cancel(),
 * br_future_wait_for() timing out, or br_pool_shutdown(BR_SHUTDOWN_CANCEL)); a
 * job that has started always runs to its end (it may poll br_cancelled()),
 * and a result it returns after its future was cancelled is dropped.
 * Errors (*out untouched, nothing queued): BR_EINVAL for a NULL pool, fn or
 * out, BR_ESHUTDOWN once br_pool_shutdown() has begun, BR_ENOMEM.
 * Any thread, including the pool's own jobs (the job is queued, never run
 * inline). */
int br_pool_submit(br_pool *pool, br_future **out, br_pool_fn fn, void *arg);

/* ------------------------------------------------------------------------ */
/* Data parallelism. Each call returns when all the work is done (a task
 * awaiting it suspends, a plain thread blocks, a pool job runs the work itself
 * with the other workers helping). If the waiting task is cancelled (or its
 * scope's deadline passes), the pieces not yet started are skipped, the
 * pieces that run see br_cancelled(), the call still waits for them (the
 * caller's arrays must outlive them) and returns BR_ECANCELED (BR_ETIMEDOUT
 * for the deadline).
 * Pieces are split in halves down to the grain; which worker runs which piece
 * is decided by stealing, so every piece may run on any worker. */

/* br_pool_map: out[i] = fn(items[i]) for i < n, like multiprocessing's
 * Pool.map. chunk is how many consecutive items one piece runs serially (0:
 * automatic, about n / (64 * workers), at least 1). Every out[i] is filled:
 * value (the caller's: the runtime never frees it), err (0, the code of
 * br_fail, or BR_ECANCELED if skipped) and msg (malloc'd message or NULL);
 * release the messages with br_results_free(out, n). A failing item does not
 * stop the others. Returns 0 if every item succeeded, else the error of the
 * lowest failing index; the call's own errors: BR_EINVAL (NULL pool/fn, NULL
 * items or out with n > 0), BR_ESHUTDOWN (for n == 0 too, otherwise a
 * successful no-op), BR_ENOMEM, BR_ECANCELED. */
int br_pool_map(br_pool *pool, br_result *out, br_pool_fn fn, void *const *items, size_t n,
                size_t chunk);

/* An item function for br_pool_map_fixed: read one input item at in, write
 * its result at out, return 0 (or any non-negative value) on success, or a
 * negative code to fail the item. An item also fails if it called br_fail()
 * (the code: the returned negative code, else br_fail's). */
typedef int (*br_pool_item_fn)(const void *in, void *out);

/* br_pool_map_fixed: map over plain arrays, without a pointer per item (the
 * CPU pool's twin of br_procpool_map_fixed): item i reads
 * in[i*in_size .. +in_size) and writes its result to out[i*out_size ..
 * +out_size), both arrays the caller's. errors, if not NULL, receives each
 * item's code: 0, its failure code, or BR_ECANCELED if it was skipped.
 * Messages are dropped (use br_pool_map to keep them). The out slot of a
 * failed item holds whatever fn left there; that of a skipped item is not
 * touched. in may be NULL when in_size is 0, out when out_size is 0. chunk,
 * threads, cancellation and errors as br_pool_map: a failing item does not
 * stop the others; returns 0 if every item succeeded, else the error of the
 * lowest failing (or skipped) index. Errors of the call itself: BR_EINVAL
 * (NULL pool or fn, a NULL array with a non-zero size, n * size overflowing;
 * nothing is touched); BR_ESHUTDOWN, BR_ENOMEM, BR_ECANCELED / BR_ETIMEDOUT
 * when nothing ran (then every errors[i] says so: that code, BR_ECANCELED
 * for a deadline). */
int br_pool_map_fixed(br_pool *pool, void *out, size_t out_size, int *errors, br_pool_item_fn fn,
                      const void *in, size_t in_size, size_t n, size_t chunk);

/* A range body: process indices [lo, hi); return 0, or a negative code to
 * fail (pieces not yet started are then skipped; a positive value fails
 * with BR_EFAILED). Calling br_fail() fails the range too. */
typedef int (*br_pool_range_fn)(void *ud, size_t lo, size_t hi);

/* br_pool_for: run body(ud, lo, hi) over disjoint pieces covering [begin,
 * end), each at most grain long (0: automatic, about (end-begin) / (32 *
 * workers), at least 1). Returns 0, the failure of the lowest-indexed piece
 * that failed (a body's negative return value, or its br_fail code), or
 * BR_EINVAL / BR_ESHUTDOWN / BR_ENOMEM / BR_ECANCELED. begin >= end is a
 * successful no-op (but BR_ESHUTDOWN once br_pool_shutdown() has begun,
 * except in one of the pool's jobs, as with work to do). */
int br_pool_for(br_pool *pool, size_t begin, size_t end, size_t grain, br_pool_range_fn body,
                void *ud);

/* Reduce callbacks. fold: accumulate [lo, hi) into acc (which starts as a
 * copy of the identity); return 0 or a negative code. combine: acc = acc (+)
 * other, where acc covers the indices just before other's. */
typedef int (*br_pool_fold_fn)(void *ud, size_t lo, size_t hi, void *acc);
typedef void (*br_pool_combine_fn)(void *ud, void *acc, const void *other);

/* br_pool_reduce: parallel reduction of [begin, end) into result, which on
 * entry holds the identity element (size bytes, at most 4096) and on success
 * the result. The operation must be associative (not necessarily
 * commutative: pieces are combined in index order); the split tree depends
 * only on the range and the grain, so a floating-point sum gives the same
 * bits on every run. grain and errors as br_pool_for; on error *result is
 * left unchanged. */
int br_pool_reduce(br_pool *pool, void *result, size_t size, size_t begin, size_t end, size_t grain,
                   br_pool_fold_fn fold, br_pool_combine_fn combine, void *ud);

/* ------------------------------------------------------------------------ */
/* Nested fork-join, for jobs running in the pool                            */

/* A forked child. Lives on the forking job's stack (declare one, pass its
 * address to br_pool_fork, then to br_pool_join); it needs no initialisation
 * and no destruction. */
typedef struct br_fork {
  /* private: do not touch; may change in any release */
  struct {
    br_pool_fn fn;
    void *arg;
    void *value;
    char *msg;
    void *owner;     /* the forking worker */
    void *root;      /* the job this fork belongs to */
    uintptr_t thief; /* atomic: the stealing worker, 0 while not stolen */
    uint32_t done;   /* atomic futex word: 0 running, 1 done, 2 joiner parked */
    int err;
    uint32_t state;
    uint32_t pad;
  } br__private;
} br_fork;

/* br_pool_fork: make fn(arg) available to the other workers as a child of the
 * calling job and return at once. The child runs on whichever worker gets to
 * it first: a thief, or the caller itself in br_pool_join. f is the caller's
 * (usually a local variable) and must stay alive until br_pool_join(f).
 * Every fork must be joined, in the reverse order of the forks (the most
 * recent first), before the forking job returns. Costs no allocation.
 * Pool jobs only: from any other thread it runs nothing and returns BR_EPERM
 * (and so does the join). BR_EINVAL for a NULL f or fn. If the worker's deque
 * cannot grow (ENOMEM) the child runs at once, serially, and 0 is returned. */
int br_pool_fork(br_fork *f, br_pool_fn fn, void *arg);

/* br_pool_join: wait for the child forked in f and collect it: stores its
 * result in *value (may be NULL) and returns 0 or its error code (its message
 * is dropped; see br_pool_join_result). If no other worker took the child, the
 * caller runs it now, inline (a plain function call). If one did, the caller
 * works while it waits: it steals only from that thief ("leapfrogging"), so
 * everything it runs descends from its own child, its stack grows by at most
 * the depth of that work, and a task-per-call recursion of any depth neither
 * deadlocks nor needs extra threads. After a long fruitless wait it parks.
 * BR_EINVAL if f is not the most recent unjoined fork of the caller, or was
 * joined already; BR_EPERM outside a pool job. Pool jobs only. */
int br_pool_join(br_fork *f, void **value);

/* br_pool_join_result: br_pool_join, handing over the child's whole outcome
 * in *res: value, err (the return value) and msg (its br_fail message,
 * malloc'd, or NULL when it succeeded or gave none). The caller owns the
 * message: release it with br_results_free(res, 1) (the value stays the
 * caller's). res may be NULL (then it is br_pool_join(f, NULL)). On an
 * error of the call itself (BR_EINVAL, BR_EPERM as br_pool_join) *res holds
 * that code, a NULL value and no message. Pool jobs only. */
int br_pool_join_result(br_fork *f, br_result *res);

/* ------------------------------------------------------------------------ */
/* Shutdown and statistics                                                   */

/* What br_pool_shutdown did. */
typedef struct br_pool_report {
  br_shutdown_mode mode; /* BR_SHUTDOWN_DRAIN or BR_SHUTDOWN_CANCEL, as applied */
  uint64_t pending;    /* jobs queued or running when shutdown began */
  uint64_t completed;  /* ...of which ran to completion (successfully or not) */
  uint64_t cancelled;  /* ...of which were cancelled without running */
  uint64_t submitted;  /* jobs accepted over the pool's lifetime */
  uint64_t failed;     /* jobs that completed with an error, lifetime */
} br_pool_report;

/* br_pool_shutdown: stop accepting jobs (br_pool_submit and friends return
 * BR_ESHUTDOWN from now on), then either run all queued jobs
 * (BR_SHUTDOWN_DRAIN) or cancel those not started (BR_SHUTDOWN_CANCEL: their
 * futures fail BR_ECANCELED; running jobs finish, and br_cancelled() tells
 * them), wait for the running ones and for the workers to exit, and fill
 * *report (may be NULL). Every future the pool handed out is complete when
 * it returns. In a task it suspends only the task (and is not interrupted
 * by the task's cancellation: the workers are always waited for); on a
 * plain thread it blocks. Safe to call again (as br_procpool_shutdown):
 * a later call returns 0 at once and fills *report with what the first one
 * did. Returns 0; BR_EINVAL for a NULL pool or another mode; BR_EDEADLK
 * from one of the pool's own workers. */
int br_pool_shutdown(br_pool *pool, br_pool_report *report, br_shutdown_mode mode);

/* br_pool_free: shut the pool down if that was not done (BR_SHUTDOWN_CANCEL:
 * closing a handle cancels and joins), then free it. The pool's futures stay
 * valid (they are reference-counted). Returns 0, BR_EDEADLK from one of the
 * pool's workers (nothing is done). NULL is a no-op. */
int br_pool_free(br_pool *pool);

typedef struct br_pool_stats {
  int nthreads;
  uint64_t submitted;  /* jobs accepted (submit, and one per map/for/reduce
                          called from outside the pool) */
  uint64_t completed;  /* jobs that ran to completion */
  uint64_t failed;     /* of which failed */
  uint64_t cancelled;  /* jobs cancelled before they started */
  uint64_t forks;      /* br_pool_fork calls (and internal splits) */
  uint64_t steals;     /* successful steals of forked children */
  uint64_t parks;      /* times a worker parked on its futex */
  uint64_t wakes;      /* times a worker was woken to find work */
  /* Run time against CPU time. run_ns: how long the workers ran pool work
   * (jobs, and forked children another worker stole; what a job runs nested
   * in it, including the time it waits in br_await, counts as the job's).
   * cpu_ns: the CPU time that work used (the thread CPU clock, read about
   * once per millisecond of small jobs and around every job of 50 us or
   * more). run_ns - cpu_ns is time pool work spent off a CPU: blocked in a
   * system call, a sleep, a lock, a wait — work that belongs on the
   * blocking pool (br_to_thread) — or preempted on a busy machine.
   * blocked: jobs (and stolen children) of 50 us or more that spent more
   * than half of their run off a CPU and gave it up themselves (a voluntary
   * context switch: slept, waited); one only preempted is not counted. Settled when a worker runs out of
   * work, so they are complete once the submitted jobs are. */
  uint64_t run_ns;
  uint64_t cpu_ns;
  uint64_t blocked;
} br_pool_stats;

/* br_pool_get_stats: counters summed over the workers (a racy snapshot while
 * the pool runs). Returns 0; BR_EINVAL for NULL arguments. Any thread. */
int br_pool_get_stats(br_pool *pool, br_pool_stats *out);

#ifdef __cplusplus
}
#endif

#endif
