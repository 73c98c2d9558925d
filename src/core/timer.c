/* SPDX-License-Identifier: MIT */
/* braid — the timer queue: a run and a 4-ary heap; see timer.h. */
#include "core/timer.h"

#include <errno.h>
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

static void run_unlink(br__timer_heap *h, br__timer *t) {
  if (t->prev) t->prev->next = t->next; else h->run_head = t->next;
  if (t->next) t->next->prev = t->prev; else h->run_tail = t->prev;
  t->prev = t->next = NULL;
  h->nrun--;
}

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

void br__timer_del(br__timer_heap *h, br__timer *t) {
  if (t->idx == BR__TIMER_IDLE) return;
  if (t->idx == BR__TIMER_RUN)
    run_unlink(h, t);
  else
    heap_del(h, t);
  t->idx = BR__TIMER_IDLE;
}

int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline) {
  br__timer_del(h, t);
  t->deadline = deadline;
  if (!h->run_tail || h->run_tail->deadline <= deadline) {
    t->prev = h->run_tail;
    t->next = NULL;
    if (h->run_tail) h->run_tail->next = t; else h->run_head = t;
    h->run_tail = t;
    h->nrun++;
    t->idx = BR__TIMER_RUN;
    return 0;
  }
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    if (cap >= BR__TIMER_RUN) return -ENOMEM;
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

br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now) {
  /* The heap's side is read from its array: its timer's struct is cold. */
  int64_t hk = h->n ? h->a[0].key : INT64_MAX;
  br__timer *r = h->run_head;
  if (r && r->deadline <= hk) {
    if (r->deadline > now) return NULL;
    run_unlink(h, r);
  } else {
    if (!h->n || hk > now) return NULL;
    r = h->a[0].t;
    heap_del(h, r);
  }
  r->idx = BR__TIMER_IDLE;
  return r;
}

void br__timer_heap_free(br__timer_heap *h) {
  free(h->a);
  h->a = NULL;
  h->n = h->cap = 0;
  h->run_head = h->run_tail = NULL;
  h->nrun = 0;
}
