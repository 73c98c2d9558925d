/* SPDX-License-Identifier: MIT */
/* braid compare --trace FILE / --svg FILE: the runs recorded by braid's
 * tracer (braid/trace.h). The tasks of the coroutine and auto models are
 * braid tasks and get a row each (A, B, ... as in the text timelines), with
 * their waits told apart from their runs; the pools' jobs show on their
 * worker threads in the trace. The SVG is drawn from the trace, as
 * `braid trace svg` does. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <braid.h>
#include <braid/trace.h>

#include "compare.h"
#include "trace_model.h"

static char tmp_path[64];

static const char *trace_file(const cmp_opts *o) { return o->trace_path ? o->trace_path : tmp_path; }

int cmp_trace_begin(const cmp_opts *o) {
  if (!o->trace_path && !o->svg_path) return 0;
  if (!o->trace_path) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/braid-compare-XXXXXX");
    int fd = mkstemp(tmp_path);
    if (fd < 0) {
      fprintf(stderr, "braid compare: cannot make a temporary trace file: %m\n");
      return -1;
    }
    close(fd);
  }
  int rc = br_trace_start(trace_file(o), NULL);
  if (rc) {
    fprintf(stderr, "braid compare: cannot start tracing: %s\n", br_strerror(rc));
    return -1;
  }
  return 0;
}

int cmp_trace_end(const cmp_opts *o) {
  if (!o->trace_path && !o->svg_path) return 0;
  int rc = br_trace_stop();
  int ret = 0;
  if (rc) {
    fprintf(stderr, "braid compare: cannot write the trace %s: %s\n", trace_file(o), br_strerror(rc));
    ret = -1;
  } else if (o->trace_path) {
    fprintf(stderr, "braid compare: trace written to %s (braid trace show %s)\n", o->trace_path,
            o->trace_path);
  }
  if (!rc && o->svg_path) {
    tr_model m;
    /* The tasks of the coroutine and auto models; else the pools' threads
     * (auto sending waits to the blocking pool). Sequential, threads and
     * processes run nothing braid traces, and draw nothing. */
    bool threads;
    int got = tr_read_any(&m, trace_file(o), &threads);
    if (got == TR_EMPTY) {
      fprintf(stderr,
              "braid compare: --svg: nothing to draw: only the coroutines and auto models run "
              "what braid traces (add one of them with -m)\n");
      ret = -1;
    } else if (got != 0) {
      ret = -1;
    } else {
      tr_group(&m, 200);
      FILE *f = fopen(o->svg_path, "w");
      int wrc = !f ? -1 : tr_svg(f, &m, "braid compare");
      if (f && fclose(f) != 0) wrc = -1; /* (closed on a failed draw too) */
      if (wrc != 0) {
        fprintf(stderr, "braid compare: cannot write %s: %m\n", o->svg_path);
        ret = -1;
      } else {
        fprintf(stderr, "braid compare: timeline written to %s (%zu rows)\n", o->svg_path, m.n);
      }
      tr_free(&m);
    }
  }
  if (!o->trace_path) unlink(tmp_path);
  return ret;
}
