/* SPDX-License-Identifier: MIT */
/* test_compare — `braid compare`: options, timelines, the models on small
 * workloads, the table and the JSON; then the `braid` binary itself (exit
 * codes, errors on stderr), found next to this test in the build tree
 * (../tools/braid/braid) or through $BRAID_CLI.
 *
 * The tool's sources are compiled into this test (they are one job per file
 * and keep their static names distinct), all but main.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#include "../tools/braid/compare.c"
#include "../tools/braid/compare_args.c"
#include "../tools/braid/compare_auto.c"
#include "../tools/braid/compare_cpu.c"
#include "../tools/braid/compare_io.c"
#include "../tools/braid/compare_json.c"
#include "../tools/braid/compare_mixed.c"
#include "../tools/braid/compare_models.c"
#include "../tools/braid/compare_pool.c"
#include "../tools/braid/compare_procs.c"
#include "../tools/braid/compare_text.c"
#include "../tools/braid/compare_timeline.c"
#include "../tools/braid/compare_trace.c"
#include "../tools/braid/trace_read.c"
#include "../tools/braid/trace_svg.c"

extern char **environ;

/* ---- helpers ----------------------------------------------------------- */

/* Parse a space-separated command line; returns cmp_parse_args' value and
 * the error text in err (caller frees). */
static int parse(const char *line, cmp_opts *o, char **err) {
  char buf[512];
  snprintf(buf, sizeof buf, "compare %s", line);
  char *argv[64];
  int argc = 0;
  for (char *tok = strtok(buf, " "); tok && argc < 63; tok = strtok(NULL, " ")) argv[argc++] = tok;
  argv[argc] = NULL;
  size_t len = 0;
  FILE *f = open_memstream(err, &len);
  assert_non_null(f);
  int rc = cmp_parse_args(argc, argv, o, f);
  fclose(f);
  return rc;
}

/* A minimal JSON syntax checker (RFC 8259 grammar, no semantics). */
static const char *js_ws(const char *p) {
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  return p;
}
static const char *js_value(const char *p);
static const char *js_string(const char *p) {
  if (*p != '"') return NULL;
  for (p++; *p && *p != '"'; p++) {
    if ((unsigned char)*p < 0x20) return NULL;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
        p += 4;
      } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return *p == '"' ? p + 1 : NULL;
}
static const char *js_number(const char *p) {
  const char *s = p;
  if (*p == '-') p++;
  if (*p == '0')
    p++;
  else if (*p >= '1' && *p <= '9')
    while (*p >= '0' && *p <= '9') p++;
  else
    return NULL;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9') p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9') p++;
  }
  return p > s ? p : NULL;
}
static const char *js_value(const char *p) {
  p = js_ws(p);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    bool obj = *p == '{';
    p = js_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
      if (obj) {
        if (!(p = js_string(js_ws(p)))) return NULL;
        p = js_ws(p);
        if (*p++ != ':') return NULL;
      }
      if (!(p = js_value(p))) return NULL;
      p = js_ws(p);
      if (*p == ',') {
        p++;
        continue;
      }
      return *p == close ? p + 1 : NULL;
    }
  }
  if (*p == '"') return js_string(p);
  if (!strncmp(p, "true", 4)) return p + 4;
  if (!strncmp(p, "false", 5)) return p + 5;
  if (!strncmp(p, "null", 4)) return p + 4;
  return js_number(p);
}
static bool json_valid(const char *s) {
  const char *end = js_value(s);
  return end && *js_ws(end) == '\0';
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

/* Whether one line of text holds a, and b after it. */
static bool same_line(const char *text, const char *a, const char *b) {
  for (const char *p = text; (p = strstr(p, a)); p++) {
    const char *nl = strchr(p, '\n'), *q = strstr(p, b);
    if (q && (!nl || q < nl)) return true;
  }
  return false;
}

/* Join wrapped lines: every newline and the indent after it become one space. */
static void flatten(char *text) {
  char *w = text;
  for (char *r = text; *r; r++) {
    if (*r == '\n') {
      while (r[1] == ' ') r++;
      *w++ = ' ';
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
}

/* Run workload `kind` under every in-process model with n tasks of ms each. */
static void run_all(cmp_kind kind, long n, long ms, cmp_result *r) {
  cmp_opts o;
  cmp_defaults(&o);
  o.tasks = n;
  o.wait_ms = o.compute_ms = ms;
  memset(r, 0, sizeof *r);
  r->ntasks = (size_t)n;
  assert_int_equal(kind == CMP_IO ? cmp_work_io(&r->work, &o) : cmp_work_cpu(&r->work, &o), 0);
  for (int m = CMP_SEQ; m <= CMP_CORO; m++) {
    r->present[m] = true;
    assert_int_equal(cmp_run_model((cmp_model)m, &r->work, r->ntasks, o.rows, &r->runs[m]), 0);
  }
}

static void free_all(cmp_result *r) {
  for (int m = 0; m < CMP_NMODELS; m++)
    if (r->present[m]) cmp_run_free(&r->runs[m]);
}

/* ---- options ----------------------------------------------------------- */

static void test_defaults(void **state) {
  (void)state;
  cmp_opts o;
  char *err;
  assert_int_equal(parse("", &o, &err), 0);
  assert_string_equal(err, "");
  free(err);
  assert_int_equal(o.tasks, 5);
  assert_int_equal(o.wait_ms, 1000);
  assert_int_equal(o.kinds, 1u << CMP_IO);
  assert_true(o.models & (1u << CMP_SEQ));
  assert_true(o.models & (1u << CMP_THREADS));
  assert_true(o.models & (1u << CMP_CORO));
  assert_int_equal(o.width, 60);
  assert_int_equal(o.repeat, 1);
  assert_false(o.json);
}

static void test_options(void **state) {
  (void)state;
  cmp_opts o;
  char *err;
  assert_int_equal(parse("-n 3 --wait=20 -c 7 --workload all --json -m seq,coro --width 30 "
                         "--rows 4 --ascii --no-timeline -r 2",
                         &o, &err),
                   0);
  free(err);
  assert_int_equal(o.tasks, 3);
  assert_int_equal(o.wait_ms, 20);
  assert_int_equal(o.compute_ms, 7);
  assert_int_equal(o.kinds, (1u << CMP_IO) | (1u << CMP_CPU) | (1u << CMP_MIXED));
  assert_int_equal(o.models, (1u << CMP_SEQ) | (1u << CMP_CORO));
  assert_int_equal(o.width, 30);
  assert_int_equal(o.rows, 4);
  assert_int_equal(o.repeat, 2);
  assert_true(o.json && o.ascii && o.no_timeline);
  /* the limits themselves are accepted */
  assert_int_equal(parse("-n 100000 -w 60000 -w 0 --tasks 1", &o, &err), 0);
  free(err);
  assert_int_equal(o.tasks, 1);
  assert_int_equal(o.wait_ms, 0);
}

static void test_bad_options(void **state) {
  (void)state;
  static const struct {
    const char *line, *needle;
  } bad[] = {
      {"-n 0", "--tasks"},           {"-n 100001", "--tasks"},    {"-n abc", "'abc'"},
      {"--tasks 5x", "'5x'"},        {"-n -3", "--tasks"},        {"-n 1e3", "--tasks"},
      {"-w -1", "--wait"},           {"-w 60001", "--wait"},      {"-w 99999999999999999999", "'9"},
      {"-c x", "--compute"},         {"--workload gpu", "io, cpu, mixed or all"},
      {"-m seq,bogus", "'bogus'"},   {"-m ''", "unknown model"},  {"--bogus", "'--bogus'"},
      {"-x", "'-x'"},                {"extra", "'extra'"},        {"-n", "needs a value"},
      {"--width 5", "--width"},      {"--rows 1", "--rows"},      {"-r 0", "--repeat"},
      {"--json=1", "'--json' takes no value"},                    {"-m bogus", "auto)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cmp_opts o;
    char *err;
    int rc = parse(bad[i].line, &o, &err);
    if (rc != -1 || !strstr(err, bad[i].needle) || !strstr(err, "braid compare:"))
      fail_msg("'%s': rc %d, message '%s' (wanted '%s')", bad[i].line, rc, err, bad[i].needle);
    assert_int_equal(count(err, "\n"), 1); /* one clear line */
    free(err);
  }
}

/* ---- timeline ----------------------------------------------------------- */

static void test_rows_and_labels(void **state) {
  (void)state;
  for (size_t i = 0; i < 5; i++) assert_true(cmp_row_shown(i, 5, 10));
  size_t shown = 0;
  for (size_t i = 0; i < 100; i++) shown += cmp_row_shown(i, 100, 10);
  assert_int_equal(shown, 10);
  assert_true(cmp_row_shown(0, 100, 10) && cmp_row_shown(7, 100, 10));
  assert_false(cmp_row_shown(8, 100, 10) || cmp_row_shown(97, 100, 10));
  assert_true(cmp_row_shown(98, 100, 10) && cmp_row_shown(99, 100, 10));
  char b[24];
  cmp_task_label(0, 5, b, sizeof b);
  assert_string_equal(b, "A");
  cmp_task_label(25, 26, b, sizeof b);
  assert_string_equal(b, "Z");
  cmp_task_label(0, 27, b, sizeof b);
  assert_string_equal(b, "1");
  cmp_task_label(26, 27, b, sizeof b);
  assert_string_equal(b, "27");
}

static void test_timeline_row(void **state) {
  (void)state;
  const int64_t ms = 1000000;
  char buf[256];
  cmp_task t = {.start = 0, .end = 500 * ms};
  assert_int_equal(cmp_timeline_row(&t, 100 * ms, 10, true, buf, sizeof buf), 10);
  assert_string_equal(buf, "#####-----");
  t = (cmp_task){.start = 300 * ms, .end = 700 * ms};
  cmp_timeline_row(&t, 100 * ms, 10, true, buf, sizeof buf);
  assert_string_equal(buf, "---####---");
  /* the seeds' picture: a task running in pieces */
  cmp_span segs[] = {{0, 400 * ms}, {800 * ms, 1200 * ms}};
  t = (cmp_task){.start = 0, .end = 1200 * ms, .segs = segs, .nsegs = 2, .cap = 2};
  cmp_timeline_row(&t, 100 * ms, 12, true, buf, sizeof buf);
  assert_string_equal(buf, "####----####");
  /* a short piece still shows; a task that never ran does not */
  cmp_span tiny[] = {{510 * ms, 520 * ms}};
  t = (cmp_task){.start = 510 * ms, .end = 520 * ms, .segs = tiny, .nsegs = 1, .cap = 1};
  cmp_timeline_row(&t, 100 * ms, 10, true, buf, sizeof buf);
  assert_string_equal(buf, "-----#----");
  t = (cmp_task){0};
  cmp_timeline_row(&t, 100 * ms, 4, true, buf, sizeof buf);
  assert_string_equal(buf, "----");
  /* waiting, then running: fetch, then parse */
  t = (cmp_task){.start = 100 * ms, .end = 900 * ms, .wait_end = 500 * ms};
  cmp_timeline_row(&t, 100 * ms, 10, true, buf, sizeof buf);
  assert_string_equal(buf, "-~~~~####-");
  t = (cmp_task){.start = 0, .end = 200 * ms, .wait_end = 200 * ms};
  cmp_timeline_row(&t, 100 * ms, 3, false, buf, sizeof buf);
  assert_string_equal(buf, "\xe2\x96\x91\xe2\x96\x91-");
  /* UTF-8 blocks, and a buffer too small is cut at a whole cell */
  t = (cmp_task){.start = 0, .end = 200 * ms};
  cmp_timeline_row(&t, 100 * ms, 3, false, buf, sizeof buf);
  assert_string_equal(buf, "\xe2\x96\x88\xe2\x96\x88-");
  char small[5];
  assert_int_equal(cmp_timeline_row(&t, 100 * ms, 3, false, small, sizeof small), 1);
  assert_string_equal(small, "\xe2\x96\x88");
}

static void test_timeline_print(void **state) {
  (void)state;
  const int64_t ms = 1000000;
  cmp_task tasks[40];
  for (int i = 0; i < 40; i++)
    tasks[i] = (cmp_task){.start = i * 10 * ms, .end = (i + 1) * 10 * ms};
  cmp_run r = {.model = CMP_SEQ, .wall_ns = 400 * ms, .ntasks = 40, .tasks = tasks};
  char *out;
  size_t len;
  FILE *f = open_memstream(&out, &len);
  cmp_timeline_print(f, &r, 400 * ms, 40, 6, true);
  fclose(f);
  assert_int_equal(count(out, "  Task "), 6);
  assert_non_null(strstr(out, "  Task 1 : #---"));
  assert_non_null(strstr(out, "... (34 more tasks)"));
  assert_non_null(strstr(out, "  Task 40: ---"));
  assert_non_null(strstr(out, "  Time:    >>>>"));
  assert_non_null(strstr(out, " 0.40 s\n"));
  free(out);
}

/* ---- the models --------------------------------------------------------- */

static void test_io_models(void **state) {
  (void)state;
  cmp_result r;
  run_all(CMP_IO, 4, 50, &r);
  const int64_t ms = 1000000;
  assert_true(r.runs[CMP_SEQ].wall_ns >= 200 * ms);
  if (br_test_emulated()) { /* no tight timing under qemu */
    free_all(&r);
    skip();
  }
  assert_true(r.runs[CMP_THREADS].wall_ns >= 50 * ms);
  assert_true(r.runs[CMP_THREADS].wall_ns < 150 * ms);
  assert_true(r.runs[CMP_CORO].wall_ns >= 50 * ms);
  assert_true(r.runs[CMP_CORO].wall_ns < 150 * ms);
  for (int m = CMP_SEQ; m <= CMP_CORO; m++) {
    for (size_t i = 0; i < 4; i++) {
      const cmp_task *t = &r.runs[m].tasks[i];
      assert_true(t->end - t->start >= 50 * ms);
      assert_true(t->end <= r.runs[m].wall_ns);
    }
    /* waiting costs (almost) no CPU */
    assert_true(r.runs[m].cpu_ns < 100 * ms);
  }
  /* sequential tasks follow each other; concurrent ones overlap */
  assert_true(r.runs[CMP_SEQ].tasks[1].start >= r.runs[CMP_SEQ].tasks[0].end);
  assert_true(r.runs[CMP_CORO].tasks[1].start < r.runs[CMP_CORO].tasks[0].end);
  assert_true(cmp_speedup(&r, CMP_CORO) > 2.0);
  assert_true(cmp_speedup(&r, CMP_SEQ) > 0.99 && cmp_speedup(&r, CMP_SEQ) < 1.01);
  free_all(&r);
}

static void test_cpu_models(void **state) {
  (void)state;
  cmp_result r;
  run_all(CMP_CPU, 3, 60, &r);
  assert_true(r.work.iters_per_ms > 0);
  assert_true(r.work.slice_ms >= 1 && r.work.slice_ms <= 60);
  /* It computed: 3 tasks of 60 ms of CPU each (CPU time, not wall time, so
   * that a busy machine does not change the figure). Not under qemu: there
   * the same iterations took 98-144 ms of CPU in a later model against the
   * 180 ms the calibration just before predicted (its translated code
   * speeds up as it runs), so only "it used the CPU" holds. */
  for (int m = CMP_SEQ; m <= CMP_CORO; m++) {
    if (br_test_emulated()) assert_true(r.runs[m].cpu_ns > 0);
    else if (r.runs[m].cpu_ns <= 3 * 60 * 1000000LL * 8 / 10)
      fail_msg("model %d: %lld ns of CPU for 3 x 60 ms", m, (long long)r.runs[m].cpu_ns);
  }
  /* the coroutines ran in several pieces each, recorded for the timeline */
  for (size_t i = 0; i < 3; i++) {
    const cmp_task *t = &r.runs[CMP_CORO].tasks[i];
    assert_non_null(t->segs);
    assert_true(t->nsegs >= 2);
    for (size_t s = 1; s < t->nsegs; s++) assert_true(t->segs[s].start >= t->segs[s - 1].end);
  }
  /* interleaved: B's first piece starts before A's last one */
  const cmp_task *a = &r.runs[CMP_CORO].tasks[0], *b = &r.runs[CMP_CORO].tasks[1];
  assert_true(b->segs[0].start < a->segs[a->nsegs - 1].start);
  free_all(&r);
}

static void test_pools(void **state) {
  (void)state;
  const int64_t ms = 1000000;
  cmp_opts o;
  cmp_defaults(&o);
  o.tasks = 3;
  o.compute_ms = 40;
  o.wait_ms = 30;
  cmp_work w;
  /* computing work: threads means the CPU pool, each task split in pieces */
  assert_int_equal(cmp_work_cpu(&w, &o), 0);
  assert_true(w.computes && w.pieces > 1);
  cmp_run r;
  assert_int_equal(cmp_run_model(CMP_THREADS, &w, 3, o.rows, &r), 0);
  assert_non_null(strstr(r.how, "CPU pool of "));
  for (size_t i = 0; i < 3; i++) assert_true(r.tasks[i].end > r.tasks[i].start);
  assert_true(r.cpu_ns > 3 * 40 * ms / 2);
  cmp_run_free(&r);
  /* processes: every piece a job in a worker process; their CPU counts */
  /* Under qemu-user too: the pool forks its server there (no exec). */
  assert_int_equal(cmp_run_model(CMP_PROCS, &w, 3, o.rows, &r), 0);
  assert_non_null(strstr(r.how, "start-up "));
  assert_true(r.setup_ns > 0 && r.setup_ns < r.wall_ns);
  assert_true(r.cpu_ns > 3 * 40 * ms / 2);
  for (size_t i = 0; i < 3; i++) {
    assert_true(r.tasks[i].end > r.tasks[i].start);
    assert_int_equal(r.tasks[i].nsegs, (size_t)w.pieces);
  }
  cmp_run_free(&r);
  /* waiting work in a CPU-sized process pool: only `workers` waits at once */
  assert_int_equal(cmp_work_io(&w, &o), 0);
  assert_int_equal(cmp_run_model(CMP_PROCS, &w, 3, o.rows, &r), 0);
  int workers = br_cpu_count();
  int64_t rounds = (3 + workers - 1) / workers;
  assert_true(r.wall_ns >= rounds * 30 * ms);
  for (size_t i = 0; i < 3; i++) assert_true(r.tasks[i].end - r.tasks[i].start >= 30 * ms);
  cmp_run_free(&r);
}

static void test_thread_failure_is_reported(void **state) {
  (void)state;
  /* A model that cannot run says so instead of crashing. */
  cmp_work w;
  cmp_opts o;
  cmp_defaults(&o);
  cmp_work_io(&w, &o);
  cmp_run r;
  assert_int_equal(cmp_run_model(CMP_NMODELS, &w, 2, 10, &r), BR_ENOTSUP);
  assert_non_null(strstr(r.msg, "not available"));
  cmp_run_free(&r);
}

/* ---- reports ------------------------------------------------------------ */

static void test_reports(void **state) {
  (void)state;
  cmp_result r;
  run_all(CMP_IO, 3, 30, &r);
  cmp_opts o;
  cmp_defaults(&o);
  o.tasks = 3;
  char *out;
  size_t len;
  FILE *f = open_memstream(&out, &len);
  cmp_report_text(f, &r, 1, &o);
  fclose(f);
  assert_non_null(strstr(out, "I/O-bound: 3 tasks that each wait 30 ms"));
  assert_true(same_line(out, "  sequential ", "one after another, 1 thread"));
  assert_true(same_line(out, "  threads ", "3 threads, one per task"));
  assert_true(same_line(out, "  coroutines ", "3 tasks on 1 loop"));
  assert_non_null(strstr(out, "1.00x"));
  assert_int_equal(count(out, "  Task A: "), 3);
  assert_int_equal(count(out, "  Time:   "), 3);
  assert_non_null(strstr(out, "\xe2\x96\x91")); /* ░: the tasks wait */
  assert_null(strstr(out, "Task A: \xe2\x96\x88")); /* █: none computes */
  for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1)
    if (!strstr(line, "Task ") && !strstr(line, "Time:") && nl - line > 80)
      fail_msg("line wider than 80 columns: %.*s", (int)(nl - line), line);
  assert_non_null(strstr(out, "Waiting work wants concurrency"));
  free(out);

  f = open_memstream(&out, &len);
  cmp_report_json(f, &r, 1, &o);
  fclose(f);
  if (!json_valid(out)) fail_msg("invalid JSON:\n%s", out);
  assert_non_null(strstr(out, "\"workload\": \"io\""));
  assert_int_equal(count(out, "\"model\": "), 3);
  assert_int_equal(count(out, "\"start_s\": "), 9);
  assert_non_null(strstr(out, "\"speedup\": 1.0000"));
  assert_int_equal(count(out, "\"ok\": true"), 3);
  free(out);

  /* a failed run: in the table, in the JSON, and no timeline for it */
  r.runs[CMP_THREADS].err = BR_EAGAIN;
  snprintf(r.runs[CMP_THREADS].msg, sizeof r.runs[CMP_THREADS].msg, "could not \"start\"");
  f = open_memstream(&out, &len);
  cmp_report_text(f, &r, 1, &o);
  fclose(f);
  assert_non_null(strstr(out, "failed"));
  assert_non_null(strstr(out, "threads failed: could not \"start\""));
  assert_int_equal(count(out, "  Time:   "), 2);
  free(out);
  f = open_memstream(&out, &len);
  cmp_report_json(f, &r, 1, &o);
  fclose(f);
  if (!json_valid(out)) fail_msg("invalid JSON:\n%s", out);
  assert_non_null(strstr(out, "\"error\": \"could not \\\"start\\\"\""));
  assert_non_null(strstr(out, "\"error_name\": \"EAGAIN\""));
  assert_non_null(strstr(out, "\"speedup\": null"));
  free(out);
  free_all(&r);
}

static void test_crowding_note(void **state) {
  (void)state;
  /* computing tasks that got half a core: the report must not pass that off
   * as the model's speed */
  const int64_t ms = 1000000;
  cmp_task tasks[2] = {{.start = 0, .end = 1000 * ms}, {.start = 1000 * ms, .end = 2000 * ms}};
  cmp_result r = {.work = {.kind = CMP_CPU, .ms = 500, .computes = true, .pieces = 1},
                  .ntasks = 2};
  r.present[CMP_SEQ] = true;
  r.runs[CMP_SEQ] = (cmp_run){.model = CMP_SEQ, .wall_ns = 2000 * ms, .cpu_ns = 1000 * ms,
                              .workers = 1, .ntasks = 2, .tasks = tasks};
  cmp_opts o;
  cmp_defaults(&o);
  char *out;
  size_t len;
  FILE *f = open_memstream(&out, &len);
  cmp_report_text(f, &r, 1, &o);
  fclose(f);
  assert_non_null(strstr(out, "CPU-bound: 2 tasks that each compute 500 ms"));
  flatten(out);
  assert_non_null(strstr(out, "other programs were using the CPUs"));
  assert_non_null(strstr(out, "sequential 0.50/1"));
  assert_non_null(strstr(out, "--repeat 3"));
  free(out);
  r.runs[CMP_SEQ].cpu_ns = 1990 * ms; /* got its core: no note */
  f = open_memstream(&out, &len);
  cmp_report_text(f, &r, 1, &o);
  fclose(f);
  assert_null(strstr(out, "other programs"));
  free(out);
}

/* ---- the binary ---------------------------------------------------------- */

static char cli[PATH_MAX + 32];

static bool find_cli(void) {
  const char *env = getenv("BRAID_CLI");
  if (env && *env) {
    snprintf(cli, sizeof cli, "%s", env);
  } else {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return false;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return false;
    *slash = '\0';
    snprintf(cli, sizeof cli, "%s/../tools/braid/braid", self);
  }
  return access(cli, X_OK) == 0;
}

static char *slurp(int fd) {
  lseek(fd, 0, SEEK_SET);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  ssize_t n;
  while (buf && (n = read(fd, buf + len, cap - len - 1)) > 0) {
    len += (size_t)n;
    if (cap - len < 2) buf = realloc(buf, cap *= 2);
  }
  if (buf) buf[len] = '\0';
  return buf;
}

/* A file run_cli gives the command as its stdout instead of capturing it
 * (NULL: capture). */
static const char *cli_stdout;

/* Run `braid ARGS...` (NULL-terminated); returns its exit status (-1 if it
 * could not run or died by a signal) with its stdout and stderr. */
static int run_cli(char **out, char **err, ...) {
  if (br_test_emulated()) skip(); /* no exec of a foreign binary under qemu-user */
  if (!cli[0] && !find_cli()) skip();
  char *argv[32] = {cli};
  int argc = 1;
  va_list ap;
  va_start(ap, err);
  for (char *a; argc < 31 && (a = va_arg(ap, char *));) argv[argc++] = a;
  va_end(ap);
  char po[] = "/tmp/test_compare_outXXXXXX", pe[] = "/tmp/test_compare_errXXXXXX";
  int fo = mkstemp(po), fe = mkstemp(pe);
  assert_true(fo >= 0 && fe >= 0);
  unlink(po);
  unlink(pe);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (cli_stdout) posix_spawn_file_actions_addopen(&fa, 1, cli_stdout, O_WRONLY, 0);
  else posix_spawn_file_actions_adddup2(&fa, fo, 1);
  posix_spawn_file_actions_adddup2(&fa, fe, 2);
  pid_t pid;
  int rc = posix_spawn(&pid, cli, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  int status = -1;
  if (rc == 0) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  *out = slurp(fo);
  *err = slurp(fe);
  close(fo);
  close(fe);
  if (rc != 0) skip(); /* cannot execute it here (cross build without binfmt) */
  return status;
}

static void test_cli_commands(void **state) {
  (void)state;
  char *out, *err;
  assert_int_equal(run_cli(&out, &err, "version", NULL), 0);
  assert_non_null(strstr(out, "braid 0."));
  free(out), free(err);
  assert_int_equal(run_cli(&out, &err, "version", "--help", NULL), 0);
  assert_non_null(strstr(out, "usage: braid version"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, NULL), 2);
  assert_non_null(strstr(err, "usage: braid <command>"));
  assert_string_equal(out, "");
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "frobnicate", NULL), 2);
  assert_non_null(strstr(err, "unknown command 'frobnicate'"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "--frob", NULL), 2);
  assert_non_null(strstr(err, "unknown option '--frob'"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "help", NULL), 0);
  assert_non_null(strstr(out, "compare"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "help", "compare", NULL), 0);
  assert_non_null(strstr(out, "usage: braid compare"));
  assert_non_null(strstr(out, "--tasks"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "help", "nope", NULL), 2);
  assert_non_null(strstr(err, "unknown command 'nope'"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "compare", "--help", NULL), 0);
  assert_non_null(strstr(out, "--workload"));
  free(out), free(err);
}

static void test_cli_compare_errors(void **state) {
  (void)state;
  static const char *const bad[][3] = {{"-n", "0"},           {"-n", "abc"},
                                       {"--wait", "70000"},   {"--workload", "disk"},
                                       {"--no-such-option"},  {"-m", "fibers"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *out, *err;
    int rc = run_cli(&out, &err, "compare", bad[i][0], bad[i][1], NULL);
    if (rc != 2 || !strstr(err, "braid compare: ") || out[0])
      fail_msg("compare %s %s: exit %d, stderr '%s', stdout '%s'", bad[i][0],
               bad[i][1] ? bad[i][1] : "", rc, err, out);
    free(out), free(err);
  }
}

/* A report that cannot be written (stdout on a full disk) fails the run
 * with one line saying so: the table as well as the JSON, and with two
 * workloads, where the first one's failed flush is followed by others. */
static void test_cli_compare_full_stdout(void **state) {
  (void)state;
  if (access("/dev/full", W_OK) != 0) skip();
  static const char *const modes[][2] = {{"--no-timeline", "io"}, {"--json", "io"}, {"--no-timeline", "all"}};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    char *out, *err;
    cli_stdout = "/dev/full";
    int rc = run_cli(&out, &err, "compare", "-n", "1", "-w", "1", "-c", "1", "-m", "seq", modes[i][0],
                     "--workload", modes[i][1], NULL);
    cli_stdout = NULL;
    if (rc != 1 || !strstr(err, "braid compare: writing the report: ") || count(err, "\n") != 1)
      fail_msg("compare %s --workload %s > /dev/full: exit %d, stderr '%s'", modes[i][0], modes[i][1],
               rc, err);
    free(out), free(err);
  }
}

/* A --trace or --svg file that cannot be written is refused before the
 * runs (they can take minutes), as bad usage, in one line. */
static void test_cli_compare_unwritable_files(void **state) {
  (void)state;
  static const char *const opts[] = {"--trace", "--svg"};
  for (size_t i = 0; i < 2; i++) {
    char *out, *err;
    /* (Run, it would wait 3 s and then fail with status 1.) */
    int rc = run_cli(&out, &err, "compare", "-n", "1", "-w", "3000", "-m", "coro", opts[i],
                     "/nonexistent-dir/x", NULL);
    if (rc != 2 || !strstr(err, "cannot write the ") || !strstr(err, "'/nonexistent-dir/x'") ||
        count(err, "\n") != 1 || out[0])
      fail_msg("compare %s /nonexistent-dir/x: exit %d, stderr '%s', stdout '%s'", opts[i], rc, err, out);
    free(out), free(err);
  }
}

static void test_cli_compare_runs(void **state) {
  (void)state;
  char *out, *err;
  assert_int_equal(run_cli(&out, &err, "compare", "-n", "3", "-w", "20", NULL), 0);
  assert_non_null(strstr(out, "I/O-bound: 3 tasks that each wait 20 ms"));
  /* sequential, threads, coroutines, processes, auto */
  assert_int_equal(count(out, "Task C: "), 5);
  assert_int_equal(count(out, "  Time:   "), 5);
  flatten(out);
  assert_non_null(strstr(out, "braid profile of the sequential run says io-bound"));
  free(out), free(err);

  /* -r: the median and the spread */
  assert_int_equal(run_cli(&out, &err, "compare", "-n", "2", "-w", "20", "-m", "seq,coro", "-r",
                           "3", "--no-timeline", NULL),
                   0);
  assert_non_null(strstr(out, "median spread"));
  assert_non_null(strstr(out, "3 runs per model"));
  free(out), free(err);

  assert_int_equal(run_cli(&out, &err, "compare", "-n", "2", "-w", "10", "-c", "10", "--workload",
                           "all", "--json", NULL),
                   0);
  if (!json_valid(out)) fail_msg("invalid JSON:\n%s", out);
  assert_non_null(strstr(out, "\"workload\": \"io\""));
  assert_non_null(strstr(out, "\"workload\": \"cpu\""));
  assert_non_null(strstr(out, "\"workload\": \"mixed\""));
  assert_int_equal(count(out, "\"verdict\": "), 3);
  assert_int_equal(count(out, "\"model\": \"auto\""), 3);
  assert_int_equal(count(out, "\"ok\": true"), count(out, "\"model\": "));
  free(out), free(err);
}

/* --trace / --svg: the coroutine run recorded, each task's wait told from
 * its runs, and drawn. */
static void test_cli_compare_trace(void **state) {
  (void)state;
  char *out, *err;
  char trace[] = "/tmp/test_compare_traceXXXXXX", svg[] = "/tmp/test_compare_svgXXXXXX";
  close(mkstemp(trace));
  close(mkstemp(svg));
  assert_int_equal(run_cli(&out, &err, "compare", "-n", "3", "-w", "30", "-m", "coro", "--trace", trace,
                           "--svg", svg, NULL),
                   0);
  assert_non_null(strstr(err, "trace written to"));
  free(out), free(err);
  tr_model m;
  assert_int_equal(tr_read(&m, trace, false), 0);
  size_t found = 0;
  for (size_t i = 0; i < m.n; i++) {
    const tr_row *r = &m.rows[i];
    if (strcmp(r->name, "A") && strcmp(r->name, "B") && strcmp(r->name, "C")) continue;
    found++;
    int64_t slept = 0, ran = 0;
    for (size_t j = 0; j < r->n; j++) {
      if (r->spans[j].what == BR_WAIT_SLEEP) slept += r->spans[j].t1 - r->spans[j].t0;
      if (r->spans[j].what == TR_RUN) ran += r->spans[j].t1 - r->spans[j].t0;
    }
    assert_true(slept >= 25000000); /* each waits 30 ms */
    assert_true(ran < slept);
  }
  assert_int_equal(found, 3);
  tr_free(&m);
  FILE *f = fopen(svg, "r");
  char head[64] = {0};
  assert_non_null(fgets(head, sizeof head, f));
  fclose(f);
  assert_non_null(strstr(head, "<?xml"));
  unlink(trace);
  unlink(svg);
  assert_int_equal(run_cli(&out, &err, "compare", "--svg", "", NULL), 2);
  free(out), free(err);
  /* Auto sends waiting work to the blocking pool: its threads are drawn. */
  assert_int_equal(run_cli(&out, &err, "compare", "-n", "2", "-w", "5", "-m", "auto", "--no-timeline",
                           "--svg", svg, NULL),
                   0);
  assert_non_null(strstr(err, "timeline written to"));
  free(out), free(err);
  /* Sequential runs nothing braid traces: said plainly, no temporary file
   * named. */
  assert_int_equal(run_cli(&out, &err, "compare", "-n", "2", "-w", "5", "-m", "seq", "--no-timeline",
                           "--svg", svg, NULL),
                   1);
  assert_non_null(strstr(err, "nothing to draw"));
  assert_null(strstr(err, "braid-compare-"));
  free(out), free(err);
  unlink(svg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_cli_compare_trace),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_rows_and_labels),
      cmocka_unit_test(test_timeline_row),
      cmocka_unit_test(test_timeline_print),
      cmocka_unit_test(test_io_models),
      cmocka_unit_test(test_cpu_models),
      cmocka_unit_test(test_pools),
      cmocka_unit_test(test_thread_failure_is_reported),
      cmocka_unit_test(test_reports),
      cmocka_unit_test(test_crowding_note),
      cmocka_unit_test(test_cli_commands),
      cmocka_unit_test(test_cli_compare_errors),
      cmocka_unit_test(test_cli_compare_full_stdout),
      cmocka_unit_test(test_cli_compare_unwritable_files),
      cmocka_unit_test(test_cli_compare_runs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
