/* SPDX-License-Identifier: MIT */
/* braid-mpi — the process pool's API over the ranks of an MPI run.
 *
 * When CPU work outgrows one machine, the same registered jobs (BR_JOB, see
 * braid/procpool.h) run on the ranks that `mpirun` started, as with
 * mpi4py.futures.MPICommExecutor: rank 0 drives (submit, map, imap), every
 * other rank serves jobs until rank 0 shuts the pool down. No process is
 * spawned: the ranks are the ones mpirun started. Jobs are sent by their
 * index in the BR_JOB table, which is the same in every rank running the
 * same program image; arguments and results are bytes.
 *
 *     int main(int argc, char **argv) {
 *       br_mpipool *p;
 *       int rc = br_mpipool_new(&p, &argc, &argv, NULL); // every rank
 *       if (rc < 0) return 1;
 *       if (rc == BR_MPIPOOL_SERVED) return br_mpi_finalize() < 0; // a worker rank is done
 *       ... br_mpipool_map(p, out, "job", items, n, NULL) ...       // rank 0 drives
 *       br_mpipool_free(p);
 *       return br_mpi_finalize() < 0;
 *     }
 *
 * The same program runs unchanged without mpirun: with one rank the pool
 * falls back to a local br_procpool (one worker per CPU unless told
 * otherwise) and says so through braid's log (br_set_log).
 *
 * Futures are the same br_future as every other executor's: a braid task
 * awaiting an MPI job suspends (its loop goes on), a plain thread blocks.
 * On rank 0 one progress thread of the pool makes every MPI call (MPI is
 * initialised with MPI_THREAD_SERIALIZED); while a pool is open on rank 0,
 * the program itself must not call MPI unless MPI provides
 * MPI_THREAD_MULTIPLE. Jobs must not call MPI.
 *
 * Failure (docs/mpi.md): a job that crashes its rank or a rank that is
 * killed fails the futures it held with BR_EWORKERDIED, the message naming
 * the rank, its host and pid and the signal; the jobs that rank had not
 * started go to the other ranks. Open MPI's mpirun ends the whole run when a
 * rank dies unless it was started with --enable-recovery; with it, the pool
 * goes on with the ranks left. Nothing waits forever for a dead rank.
 *
 * Build: link braid::braid_mpi (CMake) or -lbraid-mpi -lbraid and your MPI.
 */
#ifndef BRAID_MPI_H
#define BRAID_MPI_H

#include <stddef.h>
#include <stdint.h>

#include <braid.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* MPI itself                                                                */

/* br_mpi_init: initialise MPI for braid, once per process (later calls do
 * nothing and return 0). If the process was started by mpirun/mpiexec
 * (Open MPI, MPICH, PMIx or PMI environment) it calls MPI_Init_thread with
 * MPI_THREAD_SERIALIZED; if MPI is already initialised (the program called
 * MPI_Init_thread itself) it uses that; otherwise it initialises nothing and
 * the process is a single rank. argc/argv may be NULL. Returns 0, or
 * BR_EIO if MPI_Init_thread failed. Call from the thread that will call
 * br_mpi_finalize (the main thread). br_mpipool_new calls it for you. */
int br_mpi_init(int *argc, char ***argv);

/* br_mpi_finalize: MPI_Finalize, if br_mpi_init initialised MPI (a program
 * that initialised MPI itself finalises it itself). Call it once, after
 * every pool is freed, on every rank, from the thread that initialised MPI.
 * Returns 0 or BR_EIO. Idempotent. */
int br_mpi_finalize(void);

/* br_mpi_rank / br_mpi_size: this process's rank in MPI_COMM_WORLD and the
 * number of ranks (0 and 1 without mpirun). BR_EINVAL before br_mpi_init. */
int br_mpi_rank(void);
int br_mpi_size(void);

/* ------------------------------------------------------------------------ */
/* The pool                                                                  */

typedef struct br_mpipool br_mpipool;

/* br_mpipool_new's return value on a worker rank that has served the pool
 * to its end (rank 0 shut it down): the rank should clean up and exit. */
#define BR_MPIPOOL_SERVED 1

typedef struct br_mpipool_opts {
  /* As br_procpool_opts: a registered job run once on every worker rank
   * before it serves (with init_arg as input). If it fails on a rank, the
   * pool is broken: pending and later jobs fail with BR_EFAILED and the
   * initializer's message, naming the rank. NULL: none. */
  const char *initializer;
  const void *init_arg;
  size_t init_arg_len;
  /* Default per-job timeout in ms, counted from when the rank starts the
   * job (a map item counts alone). At expiry the future fails with
   * BR_ETIMEDOUT and br_cancelled() turns true inside the job; a rank whose
   * job ignores that for kill_after_ms more ends itself (it is then a dead
   * rank: see above), since a running C function cannot be taken back.
   * 0: none. */
  int64_t timeout_ms;
  /* Grace after a timeout or a cancellation before a rank whose job does
   * not return ends itself. 0: 2000 ms; < 0: never (a job that never
   * returns then keeps its rank busy for good). */
  int64_t kill_after_ms;
  /* Largest argument or result, in bytes: BR_E2BIG beyond it (0: 256 MiB;
   * at most 1 GiB: one MPI message carries it). */
  size_t max_payload;
  /* Workers of the local process pool used when there is a single rank
   * (BR_CPUS: one per CPU). */
  int fallback_workers;
  /* How long a rank on another host may stay silent while it holds work
   * before it counts as dead (busy ranks send a heartbeat every
   * heartbeat_ms). 0: 10000 ms and 1000 ms. Ranks on rank 0's host are
   * watched by pid instead and found dead within ~100 ms. */
  int64_t dead_after_ms;
  int64_t heartbeat_ms;
} br_mpipool_opts;

/* br_mpipool_new: collective over MPI_COMM_WORLD: every rank calls it.
 * Calls br_mpi_init(argc, argv) first (argc/argv may be NULL).
 *  - On rank 0: creates the pool, stores it in *out and returns 0. The
 *    other ranks become available as they report in; jobs submitted before
 *    wait for them.
 *  - On every other rank: serves jobs until rank 0 shuts the pool down,
 *    then returns BR_MPIPOOL_SERVED with *out NULL.
 *  - With a single rank (no mpirun): creates a pool backed by a local
 *    br_procpool of opts->fallback_workers workers, logs that it did, and
 *    returns 0.
 * opts may be NULL; every rank must pass the same options. Errors (*out
 * NULL): BR_EINVAL (out NULL, bad option), BR_ENOJOB (unknown
 * initializer), BR_EEXIST (two jobs share a name), BR_ENOSYS (MPI gives
 * less than MPI_THREAD_SERIALIZED), BR_EIO (an MPI call failed),
 * BR_ENOMEM, and br_procpool_new's errors in the fallback. From the main
 * thread (the one that will call br_mpi_finalize). */
int br_mpipool_new(br_mpipool **out, int *argc, char ***argv, const br_mpipool_opts *opts);

/* br_mpipool_submit: queue job `job` with a copy of arg[0..len) and store a
 * new future for its outcome in *out (the caller owns that reference:
 * br_future_unref). As with br_procpool_submit, on success the future's
 * value is a br_bytes* the caller owns once the job is done: take it once
 * (br_await's value or br_future_take) and br_bytes_free it, on ranks and in
 * the local fallback alike. On failure the future carries the job's code and br_fail
 * message, or BR_EWORKERDIED (message names the rank), BR_ETIMEDOUT,
 * BR_ECANCELED (br_future_cancel before it started, or shutdown CANCEL),
 * BR_E2BIG (result over max_payload), BR_EFAILED (initializer). opts may be
 * NULL. Errors of the call (no future): BR_EINVAL, BR_ENOJOB, BR_E2BIG,
 * BR_ESHUTDOWN, BR_ENOMEM. Never waits. Any thread. */
int br_mpipool_submit(br_mpipool *p, br_future **out, const char *job, const void *arg, size_t len,
                      const br_procpool_submit_opts *opts);

/* br_mpipool_map: run job on items[0..n) across the ranks and wait for all
 * of them; out[i] receives item i's outcome (value a br_bytes* that
 * br_results_free releases, or err/msg). Ranks ask for work as they finish,
 * and chunk sizes adapt (opts->chunksize 0): long items go one at a time,
 * short ones in chunks that shrink towards the end, so uneven items finish
 * together. Returns 0 if every item succeeded, else the first failing
 * item's code in index order. Errors of the call: BR_EINVAL, BR_ENOJOB,
 * BR_E2BIG, BR_ESHUTDOWN, BR_ENOMEM; BR_ECANCELED / BR_ETIMEDOUT if the
 * calling task is cancelled (what has not run is dropped, out[] is left
 * empty). Suspends a task, blocks a thread. */
int br_mpipool_map(br_mpipool *p, br_result *out, const char *job, const br_buf *items, size_t n,
                   const br_procpool_map_opts *opts);

/* br_mpipool_map_fixed: br_procpool_map_fixed over the ranks: item i is
 * in[i*in_size ..+in_size), its result must be exactly out_size bytes (else
 * BR_ERANGE for that item) and is copied to out[i*out_size ..]; errors, if
 * not NULL, receives each item's code. Returns as br_mpipool_map. */
int br_mpipool_map_fixed(br_mpipool *p, void *out, size_t out_size, int *errors, const char *job,
                         const void *in, size_t in_size, size_t n, const br_procpool_map_opts *opts);

typedef struct br_mpipool_iter br_mpipool_iter;

/* br_mpipool_imap / br_mpipool_imap_unordered: stream job over the items
 * next(ud, ...) produces, at most opts->window in flight (0: 4 * ranks *
 * chunksize); next runs on the thread that calls br_mpipool_iter_next.
 * Store the iterator in *out; free it with br_mpipool_iter_free. Errors:
 * BR_EINVAL, BR_ENOJOB, BR_ESHUTDOWN, BR_ENOMEM. Any thread. */
int br_mpipool_imap(br_mpipool *p, br_mpipool_iter **out, const char *job,
                    br_procpool_item_fn next, void *ud, const br_procpool_imap_opts *opts);
int br_mpipool_imap_unordered(br_mpipool *p, br_mpipool_iter **out, const char *job,
                              br_procpool_item_fn next, void *ud,
                              const br_procpool_imap_opts *opts);

/* br_mpipool_iter_next: the next outcome, in input order (imap) or as they
 * complete (unordered), in *res (release with br_results_free(res, 1)) and
 * its index in *index (may be NULL). Returns 0 when an outcome was stored,
 * BR_ECLOSED after the last, the producer's negative code, or BR_ECANCELED
 * / BR_ETIMEDOUT if the calling task's wait was interrupted (the iterator
 * stays usable). Suspends a task, blocks a thread. One consumer at a time. */
int br_mpipool_iter_next(br_mpipool_iter *it, br_result *res, size_t *index);

/* br_mpipool_iter_free: drop what has not started, wait for what runs,
 * discard unread outcomes, free. NULL is a no-op returning 0. */
int br_mpipool_iter_free(br_mpipool_iter *it);

/* br_mpipool_shutdown: stop the pool (br_shutdown_mode): DRAIN finishes
 * every job submitted; CANCEL fails what has not started with BR_ECANCELED
 * at once, fails the running jobs' futures with BR_ECANCELED and asks their
 * ranks to stop them (br_cancelled() turns true; kill_after_ms applies).
 * Then every worker rank is told to return from br_mpipool_new, and the
 * call waits until they all have, or are dead. Several calls are fine; a
 * later CANCEL upgrades a DRAIN in progress. Returns 0, or BR_ECANCELED /
 * BR_ETIMEDOUT if the calling task's wait was interrupted (the shutdown
 * goes on). Suspends a task, blocks a thread. */
int br_mpipool_shutdown(br_mpipool *p, br_shutdown_mode mode);

/* br_mpipool_free: shutdown DRAIN if not shut down, then release the pool.
 * Futures handed out stay valid. NULL is a no-op returning 0. BR_EDEADLK
 * from a callback of one of the pool's futures (they run on its progress
 * thread). */
int br_mpipool_free(br_mpipool *p);

typedef struct br_mpipool_stats {
  int ranks;              /* worker ranks in the run (size - 1; 0 in the fallback) */
  int alive;              /* worker ranks that reported in and are not dead */
  int local_workers;      /* fallback: the local process pool's workers; else 0 */
  uint64_t submitted;     /* jobs and map items accepted */
  uint64_t completed;     /* finished, in any way */
  uint64_t failed;        /* of which failed */
  uint64_t rank_deaths;   /* worker ranks found dead */
  uint64_t timeouts;      /* jobs failed for their timeout */
  uint64_t messages;      /* work messages sent to ranks */
} br_mpipool_stats;

/* br_mpipool_get_stats: a snapshot of the counters. BR_EINVAL for NULL.
 * Any thread. */
int br_mpipool_get_stats(br_mpipool *p, br_mpipool_stats *out);

/* br_mpipool_size: the number of workers: worker ranks, or the local
 * process pool's workers in the fallback. */
int br_mpipool_size(const br_mpipool *p);

/* br_mpipool_is_local: 1 if the pool fell back to a local process pool. */
int br_mpipool_is_local(const br_mpipool *p);

/* br_mpipool_rank_info: for worker rank `rank` (1 .. size-1), its pid and
 * host name (host may be NULL; hostlen bytes, NUL-terminated) as it
 * reported them, once it has reported in. BR_EINVAL (bad rank, local pool),
 * BR_EAGAIN (not reported in yet). Any thread. */
int br_mpipool_rank_info(br_mpipool *p, int rank, int *pid, char *host, size_t hostlen);

#ifdef __cplusplus
}
#endif

#endif
