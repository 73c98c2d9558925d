/* SPDX-License-Identifier: MIT */
/* braid/profile.h — measure before choosing.
 *
 * "The real skill is knowing which model matches your bottleneck": the
 * profiler watches a piece of work run and says what it waits on. It samples
 * every thread of the work from /proc (no root, no perf, no eBPF): how long
 * each thread ran on a CPU and waited for one (schedstat), and, while it is
 * blocked, which system call it sits in and on what kind of descriptor, so a
 * thread's time is sorted into on-CPU, waiting for a CPU, network, pipe, disk,
 * sleep/timer, lock/futex, child process and event-loop idle. From that it
 * gives a verdict (cpu-bound, io-bound or mixed, with a sub-verdict), the
 * evidence behind it in one sentence, and a recommendation in braid's terms
 * and in Python's.
 *
 * Two ways in: br_profile_command() runs a whole command (what `braid
 * profile -- CMD` does), br_profile() runs one function call of this process.
 */
#ifndef BRAID_PROFILE_H
#define BRAID_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The verdict. */
typedef enum br_profile_verdict {
  BR_PROFILE_CPU_BOUND = 0, /* it computes: "cpu-bound" */
  BR_PROFILE_IO_BOUND = 1,  /* it waits: "io-bound" */
  BR_PROFILE_MIXED = 2      /* it does both in turns: "mixed" */
} br_profile_verdict;

/* What the verdict needs added. */
typedef enum br_profile_detail {
  BR_PROFILE_PLAIN = 0,      /* nothing to add */
  BR_PROFILE_PARALLEL = 1,   /* CPU work already spread over several cores */
  BR_PROFILE_SERIALIZED = 2, /* several threads want to compute, but one core at a time
                                is busy: a lock (an interpreter lock) holds them */
  BR_PROFILE_STARVED = 3,    /* runnable but waiting for a CPU: the machine is
                                oversubscribed */
  BR_PROFILE_TOO_SHORT = 4   /* over too quickly for any model to pay off */
} br_profile_detail;

/* Where the time went: indices of br_profile_report.time. */
typedef enum br_profile_time {
  BR_PROFILE_T_CPU = 0,   /* running on a CPU */
  BR_PROFILE_T_RUNQUEUE,  /* runnable, waiting for a CPU */
  BR_PROFILE_T_NET,       /* blocked on a socket */
  BR_PROFILE_T_PIPE,      /* blocked on a pipe or a terminal */
  BR_PROFILE_T_DISK,      /* blocked on a file or a block device */
  BR_PROFILE_T_SLEEP,     /* sleeping, or waiting for a timer */
  BR_PROFILE_T_LOCK,      /* blocked on a lock (futex, flock, semaphore) */
  BR_PROFILE_T_CHILD,     /* waiting for a child process */
  BR_PROFILE_T_IDLE,      /* an event loop or idle worker with nothing to wait for */
  BR_PROFILE_T_OTHER,     /* anything else */
  BR_PROFILE_T_COUNT
} br_profile_time;

typedef struct br_profile_report {
  br_profile_verdict verdict;
  br_profile_detail detail;
  int exit_status;      /* br_profile_command: the command's wait status (W* macros) */
  double wall_s;        /* wall time of the work */
  double cpu_s;         /* CPU time of the work (user + system), all threads */
  double thread_s;      /* thread-seconds observed: the sum of time[] in seconds */
  double time[BR_PROFILE_T_COUNT]; /* fractions of thread_s, summing to 1 */
  double cores_avg;     /* cpu_s / wall_s */
  double cores_peak;    /* the most cores busy over one sampling interval */
  int cores;            /* CPUs the work could use (br_cpu_count()) */
  int threads;          /* distinct threads seen */
  int processes;        /* distinct processes seen */
  int busy_threads;     /* threads that ran, or waited for a CPU, for 10 % of the wall time */
  uint64_t read_bytes, write_bytes; /* storage I/O, counted once: of the whole reaped
                                       tree for a command (rusage); of each process
                                       seen for a call (/proc/PID/io) */
  int samples;          /* sampling rounds taken */
  double profiler_cpu_s; /* CPU time the sampling itself cost */
  int trace_error;      /* 0, or why opts->trace_path could not be written in full (a
                           negated errno: BR_ENOSPC, BR_EIO, ...); the report stands */
  char evidence[320];   /* the facts behind the verdict, one sentence */
  char recommendation[240]; /* what to use, in braid's terms */
  char python[160];     /* the same in Python's terms */
} br_profile_report;

typedef struct br_profile_opts {
  /* Sampling interval in milliseconds once warmed up (0: 100). The first
   * rounds come faster (10, 20, 40 ms, ...) so short work is seen too. */
  int interval_ms;
  /* Write a Chrome/Perfetto trace-event JSON of the samples here: one track
   * per thread, one slice per stretch in the same state (NULL: none). */
  const char *trace_path;
} br_profile_opts;

/* br_profile_command: run argv (argv[0] searched in PATH) as a child and
 * watch its whole process tree until every process of it has exited — also
 * the orphaned or daemonised ones: the calling process is made a child
 * subreaper (PR_SET_CHILD_SUBREAPER) for the duration, so they are reparented
 * to it and still counted; it reaps every child that exits meanwhile and
 * restores the setting afterwards. While the command runs, SIGINT, SIGQUIT,
 * SIGTERM and SIGHUP, where their disposition is the default, are caught and
 * passed on to the command (one the terminal sent reached it already), so
 * the profile still ends and is reported with the command's status; the
 * dispositions are restored before the call returns. The trace file is
 * created only once the command has started. Fills *out, including the
 * command's wait status. opts may be NULL. Blocks the calling thread (do not call it from a
 * loop task). Errors: BR_EINVAL (NULL out or argv, empty argv), BR_ENOENT /
 * BR_EACCES when the command cannot be executed (nothing is logged: the
 * caller reports it), BR_ENOMEM, BR_ENOSYS without /proc. Any thread, one
 * call at a time per process. */
int br_profile_command(br_profile_report *out, char *const argv[], const br_profile_opts *opts);

/* br_profile: run fn(arg) on the calling thread and watch every thread of
 * this process while it runs (threads it starts, pool workers, the blocking
 * pool), then fill *out the same way (exit_status is 0). fn's result is
 * stored in *result if result is not NULL. A sampler thread runs meanwhile.
 * Errors: BR_EINVAL (NULL out or fn), BR_ENOMEM, BR_ENOSYS without /proc, an
 * error starting the sampler thread. Any thread. */
int br_profile(br_profile_report *out, void **result, void *(*fn)(void *), void *arg,
               const br_profile_opts *opts);

/* The verdict and detail as the strings of the JSON output: "cpu-bound",
 * "io-bound", "mixed"; "", "parallel", "serialized", "starved",
 * "too-short"; and a time category's key ("cpu", "runqueue", "network",
 * "pipe", "disk", "sleep", "lock", "child", "idle", "other"). Never NULL. */
const char *br_profile_verdict_name(br_profile_verdict v);
const char *br_profile_detail_name(br_profile_detail d);
const char *br_profile_time_name(br_profile_time t);

/* br_profile_print / br_profile_print_json: write the report for people (a
 * few lines, fitting 80 columns) or as one JSON object with the keys
 * "verdict", "detail", "time", "evidence", "recommendation", "python", ...
 * followed by a newline (its "exit_status" is the shell's: the exit code or
 * 128 + the killing signal, which "signal" names; the text says how a
 * command that did not exit with 0 ended). Return 0 or BR_EIO if writing
 * failed. Any thread; r is only read. */
int br_profile_print(FILE *f, const br_profile_report *r);
int br_profile_print_json(FILE *f, const br_profile_report *r);

#ifdef __cplusplus
}
#endif

#endif
