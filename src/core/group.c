/* SPDX-License-Identifier: MIT */
/* braid — task groups: structured concurrency (asyncio.TaskGroup, trio
 * nurseries). The group holds its children's handles; the first real
 * failure cancels the rest, and the waiter gets that failure. */
#include "core/core.h"
#include "core/trace.h"

#include <stdlib.h>
#include <string.h>

struct br_group {
  struct br_loop *loop;
  struct br__task *children; /* linked through group_next/group_prev */
  size_t live;
  int first_err;
  char *first_msg;
  bool failed, closed;
  /* Every child was told to stop (a failure, br_group_cancel, a cancelled
   * waiter, br_group_free): a child spawned from now on starts cancelled,
   * as in a cancelled trio nursery. Without it, a child that spawns into
   * the group while it unwinds would leave a sibling that nobody cancels,
   * and a cancelled br_group_wait would wait for it for ever. */
  bool cancelled;
  struct br__task *waiter;
};

int br_group_new(br_group **out) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  struct br_group *g = calloc(1, sizeof *g);
  if (!g) return BR_ENOMEM;
  g->loop = self->loop;
  *out = g;
  return 0;
}

static void cancel_all(struct br_group *g) {
  g->cancelled = true;
  for (struct br__task *c = g->children; c; c = c->group_next)
    if (c->state != BR__DONE) br__task_cancel(c);
}

int br_group_spawn(br_group *g, br_task_fn fn, void *arg, const br_spawn_opts *opts) {
  if (!g) return BR_EINVAL;
  if (g->closed || g->failed) return BR_ESHUTDOWN;
  br_spawn_opts o = opts ? *opts : (br_spawn_opts){0};
  o.flags &= ~(unsigned)BR_SPAWN_DETACHED;
  struct br__task *t;
  int rc = br__loop_spawn(g->loop, &t, fn, arg, &o);
  if (rc) return rc;
  if (g->cancelled) br__task_cancel(t);
  t->group = g;
  t->group_prev = NULL;
  t->group_next = g->children;
  if (g->children) g->children->group_prev = t;
  g->children = t;
  g->live++;
  return 0;
}

void br__group_child_done(struct br__task *t) {
  struct br_group *g = t->group;
  if (!g) return;
  g->live--;
  int err = t->fail_code;
  if (err && err != BR_ECANCELED && !g->failed) {
    g->failed = true;
    g->first_err = err;
    g->first_msg = br_strdupf("%s", t->fail_msg ? t->fail_msg : br_strerror(err));
    cancel_all(g);
  }
  /* The group needs nothing more from a finished child (its failure, if
   * any, is copied above): give its handle back now, so a long-lived group
   * (an accept loop) does not keep every child it ever ran. The child's own
   * reference keeps its memory until the scheduler retires it. */
  if (t->group_prev) t->group_prev->group_next = t->group_next; else g->children = t->group_next;
  if (t->group_next) t->group_next->group_prev = t->group_prev;
  t->group = NULL;
  t->group_next = t->group_prev = NULL;
  br__task_release(t);
  if (!g->live && g->waiter) br__wake(g->waiter, 0);
}

static void wait_children(struct br_group *g, struct br__task *self, bool cancellable, int *rc) {
  while (g->live) {
    g->waiter = self;
    br__wait_on(self, BR_WAIT_GROUP, "group", g, g->children, -1);
    br__park_begin(self);
    int r = br__park_end(self, BR_NEVER, cancellable);
    g->waiter = NULL;
    if (r && cancellable) {
      *rc = r;
      cancel_all(g);
      cancellable = false;
    }
  }
}

static void release_children(struct br_group *g) {
  struct br__task *c = g->children;
  g->children = NULL;
  while (c) {
    struct br__task *n = c->group_next;
    c->group = NULL;
    br__task_release(c);
    c = n;
  }
}

int br_group_wait(br_group *g) {
  if (!g) return BR_EINVAL;
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  if (self->group == g) return BR_EDEADLK;
  /* The children wake their waiter from g's loop: a task of another loop
   * would be woken from the wrong thread. */
  if (self->loop != g->loop) return BR_EPERM;
  /* One waiter at a time: the group wakes a single task, and a second one
   * would take the first one's place and leave it parked for ever. */
  if (g->waiter) return BR_EBUSY;
  int rc = 0;
  wait_children(g, self, true, &rc);
  g->closed = true;
  release_children(g);
  if (rc) return rc;
  return g->failed ? g->first_err : 0;
}

void br_group_cancel(br_group *g) {
  if (g) cancel_all(g);
}

const char *br_group_message(br_group *g) {
  return g && g->first_msg ? g->first_msg : "";
}

int br_group_free(br_group *g) {
  if (!g) return 0;
  struct br__task *self = br__require_task();
  if (self && self->group == g) return BR_EDEADLK; /* it would wait for itself */
  /* The children run on g's loop: only that loop's thread can wait for them. */
  if (br__tls_loop != g->loop && !(self == NULL && br__tls_loop == NULL &&
                                   pthread_equal(g->loop->thread, pthread_self())))
    return BR_EPERM;
  /* Another task is in br_group_wait: it reads g when it wakes. */
  if (g->waiter && g->waiter != self) return BR_EBUSY;
  if (g->live) {
    cancel_all(g);
    int rc = 0;
    if (self) {
      wait_children(g, self, false, &rc);
    } else {
      /* The children list holds only live children: each one unlinks
       * itself as it finishes (br__group_child_done), so walking the list
       * across a run of the loop would follow a finished child's cleared
       * link and stop early. Run until the first child left is done, again
       * and again. The reference keeps the child's struct from being
       * recycled into a task spawned meanwhile, whose future run_until
       * would then wait for instead. */
      while (g->live && g->children) {
        struct br__task *c = g->children;
        br_future_ref(&c->fut);
        br__run_until(g->loop, c);
        br_future_unref(&c->fut);
      }
    }
  }
  release_children(g);
  free(g->first_msg);
  free(g);
  return 0;
}
