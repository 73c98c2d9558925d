/* SPDX-License-Identifier: MIT */
/* braid — FIFO queues of parked tasks for the sync primitives.
 *
 * A waiter links itself (the link lives in its task struct), parks, and on
 * resuming unlinks itself if still linked. A waker pops the first waiter that
 * is still really parked — one already claimed by a timeout or a cancel is
 * skipped (it will unlink itself) — sets wq_done to say "your operation was
 * completed by me", and wakes it. All of this runs on the loop thread.
 */
#ifndef BRAID_SYNC_WAITQ_H
#define BRAID_SYNC_WAITQ_H

#include "core/core.h"
#include "core/trace.h"

typedef struct br__wq {
  struct br__task *head, *tail;
  size_t n;
} br__wq;

static inline void br__wq_push(br__wq *q, struct br__task *t, void *ptr) {
  t->wq_ptr = ptr;
  t->wq_done = false;
  t->wq_linked = true;
  t->wq_next = NULL;
  t->wq_prev = q->tail;
  if (q->tail) q->tail->wq_next = t; else q->head = t;
  q->tail = t;
  q->n++;
}

static inline void br__wq_remove(br__wq *q, struct br__task *t) {
  if (!t->wq_linked) return;
  if (t->wq_prev) t->wq_prev->wq_next = t->wq_next; else q->head = t->wq_next;
  if (t->wq_next) t->wq_next->wq_prev = t->wq_prev; else q->tail = t->wq_prev;
  t->wq_next = t->wq_prev = NULL;
  t->wq_linked = false;
  q->n--;
}

/* First waiter still parked (not yet claimed by a timeout/cancel), unlinked;
 * or NULL. Claimed ones are unlinked and skipped. */
static inline struct br__task *br__wq_pop_live(br__wq *q) {
  while (q->head) {
    struct br__task *t = q->head;
    br__wq_remove(q, t);
    if (atomic_load_explicit(&t->parked, memory_order_acquire) == 1) return t;
  }
  return NULL;
}

static inline struct br__task *br__wq_peek_live(br__wq *q) {
  while (q->head) {
    struct br__task *t = q->head;
    if (atomic_load_explicit(&t->parked, memory_order_acquire) == 1) return t;
    br__wq_remove(q, t);
  }
  return NULL;
}

/* Complete t's operation and wake it. */
static inline void br__wq_finish(struct br__task *t) {
  t->wq_done = true;
  br__wake(t, 0);
}

/* Park the calling task on q; returns 0 if a waker completed the operation
 * (wq_done), else the park's error (timeout, cancel) or 1 for "woken without
 * completion" (e.g. close). */
static inline int br__wq_wait(br__wq *q, struct br__task *self, void *ptr, int64_t deadline) {
  br__park_begin(self);
  br__wq_push(q, self, ptr);
  int rc = br__park_end(self, deadline, true);
  br__wq_remove(q, self);
  if (self->wq_done) return 0;
  return rc ? rc : 1;
}

#endif
