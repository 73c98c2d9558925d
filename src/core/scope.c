/* SPDX-License-Identifier: MIT */
/* braid — cancel scopes: deadlines and cancellation for a block of code.
 * The scope struct lives in the caller's frame; the task keeps a linked
 * stack of them, innermost first. Checkpoints (task.c) walk it. */
#include "core/core.h"

/* Whether s is one of t's own scopes (t is running: no translation). */
static bool scope_of(struct br__task *t, const br_scope *s) {
  for (struct br_scope *p = t ? t->scope : NULL; p; p = p->br__private.parent)
    if (p == s) return true;
  return false;
}

int br_scope_enter(br_scope *s, int64_t deadline, bool shield) {
  struct br__task *t = br__require_task();
  /* Entering a scope that is already open would make it its own ancestor:
   * every checkpoint would walk that cycle for ever. The walk compares
   * addresses only (s is usually a fresh, uninitialised local, not to be
   * read) over the task's open scopes, rarely more than a few. */
  if (t && s && scope_of(t, s)) return BR_EBUSY;
  /* A refused enter leaves s marked as not entered, so that a br_scope_exit
   * on it says BR_EINVAL instead of following whatever the local held. */
  if (s) s->br__private.task = NULL;
  if (!t) return BR_ENOTTASK;
  if (!s) return BR_EINVAL;
  s->br__private.parent = t->scope;
  s->br__private.task = t;
  s->br__private.deadline = deadline;
  s->br__private.state = 0;
  s->br__private.shield = shield;
  t->scope = s;
  return 0;
}

int br_scope_exit(br_scope *s) {
  /* Only the owner may exit its scope: the scope stack is the owner's. */
  if (!s || !s->br__private.task || s->br__private.task != br__require_task() ||
      s->br__private.task->scope != s)
    return BR_EINVAL;
  struct br__task *t = s->br__private.task;
  t->scope = s->br__private.parent;
  s->br__private.task = NULL;
  if (s->br__private.state == 2) return BR_ECANCELED;
  if (s->br__private.state == 1 || (s->br__private.deadline != BR_NEVER && br_now() >= s->br__private.deadline)) return BR_ETIMEDOUT;
  return 0;
}

int br_scope_cancel(br_scope *s) {
  if (!s) return BR_EINVAL;
  struct br_loop *L = br__tls_loop;
  struct br__task *self = br__require_task();
  /* A scope on the shared stack is a compact task's local. Unless the
   * caller is that task, the address holds whichever compact task's frames
   * were put there last: reading or writing it would reach into another
   * task's stack. Decided before s is read. */
  if (L && L->shared) {
    const char *a = (const char *)s, *lo = L->shared->lo;
    if (a >= lo && a < lo + L->shared->size && !(self && self->compact && scope_of(self, s)))
      return BR_EPERM;
  }
  struct br__task *owner = s->br__private.task;
  if (!owner || !br__task_valid(owner)) return BR_EINVAL; /* not entered, or exited */
  /* The owner's scope stack and run queue belong to its loop's thread: a
   * wake-up from anywhere else would race with that loop. */
  if (L ? owner->loop != L : !owner->loop || !pthread_equal(owner->loop->thread, pthread_self()))
    return BR_EPERM;
  s->br__private.state = 2;
  if (owner != self) br__scope_cancel_wake(owner);
  return 0;
}
