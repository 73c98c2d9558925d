/* SPDX-License-Identifier: MIT */
/* braid trace — a trace file read back as rows of spans.
 *
 * The reader (trace_read.c) takes the trace-event JSON braid writes
 * (BRAID_TRACE, br_trace_write, braid compare --trace) and builds one row
 * per task (its run slices and its waits, by kind) or, with threads, one row
 * per OS thread (what ran on it, its polls). The drawers (trace_show.c,
 * trace_svg.c) only read the model. */
#ifndef BRAID_TOOL_TRACE_MODEL_H
#define BRAID_TOOL_TRACE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What a span is: running, or waiting on a br_wait_kind (1 .. TR_KINDS-1). */
enum { TR_RUN = 0, TR_KINDS = 16, TR_POLL = 14, TR_JOB = 15 };

typedef struct tr_span {
  int64_t t0, t1; /* ns from the trace's first event */
  uint8_t what;   /* TR_RUN, a wait kind, TR_POLL, TR_JOB */
} tr_span;

typedef struct tr_row {
  char name[80];
  uint64_t key;   /* task key, or the thread's tid */
  size_t members; /* > 1 for a row grouping several tasks of one name */
  tr_span *spans;
  size_t n, cap;
  int64_t first, last; /* first and last instant it appears */
} tr_row;

typedef struct tr_model {
  tr_row *rows;
  size_t n, cap;
  int64_t t0, t1; /* extent (ns, t0 = 0) */
  bool threads;
} tr_model;

/* Read path into m (one row per task, or per thread). 0, or -1 with a
 * message on stderr (cannot open, not a braid trace, malformed JSON, out of
 * range, nothing of that view in it). */
int tr_read(tr_model *m, const char *path, bool threads);
/* The tasks of path, or, when it has none (a `braid profile --trace` file, a
 * program that used only pools), its threads: *threads says which. 0, -1
 * with a message as tr_read, or TR_EMPTY (nothing said) when it has
 * neither. */
enum { TR_EMPTY = -2 };
int tr_read_any(tr_model *m, const char *path, bool *threads);
void tr_free(tr_model *m);
/* Merge rows of the same name into one (members > 1) while there are more
 * than max rows. */
void tr_group(tr_model *m, size_t max);
/* The name of a span kind: "running", "channel", "poll" ... */
const char *tr_what_name(uint8_t what);
/* Time in real units: "850 us", "12.3 ms", "1.25 s". */
const char *tr_fmt_time(int64_t ns, char *buf, size_t size);

/* braid trace show / svg (trace_show.c, trace_svg.c). */
int tr_show(FILE *out, const tr_model *m, int width, bool ascii, size_t max_rows);
int tr_svg(FILE *out, const tr_model *m, const char *title);

#endif
