/* SPDX-License-Identifier: MIT */
/* deque.h — the Chase-Lev work-stealing deque (sys layer, header-only).
 *
 * One owner thread pushes and takes at the bottom; any number of thieves
 * steal at the top. The algorithm is Chase and Lev's ("Dynamic Circular
 * Work-Stealing Deque", SPAA 2005) with the C11 memory orders proved correct
 * by Lê, Pop, Cohen and Zappa Nardelli ("Correct and Efficient Work-Stealing
 * for Weak Memory Models", PPoPP 2013, figure 1):
 *
 *   push:  relaxed load bottom, acquire load top, relaxed store of the slot,
 *          release fence, relaxed store of bottom+1.
 *   take:  relaxed store of bottom-1, seq_cst fence, relaxed load of top; the
 *          last element is decided by a seq_cst CAS on top.
 *   steal: acquire load of top, seq_cst fence, acquire load of bottom, relaxed
 *          (consume in the paper; acquire here, as every compiler does) load
 *          of the array and the slot, seq_cst CAS on top.
 *
 * The two seq_cst fences form a Dekker pair: the owner's take and a thief's
 * steal cannot both miss each other's update of bottom / top, so the last
 * element goes to exactly one of them.
 *
 * ThreadSanitizer does not model stand-alone fences, so under TSan the same
 * algorithm is compiled with the fences folded into the accesses (release
 * store of bottom in push; seq_cst accesses of top and bottom in take and
 * steal). That variant is strictly stronger, hence also correct, and lets
 * TSan see every happens-before edge the fences provide.
 *
 * Elements are non-NULL pointers; NULL means "empty". The array grows (never
 * shrinks) when full; old arrays may still be read by a thief that loaded the
 * array pointer before the swap, so they are kept on a list and freed only
 * by br__deque_destroy(), when no thief can be running.
 *
 * Indices are signed 64-bit so that bottom-1 on an empty deque compares below
 * top without wrapping; they never overflow in practice (2^63 pushes).
 */
#ifndef BRAID_SYS_DEQUE_H
#define BRAID_SYS_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(BRAID_TSAN) || defined(__SANITIZE_THREAD__)
#define BR__DEQUE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BR__DEQUE_TSAN 1
#endif
#endif

#define BR__CACHELINE 64

typedef struct br__deque_array {
  struct br__deque_array *prev; /* older arrays, freed at destroy */
  int64_t mask;                 /* size - 1, size a power of two */
  _Atomic(void *) slot[];
} br__deque_array;

typedef struct br__deque {
  /* top is written by thieves (CAS) and bottom only by the owner: keep them
   * on different cache lines so an owner's push does not invalidate the line
   * thieves spin on, and vice versa. */
  _Alignas(BR__CACHELINE) _Atomic int64_t top;
  _Alignas(BR__CACHELINE) _Atomic int64_t bottom;
  _Atomic(br__deque_array *) array;
  char pad_[BR__CACHELINE - sizeof(_Atomic int64_t) - sizeof(void *)];
} br__deque;

/* Outcome of br__deque_steal besides an element. */
#define BR__DEQUE_ABORT ((void *)1)

static inline br__deque_array *br__deque_array_new(int64_t size) {
  br__deque_array *a = malloc(sizeof(*a) + (size_t)size * sizeof(a->slot[0]));
  if (!a) return NULL;
  a->prev = NULL;
  a->mask = size - 1;
  for (int64_t i = 0; i < size; i++) atomic_init(&a->slot[i], NULL);
  return a;
}

/* br__deque_init: an empty deque with room for `size` elements (a power of
 * two) before it first grows. Returns 0 or -ENOMEM. Not thread-safe. */
static inline int br__deque_init(br__deque *q, int64_t size) {
  br__deque_array *a = br__deque_array_new(size);
  if (!a) return -12; /* -ENOMEM without pulling <errno.h> into every user */
  atomic_init(&q->top, 0);
  atomic_init(&q->bottom, 0);
  atomic_init(&q->array, a);
  return 0;
}

/* br__deque_destroy: free every array. No thread may use q any more. */
static inline void br__deque_destroy(br__deque *q) {
  br__deque_array *a = atomic_load_explicit(&q->array, memory_order_relaxed);
  while (a) {
    br__deque_array *p = a->prev;
    free(a);
    a = p;
  }
  atomic_store_explicit(&q->array, NULL, memory_order_relaxed);
}

/* Owner only: copy the live range [t, b) into an array twice as large. The
 * new array is published with a release store so that a thief that reads it
 * (acquire) also sees the copied slots. Returns NULL on ENOMEM (the deque is
 * then unchanged). */
__attribute__((noinline, cold)) static br__deque_array *br__deque_grow(br__deque *q,
                                                                       br__deque_array *a,
                                                                       int64_t t, int64_t b) {
  br__deque_array *n = br__deque_array_new((a->mask + 1) * 2);
  if (!n) return NULL;
  for (int64_t i = t; i < b; i++)
    atomic_store_explicit(&n->slot[i & n->mask],
                          atomic_load_explicit(&a->slot[i & a->mask], memory_order_relaxed),
                          memory_order_relaxed);
  n->prev = a;
  atomic_store_explicit(&q->array, n, memory_order_release);
  return n;
}

/* br__deque_push: owner only. Returns 0, or -ENOMEM if the deque was full and
 * could not grow (x was not pushed). */
static inline int br__deque_push(br__deque *q, void *x) {
  int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
  int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
  br__deque_array *a = atomic_load_explicit(&q->array, memory_order_relaxed);
  if (__builtin_expect(b - t > a->mask, 0)) {
    a = br__deque_grow(q, a, t, b);
    if (!a) return -12;
  }
  atomic_store_explicit(&a->slot[b & a->mask], x, memory_order_relaxed);
#ifdef BR__DEQUE_TSAN
  atomic_store_explicit(&q->bottom, b + 1, memory_order_release);
#else
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
#endif
  return 0;
}

/* br__deque_take: owner only. The most recently pushed element, or NULL if
 * the deque is empty (everything was stolen). */
static inline void *br__deque_take(br__deque *q) {
  int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed) - 1;
  br__deque_array *a = atomic_load_explicit(&q->array, memory_order_relaxed);
#ifdef BR__DEQUE_TSAN
  atomic_store_explicit(&q->bottom, b, memory_order_seq_cst);
  int64_t t = atomic_load_explicit(&q->top, memory_order_seq_cst);
#else
  atomic_store_explicit(&q->bottom, b, memory_order_relaxed);
  atomic_thread_fence(memory_order_seq_cst);
  int64_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
#endif
  void *x;
  if (__builtin_expect(t <= b, 1)) {
    x = atomic_load_explicit(&a->slot[b & a->mask], memory_order_relaxed);
    if (t == b) {
      /* The last element: race the thieves for it. */
      if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1, memory_order_seq_cst,
                                                   memory_order_relaxed))
        x = NULL;
      atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
    }
  } else {
    x = NULL;
    atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
  }
  return x;
}

/* br__deque_steal: any thread. The oldest element, NULL if the deque looked
 * empty, or BR__DEQUE_ABORT if another thread won the race for it (worth
 * trying again). The element must not be dereferenced by the caller unless it
 * was returned here: a failed steal may have read a slot the owner reused. */
static inline void *br__deque_steal(br__deque *q) {
#ifdef BR__DEQUE_TSAN
  int64_t t = atomic_load_explicit(&q->top, memory_order_seq_cst);
  int64_t b = atomic_load_explicit(&q->bottom, memory_order_seq_cst);
#else
  int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
  atomic_thread_fence(memory_order_seq_cst);
  int64_t b = atomic_load_explicit(&q->bottom, memory_order_acquire);
#endif
  if (t >= b) return NULL;
  br__deque_array *a = atomic_load_explicit(&q->array, memory_order_acquire);
  void *x = atomic_load_explicit(&a->slot[t & a->mask], memory_order_relaxed);
  if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1, memory_order_seq_cst,
                                               memory_order_relaxed))
    return BR__DEQUE_ABORT;
  return x;
}

#endif
