/* SPDX-License-Identifier: MIT */
/* braid — task handles that cannot lie.
 *
 * A br_task * handed to users is not a pointer: it encodes a slot of a
 * process-wide table and the generation of the task that owned the slot
 * when the handle was made:
 *
 *     bits 63..32  generation     bits 31..1  slot index     bit 0  1
 *
 * Bit 0 is set so a handle is never NULL and never looks like a real
 * (aligned) pointer. Every public call decodes the handle (br__task_get):
 * it is live only while the slot still holds the same generation. A task
 * struct keeps its slot for its whole life, including while it waits on
 * its loop's free list to be reused; the generation moves on when the
 * struct's memory is recycled (br__task_slot_retire) or freed
 * (br__task_slot_free), so a handle of an earlier task is BR_EHANDLE for
 * ever, never the new task, and never a read of freed memory.
 *
 * The table is a directory of chunks allocated on first use and never
 * freed (a slot costs 16 bytes; 4096 per chunk), so decoding needs no
 * lock: an acquire load of the chunk pointer, of the slot's generation and
 * of its task pointer. Slot indices are handed out by a counter; indices of
 * freed structs go back to a free list under a mutex (struct frees are
 * rare: a loop's free list is emptied only when the loop is freed).
 *
 * Threads: the generation and task pointer of a slot change only when its
 * struct is recycled or freed, which happens on the task's loop thread (or,
 * for a task that outlived its loop, on the thread dropping the last
 * reference to its future). A handle is used on the loop's thread (the API
 * says so); reading one concurrently from another thread is a race the
 * decoding survives (it never faults) but may answer either way.
 */
#include "core/core.h"

#include <pthread.h>
#include <stdlib.h>

#define CHUNK_SHIFT 12
#define CHUNK_SLOTS (1u << CHUNK_SHIFT)
#define MAX_CHUNKS (1u << 19) /* 2^31 slots: the 31 index bits of a handle */

_Static_assert(sizeof(uintptr_t) == 8, "handles need 64-bit pointers");

typedef struct slot {
  _Atomic(struct br__task *) task;
  atomic_uint gen;
  uint32_t next_free; /* index + 1 of the next free slot, 0: end (under free_lock) */
} slot;

static _Atomic(slot *) chunks[MAX_CHUNKS];
static atomic_uint next_index;
static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t free_head; /* index + 1, 0: empty (under free_lock) */
static atomic_bool have_free;

static slot *slot_at(uint32_t idx) {
  slot *c = atomic_load_explicit(&chunks[idx >> CHUNK_SHIFT], memory_order_acquire);
  return c ? &c[idx & (CHUNK_SLOTS - 1)] : NULL;
}

static slot *chunk_for(uint32_t idx) {
  _Atomic(slot *) *cp = &chunks[idx >> CHUNK_SHIFT];
  slot *c = atomic_load_explicit(cp, memory_order_acquire);
  if (!c) {
    slot *fresh = calloc(CHUNK_SLOTS, sizeof *fresh);
    if (!fresh) return NULL;
    for (uint32_t i = 0; i < CHUNK_SLOTS; i++) atomic_init(&fresh[i].gen, 1);
    if (atomic_compare_exchange_strong_explicit(cp, &c, fresh, memory_order_acq_rel,
                                                memory_order_acquire))
      c = fresh;
    else
      free(fresh); /* another thread installed it first */
  }
  return &c[idx & (CHUNK_SLOTS - 1)];
}

int br__task_slot_new(struct br__task *t) {
  uint32_t idx = UINT32_MAX;
  if (atomic_load_explicit(&have_free, memory_order_relaxed)) {
    pthread_mutex_lock(&free_lock);
    if (free_head) {
      idx = free_head - 1;
      free_head = slot_at(idx)->next_free;
      if (!free_head) atomic_store_explicit(&have_free, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&free_lock);
  }
  slot *s;
  if (idx == UINT32_MAX) {
    idx = atomic_fetch_add_explicit(&next_index, 1, memory_order_relaxed);
    if (idx >= MAX_CHUNKS * CHUNK_SLOTS) {
      atomic_fetch_sub_explicit(&next_index, 1, memory_order_relaxed);
      return BR_ELIMIT;
    }
    s = chunk_for(idx);
    if (!s) {
      /* The index is lost (its chunk could not be allocated); a later
       * caller of the same chunk retries the allocation. */
      return BR_ENOMEM;
    }
  } else {
    s = slot_at(idx);
  }
  t->slot = idx;
  t->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
  atomic_store_explicit(&s->task, t, memory_order_release);
  return 0;
}

/* Stale handles die: the generation moves on (0 is never used, so a
 * zeroed handle word can never match). */
static uint32_t bump(slot *s) {
  if (!s) return 0; /* cannot happen: the struct's slot exists */
  uint32_t g = atomic_load_explicit(&s->gen, memory_order_relaxed) + 1;
  if (g == 0) g = 1;
  atomic_store_explicit(&s->gen, g, memory_order_release);
  return g;
}

void br__task_slot_retire(struct br__task *t) {
  t->gen = bump(slot_at(t->slot));
}

void br__task_slot_free(struct br__task *t) {
  slot *s = slot_at(t->slot);
  if (!s) return;
  bump(s);
  atomic_store_explicit(&s->task, NULL, memory_order_release);
  pthread_mutex_lock(&free_lock);
  s->next_free = free_head;
  free_head = t->slot + 1;
  atomic_store_explicit(&have_free, true, memory_order_relaxed);
  pthread_mutex_unlock(&free_lock);
}

br_task *br__task_handle(const struct br__task *t) {
  if (!t) return NULL;
  uintptr_t v = ((uintptr_t)t->gen << 32) | ((uintptr_t)t->slot << 1) | 1u;
  return (br_task *)v;
}

struct br__task *br__task_get(br_task *h) {
  uintptr_t v = (uintptr_t)h;
  if (!(v & 1u)) return NULL;
  uint32_t idx = (uint32_t)(v >> 1) & 0x7fffffffu;
  uint32_t gen = (uint32_t)(v >> 32);
  if (idx >= atomic_load_explicit(&next_index, memory_order_relaxed)) return NULL;
  slot *s = slot_at(idx);
  if (!s || atomic_load_explicit(&s->gen, memory_order_acquire) != gen) return NULL;
  return atomic_load_explicit(&s->task, memory_order_acquire);
}
