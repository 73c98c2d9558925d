/* SPDX-License-Identifier: MIT */
/* braid-mpi — rank 0: the pool, its progress thread, and the fallback.
 *
 * Threads and the lock. Submitters (any thread: submit, map, imap,
 * shutdown, stats) and the pool's one progress thread share the pool under
 * p->mu. Only the progress thread calls MPI once the pool exists. Futures
 * are never completed with mu held (a callback may submit again): the
 * progress thread collects finished units on a done list under mu and
 * completes them after unlocking; batches (map, imap) are woken the same
 * way.
 *
 * Units. A unit is what one WORK entry carries: a submitted job (U_SUBMIT,
 * with two references: RUN, held by the pool's lists, and HOOK, held by the
 * future's cancel hook; completing the future drops RUN, and HOOK too when
 * the completion won, since the hook can then never run; a hook that runs
 * drops HOOK, and RUN too when it took the job back), or a chunk of a
 * batch (U_CHUNK, items first .. first+count of a map or an iterator).
 * A unit is PENDING (p->pend, or not yet cut from its batch), SENT (in its
 * rank's in-flight FIFO, which the rank runs in order), or DONE.
 *
 * Ranks ask for work by finishing it: a rank holds at most p->depth units;
 * each RESULT gives one back. Map chunks are cut when a rank has room, so
 * their size follows what is left and how long items take (cut_chunk).
 *
 * Failure: fd.c decides that a rank is dead; rank_dead() then fails the
 * unit it was running with BR_EWORKERDIED and puts the ones it had not
 * started back at the front of the queue.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpi/mpi_fd.h"
#include "mpi/mpi_int.h"

enum { U_SUBMIT = 1, U_CHUNK };
enum { US_PENDING = 0, US_SENT, US_DONE };
/* R_REFUSED: reported in, but unusable (initializer failed, other image):
 * alive, gets STOP at the end, never work. */
enum { R_WAIT = 0, R_LIVE, R_DEAD, R_REFUSED };
enum { C_OPEN = 0, C_DRAIN, C_CANCEL };
enum { B_MAP = 1, B_IMAP, B_UNORD };

typedef struct mp_batch mp_batch;
typedef struct mp_unit mp_unit;

struct dq_ent {
  size_t idx;
  br_result res;
};

struct mp_unit {
  br_future *fut;  /* U_SUBMIT only: the unit's reference */
  atomic_int refs; /* U_SUBMIT only: RUN + HOOK */
  mp_unit *next;  /* pending queue or its rank's FIFO */
  mp_unit *dnext; /* done list (a unit may be on it and still in a FIFO) */
  int kind, state, rank;
  uint64_t id;
  uint32_t jobidx;
  int64_t timeout_ns;
  bool gave_up; /* its future/items were completed early (timeout, cancel) */
  /* U_SUBMIT */
  void *arg;
  size_t len;
  /* U_CHUNK */
  mp_batch *b;
  size_t first, count;
  size_t parted;     /* items delivered by the RESULT parts received so far */
  int64_t parted_ns; /* and how long they ran */
  /* done list */
  int err;
  char *msg;
  br_bytes *val;
};

struct mp_batch {
  int kind;
  int refs; /* the caller's + one per unit; under mu */
  uint32_t jobidx;
  int64_t timeout_ns;
  size_t chunk_fixed;
  mp_batch *next;
  bool listed;   /* in p->batches (has or may get items to cut) */
  bool abandoned; /* the caller left: results are dropped */
  size_t n_items, next_cut, n_done;
  bool eof;
  /* B_MAP: the caller's arrays */
  const br_buf *items;
  br_result *out;
  /* iterators: rings of `cap` slots, index i at i % cap */
  size_t cap;
  br_buf *copies;
  bool *held;    /* copies[i] holds an item that is not done with (an item's
                  * slot is reused only then: unordered consumers may be far
                  * ahead of the oldest item still running) */
  br_result *ring;
  bool *ready;
  struct dq_ent *doneq; /* unordered: outcomes in completion order */
  size_t dq_head, dq_len;
  double avg_ns;
  br_future *wake;
};

typedef struct mp_rank {
  int state;
  mp_peer peer;
  mp_unit *in_head, *in_tail;
  int inflight;
  int64_t head_since;
  uint64_t *cancels;
  size_t ncancel, capcancel;
  bool stop_sent;
} mp_rank;

typedef struct mp_send {
  MPI_Request req;
  mp_buf buf;
  int rank;
  bool is_stop;
} mp_send;

struct br_mpipool {
  br_procpool *local; /* the single-rank fallback */
  int local_workers;
  mp_opts o;
  MPI_Comm comm;
  int size;
  char host[MP_HOST_MAX];

  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thr;
  bool thr_started;
  /* under mu */
  mp_unit *pend, *pend_tail;
  mp_batch *batches;
  mp_rank *ranks;
  int alive, reported;
  int closing;
  bool finished; /* progress thread is done */
  br_future *stopped;
  int broken_err;
  char *broken_msg;
  uint64_t next_id;
  size_t outstanding; /* units pending or in flight, batch items not cut */
  int depth;
  int rr; /* where the next hand-out round starts */
  double avg_unit_ns;
  br_mpipool_stats st;
};

struct br_mpipool_iter {
  br_mpipool *p;
  br_procpool_iter *local;
  mp_batch *b;
  br_procpool_item_fn next;
  void *ud;
  size_t next_read; /* ordered: next index to hand out */
  size_t consumed;
  int prod_err;
};

static void bytes_free_fn(void *v) { br_bytes_free(v); }

static void unit_drop(mp_unit *u, int n) {
  if (atomic_fetch_sub(&u->refs, n) != n) return;
  free(u->arg);
  free(u->msg);
  br_bytes_free(u->val);
  br_future_unref(u->fut);
  free(u);
}

static void wake_thread(br_mpipool *p) { pthread_cond_signal(&p->cv); }

/* ---- done list: completions run after mu is released */

typedef struct done_list {
  mp_unit *units;       /* U_SUBMIT with err/msg/val set */
  br_future **wakes; /* batch wake futures to complete */
  size_t nwakes, capwakes;
  br_future *stopped;
} done_list;

static void done_flush(br_mpipool *p, done_list *d) {
  (void)p;
  while (d->units) {
    mp_unit *u = d->units;
    d->units = u->dnext;
    u->dnext = NULL;
    int rc;
    if (u->err) {
      rc = br_future_fail(u->fut, u->err, "%s", u->msg ? u->msg : "");
    } else {
      /* As br_procpool_submit's: the value becomes the caller's (taken
       * once, br_bytes_free), so the same program is right on ranks and in
       * the local fallback. If the future was cancelled first, unit_drop
       * frees it. */
      rc = br_future_set(u->fut, u->val);
      if (rc == 0) u->val = NULL;
    }
    free(u->msg);
    u->msg = NULL;
    unit_drop(u, rc == 0 ? 2 : 1);
  }
  for (size_t i = 0; i < d->nwakes; i++) {
    br_future_set(d->wakes[i], NULL);
    br_future_unref(d->wakes[i]);
  }
  d->nwakes = 0;
  free(d->wakes);
  d->wakes = NULL;
  d->capwakes = 0;
  if (d->stopped) {
    br_future_set(d->stopped, NULL);
    br_future_unref(d->stopped);
    d->stopped = NULL;
  }
}

static void batch_wake(mp_batch *b, done_list *d) {
  if (!b->wake) return;
  if (d->nwakes == d->capwakes) {
    size_t cap = d->capwakes ? d->capwakes * 2 : 4;
    br_future **v = realloc(d->wakes, cap * sizeof *v);
    if (!v) return; /* woken by the next outcome */
    d->wakes = v;
    d->capwakes = cap;
  }
  d->wakes[d->nwakes++] = b->wake;
  b->wake = NULL;
}

/* Complete a submitted unit (under mu; the future is completed later).
 * keep: the unit stays in its rank's FIFO (timeout, cancel): take an extra
 * reference for the list, dropped when the rank reports. */
static void unit_finish(br_mpipool *p, mp_unit *u, int err, char *msg, br_bytes *val, bool keep,
                        done_list *d) {
  if (u->gave_up) {
    /* Its future was completed already: this is the list's reference. */
    free(msg);
    br_bytes_free(val);
    unit_drop(u, 1);
    return;
  }
  p->st.completed++;
  if (err) p->st.failed++;
  if (keep) {
    u->gave_up = true;
    atomic_fetch_add(&u->refs, 1);
  }
  u->err = err;
  u->msg = msg;
  u->val = val;
  u->dnext = d->units;
  d->units = u;
}

static void batch_unref(mp_batch *b);

/* Store item idx's outcome in its batch (under mu). Each item is finished
 * once: callers skip units that gave up (their items were finished). */
static void item_finish(br_mpipool *p, mp_batch *b, size_t idx, int err, char *msg, br_bytes *val,
                        done_list *d) {
  br_result *r;
  if (b->abandoned) goto drop;
  if (b->kind == B_MAP) {
    r = &b->out[idx];
    if (r->err || r->value) goto drop;
  } else if (b->kind == B_IMAP) {
    if (b->ready[idx % b->cap]) goto drop;
    r = &b->ring[idx % b->cap];
    b->ready[idx % b->cap] = true;
  } else {
    if (b->dq_len == b->cap) goto drop; /* cannot happen: the window bounds it */
    struct dq_ent *e = &b->doneq[(b->dq_head + b->dq_len++) % b->cap];
    e->idx = idx;
    r = &e->res;
  }
  p->st.completed++;
  if (err) p->st.failed++;
  r->value = val;
  r->err = err;
  r->msg = msg;
  r->br__private.value_free = val ? bytes_free_fn : NULL;
  b->n_done++;
  batch_wake(b, d);
  return;
drop:
  free(msg);
  br_bytes_free(val);
}

static char *dupmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupmsg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static const char *jobname(uint32_t idx) {
  const br_job_desc *d = br_job_at(idx);
  return d ? d->name : "?";
}

/* Fail every item of chunk u that has no outcome yet (the ones a part of
 * its result delivered have one: an unordered batch must not see them
 * twice). */
static void chunk_fail(br_mpipool *p, mp_unit *u, int err, const char *why, done_list *d) {
  for (size_t k = u->parted; k < u->count; k++)
    item_finish(p, u->b, u->first + k, err, why ? strdup(why) : NULL, NULL, d);
}

/* ---- queues */

static void pend_push_front(br_mpipool *p, mp_unit *u) {
  u->state = US_PENDING;
  u->rank = -1;
  u->next = p->pend;
  p->pend = u;
  if (!p->pend_tail) p->pend_tail = u;
}

static void pend_push_back(br_mpipool *p, mp_unit *u) {
  u->state = US_PENDING;
  u->rank = -1;
  u->next = NULL;
  if (p->pend_tail) p->pend_tail->next = u;
  else p->pend = u;
  p->pend_tail = u;
}

static bool pend_remove(br_mpipool *p, mp_unit *u) {
  for (mp_unit **pp = &p->pend, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
    if (*pp != u) continue;
    *pp = u->next;
    if (p->pend_tail == u) p->pend_tail = prev;
    u->next = NULL;
    return true;
  }
  return false;
}

static void unit_free_chunk(mp_unit *u) {
  mp_batch *b = u->b;
  if (b->kind != B_MAP)
    for (size_t k = 0; k < u->count; k++) {
      br_buf *c = &b->copies[(u->first + k) % b->cap];
      free((void *)c->data);
      c->data = NULL;
      b->held[(u->first + k) % b->cap] = false;
    }
  batch_unref(b);
  free(u);
}

/* A unit leaves the pool for good (under mu). */
static void unit_retire(br_mpipool *p, mp_unit *u) {
  (void)p;
  p->outstanding--;
  u->state = US_DONE;
}

/* ---- failing everything (broken pool, no ranks left, shutdown CANCEL) */

static void fail_all_pending(br_mpipool *p, int err, const char *why, done_list *d) {
  while (p->pend) {
    mp_unit *u = p->pend;
    p->pend = u->next;
    if (!p->pend) p->pend_tail = NULL;
    unit_retire(p, u);
    if (u->kind == U_SUBMIT) {
      unit_finish(p, u, err, why ? strdup(why) : NULL, NULL, false, d);
    } else {
      chunk_fail(p, u, err, why, d);
      unit_free_chunk(u);
    }
  }
  for (mp_batch *b = p->batches; b; b = b->next) {
    while (b->next_cut < b->n_items) {
      size_t i = b->next_cut++;
      p->outstanding--;
      if (b->kind != B_MAP) {
        free((void *)b->copies[i % b->cap].data);
        b->copies[i % b->cap].data = NULL;
        b->held[i % b->cap] = false;
      }
      item_finish(p, b, i, err, why ? strdup(why) : NULL, NULL, d);
    }
  }
}

/* ---- rank death (fd.c said so) */

static void rank_dead(br_mpipool *p, int r, const char *why, uint64_t running, done_list *d) {
  mp_rank *rk = &p->ranks[r];
  if (rk->state == R_DEAD) return;
  bool was_live = rk->state == R_LIVE;
  rk->state = R_DEAD;
  if (was_live) p->alive--;
  p->st.rank_deaths++;
  br__mpi_saw_death();
  br__mplog(BR_LOG_ERROR, "mpi: rank %d (pid %d on %s) died: %s", r, rk->peer.pid, rk->peer.host,
          why);
  mp_unit *u = rk->in_head;
  rk->in_head = rk->in_tail = NULL;
  rk->inflight = 0;
  mp_unit *requeue = NULL, **rq_tail = &requeue;
  bool first = true;
  while (u) {
    mp_unit *nx = u->next;
    u->next = NULL;
    bool started = (running ? u->id == running : first) || u->parted;
    first = false;
    if (started || u->gave_up) {
      unit_retire(p, u);
      if (u->gave_up) {
        if (u->kind == U_SUBMIT) unit_finish(p, u, 0, NULL, NULL, false, d);
        else unit_free_chunk(u);
      } else if (u->kind == U_SUBMIT) {
        unit_finish(p, u, BR_EWORKERDIED,
                    dupmsg("rank %d (pid %d on %s) died: %s, running job '%s'", r, rk->peer.pid,
                           rk->peer.host, why, jobname(u->jobidx)),
                    NULL, false, d);
      } else {
        char *m = dupmsg("rank %d (pid %d on %s) died: %s, running job '%s' (item lost with "
                         "its chunk)",
                         r, rk->peer.pid, rk->peer.host, why, jobname(u->jobidx));
        chunk_fail(p, u, BR_EWORKERDIED, m, d);
        free(m);
        unit_free_chunk(u);
      }
    } else {
      *rq_tail = u;
      rq_tail = &u->next;
    }
    u = nx;
  }
  /* Not started: back to the front, in order. */
  if (requeue) {
    mp_unit *last = requeue;
    for (mp_unit *x = requeue; x; x = x->next) {
      x->state = US_PENDING;
      x->rank = -1;
      last = x;
    }
    last->next = p->pend;
    if (!p->pend) p->pend_tail = last;
    p->pend = requeue;
  }
  if (p->alive == 0 && p->reported == p->size - 1) {
    char *m = dupmsg("no worker rank left (the last, rank %d, died: %s)", r, why);
    fail_all_pending(p, BR_EWORKERDIED, m, d);
    free(m);
  }
}

/* ---- cutting and sending work */

static size_t cut_chunk(br_mpipool *p, mp_batch *b) {
  size_t avail = b->n_items - b->next_cut;
  if (!avail) return 0;
  if (b->chunk_fixed) return b->chunk_fixed < avail ? b->chunk_fixed : avail;
  if (b->kind != B_MAP) return 1;
  /* Guided self-scheduling bounded by time: at most a share of what is left
   * (so the last chunks are small and the ranks finish together), and no
   * more than ~2 ms of work per chunk once item times are known (long
   * items go one by one, tiny ones in big chunks). The first chunks are
   * single items, to measure. */
  size_t w = p->alive > 0 ? (size_t)p->alive : 1;
  size_t guided = (avail + 2 * w - 1) / (2 * w);
  size_t bytime = b->avg_ns > 0 ? (size_t)(2e6 / b->avg_ns) : 1;
  size_t c = guided < bytime ? guided : bytime;
  if (c < 1) c = 1;
  /* Keep one message's bytes reasonable. */
  size_t bytes = 0, k = 0;
  for (; k < c; k++) {
    bytes += b->items[b->next_cut + k].len;
    if (k && bytes > ((size_t)64 << 20)) break;
  }
  return k;
}

static const br_buf *batch_item(mp_batch *b, size_t i) {
  return b->kind == B_MAP ? &b->items[i] : &b->copies[i % b->cap];
}

/* Next unit for rank rk, which has room, or NULL (under mu). A batch whose
 * items take 2 ms or more goes to a busy rank only when the item it runs
 * is due to end within PREFETCH_NS, 2 ms (by the batch's mean item time): a
 * chunk queued behind a long item could have run elsewhere, but one handed
 * out only once the rank is idle leaves it waiting a round trip (rank 0's
 * next probe, the message, the rank's next probe: 0.1-0.5 ms measured, up
 * to 5 % of a 10 ms item). */
#define PREFETCH_NS 2000000

/* Whether busy rank rk (inflight > 0) should get nothing more of batch b
 * now. Nothing while the batch's item time is unknown: queued behind items
 * that may be long, the hand-out would be a static split (the depth comes
 * from earlier, maybe tiny, work); the first results measure the batch. */
static bool hold_back(const mp_batch *b, const mp_rank *rk, int inflight, int64_t now) {
  if (b->avg_ns <= 0) return true;
  if (b->avg_ns < 2e6) return false;
  return inflight > 1 || (double)(now - rk->head_since) < b->avg_ns - PREFETCH_NS;
}

static mp_unit *next_unit(br_mpipool *p, mp_rank *rk, int64_t now) {
  int inflight = rk->inflight;
  if (p->pend) {
    mp_unit *u = p->pend;
    p->pend = u->next;
    if (!p->pend) p->pend_tail = NULL;
    u->next = NULL;
    return u;
  }
  for (mp_batch *b = p->batches; b; b = b->next) {
    if (inflight > 0 && hold_back(b, rk, inflight, now)) continue;
    size_t c = cut_chunk(p, b);
    if (!c) continue;
    mp_unit *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->kind = U_CHUNK;
    u->id = ++p->next_id;
    u->jobidx = b->jobidx;
    u->timeout_ns = b->timeout_ns;
    u->b = b;
    u->first = b->next_cut;
    u->count = c;
    b->refs++;
    b->next_cut += c;
    p->outstanding -= c; /* items became one unit */
    p->outstanding++;
    return u;
  }
  return NULL;
}

static int pack_unit(mp_buf *m, mp_unit *u) {
  w_unit h = {.id = u->id, .job = u->jobidx, .timeout_ns = u->timeout_ns};
  if (u->kind == U_SUBMIT) {
    h.nitems = 1;
    uint64_t l = u->len;
    if (mp_buf_put(m, &h, sizeof h) < 0 || mp_buf_put(m, &l, sizeof l) < 0 ||
        mp_buf_put(m, u->arg, u->len) < 0)
      return BR_ENOMEM;
    return 0; /* arg is kept until the unit is done: a dead rank's unit is sent again */
  }
  h.nitems = (uint32_t)u->count;
  if (mp_buf_put(m, &h, sizeof h) < 0) return BR_ENOMEM;
  for (size_t k = 0; k < u->count; k++) {
    uint64_t l = batch_item(u->b, u->first + k)->len;
    if (mp_buf_put(m, &l, sizeof l) < 0) return BR_ENOMEM;
  }
  for (size_t k = 0; k < u->count; k++) {
    size_t i = u->first + k;
    const br_buf *it = batch_item(u->b, i);
    if (mp_buf_put(m, it->data, it->len) < 0) return BR_ENOMEM;
  }
  return 0;
}

/* ---- progress thread */

typedef struct sendq {
  mp_send *v;
  size_t n, cap;
} sendq;

static int sendq_add(sendq *q, int rank, mp_buf *buf, int tag, MPI_Comm comm, bool sync) {
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 16;
    mp_send *v = realloc(q->v, cap * sizeof *v);
    if (!v) return BR_ENOMEM;
    q->v = v;
    q->cap = cap;
  }
  mp_send *s = &q->v[q->n];
  s->buf = *buf;
  memset(buf, 0, sizeof *buf);
  s->rank = rank;
  s->is_stop = tag == T_STOP;
  int r = sync ? MPI_Issend(s->buf.p, (int)s->buf.len, MPI_BYTE, rank, tag, comm, &s->req)
               : MPI_Isend(s->buf.p, (int)s->buf.len, MPI_BYTE, rank, tag, comm, &s->req);
  if (r != MPI_SUCCESS) {
    mp_buf_free(&s->buf);
    return br__mpi_err(r, "MPI_Isend");
  }
  q->n++;
  return 0;
}

/* Test the sends; drop the ones to dead ranks (never completed). Returns
 * the number still in flight. */
static size_t sendq_poll(br_mpipool *p, sendq *q) {
  size_t j = 0;
  for (size_t i = 0; i < q->n; i++) {
    int flag = 0;
    MPI_Test(&q->v[i].req, &flag, MPI_STATUS_IGNORE);
    if (!flag) {
      pthread_mutex_lock(&p->mu);
      bool dead = p->ranks[q->v[i].rank].state == R_DEAD;
      pthread_mutex_unlock(&p->mu);
      if (dead) {
        /* The rank will never take it: let MPI forget the request (it may
         * hold the buffer, so the buffer is leaked on purpose). */
        MPI_Request_free(&q->v[i].req);
        continue;
      }
      q->v[j++] = q->v[i];
      continue;
    }
    mp_buf_free(&q->v[i].buf);
  }
  q->n = j;
  return j;
}

static void handle_hello(br_mpipool *p, int r, const char *buf, size_t n, done_list *d) {
  w_hello h;
  mp_rank *rk = &p->ranks[r];
  if (rk->state != R_WAIT) return;
  p->reported++;
  if (n < sizeof h) {
    rk->state = R_DEAD;
    return;
  }
  memcpy(&h, buf, sizeof h);
  h.host[MP_HOST_MAX - 1] = 0;
  br__mpfd_init(&rk->peer, h.pid, h.host, p->host, br_now());
  char *why = NULL;
  int err = 0;
  if (h.version != MP_WIRE_VERSION || h.njobs != br_job_count() ||
      h.table_hash != br__mpi_table_hash()) {
    err = BR_EFAILED;
    why = dupmsg("rank %d (pid %d on %s) runs another program image (%u jobs registered, "
                 "here %zu): every rank must run the same program",
                 r, h.pid, h.host, h.njobs, br_job_count());
  } else if (h.init_err) {
    err = BR_EFAILED;
    size_t ml = h.msglen <= n - sizeof h ? h.msglen : 0;
    why = dupmsg("rank %d: initializer '%s' failed: %s%s%.*s", r,
                 p->o.initializer ? p->o.initializer : "?", br_strerror(h.init_err),
                 ml ? ": " : "", (int)ml, buf + sizeof h);
  }
  if (err) {
    rk->state = R_REFUSED;
    if (!p->broken_err) {
      p->broken_err = err;
      p->broken_msg = why;
      br__mplog(BR_LOG_ERROR, "mpi: %s", why);
      why = NULL;
    }
    free(why);
    fail_all_pending(p, p->broken_err, p->broken_msg, d);
    return;
  }
  rk->state = R_LIVE;
  p->alive++;
}

/* A RESULT from rank r: a whole unit, or one part of it (mpi_int.h: the
 * parts of a unit come in item order; the unit leaves its rank's FIFO with
 * the last). */
static void handle_result(br_mpipool *p, int r, const char *buf, size_t n, done_list *d) {
  w_result h;
  if (n < sizeof h) return;
  memcpy(&h, buf, sizeof h);
  mp_rank *rk = &p->ranks[r];
  mp_unit *u = NULL, *prev = NULL;
  for (u = rk->in_head; u && u->id != h.id; prev = u, u = u->next) {
  }
  if (!u) return; /* a unit of a rank declared dead meanwhile */
  bool last = !h.more || h.skipped || u->kind == U_SUBMIT;
  if (last) {
    if (prev) prev->next = u->next;
    else rk->in_head = u->next;
    if (rk->in_tail == u) rk->in_tail = prev;
    u->next = NULL;
    rk->inflight--;
    rk->head_since = br_now();
    unit_retire(p, u);
  }

  if (u->gave_up) {
    /* Its outcome was given already (timeout, cancel): drop this one. */
    if (!last) return;
    if (u->kind == U_SUBMIT) unit_finish(p, u, 0, NULL, NULL, false, d);
    else unit_free_chunk(u);
    return;
  }
  if (h.skipped) {
    int err = h.skipped == 1 ? BR_ECANCELED : BR_ENOMEM;
    if (u->kind == U_SUBMIT) unit_finish(p, u, err, NULL, NULL, false, d);
    else {
      chunk_fail(p, u, err, NULL, d);
      unit_free_chunk(u);
    }
    return;
  }
  size_t ni = h.nitems;
  /* Where this part's items start in the chunk: a part that does not
   * continue where the last one ended is malformed (its items are lost). */
  size_t base = u->kind == U_CHUNK ? u->parted : 0;
  if (u->kind == U_CHUNK && (h.first != base || ni > u->count - base)) ni = 0;
  size_t off = sizeof h, doff = off + ni * sizeof(w_item);
  int64_t sum_ns = 0;
  size_t k = 0;
  for (; k < ni; k++) {
    w_item it;
    if (off + sizeof it > n) break;
    memcpy(&it, buf + off, sizeof it);
    off += sizeof it;
    if (doff + it.len + it.msglen > n) break;
    sum_ns += it.ns;
    br_bytes *val = NULL;
    char *msg = NULL;
    int err = it.err;
    if (!err) {
      val = calloc(1, sizeof *val);
      if (!val || br_bytes_set(val, buf + doff, (size_t)it.len) < 0) {
        free(val);
        val = NULL;
        err = BR_ENOMEM;
      }
    } else if (it.msglen) {
      msg = strndup(buf + doff + it.len, it.msglen);
    }
    doff += it.len + it.msglen;
    if (u->kind == U_SUBMIT) {
      unit_finish(p, u, err, msg, val, false, d);
      u = NULL;
      break;
    }
    item_finish(p, u->b, u->first + base + k, err, msg, val, d);
  }
  if (u && u->kind == U_CHUNK) {
    mp_batch *b = u->b;
    /* Items the message did not cover (truncated): lost. */
    size_t end = last ? u->count : base + ni;
    for (; base + k < end; k++)
      item_finish(p, b, u->first + base + k, BR_EIO, strdup("truncated result message"), NULL, d);
    u->parted = end;
    u->parted_ns += sum_ns;
    if (!last) return;
    sum_ns = u->parted_ns;
    double per = u->count ? (double)sum_ns / (double)u->count : 0;
    b->avg_ns = b->avg_ns ? 0.7 * b->avg_ns + 0.3 * per : per;
    unit_free_chunk(u);
  } else if (u) {
    unit_finish(p, u, BR_EIO, strdup("truncated result message"), NULL, false, d);
  }
  p->avg_unit_ns = p->avg_unit_ns ? 0.5 * p->avg_unit_ns + 0.5 * (double)sum_ns : (double)sum_ns;
  /* depth: keep ~200 us of work queued per rank, 2 .. 16 units. */
  int depth = p->avg_unit_ns > 0 ? 1 + (int)(200000.0 / p->avg_unit_ns) : 2;
  p->depth = depth < 2 ? 2 : depth > 16 ? 16 : depth;
}

/* Timeouts, measured from when a unit became the head of its rank's FIFO
 * (the rank runs its units in order, so that is when it started). */
static void check_timeouts(br_mpipool *p, int64_t now, done_list *d) {
  for (int r = 1; r < p->size; r++) {
    mp_rank *rk = &p->ranks[r];
    mp_unit *u = rk->in_head;
    if (rk->state != R_LIVE || !u || u->gave_up || u->timeout_ns <= 0) continue;
    int64_t count = u->kind == U_CHUNK && u->count > 1 ? (int64_t)u->count : 1;
    /* (Saturating: a long item timeout times many items must not wrap.) */
    int64_t limit = u->timeout_ns > INT64_MAX / count ? INT64_MAX : u->timeout_ns * count;
    if (now - rk->head_since <= limit) continue;
    p->st.timeouts++;
    char *m = dupmsg("job '%s' on rank %d timed out after %.0f ms", jobname(u->jobidx), r,
                     (double)u->timeout_ns / 1e6);
    if (u->kind == U_SUBMIT) {
      unit_finish(p, u, BR_ETIMEDOUT, m, NULL, true, d);
    } else {
      u->gave_up = true;
      chunk_fail(p, u, BR_ETIMEDOUT, m, d);
      free(m);
    }
  }
}

static void check_dead(br_mpipool *p, int64_t now, done_list *d) {
  for (int r = 1; r < p->size; r++) {
    mp_rank *rk = &p->ranks[r];
    if (rk->state != R_LIVE) continue;
    char why[128];
    if (br__mpfd_dead(&rk->peer, rk->inflight > 0, now, p->o.dead_after_ns, why, sizeof why))
      rank_dead(p, r, why, 0, d);
  }
}

static bool all_stopped(br_mpipool *p) {
  for (int r = 1; r < p->size; r++)
    if (p->ranks[r].state != R_DEAD && !p->ranks[r].stop_sent) return false;
  return true;
}

static void *progress(void *arg) {
  br_mpipool *p = arg;
  sendq q = {0};
  int64_t backoff = 0, last_fd = br_now();
  bool stops_posted = false;
  char *buf = NULL;
  size_t bufcap = 0;
  mp_buf *work = calloc((size_t)p->size, sizeof *work); /* per rank, this round */
  for (;;) {
    bool active = false;
    done_list d = {0};
    int64_t now = br_now();

    /* 1. Hand out work and cancellations: one unit per rank with room per
     * pass, so a burst of submissions spreads over the ranks. */
    pthread_mutex_lock(&p->mu);
    for (int r = 1; r < p->size; r++) {
      mp_rank *rk = &p->ranks[r];
      if (rk->state != R_LIVE || !rk->ncancel) continue;
      mp_buf m = {0};
      if (mp_buf_put(&m, rk->cancels, rk->ncancel * sizeof *rk->cancels) == 0)
        sendq_add(&q, r, &m, T_CANCEL, p->comm, false);
      rk->ncancel = 0;
      active = true;
    }
    /* Level by level: every rank gets its first unit before any gets a
     * second, starting from a rotating rank. */
    for (int level = 0; level < p->depth && !p->broken_err; level++) {
      bool more = true;
      while (more) {
        more = false;
        for (int k = 0; k < p->size - 1; k++) {
          int r = 1 + (p->rr + k) % (p->size - 1);
          mp_rank *rk = &p->ranks[r];
          if (rk->state != R_LIVE || rk->inflight > level) continue;
          mp_unit *u = next_unit(p, rk, now);
          if (!u) continue;
          mp_buf *m = &work[r];
          uint32_t count = 0;
          if ((!m->len && mp_buf_put(m, &count, sizeof count) < 0) || pack_unit(m, u) < 0) {
            pend_push_front(p, u);
            continue;
          }
          memcpy(&count, m->p, sizeof count);
          count++;
          memcpy(m->p, &count, sizeof count);
          u->state = US_SENT;
          u->rank = r;
          if (!rk->in_head) rk->head_since = now;
          if (rk->in_tail) rk->in_tail->next = u;
          else rk->in_head = u;
          rk->in_tail = u;
          rk->inflight++;
          more = true;
        }
      }
    }
    p->rr++;
    for (int r = 1; r < p->size; r++) {
      if (!work[r].len) continue;
      p->st.messages++;
      sendq_add(&q, r, &work[r], T_WORK, p->comm, false);
      active = true;
    }
    /* Drop batches that have nothing left to cut and will get no more. */
    for (mp_batch **bp = &p->batches; *bp;) {
      mp_batch *b = *bp;
      if (b->next_cut == b->n_items && (b->kind == B_MAP || b->eof || b->abandoned)) {
        *bp = b->next;
        b->listed = false;
        batch_unref(b);
      } else {
        bp = &b->next;
      }
    }
    bool want_stop = p->closing != C_OPEN && p->outstanding == 0 && !stops_posted;
    if (want_stop) {
      for (int r = 1; r < p->size; r++) {
        mp_rank *rk = &p->ranks[r];
        if (rk->stop_sent) continue;
        /* Ranks that never reported still wait for STOP (or are dead). */
        if (rk->state == R_DEAD) continue;
        mp_buf m = {0};
        sendq_add(&q, r, &m, T_STOP, p->comm, true);
        rk->stop_sent = true;
      }
      stops_posted = true;
    }
    pthread_mutex_unlock(&p->mu);

    /* 2. Receive everything that arrived. */
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, p->comm, &flag, &st) != MPI_SUCCESS || !flag)
        break;
      int cnt = 0;
      MPI_Get_count(&st, MPI_BYTE, &cnt);
      if ((size_t)cnt + 1 > bufcap) {
        char *nb = realloc(buf, (size_t)cnt + 1);
        if (!nb) break;
        buf = nb;
        bufcap = (size_t)cnt + 1;
      }
      int r = st.MPI_SOURCE;
      MPI_Recv(buf, cnt, MPI_BYTE, r, st.MPI_TAG, p->comm, MPI_STATUS_IGNORE);
      active = true;
      pthread_mutex_lock(&p->mu);
      if (r > 0 && r < p->size) {
        mp_rank *rk = &p->ranks[r];
        br__mpfd_heard(&rk->peer, br_now());
        switch (st.MPI_TAG) {
        case T_HELLO: handle_hello(p, r, buf, (size_t)cnt, &d); break;
        case T_RESULT:
          if (rk->state == R_LIVE) handle_result(p, r, buf, (size_t)cnt, &d);
          break;
        case T_DIED: {
          w_died w;
          if ((size_t)cnt >= sizeof w) {
            memcpy(&w, buf, sizeof w);
            char why[160];
            br__mpfd_describe_died(&w, why, sizeof why);
            rank_dead(p, r, why, w.unit, &d);
          }
          break;
        }
        default: break;
        }
      }
      pthread_mutex_unlock(&p->mu);
      if (d.units || d.nwakes) done_flush(p, &d);
    }

    /* 3. Timeouts and failure detection. */
    now = br_now();
    pthread_mutex_lock(&p->mu);
    check_timeouts(p, now, &d);
    if (now - last_fd >= MP_FD_PERIOD_NS) {
      last_fd = now;
      check_dead(p, now, &d);
    }
    size_t inflight = 0;
    for (int r = 1; r < p->size; r++) inflight += (size_t)p->ranks[r].inflight;
    bool idle = !p->pend && p->outstanding == 0 && inflight == 0 && p->closing == C_OPEN;
    pthread_mutex_unlock(&p->mu);
    done_flush(p, &d);

    size_t sending = sendq_poll(p, &q);
    if (stops_posted) {
      pthread_mutex_lock(&p->mu);
      bool dead_pending = false;
      for (size_t i = 0; i < q.n; i++)
        if (q.v[i].is_stop) dead_pending = true;
      pthread_mutex_unlock(&p->mu);
      if (!dead_pending && all_stopped(p)) break;
    }
    (void)sending;

    /* 4. Sleep: for ever when there is nothing to do (a submit wakes us),
     * else an exponential back-off between probes, 1 us .. 1 ms. */
    if (active) {
      backoff = 0;
      continue;
    }
    /* While ranks hold work, the cap follows the unit time: a result
     * waits at most ~5 % of a unit for its rank to be refilled (long units
     * are refilled ahead anyway, next_unit's PREFETCH_NS). Probing more
     * often only takes CPU from the jobs on a small machine. */
    pthread_mutex_lock(&p->mu);
    int64_t cap = 1000000;
    if (inflight && p->avg_unit_ns > 0) {
      cap = (int64_t)(p->avg_unit_ns / 20);
      cap = cap < 20000 ? 20000 : cap > 1000000 ? 1000000 : cap;
    }
    backoff = backoff < 1000 ? 1000 : backoff * 2;
    if (backoff > cap) backoff = cap;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wait = idle && p->reported == p->size - 1 ? 1000000000 : backoff;
    ts.tv_nsec += wait;
    while (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    pthread_mutex_unlock(&p->mu);
  }
  free(buf);
  free(q.v);
  free(work);
  done_list d = {0};
  pthread_mutex_lock(&p->mu);
  p->finished = true;
  d.stopped = p->stopped;
  p->stopped = NULL;
  pthread_mutex_unlock(&p->mu);
  done_flush(p, &d);
  return NULL;
}

/* ---- batches */

static void batch_free(mp_batch *b) {
  if (b->kind != B_MAP) {
    /* (An iterator whose window could not be allocated has no arrays.) */
    for (size_t i = 0; b->copies && b->ready && b->ring && i < b->cap; i++) {
      free((void *)b->copies[i].data);
      if (b->ready[i]) br_results_free(&b->ring[i], 1);
    }
    for (size_t i = 0; i < b->dq_len; i++) br_results_free(&b->doneq[(b->dq_head + i) % b->cap].res, 1);
    free(b->copies);
    free(b->held);
    free(b->ring);
    free(b->ready);
    free(b->doneq);
  }
  if (b->wake) br_future_unref(b->wake);
  free(b);
}

static void batch_unref(mp_batch *b) {
  if (--b->refs == 0) batch_free(b);
}

/* ---- the public API */

/* The job's index in the sorted BR_JOB table (the same in every rank). */
static int job_index(const char *job) {
  size_t lo = 0, hi = br_job_count();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(job, br_job_at(mid)->name);
    if (c == 0) return (int)mid;
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return BR_ENOJOB;
}

/* Two jobs registered under one name would make indexes ambiguous. */
static int check_jobs(void) {
  size_t n = br_job_count();
  for (size_t i = 1; i < n; i++)
    if (strcmp(br_job_at(i - 1)->name, br_job_at(i)->name) == 0) {
      br__mplog(BR_LOG_ERROR, "mpi: two jobs are registered as \"%s\" (BR_JOB)",
                br_job_at(i)->name);
      return BR_EEXIST;
    }
  return 0;
}

/* br_future_cancel's hook: take the unit back if it has not been sent; if
 * a rank has it, ask that rank to drop it (or to cancel it if it runs). */
static bool cancel_op(mp_unit *u) {
  br_mpipool *p = *(br_mpipool **)(u + 1); /* submit units only */
  pthread_mutex_lock(&p->mu);
  bool taken = false;
  if (u->state == US_PENDING && !u->gave_up) {
    pend_remove(p, u);
    unit_retire(p, u);
    p->st.completed++;
    p->st.failed++;
    taken = true;
  } else if (u->state == US_SENT && !u->gave_up) {
    mp_rank *rk = &p->ranks[u->rank];
    /* The future is completed by br_future_cancel, not by the pool: the
     * hook drops HOOK, and RUN stays as the rank FIFO's reference until
     * the rank reports (unit_finish on a unit that gave up drops it). */
    u->gave_up = true;
    if (rk->ncancel == rk->capcancel) {
      size_t cap = rk->capcancel ? rk->capcancel * 2 : 8;
      uint64_t *v = realloc(rk->cancels, cap * sizeof *v);
      if (v) {
        rk->cancels = v;
        rk->capcancel = cap;
      }
    }
    if (rk->ncancel < rk->capcancel) rk->cancels[rk->ncancel++] = u->id;
    p->st.completed++;
    p->st.failed++;
    wake_thread(p);
  }
  pthread_mutex_unlock(&p->mu);
  return taken;
}

static void cancel_hook(void *arg) {
  mp_unit *u = arg;
  unit_drop(u, cancel_op(u) ? 2 : 1);
}

int br_mpipool_submit(br_mpipool *p, br_future **out, const char *job, const void *arg, size_t len,
                      const br_procpool_submit_opts *opts) {
  if (out) *out = NULL;
  if (!p || !out || !job || (len && !arg)) return BR_EINVAL;
  if (p->local) return br_procpool_submit(p->local, out, job, arg, len, opts);
  int idx = job_index(job);
  if (idx < 0) return idx;
  if (len > p->o.max_payload) return BR_E2BIG;
  /* The unit and, right after it, the pool pointer the cancel hook needs. */
  mp_unit *u = calloc(1, sizeof *u + sizeof(br_mpipool *));
  if (!u) return BR_ENOMEM;
  *(br_mpipool **)(u + 1) = p;
  u->kind = U_SUBMIT;
  u->jobidx = (uint32_t)idx;
  int64_t t = opts ? opts->timeout_ms : 0;
  u->timeout_ns = t < 0 ? 0 : t > 0 ? br__mp_ms_ns(t) : p->o.timeout_ns;
  u->len = len;
  u->arg = malloc(len ? len : 1);
  if (!u->arg) {
    free(u);
    return BR_ENOMEM;
  }
  if (len) memcpy(u->arg, arg, len);
  if (br_future_new(&u->fut) < 0) {
    free(u->arg);
    free(u);
    return BR_ENOMEM;
  }
  atomic_init(&u->refs, 2);
  pthread_mutex_lock(&p->mu);
  if (p->closing != C_OPEN) {
    pthread_mutex_unlock(&p->mu);
    br_future_unref(u->fut);
    free(u->arg);
    free(u);
    return BR_ESHUTDOWN;
  }
  /* Nobody else has the future yet: the hook cannot run before *out. */
  br_future *f = br_future_ref(u->fut);
  br_future_set_cancel_hook(f, cancel_hook, u);
  u->id = ++p->next_id;
  p->st.submitted++;
  p->outstanding++;
  done_list d = {0};
  if (p->broken_err || (p->alive == 0 && p->reported == p->size - 1)) {
    unit_retire(p, u);
    unit_finish(p, u, p->broken_err ? p->broken_err : BR_EWORKERDIED,
                p->broken_msg ? strdup(p->broken_msg) : strdup("no worker rank left"), NULL,
                false, &d);
  } else {
    pend_push_back(p, u);
    wake_thread(p);
  }
  pthread_mutex_unlock(&p->mu);
  done_flush(p, &d);
  *out = f;
  return 0;
}

static int64_t item_timeout(br_mpipool *p, int64_t ms) {
  return ms < 0 ? 0 : ms > 0 ? br__mp_ms_ns(ms) : p->o.timeout_ns;
}

/* Wait until cond(b) holds, waking on b->wake. Returns 0 or the wait's
 * error (the caller is cancelled / its scope expired). Called and returns
 * with mu held. */
static int batch_wait(br_mpipool *p, mp_batch *b, bool (*cond)(mp_batch *, void *), void *ud) {
  while (!cond(b, ud)) {
    br_future *f;
    if (br_future_new(&f) < 0) return BR_ENOMEM;
    b->wake = br_future_ref(f);
    pthread_mutex_unlock(&p->mu);
    int rc = br_await(f, NULL);
    pthread_mutex_lock(&p->mu);
    if (b->wake == f) {
      b->wake = NULL;
      br_future_unref(f);
    }
    br_future_unref(f);
    if (rc < 0) return rc;
  }
  return 0;
}

static bool map_done(mp_batch *b, void *ud) {
  (void)ud;
  return b->n_done == b->n_items;
}

/* The caller leaves a batch (cancelled, or an iterator freed): drop what
 * has not been cut, ask ranks to stop the chunks they hold (under mu). */
static void batch_abandon(br_mpipool *p, mp_batch *b) {
  b->abandoned = true;
  p->outstanding -= b->n_items - b->next_cut;
  b->next_cut = b->n_items;
  b->eof = true;
  for (mp_unit **pp = &p->pend; *pp;) {
    mp_unit *u = *pp;
    if (u->kind == U_CHUNK && u->b == b) {
      *pp = u->next;
      if (p->pend_tail == u) {
        p->pend_tail = NULL;
        for (mp_unit *x = p->pend; x; x = x->next) p->pend_tail = x;
      }
      unit_retire(p, u);
      unit_free_chunk(u);
    } else {
      pp = &u->next;
    }
  }
  for (int r = 1; r < p->size; r++) {
    mp_rank *rk = &p->ranks[r];
    for (mp_unit *u = rk->in_head; u; u = u->next) {
      if (u->kind != U_CHUNK || u->b != b) continue;
      if (rk->ncancel == rk->capcancel) {
        size_t cap = rk->capcancel ? rk->capcancel * 2 : 8;
        uint64_t *v = realloc(rk->cancels, cap * sizeof *v);
        if (!v) continue;
        rk->cancels = v;
        rk->capcancel = cap;
      }
      rk->cancels[rk->ncancel++] = u->id;
    }
  }
  wake_thread(p);
}

static int first_error(const br_result *out, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (out[i].err) return out[i].err;
  return 0;
}

int br_mpipool_map(br_mpipool *p, br_result *out, const char *job, const br_buf *items, size_t n,
                   const br_procpool_map_opts *opts) {
  if (!p || !job || (n && (!items || !out))) return BR_EINVAL;
  if (p->local) return br_procpool_map(p->local, out, job, items, n, opts);
  int idx = job_index(job);
  if (idx < 0) return idx;
  for (size_t i = 0; i < n; i++) {
    if (items[i].len > p->o.max_payload) return BR_E2BIG;
    if (items[i].len && !items[i].data) return BR_EINVAL;
  }
  memset(out, 0, n * sizeof *out);
  if (n == 0) return 0;
  mp_batch *b = calloc(1, sizeof *b);
  if (!b) return BR_ENOMEM;
  b->kind = B_MAP;
  b->refs = 2; /* the caller's and the batch list's */
  b->jobidx = (uint32_t)idx;
  b->timeout_ns = item_timeout(p, opts ? opts->timeout_ms : 0);
  b->chunk_fixed = opts ? opts->chunksize : 0;
  b->items = items;
  b->out = out;
  b->n_items = n;
  b->eof = true;
  pthread_mutex_lock(&p->mu);
  if (p->closing != C_OPEN) {
    pthread_mutex_unlock(&p->mu);
    free(b);
    return BR_ESHUTDOWN;
  }
  p->st.submitted += n;
  p->outstanding += n;
  b->listed = true;
  b->next = p->batches;
  p->batches = b;
  done_list d = {0};
  if (p->broken_err || (p->alive == 0 && p->reported == p->size - 1))
    fail_all_pending(p, p->broken_err ? p->broken_err : BR_EWORKERDIED,
                     p->broken_msg ? p->broken_msg : "no worker rank left", &d);
  wake_thread(p);
  int rc = batch_wait(p, b, map_done, NULL);
  if (rc < 0) {
    batch_abandon(p, b);
    for (size_t i = 0; i < n; i++) br_results_free(&out[i], 1);
  }
  batch_unref(b);
  pthread_mutex_unlock(&p->mu);
  done_flush(p, &d);
  return rc < 0 ? rc : first_error(out, n);
}

int br_mpipool_map_fixed(br_mpipool *p, void *out, size_t out_size, int *errors, const char *job,
                         const void *in, size_t in_size, size_t n,
                         const br_procpool_map_opts *opts) {
  if (!p || !job || (n && (!in || !out))) return BR_EINVAL;
  if (p->local)
    return br_procpool_map_fixed(p->local, out, out_size, errors, job, in, in_size, n, opts);
  br_buf *items = calloc(n ? n : 1, sizeof *items);
  br_result *res = calloc(n ? n : 1, sizeof *res);
  if (!items || !res) {
    free(items);
    free(res);
    return BR_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) items[i] = (br_buf){(const char *)in + i * in_size, in_size};
  int rc = br_mpipool_map(p, res, job, items, n, opts);
  if (rc >= 0 || first_error(res, n) == rc) {
    rc = 0;
    for (size_t i = 0; i < n; i++) {
      int e = res[i].err;
      br_bytes *v = res[i].value;
      if (!e && (!v || v->len != out_size)) e = BR_ERANGE;
      if (!e) memcpy((char *)out + i * out_size, v->data, out_size);
      if (errors) errors[i] = e;
      if (e && !rc) rc = e;
    }
  }
  br_results_free(res, n);
  free(res);
  free(items);
  return rc;
}

/* ---- iterators */

static int iter_new(br_mpipool *p, br_mpipool_iter **out, const char *job, br_procpool_item_fn next,
                    void *ud, const br_procpool_imap_opts *opts, int kind) {
  if (out) *out = NULL;
  if (!p || !out || !job || !next) return BR_EINVAL;
  br_mpipool_iter *it = calloc(1, sizeof *it);
  if (!it) return BR_ENOMEM;
  it->p = p;
  it->next = next;
  it->ud = ud;
  if (p->local) {
    int rc = kind == B_IMAP ? br_procpool_imap(p->local, &it->local, job, next, ud, opts)
                            : br_procpool_imap_unordered(p->local, &it->local, job, next, ud, opts);
    if (rc < 0) {
      free(it);
      return rc;
    }
    *out = it;
    return 0;
  }
  int idx = job_index(job);
  if (idx < 0) {
    free(it);
    return idx;
  }
  size_t chunk = opts && opts->chunksize ? opts->chunksize : 1;
  size_t per = 4 * (size_t)(p->size > 1 ? p->size - 1 : 1);
  /* A window that wrapped to 0 would be a ring of no slots; one too large
   * to allocate is BR_ENOMEM below, as in the local fallback. */
  size_t win = opts && opts->window ? opts->window : chunk > SIZE_MAX / per ? SIZE_MAX : per * chunk;
  /* A window whose arrays' sizes do not fit in a size_t is BR_ENOMEM here,
   * not in calloc (which fails too, but a sanitizer aborts on it). 64
   * bytes bounds every element of them. */
  _Static_assert(sizeof(br_result) <= 64 && sizeof(br_buf) <= 64 && sizeof(struct dq_ent) <= 64,
                 "an element of the window's arrays outgrew the bound");
  if (win > SIZE_MAX / 64) {
    free(it);
    return BR_ENOMEM;
  }
  mp_batch *b = calloc(1, sizeof *b);
  if (!b) {
    free(it);
    return BR_ENOMEM;
  }
  b->kind = kind;
  b->refs = 2;
  b->jobidx = (uint32_t)idx;
  b->timeout_ns = item_timeout(p, opts ? opts->timeout_ms : 0);
  b->chunk_fixed = opts ? opts->chunksize : 0;
  b->cap = win;
  b->copies = calloc(win, sizeof *b->copies);
  b->held = calloc(win, sizeof *b->held);
  b->ring = calloc(win, sizeof *b->ring);
  b->ready = calloc(win, sizeof *b->ready);
  b->doneq = calloc(win, sizeof *b->doneq);
  if (!b->copies || !b->held || !b->ring || !b->ready || !b->doneq) {
    batch_free(b);
    free(it);
    return BR_ENOMEM;
  }
  pthread_mutex_lock(&p->mu);
  if (p->closing != C_OPEN) {
    pthread_mutex_unlock(&p->mu);
    batch_free(b);
    free(it);
    return BR_ESHUTDOWN;
  }
  b->listed = true;
  b->next = p->batches;
  p->batches = b;
  pthread_mutex_unlock(&p->mu);
  it->b = b;
  *out = it;
  return 0;
}

int br_mpipool_imap(br_mpipool *p, br_mpipool_iter **out, const char *job,
                    br_procpool_item_fn next, void *ud, const br_procpool_imap_opts *opts) {
  return iter_new(p, out, job, next, ud, opts, B_IMAP);
}

int br_mpipool_imap_unordered(br_mpipool *p, br_mpipool_iter **out, const char *job,
                              br_procpool_item_fn next, void *ud,
                              const br_procpool_imap_opts *opts) {
  return iter_new(p, out, job, next, ud, opts, B_UNORD);
}

static bool iter_ready(mp_batch *b, void *ud) {
  br_mpipool_iter *it = ud;
  if (b->kind == B_IMAP) return it->next_read < b->n_items && b->ready[it->next_read % b->cap];
  return b->dq_len > 0;
}

int br_mpipool_iter_next(br_mpipool_iter *it, br_result *res, size_t *index) {
  if (!it || !res) return BR_EINVAL;
  if (it->local) return br_procpool_iter_next(it->local, res, index);
  memset(res, 0, sizeof *res);
  br_mpipool *p = it->p;
  mp_batch *b = it->b;
  /* Pull items until the window is full (the producer runs here, on the
   * consumer's thread, without the lock). */
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool room = !b->eof && b->n_items - it->consumed < b->cap && !it->prod_err &&
                !b->held[b->n_items % b->cap];
    size_t i = b->n_items;
    pthread_mutex_unlock(&p->mu);
    if (!room) break;
    br_buf item = {0};
    int r = it->next(it->ud, i, &item);
    pthread_mutex_lock(&p->mu);
    if (r <= 0) {
      b->eof = true;
      if (r < 0) it->prod_err = r;
      wake_thread(p);
      pthread_mutex_unlock(&p->mu);
      break;
    }
    void *copy = malloc(item.len ? item.len : 1);
    if (!copy || item.len > p->o.max_payload || p->closing != C_OPEN) {
      free(copy);
      int e = !copy ? BR_ENOMEM : item.len > p->o.max_payload ? BR_E2BIG : BR_ESHUTDOWN;
      b->eof = true;
      it->prod_err = e;
      pthread_mutex_unlock(&p->mu);
      break;
    }
    if (item.len) memcpy(copy, item.data, item.len);
    b->copies[i % b->cap] = (br_buf){copy, item.len};
    b->held[i % b->cap] = true;
    b->n_items++;
    p->outstanding++;
    p->st.submitted++;
    if (p->broken_err || (p->alive == 0 && p->reported == p->size - 1)) {
      done_list d = {0};
      fail_all_pending(p, p->broken_err ? p->broken_err : BR_EWORKERDIED,
                       p->broken_msg ? p->broken_msg : "no worker rank left", &d);
      pthread_mutex_unlock(&p->mu);
      done_flush(p, &d);
      continue;
    }
    wake_thread(p);
    pthread_mutex_unlock(&p->mu);
  }
  pthread_mutex_lock(&p->mu);
  if (it->consumed == b->n_items && b->eof) {
    int e = it->prod_err;
    pthread_mutex_unlock(&p->mu);
    return e < 0 ? e : BR_ECLOSED;
  }
  int rc = batch_wait(p, b, iter_ready, it);
  if (rc < 0) {
    pthread_mutex_unlock(&p->mu);
    return rc;
  }
  size_t idx;
  if (b->kind == B_IMAP) {
    idx = it->next_read++;
    *res = b->ring[idx % b->cap];
    memset(&b->ring[idx % b->cap], 0, sizeof *res);
    b->ready[idx % b->cap] = false;
  } else {
    struct dq_ent *e = &b->doneq[b->dq_head];
    idx = e->idx;
    *res = e->res;
    memset(e, 0, sizeof *e);
    b->dq_head = (b->dq_head + 1) % b->cap;
    b->dq_len--;
  }
  it->consumed++;
  pthread_mutex_unlock(&p->mu);
  if (index) *index = idx;
  return 0;
}

int br_mpipool_iter_free(br_mpipool_iter *it) {
  if (!it) return 0;
  if (it->local) {
    br_procpool_iter_free(it->local);
    free(it);
    return 0;
  }
  br_mpipool *p = it->p;
  pthread_mutex_lock(&p->mu);
  batch_abandon(p, it->b);
  batch_unref(it->b);
  pthread_mutex_unlock(&p->mu);
  free(it);
  return 0;
}

/* ---- shutdown, free, stats */

int br_mpipool_shutdown(br_mpipool *p, br_shutdown_mode mode) {
  if (!p) return BR_EINVAL;
  if (mode != BR_SHUTDOWN_DRAIN && mode != BR_SHUTDOWN_CANCEL) return BR_EINVAL;
  if (p->local) return br_procpool_shutdown(p->local, mode);
  if (p->thr_started && pthread_equal(pthread_self(), p->thr)) return BR_EDEADLK;
  done_list d = {0};
  pthread_mutex_lock(&p->mu);
  int want = mode == BR_SHUTDOWN_CANCEL ? C_CANCEL : C_DRAIN;
  if (p->closing < want) {
    p->closing = want;
    if (want == C_CANCEL) {
      fail_all_pending(p, BR_ECANCELED, "the pool was shut down (cancel)", &d);
      for (int r = 1; r < p->size; r++) {
        mp_rank *rk = &p->ranks[r];
        for (mp_unit *u = rk->in_head; u; u = u->next) {
          if (u->gave_up) continue;
          if (u->kind == U_SUBMIT) {
            unit_finish(p, u, BR_ECANCELED, strdup("the pool was shut down (cancel)"), NULL, true,
                        &d);
          } else {
            u->gave_up = true;
            chunk_fail(p, u, BR_ECANCELED, "the pool was shut down (cancel)", &d);
          }
          if (rk->ncancel == rk->capcancel) {
            size_t cap = rk->capcancel ? rk->capcancel * 2 : 8;
            uint64_t *v = realloc(rk->cancels, cap * sizeof *v);
            if (!v) continue;
            rk->cancels = v;
            rk->capcancel = cap;
          }
          rk->cancels[rk->ncancel++] = u->id;
        }
      }
    }
  }
  br_future *f = p->finished ? NULL : br_future_ref(p->stopped);
  wake_thread(p);
  pthread_mutex_unlock(&p->mu);
  done_flush(p, &d);
  if (!f) return 0;
  int rc = br_await(f, NULL);
  br_future_unref(f);
  return rc;
}

int br_mpipool_free(br_mpipool *p) {
  if (!p) return 0;
  if (p->local) {
    int rc = br_procpool_free(p->local);
    if (rc < 0) return rc;
    free(p);
    return 0;
  }
  if (p->thr_started && pthread_equal(pthread_self(), p->thr)) return BR_EDEADLK;
  int rc = br_mpipool_shutdown(p, BR_SHUTDOWN_DRAIN);
  if (rc < 0) {
    /* Interrupted wait: the shutdown goes on; wait for it regardless. */
    pthread_mutex_lock(&p->mu);
    br_future *f = p->finished ? NULL : br_future_ref(p->stopped);
    pthread_mutex_unlock(&p->mu);
    br_future_unref(f);
    /* pthread_join below blocks the thread until the shutdown is over. */
  }
  pthread_join(p->thr, NULL);
  MPI_Comm_free(&p->comm);
  for (int r = 0; r < p->size; r++) free(p->ranks[r].cancels);
  free(p->ranks);
  free(p->broken_msg);
  if (p->stopped) br_future_unref(p->stopped);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return 0;
}

int br_mpipool_get_stats(br_mpipool *p, br_mpipool_stats *out) {
  if (!p || !out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  if (p->local) {
    br_procpool_stats s;
    int rc = br_procpool_get_stats(p->local, &s);
    if (rc < 0) return rc;
    out->local_workers = s.workers;
    out->alive = s.alive;
    out->submitted = s.submitted;
    out->completed = s.completed;
    out->failed = s.failed;
    out->timeouts = s.timeouts;
    return 0;
  }
  pthread_mutex_lock(&p->mu);
  *out = p->st;
  out->ranks = p->size - 1;
  out->alive = p->alive;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int br_mpipool_size(const br_mpipool *p) {
  if (!p) return BR_EINVAL;
  return p->local ? p->local_workers : p->size - 1;
}

int br_mpipool_is_local(const br_mpipool *p) { return p && p->local ? 1 : 0; }

int br_mpipool_rank_info(br_mpipool *p, int rank, int *pid, char *host, size_t hostlen) {
  if (!p || p->local || rank < 1 || rank >= p->size) return BR_EINVAL;
  pthread_mutex_lock(&p->mu);
  mp_rank *rk = &p->ranks[rank];
  int rc = rk->peer.pid ? 0 : BR_EAGAIN;
  if (!rc) {
    if (pid) *pid = rk->peer.pid;
    if (host && hostlen) snprintf(host, hostlen, "%s", rk->peer.host);
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* ---- creation */

static int new_local(br_mpipool **out, const mp_opts *o) {
  br_mpipool *p = calloc(1, sizeof *p);
  if (!p) return BR_ENOMEM;
  br_procpool_opts po = {.initializer = o->initializer, .init_arg = o->init_arg,
                         .init_arg_len = o->init_arg_len, .timeout_ms = o->timeout_ns / 1000000,
                         .max_payload = o->max_payload};
  int rc = br_procpool_new(&p->local, o->fallback_workers, &po);
  if (rc < 0) {
    free(p);
    return rc;
  }
  p->local_workers = br_procpool_size(p->local);
  br__mplog(BR_LOG_INFO,
          "mpi: a single rank (not started by mpirun/mpiexec): jobs run on a local process pool "
          "of %d workers",
          p->local_workers);
  *out = p;
  return 0;
}

int br_mpipool_new(br_mpipool **out, int *argc, char ***argv, const br_mpipool_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  mp_opts o;
  int rc = br__mp_opts(&o, opts);
  if (rc < 0) return rc;
  rc = check_jobs();
  if (rc < 0) return rc;
  if (o.initializer && !br_job_find(o.initializer)) return BR_ENOJOB;
  rc = br__mpi_ensure_init(argc, argv);
  if (rc < 0) return rc;
  if (br__mpi_single()) return new_local(out, &o);
  if (br__mpi_thread_level() < MPI_THREAD_SERIALIZED) {
    br__mplog(BR_LOG_ERROR, "mpi: the MPI library gives less than MPI_THREAD_SERIALIZED");
    return BR_ENOSYS;
  }
  MPI_Comm comm;
  int r = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  if (r != MPI_SUCCESS) return br__mpi_err(r, "MPI_Comm_dup");
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (rank != 0) {
    rc = br__mpi_serve(comm, &o);
    MPI_Comm_free(&comm);
    return rc < 0 ? rc : BR_MPIPOOL_SERVED;
  }

  br_mpipool *p = calloc(1, sizeof *p);
  if (!p) rc = BR_ENOMEM;
  if (p) {
    p->o = o;
    p->comm = comm;
    p->size = size;
    p->depth = 2;
    br__mpi_hostname(p->host, sizeof p->host);
    p->ranks = calloc((size_t)size, sizeof *p->ranks);
    if (!p->ranks || br_future_new(&p->stopped) < 0) rc = BR_ENOMEM;
  }
  /* The Bcast is collective: do it whatever happened, so no rank waits. */
  struct {
    int32_t pid;
    char host[MP_HOST_MAX];
  } rootid = {.pid = (int32_t)getpid()};
  br__mpi_hostname(rootid.host, sizeof rootid.host);
  r = MPI_Bcast(&rootid, (int)sizeof rootid, MPI_BYTE, 0, comm);
  if (r != MPI_SUCCESS && rc == 0) rc = br__mpi_err(r, "MPI_Bcast");
  if (rc == 0) {
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thr, NULL, progress, p) != 0) {
      pthread_cond_destroy(&p->cv);
      pthread_mutex_destroy(&p->mu);
      rc = BR_ENOMEM;
    } else {
      p->thr_started = true;
    }
  }
  if (rc < 0) {
    if (p) {
      free(p->ranks);
      if (p->stopped) br_future_unref(p->stopped);
      free(p);
    }
    MPI_Comm_free(&comm);
    return rc;
  }
  *out = p;
  return 0;
}
