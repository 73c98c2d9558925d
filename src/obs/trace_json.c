/* SPDX-License-Identifier: MIT */
/* braid — the trace exporter: Chrome/Perfetto trace-event JSON.
 *
 * Layout of the file (one event object per line, so a reader can stream):
 *   - one track per OS thread (pid, tid) named after what ran on it
 *     ("loop 1", "pool worker", "blocking pool"): the tasks' run slices
 *     (cat "run", named after the task), the loop's waits in its poller
 *     (cat "poll") and executor jobs (cat "pool", "blocking");
 *   - one track per task (a synthetic tid from 1000000 up, named
 *     "task 'NAME' #ID"): its waits (cat "wait", name "wait: KIND", args
 *     kind and arg: the fd, the pid ...);
 *   - every run and wait slice carries args.task, the task's key (its
 *     loop's number times 2^32 plus its id), which ties the two together.
 * Slices still open at the end (a task running or parked when the trace
 * was written) end at the last event and carry args.open = 1.
 *
 * It runs in signal handlers too (the flight recorder): memory comes from
 * mmap, output goes through write(2), numbers are formatted by hand, and the
 * trace buffers are held with a try-lock.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/trace.h"
#include "obs/trace_int.h"
#include "sys/clock.h"

/* --- output ------------------------------------------------------------------ */

typedef struct out {
  int fd;
  int err;
  size_t n;
  char b[1 << 16];
} out;

static void flush(out *o) {
  size_t off = 0;
  while (off < o->n && !o->err) {
    ssize_t w = write(o->fd, o->b + off, o->n - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      o->err = -errno;
      break;
    }
    off += (size_t)w;
  }
  o->n = 0;
}

static void put_n(out *o, const char *s, size_t n) {
  if (o->n + n > sizeof o->b) flush(o);
  if (n > sizeof o->b) return;
  memcpy(o->b + o->n, s, n);
  o->n += n;
}

static void put(out *o, const char *s) { put_n(o, s, strlen(s)); }

static void put_u(out *o, uint64_t v) {
  char d[24];
  int i = 0;
  do d[i++] = (char)('0' + v % 10); while ((v /= 10) && i < 23);
  char r[24];
  int n = 0;
  while (i) r[n++] = d[--i];
  put_n(o, r, (size_t)n);
}

static void put_i(out *o, int64_t v) {
  if (v < 0) {
    put(o, "-");
    put_u(o, (uint64_t)0 - (uint64_t)v);
  } else {
    put_u(o, (uint64_t)v);
  }
}

/* Nanoseconds as microseconds with three decimals (the format's unit). */
static void put_us(out *o, int64_t ns) {
  if (ns < 0) {
    put(o, "-");
    ns = -ns;
  }
  put_u(o, (uint64_t)ns / 1000);
  char f[4] = {'.', (char)('0' + ns / 100 % 10), (char)('0' + ns / 10 % 10), (char)('0' + ns % 10)};
  put_n(o, f, 4);
}

static void put_str(out *o, const char *s) {
  put(o, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put_n(o, e, 2);
    } else if (c < 0x20) {
      char e[6] = {'\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]};
      put_n(o, e, 6);
    } else {
      put_n(o, (const char *)&c, 1);
    }
  }
  put(o, "\"");
}

/* --- memory ------------------------------------------------------------------- */

static void *map(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* --- per-task state ------------------------------------------------------------- */

typedef struct tent {
  uint64_t key;        /* 0: empty */
  char name[32];
  uint64_t run_ts;     /* ticks of the RESUME of the open run slice, 0 if none */
  uint64_t park_ts;    /* ticks of the PARK of the open wait, 0 if none */
  int64_t park_arg;
  int32_t run_tid;
  uint32_t track;      /* synthetic tid of its own track, 0: not announced yet */
  uint8_t park_kind;
} tent;

typedef struct table {
  tent *e;
  size_t mask;
  size_t used;
} table;

static uint64_t task_key(const br__tev *e) { return ((uint64_t)e->loop << 32) | (e->id & 0xffffffffu); }

static tent *lookup(table *t, uint64_t key, bool add) {
  size_t h = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & t->mask;
  for (size_t i = 0; i <= t->mask; i++, h = (h + 1) & t->mask) {
    tent *x = &t->e[h];
    if (x->key == key) return x;
    if (!x->key) {
      if (!add || 2 * (t->used + 1) > t->mask + 1) return NULL;
      x->key = key;
      t->used++;
      return x;
    }
  }
  return NULL;
}

/* --- ordering ---------------------------------------------------------------------- */

static bool chunk_before(const br__tchunk *a, const br__tchunk *b) {
  if (a->tid != b->tid) return a->tid < b->tid;
  return a->seq < b->seq;
}

static void sort_chunks(const br__tchunk **c, size_t n) {
  /* Shell sort: no memory, fast enough for the thousands of chunks a trace
   * has. */
  for (size_t gap = n / 2; gap; gap /= 2)
    for (size_t i = gap; i < n; i++) {
      const br__tchunk *x = c[i];
      size_t j = i;
      for (; j >= gap && chunk_before(x, c[j - gap]); j -= gap) c[j] = c[j - gap];
      c[j] = x;
    }
}

/* --- events --------------------------------------------------------------------------- */

typedef struct ctx {
  out *o;
  table tasks;
  uint64_t start;      /* the session's start (ticks) */
  double npt;          /* ns per tick: one rate for the whole file, so the
                          order of events survives the conversion */
  uint64_t last_ts;    /* the latest event: where open slices end */
  uint32_t next_track;
  int pid;
  bool first;
} ctx;

static int64_t rel_ns(ctx *c, uint64_t ticks) {
  return (int64_t)((double)(int64_t)(ticks - c->start) * c->npt);
}

static void begin_event(ctx *c) {
  put(c->o, c->first ? "\n" : ",\n");
  c->first = false;
}

static void slice(ctx *c, const char *cat, const char *name, int64_t tid, uint64_t t0, uint64_t t1) {
  begin_event(c);
  put(c->o, "{\"ph\":\"X\",\"cat\":\"");
  put(c->o, cat);
  put(c->o, "\",\"name\":");
  put_str(c->o, name);
  put(c->o, ",\"pid\":");
  put_i(c->o, c->pid);
  put(c->o, ",\"tid\":");
  put_i(c->o, tid);
  put(c->o, ",\"ts\":");
  int64_t a = rel_ns(c, t0), b = rel_ns(c, t1);
  put_us(c->o, a);
  put(c->o, ",\"dur\":");
  put_us(c->o, b > a ? b - a : 0);
}

static void meta(ctx *c, const char *what, int64_t tid, const char *name, int64_t sort) {
  begin_event(c);
  put(c->o, "{\"ph\":\"M\",\"name\":\"");
  put(c->o, what);
  put(c->o, "\",\"pid\":");
  put_i(c->o, c->pid);
  put(c->o, ",\"tid\":");
  put_i(c->o, tid);
  put(c->o, ",\"args\":{");
  if (name) {
    put(c->o, "\"name\":");
    put_str(c->o, name);
  } else {
    put(c->o, "\"sort_index\":");
    put_i(c->o, sort);
  }
  put(c->o, "}}");
}

static const char *task_name(tent *t, char *buf) {
  if (t->name[0]) return t->name;
  /* "task-ID", as br_task_name says for an unnamed task */
  uint64_t id = t->key & 0xffffffffu;
  char d[24];
  int i = 0;
  do d[i++] = (char)('0' + id % 10); while ((id /= 10) && i < 20);
  memcpy(buf, "task-", 5);
  int n = 5;
  while (i) buf[n++] = d[--i];
  buf[n] = 0;
  return buf;
}

static void announce(ctx *c, tent *t) {
  if (t->track) return;
  t->track = c->next_track++;
  char nb[40], label[64];
  const char *nm = task_name(t, nb);
  size_t n = 0;
  const char *parts[] = {"task '", nm, "' #"};
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(parts[i]);
    if (n + l >= sizeof label - 24) l = sizeof label - 24 - n;
    memcpy(label + n, parts[i], l);
    n += l;
  }
  uint64_t id = t->key & 0xffffffffu;
  char d[24];
  int i = 0;
  do d[i++] = (char)('0' + id % 10); while ((id /= 10) && i < 20);
  while (i) label[n++] = d[--i];
  label[n] = 0;
  meta(c, "thread_name", t->track, label, 0);
  meta(c, "thread_sort_index", t->track, NULL, t->track);
}

static void end_run(ctx *c, tent *t, uint64_t ts, bool open) {
  if (!t->run_ts) return;
  char nb[40];
  slice(c, "run", task_name(t, nb), t->run_tid, t->run_ts, ts);
  put(c->o, ",\"args\":{\"task\":");
  put_u(c->o, t->key);
  if (open) put(c->o, ",\"open\":1");
  put(c->o, "}}");
  t->run_ts = 0;
}

static void end_wait(ctx *c, tent *t, uint64_t ts, bool open) {
  if (!t->park_ts) return;
  announce(c, t);
  char name[48] = "wait: ";
  const char *k = br_wait_kind_name((br_wait_kind)t->park_kind);
  strncat(name, t->park_kind ? k : "wake-up", sizeof name - 7);
  slice(c, "wait", name, t->track, t->park_ts, ts);
  put(c->o, ",\"args\":{\"task\":");
  put_u(c->o, t->key);
  put(c->o, ",\"kind\":\"");
  put(c->o, t->park_kind ? k : "other");
  put(c->o, "\"");
  if (t->park_arg >= 0 && (t->park_kind == BR_WAIT_FD || t->park_kind == BR_WAIT_CHILD)) {
    put(c->o, ",\"arg\":");
    put_i(c->o, t->park_arg);
  }
  if (open) put(c->o, ",\"open\":1");
  put(c->o, "}}");
  t->park_ts = 0;
}

/* What a thread is, from what it did. */
enum { MAX_PENDING = 64 };

typedef struct thr {
  int32_t tid;
  struct tent *pending[MAX_PENDING]; /* woken, waiting for a stamp */
  size_t npending;
  uint32_t loop;        /* a loop ran tasks here */
  unsigned jobs[4];     /* pool, blocking, procpool */
  char name[32];        /* BR__TEV_THREAD */
  uint64_t open_ts[3];  /* open poll / job slices */
  uint64_t open_id;
  uint8_t open_kind;
} thr;

static void thread_label(const thr *t, char *buf, size_t size) {
  char num[24];
  size_t n = 0;
  const char *base = t->name[0] ? t->name
                     : t->loop ? "loop "
                     : t->jobs[0] ? "pool worker"
                     : t->jobs[1] ? "blocking pool"
                     : t->jobs[2] ? "process pool"
                     : "thread";
  size_t l = strlen(base);
  if (l >= size) l = size - 1;
  memcpy(buf, base, l);
  n = l;
  if (!t->name[0] && t->loop) {
    uint64_t v = t->loop;
    int i = 0;
    do num[i++] = (char)('0' + v % 10); while ((v /= 10) && i < 20);
    while (i && n + 1 < size) buf[n++] = num[--i];
  }
  buf[n] = 0;
}

static const char *job_cat(uint8_t kind) {
  return kind == BR_WAIT_BLOCKING ? "blocking" : kind == BR_WAIT_PROCPOOL ? "procpool" : "pool";
}

/* Pass over one thread's chunks [from, to). */
static void thread_pass(ctx *c, const br__tchunk **ch, size_t from, size_t to, bool emit, thr *th) {
  for (size_t i = from; i < to; i++) {
    const br__tchunk *k = ch[i];
    uint32_t used = atomic_load_explicit(&((br__tchunk *)k)->used, memory_order_acquire);
    if (used > BR__TCHUNK_SLOTS) used = BR__TCHUNK_SLOTS;
    for (uint32_t j = 0, step; j < used; j += step ? step : 1) {
      br__tev ev;
      const br__tev *e = &ev;
      const char *text;
      step = br__trace_decode(k, j, used, &ev, &text);
      if (!step || e->type == BR__TEV_PAD || e->type >= BR__TEV_TYPES) continue;
      if (e->type == BR__TEV_READY && e->pad == 1) {
        /* Not stamped: it ends the wait at the thread's next record. */
        if (emit) {
          tent *t = lookup(&c->tasks, task_key(e), true);
          if (t && th->npending < MAX_PENDING) th->pending[th->npending++] = t;
          else if (t) end_wait(c, t, c->last_ts, false);
        }
        continue;
      }
      if (e->ts > c->last_ts) c->last_ts = e->ts;
      if (emit) {
        for (size_t q = 0; q < th->npending; q++) end_wait(c, th->pending[q], e->ts, false);
        th->npending = 0;
      }
      if (!emit) {
        /* First pass: names, and what each thread is. */
        if (e->type == BR__TEV_SPAWN || e->type == BR__TEV_NAME) {
          tent *t = lookup(&c->tasks, task_key(e), true);
          if (t && text) {
            memcpy(t->name, text, 31);
            t->name[31] = 0;
          }
        } else if (e->type == BR__TEV_RESUME || e->type == BR__TEV_SWITCH) {
          th->loop = e->loop;
        } else if (e->type == BR__TEV_JOB_BEGIN && e->kind >= BR_WAIT_POOL && e->kind <= BR_WAIT_PROCPOOL) {
          th->jobs[e->kind - BR_WAIT_POOL]++;
        } else if (e->type == BR__TEV_THREAD && text) {
          memcpy(th->name, text, 31);
          th->name[31] = 0;
        }
        continue;
      }
      switch (e->type) {
      case BR__TEV_RESUME: {
        tent *t = lookup(&c->tasks, task_key(e), true);
        if (!t) break;
        end_wait(c, t, e->ts, false);
        if (t->run_ts) end_run(c, t, e->ts, false);
        t->run_ts = e->ts;
        t->run_tid = k->tid;
        break;
      }
      case BR__TEV_SWITCH: {
        /* A direct hand-off: the stop of id, then the resume of arg. The
         * resumed task's wait ends first, as an unstamped wake-up of it
         * right before would have ended it (the writer drops that record). */
        tent *to = lookup(&c->tasks, ((uint64_t)e->loop << 32) | ((uint64_t)e->arg & 0xffffffffu), true);
        if (to) end_wait(c, to, e->ts, false);
        tent *t = lookup(&c->tasks, task_key(e), true);
        if (t) {
          end_run(c, t, e->ts, false);
          if (e->pad == BR__TEV_PARK) {
            t->park_ts = e->ts;
            t->park_kind = e->kind;
            t->park_arg = -1;
          }
        }
        if (to) {
          end_run(c, to, e->ts, false);
          to->run_ts = e->ts;
          to->run_tid = k->tid;
        }
        break;
      }
      case BR__TEV_YIELD:
      case BR__TEV_PARK:
      case BR__TEV_END: {
        tent *t = lookup(&c->tasks, task_key(e), true);
        if (!t) break;
        end_run(c, t, e->ts, false);
        if (e->type == BR__TEV_PARK) {
          t->park_ts = e->ts;
          t->park_kind = e->kind;
          t->park_arg = e->arg;
        }
        break;
      }
      case BR__TEV_READY: {
        /* The wait is over; until it runs the task is ready (idle), not waiting. */
        tent *t = lookup(&c->tasks, task_key(e), true);
        if (t) end_wait(c, t, e->ts, false);
        break;
      }
      case BR__TEV_SPAWN: {
        tent *t = lookup(&c->tasks, task_key(e), true);
        if (t) announce(c, t);
        break;
      }
      case BR__TEV_POLL_BEGIN:
        th->open_ts[0] = e->ts;
        break;
      case BR__TEV_POLL_END:
        if (th->open_ts[0]) {
          slice(c, "poll", "poll", k->tid, th->open_ts[0], e->ts);
          put(c->o, ",\"args\":{\"result\":");
          put_i(c->o, e->arg);
          put(c->o, "}}");
          th->open_ts[0] = 0;
        }
        break;
      case BR__TEV_JOB_BEGIN:
        th->open_ts[1] = e->ts;
        th->open_kind = e->kind;
        th->open_id = e->id;
        break;
      case BR__TEV_JOB_END:
        if (th->open_ts[1]) {
          const char *nm = e->kind == BR_WAIT_BLOCKING ? "blocking call"
                           : e->kind == BR_WAIT_PROCPOOL ? "process-pool job" : "pool job";
          slice(c, job_cat(e->kind), nm, k->tid, th->open_ts[1], e->ts);
          put(c->o, ",\"args\":{\"err\":");
          put_i(c->o, e->arg);
          put(c->o, "}}");
          th->open_ts[1] = 0;
        }
        break;
      default:
        break;
      }
    }
  }
}

int br__trace_export_fd(int fd, bool in_signal) {
  if (!br__trace_hold(in_signal)) return BR_EBUSY;
  uint64_t start = 0, dropped = 0;
  size_t n = br__trace_snapshot(NULL, 0, &start, &dropped);
  size_t cap = n + 64;
  const br__tchunk **ch = n ? map(cap * sizeof *ch) : NULL;
  out *o = map(sizeof *o);
  int rc = 0;
  if ((n && !ch) || !o) {
    rc = BR_ENOMEM;
    goto done;
  }
  n = br__trace_snapshot(ch, cap, &start, &dropped);
  if (n > cap) n = cap;
  sort_chunks(ch, n);
  size_t slots = n * BR__TCHUNK_SLOTS;
  size_t tsize = 1024;
  while (tsize < slots / 2) tsize *= 2;
  ctx c = {.o = o, .pid = (int)getpid(), .first = true, .next_track = 1000000};
  c.tasks.e = map(tsize * sizeof(tent));
  c.tasks.mask = tsize - 1;
  thr *ths = map((n + 1) * sizeof(thr));
  if (!c.tasks.e || !ths) {
    rc = BR_ENOMEM;
    goto free_tables;
  }
  o->fd = fd;
  c.start = start;
  c.npt = br__ns_per_tick();
  put(o, "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"braid ");
  put(o, br_version_string());
  put(o, "\",\"dropped_chunks\":");
  put_u(o, dropped);
  put(o, "},\"traceEvents\":[");
  size_t nth = 0;
  /* Pass 1: names and thread roles; pass 2: the slices. */
  for (int pass = 0; pass < 2; pass++) {
    size_t t = 0;
    for (size_t i = 0; i < n; t++) {
      size_t j = i;
      while (j < n && ch[j]->tid == ch[i]->tid) j++;
      if (pass == 0) ths[t].tid = ch[i]->tid;
      thread_pass(&c, ch, i, j, pass == 1, &ths[t]);
      i = j;
    }
    nth = t;
    if (pass == 0) {
      meta(&c, "process_name", 0, "braid", 0);
      for (size_t k = 0; k < nth; k++) {
        char label[40];
        thread_label(&ths[k], label, sizeof label);
        meta(&c, "thread_name", ths[k].tid, label, 0);
        meta(&c, "thread_sort_index", ths[k].tid, NULL, (int64_t)k);
      }
    }
  }
  /* Close what is still open at the last event. */
  for (size_t i = 0; i <= c.tasks.mask; i++) {
    tent *t = &c.tasks.e[i];
    if (!t->key) continue;
    end_run(&c, t, c.last_ts, true);
    end_wait(&c, t, c.last_ts, true);
  }
  put(o, "\n]}\n");
  flush(o);
  rc = o->err;
free_tables:
  if (c.tasks.e) munmap(c.tasks.e, tsize * sizeof(tent));
  if (ths) munmap(ths, (n + 1) * sizeof(thr));
done:
  br__trace_unhold();
  if (ch) munmap(ch, cap * sizeof *ch);
  if (o) munmap(o, sizeof *o);
  return rc;
}
