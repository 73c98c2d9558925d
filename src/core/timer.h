/* SPDX-License-Identifier: MIT */
/* braid — the loop's timer queue (core).
 *
 * Two structures answer "which deadline is next":
 *
 * - The run: an array used as a ring, of timers in deadline order, for
 *   timers that arrive in that order. Most do: a thousand tasks sleeping the
 *   same second, a connection's idle timeout set again on every read, a
 *   request's deadline are each later than every timer set before them with
 *   the same length. Adding at the end and taking from the front are O(1)
 *   and read the array in order; cancelling leaves a hole (O(1)) that the
 *   front skips; when holes fill half the array, the front timer moves
 *   to the heap so that the front can pass them (one move per add).
 * - A 4-ary min-heap for every timer that would break the run's order. The
 *   key sits next to the node pointer in the heap array, so a sift compares
 *   keys within one cache line instead of chasing pointers; each node
 *   remembers its index, so cancelling is O(log n).
 *
 * Measured on 100,000 sleepers of one length woken together: with the heap
 * alone the wake-ups took 21-22 ms (each pop sifts through 8 levels, every
 * level a write to another sleeper's cold struct), with the run 16 ms. A
 * linked list for the run was as fast but cost every task 16 bytes; the
 * array grows with realloc (which moves pages instead of copying: a
 * malloc-and-copy array made the 100,000 sleepers' first runs twice as
 * slow, 22 ms against 11).
 *
 * Loop thread only.
 */
#ifndef BRAID_CORE_TIMER_H
#define BRAID_CORE_TIMER_H

#include <stddef.h>
#include <stdint.h>

typedef struct br__timer {
  int64_t deadline;
  /* heap: its position; run: its sequence number (position = seq & mask) */
  uint32_t idx;
  uint8_t where; /* BR__TIMER_IDLE (not queued), _HEAP or _RUN */
} br__timer;

enum { BR__TIMER_IDLE = 0, BR__TIMER_HEAP = 1, BR__TIMER_RUN = 2 };

typedef struct br__heap_ent {
  int64_t key;
  br__timer *t; /* NULL: a cancelled timer's hole (run only) */
} br__heap_ent;

typedef struct br__timer_heap {
  br__heap_ent *a; /* the heap */
  size_t n, cap;
  br__heap_ent *r; /* the run: sequence numbers [rh, rt), live ones nrun */
  uint32_t rh, rt, rcap; /* rcap: 0 or a power of two */
  size_t nrun;
} br__timer_heap;

/* Queue t (re-queue it if it is queued) to fire at deadline. 0, or -ENOMEM
 * (t is then not queued). */
int br__timer_add(br__timer_heap *h, br__timer *t, int64_t deadline);
/* Take t out of the queue; nothing if it is not queued. */
void br__timer_del(br__timer_heap *h, br__timer *t);
/* The earliest deadline, or INT64_MAX if empty. (The run's front is never a
 * hole.) */
static inline int64_t br__timer_next(const br__timer_heap *h) {
  int64_t k = h->n ? h->a[0].key : INT64_MAX;
  if (h->rh != h->rt) {
    int64_t rk = h->r[h->rh & (h->rcap - 1)].key;
    if (rk < k) k = rk;
  }
  return k;
}
/* How many timers are queued. */
static inline size_t br__timer_count(const br__timer_heap *h) { return h->n + h->nrun; }
/* Remove and return the earliest timer if its deadline <= now, else NULL. */
br__timer *br__timer_pop_expired(br__timer_heap *h, int64_t now);
void br__timer_heap_free(br__timer_heap *h);

#endif
