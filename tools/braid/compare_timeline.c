/* SPDX-License-Identifier: MIT */
/* braid compare — the ASCII timeline of one run, like the articles' pictures:
 *
 *   Task A: ████----████
 *   Task B: ----████----
 *   Time:   →→→→→→→→→→→→ 1.00 s
 *
 * One row per task (the first and last few when there are many), one cell
 * per time slot: running (█) while the task computes, waiting (░) while its
 * wait (its I/O) is in progress, idle (-) before it starts, between its
 * pieces and after it ends. */
#include <stdlib.h>
#include <string.h>

#include "compare.h"

const char *cmp_fmt_time(int64_t ns, char *buf, size_t size) {
  if (ns >= 100000000)
    snprintf(buf, size, "%.2f s", (double)ns / 1e9);
  else if (ns >= 1000000)
    snprintf(buf, size, "%.1f ms", (double)ns / 1e6);
  else
    snprintf(buf, size, "%.0f us", (double)ns / 1e3);
  return buf;
}

bool cmp_row_shown(size_t i, size_t n, int rows) {
  if (rows < CMP_MIN_ROWS) rows = CMP_MIN_ROWS;
  if (n <= (size_t)rows) return true;
  size_t tail = rows >= 4 ? 2 : 1;
  size_t head = (size_t)rows - tail;
  return i < head || i >= n - tail;
}

void cmp_task_label(size_t i, size_t n, char *buf, size_t size) {
  if (n <= 26)
    snprintf(buf, size, "%c", (char)('A' + i));
  else
    snprintf(buf, size, "%zu", i + 1);
}

static int64_t overlap(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
  int64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
  return hi > lo ? hi - lo : 0;
}

int cmp_timeline_row(const cmp_task *t, int64_t col_ns, int cols, bool ascii, char *buf,
                     size_t size) {
  const char *busy = ascii ? "#" : "\xe2\x96\x88";    /* U+2588 FULL BLOCK */
  const char *waiting = ascii ? "~" : "\xe2\x96\x91"; /* U+2591 LIGHT SHADE */
  if (col_ns < 1) col_ns = 1;
  if (cols < 0) cols = 0;
  cmp_span whole = {t->start, t->end};
  const cmp_span *segs = t->segs && t->nsegs ? t->segs : &whole;
  size_t nsegs = t->segs && t->nsegs ? t->nsegs : (t->end > 0 ? 1 : 0);
  size_t pos = 0;
  int c = 0;
  for (; c < cols; c++) {
    int64_t c0 = (int64_t)c * col_ns, c1 = c0 + col_ns, covered = 0;
    bool mid = false;
    for (size_t s = 0; s < nsegs; s++) {
      covered += overlap(segs[s].start, segs[s].end, c0, c1);
      int64_t m = segs[s].start + (segs[s].end - segs[s].start) / 2;
      if (m >= c0 && m < c1) mid = true; /* short pieces still show */
    }
    bool on = mid || 2 * covered >= col_ns;
    /* Of the cell's busy time, how much was the task's wait. */
    int64_t waited = t->wait_end > t->start ? overlap(t->start, t->wait_end, c0, c1) : 0;
    const char *cell = !on ? "-" : 2 * waited >= (covered > 0 ? covered : col_ns) ? waiting : busy;
    size_t len = strlen(cell);
    if (pos + len + 1 > size) break;
    memcpy(buf + pos, cell, len);
    pos += len;
  }
  if (size) buf[pos < size ? pos : size - 1] = '\0';
  return c;
}

static void print_thousands(FILE *out, size_t v) {
  if (v < 1000) {
    fprintf(out, "%zu", v);
    return;
  }
  print_thousands(out, v / 1000);
  fprintf(out, ",%03zu", v % 1000);
}

void cmp_timeline_print(FILE *out, const cmp_run *r, int64_t scale_ns, int width, int rows,
                        bool ascii) {
  if (width < 1) width = 1;
  if (scale_ns < 1) scale_ns = 1;
  int64_t col_ns = (scale_ns + width - 1) / width;
  if (col_ns < 1) col_ns = 1;
  int64_t cols64 = (r->wall_ns + col_ns / 2) / col_ns; /* nearest */
  int cols = cols64 < 1 ? 1 : cols64 > width ? width : (int)cols64;

  size_t n = r->ntasks;
  char label[24];
  cmp_task_label(n - 1, n, label, sizeof label);
  int lw = (int)strlen(label); /* the last label is the widest */
  size_t cell = ascii ? 1 : 3;
  size_t size = (size_t)cols * cell + 1;
  char *buf = malloc(size);
  if (!buf) return;

  bool gap_done = false;
  for (size_t i = 0; i < n; i++) {
    if (!cmp_row_shown(i, n, rows)) {
      if (!gap_done) {
        size_t hidden = 0;
        for (size_t j = i; j < n && !cmp_row_shown(j, n, rows); j++) hidden++;
        fprintf(out, "  %-*s  %s (", 5 + lw, "", ascii ? "..." : "\xe2\x8b\xae");
        print_thousands(out, hidden);
        fprintf(out, " more task%s)\n", hidden == 1 ? "" : "s");
        gap_done = true;
      }
      continue;
    }
    cmp_task_label(i, n, label, sizeof label);
    cmp_timeline_row(&r->tasks[i], col_ns, cols, ascii, buf, size);
    fprintf(out, "  Task %-*s: %s\n", lw, label, buf);
  }
  fprintf(out, "  %-*s ", 5 + lw + 1, "Time:");
  for (int c = 0; c < cols; c++) fputs(ascii ? ">" : "\xe2\x86\x92", out); /* U+2192 → */
  char t[32];
  fprintf(out, " %s\n", cmp_fmt_time(r->wall_ns, t, sizeof t));
  free(buf);
}
