/* SPDX-License-Identifier: MIT */
/* braid — mutex, semaphore and event for tasks of one loop. Hand-off is
 * FIFO: a released mutex or semaphore unit goes straight to the longest
 * waiter, so no task starves. */
#include <stdlib.h>

#include "sync/waitq.h"

struct br_mutex {
  struct br__task *owner;
  /* The owner's task id: a task that ended holding the mutex leaves it
   * locked (as asyncio's Lock), and the struct it leaves is recycled for
   * later tasks, which the pointer alone would take for the owner (a lock
   * refused with BR_EDEADLK, an unlock allowed). */
  uint64_t owner_id;
  br_task *owner_handle; /* to tell, without touching the struct, whether it lives */
  br__wq waiters;
};

static bool owned_by(const struct br_mutex *m, const struct br__task *t) {
  return m->owner == t && m->owner_id == t->id;
}

static void take(struct br_mutex *m, struct br__task *t) {
  m->owner = t;
  m->owner_id = t ? t->id : 0;
  m->owner_handle = t ? br__task_handle(t) : NULL;
}

struct br_sem {
  unsigned value;
  br__wq waiters;
};

struct br_event {
  bool set;
  br__wq waiters;
};

int br_mutex_new(br_mutex **out) {
  if (!out) return BR_EINVAL;
  *out = calloc(1, sizeof(struct br_mutex));
  return *out ? 0 : BR_ENOMEM;
}

int br_mutex_lock_until(br_mutex *m, int64_t deadline) {
  if (!m) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  if (owned_by(m, self)) return BR_EDEADLK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  if (!m->owner) {
    take(m, self);
    return 0;
  }
  br__wait_on(self, BR_WAIT_LOCK, "mutex", m, m->owner, -1);
  rc = br__wq_wait(&m->waiters, self, NULL, deadline);
  return rc == 1 ? BR_ECANCELED : rc;
}

int br_mutex_lock(br_mutex *m) { return br_mutex_lock_until(m, BR_NEVER); }

int br_mutex_trylock(br_mutex *m) {
  if (!m) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  if (m->owner) return BR_EBUSY;
  take(m, self);
  return 0;
}

int br_mutex_unlock(br_mutex *m) {
  if (!m) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self || !m->owner || !owned_by(m, self)) return BR_EPERM;
  struct br__task *next = br__wq_pop_live(&m->waiters);
  take(m, next);
  if (next) br__wq_finish(next);
  return 0;
}

int br_mutex_free(br_mutex *m) {
  if (!m) return 0;
  /* Locked by a task that has ended and been joined (its handle is stale):
   * nobody can unlock it any more, and freeing it is the only way out. */
  if ((m->owner && br__task_get(m->owner_handle)) || br__wq_peek_live(&m->waiters))
    return BR_EBUSY;
  free(m);
  return 0;
}

int br_sem_new(br_sem **out, unsigned value) {
  if (!out) return BR_EINVAL;
  struct br_sem *s = calloc(1, sizeof *s);
  *out = s;
  if (!s) return BR_ENOMEM;
  s->value = value;
  return 0;
}

int br_sem_acquire_until(br_sem *s, int64_t deadline) {
  if (!s) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  if (s->value && !br__wq_peek_live(&s->waiters)) {
    s->value--;
    return 0;
  }
  br__wait_on(self, BR_WAIT_LOCK, "semaphore", s, NULL, -1);
  rc = br__wq_wait(&s->waiters, self, NULL, deadline);
  return rc == 1 ? BR_ECANCELED : rc;
}

int br_sem_acquire(br_sem *s) { return br_sem_acquire_until(s, BR_NEVER); }

int br_sem_release(br_sem *s) {
  if (!s) return BR_EINVAL;
  struct br__task *next = br__wq_pop_live(&s->waiters);
  if (next) {
    br__wq_finish(next);
    return 0;
  }
  if (s->value == UINT32_MAX) return BR_EOVERFLOW;
  s->value++;
  return 0;
}

int br_sem_free(br_sem *s) {
  if (!s) return 0;
  if (br__wq_peek_live(&s->waiters)) return BR_EBUSY;
  free(s);
  return 0;
}

int br_event_new(br_event **out) {
  if (!out) return BR_EINVAL;
  *out = calloc(1, sizeof(struct br_event));
  return *out ? 0 : BR_ENOMEM;
}

int br_event_wait_until(br_event *e, int64_t deadline) {
  if (!e) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  if (e->set) return 0;
  int rc = br__checkpoint(self);
  if (rc) return rc;
  br__wait_on(self, BR_WAIT_LOCK, "event", e, NULL, -1);
  rc = br__wq_wait(&e->waiters, self, NULL, deadline);
  return rc == 1 ? (e->set ? 0 : BR_ECANCELED) : rc;
}

int br_event_wait(br_event *e) { return br_event_wait_until(e, BR_NEVER); }

void br_event_set(br_event *e) {
  if (!e || e->set) return;
  e->set = true;
  struct br__task *t;
  while ((t = br__wq_pop_live(&e->waiters))) br__wq_finish(t);
}

void br_event_clear(br_event *e) {
  if (e) e->set = false;
}

bool br_event_is_set(br_event *e) { return e && e->set; }

int br_event_free(br_event *e) {
  if (!e) return 0;
  if (br__wq_peek_live(&e->waiters)) return BR_EBUSY;
  free(e);
  return 0;
}
