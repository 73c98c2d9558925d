/* SPDX-License-Identifier: MIT */
/* braid — a C runtime for doing many things at once.
 *
 * This header is braid's public face for the core: loops, tasks, futures,
 * timers, cancel scopes, task groups and coroutine-aware synchronisation.
 * Facilities built on it have their own headers under braid/ and are included
 * at the end (the CPU pool, I/O, the process pool).
 *
 * The rule every public function follows (docs/api.md has the details):
 *  - A call that can fail returns int: 0 (or a documented count, index, fd
 *    or byte count) on success, a negative code on failure (braid/errno.h:
 *    a negated errno such as -ETIMEDOUT, or braid's own BR_ENOTTASK,
 *    BR_EHANDLE, ...; br_strerror() gives the text). Never NULL + errno.
 *  - Constructors are int br_X_new(br_X **out, ...); on failure *out is NULL.
 *  - Arguments: the object acted on first, then out-parameters, then inputs,
 *    then options (NULL for defaults) and deadlines/timeouts last.
 *  - br_X_free(NULL) is a no-op returning 0; BR_CPUS (0) means "as many as
 *    the CPUs allow"; fields of public structs named br__private are not
 *    for users.
 *  - "Task-only" functions must be called from inside a braid task; from a
 *    plain thread they return BR_ENOTTASK and do nothing else.
 *  - Times are nanoseconds on the monotonic clock (br_now()); durations given
 *    in milliseconds say so in their name (_ms).
 *  - Every blocking call honours the deadline of its enclosing cancel scope;
 *    the _until variants take an extra absolute deadline of their own.
 */
#ifndef BRAID_H
#define BRAID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/errno.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BR_VERSION_MAJOR 0
#define BR_VERSION_MINOR 2
#define BR_VERSION_PATCH 0

/* br_version: the library's version as (major << 16) | (minor << 8) | patch,
 * e.g. 0x000200 for 0.2.0: compare it with the BR_VERSION_* macros the
 * program was compiled against. br_version_string: "0.2.0". Any thread. */
unsigned br_version(void);
const char *br_version_string(void);

/* A deadline that never expires. */
#define BR_NEVER INT64_MAX

/* "As many as the CPUs allow" (br_cpu_count()) wherever a count of threads,
 * workers or loops is asked for: br_pool_new, br_procpool_new,
 * br_run_loops. Negative counts are BR_EINVAL. */
#define BR_CPUS 0

/* How a pool (br_pool_shutdown, br_procpool_shutdown) stops. */
typedef enum br_shutdown_mode {
  /* Refuse new work, finish everything already queued. */
  BR_SHUTDOWN_DRAIN = 0,
  /* Refuse new work, cancel what has not started (its futures fail with
   * BR_ECANCELED). Running CPU-pool jobs finish (threads cannot be killed;
   * br_cancelled() tells them); running process-pool jobs are killed. */
  BR_SHUTDOWN_CANCEL = 1
} br_shutdown_mode;

typedef struct br_loop br_loop;
typedef struct br_task br_task;
typedef struct br_future br_future;
typedef struct br_group br_group;
typedef struct br_scope br_scope;
typedef struct br_result br_result;

/* A task's body. It receives the argument given at spawn and returns its
 * result (owned by whoever collects it: the joiner, gather's caller, ...).
 * To fail like an exception, `return br_fail(code, "fmt", ...)`. */
typedef void *(*br_task_fn)(void *arg);

/* A plain callback (call_soon, future callbacks). */
typedef void (*br_callback_fn)(void *arg);

/* ------------------------------------------------------------------------ */
/* Clock                                                                     */

/* br_now: monotonic time in nanoseconds (CLOCK_MONOTONIC). Any thread. */
int64_t br_now(void);

/* br_deadline_ms: br_now() + ms, saturating at BR_NEVER; ms < 0 counts as 0. */
int64_t br_deadline_ms(int64_t ms);

/* ------------------------------------------------------------------------ */
/* Loops                                                                     */

/* How per-task accounting reads the clocks at each switch. */
typedef enum br_accounting {
  BR_ACCT_DEFAULT = 0, /* BR_ACCT_FAST, or BRAID_ACCOUNTING=off|fast|precise */
  BR_ACCT_OFF,         /* no per-switch clock reads at all */
  BR_ACCT_FAST,        /* run time from the CPU's cycle counter (a few ns);
                          cpu time == run time (docs/accounting.md) */
  BR_ACCT_PRECISE      /* also reads the thread CPU clock (a system call) */
} br_accounting;

typedef struct br_loop_opts {
  /* Default stack size for tasks spawned on this loop, in bytes (0: 256 KiB,
   * or BRAID_STACK_SIZE). Rounded up to whole pages; 16 KiB .. 1 GiB. */
  size_t stack_size;
  /* Spawn every task in compact (shared-stack) mode unless its own options
   * say otherwise; see BR_SPAWN_COMPACT. Also BRAID_COMPACT=1. */
  bool compact;
  br_accounting accounting;
  /* Called with a detached task's failure instead of the default report
   * (the log hook, br_set_log). Runs on the loop thread. task is a handle
   * for br_task_name / br_task_id during the call; msg is only valid during
   * the call. */
  void (*on_detached_error)(br_task *task, int code, const char *msg, void *ud);
  void *ud;
  /* Report when the loop does not get back to its poller for this many ms
   * (a blocking call in a task): the task's name, how long, a backtrace.
   * 0: off, unless BRAID_DEBUG=1 (then 100 ms). See braid/io.h's watchdog. */
  int64_t watchdog_ms;
} br_loop_opts;

/* br_loop_new: create an event loop bound to the calling thread and store it
 * in *out. opts may be NULL for defaults. The loop is freed with
 * br_loop_free(). Returns 0, or BR_EINVAL (NULL out, bad options), BR_ENOMEM,
 * BR_EMFILE (no descriptor for the poller); *out is then NULL. A thread may
 * own several loops but runs at most one at a time. */
int br_loop_new(br_loop **out, const br_loop_opts *opts);

/* br_loop_run: run the loop on the calling thread until no task, timer or
 * pending callback is left, or br_loop_stop() is called. Returns 0, or
 * BR_EBUSY if the loop is already running, BR_EPERM from a thread other than
 * the one that created it, BR_EDEADLK when every task left is parked on
 * something only another of its tasks could end (a channel nobody sends on):
 * the report "all tasks are asleep: deadlock" and the task dump went to the
 * log hook first; see braid/trace.h (br_loop_set_deadlock_check). */
int br_loop_run(br_loop *loop);

/* br_loop_stop: make br_loop_run() return after the current iteration.
 * Tasks are not cancelled; running the loop again resumes them. Thread-safe;
 * a no-op for a loop being freed or already freed (as for
 * br_call_soon_threadsafe, a freed loop is never touched). */
void br_loop_stop(br_loop *loop);

/* br_loop_free: cancel every task still alive, run the loop until they have
 * unwound, run the callbacks other threads handed over, report failures
 * nobody collected (br_set_log), release all memory. A task whose future is
 * still referenced (br_future_ref) stays readable through that future until
 * its last reference goes, which may be dropped on any thread, also while
 * br_loop_free runs; its handle is dead (BR_EHANDLE). Call it on the loop's
 * thread. Returns 0, BR_EBUSY if called while the loop runs. NULL is a
 * no-op. */
int br_loop_free(br_loop *loop);

/* br_loop_current: the loop running on this thread, or NULL. */
br_loop *br_loop_current(void);

/* br_run: asyncio.run for C. Creates a loop with default options, runs
 * main(arg) as a task named "main" until it returns, then cancels and joins
 * any task still alive and frees the loop. While main runs, the first SIGINT
 * (Ctrl-C) cancels the main task so its cleanup runs; a second one exits the
 * process at once with status 130. SIGINT is left alone when it is ignored
 * (a program started in the background with `&` keeps ignoring it), and the
 * previous SIGINT disposition is back before the loop is freed (one br_run
 * at a time handles SIGINT; a nested or concurrent one leaves it to the
 * first). Any thread not running a loop. Stores main's result in *result
 * if result is non-NULL. Returns main's error code (0 if it succeeded,
 * BR_ECANCELED if it was cancelled), BR_EDEADLK if main and every other task
 * fell asleep for good (as br_loop_run says; they are then cancelled and
 * joined), or a setup error (BR_ENOMEM, BR_EINVAL for a NULL main, BR_EBUSY
 * when called from inside a running loop). The caller gets main's code,
 * not its message: when main fails with a message (br_fail) other than by
 * being cancelled, that message is reported through the log hook, one line
 * "task 'main' failed: <reason>: <message>" (br_set_log), as a failed task
 * nobody joined is. */
int br_run(void **result, br_task_fn main, void *arg);

/* br_run_opts: br_run with loop options (may be NULL). */
int br_run_opts(void **result, br_task_fn main, void *arg, const br_loop_opts *opts);

/* br_run_result: br_run_opts that hands main's message to the caller
 * instead of reporting it (as br_join_result is to br_join): out->value is
 * main's result, out->err the code br_run_opts returns, out->msg a malloc'd
 * copy of main's failure message (NULL on success, on a failure without a
 * message and on a setup error). Release with br_results_free(out, 1).
 * Returns out->err; BR_EINVAL for a NULL out or main. Any thread not
 * running a loop. */
int br_run_result(br_result *out, br_task_fn main, void *arg, const br_loop_opts *opts);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */

/* Spawn flags. */
enum {
  /* Compact mode: the task runs on a stack shared by the loop's compact
   * tasks and its live part is copied out (to the heap) while it is
   * suspended. A suspended task then costs hundreds of bytes instead of at
   * least a page, and spawning touches no fresh page. The price: a pointer
   * to a compact task's stack variables is only valid while that task runs,
   * so never hand one to another task or thread (braid's own calls never
   * do), and each switch copies the task's live stack. */
  BR_SPAWN_COMPACT = 1 << 0,
  /* Force a normal (own-stack) task even if the loop defaults to compact. */
  BR_SPAWN_OWN_STACK = 1 << 1,
  /* Spawn detached: no handle is returned; a failure is reported at once. */
  BR_SPAWN_DETACHED = 1 << 2
};

typedef struct br_spawn_opts {
  const char *name;  /* copied (truncated to 31 bytes); NULL: "task-N" */
  size_t stack_size; /* 0: the loop's default; otherwise 16 KiB .. 1 GiB */
  unsigned flags;    /* BR_SPAWN_* */
} br_spawn_opts;

/* br_spawn: create a task running fn(arg) on the current loop and store its
 * handle in *out (out may be NULL only with BR_SPAWN_DETACHED). The task
 * starts when the spawner next yields or blocks. opts may be NULL.
 * The handle must be given back exactly once: br_join() (wait and collect),
 * br_task_close() (cancel, wait, discard) or br_detach(). Handles left at
 * br_loop_free() are closed then, and a failure nobody saw is reported.
 * Errors: BR_EINVAL (NULL fn or out, stack size out of range), BR_ENOTTASK
 * without a current loop, BR_ENOMEM / BR_ELIMIT when memory or mappings run
 * out (a message through br_set_log names the limit). Call from a task or
 * from the loop's thread.
 * A handle is checked on every use: once given back (joined, closed,
 * detached) it stays invalid even after braid reuses the task's memory for
 * another task, and every call on it returns BR_EHANDLE. */
int br_spawn(br_task **out, br_task_fn fn, void *arg, const br_spawn_opts *opts);

/* br_loop_spawn: br_spawn onto a given loop, e.g. before br_loop_run(). Must
 * be called on the loop's own thread; other threads use
 * br_call_soon_threadsafe(). */
int br_loop_spawn(br_loop *loop, br_task **out, br_task_fn fn, void *arg,
                  const br_spawn_opts *opts);

/* br_self: the calling task, or NULL from a plain thread / loop callback. */
br_task *br_self(void);

/* br_yield: let every other ready task run once, then continue. Task-only.
 * Returns 0, or BR_ECANCELED / BR_ETIMEDOUT if the task is cancelled or its
 * scope's deadline passed (yield is a checkpoint). */
int br_yield(void);

/* br_sleep_ms: suspend the calling task for ms milliseconds (asyncio.sleep).
 * Returns 0, BR_ECANCELED if cancelled meanwhile, BR_ETIMEDOUT if an
 * enclosing scope's deadline comes first, BR_ENOTTASK outside a task. */
int br_sleep_ms(int64_t ms);

/* br_sleep_until: suspend until br_now() >= deadline (ns). As br_sleep_ms. */
int br_sleep_until(int64_t deadline);

/* br_fail: record an error (code < 0, else BR_EFAILED; message formatted
 * printf-style, fmt may be NULL) as the outcome of what the calling thread
 * is running and return NULL, so a task fails with
 * `return br_fail(BR_EIO, "reading %s", path);`. The last call wins. It
 * answers for the running task first, else for the executor's job the
 * thread runs: a CPU-pool job, fork child, map item or reduce range; a
 * br_to_thread call; a process-pool job (which must still return its
 * negative code). Anywhere else it does nothing and returns NULL. */
void *br_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* br_join: wait for t to finish (task-only), store its result in *result
 * (may be NULL) and give the handle back. Returns 0 if it succeeded, its
 * error code if it failed (BR_ECANCELED if cancelled; br_join_result also
 * hands over its message). Errors of the call itself: BR_EHANDLE for a
 * released or stale handle (joining twice), BR_EDEADLK for joining
 * yourself, BR_ENOTTASK. If the joiner is cancelled while waiting, the
 * target is cancelled too and waited for (no task outlives its handle), and
 * BR_ECANCELED is returned. */
int br_join(br_task *t, void **result);

/* br_join_result: br_join that also keeps t's message: out->value is t's
 * result (the caller's, as with br_join), out->err its code, out->msg a
 * malloc'd copy of its message (NULL on success). Release with
 * br_results_free(out, 1). Returns out->err, or an error of the call itself
 * as br_join (then *out is cleared). */
int br_join_result(br_task *t, br_result *out);

/* br_task_close: cancel t if it still runs, wait for it to unwind, give the
 * handle back and drop its result (libdill's hclose). Returns t's outcome
 * code as br_join. From the loop's thread outside any task it runs the loop
 * until t ends. BR_EHANDLE, BR_EDEADLK (closing yourself). */
int br_task_close(br_task *t);

/* br_detach: give the handle back without waiting; t runs on. If it fails,
 * the failure is reported at once, with its name (the loop's
 * on_detached_error, else the log hook). BR_EHANDLE for a released handle,
 * BR_EPERM from any thread but the task's loop thread (the handle is then
 * still held). */
int br_detach(br_task *t);

/* br_cancel: request cancellation of t. Its current blocking call (and every
 * later one) returns BR_ECANCELED until it finishes; the task decides how to
 * unwind. Does not wait. Cancelling a finished task does nothing. Returns 0,
 * BR_EHANDLE for a released handle, BR_EPERM from any thread but the task's
 * loop thread (hand it over with br_call_soon_threadsafe). */
int br_cancel(br_task *t);

/* br_cancelled: whether the caller has been asked to stop: in a task,
 * BR_ECANCELED (cancelled) or BR_ETIMEDOUT (past its scope deadline); in a
 * CPU-pool job, BR_ECANCELED once its future was cancelled or the pool is
 * shutting down with BR_SHUTDOWN_CANCEL; else 0. Any thread. */
int br_cancelled(void);

/* br_wait_for: join t, but give it at most timeout_ms milliseconds
 * (asyncio.wait_for). On timeout t is cancelled, waited for, released, and
 * BR_ETIMEDOUT is returned. Otherwise as br_join. Task-only. */
int br_wait_for(br_task *t, void **result, int64_t timeout_ms);

/* br_task_future: the future that completes with t's outcome, or NULL for a
 * released or stale handle. Borrowed: it lives as long as the handle; take a
 * br_future_ref() to keep it longer, even past br_loop_free (the task's
 * outcome stays readable through it). */
br_future *br_task_future(br_task *t);

/* Introspection; t == NULL means the calling task. br_task_name never
 * returns NULL (a released or stale handle reads "<released>"); br_task_id
 * is 0 and br_task_done false for one. */
const char *br_task_name(br_task *t);
uint64_t br_task_id(br_task *t);
bool br_task_done(br_task *t);

/* What a parked task waits on. The same record serves br_task_get_stats,
 * the tracer (braid/trace.h), br_dump and the deadlock report. */
typedef enum br_wait_kind {
  BR_WAIT_NONE = 0, /* not waiting (running, ready, or done) */
  BR_WAIT_SLEEP,    /* br_sleep_ms / br_sleep_until: a timer */
  BR_WAIT_FD,       /* a file descriptor's readiness (br_fd_wait, sockets, pipes) */
  BR_WAIT_JOIN,     /* another task's end (br_join, br_wait_for, br_task_close) */
  BR_WAIT_FUTURE,   /* a future (br_await, br_gather, br_wait_any) */
  BR_WAIT_CHAN,     /* a channel or queue: send, receive, put, get, join */
  BR_WAIT_LOCK,     /* a mutex, semaphore or event */
  BR_WAIT_CHILD,    /* a child process (br_process_wait) */
  BR_WAIT_GROUP,    /* a group's children (br_group_wait, br_group_free) */
  BR_WAIT_POOL,     /* a CPU-pool job */
  BR_WAIT_BLOCKING, /* a blocking-pool call (br_to_thread) */
  BR_WAIT_PROCPOOL, /* a process-pool job */
  BR_WAIT_IO,       /* submitted I/O (io_uring file operations) */
  BR_WAIT_KINDS     /* the number of kinds */
} br_wait_kind;

/* br_wait_kind_name: a short lower-case name of k ("sleep", "fd", "join",
 * "future", "channel", "lock", "child", "group", "pool", "blocking",
 * "procpool", "io", "none"); "?" for a value out of range. Any thread. */
const char *br_wait_kind_name(br_wait_kind k);

typedef struct br_task_stats {
  int64_t created;    /* br_now() at spawn */
  int64_t finished;   /* br_now() at exit, 0 while alive */
  int64_t run_ns;     /* time spent running (on the loop thread) */
  int64_t cpu_ns;     /* thread CPU time while running (precise mode), or
                         run_ns (fast mode) */
  uint64_t switches;  /* times it was resumed */
  /* Time spent parked, by what the task waited on (wait_ns[BR_WAIT_NONE] is
   * 0; a wait in progress is included). 0 with accounting off. */
  int64_t wait_ns[BR_WAIT_KINDS];
  br_wait_kind waiting; /* what it waits on now (BR_WAIT_NONE if not parked) */
} br_task_stats;

/* br_task_stats: per-task accounting of t (NULL: the caller). BR_EHANDLE. */
int br_task_get_stats(br_task *t, br_task_stats *out);

/* ------------------------------------------------------------------------ */
/* Results and gather                                                        */

/* One task's or future's outcome. msg is owned by the result (NULL on
 * success); release a whole array with br_results_free(). */
struct br_result {
  void *value;
  int err;   /* 0 or a negative code */
  char *msg; /* error message, or NULL */
  /* private: do not touch; may change in any release */
  struct {
    void (*value_free)(void *); /* set when the runtime owns value */
  } br__private;
};

/* br_results_free: release n results: each message, and each value the
 * runtime owns (e.g. a process-pool result's br_bytes); values a task or
 * job returned stay the caller's. Clears every entry. NULL does nothing. */
void br_results_free(br_result *r, size_t n);

/* br_gather_tasks: wait for all n tasks and store each outcome in out[i]
 * (asyncio.gather(..., return_exceptions=True)); the handles are given
 * back. Returns 0 if every task succeeded, otherwise the first failing
 * task's code in index order. If the caller is cancelled, every task still
 * running is cancelled and waited for, and BR_ECANCELED is returned. */
int br_gather_tasks(br_result *out, br_task **tasks, size_t n);

/* br_gather: the same over futures of any kind (tasks, pool jobs, process
 * jobs). Futures are borrowed; a value a future owns is copied as borrowed
 * (it lives as long as the future). From a task (suspends), a plain thread
 * (blocks) or a CPU-pool job (helps); BR_ENOTTASK from a loop callback. */
int br_gather(br_result *out, br_future *const *futures, size_t n);

/* ------------------------------------------------------------------------ */
/* Futures: one type for every kind of work                                  */

/* br_future_new: a pending future with one reference, in *out. BR_EINVAL
 * (NULL out), BR_ENOMEM. */
int br_future_new(br_future **out);

/* Reference counting: a future is freed when its last reference goes.
 * Thread-safe. br_future_unref(NULL) does nothing. */
br_future *br_future_ref(br_future *f);
void br_future_unref(br_future *f);

/* br_future_set / br_future_fail: complete f with a value, or with an error
 * code (< 0) and a formatted message. Single assignment: returns
 * BR_EALREADY if f was already completed (the new outcome is dropped).
 * Wakes every waiter and runs the callbacks. Any thread. */
int br_future_set(br_future *f, void *value);
int br_future_fail(br_future *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* br_future_set_owned: complete f with a value the future owns: if nobody
 * takes it with br_future_take(), value_free(value) runs when f is freed.
 * BR_EALREADY if f was already complete (value stays the caller's). */
int br_future_set_owned(br_future *f, void *value, void (*value_free)(void *));

/* br_future_take: move the value out of a completed future: the caller owns
 * it from now on, and the future reads NULL afterwards. NULL if pending. */
void *br_future_take(br_future *f);

/* br_future_cancel: complete f with BR_ECANCELED and, if and only if this call
 * is what completed it, call its cancel hook (pool jobs use the hook to drop
 * work that has not started). BR_EALREADY if f was already done. For a task's
 * future it cancels the task instead (the task completes it when it ends;
 * BR_EPERM from another thread than the task's loop). */
int br_future_cancel(br_future *f);

/* br_future_set_cancel_hook: what br_future_cancel should also do. The hook
 * runs once, on the cancelling thread. For producers of futures. */
void br_future_set_cancel_hook(br_future *f, br_callback_fn hook, void *arg);

/* br_future_done: whether f is complete. */
bool br_future_done(br_future *f);

/* br_await: wait for f. In a task only the task suspends (its loop goes on);
 * on a plain thread the thread blocks; in a CPU-pool job the worker runs
 * other jobs meanwhile. BR_ENOTTASK from a loop callback. Stores the value in *value (may be
 * NULL) and returns 0, or f's error code. Waiting itself may fail with
 * BR_ECANCELED / BR_ETIMEDOUT (scope), BR_EDEADLK if f is the calling task's
 * own future. f stays pending if the wait is interrupted. */
int br_await(br_future *f, void **value);

/* br_await_until: br_await with an absolute deadline (ns, BR_NEVER for none).
 * Returns BR_ETIMEDOUT when it passes; f is not cancelled. */
int br_await_until(br_future *f, void **value, int64_t deadline);

/* br_future_wait_for: wait_for over a future: at most timeout_ms; on timeout
 * f is cancelled (br_future_cancel) and BR_ETIMEDOUT returned. A task's
 * future is returned once that task has unwound; one of another loop's task
 * cannot be cancelled from here and is left running (BR_ETIMEDOUT at the
 * timeout all the same). */
int br_future_wait_for(br_future *f, void **value, int64_t timeout_ms);

/* Outcome of a completed future (undefined while pending): the value, the
 * code (0 on success) and the message ("" on success). The message lives as
 * long as f. */
void *br_future_value(br_future *f);
int br_future_error(br_future *f);
const char *br_future_message(br_future *f);

/* br_future_on_done: call cb(arg) once f completes — on the thread that
 * completes it, or at once on the caller's thread if f is already done.
 * Callbacks must not block. BR_ENOMEM. */
int br_future_on_done(br_future *f, br_callback_fn cb, void *arg);

/* br_wait: wait until a condition over n futures holds (asyncio.wait):
 * BR_WAIT_FIRST: any completed — returns the lowest index of a completed one;
 * BR_WAIT_FIRST_ERROR: any failed — returns its index, or n-1 once all
 * completed without error (check br_future_error to tell which);
 * BR_WAIT_ALL: all completed — returns n-1. The index is always valid.
 * Errors of the wait itself: BR_ETIMEDOUT at the deadline (BR_NEVER: none),
 * BR_ECANCELED, BR_EINVAL (NULL, n == 0), BR_ENOTTASK from a loop callback.
 * Futures are borrowed; none is cancelled. Task or plain thread; in a
 * CPU-pool job the worker runs other jobs while it waits, as br_await. */
typedef enum { BR_WAIT_FIRST, BR_WAIT_FIRST_ERROR, BR_WAIT_ALL } br_wait_mode;
int br_wait(br_future *const *futures, size_t n, br_wait_mode mode, int64_t deadline);

/* br_as_completed: iterate futures in completion order. Create with the set
 * (borrowed, must outlive the iterator; BR_EINVAL for a NULL out, for NULL
 * futures with n > 0 and for a NULL entry; n == 0 is an empty set; BR_ENOMEM),
 * then call next until it returns BR_ECLOSED: each call returns the index
 * of the next completed future, or BR_ETIMEDOUT / BR_ECANCELED (BR_EINVAL
 * past INT32_MAX futures, whose indices an int cannot hold). Free with
 * br_as_completed_free() (NULL: no-op). Waits as br_wait does: task, plain
 * thread, or a CPU-pool job (which helps). */
typedef struct br_as_completed br_as_completed;
int br_as_completed_new(br_as_completed **out, br_future *const *futures, size_t n);
int br_as_completed_next(br_as_completed *it, int64_t deadline);
void br_as_completed_free(br_as_completed *it);

/* ------------------------------------------------------------------------ */
/* Cancel scopes and deadlines (trio's move_on_after / fail_after)           */

/* A cancel scope: the caller's storage (usually a local), managed only by
 * br_scope_enter / br_scope_exit / br_scope_cancel. */
struct br_scope {
  /* private: do not touch; may change in any release */
  struct {
    struct br_scope *parent;
    struct br__task *task;
    int64_t deadline;
    int state;
    bool shield;
  } br__private;
};

/* br_scope_enter: open a scope on the calling task's scope stack (the struct
 * is the caller's, usually a local). Blocking calls inside return
 * BR_ETIMEDOUT once `deadline` passes (BR_NEVER: none) and BR_ECANCELED after
 * br_scope_cancel(). A shielding scope hides cancellation from outside it
 * (for cleanup that must finish). Scopes must be exited in reverse order.
 * Task-only: BR_ENOTTASK. BR_EINVAL for NULL; BR_EBUSY if s is already
 * open (entered and not yet exited): it stays open, unchanged. */
int br_scope_enter(br_scope *s, int64_t deadline, bool shield);

/* br_scope_exit: close s. Returns BR_ETIMEDOUT if its deadline passed,
 * BR_ECANCELED if it was cancelled, otherwise 0 (move_on_after: ignore it;
 * fail_after: return it). BR_EINVAL if s is not the calling task's
 * innermost scope (also for a scope whose br_scope_enter failed, and from
 * any other task or thread). */
int br_scope_exit(br_scope *s);

/* br_scope_cancel: cancel s (any task on the same loop may call it, or the
 * loop's thread outside its tasks); the owner's blocking calls inside s
 * return BR_ECANCELED. Returns 0, BR_EINVAL for NULL or a scope not entered
 * (or already exited), BR_EPERM from another thread or another loop's task
 * (hand it over with br_call_soon_threadsafe), and BR_EPERM for a compact
 * task's scope from any task but its owner: a scope is a local of its
 * owner, and a compact task's frames move while it is suspended (use
 * br_cancel on the task instead). Nothing is cancelled on an error. */
int br_scope_cancel(br_scope *s);

/* ------------------------------------------------------------------------ */
/* Task groups (asyncio.TaskGroup / trio nursery)                            */

/* br_group_new: an empty group for the calling task's loop, in *out; free it
 * with br_group_free(). Task-only. BR_EINVAL (NULL out), BR_ENOTTASK,
 * BR_ENOMEM. */
int br_group_new(br_group **out);

/* br_group_spawn: spawn a task into g (opts as br_spawn, DETACHED ignored).
 * If any task of the group fails, all the others are cancelled. Returns 0 or
 * a br_spawn error; BR_ESHUTDOWN once the group has failed or been waited.
 * Once g was cancelled (br_group_cancel, a cancelled br_group_wait, a
 * br_group_free in progress), a task spawned into it starts cancelled, as
 * in a cancelled trio nursery: it runs, and its first blocking call returns
 * BR_ECANCELED, so a group being cancelled cannot gain a task nobody
 * cancels. */
int br_group_spawn(br_group *g, br_task_fn fn, void *arg, const br_spawn_opts *opts);

/* br_group_wait: wait for every task of g. Returns 0 if all succeeded, else
 * the first failure's code (its message: br_group_message()). Tasks that
 * were cancelled because of a sibling's failure do not count as failures. If
 * the waiter is cancelled, all the group's tasks are cancelled and waited
 * for, and BR_ECANCELED is returned. Task-only (BR_ENOTTASK), from a task
 * of g's loop (BR_EPERM otherwise); one task waits at a time (BR_EBUSY
 * while another does), BR_EDEADLK from one of g's own tasks. */
int br_group_wait(br_group *g);

/* br_group_cancel: cancel every task in g, and every task spawned into g
 * from now on. */
void br_group_cancel(br_group *g);

/* br_group_message: the first failure's message ("" if none). Lives as long
 * as g. */
const char *br_group_message(br_group *g);

/* br_group_free: cancel and wait for anything still running, then free.
 * Call it from a task of the group's loop, or from that loop's thread
 * outside the loop (it then runs the loop until the tasks are gone).
 * Returns 0 (NULL is a no-op), BR_EDEADLK from one of the group's own tasks,
 * BR_EPERM from any other thread or loop, BR_EBUSY while another task is in
 * br_group_wait(g) (nothing is freed then). */
int br_group_free(br_group *g);

/* ------------------------------------------------------------------------ */
/* Callbacks on the loop                                                     */

/* br_call_soon: run cb(arg) on the loop thread at its next iteration, outside
 * any task (it may spawn tasks, must not block). Loop thread only; BR_EPERM
 * from another thread, BR_ENOMEM. */
int br_call_soon(br_loop *loop, br_callback_fn cb, void *arg);

/* br_call_soon_threadsafe: the same from any thread; wakes the loop. Every
 * callback it accepted (returned 0 for) runs exactly once, at the latest
 * while br_loop_free drains the loop. Returns 0, BR_EINVAL (NULL loop or
 * cb), BR_ENOMEM, BR_EAGAIN when BR_CALL_SOON_THREADSAFE_MAX callbacks
 * handed over this way wait for the loop to pick them up (try again once it
 * has run; a loop that does not run does not grow without bound), and
 * BR_ECLOSED once br_loop_free has finished cancelling the loop's tasks, or
 * for a loop already freed: braid keeps a set of live loops and never
 * touches a loop it does not find there. (A freed loop's address may be
 * given to a later loop, which a stale pointer then reaches, as a closed
 * descriptor's number reaches the next file opened.) */
int br_call_soon_threadsafe(br_loop *loop, br_callback_fn cb, void *arg);

/* The most callbacks br_call_soon_threadsafe queues for one loop before the
 * loop picks them up (BR_EAGAIN beyond). */
#define BR_CALL_SOON_THREADSAFE_MAX 65536

/* ------------------------------------------------------------------------ */
/* Waiting for file descriptors (the primitive the I/O layer builds on)      */

enum { BR_READABLE = 1, BR_WRITABLE = 2 };

/* br_wait_fd: suspend the calling task until fd is readable and/or writable
 * (events: BR_READABLE | BR_WRITABLE). The fd must be non-blocking. Returns
 * the ready events (> 0), BR_ETIMEDOUT at the deadline or scope deadline,
 * BR_ECANCELED, BR_EBADF if the fd is invalid or forgotten meanwhile,
 * BR_EBUSY if another task already waits for the same direction, BR_EINVAL
 * if events is 0 or has other bits (POLLIN is not BR_READABLE). */
int br_wait_fd(int fd, int events, int64_t deadline);

/* br_fd_forget: tell the loop fd is about to be closed: waiters get BR_EBADF
 * and the registration is dropped. Call before close(). Loop thread only. */
void br_fd_forget(int fd);

/* ------------------------------------------------------------------------ */
/* Coroutine-aware synchronisation. Every wait is a cancellation point and
 * honours scope deadlines; _until variants add their own deadline. All of
 * them are for tasks of one loop unless stated otherwise. */

typedef struct br_chan br_chan;
typedef struct br_queue br_queue;
typedef struct br_mutex br_mutex;
typedef struct br_sem br_sem;
typedef struct br_event br_event;

/* Channels (Go's semantics): elements of elem_size bytes, capacity cap (0:
 * unbuffered, a send waits for a receiver). BR_EINVAL (NULL out,
 * elem_size 0), BR_ENOMEM. Free with br_chan_free. */
int br_chan_new(br_chan **out, size_t elem_size, size_t cap);
/* br_chan_send: copy *elem into the channel, waiting for room. BR_ECLOSED if
 * the channel is (or gets) closed. */
int br_chan_send(br_chan *c, const void *elem);
int br_chan_send_until(br_chan *c, const void *elem, int64_t deadline);
/* br_chan_recv: wait for an element and copy it to *elem. After close, the
 * buffered elements are still delivered, then BR_ECLOSED. */
int br_chan_recv(br_chan *c, void *elem);
int br_chan_recv_until(br_chan *c, void *elem, int64_t deadline);
/* br_chan_try_send / try_recv: never wait; BR_EAGAIN if they would. */
int br_chan_try_send(br_chan *c, const void *elem);
int br_chan_try_recv(br_chan *c, void *elem);
/* br_chan_close: wake every waiter; senders get BR_ECLOSED. Closing twice:
 * BR_ECLOSED. */
int br_chan_close(br_chan *c);
/* br_chan_free: free a channel nobody waits on (BR_EBUSY otherwise). */
int br_chan_free(br_chan *c);

/* Queues (asyncio.Queue): pointers, maxsize 0 = unbounded. BR_EINVAL (NULL
 * out), BR_ENOMEM. */
int br_queue_new(br_queue **out, size_t maxsize);
int br_queue_put(br_queue *q, void *item);
int br_queue_put_until(br_queue *q, void *item, int64_t deadline);
int br_queue_get(br_queue *q, void **item);
int br_queue_get_until(br_queue *q, void **item, int64_t deadline);
int br_queue_try_put(br_queue *q, void *item); /* BR_EFULL */
int br_queue_try_get(br_queue *q, void **item); /* BR_EAGAIN */
/* br_queue_task_done: one fetched item is fully processed. BR_EINVAL if
 * called more times than items were put. */
int br_queue_task_done(br_queue *q);
/* br_queue_join: wait until every item put has been marked done. */
int br_queue_join(br_queue *q);
size_t br_queue_size(br_queue *q);
int br_queue_free(br_queue *q); /* BR_EBUSY while tasks wait on it */

/* Mutex: FIFO hand-off, owned by the locking task. Unlocking a mutex the
 * caller does not hold: BR_EPERM. A task that ends holding it leaves it
 * locked (as asyncio's Lock): no later task is taken for its owner, and
 * once the owner has been joined the mutex may be freed. */
int br_mutex_new(br_mutex **out); /* BR_EINVAL, BR_ENOMEM */
int br_mutex_lock(br_mutex *m);
int br_mutex_lock_until(br_mutex *m, int64_t deadline);
int br_mutex_trylock(br_mutex *m); /* BR_EBUSY */
int br_mutex_unlock(br_mutex *m);
int br_mutex_free(br_mutex *m); /* BR_EBUSY while locked by a live task, or waited on */

/* Semaphore: the way to bound concurrency (at most `value` holders). */
int br_sem_new(br_sem **out, unsigned value); /* BR_EINVAL, BR_ENOMEM */
int br_sem_acquire(br_sem *s);
int br_sem_acquire_until(br_sem *s, int64_t deadline);
int br_sem_release(br_sem *s);
int br_sem_free(br_sem *s); /* BR_EBUSY while tasks wait on it */

/* Event: set once, wakes every waiter; clear() re-arms it. */
int br_event_new(br_event **out); /* BR_EINVAL, BR_ENOMEM */
int br_event_wait(br_event *e);
int br_event_wait_until(br_event *e, int64_t deadline);
void br_event_set(br_event *e);
void br_event_clear(br_event *e);
bool br_event_is_set(br_event *e);
int br_event_free(br_event *e); /* BR_EBUSY while tasks wait on it */

/* ------------------------------------------------------------------------ */
/* Logging: every message the library prints goes through one hook           */

typedef enum br_log_level { BR_LOG_ERROR, BR_LOG_WARN, BR_LOG_INFO, BR_LOG_DEBUG } br_log_level;

/* A log hook: msg is one line without the "braid: " prefix or a newline,
 * valid only during the call. */
typedef void (*br_log_fn)(br_log_level level, const char *msg, void *ud);

/* br_set_log: send every message of the library to fn(level, msg, ud)
 * instead of stderr; NULL restores the default ("braid: <msg>\n" on stderr,
 * written with one write(2)). The hook may be called from any thread,
 * concurrently. Messages about a crash (a task's stack overflow, the
 * watchdog) are passed from a signal handler with level BR_LOG_ERROR: a hook
 * must then be async-signal-safe (write(2), no malloc, no stdio, no locks).
 * Set it before starting loops or pools; a message racing with a change
 * goes to the old hook or the new one. */
void br_set_log(br_log_fn fn, void *ud);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

/* br_strdupf: malloc'd printf-style string (caller frees), NULL on ENOMEM. */
char *br_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* br_cpu_count: CPUs this process may really use: its affinity mask, capped
 * by the cgroup (v1 and v2) CPU quota of its own and every parent cgroup,
 * rounded up; at least 1. */
int br_cpu_count(void);

#ifdef __cplusplus
}
#endif

/* Facilities, each with its own header. */
#if __has_include("braid/pool.h")
#include "braid/pool.h"
#endif
#if __has_include("braid/io.h")
#include "braid/io.h"
#endif
#if __has_include("braid/procpool.h")
#include "braid/procpool.h"
#endif

#endif
