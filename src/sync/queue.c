/* SPDX-License-Identifier: MIT */
/* braid — asyncio.Queue: a FIFO of pointers, bounded or not, with
 * task_done()/join() to wait until every item has been processed. */
#include <stdlib.h>

#include "sync/waitq.h"

struct br_queue {
  void **ring;
  size_t cap, head, len, maxsize, unfinished;
  br__wq getters, putters, joiners;
};

int br_queue_new(br_queue **out, size_t maxsize) {
  if (!out) return BR_EINVAL;
  struct br_queue *q = calloc(1, sizeof *q);
  *out = q;
  if (!q) return BR_ENOMEM;
  q->maxsize = maxsize;
  return 0;
}

static int grow(struct br_queue *q) {
  size_t cap = q->cap ? q->cap * 2 : 16;
  void **r = malloc(cap * sizeof *r);
  if (!r) return BR_ENOMEM;
  for (size_t i = 0; i < q->len; i++) r[i] = q->ring[(q->head + i) % q->cap];
  free(q->ring);
  q->ring = r;
  q->cap = cap;
  q->head = 0;
  return 0;
}

static int push(struct br_queue *q, void *item) {
  struct br__task *g = br__wq_pop_live(&q->getters);
  q->unfinished++;
  if (g) {
    *(void **)br__task_addr(g, g->wq_ptr) = item;
    br__wq_finish(g);
    return 0;
  }
  if (q->len == q->cap && grow(q)) {
    q->unfinished--;
    return BR_ENOMEM;
  }
  q->ring[(q->head + q->len) % q->cap] = item;
  q->len++;
  return 0;
}

static bool full(struct br_queue *q) { return q->maxsize && q->len >= q->maxsize; }

int br_queue_try_put(br_queue *q, void *item) {
  if (!q) return BR_EINVAL;
  if (full(q)) return BR_EFULL;
  return push(q, item);
}

int br_queue_put_until(br_queue *q, void *item, int64_t deadline) {
  if (!q) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  while (full(q)) {
    br__wait_on(self, BR_WAIT_CHAN, "queue put", q, NULL, -1);
    rc = br__wq_wait(&q->putters, self, NULL, deadline);
    if (rc < 0) return rc;
  }
  return push(q, item);
}

int br_queue_put(br_queue *q, void *item) { return br_queue_put_until(q, item, BR_NEVER); }

static void *pop(struct br_queue *q) {
  void *it = q->ring[q->head];
  q->head = (q->head + 1) % q->cap;
  q->len--;
  struct br__task *p = br__wq_pop_live(&q->putters);
  if (p) br__wq_finish(p); /* room for one more: the putter retries */
  return it;
}

int br_queue_try_get(br_queue *q, void **item) {
  if (!q || !item) return BR_EINVAL;
  if (!q->len) return BR_EAGAIN;
  *item = pop(q);
  return 0;
}

int br_queue_get_until(br_queue *q, void **item, int64_t deadline) {
  if (!q || !item) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  if (q->len) {
    *item = pop(q);
    return 0;
  }
  br__wait_on(self, BR_WAIT_CHAN, "queue get", q, NULL, -1);
  rc = br__wq_wait(&q->getters, self, item, deadline);
  return rc == 1 ? BR_ECANCELED : rc;
}

int br_queue_get(br_queue *q, void **item) { return br_queue_get_until(q, item, BR_NEVER); }

int br_queue_task_done(br_queue *q) {
  if (!q) return BR_EINVAL;
  if (!q->unfinished) return BR_EINVAL;
  if (--q->unfinished == 0) {
    struct br__task *t;
    while ((t = br__wq_pop_live(&q->joiners))) br__wq_finish(t);
  }
  return 0;
}

int br_queue_join(br_queue *q) {
  if (!q) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  while (q->unfinished) {
    br__wait_on(self, BR_WAIT_CHAN, "queue join", q, NULL, -1);
    int rc = br__wq_wait(&q->joiners, self, NULL, BR_NEVER);
    if (rc < 0) return rc;
  }
  return 0;
}

size_t br_queue_size(br_queue *q) { return q ? q->len : 0; }

int br_queue_free(br_queue *q) {
  if (!q) return 0;
  if (br__wq_peek_live(&q->getters) || br__wq_peek_live(&q->putters) || br__wq_peek_live(&q->joiners))
    return BR_EBUSY;
  free(q->ring);
  free(q);
  return 0;
}
