/* SPDX-License-Identifier: MIT */
/* braid compare --json — every figure, machine-readable. Times in seconds.
 *
 * {"braid_version": "0.1.0", "cpus": 2, "tasks": 5,
 *  "workloads": [{"workload": "io", "per_task_ms": 1000, "slice_ms": 0,
 *     "iters_per_ms": 0, "runs": [{"model": "sequential", "how": "...",
 *     "ok": true, "error": null, "error_code": 0, "wall_s": 5.0, "cpu_s": 0.0,
 *     "cores": 0.0, "workers": 1, "setup_s": 0, "speedup": 1.0,
 *     "tasks": [{"start_s": 0, "end_s": 1.0, "segments": [[0, 0.1], ...]}, ...]}, ...]}]}
 *
 * "speedup" is null without a successful sequential run; a task that never
 * ran has null start_s / end_s; "segments" appears only where recorded. */
#include <braid.h>

#include "compare.h"

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c < 0x20)
      fprintf(out, "\\u%04x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

static void json_seconds(FILE *out, int64_t ns) { fprintf(out, "%.6f", (double)ns / 1e9); }

static void json_task(FILE *out, const cmp_task *t) {
  if (t->end <= 0) {
    fputs("{\"start_s\": null, \"end_s\": null}", out);
    return;
  }
  fputs("{\"start_s\": ", out);
  json_seconds(out, t->start);
  if (t->wait_end > t->start) {
    fputs(", \"waited_until_s\": ", out);
    json_seconds(out, t->wait_end);
  }
  fputs(", \"end_s\": ", out);
  json_seconds(out, t->end);
  if (t->segs && t->nsegs) {
    fputs(", \"segments\": [", out);
    for (size_t s = 0; s < t->nsegs; s++) {
      fputs(s ? ", [" : "[", out);
      json_seconds(out, t->segs[s].start);
      fputs(", ", out);
      json_seconds(out, t->segs[s].end);
      fputc(']', out);
    }
    fputc(']', out);
  }
  fputc('}', out);
}

static void json_run(FILE *out, const cmp_result *r, cmp_model m) {
  const cmp_run *run = &r->runs[m];
  fputs("        {\"model\": ", out);
  json_string(out, cmp_model_name(m));
  fputs(", \"how\": ", out);
  json_string(out, run->how);
  fprintf(out, ", \"ok\": %s, \"error\": ", run->err ? "false" : "true");
  if (run->err)
    json_string(out, run->msg);
  else
    fputs("null", out);
  fprintf(out, ", \"error_code\": %d, \"error_name\": ", run->err);
  if (run->err)
    json_string(out, br_errname(run->err));
  else
    fputs("null", out);
  fputs(",\n         \"wall_s\": ", out);
  json_seconds(out, run->wall_ns);
  fputs(", \"cpu_s\": ", out);
  json_seconds(out, run->cpu_ns);
  fprintf(out, ", \"cores\": %.4f, \"workers\": %d", cmp_cores(run), run->workers);
  fputs(", \"setup_s\": ", out);
  json_seconds(out, run->setup_ns);
  fprintf(out, ", \"runs\": %d, \"wall_min_s\": ", run->runs > 0 ? run->runs : 1);
  json_seconds(out, run->runs > 1 ? run->wall_min : run->wall_ns);
  fputs(", \"wall_max_s\": ", out);
  json_seconds(out, run->runs > 1 ? run->wall_max : run->wall_ns);
  double s = cmp_speedup(r, m);
  if (s > 0)
    fprintf(out, ", \"speedup\": %.4f", s);
  else
    fputs(", \"speedup\": null", out);
  fputs(",\n         \"tasks\": [", out);
  for (size_t i = 0; i < run->ntasks && run->tasks; i++) {
    fputs(i ? ",\n           " : "\n           ", out);
    json_task(out, &run->tasks[i]);
  }
  fputs("]}", out);
}

void cmp_report_json(FILE *out, const cmp_result *res, size_t nres, const cmp_opts *o) {
  fprintf(out, "{\"braid_version\": \"%s\", \"cpus\": %d, \"tasks\": %ld, \"repeat\": %d,\n",
          br_version_string(), br_cpu_count(), o->tasks, o->repeat);
  fputs(" \"workloads\": [", out);
  for (size_t i = 0; i < nres; i++) {
    const cmp_result *r = &res[i];
    fprintf(out,
            "%s\n  {\"workload\": \"%s\", \"tasks\": %zu, \"per_task_ms\": %ld, "
            "\"compute_ms\": %ld, \"slice_ms\": %ld, \"iters_per_ms\": %.1f,\n   \"verdict\": ",
            i ? "," : "", cmp_kind_name(r->work.kind), r->ntasks, r->work.ms,
            r->work.kind == CMP_MIXED ? r->work.compute_ms : 0, r->work.slice_ms,
            r->work.iters_per_ms);
    if (r->profiled) {
      json_string(out, r->verdict);
      fputs(", \"evidence\": ", out);
      json_string(out, r->evidence);
      fputs(", \"recommendation\": ", out);
      json_string(out, r->recommendation);
    } else {
      fputs("null, \"evidence\": null, \"recommendation\": null", out);
    }
    fputs(",\n   \"runs\": [", out);
    bool first = true;
    for (int m = 0; m < CMP_NMODELS; m++) {
      if (!r->present[m]) continue;
      fputs(first ? "\n" : ",\n", out);
      first = false;
      json_run(out, r, (cmp_model)m);
    }
    fputs("]}", out);
  }
  fputs("]}\n", out);
}
