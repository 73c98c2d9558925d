/* SPDX-License-Identifier: MIT */
/* braid compare — the command: parse the options, run every selected
 * workload under every selected model, report. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <braid.h>
#include <braid/profile.h>

#include "commands.h"
#include "compare.h"

double cmp_speedup(const cmp_result *r, cmp_model m) {
  const cmp_run *seq = &r->runs[CMP_SEQ], *run = &r->runs[m];
  if (!r->present[CMP_SEQ] || !r->present[m] || seq->err || run->err || run->wall_ns <= 0)
    return 0;
  return (double)seq->wall_ns / (double)run->wall_ns;
}

double cmp_cores(const cmp_run *r) {
  return r->wall_ns > 0 ? (double)r->cpu_ns / (double)r->wall_ns : 0;
}

int cmp_work_bodies(cmp_work *w) {
  switch (w->kind) {
  case CMP_IO: cmp_io_bodies(w); return 0;
  case CMP_CPU: cmp_cpu_bodies(w); return 0;
  case CMP_MIXED: cmp_mixed_bodies(w); return 0;
  default: return BR_EINVAL;
  }
}

static int make_work(cmp_kind k, const cmp_opts *o, cmp_work *w) {
  switch (k) {
  case CMP_IO: return cmp_work_io(w, o);
  case CMP_CPU: return cmp_work_cpu(w, o);
  case CMP_MIXED: return cmp_work_mixed(w, o);
  default: return BR_EINVAL;
  }
}

/* Progress on a terminal only: the runs take seconds and print nothing. */
static void progress(bool on, cmp_kind k, const char *doing, const char *model) {
  if (!on) return;
  fprintf(stderr, "\r\033[K"); /* back to the start of the line, erase it */
  if (doing)
    fprintf(stderr, "braid compare: %s workload: %s%s...", cmp_kind_name(k), doing, model);
  fflush(stderr);
}

/* Run model m o->repeat times and keep the median run (by wall time), with
 * the fastest and slowest wall times beside it: on a shared machine one run
 * says little, the spread says how much the figure can be trusted. */
static int run_profiled(const cmp_work *w, size_t n, int rows, cmp_run *out, cmp_result *res);

static int run_median(cmp_model m, const cmp_work *w, size_t n, const cmp_opts *o, cmp_run *out,
                      cmp_result *res) {
  int reps = o->repeat;
  cmp_run *runs = calloc((size_t)reps, sizeof *runs);
  if (!runs) {
    *out = (cmp_run){.model = m, .ntasks = n};
    cmp_run_error(out, BR_ENOMEM, "not enough memory for the runs");
    return out->err;
  }
  int done = 0, rc = 0;
  for (; done < reps; done++) {
    rc = m == CMP_SEQ && done == 0 ? run_profiled(w, n, o->rows, &runs[done], res)
                                   : cmp_run_model(m, w, n, o->rows, &runs[done]);
    if (rc != 0) break;
  }
  if (rc != 0) { /* show the failed run */
    for (int i = 0; i < done; i++) cmp_run_free(&runs[i]);
    *out = runs[done];
    free(runs);
    return rc;
  }
  /* Sort by wall time (insertion sort: at most CMP_MAX_REPEAT runs). */
  for (int i = 1; i < reps; i++)
    for (int j = i; j > 0 && runs[j].wall_ns < runs[j - 1].wall_ns; j--) {
      cmp_run t = runs[j];
      runs[j] = runs[j - 1];
      runs[j - 1] = t;
    }
  int mid = (reps - 1) / 2;
  *out = runs[mid];
  out->wall_min = runs[0].wall_ns;
  out->wall_max = runs[reps - 1].wall_ns;
  out->runs = reps;
  for (int i = 0; i < reps; i++)
    if (i != mid) cmp_run_free(&runs[i]);
  free(runs);
  return 0;
}

static void free_result(cmp_result *r) {
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m]) cmp_run_free(&r->runs[m]);
}

int cmd_compare(int argc, char **argv) {
  cmp_opts o;
  int rc = cmp_parse_args(argc, argv, &o, stderr);
  if (rc > 0) return BRAID_EXIT_OK;
  if (rc < 0) return BRAID_EXIT_USAGE;

  bool tty = isatty(STDERR_FILENO) && !o.json;
  /* Checked before anything runs: the runs can take minutes, and a file
   * that cannot be written was a usage error from the start. */
  const char *outs[2] = {o.trace_path, o.svg_path};
  for (int i = 0; i < 2; i++) {
    if (!outs[i]) continue;
    FILE *f = fopen(outs[i], "ae");
    if (!f) {
      fprintf(stderr, "braid compare: cannot write %s '%s': %s\n", i ? "the SVG" : "the trace",
              outs[i], strerror(errno));
      return BRAID_EXIT_USAGE;
    }
    fclose(f);
  }
  if (cmp_trace_begin(&o) != 0) return BRAID_EXIT_FAIL;
  cmp_result res[CMP_NKINDS];
  size_t nres = 0;
  bool failed = false;
  int write_err = 0;
  for (int k = 0; k < CMP_NKINDS; k++) {
    if (!(o.kinds & (1u << k))) continue;
    cmp_result *r = &res[nres++];
    memset(r, 0, sizeof *r);
    r->ntasks = (size_t)o.tasks;
    progress(tty, (cmp_kind)k, "preparing", "");
    if ((rc = make_work((cmp_kind)k, &o, &r->work)) != 0) {
      progress(tty, (cmp_kind)k, NULL, NULL);
      fprintf(stderr, "braid compare: cannot set up the %s workload: %s\n",
              cmp_kind_name((cmp_kind)k), br_strerror(rc));
      nres--;
      failed = true;
      continue;
    }
    for (int m = 0; m < CMP_NMODELS; m++) {
      if (!(o.models & (1u << m))) continue;
      progress(tty, (cmp_kind)k, "running ", cmp_model_name((cmp_model)m));
      r->present[m] = true;
      if (run_median((cmp_model)m, &r->work, r->ntasks, &o, &r->runs[m], r) != 0) failed = true;
    }
    progress(tty, (cmp_kind)k, NULL, NULL);
    if (!o.json) {
      if (nres > 1) fputc('\n', stdout);
      cmp_report_text(stdout, r, 1, &o);
      /* The error of a flush is remembered: a later flush of an empty
       * buffer succeeds, so the check at the end would miss it. */
      if (fflush(stdout) != 0 && !write_err) write_err = errno ? errno : EIO;
    }
  }
  if (cmp_trace_end(&o) != 0) failed = true;
  if (o.json) cmp_report_json(stdout, res, nres, &o);
  for (size_t i = 0; i < nres; i++) free_result(&res[i]);
  if ((fflush(stdout) != 0 || ferror(stdout)) && !write_err) write_err = errno ? errno : EIO;
  if (write_err) {
    fprintf(stderr, "braid compare: writing the report: %s\n", strerror(write_err));
    return BRAID_EXIT_FAIL;
  }
  return failed ? BRAID_EXIT_FAIL : BRAID_EXIT_OK;
}

/* The sequential run, watched by the profiler: the verdict comes from the
 * run the table shows, not from an extra one. */
typedef struct profiled_run {
  const cmp_work *w;
  size_t n;
  int rows;
  cmp_run *out;
  int rc;
  bool ran;
} profiled_run;

static void *profiled_body(void *arg) {
  profiled_run *p = arg;
  p->rc = cmp_run_model(CMP_SEQ, p->w, p->n, p->rows, p->out);
  p->ran = true;
  return NULL;
}

static int run_profiled(const cmp_work *w, size_t n, int rows, cmp_run *out, cmp_result *res) {
  profiled_run p = {w, n, rows, out, 0, false};
  br_profile_report rep;
  res->profiled = false;
  int prc = br_profile(&rep, NULL, profiled_body, &p, NULL);
  if (!p.ran) return cmp_run_model(CMP_SEQ, w, n, rows, out); /* no profiler here */
  if (prc == 0 && p.rc == 0) {
    res->profiled = true;
    snprintf(res->verdict, sizeof res->verdict, "%s%s%s", br_profile_verdict_name(rep.verdict),
             rep.detail ? ", " : "", br_profile_detail_name(rep.detail));
    snprintf(res->evidence, sizeof res->evidence, "%s", rep.evidence);
    snprintf(res->recommendation, sizeof res->recommendation, "%s", rep.recommendation);
  }
  return p.rc;
}
