/* SPDX-License-Identifier: MIT */
/* braid trace svg — a self-contained SVG timeline of a trace.
 *
 * One row per task (or thread): running in dark blue, each kind of wait in
 * its own colour (the legend lists those that occur), idle left blank, and a
 * time axis in real units. Spans closer than half a pixel that share a kind
 * are drawn as one rectangle, so a row of a million switches stays a few
 * hundred elements. A row that groups many tasks of one name (tr_group)
 * is drawn as a density plot instead: per pixel column, the share of its
 * tasks running (from the bottom) and waiting (above it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

#include "trace_model.h"

enum { W = 1200, LABEL = 220, PLOT = W - LABEL - 20, TOP = 56, BINS = PLOT };

static const char *colour(uint8_t what) {
  static const char *const c[TR_KINDS] = {
      [TR_RUN] = "#1f4e99",          [BR_WAIT_SLEEP] = "#a0aec0", [BR_WAIT_FD] = "#38a169",
      [BR_WAIT_JOIN] = "#dd6b20",    [BR_WAIT_FUTURE] = "#805ad5", [BR_WAIT_CHAN] = "#d69e2e",
      [BR_WAIT_LOCK] = "#e53e3e",    [BR_WAIT_CHILD] = "#319795", [BR_WAIT_GROUP] = "#b7791f",
      [BR_WAIT_POOL] = "#5a67d8",    [BR_WAIT_BLOCKING] = "#d53f8c", [BR_WAIT_PROCPOOL] = "#00a3c4",
      [BR_WAIT_IO] = "#68d391",      [TR_POLL] = "#cbd5e0",       [TR_JOB] = "#2f855a",
  };
  return what < TR_KINDS && c[what] ? c[what] : "#718096";
}

static void esc(FILE *out, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '<': fputs("&lt;", out); break;
    case '>': fputs("&gt;", out); break;
    case '&': fputs("&amp;", out); break;
    case '"': fputs("&quot;", out); break;
    case '\'': fputs("&apos;", out); break;
    default:
      if ((unsigned char)*s >= 0x20) fputc(*s, out);
    }
  }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about 8 ticks. */
static int64_t tick_step(int64_t span) {
  double raw = (double)span / 8;
  double p = pow(10, floor(log10(raw > 1 ? raw : 1)));
  double f = raw / p;
  double step = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  int64_t s = (int64_t)(step * p);
  return s > 0 ? s : 1;
}

/* Waits first, then runs on top of them: a run of microseconds between two
 * long waits stays visible (at least a pixel wide). */
static void row_plain(FILE *out, const tr_row *r, double y, double h, double px_ns, bool *used) {
  for (int pass = 0; pass < 2; pass++) {
    size_t i = 0;
    while (i < r->n) {
      const tr_span *s = &r->spans[i];
      uint8_t what = s->what;
      bool runs = what == TR_RUN || what == TR_JOB;
      if (runs != (pass == 1)) {
        i++;
        continue;
      }
      double x0 = s->t0 / px_ns, x1 = s->t1 / px_ns;
      size_t j = i + 1;
      /* Merge what follows of the same kind within half a pixel (other
       * kinds in between are drawn in their own pass). */
      for (; j < r->n; j++) {
        const tr_span *q = &r->spans[j];
        bool qruns = q->what == TR_RUN || q->what == TR_JOB;
        if (qruns != runs) continue;
        if (q->what != what || q->t0 / px_ns - x1 >= 0.5) break;
        if (q->t1 / px_ns > x1) x1 = q->t1 / px_ns;
      }
      double min = runs ? 1.0 : 0.6;
      if (x1 - x0 < min) x1 = x0 + min;
      used[what < TR_KINDS ? what : 0] = true;
      fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
              LABEL + x0, y, x1 - x0, h, colour(what));
      i = j;
    }
  }
}

static void row_density(FILE *out, const tr_row *r, double y, double h, double px_ns, bool *used) {
  double *run = calloc(BINS, sizeof *run), *wait = calloc(BINS, sizeof *wait);
  uint8_t *kind = calloc(BINS, 1);
  if (!run || !wait || !kind) {
    free(run);
    free(wait);
    free(kind);
    return;
  }
  double *kw = calloc((size_t)BINS * TR_KINDS, sizeof *kw);
  for (size_t i = 0; i < r->n; i++) {
    const tr_span *s = &r->spans[i];
    int b0 = (int)(s->t0 / px_ns), b1 = (int)(s->t1 / px_ns);
    if (b0 >= BINS) continue;
    if (b1 >= BINS) b1 = BINS - 1;
    for (int b = b0; b <= b1; b++) {
      double a = b * px_ns, e = a + px_ns;
      double lo = s->t0 > a ? s->t0 : a, hi = s->t1 < e ? s->t1 : e;
      double ov = hi > lo ? hi - lo : 0;
      if (s->what == TR_RUN || s->what == TR_JOB) run[b] += ov;
      else {
        wait[b] += ov;
        if (kw) kw[(size_t)b * TR_KINDS + s->what] += ov;
      }
    }
  }
  double full = px_ns * (double)r->members;
  for (int b = 0; b < BINS; b++) {
    double fr = run[b] / full, fw = wait[b] / full;
    if (fr > 1) fr = 1;
    if (fw > 1 - fr) fw = 1 - fr;
    if (fr > 0.002) {
      used[TR_RUN] = true;
      fprintf(out, "<rect x=\"%d\" y=\"%.1f\" width=\"1\" height=\"%.2f\" fill=\"%s\"/>\n", LABEL + b,
              y + h * (1 - fr), h * fr, colour(TR_RUN));
    }
    if (fw > 0.002) {
      uint8_t k = BR_WAIT_FUTURE;
      double best = -1;
      for (int q = 1; kw && q < TR_KINDS; q++)
        if (kw[(size_t)b * TR_KINDS + q] > best) {
          best = kw[(size_t)b * TR_KINDS + q];
          k = (uint8_t)q;
        }
      used[k] = true;
      fprintf(out, "<rect x=\"%d\" y=\"%.1f\" width=\"1\" height=\"%.2f\" fill=\"%s\"/>\n", LABEL + b,
              y + h * (1 - fr - fw), h * fw, colour(k));
    }
  }
  free(kw);
  free(run);
  free(wait);
  free(kind);
}

int tr_svg(FILE *out, const tr_model *m, const char *title) {
  size_t nrows = m->n;
  const size_t max_rows = 400;
  size_t shown = nrows > max_rows ? max_rows : nrows;
  double rh = shown <= 40 ? 18 : shown <= 120 ? 10 : 5;
  double gap = rh >= 10 ? 3 : 1;
  double plot_h = (double)shown * (rh + gap);
  int legend_y = (int)(TOP + plot_h + 40);
  int height = legend_y + 60;
  double px_ns = (double)m->t1 / PLOT;
  if (px_ns <= 0) px_ns = 1;
  bool used[TR_KINDS] = {false};

  fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
               "font-size=\"11\">\n",
          W, height, W, height);
  fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  fprintf(out, "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">");
  esc(out, title);
  char tb[32];
  fprintf(out, "</text>\n<text x=\"10\" y=\"40\" fill=\"#4a5568\">%zu %s%s, %s</text>\n", nrows,
          m->threads ? "threads" : "rows", nrows > shown ? " (first ones shown)" : "",
          tr_fmt_time(m->t1, tb, sizeof tb));
  /* Time axis: grid lines and labels. */
  int64_t step = tick_step(m->t1);
  for (int64_t t = 0; t <= m->t1; t += step) {
    double x = LABEL + t / px_ns;
    fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e2e8f0\"/>\n", x, TOP - 4,
            x, TOP + plot_h);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#4a5568\">%s</text>\n", x,
            TOP + plot_h + 16, t ? tr_fmt_time(t, tb, sizeof tb) : "0");
  }
  for (size_t i = 0; i < shown; i++) {
    const tr_row *r = &m->rows[i];
    double y = TOP + (double)i * (rh + gap);
    if (rh >= 10) {
      fprintf(out, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", LABEL - 6, y + rh * 0.75);
      esc(out, r->name);
      if (r->members > 1) fprintf(out, " \xc3\x97%zu", r->members); /* × */
      fprintf(out, "</text>\n");
    }
    fprintf(out, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"#f7fafc\"/>\n", LABEL, y,
            PLOT, rh);
    if (r->members > 1)
      row_density(out, r, y, rh, px_ns, used);
    else
      row_plain(out, r, y, rh, px_ns, used);
  }
  /* Legend: what occurs, then idle. */
  int x = 10;
  for (int k = 0; k < TR_KINDS; k++) {
    if (!used[k]) continue;
    fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", x, legend_y, colour((uint8_t)k));
    const char *nm = tr_what_name((uint8_t)k);
    fprintf(out, "<text x=\"%d\" y=\"%d\">%s%s</text>\n", x + 16, legend_y + 10,
            k == TR_RUN || k == TR_POLL || k == TR_JOB ? "" : "waiting: ", nm);
    x += 16 + (int)strlen(nm) * 7 + (k == TR_RUN || k == TR_POLL || k == TR_JOB ? 0 : 55) + 14;
  }
  fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"#f7fafc\" stroke=\"#cbd5e0\"/>\n"
               "<text x=\"%d\" y=\"%d\">idle</text>\n",
          x, legend_y, x + 16, legend_y + 10);
  fprintf(out, "</svg>\n");
  return ferror(out) ? -1 : 0;
}
