/* braid — cancel scopes: deadlines and cancellation for a block of code.
 * The scope struct lives in the caller's frame; the task keeps a linked
 * stack of them, innermost first. Checkpoints (task.c) walk it. */
#include "core/core.h"

int br_scope_enter(br_scope *s, int64_t deadline, bool shield) {
  struct br_task *t = br__require_task();
  if (!t) return BR_ENOTTASK;
  if (!s) return BR_EINVAL;
  s->parent = t->scope;
  s->task = t;
  s->deadline = deadline;
  s->state = 0;
  s->shield = shield;
  t->scope = s;
  return 0;
}

int br_scope_exit(br_scope *s) {
  if (!s || !s->task || s->task->scope != s) return BR_EINVAL;
  struct br_task *t = s->task;
  t->scope = s->parent;
  s->task = NULL;
  if (s->state == 2) return BR_ECANCELED;
  if (s->state == 1 || (s->deadline != BR_NEVER && br_now() >= s->deadline)) return BR_ETIMEDOUT;
  return 0;
}

void br_scope_cancel(br_scope *s) {
  if (!s || !s->task) return;
  s->state = 2;
  if (s->task != br__require_task()) br__scope_cancel_wake(s->task);
}
