/* SPDX-License-Identifier: MIT */
/* braid — the timer heap (core).
 *
 * A 4-ary min-heap keyed by deadline. The key sits next to the node pointer
 * in the heap array, so a sift compares keys within one cache line instead of
 * chasing pointers: a million pending timers cost 16 MB and ~10 levels.
 * Each node remembers its index, so cancelling is O(log n).
 */
#ifndef BRAID_CORE_TIMER_H
#define BRAID_CORE_TIMER_H

#include <stddef.h>
#include <stdint.h>

typedef struct br__timer {
  int64_t deadline;
  uint32_t idx; /* position in the heap, UINT32_MAX when not queued */
} br__timer;

typedef struct br__heap_ent {
  int64_t key;
  br__timer *t;
} br__heap_ent;

typedef struct br__timer_heap {
  br__heap_ent *a;
  size_t n, cap;
} br__timer_heap;

#define BR__TIMER_IDLE UINT32_MAX

int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline);
void br__timer_del(br__timer_heap *h, br__timer *t);
/* The earliest deadline, or INT64_MAX if empty. */
static inline int64_t br__timer_next(const br__timer_heap *h) { return h->n ? h->a[0].key : INT64_MAX; }
/* Remove and return the earliest timer if its deadline <= now, else NULL. */
br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now);
void br__timer_heap_free(br__timer_heap *h);

#endif
