/* SPDX-License-Identifier: MIT */
/* braid trace show — the articles' terminal timeline for a real trace:
 *
 *   main      ██░░░░░░░░░░░░░░░░░░██
 *   fetch-1   --████░░░░░░░██------
 *   Time:     →→→→→→→→→→→→→→→→→→→→ 1.25 s
 *
 * █ running, ░ waiting (on anything: the SVG tells the kinds apart), -
 * idle (ready but not running, or not alive). One cell covers
 * extent/width of time; a cell shows what filled most of it, and a short
 * run still shows as █ (the reason a row exists is usually its runs). */
#include <stdlib.h>
#include <string.h>

#include "trace_model.h"

/* Per-column run and wait time of a row. */
static void columns(const tr_row *r, int64_t col_ns, int cols, double *run, double *wait) {
  for (int c = 0; c < cols; c++) run[c] = wait[c] = 0;
  for (size_t i = 0; i < r->n; i++) {
    const tr_span *s = &r->spans[i];
    if (s->what == TR_POLL) continue;
    int64_t c0 = s->t0 / col_ns, c1 = s->t1 / col_ns;
    if (c0 >= cols || c1 < 0) continue; /* (the reader keeps spans in [0, t1]) */
    if (c0 < 0) c0 = 0;
    if (c1 >= cols) c1 = cols - 1;
    for (int64_t c = c0; c <= c1; c++) {
      int64_t a = c * col_ns, b = a + col_ns;
      int64_t lo = s->t0 > a ? s->t0 : a, hi = s->t1 < b ? s->t1 : b;
      double ov = hi > lo ? (double)(hi - lo) : (s->t1 == s->t0 ? 1.0 : 0.0);
      if (s->what == TR_RUN || s->what == TR_JOB) run[c] += ov; else wait[c] += ov;
    }
  }
}

/* Characters, not bytes: the label column is measured and padded in what
 * the terminal shows (the reader leaves names well-formed UTF-8). */
static int cps(const char *s) {
  int n = 0;
  for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
  return n;
}

/* The bytes of the first `max` characters of s. */
static int cp_bytes(const char *s, int max) {
  int i = 0;
  for (int n = 0; s[i]; i++) {
    if (((unsigned char)s[i] & 0xc0) != 0x80 && n++ == max) break;
  }
  return i;
}

int tr_show(FILE *out, const tr_model *m, int width, bool ascii, size_t max_rows) {
  const char *full = ascii ? "#" : "\xe2\x96\x88";    /* U+2588 █ */
  const char *shade = ascii ? "~" : "\xe2\x96\x91";   /* U+2591 ░ */
  const char *arrow = ascii ? ">" : "\xe2\x86\x92";   /* U+2192 → */
  if (max_rows < 3) max_rows = 3;
  /* The label column: the longest name shown, at most 24. */
  int lw = 5;
  for (size_t i = 0; i < m->n; i++) {
    int l = cps(m->rows[i].name) + (m->rows[i].members > 1 ? 8 : 0);
    if (l > lw) lw = l;
  }
  if (lw > 24) lw = 24;
  int cols = width - lw - 3 - 10;
  if (cols < 10) cols = 10;
  int64_t col_ns = (m->t1 + cols - 1) / cols;
  if (col_ns < 1) col_ns = 1;
  double *run = malloc(sizeof(double) * (size_t)cols), *wait = malloc(sizeof(double) * (size_t)cols);
  if (!run || !wait) {
    free(run);
    free(wait);
    fprintf(stderr, "braid trace show: out of memory\n");
    return -1;
  }
  size_t head = m->n <= max_rows ? m->n : max_rows - 1;
  for (size_t i = 0; i < m->n; i++) {
    if (i == head && i < m->n - 1) {
      fprintf(out, "%-*s  %s (%zu more rows)\n", lw, "", ascii ? "..." : "\xe2\x8b\xae", m->n - 1 - head);
      i = m->n - 1;
    }
    const tr_row *r = &m->rows[i];
    char label[128]; /* lw characters of up to 4 bytes, and " xN" */
    if (r->members > 1)
      snprintf(label, sizeof label, "%.*s x%zu", cp_bytes(r->name, lw - 8 > 1 ? lw - 8 : 1), r->name,
               r->members);
    else
      snprintf(label, sizeof label, "%.*s", cp_bytes(r->name, lw), r->name);
    columns(r, col_ns, cols, run, wait);
    fprintf(out, "%s%*s  ", label, lw - cps(label) > 0 ? lw - cps(label) : 0, "");
    double per = (double)col_ns * (double)r->members;
    for (int c = 0; c < cols; c++) {
      const char *cell = "-";
      if (run[c] * 4 >= per) cell = full;
      else if (wait[c] * 2 >= per) cell = shade;
      else if (run[c] > 0) cell = full;
      else if (wait[c] > 0) cell = shade;
      fputs(cell, out);
    }
    fputc('\n', out);
  }
  fprintf(out, "%-*s  ", lw, "Time:");
  for (int c = 0; c < cols; c++) fputs(arrow, out);
  char t[32];
  fprintf(out, " %s\n", tr_fmt_time(m->t1, t, sizeof t));
  fprintf(out, "%-*s  %s running  %s waiting  - idle   (%zu %s, one cell = %s)\n", lw, "", full, shade,
          m->n, m->threads ? "threads" : "rows", tr_fmt_time(col_ns, t, sizeof t));
  free(run);
  free(wait);
  return 0;
}
