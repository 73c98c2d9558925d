/* SPDX-License-Identifier: MIT */
/* braid — 4-ary timer heap; see timer.h. */
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

int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline) {
  if (t->idx != BR__TIMER_IDLE) br__timer_del(h, t);
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    if (cap >= UINT32_MAX) return -ENOMEM;
    br__heap_ent *a = realloc(h->a, cap * sizeof *a);
    if (!a) return -ENOMEM;
    h->a = a;
    h->cap = cap;
  }
  t->deadline = deadline;
  h->a[h->n] = (br__heap_ent){deadline, t};
  t->idx = (uint32_t)h->n;
  h->n++;
  sift_up(h, h->n - 1);
  return 0;
}

void br__timer_del(br__timer_heap *h, br__timer *t) {
  size_t i = t->idx;
  if (i == BR__TIMER_IDLE) return;
  t->idx = BR__TIMER_IDLE;
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

br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now) {
  if (!h->n || h->a[0].key > now) return NULL;
  br__timer *t = h->a[0].t;
  br__timer_del(h, t);
  return t;
}

void br__timer_heap_free(br__timer_heap *h) {
  free(h->a);
  h->a = NULL;
  h->n = h->cap = 0;
}
