/* SPDX-License-Identifier: MIT */
/* braid — channels with Go's semantics: a ring buffer of `cap` elements
 * (none for an unbuffered channel), senders and receivers queued FIFO.
 * A hand-off between a waiting peer and the caller copies the element
 * directly between their buffers (translated with br__task_addr, so compact
 * tasks work too). */
#include <stdlib.h>
#include <string.h>

#include "sync/waitq.h"

struct br_chan {
  size_t elem, cap, head, len;
  bool closed;
  char *buf;
  br__wq senders, receivers;
};

int br_chan_new(br_chan **out, size_t elem_size, size_t cap) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  if (!elem_size || elem_size > (1u << 30) || (cap && elem_size > SIZE_MAX / cap)) return BR_EINVAL;
  struct br_chan *c = calloc(1, sizeof *c);
  if (!c) return BR_ENOMEM;
  c->elem = elem_size;
  c->cap = cap;
  if (cap) {
    c->buf = malloc(elem_size * cap);
    if (!c->buf) {
      free(c);
      return BR_ENOMEM;
    }
  }
  *out = c;
  return 0;
}

/* Elements are usually a word or two: copy those inline, not via libc. */
static inline void elem_copy(void *dst, const void *src, size_t n) {
  switch (n) {
  case 4: __builtin_memcpy(dst, src, 4); break;
  case 8: __builtin_memcpy(dst, src, 8); break;
  case 16: __builtin_memcpy(dst, src, 16); break;
  default: memcpy(dst, src, n);
  }
}

static inline char *slot(struct br_chan *c, size_t i) { return c->buf + ((c->head + i) % c->cap) * c->elem; }

static int try_send(struct br_chan *c, const void *elem) {
  if (c->closed) return BR_ECLOSED;
  struct br__task *r = br__wq_pop_live(&c->receivers);
  if (r) {
    elem_copy(br__task_addr(r, r->wq_ptr), elem, c->elem);
    br__wq_finish(r);
    return 0;
  }
  if (c->len < c->cap) {
    elem_copy(slot(c, c->len), elem, c->elem);
    c->len++;
    return 0;
  }
  return BR_EAGAIN;
}

static int try_recv(struct br_chan *c, void *elem) {
  if (c->len) {
    elem_copy(elem, slot(c, 0), c->elem);
    c->head = (c->head + 1) % c->cap;
    c->len--;
    struct br__task *s = br__wq_pop_live(&c->senders);
    if (s) {
      elem_copy(slot(c, c->len), br__task_addr(s, s->wq_ptr), c->elem);
      c->len++;
      br__wq_finish(s);
    }
    return 0;
  }
  struct br__task *s = br__wq_pop_live(&c->senders);
  if (s) {
    elem_copy(elem, br__task_addr(s, s->wq_ptr), c->elem);
    br__wq_finish(s);
    return 0;
  }
  return c->closed ? BR_ECLOSED : BR_EAGAIN;
}

int br_chan_try_send(br_chan *c, const void *elem) {
  if (!c || !elem) return BR_EINVAL;
  return try_send(c, elem);
}

int br_chan_try_recv(br_chan *c, void *elem) {
  if (!c || !elem) return BR_EINVAL;
  return try_recv(c, elem);
}

int br_chan_send_until(br_chan *c, const void *elem, int64_t deadline) {
  if (!c || !elem) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  rc = try_send(c, elem);
  if (rc != BR_EAGAIN) return rc;
  br__wait_on(self, BR_WAIT_CHAN, "channel send", c, NULL, -1);
  rc = br__wq_wait(&c->senders, self, (void *)elem, deadline);
  if (rc == 1) return BR_ECLOSED;
  return rc;
}

int br_chan_recv_until(br_chan *c, void *elem, int64_t deadline) {
  if (!c || !elem) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  rc = try_recv(c, elem);
  if (rc != BR_EAGAIN) return rc;
  br__wait_on(self, BR_WAIT_CHAN, "channel receive", c, NULL, -1);
  rc = br__wq_wait(&c->receivers, self, elem, deadline);
  if (rc == 1) return BR_ECLOSED;
  return rc;
}

int br_chan_send(br_chan *c, const void *elem) { return br_chan_send_until(c, elem, BR_NEVER); }
int br_chan_recv(br_chan *c, void *elem) { return br_chan_recv_until(c, elem, BR_NEVER); }

int br_chan_close(br_chan *c) {
  if (!c) return BR_EINVAL;
  if (c->closed) return BR_ECLOSED;
  c->closed = true;
  struct br__task *t;
  while ((t = br__wq_pop_live(&c->receivers))) br__wake(t, 0);
  while ((t = br__wq_pop_live(&c->senders))) br__wake(t, 0);
  return 0;
}

int br_chan_free(br_chan *c) {
  if (!c) return 0;
  if (br__wq_peek_live(&c->senders) || br__wq_peek_live(&c->receivers)) return BR_EBUSY;
  free(c->buf);
  free(c);
  return 0;
}
