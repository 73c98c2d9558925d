/* SPDX-License-Identifier: MIT */
/* braid — the profiler's internals (obs layer; not public).
 *
 * One sampler, used by br_profile_command (a command's process tree) and by
 * br_profile (this process's threads while one call runs). The sampler runs
 * on one thread and owns everything here; nothing is shared.
 *
 * Accounting per thread and round: schedstat gives exact run and run-queue
 * nanoseconds since the thread started, so their deltas are the round's
 * on-CPU and waiting-for-a-CPU time. The rest of the round the thread was
 * blocked; that remainder is split between the blocked state seen at the
 * round's start and the one seen at its end (a thread blocked in the same
 * call at both ends gets all of it), so a one-sample glimpse never owns a
 * whole round.
 */
#ifndef BRAID_OBS_PROFILE_INT_H
#define BRAID_OBS_PROFILE_INT_H

#include <braid.h>
#include <braid/profile.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

typedef struct prof_thread {
  pid_t pid, tid;
  int fd_sched, fd_syscall, fd_children; /* kept open: one pread per round */
  uint64_t run_ns, wait_ns;              /* schedstat at the last round */
  int cat;                               /* blocked category at the last round, -1: none */
  int seen_blocked;                      /* the last blocked category ever seen, -1: none */
  double unplaced;                       /* blocked ns before a wait braid can name was seen */
  bool alive, seen;                      /* seen: found in the current round */
  int64_t first_ns, last_ns;             /* when first and last sampled */
  double t[BR_PROFILE_T_COUNT];          /* nanoseconds per category */
  /* schedstat adds a run-queue wait only when it ends, so a thread waiting
   * for a CPU at sampling time looks blocked for a round, and the next
   * round's counters more than fill theirs. Blocked time is therefore kept
   * as a running balance: what the counters say so far, less what was
   * already attributed (to last_cat), corrected both ways. */
  double blocked_balance;
  int last_cat;
  int trace_cat;                         /* the open trace slice: category, -1 none */
  int64_t trace_from;
} prof_thread;

typedef struct prof_proc {
  pid_t pid;
  bool alive;
  uint64_t read_bytes, write_bytes; /* storage I/O under this pid so far */
  uint64_t read_seen, write_seen;   /* the last values of /proc/PID/io */
} prof_proc;

typedef struct prof_state {
  pid_t self;          /* the profiling process */
  pid_t skip_tid;      /* the sampler thread (function mode), or 0 */
  bool include_self;   /* function mode: this process's own threads count */
  prof_thread *th;
  size_t nth, cap_th;
  prof_proc *pr;
  size_t npr, cap_pr;
  int64_t start_ns, last_ns;
  double cores_peak;
  double covered_ns;   /* per round: time some thread was on a CPU or runnable */
  double uncontended_ns; /* the same, shrunk by the round's share of waiting for a CPU */
  double observed_ns;  /* per round: time some thread of the work was known to exist */
  int samples;
  FILE *trace;         /* trace-event JSON being written, or NULL */
  bool trace_any;
} prof_state;

/* Sampling (profile_sample.c). */
int br__prof_init(prof_state *s, bool include_self, pid_t skip_tid, const char *trace_path);
/* One round: discover processes and threads, account every thread. */
void br__prof_round(prof_state *s);
/* Close everything; the tallies stay readable until br__prof_free. Returns
 * 0, or why the trace file could not be written in full (a negated errno). */
int br__prof_finish(prof_state *s);
void br__prof_free(prof_state *s);

/* The blocked category of a thread right now (profile_syscall.c): reads its
 * syscall file and classifies the call and its descriptor. -1 if running,
 * BR_PROFILE_T_COUNT if the thread has exited (a zombie's file reads empty). */
int br__prof_blocked_category(pid_t pid, int fd_syscall);
/* The same, and the system call's number in *nr (-1 when it is in none). */
int br__prof_blocked_call(pid_t pid, int fd_syscall, long *nr);
/* The name of a system call that can block ("nanosleep", "read", ...), NULL
 * for one the profiler does not know. */
const char *br__prof_syscall_name(long nr);

/* Verdict, evidence and recommendation from the tallies (profile_verdict.c).
 * wall_ns: the work's wall time; extra_cpu_ns: CPU time rusage saw that the
 * samples did not (processes too short-lived to be sampled). */
void br__prof_report(const prof_state *s, int64_t wall_ns, int64_t extra_cpu_ns,
                     br_profile_report *out);

#endif
