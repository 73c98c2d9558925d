/* SPDX-License-Identifier: MIT */
/* braid — cancel scopes: deadlines and cancellation for a block of code.
 * The scope struct lives in the caller's frame; the task keeps a linked
 * stack of them, innermost first. Checkpoints (task.c) walk it. */
#include "core/core.h"

int br_scope_enter(br_scope *s, int64_t deadline, bool shield) {
  struct br__task *t = br__require_task();
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

void br_scope_cancel(br_scope *s) {
  if (!s || !s->br__private.task) return;
  s->br__private.state = 2;
  if (s->br__private.task != br__require_task()) br__scope_cancel_wake(s->br__private.task);
}
