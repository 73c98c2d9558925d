/* braid compare — the report for a terminal: a table per workload (model,
 * how, wall, CPU, speed-up), the timelines on one time axis, and the
 * lesson the figures teach. */
#include <string.h>

#include <braid.h>

#include "compare.h"

static const char *const titles[CMP_NKINDS] = {"I/O-bound", "CPU-bound"};
static const char *const verbs[CMP_NKINDS] = {"wait", "compute"};

static void print_table(FILE *out, const cmp_result *r) {
  int hw = 3;
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m] && (int)strlen(r->runs[m].how) > hw) hw = (int)strlen(r->runs[m].how);
  fprintf(out, "  %-11s %-*s  %9s  %9s  %5s  %8s\n", "model", hw, "how", "wall", "CPU", "cores",
          "speed-up");
  for (int m = 0; m < CMP_NMODELS; m++) {
    if (!r->present[m]) continue;
    const cmp_run *run = &r->runs[m];
    fprintf(out, "  %-11s %-*s  ", cmp_model_name((cmp_model)m), hw, run->how);
    if (run->err) {
      fprintf(out, "%9s  %9s  %5s  %8s\n", "failed", "-", "-", "-");
      continue;
    }
    double s = cmp_speedup(r, (cmp_model)m);
    char wall[32], cpu[32];
    fprintf(out, "%9s  %9s  %5.2f  ", cmp_fmt_time(run->wall_ns, wall, sizeof wall),
            cmp_fmt_time(run->cpu_ns, cpu, sizeof cpu), cmp_cores(run));
    if (s > 0)
      fprintf(out, s >= 0.1 ? "%7.2fx\n" : "%7.3fx\n", s);
    else
      fprintf(out, "%8s\n", "-");
  }
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m] && r->runs[m].err)
      fprintf(out, "  %s failed: %s\n", cmp_model_name((cmp_model)m), r->runs[m].msg);
}

static void print_timelines(FILE *out, const cmp_result *r, const cmp_opts *o) {
  int64_t scale = 0;
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m] && !r->runs[m].err && r->runs[m].wall_ns > scale)
      scale = r->runs[m].wall_ns;
  if (scale <= 0) return;
  char t[32];
  fprintf(out, "\nTimelines (%s running or waiting, - idle; %d columns = %s):\n",
          o->ascii ? "#" : "\xe2\x96\x88", o->width, cmp_fmt_time(scale, t, sizeof t));
  for (int m = 0; m < CMP_NMODELS; m++) {
    if (!r->present[m] || r->runs[m].err) continue;
    fprintf(out, "\n%s\n", cmp_model_name((cmp_model)m));
    cmp_timeline_print(out, &r->runs[m], scale, o->width, o->rows, o->ascii);
  }
}

/* The lesson the figures teach, when the work is long enough to dominate
 * what starting threads, loops and processes costs. */
static void print_lesson(FILE *out, const cmp_result *r) {
  if (r->work.ms < 20) return;
  double thr = cmp_speedup(r, CMP_THREADS), coro = cmp_speedup(r, CMP_CORO);
  double proc = cmp_speedup(r, CMP_PROCS);
  int cpus = br_cpu_count();
  if (r->work.kind == CMP_IO) {
    if (thr > 0 && coro > 0)
      fprintf(out,
              "\nWaiting work wants concurrency: threads %.2fx and coroutines %.2fx faster than "
              "sequential,\nthe coroutines on a single thread. Waiting costs no CPU.\n",
              thr, coro);
    if (proc > 0)
      fprintf(out,
              "Processes %.2fx: a pool sized for the CPUs (%d workers) waits for only %d tasks at "
              "a time.\n",
              proc, r->runs[CMP_PROCS].workers, r->runs[CMP_PROCS].workers);
  } else {
    if (thr > 0 || coro > 0) fprintf(out, "\nComputing work wants parallelism:");
    if (thr > 0) fprintf(out, " threads %.2fx on %d CPUs", thr, cpus);
    if (proc > 0) fprintf(out, ", processes %.2fx", proc);
    if (coro > 0)
      fprintf(out,
              "%s\ncoroutines %.2fx: one loop interleaves the tasks but computes no faster than "
              "one after another.\n",
              thr > 0 ? ";" : "", coro);
    else if (thr > 0)
      fputc('\n', out);
  }
}

/* Computing tasks are always runnable, so a model that got fewer cores than
 * it could use was crowded out (other programs, a cgroup quota): its time,
 * and every speed-up computed from it, is unreliable. Say so. */
static void print_crowding(FILE *out, const cmp_result *r, const cmp_opts *o) {
  if (!r->work.computes || r->work.ms < 50) return;
  bool any = false;
  for (int m = 0; m < CMP_NMODELS; m++) {
    const cmp_run *run = &r->runs[m];
    if (!r->present[m] || run->err) continue;
    size_t could = 1;
    if (m == CMP_THREADS || m == CMP_PROCS)
      could = r->ntasks < (size_t)run->workers ? r->ntasks : (size_t)run->workers;
    if (cmp_cores(run) >= 0.8 * (double)could) continue;
    fprintf(out, "%s%s %.2f/%zu",
            any ? ", " : "Note: other programs were using the CPUs (cores got/usable: ",
            cmp_model_name((cmp_model)m), cmp_cores(run), could);
    any = true;
  }
  if (any)
    fprintf(out, ").\nThe speed-ups are unreliable: rerun on an idle machine%s.\n",
            o->repeat > 1 ? "" : ", or with --repeat 3 to keep the fastest runs");
}

void cmp_report_text(FILE *out, const cmp_result *res, size_t nres, const cmp_opts *o) {
  for (size_t i = 0; i < nres; i++) {
    const cmp_result *r = &res[i];
    cmp_kind k = r->work.kind;
    if (r->ntasks == 1)
      fprintf(out, "%s%s: 1 task that %ss %ld ms\n\n", i ? "\n" : "", titles[k], verbs[k],
              r->work.ms);
    else
      fprintf(out, "%s%s: %zu tasks that each %s %ld ms\n\n", i ? "\n" : "", titles[k], r->ntasks,
              verbs[k], r->work.ms);
    print_table(out, r);
    if (!o->no_timeline) print_timelines(out, r, o);
    print_lesson(out, r);
    print_crowding(out, r, o);
  }
}
