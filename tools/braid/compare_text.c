/* SPDX-License-Identifier: MIT */
/* braid compare — the report for a terminal: a table per workload (model,
 * wall, CPU, cores, speed-up, how), the timelines on one time axis, the
 * verdict `braid profile` gives the workload, and the lesson the figures
 * teach. Everything but the timelines fits 80 columns. */
#include <stdarg.h>
#include <string.h>

#include <braid.h>

#include "compare.h"

enum { TEXT_WIDTH = 80 };

static const char *const titles[CMP_NKINDS] = {"I/O-bound", "CPU-bound", "Mixed"};

/* Print text wrapped to TEXT_WIDTH - 2 columns, continuation lines indented
 * by `indent` spaces. */
static void wrap(FILE *out, int indent, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void wrap(FILE *out, int indent, const char *fmt, ...) {
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  int col = 0;
  for (const char *p = text; *p;) {
    if (*p == '\n') {
      fputc('\n', out);
      col = 0;
      p++;
      continue;
    }
    size_t len = strcspn(p, " \n");
    if (col > indent && col + 1 + (int)len > TEXT_WIDTH - 2) {
      fprintf(out, "\n%*s", indent, "");
      col = indent;
    } else if (col > 0 && col != indent) {
      fputc(' ', out);
      col++;
    }
    fprintf(out, "%.*s", (int)len, p);
    col += (int)len;
    p += len;
    while (*p == ' ') p++;
  }
  if (col) fputc('\n', out);
}

static void print_table(FILE *out, const cmp_result *r, const cmp_opts *o) {
  bool spread = o->repeat > 1;
  /* model 11, wall 8, [spread 6], CPU 8, cores 5, speed-up 8, then how. */
  int fixed = 2 + 11 + 1 + 8 + (spread ? 7 : 0) + 2 + 8 + 2 + 5 + 2 + 8 + 2;
  int hw = TEXT_WIDTH - fixed;
  fprintf(out, "  %-11s %8s%s  %8s  %5s  %8s  %s\n", "model", spread ? "median" : "wall",
          spread ? " spread" : "", "CPU", "cores", "speed-up", "how");
  for (int m = 0; m < CMP_NMODELS; m++) {
    if (!r->present[m]) continue;
    const cmp_run *run = &r->runs[m];
    fprintf(out, "  %-11s ", cmp_model_name((cmp_model)m));
    if (run->err) {
      fprintf(out, "%8s%s  %8s  %5s  %8s  %.*s\n", "failed", spread ? "       " : "", "-", "-",
              "-", hw, run->how);
      continue;
    }
    char wall[32], cpu[32];
    fprintf(out, "%8s", cmp_fmt_time(run->wall_ns, wall, sizeof wall));
    if (spread) {
      double pct = run->wall_ns > 0
                       ? 100.0 * (double)(run->wall_max - run->wall_min) / (double)run->wall_ns
                       : 0;
      fprintf(out, " %5.0f%%", pct);
    }
    fprintf(out, "  %8s  %5.2f  ", cmp_fmt_time(run->cpu_ns, cpu, sizeof cpu), cmp_cores(run));
    double s = cmp_speedup(r, (cmp_model)m);
    if (s > 0)
      fprintf(out, s >= 0.1 ? "%7.2fx" : "%7.3fx", s);
    else
      fprintf(out, "%8s", "-");
    int len = (int)strlen(run->how);
    if (len > hw) fprintf(out, "  %.*s...\n", hw - 3, run->how);
    else fprintf(out, "  %s\n", run->how);
  }
  if (spread)
    fprintf(out, "  (%d runs per model: the median shown; spread = slowest - fastest)\n",
            o->repeat);
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m] && r->runs[m].err)
      wrap(out, 4, "  %s failed: %s", cmp_model_name((cmp_model)m), r->runs[m].msg);
}

static void print_timelines(FILE *out, const cmp_result *r, const cmp_opts *o) {
  int64_t scale = 0;
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m] && !r->runs[m].err && r->runs[m].wall_ns > scale)
      scale = r->runs[m].wall_ns;
  if (scale <= 0) return;
  char t[32];
  fprintf(out, "\nTimelines (%s running, %s waiting, - idle; %d columns = %s):\n",
          o->ascii ? "#" : "\xe2\x96\x88", o->ascii ? "~" : "\xe2\x96\x91", o->width,
          cmp_fmt_time(scale, t, sizeof t));
  for (int m = 0; m < CMP_NMODELS; m++) {
    if (!r->present[m] || r->runs[m].err) continue;
    fprintf(out, "\n%s\n", cmp_model_name((cmp_model)m));
    cmp_timeline_print(out, &r->runs[m], scale, o->width, o->rows, o->ascii);
  }
}

static void print_verdict(FILE *out, const cmp_result *r) {
  if (!r->profiled) return;
  fputc('\n', out);
  wrap(out, 2, "braid profile of the sequential run says %s: %s.", r->verdict, r->evidence);
  wrap(out, 2, "Use: %s.", r->recommendation);
}

/* The lesson the figures teach, when the work is long enough to dominate
 * what starting threads, loops and processes costs. */
static void print_lesson(FILE *out, const cmp_result *r) {
  if (r->work.ms + r->work.compute_ms < 20) return;
  double thr = cmp_speedup(r, CMP_THREADS), coro = cmp_speedup(r, CMP_CORO);
  double proc = cmp_speedup(r, CMP_PROCS), aut = cmp_speedup(r, CMP_AUTO);
  int cpus = br_cpu_count();
  fputc('\n', out);
  switch (r->work.kind) {
  case CMP_IO:
    if (thr > 0 && coro > 0)
      wrap(out, 0, "Waiting work wants concurrency: threads %.2fx and coroutines %.2fx faster "
           "than sequential, the coroutines on a single thread. Waiting costs no CPU.",
           thr, coro);
    if (proc > 0)
      wrap(out, 0, "Processes %.2fx: a pool sized for the CPUs (%d workers) waits for only %d "
           "tasks at a time.", proc, r->runs[CMP_PROCS].workers, r->runs[CMP_PROCS].workers);
    break;
  case CMP_CPU:
    if (thr > 0 && coro > 0)
      wrap(out, 0, "Computing work wants parallelism: threads %.2fx on %d CPUs%s%.2fx; "
           "coroutines %.2fx: one loop interleaves the tasks but computes no faster than one "
           "after another.", thr, cpus, proc > 0 ? ", processes " : "", proc > 0 ? proc : 0,
           coro);
    break;
  case CMP_MIXED:
    if (thr > 0 && coro > 0)
      wrap(out, 0, "Fetch, then parse wants both: threads %.2fx overlap the waits and spread "
           "the computing over %d CPUs; coroutines %.2fx overlap only the waits, because the "
           "computing holds their one thread. On a loop, hand the computing to the CPU pool "
           "(br_pool_submit + br_await).", thr, cpus, coro);
    break;
  default:
    break;
  }
  if (aut > 0) {
    char how[96];
    snprintf(how, sizeof how, "%s", r->runs[CMP_AUTO].how);
    const char *route = strstr(how, ": ");
    wrap(out, 0, "Auto %.2fx: it measured the tasks and sent them to the %s.", aut,
         route ? route + 2 : how);
  }
}

/* Computing tasks are always runnable, so a model that got fewer cores than
 * it could use was crowded out (other programs, a cgroup quota): its time,
 * and every speed-up computed from it, is unreliable. Say so. */
static void print_crowding(FILE *out, const cmp_result *r, const cmp_opts *o) {
  if (!r->work.computes || r->work.ms < 50) return;
  char list[512] = "";
  size_t len = 0;
  for (int m = 0; m < CMP_NMODELS; m++) {
    const cmp_run *run = &r->runs[m];
    if (!r->present[m] || run->err) continue;
    size_t could = 1;
    if (m == CMP_THREADS || m == CMP_PROCS || m == CMP_AUTO)
      could = r->ntasks < (size_t)run->workers ? r->ntasks : (size_t)run->workers;
    if (cmp_cores(run) >= 0.8 * (double)could) continue;
    int n = snprintf(list + len, sizeof list - len, "%s%s %.2f/%zu", len ? ", " : "",
                     cmp_model_name((cmp_model)m), cmp_cores(run), could);
    if (n > 0 && (size_t)n < sizeof list - len) len += (size_t)n;
  }
  if (len)
    wrap(out, 0, "Note: other programs were using the CPUs (cores got/usable: %s). The "
         "speed-ups are unreliable: rerun on an idle machine%s.", list,
         o->repeat > 1 ? "" : ", or with --repeat 3 for the median and the spread");
}

void cmp_report_text(FILE *out, const cmp_result *res, size_t nres, const cmp_opts *o) {
  for (size_t i = 0; i < nres; i++) {
    const cmp_result *r = &res[i];
    const cmp_work *w = &r->work;
    const char *each = r->ntasks == 1 ? "" : "each ";
    char tasks[48];
    snprintf(tasks, sizeof tasks, r->ntasks == 1 ? "1 task that" : "%zu tasks that", r->ntasks);
    if (w->kind == CMP_MIXED)
      fprintf(out, "%s%s: %s %swait %ld ms, then compute %ld ms\n\n", i ? "\n" : "",
              titles[w->kind], tasks, each, w->ms, w->compute_ms);
    else
      fprintf(out, "%s%s: %s %s%s %ld ms\n\n", i ? "\n" : "", titles[w->kind], tasks, each,
              w->kind == CMP_IO ? (r->ntasks == 1 ? "waits" : "wait")
                                : (r->ntasks == 1 ? "computes" : "compute"),
              w->ms);
    print_table(out, r, o);
    if (!o->no_timeline) print_timelines(out, r, o);
    print_verdict(out, r);
    print_lesson(out, r);
    print_crowding(out, r, o);
  }
}
