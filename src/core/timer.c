/* SPDX-License-Identifier: MIT */
/* braid — the timer queue: a run and a 4-ary heap; see timer.h. */
#include "core/timer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

static inline void put(br__timer_heap *h, size_t i, br__heap_ent e) {
  h->a[i] = e;
  e.t->idx = (uint32_t)i;
}

static void sift_up(br__timer_heap *h, size_t i) {
  br__heap_ent e = h->a[i];
  while (i > 0) {
    size_t p = (i - 1) / 4;
    if (h->a[p].key <= e.key) break;
    put(h, i, h->a[p]);
    i = p;
  }
  put(h, i, e);
}

static void sift_down(br__timer_heap *h, size_t i) {
  br__heap_ent e = h->a[i];
  for (;;) {
    size_t c = 4 * i + 1;
    if (c >= h->n) break;
    size_t best = c, end = c + 4 < h->n ? c + 4 : h->n;
    for (size_t k = c + 1; k < end; k++)
      if (h->a[k].key < h->a[best].key) best = k;
    if (h->a[best].key >= e.key) break;
    put(h, i, h->a[best]);
    i = best;
  }
  put(h, i, e);
}

/* --- the run ------------------------------------------------------------ */

enum { RUN_AHEAD = 4 };

static inline br__heap_ent *run_at(br__timer_heap *h, uint32_t seq) {
  return &h->r[seq & (h->rcap - 1)];
}

/* Step the front past holes, so that it is live whenever the run is not
 * empty (br__timer_next reads it as it is). Each hole is passed once. */
static void run_trim(br__timer_heap *h) {
  while (h->rh != h->rt && !run_at(h, h->rh)->t) h->rh++;
  if (h->rh == h->rt) h->rh = h->rt = 0;
}

static int heap_add(br__timer_heap *h, br__timer *t, int64_t deadline);

/* Room for one more at the end. When at least half of the array is holes
 * (cancelled timers between the front and the end: an idle timeout set
 * again on every read leaves one each time, and a long timer at the front
 * keeps them from being passed), the front timer moves to the heap and the
 * front steps past it and the holes behind it: one O(log n) move per add
 * at most, where packing the array would stall the loop for every live
 * timer at once (~0.1-0.5 ms at 10,000 connections). Otherwise the array
 * doubles (the sequence numbers stay: each entry moves to seq & the new
 * mask). */
static int run_make_room(br__timer_heap *h) {
  uint32_t used = h->rt - h->rh;
  if (used < h->rcap) return 0;
  if (h->rcap && h->nrun <= h->rcap / 2) {
    br__heap_ent *front = run_at(h, h->rh);
    br__timer *t = front->t; /* the front is live */
    if (heap_add(h, t, front->key) == 0) {
      t->where = BR__TIMER_HEAP;
      front->t = NULL;
      h->nrun--;
      run_trim(h); /* steps past it: at least one slot free */
      return 0;
    }
    /* No memory for the heap: try to grow instead. */
  }
  uint32_t ncap = h->rcap ? h->rcap * 2 : 64;
  if (ncap == 0 || ncap > (UINT32_MAX >> 1) + 1u) return -ENOMEM;
  br__heap_ent *na = realloc(h->r, (size_t)ncap * sizeof *na);
  if (!na) return -ENOMEM;
  /* An entry stays where it is or moves to the new upper half, which
   * nothing occupies yet. */
  for (uint32_t q = h->rh; q != h->rt; q++)
    if (q & h->rcap) na[q & (ncap - 1)] = na[q & (h->rcap - 1)];
  h->r = na;
  h->rcap = ncap;
  return 0;
}

/* Whether a timer due at `deadline` may go at the run's end: no earlier
 * than the last one there (a hole keeps its key, so the order holds). */
static inline bool run_takes(br__timer_heap *h, int64_t deadline) {
  return h->rh == h->rt || run_at(h, h->rt - 1)->key <= deadline;
}

static void run_del(br__timer_heap *h, br__timer *t) {
  run_at(h, t->idx)->t = NULL;
  h->nrun--;
  if (t->idx == h->rh) {
    run_trim(h);
  } else if (t->idx == h->rt - 1) {
    /* The end steps back past holes: a timer earlier than the cancelled
     * last one may then join the run instead of the heap. */
    while (!run_at(h, h->rt - 1)->t) h->rt--;
  }
}

/* --- the heap ----------------------------------------------------------- */

static void heap_del(br__timer_heap *h, br__timer *t) {
  size_t i = t->idx;
  h->n--;
  if (i == h->n) return;
  br__heap_ent last = h->a[h->n];
  h->a[i] = last;
  last.t->idx = (uint32_t)i;
  if (i > 0 && h->a[(i - 1) / 4].key > last.key)
    sift_up(h, i);
  else
    sift_down(h, i);
}

static int heap_add(br__timer_heap *h, br__timer *t, int64_t deadline) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    if (cap >= UINT32_MAX) return -ENOMEM;
    br__heap_ent *a = realloc(h->a, cap * sizeof *a);
    if (!a) return -ENOMEM;
    h->a = a;
    h->cap = cap;
  }
  h->a[h->n] = (br__heap_ent){deadline, t};
  t->idx = (uint32_t)h->n;
  h->n++;
  sift_up(h, h->n - 1);
  return 0;
}

/* --- both --------------------------------------------------------------- */

void br__timer_del(br__timer_heap *h, br__timer *t) {
  if (t->where == BR__TIMER_IDLE) return;
  if (t->where == BR__TIMER_RUN)
    run_del(h, t);
  else
    heap_del(h, t);
  t->where = BR__TIMER_IDLE;
}

int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline) {
  br__timer_del(h, t);
  t->deadline = deadline;
  if (run_takes(h, deadline) && run_make_room(h) == 0) {
    *run_at(h, h->rt) = (br__heap_ent){deadline, t};
    t->idx = h->rt++;
    h->nrun++;
    t->where = BR__TIMER_RUN;
    return 0;
  }
  int rc = heap_add(h, t, deadline);
  if (rc == 0) t->where = BR__TIMER_HEAP;
  return rc;
}

br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now) {
  int64_t hk = h->n ? h->a[0].key : INT64_MAX;
  if (h->rh != h->rt) {
    br__heap_ent *e = run_at(h, h->rh);
    if (e->key <= hk) {
      if (e->key > now) return NULL;
      br__timer *t = e->t;
      /* A crowd of timers due together wakes their tasks one after another:
       * start fetching the struct of one a few places ahead. */
      if (h->rt - h->rh > RUN_AHEAD) {
        br__timer *ahead = run_at(h, h->rh + RUN_AHEAD)->t;
        if (ahead) __builtin_prefetch(ahead, 1);
      }
      run_del(h, t);
      t->where = BR__TIMER_IDLE;
      return t;
    }
  }
  if (!h->n || hk > now) return NULL;
  br__timer *t = h->a[0].t;
  heap_del(h, t);
  t->where = BR__TIMER_IDLE;
  return t;
}

void br__timer_heap_free(br__timer_heap *h) {
  free(h->a);
  free(h->r);
  *h = (br__timer_heap){0};
}
