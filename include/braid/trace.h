/* SPDX-License-Identifier: MIT */
/* braid — tracing, task dumps and deadlock reports.
 *
 * Tracing records, per thread and without locks, every task's run slices
 * and waits (with what it waited on: br_wait_kind in braid.h), spawns and
 * ends, CPU-pool jobs and blocking-pool calls on their worker threads, and
 * each loop's waits in its poller. It is off by default and costs one
 * predictable branch per hook then. Turn it on without recompiling:
 *
 *   BRAID_TRACE=trace.json ./prog          the whole run, written at exit
 *   BRAID_TRACE_FLIGHT=last.json ./prog    flight recorder: the last
 *                                          BRAID_TRACE_BUFFER_MB MiB (default
 *                                          8), written on SIGQUIT, on a
 *                                          watchdog report, a crash report, a
 *                                          deadlock, a failed detached task,
 *                                          or br_trace_write()
 *
 * or from the program with br_trace_start(). The file is Chrome/Perfetto
 * trace-event JSON (open it at ui.perfetto.dev or chrome://tracing), which
 * `braid trace show FILE` draws in the terminal and `braid trace svg FILE`
 * as an SVG timeline.
 *
 * Independently of tracing, br_dump() prints every task of every loop and
 * what it waits on, and a loop whose tasks are all parked on something only
 * another of its tasks could end (a channel nobody sends on) makes
 * br_loop_run / br_run report "all tasks are asleep: deadlock" with that
 * dump and return BR_EDEADLK instead of hanging.
 */
#ifndef BRAID_TRACE_H
#define BRAID_TRACE_H

#include <braid.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_trace_opts {
  /* MiB of memory for events (0: BRAID_TRACE_BUFFER_MB, else 8 in flight
   * mode and 16 otherwise). A flight recorder keeps the last this many MiB;
   * a session with a path (not flight) keeps half of it in memory and
   * spools the oldest full buffers beyond that to a temporary file, so it
   * keeps the whole run while the disk keeps up (16 bytes a task switch or
   * wake-up, 32 or 64 other events); without a path the oldest events go. */
  size_t buffer_mb;
  /* Flight recorder: keep only the last buffer_mb and write `path` when
   * something goes wrong (SIGQUIT, a watchdog or crash report, a deadlock,
   * a failed detached task) instead of at br_trace_stop(). */
  bool flight;
} br_trace_opts;

/* br_trace_start: start recording on every thread. path (copied; may be
 * NULL) is where br_trace_stop() writes the trace, or, with opts->flight,
 * where each trigger writes it (replacing the last one); the flight
 * recorder also installs a SIGQUIT handler (see br_dump_on_sigquit). opts
 * may be NULL. A session already running is replaced (its events are
 * dropped). Returns 0, BR_EINVAL (flight mode without a path), BR_ENOMEM.
 * Any thread. */
int br_trace_start(const char *path, const br_trace_opts *opts);

/* br_trace_stop: stop recording and, if a path was given (and not in flight
 * mode), write the trace there. The events stay in memory until the next
 * br_trace_start, so br_trace_write can still save them. Returns 0, or the
 * write's error (BR_EIO, a negated errno from open), 0 with nothing to do.
 * Any thread; events being recorded on other threads at that moment may be
 * cut off. */
int br_trace_stop(void);

/* br_trace_write: write the events recorded so far (of the running or the
 * last session) to path as trace-event JSON; recording goes on. Writers that
 * fill a buffer meanwhile wait for the write to finish. Returns 0, BR_EINVAL
 * (NULL path), BR_ENOENT (nothing was ever recorded), a negated errno from
 * open or write. Any thread (not a signal handler: the flight recorder's
 * triggers use an async-signal-safe path of their own). */
int br_trace_write(const char *path);

/* br_trace_enabled: whether events are being recorded now. Any thread. */
bool br_trace_enabled(void);

/* br_dump: write every task of every loop to out: its name and id, state,
 * what it waits on (fd N for reading, timer due in X ms, join of task 'Y',
 * channel receive, mutex held by task 'Z', child pid, a blocking-pool call
 * ...), for how long (accounting on), its stack in use and its parent.
 * Reads the loops without locks, so it works while a loop is stuck in a
 * blocking call; from a thread other than a loop's, what it prints of that
 * loop is a racy snapshot. Returns 0, BR_EINVAL (NULL out), BR_EIO (a write
 * failed). Any thread. */
int br_dump(FILE *out);

/* br_dump_on_sigquit: on (true), SIGQUIT (Ctrl-\) writes the task dump to
 * stderr (and the flight recorder's file when it runs) and the program goes
 * on; off restores the previous handler. BRAID_DEBUG=1 turns it on when the
 * first loop is created. Returns 0, or a negated errno from sigaction. Any
 * thread. */
int br_dump_on_sigquit(bool on);

/* br_loop_set_deadlock_check: whether loop reports a deadlock (on by
 * default; BRAID_DEADLOCK=off turns it off for every loop). Turn it off for
 * a loop whose tasks are woken by means braid cannot see (another thread
 * that will hand it a callback later: a loop that was ever handed a
 * br_call_soon_threadsafe callback from another thread is never reported).
 * Returns 0, BR_EINVAL (NULL loop). The loop's thread. */
int br_loop_set_deadlock_check(br_loop *loop, bool on);

#ifdef __cplusplus
}
#endif

#endif
