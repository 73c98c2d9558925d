/* SPDX-License-Identifier: MIT */
/* braid — the loop's timer queue (core).
 *
 * Two structures answer "which deadline is next":
 *
 * - A run: a list of timers in deadline order, for timers that arrive in
 *   that order. Most do: a thousand tasks sleeping the same second, a
 *   connection's idle timeout re-armed on every read, a request's deadline
 *   are each later than every timer set before them with the same length.
 *   Adding at the end, taking from the front and unlinking from the middle
 *   cost O(1) and touch no other timer but the neighbours.
 * - A 4-ary min-heap for every timer that would break the run's order. The
 *   key sits next to the node pointer in the heap array, so a sift compares
 *   keys within one cache line instead of chasing pointers; each node
 *   remembers its index, so cancelling is O(log n).
 *
 * Measured on 100,000 sleepers of one length woken together: with the heap
 * alone the wake-ups took 21-22 ms, with the run 15-17 ms (each pop from the
 * heap sifts through 8 levels, every level a write to another sleeper's cold
 * struct). The run costs each timer two pointers (16 bytes a task).
 *
 * Loop thread only.
 */
#ifndef BRAID_CORE_TIMER_H
#define BRAID_CORE_TIMER_H

#include <stddef.h>
#include <stdint.h>

typedef struct br__timer {
  int64_t deadline;
  uint32_t idx; /* heap position; BR__TIMER_RUN on the run; BR__TIMER_IDLE when not queued */
  struct br__timer *prev, *next; /* on the run */
} br__timer;

typedef struct br__heap_ent {
  int64_t key;
  br__timer *t;
} br__heap_ent;

typedef struct br__timer_heap {
  br__heap_ent *a;
  size_t n, cap;
  br__timer *run_head, *run_tail;
  size_t nrun;
} br__timer_heap;

#define BR__TIMER_IDLE UINT32_MAX
#define BR__TIMER_RUN (UINT32_MAX - 1)

/* Queue t (re-queue it if it is queued) to fire at deadline. 0, or -ENOMEM
 * (t is then not queued). */
int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline);
/* Take t out of the queue; nothing if it is not queued. */
void br__timer_del(br__timer_heap *h, br__timer *t);
/* The earliest deadline, or INT64_MAX if empty. */
static inline int64_t br__timer_next(const br__timer_heap *h) {
  int64_t k = h->n ? h->a[0].key : INT64_MAX;
  return h->run_head && h->run_head->deadline < k ? h->run_head->deadline : k;
}
/* How many timers are queued. */
static inline size_t br__timer_count(const br__timer_heap *h) { return h->n + h->nrun; }
/* Remove and return the earliest timer if its deadline <= now, else NULL. */
br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now);
void br__timer_heap_free(br__timer_heap *h);

#endif
