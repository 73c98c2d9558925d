/* SPDX-License-Identifier: MIT */
/* braid — `braid compare`: shared types.
 *
 * The command runs one or more workloads (what every task does: wait W ms,
 * compute C ms, ...) under several models (how the N tasks are run:
 * sequentially, on threads, as coroutines on one loop, in processes), and
 * reports wall time, CPU time, speed-up and a per-task timeline for each.
 *
 * Files, one job each:
 *   compare.c           the command: parse, run every workload x model, report
 *   compare_args.c      options and their validation
 *   compare_io.c        the I/O-bound workload (each task waits)
 *   compare_cpu.c       the CPU-bound workload (each task computes, calibrated)
 *   compare_models.c    the models: sequential, threads, coroutines
 *   compare_pool.c      threads for computing work: the CPU pool (br_pool)
 *   compare_procs.c     processes: the process pool (br_procpool)
 *   compare_timeline.c  the ASCII timeline of one run
 *   compare_text.c      the table (and timelines) for a terminal
 *   compare_json.c      the same figures as JSON
 *   compare_trace.c     --trace and --svg: the runs recorded by braid's tracer
 *
 * Extension points: a workload is a cmp_work (task bodies: blocking code,
 * coroutine code, and the task's work cut into pieces for pools); a model
 * is a runner that runs N tasks through those bodies and fills a cmp_run.
 * Neither knows about the other's internals. The tool's .c files are also
 * compiled together into tests/test_compare.c: keep static names distinct.
 */
#ifndef BRAID_TOOL_COMPARE_H
#define BRAID_TOOL_COMPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Workloads. */
typedef enum cmp_kind { CMP_IO = 0, CMP_CPU, CMP_MIXED, CMP_NKINDS } cmp_kind;

/* Models, in the order they are run and printed. */
typedef enum cmp_model {
  CMP_SEQ = 0,
  CMP_THREADS,
  CMP_CORO,
  CMP_PROCS,
  CMP_AUTO,
  CMP_NMODELS
} cmp_model;

/* Limits of the options. */
enum {
  CMP_MAX_TASKS = 100000,
  CMP_MAX_MS = 60000,
  CMP_MIN_WIDTH = 10,
  CMP_MAX_WIDTH = 1000,
  CMP_MIN_ROWS = 2,
  CMP_MAX_ROWS = 1000,
  CMP_MAX_REPEAT = 100
};

typedef struct cmp_opts {
  long tasks;        /* N: -n/--tasks, 1..100000 (default 5) */
  long wait_ms;      /* W: -w/--wait, 0..60000 ms each I/O task waits (1000) */
  long compute_ms;   /* C: -c/--compute, 0..60000 ms each CPU task computes (500) */
  unsigned kinds;    /* bit per cmp_kind: --workload io|cpu|mixed|all (io) */
  unsigned models;   /* bit per cmp_model: -m/--models (all available) */
  int repeat;        /* -r/--repeat: runs per model, the median shown (1) */
  int width;         /* --width: timeline columns for the longest run (60) */
  int rows;          /* --rows: most timeline rows per model (10) */
  bool json;         /* --json: JSON on stdout instead of the table */
  bool ascii;        /* --ascii: '#', '-', '>' instead of block and arrows */
  bool no_timeline;  /* --no-timeline */
  const char *trace_path; /* --trace FILE: the runs' trace (trace-event JSON) */
  const char *svg_path;   /* --svg FILE: an SVG timeline drawn from that trace */
} cmp_opts;

/* Parse `compare`'s arguments (argv[0] is "compare") into *o. Returns 0 to
 * go on, 1 if --help was printed (exit 0), -1 on bad usage (a one-line
 * message naming the problem went to err). */
int cmp_parse_args(int argc, char **argv, cmp_opts *o, FILE *err);
void cmp_defaults(cmp_opts *o);
const char *cmp_kind_name(cmp_kind k);   /* "io", "cpu" */
const char *cmp_model_name(cmp_model m); /* "sequential", "threads", ... */
/* Whether this build can run model m at all (processes need the pool). */
bool cmp_model_available(cmp_model m);

/* Times are nanoseconds relative to the start of the run they belong to. */
typedef struct cmp_span {
  int64_t start, end;
} cmp_span;

/* One task's measured life. Tasks drawn on the timeline may also record the
 * segments they actually ran (a coroutine that yields runs in pieces). */
typedef struct cmp_task {
  int64_t start, end; /* first start, last end; end == 0: never ran */
  int64_t wait_end;   /* the task waited from start to here (<= start: never) */
  cmp_span *segs;     /* NULL: one segment, [start, end] */
  size_t nsegs, cap;
} cmp_task;

/* Record the task's start / end (now, relative to t0), and the end of its
 * waiting (the I/O part of a task). */
void cmp_task_begin(cmp_task *t, int64_t t0);
void cmp_task_end(cmp_task *t, int64_t t0);
void cmp_task_waited(cmp_task *t, int64_t t0);
/* Record a segment [start, end] (absolute br_now() times) if t tracks them. */
void cmp_task_segment(cmp_task *t, int64_t start, int64_t end, int64_t t0);

/* A workload: what each task does, in blocking code and in a coroutine. */
typedef struct cmp_work {
  cmp_kind kind;
  long ms;             /* each task waits / computes this long */
  long compute_ms;     /* mixed: after waiting ms, each task computes this long */
  long slice_ms;       /* coroutines yield every slice_ms (0: never) */
  double iters_per_ms; /* CPU: calibrated loop iterations per ms */
  bool computes;       /* CPU-bound: the threads model uses the CPU pool */
  long pieces;         /* a task's work splits into this many equal,
                          independent pieces (1: it cannot be split) */
  /* Blocking body of piece k (0 <= k < pieces) of one task, for models that
   * spread a task over several workers (the pools). Stamps nothing. */
  void (*piece)(const struct cmp_work *w, long k);
  /* Blocking body (sequential, threads, processes): run task t. */
  void (*blocking)(const struct cmp_work *w, cmp_task *t, int64_t t0);
  /* Body inside a braid task (coroutines): 0 or a negative braid code. */
  int (*coroutine)(const struct cmp_work *w, cmp_task *t, int64_t t0);
} cmp_work;

/* Fill *w for the workload; 0 or a negative code. */
int cmp_work_io(cmp_work *w, const cmp_opts *o);
int cmp_work_cpu(cmp_work *w, const cmp_opts *o); /* calibrates the loop */
int cmp_work_mixed(cmp_work *w, const cmp_opts *o); /* waits, then computes */
/* Set w's bodies from its kind and numbers (how a worker process rebuilds
 * the workload it was sent). */
void cmp_io_bodies(cmp_work *w);
void cmp_cpu_bodies(cmp_work *w);
void cmp_mixed_bodies(cmp_work *w);
/* The CPU workload's calibration: loop iterations per ms on this machine. */
double cmp_calibrate(void);
/* Burn ms of CPU time with w's calibration. */
void cmp_compute_ms(const cmp_work *w, long ms);
int cmp_work_bodies(cmp_work *w);

/* Block the calling thread for ms (nanosleep, like time.sleep). */
void cmp_io_wait(long ms);

/* The CPU loop: burn `iters` iterations of pure arithmetic. */
uint64_t cmp_burn(uint64_t iters);

/* The outcome of one model on one workload. */
typedef struct cmp_run {
  cmp_model model;
  char how[96];     /* "5 threads, one per task", ... */
  int err;          /* 0, or why the model could not run (negative code) */
  char msg[256];    /* the error in words, or "" */
  int64_t wall_ns;  /* the whole run, first start to last end */
  int64_t cpu_ns;   /* CPU time the process (and its workers) used */
  int64_t setup_ns; /* start-up cost included in wall (pools), else 0 */
  int64_t wall_min, wall_max; /* over the -r runs (the run shown is the median) */
  int runs;         /* how many runs were taken */
  int workers;      /* threads or processes that ran the tasks */
  size_t ntasks;
  cmp_task *tasks;
} cmp_run;

/* Run model m over n tasks of workload w; out->tasks is allocated here
 * (free with cmp_run_free). Rows shown in the timeline (cmp_row_shown with
 * `rows`) get segment tracking where the model runs tasks in pieces.
 * Returns out->err. */
int cmp_run_model(cmp_model m, const cmp_work *w, size_t n, int rows, cmp_run *out);
void cmp_run_free(cmp_run *r);

/* Process CPU time (all threads), ns; the calling thread's CPU time. */
int64_t cmp_cpu_now(void);
int64_t cmp_thread_cpu_now(void);

/* Record why run r failed: its code and a printf-style message. */
void cmp_run_error(cmp_run *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The pool runners (compare_pool.c, compare_procs.c): run r->ntasks tasks
 * of w, tracking segments where r->tasks[i].segs is set. */
void cmp_run_pool(const cmp_work *w, cmp_run *r);
void cmp_run_procs(const cmp_work *w, cmp_run *r);
/* The auto executor (compare_auto.c): every task's blocking body through
 * br_auto_submit, which measures and routes it. */
void cmp_run_auto(const cmp_work *w, cmp_run *r);

/* All runs of one workload. */
typedef struct cmp_result {
  cmp_work work;
  size_t ntasks;
  bool present[CMP_NMODELS];
  cmp_run runs[CMP_NMODELS];
  /* What `braid profile` says of the workload: br_profile over the first
   * sequential run (profiled is false without one). */
  bool profiled;
  char verdict[48];
  char evidence[320];
  char recommendation[240];
} cmp_result;


/* Average cores busy during run r: CPU time / wall time. */
double cmp_cores(const cmp_run *r);

/* Speed-up of run m over the sequential run, or 0 if unknown. */
double cmp_speedup(const cmp_result *r, cmp_model m);

/* Timeline. Which task rows are drawn when a model has n tasks and at most
 * `rows` rows fit: all if n <= rows, else the first rows-2 and the last 2
 * (rows < 4: the first rows-1 and the last). */
bool cmp_row_shown(size_t i, size_t n, int rows);
/* The label of task i of n ("A".."Z" for n <= 26, else "1".."n"). */
void cmp_task_label(size_t i, size_t n, char *buf, size_t size);
/* Draw run r: one row per shown task, `width` columns standing for
 * scale_ns (the longest run of the workload), so runs of one workload share
 * a time axis. */
void cmp_timeline_print(FILE *out, const cmp_run *r, int64_t scale_ns, int width, int rows,
                        bool ascii);
/* Draw one row into buf (NUL-terminated, at most `cols` cells): cell c is
 * busy if the task ran at least half of [c, c+1) * col_ns, or holds the
 * middle of a segment. Returns the number of cells. */
int cmp_timeline_row(const cmp_task *t, int64_t col_ns, int cols, bool ascii, char *buf,
                     size_t size);

/* A duration for people: "5.00 s" from 0.1 s up, "12.3 ms", "85 us". */
const char *cmp_fmt_time(int64_t ns, char *buf, size_t size);

/* --trace / --svg (compare_trace.c): start recording before the first run,
 * then write the trace and draw the SVG. 0, or -1 with a message on stderr. */
int cmp_trace_begin(const cmp_opts *o);
int cmp_trace_end(const cmp_opts *o);

/* Reports. */
void cmp_report_text(FILE *out, const cmp_result *res, size_t nres, const cmp_opts *o);
void cmp_report_json(FILE *out, const cmp_result *res, size_t nres, const cmp_opts *o);

#endif
