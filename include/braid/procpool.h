/* SPDX-License-Identifier: MIT */
/* braid — the process pool (isolation).
 *
 * Run CPU work in worker processes so that a job that crashes, leaks, hangs
 * or corrupts memory never takes the program down (multiprocessing.Pool,
 * concurrent.futures.ProcessPoolExecutor). Included by braid.h.
 *
 * Jobs are named functions registered at build time with BR_JOB(); they are
 * found by name in every worker (and in every MPI rank of braid-mpi) because
 * they live in the program image itself, not in memory the parent set up.
 * Arguments and results are bytes. Small ones travel through a shared-memory
 * ring (no system call per job while the worker is busy); large ones through
 * a memfd that is mapped on the other side (no copy through a pipe).
 *
 * How workers start (docs/procpool.md has the full story): the first
 * br_procpool_new() of a process starts a *fork server* by exec'ing the
 * program itself (/proc/self/exe) with a marker in its environment; braid's
 * constructor sees the marker before main() runs and turns that fresh,
 * single-threaded process into the server, which forks the workers. So no
 * worker is ever forked from a process that has other threads (fork with
 * threads can deadlock in the child: cpython#84559), whatever the caller's
 * threads are doing. The server is the process's, shared by all its pools
 * (as Python's forkserver): later pools reuse it and pay no exec; it stays
 * after the last pool is freed, as a child process of the program, and
 * exits when the program exits or execs. If it dies (killed from outside),
 * the next pool to need it starts another. A child made with fork() does
 * not share its parent's server: its first pool starts its own. The marker
 * is authenticated (a random key per process, our own parent on the socket)
 * and ignored in a setuid or otherwise privileged process, so a forged one
 * only lets main() run as usual. The consequence,
 * as with Python's "forkserver"/"spawn": workers do not see state that
 * main() built; use the initializer for per-worker setup. Workers start in
 * the working directory their pool was created in, with the environment,
 * ids, limits and umask the program had when the server started. Each
 * worker leads a process group of its own: the processes a job starts are
 * killed with their worker (unless they left the group: setsid).
 *
 * Every function may be called from any thread, concurrently. Functions that
 * wait (map, iterator next, shutdown) suspend only the calling task when
 * called from a braid task (the loop goes on) and block a plain thread.
 */
#ifndef BRAID_PROCPOOL_H
#define BRAID_PROCPOOL_H

#include "braid.h" /* br_future, br_result, br_shutdown_mode, BR_CPUS; braid.h includes
                      this header at its end */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Bytes                                                                     */

/* A growable byte buffer: a job's output, a pool result. data is NULL while
 * empty. A br_bytes that a job writes to is owned by the runtime; a
 * br_bytes* handed out as a submitted job's value belongs to the caller, who
 * releases it with br_bytes_free(); one in a br_result array (map,
 * iterators) is released with the array by br_results_free(). */
typedef struct br_bytes {
  void *data;
  size_t len;
  /* private: do not touch; may change in any release */
  struct {
    size_t cap;
    int kind; /* heap, memfd mapping, ... */
    int fd;
  } br__private;
} br_bytes;

/* A borrowed view of an input item. */
typedef struct br_buf {
  const void *data;
  size_t len;
} br_buf;

/* br_bytes_resize: make b exactly len bytes long (existing bytes kept, new
 * ones unspecified) and return b->data, or NULL when the memory cannot be
 * had (b unchanged), at once for len above PTRDIFF_MAX.
 * Inside a worker, buffers of 1 MiB or more are backed by a memfd so the
 * parent maps the result instead of copying it: write big results with
 * br_bytes_resize + fill, not byte by byte. Any thread, any process. */
void *br_bytes_resize(br_bytes *b, size_t len);

/* br_bytes_append: append n bytes. 0 or BR_ENOMEM (also when the new length
 * would exceed PTRDIFF_MAX; b is then unchanged). */
int br_bytes_append(br_bytes *b, const void *p, size_t n);

/* br_bytes_set: replace the contents with a copy of p[0..n). 0 or BR_ENOMEM. */
int br_bytes_set(br_bytes *b, const void *p, size_t n);

/* br_bytes_clear: release b's contents and leave it empty (for a br_bytes the
 * caller embeds, e.g. map results). NULL is a no-op. */
void br_bytes_clear(br_bytes *b);

/* br_bytes_free: release a br_bytes* a pool future or iterator handed out:
 * its contents and the struct itself. NULL is a no-op. */
void br_bytes_free(br_bytes *b);

/* ------------------------------------------------------------------------ */
/* Jobs                                                                      */

/* A job: reads in[0..in_len) and writes its result into *out (empty on
 * entry, owned by the runtime: do not free it). Returns 0 on success. It
 * fails — out is then discarded — if it returns a negative code or called
 * br_fail() (braid.h): the future's code is the returned negative code,
 * else br_fail's; its message is br_fail's (truncated to 1 KiB), else the
 * code's text:
 *
 *     if (in_len != 8) {
 *       br_fail(BR_EINVAL, "bad length %zu", in_len);
 *       return BR_EINVAL;
 *     }
 *
 * A positive return value fails the job with BR_EFAILED. br_cancelled()
 * inside a job returns BR_ECANCELED once its future has been cancelled (the
 * result would be dropped). It runs in a worker process: it may crash, leak
 * or hang without harm to the parent. in is read-only and valid only during
 * the call. */
typedef int (*br_job_fn)(const void *in, size_t in_len, br_bytes *out);

/* The registry entry BR_JOB places in the "br_jobs" ELF section. */
typedef struct br_job_desc {
  uint32_t magic;
  uint32_t version;
  const char *name;
  br_job_fn fn;
} br_job_desc;

#define BR__JOB_MAGIC 0x42524a42u /* "BRJB" */

/* BR_JOB(name, fn): register fn as the job called "name" (an identifier; its
 * text is the name). Use at file scope, once per name in the program. The
 * descriptor goes into the "br_jobs" section of the program image, so the
 * job resolves in every worker and every MPI rank without any run-time
 * registration. Two jobs with the same name make br_procpool_new() fail with
 * BR_EEXIST. Jobs in a shared library are not seen by a program linked to it
 * (each image has its own section): define them in the program or in a
 * static library linked into it. */
#define BR_JOB(name, fn)                                                      \
  __attribute__((section("br_jobs"), used, aligned(8)))                      \
  const br_job_desc br__job_desc_##name = {BR__JOB_MAGIC, 1, #name, (fn)}

/* br_job_find: the descriptor registered under name, or NULL. Any thread,
 * any process. */
const br_job_desc *br_job_find(const char *name);

/* br_job_count / br_job_at: the registry as a table sorted by name, the
 * same in every process running the same program image (MPI ranks use the
 * index on the wire). br_job_at returns NULL past the end. */
size_t br_job_count(void);
const br_job_desc *br_job_at(size_t index);

/* br_job_in_worker: true inside a worker process (false in the parent). */
bool br_job_in_worker(void);

/* ------------------------------------------------------------------------ */
/* The pool                                                                  */

typedef struct br_procpool br_procpool;

/* The most workers one pool accepts (more is a mistake, not a pool). */
#define BR_PROCPOOL_MAX_WORKERS 1024

typedef struct br_procpool_opts {
  /* Name of a registered job run once in every worker as it starts, with
   * init_arg as input (Pool(initializer=...)). If it fails, the worker is
   * not used and the pool is marked broken: pending and later jobs fail
   * with BR_EFAILED and the initializer's message. So is a pool whose
   * workers keep dying before they are ready (five times in a row in one
   * slot: an initializer that crashes, exits, or runs past timeout_ms).
   * Jobs wait for it: their own timeouts start with the job.
   * NULL: none. */
  const char *initializer;
  const void *init_arg; /* copied */
  size_t init_arg_len;
  /* Recycle a worker after it has run this many jobs (a map chunk counts as
   * one, like maxtasksperchild); it exits cleanly and a fresh one replaces
   * it. 0: never. */
  uint64_t max_jobs_per_worker;
  /* Default per-job timeout in ms, counted from the moment a worker starts
   * the job (a map item counts alone). On expiry the worker is killed and
   * replaced and the job fails BR_ETIMEDOUT. It also bounds the
   * initializer, from its start: a worker still in it after timeout_ms is
   * killed (and counts as dying before it was ready). 0: none. */
  int64_t timeout_ms;
  /* Per-worker limits: address space in bytes (RLIMIT_AS) and CPU seconds
   * (RLIMIT_CPU; the worker gets SIGXCPU, then SIGKILL). 0: unlimited. */
  uint64_t mem_limit;
  uint64_t cpu_limit_s;
  /* Largest argument or result accepted, in bytes: BR_E2BIG beyond it
   * (0: 1 GiB). */
  size_t max_payload;
} br_procpool_opts;

/* br_procpool_new: create a pool of `workers` worker processes (1 ..
 * BR_PROCPOOL_MAX_WORKERS, or BR_CPUS: one per usable CPU, br_cpu_count())
 * and store it in *out (left NULL on failure). opts may be NULL. The
 * process's fork server is started before this returns if none runs yet
 * (the first pool, or the last server died), else reused; the workers start
 * in the background and jobs submitted meanwhile wait for them. The pool is released with br_procpool_free().
 * Errors: BR_EINVAL (out NULL, worker count negative or over the maximum),
 * BR_ENOJOB (unknown initializer), BR_EEXIST (two jobs share a name; named
 * through the log hook, br_set_log),
 * BR_ENOSYS (/proc/self/exe cannot be executed), BR_ENOMEM, BR_EMFILE and
 * other negated errno values of the system calls. Any thread. */
int br_procpool_new(br_procpool **out, int workers, const br_procpool_opts *opts);

/* Per-call options for br_procpool_submit. */
typedef struct br_procpool_submit_opts {
  int64_t timeout_ms; /* 0: the pool's default; < 0: no timeout */
} br_procpool_submit_opts;

/* br_procpool_submit: queue job `job` with a copy of arg[0..len) as input,
 * and store a new future for its outcome in *out (the caller owns that one
 * reference: br_future_unref() it; *out is left NULL on failure). opts may
 * be NULL. On success the future's value is a br_bytes* the caller owns
 * (br_bytes_free) — take it once. On failure it carries the job's code and
 * message (see br_job_fn), or BR_EWORKERDIED (the message names the signal
 * or exit status), BR_ETIMEDOUT, BR_ECANCELED (BR_SHUTDOWN_CANCEL), BR_E2BIG
 * (result over max_payload), BR_EFAILED (initializer), BR_EBADF (the
 * program closed the pool's descriptors, e.g. with closefrom; the pool then
 * refuses further jobs with BR_EBADF). br_future_cancel()
 * drops a job that has not started; a running job runs on (br_cancelled()
 * tells it) and its result is discarded. Errors of the call itself (no
 * future is made): BR_EINVAL, BR_ENOJOB, BR_E2BIG (len > max_payload),
 * BR_ESHUTDOWN, BR_ENOMEM. Never waits. Any thread. */
int br_procpool_submit(br_procpool *p, br_future **out, const char *job, const void *arg,
                       size_t len, const br_procpool_submit_opts *opts);

typedef struct br_procpool_map_opts {
  size_t chunksize;   /* items per worker hand-off; 0: like Pool.map,
                         ceil(n / (4 * workers)) */
  int64_t timeout_ms; /* per item; 0: the pool's default; < 0: none */
} br_procpool_map_opts;

/* br_procpool_map: run job on items[0..n) and wait for all of them
 * (Pool.map). out[i] receives item i's outcome: value a br_bytes*, or
 * err/msg. br_results_free(out, n) releases the whole array: values and
 * messages (to keep a value, take it out of out[i] and clear out[i].value
 * first; free it with br_bytes_free). Returns 0 if every item succeeded,
 * else the first failing item's code (index order); all items are still
 * run. A crash or
 * timeout fails the item that was running with BR_EWORKERDIED/BR_ETIMEDOUT
 * and the other items of its chunk with BR_EWORKERDIED ("lost"; BR_ECANCELED
 * if BR_SHUTDOWN_CANCEL killed it), never
 * re-running anything. A shutdown during the call: with BR_SHUTDOWN_DRAIN
 * what was submitted completes, with BR_SHUTDOWN_CANCEL it fails
 * BR_ECANCELED (unless it had finished), and items not yet submitted fail
 * BR_ESHUTDOWN; every item gets its outcome. Errors of the call: BR_EINVAL,
 * BR_ENOJOB, BR_E2BIG, BR_ESHUTDOWN (already shut down: no item ran),
 * BR_ENOMEM; BR_ECANCELED / BR_ETIMEDOUT if the calling task
 * is cancelled or its scope expires (the rest is then cancelled, out[] is
 * left empty). opts may be NULL. Suspends a task, blocks a thread. */
int br_procpool_map(br_procpool *p, br_result *out, const char *job, const br_buf *items,
                    size_t n, const br_procpool_map_opts *opts);

/* br_procpool_map_fixed: map over a plain array: item i is
 * in[i*in_size .. +in_size), its result must be exactly out_size bytes and
 * is copied to out[i*out_size ..] (a result of another size fails the item
 * with BR_ERANGE). errors, if not NULL, receives each item's code. Returns
 * as br_procpool_map. The easy form of `pool.map(square, range(10))`. */
int br_procpool_map_fixed(br_procpool *p, void *out, size_t out_size, int *errors,
                          const char *job, const void *in, size_t in_size, size_t n,
                          const br_procpool_map_opts *opts);

/* A producer of input items for the streaming iterators: store item `index`
 * in *item and return 1, or return 0 at the end, or a negative code to stop
 * with an error. The bytes are copied before the next call. */
typedef int (*br_procpool_item_fn)(void *ud, size_t index, br_buf *item);

typedef struct br_procpool_imap_opts {
  size_t chunksize; /* 0: 1, as Pool.imap */
  size_t window;    /* most items in flight or buffered; 0: 4 * workers *
                       chunksize (memory stays bounded by it) */
  int64_t timeout_ms;
} br_procpool_imap_opts;

typedef struct br_procpool_iter br_procpool_iter;

/* br_procpool_imap / br_procpool_imap_unordered: stream job over the items
 * that next(ud, ...) produces (Pool.imap / imap_unordered). Items are pulled
 * lazily, so at most `window` are queued, running or waiting to be taken
 * at any time. Store the iterator in *out (left NULL on failure); free with
 * br_procpool_iter_free. opts may be NULL. Errors: BR_EINVAL, BR_ENOJOB,
 * BR_ENOMEM; a pool that is shut down makes the items fail with
 * BR_ESHUTDOWN. Any thread. */
int br_procpool_imap(br_procpool *p, br_procpool_iter **out, const char *job,
                     br_procpool_item_fn next, void *ud, const br_procpool_imap_opts *opts);
int br_procpool_imap_unordered(br_procpool *p, br_procpool_iter **out, const char *job,
                               br_procpool_item_fn next, void *ud,
                               const br_procpool_imap_opts *opts);

/* br_procpool_iter_next: wait for the next outcome — in input order (imap)
 * or as they complete (unordered) — store it in *res (value a br_bytes*,
 * or err/msg; release it with br_results_free(res, 1)) and the item's
 * index in *index (may be NULL). Returns 0 when an outcome was stored (look
 * at res->err), BR_ECLOSED after the last one, or an error of the iteration
 * itself: the producer's negative code, BR_ECANCELED / BR_ETIMEDOUT (the
 * calling task's scope; the iterator stays usable). Suspends a task, blocks
 * a thread. One consumer at a time. */
int br_procpool_iter_next(br_procpool_iter *it, br_result *res, size_t *index);

/* br_procpool_iter_free: cancel the items that have not started, drop every
 * outcome not read yet (items already running finish in their workers and
 * their outcomes are dropped when they come; nothing waits), free. NULL is
 * a no-op. Any thread. */
void br_procpool_iter_free(br_procpool_iter *it);

/* br_procpool_shutdown: stop the pool and wait until every worker of the
 * pool is gone (killed and reaped) and every future is completed; the
 * process's fork server stays for the next pool. mode (braid.h):
 * BR_SHUTDOWN_DRAIN refuses new jobs (BR_ESHUTDOWN), finishes every job
 * already submitted, then stops the workers; BR_SHUTDOWN_CANCEL refuses new
 * jobs and kills the workers at once: every job not finished fails with
 * BR_ECANCELED. Safe to call several times, from several threads, and while
 * jobs crash or workers recycle; a later CANCEL call upgrades a DRAIN one in
 * progress. Returns 0, BR_EINVAL (p NULL, unknown mode), or
 * BR_ECANCELED / BR_ETIMEDOUT if the calling task's wait was interrupted
 * (the shutdown goes on), BR_EDEADLK from a callback of one of the pool's
 * futures (those run on the pool's own thread). Suspends a task, blocks a
 * thread. */
int br_procpool_shutdown(br_procpool *p, br_shutdown_mode mode);

/* br_procpool_free: br_procpool_shutdown(p, BR_SHUTDOWN_DRAIN) if it was
 * not shut down, then release everything. Futures handed out stay valid
 * (each holds its own reference). Waits even if the calling task is
 * cancelled meanwhile (the pool's memory must outlive its manager thread).
 * Returns 0 (NULL is a no-op), or BR_EDEADLK from a callback of one of the
 * pool's futures (those run on the pool's own thread; nothing is freed). */
int br_procpool_free(br_procpool *p);

typedef struct br_procpool_stats {
  int workers;            /* configured */
  int alive;              /* running now */
  uint64_t submitted;     /* jobs (and map chunks) accepted */
  uint64_t completed;     /* finished, in any way */
  uint64_t failed;        /* of which failed */
  uint64_t worker_deaths; /* workers that died while busy or idle */
  uint64_t timeouts;      /* jobs killed for their timeout */
  uint64_t recycled;      /* workers retired by max_jobs_per_worker */
  uint64_t started;       /* worker processes launched, replacements included */
  /* Run time against CPU time of the jobs that reported (a map chunk counts
   * as one job). run_ns: how long the workers ran them; cpu_ns: the CPU time
   * they used (the worker's process CPU clock, read about once per
   * millisecond of small jobs and around every job of 50 us or more).
   * run_ns - cpu_ns is time jobs spent off a CPU: blocked in a system call,
   * a sleep, a lock — or preempted on a busy machine. blocked: jobs of 50 us
   * or more that spent more than half of their run off a CPU and gave it up
   * themselves (slept, waited; one only preempted is not counted). Counted when
   * a job's result arrives, before its future completes. */
  uint64_t run_ns;
  uint64_t cpu_ns;
  uint64_t blocked;
  /* Jobs (and map chunks) taken back from the queue of a worker busy with
   * a long job, for an idle worker (so that no job waits behind another
   * while a worker has nothing to do). */
  uint64_t taken_back;
} br_procpool_stats;

/* br_procpool_get_stats: a snapshot of the counters into *out. 0, or
 * BR_EINVAL if p or out is NULL. Any thread. */
int br_procpool_get_stats(br_procpool *p, br_procpool_stats *out);

/* br_procpool_size: the configured number of workers (0 for NULL). Any
 * thread. */
int br_procpool_size(const br_procpool *p);

#ifdef __cplusplus
}
#endif

#endif
