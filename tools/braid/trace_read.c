/* SPDX-License-Identifier: MIT */
/* braid trace — reading trace-event JSON into rows (trace_model.h).
 *
 * A small JSON reader of its own (the tool depends on nothing but libbraid):
 * it walks the whole document and looks, in the top-level "traceEvents"
 * array, at each event's ph, cat, name, tid, ts, dur and args (task, kind,
 * name). Everything else is skipped. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

#include "str_hash.h"
#include "trace_model.h"
#include "utf8.h"

typedef struct rd {
  const char *start, *p, *end;
  const char *path;
  bool bad;
} rd;

static void ws(rd *r) {
  while (r->p < r->end && isspace((unsigned char)*r->p)) r->p++;
}

static bool rd_fail(rd *r, const char *what) {
  if (!r->bad) {
    fprintf(stderr, "braid trace: %s: %s at byte %zu\n", r->path, what,
            (size_t)(r->p - r->start));
  }
  r->bad = true;
  return false;
}

/* Make a name fit to draw: a trace from elsewhere may hold bytes that are
 * not UTF-8, and a long name cut to its buffer may end inside a character;
 * either would make the SVG unreadable XML and garble the terminal. A
 * control character (a newline, an escape sequence) would break the
 * terminal's rows. Each bad byte becomes '?'; a character cut at the end
 * is dropped. */
static void utf8_clean(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    size_t n = tool_utf8_seq(p);
    if (n == 0) {
      /* A lead byte whose continuation bytes run into the end is a cut
       * character: drop it and what follows. */
      size_t k = 1;
      while (p[k] >= 0x80 && p[k] <= 0xbf && k < 4) k++;
      if (!p[k] && *p >= 0xc2 && *p <= 0xf4 && k < (*p >= 0xf0 ? 4u : *p >= 0xe0 ? 3u : 2u)) {
        *p = 0;
        return;
      }
      *p++ = '?';
    } else if (n == 1 && *p < 0x20) {
      *p++ = '?';
    } else {
      p += n;
    }
  }
}

/* A string into buf (truncated, cleaned by utf8_clean); the reader is left
 * after it. */
static bool str(rd *r, char *buf, size_t size) {
  ws(r);
  if (r->p >= r->end || *r->p != '"') return rd_fail(r, "expected a string");
  r->p++;
  size_t n = 0;
  while (r->p < r->end && *r->p != '"') {
    char c = *r->p++;
    if (c == '\\' && r->p < r->end) {
      char e = *r->p++;
      c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
      if (e == 'u') { /* \uXXXX: keep ASCII, else '?' */
        unsigned v = 0;
        for (int i = 0; i < 4 && r->p < r->end; i++, r->p++)
          v = v * 16 + (unsigned)(isdigit((unsigned char)*r->p) ? *r->p - '0' : (tolower((unsigned char)*r->p) - 'a' + 10));
        c = v < 128 ? (char)v : '?';
      }
    }
    if (buf && n + 1 < size) buf[n++] = c;
  }
  if (buf && size) {
    buf[n] = 0;
    utf8_clean(buf);
  }
  if (r->p >= r->end) return rd_fail(r, "unterminated string");
  r->p++;
  return true;
}

static bool num(rd *r, double *v) {
  ws(r);
  char *e;
  errno = 0;
  double d = strtod(r->p, &e);
  /* (strtod takes "nan" and "inf", which JSON has not.) */
  if (e == r->p || e > r->end || !isfinite(d)) return rd_fail(r, "expected a number");
  r->p = e;
  if (v) *v = d;
  return true;
}

static bool rd_skip(rd *r, int depth);

static bool lit(rd *r, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(r->end - r->p) < n || strncmp(r->p, w, n)) return rd_fail(r, "unexpected token");
  r->p += n;
  return true;
}

static bool rd_skip(rd *r, int depth) {
  ws(r);
  if (depth > 64) return rd_fail(r, "nested too deeply");
  if (r->p >= r->end) return rd_fail(r, "unexpected end");
  char c = *r->p;
  if (c == '"') return str(r, NULL, 0);
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return true;
    }
    for (;;) {
      if (c == '{') {
        if (!str(r, NULL, 0)) return false;
        ws(r);
        if (r->p >= r->end || *r->p != ':') return rd_fail(r, "expected ':'");
        r->p++;
      }
      if (!rd_skip(r, depth + 1)) return false;
      ws(r);
      if (r->p < r->end && *r->p == ',') {
        r->p++;
        continue;
      }
      if (r->p < r->end && *r->p == close) {
        r->p++;
        return true;
      }
      return rd_fail(r, "expected ',' or a closing bracket");
    }
  }
  if (c == 't') return lit(r, "true");
  if (c == 'f') return lit(r, "false");
  if (c == 'n') return lit(r, "null");
  return num(r, NULL);
}

typedef struct ev {
  char ph[4], cat[16], name[80], kind[16], aname[80];
  double tid, ts, dur, task, sort;
  bool has_task, has_dur;
} ev;

/* Walk one JSON object, calling member(r, e, key, is_string) with the
 * reader on each member's value; member reads or skips it. An object's
 * place holding something else is skipped. */
static bool object(rd *r, ev *e, bool (*member)(rd *, ev *, const char *, bool)) {
  ws(r);
  if (r->p >= r->end || *r->p != '{') return rd_skip(r, 1);
  r->p++;
  ws(r);
  if (r->p < r->end && *r->p == '}') {
    r->p++;
    return true;
  }
  for (;;) {
    char key[32];
    if (!str(r, key, sizeof key)) return false;
    ws(r);
    if (r->p >= r->end || *r->p != ':') return rd_fail(r, "expected ':'");
    r->p++;
    ws(r);
    if (!member(r, e, key, r->p < r->end && *r->p == '"')) return false;
    ws(r);
    if (r->p < r->end && *r->p == ',') {
      r->p++;
      continue;
    }
    if (r->p < r->end && *r->p == '}') {
      r->p++;
      return true;
    }
    return rd_fail(r, "expected ',' or '}'");
  }
}

/* A member of an event's "args". */
static bool arg_member(rd *r, ev *e, const char *key, bool isstr) {
  if (!strcmp(key, "task") && !isstr) return e->has_task = true, num(r, &e->task);
  if (!strcmp(key, "kind") && isstr) return str(r, e->kind, sizeof e->kind);
  if (!strcmp(key, "name") && isstr) return str(r, e->aname, sizeof e->aname);
  return rd_skip(r, 2);
}

/* A member of a trace event. */
static bool event_member(rd *r, ev *e, const char *key, bool isstr) {
  if (!strcmp(key, "ph") && isstr) return str(r, e->ph, sizeof e->ph);
  if (!strcmp(key, "cat") && isstr) return str(r, e->cat, sizeof e->cat);
  if (!strcmp(key, "name") && isstr) return str(r, e->name, sizeof e->name);
  if (!strcmp(key, "tid") && !isstr) return num(r, &e->tid);
  if (!strcmp(key, "ts") && !isstr) return num(r, &e->ts);
  if (!strcmp(key, "dur") && !isstr) return e->has_dur = true, num(r, &e->dur);
  if (!strcmp(key, "args")) return object(r, e, arg_member);
  return rd_skip(r, 2);
}

static bool event(rd *r, ev *e) {
  memset(e, 0, sizeof *e);
  return object(r, e, event_member);
}

/* --- the model ------------------------------------------------------------------ */

/* An index from a 64-bit key to a position (open addressing, at most half
 * full): a trace of 200,000 tasks is read in one pass instead of comparing
 * every event with every row. */
typedef struct kindex {
  uint64_t *keys;
  size_t *pos;
  size_t cap, n;
} kindex;

static size_t kslot(const kindex *x, uint64_t key) {
  uint64_t h = key * 0x9e3779b97f4a7c15u;
  size_t i = (size_t)(h >> 17) & (x->cap - 1);
  while (x->pos[i] != SIZE_MAX && x->keys[i] != key) i = (i + 1) & (x->cap - 1);
  return i;
}

/* The position stored for key, or SIZE_MAX. */
static size_t kfind(const kindex *x, uint64_t key) {
  return x->cap ? x->pos[kslot(x, key)] : SIZE_MAX;
}

static bool kput(kindex *x, uint64_t key, size_t pos) {
  if (2 * (x->n + 1) > x->cap) {
    size_t cap = x->cap ? 2 * x->cap : 256;
    kindex y = {malloc(cap * sizeof *y.keys), malloc(cap * sizeof *y.pos), cap, 0};
    if (!y.keys || !y.pos) {
      free(y.keys);
      free(y.pos);
      return false;
    }
    for (size_t i = 0; i < cap; i++) y.pos[i] = SIZE_MAX;
    for (size_t i = 0; i < x->cap; i++)
      if (x->pos[i] != SIZE_MAX) {
        size_t j = kslot(&y, x->keys[i]);
        y.keys[j] = x->keys[i];
        y.pos[j] = x->pos[i];
        y.n++;
      }
    free(x->keys);
    free(x->pos);
    *x = y;
  }
  size_t i = kslot(x, key);
  if (x->pos[i] == SIZE_MAX) x->n++;
  x->keys[i] = key;
  x->pos[i] = pos;
  return true;
}

static void kfree(kindex *x) {
  free(x->keys);
  free(x->pos);
  memset(x, 0, sizeof *x);
}

/* A JSON number as a key: itself when it is a whole number a uint64_t holds
 * (tids and task keys are), else its bits (a cast would be undefined). */
static uint64_t key_of(double d) {
  if (d >= 0 && d < 18446744073709551616.0) return (uint64_t)d;
  uint64_t k;
  memcpy(&k, &d, sizeof k);
  return k;
}

static tr_row *row_for(tr_model *m, kindex *ix, uint64_t key) {
  size_t at = kfind(ix, key);
  if (at != SIZE_MAX) return &m->rows[at];
  if (!kput(ix, key, m->n)) return NULL;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    tr_row *r = realloc(m->rows, cap * sizeof *r);
    if (!r) return NULL;
    m->rows = r;
    m->cap = cap;
  }
  tr_row *r = &m->rows[m->n++];
  memset(r, 0, sizeof *r);
  r->key = key;
  r->members = 1;
  r->first = INT64_MAX;
  r->last = INT64_MIN;
  return r;
}

static void add_span(tr_row *r, int64_t t0, int64_t t1, uint8_t what) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    tr_span *s = realloc(r->spans, cap * sizeof *s);
    if (!s) return;
    r->spans = s;
    r->cap = cap;
  }
  r->spans[r->n++] = (tr_span){t0, t1, what};
  if (t0 < r->first) r->first = t0;
  if (t1 > r->last) r->last = t1;
}

static uint8_t kind_of(const char *k) {
  for (int i = 1; i < BR_WAIT_KINDS; i++)
    if (!strcmp(k, br_wait_kind_name((br_wait_kind)i))) return (uint8_t)i;
  return BR_WAIT_FUTURE; /* "other" and unknown ones */
}

static int span_order(const void *a, const void *b) {
  const tr_span *x = a, *y = b;
  return x->t0 < y->t0 ? -1 : x->t0 > y->t0;
}

static int row_order(const void *a, const void *b) {
  const tr_row *x = a, *y = b;
  if (x->first != y->first) return x->first < y->first ? -1 : 1;
  return x->key < y->key ? -1 : x->key > y->key;
}

/* The largest file read: braid's tracer keeps a run's events in memory,
 * and a trace of this size is tens of millions of events. */
#define TRACE_MAX_BYTES (1024 << 20)

/* Times in a trace are microseconds; beyond this (31 years) they are not a
 * trace's, and in nanoseconds they would leave int64 behind. */
#define TRACE_MAX_US 1e15

static int tr_slurp(const char *path, char **out, size_t *outlen);
static int read_model(tr_model *m, const char *path, const char *buf, size_t len, bool threads,
                      bool quiet_empty);

int tr_read(tr_model *m, const char *path, bool threads) {
  memset(m, 0, sizeof *m);
  char *buf;
  size_t len;
  if (tr_slurp(path, &buf, &len)) return -1;
  int rc = read_model(m, path, buf, len, threads, false);
  free(buf);
  return rc == TR_EMPTY ? -1 : rc;
}

/* The file is read once and parsed twice: it may be a FIFO or a pipe
 * (`braid trace show <(zcat t.json.gz)`), which a second open would find
 * empty or wait on for ever. */
int tr_read_any(tr_model *m, const char *path, bool *threads) {
  memset(m, 0, sizeof *m);
  char *buf;
  size_t len;
  if (tr_slurp(path, &buf, &len)) return -1;
  int rc = read_model(m, path, buf, len, false, true);
  *threads = false;
  if (rc == TR_EMPTY) {
    *threads = true;
    rc = read_model(m, path, buf, len, true, true);
  }
  free(buf);
  return rc;
}

/* The whole file into *out (NUL-terminated, *outlen bytes before the NUL;
 * the caller frees it), or -1 with the reason said on stderr. */
static int tr_slurp(const char *path, char **out, size_t *outlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "braid trace: cannot open '%s': %s\n", path, strerror(errno));
    return -1;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len >= TRACE_MAX_BYTES) { /* /dev/zero, or not a trace braid wrote */
      fclose(f);
      free(buf);
      fprintf(stderr, "braid trace: %s: larger than %d MiB, not read\n", path, TRACE_MAX_BYTES >> 20);
      return -1;
    }
    if (len + 65536 > cap) {
      cap = cap ? cap * 2 : 1 << 20;
      char *b = realloc(buf, cap);
      if (!b) {
        fclose(f);
        free(buf);
        fprintf(stderr, "braid trace: %s: out of memory\n", path);
        return -1;
      }
      buf = b;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) { /* a directory opens, then fails to read (EISDIR) */
    int err = errno;
    fclose(f);
    free(buf);
    fprintf(stderr, "braid trace: cannot read %s: %s\n", path, strerror(err));
    return -1;
  }
  fclose(f);
  buf[len] = '\0'; /* strtod on a number at the very end stops here (the loop keeps len < cap) */
  *out = buf;
  *outlen = len;
  return 0;
}

static int read_model(tr_model *m, const char *path, const char *buf, size_t len, bool threads,
                      bool quiet_empty) {
  memset(m, 0, sizeof *m);
  m->threads = threads;
  rd r = {buf, buf, buf + len, path, false};
  /* Find "traceEvents" at the top level. */
  ws(&r);
  bool found = false;
  if (r.p < r.end && *r.p == '{') {
    r.p++;
    for (;;) {
      char key[32];
      ws(&r);
      if (r.p < r.end && *r.p == '}') break;
      if (!str(&r, key, sizeof key)) break;
      ws(&r);
      if (r.p >= r.end || *r.p != ':') {
        rd_fail(&r, "expected ':'");
        break;
      }
      r.p++;
      if (!strcmp(key, "traceEvents")) {
        found = true;
        break;
      }
      if (!rd_skip(&r, 1)) break;
      ws(&r);
      if (r.p < r.end && *r.p == ',') r.p++;
    }
  } else if (r.p < r.end && *r.p == '[') {
    found = true; /* the bare array form of the format */
  }
  if (!found || r.bad) {
    if (!r.bad) fprintf(stderr, "braid trace: %s: not a trace-event file (no traceEvents)\n", path);
    return -1;
  }
  ws(&r);
  if (r.p >= r.end || *r.p != '[') {
    rd_fail(&r, "traceEvents is not an array");
    return -1;
  }
  r.p++;
  /* Names of task tracks and threads (metadata), then the slices. */
  typedef struct named { double tid; char name[80]; } named;
  named *names = NULL;
  size_t nnames = 0, cnames = 0;
  kindex rowix = {0}, nameix = {0}; /* row key -> row, tid -> names[] */
  int64_t tmin = INT64_MAX, tmax = INT64_MIN;
  size_t nslices = 0;
  for (;;) {
    ws(&r);
    if (r.p < r.end && *r.p == ']') break;
    ev e;
    if (!event(&r, &e)) break;
    ws(&r);
    if (r.p < r.end && *r.p == ',') r.p++;
    if (!strcmp(e.ph, "M") && !strcmp(e.name, "thread_name")) {
      if (nnames == cnames) {
        cnames = cnames ? cnames * 2 : 64;
        named *nn = realloc(names, cnames * sizeof *nn);
        if (!nn) break;
        names = nn;
      }
      names[nnames].tid = e.tid;
      snprintf(names[nnames].name, sizeof names[nnames].name, "%s", e.aname);
      if (!kput(&nameix, key_of(e.tid), nnames)) break;
      nnames++;
      continue;
    }
    if (strcmp(e.ph, "X") || !e.has_dur) continue;
    if (!(fabs(e.ts) <= TRACE_MAX_US) || !(e.dur >= 0 && e.dur <= TRACE_MAX_US)) {
      rd_fail(&r, "an event's time is out of range (ts or dur)");
      break;
    }
    int64_t t0 = (int64_t)(e.ts * 1000.0), t1 = (int64_t)((e.ts + e.dur) * 1000.0);
    size_t named_at = kfind(&nameix, key_of(e.tid));
    const char *track = named_at != SIZE_MAX ? names[named_at].name : NULL;
    uint8_t what;
    /* `braid profile --trace` writes one span per thread state ("cpu",
     * "sleep", "pipe", ...): on a CPU is a run of that thread, the rest is
     * not (drawn idle). */
    if (!strcmp(e.cat, "braid.profile") && strcmp(e.name, "cpu")) continue;
    if (!strcmp(e.cat, "run")) what = TR_RUN;
    else if (!strcmp(e.cat, "wait")) what = kind_of(e.kind);
    else if (!strcmp(e.cat, "poll")) what = TR_POLL;
    else what = TR_JOB; /* pool, blocking, procpool, and anything else on a thread */
    tr_row *row;
    if (threads) {
      if (what != TR_RUN && what != TR_POLL && what != TR_JOB) continue;
      row = row_for(m, &rowix, key_of(e.tid));
      if (row && !row->name[0] && track) snprintf(row->name, sizeof row->name, "%s", track);
    } else {
      if (!e.has_task || (what != TR_RUN && !strcmp(e.cat, "run"))) continue;
      if (what == TR_POLL || what == TR_JOB) continue;
      row = row_for(m, &rowix, key_of(e.task));
      if (row && what == TR_RUN && !row->name[0]) snprintf(row->name, sizeof row->name, "%s", e.name);
      if (row && what != TR_RUN && !row->name[0] && track) {
        /* "task 'NAME' #ID" of its track */
        const char *q = strchr(track, '\'');
        const char *q2 = q ? strchr(q + 1, '\'') : NULL;
        if (q && q2) snprintf(row->name, sizeof row->name, "%.*s", (int)(q2 - q - 1), q + 1);
      }
    }
    if (!row) break;
    add_span(row, t0, t1, what);
    nslices++;
    if (t0 < tmin) tmin = t0;
    if (t1 > tmax) tmax = t1;
  }
  free(names);
  kfree(&rowix);
  kfree(&nameix);
  bool bad = r.bad;
  if (bad) {
    tr_free(m);
    return -1;
  }
  if (!nslices) {
    if (!quiet_empty)
      fprintf(stderr, "braid trace: %s: no %s in this trace\n", path,
              threads ? "thread activity" : "task slices");
    tr_free(m);
    return TR_EMPTY;
  }
  /* Time from the first event. */
  for (size_t i = 0; i < m->n; i++) {
    tr_row *row = &m->rows[i];
    for (size_t j = 0; j < row->n; j++) {
      row->spans[j].t0 -= tmin;
      row->spans[j].t1 -= tmin;
    }
    row->first -= tmin;
    row->last -= tmin;
    qsort(row->spans, row->n, sizeof *row->spans, span_order);
    if (!row->name[0]) snprintf(row->name, sizeof row->name, "%s-%llu", threads ? "thread" : "task",
                                (unsigned long long)(threads ? row->key : row->key & 0xffffffffu));
  }
  qsort(m->rows, m->n, sizeof *m->rows, row_order);
  m->t0 = 0;
  m->t1 = tmax - tmin;
  if (m->t1 <= 0) m->t1 = 1;
  return 0;
}

void tr_free(tr_model *m) {
  for (size_t i = 0; i < m->n; i++) free(m->rows[i].spans);
  free(m->rows);
  memset(m, 0, sizeof *m);
}

void tr_group(tr_model *m, size_t max) {
  if (m->n <= max) return;
  size_t out = 0;
  kindex byname = {0}; /* a name's hash -> its row among the first `out` */
  for (size_t i = 0; i < m->n; i++) {
    tr_row *r = &m->rows[i];
    uint64_t key = tool_str_hash(r->name);
    size_t j = kfind(&byname, key);
    if (j != SIZE_MAX && strcmp(m->rows[j].name, r->name)) { /* two names, one hash */
      for (j = 0; j < out; j++)
        if (!strcmp(m->rows[j].name, r->name)) break;
      if (j == out) j = SIZE_MAX;
    }
    if (j == SIZE_MAX) {
      if (out != i) m->rows[out] = *r;
      if (kfind(&byname, key) == SIZE_MAX) (void)kput(&byname, key, out); /* no memory: rows just stay apart */
      out++;
      continue;
    }
    tr_row *g = &m->rows[j];
    for (size_t k = 0; k < r->n; k++) add_span(g, r->spans[k].t0, r->spans[k].t1, r->spans[k].what);
    g->members += r->members;
    free(r->spans);
  }
  kfree(&byname);
  m->n = out;
  for (size_t i = 0; i < m->n; i++)
    if (m->rows[i].members > 1) qsort(m->rows[i].spans, m->rows[i].n, sizeof(tr_span), span_order);
}

const char *tr_what_name(uint8_t what) {
  if (what == TR_RUN) return "running";
  if (what == TR_POLL) return "poll";
  if (what == TR_JOB) return "job";
  return br_wait_kind_name((br_wait_kind)what);
}

const char *tr_fmt_time(int64_t ns, char *buf, size_t size) {
  if (ns >= 1000000000)
    snprintf(buf, size, "%.2f s", (double)ns / 1e9);
  else if (ns >= 1000000)
    snprintf(buf, size, "%.1f ms", (double)ns / 1e6);
  else if (ns >= 1000)
    snprintf(buf, size, "%.0f us", (double)ns / 1e3);
  else
    snprintf(buf, size, "%lld ns", (long long)ns);
  return buf;
}
