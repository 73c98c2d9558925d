/* SPDX-License-Identifier: MIT */
/* braid — futures: single assignment, thread-safe, awaitable from tasks and
 * waitable from plain threads.
 *
 * A future's lock is a small spinlock: it is held only to link or unlink a
 * waiter or to swap the waiter list out at completion, never across a
 * switch or a system call. Completion publishes the outcome with a release
 * store of `done`, so readers that see done == 1 (acquire) may read the
 * outcome without the lock.
 */
#include "core/core.h"
#include "core/trace.h"

#include "core/job.h"
#include "sys/futex.h"
#include "sys/spin.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void br__future_lock(struct br_future *f) {
  for (;;) {
    if (!atomic_exchange_explicit(&f->lock, 1, memory_order_acquire)) return;
    /* Test-and-test-and-set with back-off: pause first, then give the CPU
     * away (the holder may be preempted on a shared core). */
    br__backoff b = BR__BACKOFF_INIT;
    while (atomic_load_explicit(&f->lock, memory_order_relaxed)) br__backoff_step(&b);
  }
}

void br__future_unlock(struct br_future *f) {
  atomic_store_explicit(&f->lock, 0, memory_order_release);
}

void br__waiter_link(struct br_future *f, br__waiter *w) {
  w->prev = NULL;
  w->next = f->waiters;
  if (f->waiters) f->waiters->prev = w;
  f->waiters = w;
  w->linked = true;
}

void br__waiter_unlink(struct br_future *f, br__waiter *w) {
  if (w->prev) w->prev->next = w->next; else f->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  w->linked = false;
}

void br__future_init(struct br_future *f, struct br__task *owner) {
  atomic_store_explicit(&f->lock, 0, memory_order_relaxed);
  atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
  atomic_store_explicit(&f->done, 0, memory_order_relaxed);
  f->value = NULL;
  f->err = 0;
  f->msg = NULL;
  f->waiters = NULL;
  f->cancel_hook = NULL;
  f->cancel_arg = NULL;
  f->value_free = NULL;
  f->owner_task = owner;
  f->origin = 0;
}

int br_future_new(br_future **out) {
  if (!out) return BR_EINVAL;
  struct br_future *f = malloc(sizeof *f);
  *out = f;
  if (!f) return BR_ENOMEM;
  br__future_init(f, NULL);
  return 0;
}

br_future *br_future_ref(br_future *f) {
  if (f) atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
  return f;
}

void br_future_unref(br_future *f) {
  if (!f) return;
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
  if (f->value_free && f->value) f->value_free(f->value);
  if (f->owner_task) {
    br__task_future_gone(f->owner_task);
    return;
  }
  free(f->msg);
  free(f);
}

/* Completion. The waiters are taken out under the lock and woken after it
 * is released (a wake-up may take a mutex and write to an eventfd; nobody
 * should spin on the future meanwhile). A task or thread waiter lives in its
 * waiter's memory, so each one taken out is marked `waking` under the lock
 * and cleared (release) after its wake-up, as the completer's last access;
 * a waiter that finds itself unlinked waits for `waking` to clear before it
 * returns (br__waiter_settle). Callbacks are heap records the completer
 * frees. */
static int complete(struct br_future *f, void *value, void (*value_free)(void *), int err,
                    char *msg, bool take_hook) {
  br__future_lock(f);
  if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
    br__future_unlock(f);
    free(msg);
    return BR_EALREADY;
  }
  f->value = value;
  f->err = err;
  f->msg = msg;
  if (value_free) f->value_free = value_free;
  /* The cancel hook belongs to the completion by br_future_cancel, taken in
   * the same critical section: two racing cancels cannot both miss it. */
  br_callback_fn hook = NULL;
  void *hook_arg = NULL;
  if (take_hook) {
    hook = f->cancel_hook;
    hook_arg = f->cancel_arg;
    f->cancel_hook = NULL;
  }
  br__waiter *ws = f->waiters;
  f->waiters = NULL;
  for (br__waiter *w = ws; w; w = w->next) {
    w->linked = false;
    if (!w->cb) atomic_store_explicit(&w->waking, 1, memory_order_relaxed);
  }
  atomic_store_explicit(&f->done, 1, memory_order_release);
  br__future_unlock(f);
  while (ws) {
    br__waiter *w = ws;
    ws = w->next;
    if (w->cb) {
      w->cb(w->cb_arg);
      free(w);
    } else if (w->task) {
      br__wake_any_thread(w->task, 0);
      atomic_store_explicit(&w->waking, 0, memory_order_release);
    } else {
      atomic_int *word = w->futex;
      atomic_store_explicit(word, 1, memory_order_release);
      br__futex_wake_all(word);
      atomic_store_explicit(&w->waking, 0, memory_order_release);
    }
  }
  if (hook) hook(hook_arg);
  return 0;
}

int br__future_complete_ex(struct br_future *f, void *value, void (*value_free)(void *), int err,
                           char *msg) {
  return complete(f, value, value_free, err, msg, false);
}

int br__future_complete(struct br_future *f, void *value, int err, char *msg) {
  return br__future_complete_ex(f, value, NULL, err, msg);
}

/* Called by a waiter after it took the lock, unlinked itself if still
 * linked, and released the lock: wait until a completer that took it out is
 * done with it. The window is a wake-up call long. */
void br__waiter_settle(br__waiter *w) {
  br__backoff b = BR__BACKOFF_INIT;
  while (atomic_load_explicit(&w->waking, memory_order_acquire)) br__backoff_step(&b);
}

int br_future_set(br_future *f, void *value) {
  if (!f) return BR_EINVAL;
  return br__future_complete(f, value, 0, NULL);
}

int br_future_set_owned(br_future *f, void *value, void (*value_free)(void *)) {
  if (!f) return BR_EINVAL;
  /* BR_EALREADY: the caller still owns value. */
  return br__future_complete_ex(f, value, value_free, 0, NULL);
}

void *br_future_take(br_future *f) {
  if (!br_future_done(f)) return NULL;
  br__future_lock(f);
  void *v = f->value;
  f->value = NULL;
  f->value_free = NULL;
  br__future_unlock(f);
  return v;
}

int br_future_fail(br_future *f, int code, const char *fmt, ...) {
  if (!f) return BR_EINVAL;
  if (code >= 0) code = BR_EFAILED;
  char *m = NULL;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    m = br__vfmt(fmt, ap);
    va_end(ap);
  }
  return br__future_complete(f, NULL, code, m);
}

void br_future_set_cancel_hook(br_future *f, br_callback_fn hook, void *arg) {
  if (!f) return;
  br__future_lock(f);
  f->cancel_hook = hook;
  f->cancel_arg = arg;
  br__future_unlock(f);
}

int br_future_cancel(br_future *f) {
  if (!f) return BR_EINVAL;
  if (f->owner_task) {
    /* A task's future is completed by the task: cancel the task. */
    struct br__task *t = f->owner_task;
    if (atomic_load_explicit(&f->done, memory_order_acquire)) return BR_EALREADY;
    /* Another thread may be freeing the task's loop, which clears t->loop
     * (atomically, under the future's lock) as it makes the task an orphan:
     * read it once, atomically; only its own loop's thread finds it equal. */
    struct br_loop *L = __atomic_load_n(&t->loop, __ATOMIC_ACQUIRE);
    if (!L) return BR_EALREADY; /* an orphan: its loop is gone */
    if (br__tls_loop != L) return BR_EPERM;
    br__task_cancel(t);
    return 0;
  }
  if (br_future_done(f)) return BR_EALREADY;
  return complete(f, NULL, NULL, BR_ECANCELED, br_strdupf("cancelled"), true);
}

bool br_future_done(br_future *f) {
  return f && atomic_load_explicit(&f->done, memory_order_acquire);
}

void *br_future_value(br_future *f) { return br_future_done(f) ? f->value : NULL; }
int br_future_error(br_future *f) { return br_future_done(f) ? f->err : BR_EAGAIN; }
const char *br_future_message(br_future *f) {
  if (!br_future_done(f)) return "";
  return f->msg ? f->msg : "";
}

int br_future_on_done(br_future *f, br_callback_fn cb, void *arg) {
  if (!f || !cb) return BR_EINVAL;
  br__waiter *w = calloc(1, sizeof *w);
  if (!w) return BR_ENOMEM;
  w->cb = cb;
  w->cb_arg = arg;
  br__future_lock(f);
  if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
    br__future_unlock(f);
    free(w);
    cb(arg);
    return 0;
  }
  br__waiter_link(f, w);
  br__future_unlock(f);
  return 0;
}

/* A plain thread blocks on a futex word until completion or the deadline. */
static int thread_wait(struct br_future *f, int64_t deadline) {
  atomic_int word = 0;
  br__waiter w = {.futex = &word};
  br__future_lock(f);
  if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
    br__future_unlock(f);
    return 0;
  }
  br__waiter_link(f, &w);
  br__future_unlock(f);
  int rc = br__futex_wait_until(&word, deadline);
  br__future_lock(f);
  if (w.linked) br__waiter_unlink(f, &w);
  br__future_unlock(f);
  br__waiter_settle(&w); /* `word` and `w` live on this stack */
  if (rc && atomic_load_explicit(&f->done, memory_order_acquire)) rc = 0;
  return rc;
}

/* A task parks until completion, the deadline or cancellation. */
static int task_wait(struct br__task *self, struct br_future *f, int64_t deadline) {
  if (f->owner_task == self) return BR_EDEADLK;
  while (!atomic_load_explicit(&f->done, memory_order_acquire)) {
    br__waiter *w = &self->waitnode;
    br__future_lock(f);
    if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
      br__future_unlock(f);
      break;
    }
    w->task = self;
    w->futex = NULL;
    w->cb = NULL;
    br__wait_on(self, f->owner_task ? BR_WAIT_JOIN : f->origin ? (br_wait_kind)f->origin : BR_WAIT_FUTURE,
                f->owner_task ? "await task" : "await", f, f->owner_task, -1);
    br__park_begin_remote(self);
    br__waiter_link(f, w);
    br__future_unlock(f);
    int rc = br__park_end(self, deadline, true);
    br__future_lock(f);
    if (w->linked) br__waiter_unlink(f, w);
    br__future_unlock(f);
    br__waiter_settle(w);
    if (rc && !atomic_load_explicit(&f->done, memory_order_acquire)) return rc;
  }
  return 0;
}

/* How the caller waits: a task parks; a thread running an executor's job
 * waits the executor's way (job.h: a CPU-pool worker helps); any other
 * thread blocks. */
int br__future_wait(struct br_future *f, int64_t deadline) {
  struct br__task *self = br__require_task();
  if (self) return task_wait(self, f, deadline);
  if (br__tls_loop) return BR_ENOTTASK; /* a loop callback must not block */
  br__job_ctx *ctx = br__job_current();
  if (ctx && ctx->ops && ctx->ops->wait) return ctx->ops->wait(ctx, f, deadline);
  return thread_wait(f, deadline);
}

int br_await_until(br_future *f, void **value, int64_t deadline) {
  if (!f) return BR_EINVAL;
  int rc = br__future_wait(f, deadline);
  if (rc) {
    if (value) *value = NULL;
    return rc;
  }
  if (value) *value = f->value;
  return f->err;
}

int br_await(br_future *f, void **value) { return br_await_until(f, value, BR_NEVER); }

int br_future_wait_for(br_future *f, void **value, int64_t timeout_ms) {
  if (!f) return BR_EINVAL;
  int rc = br__future_wait(f, br_deadline_ms(timeout_ms));
  if (rc == BR_ETIMEDOUT || rc == BR_ECANCELED) {
    int crc = br_future_cancel(f);
    if (crc == 0 && f->owner_task && !br_future_done(f)) {
      /* A task needs to unwind before its future completes. Only one this
       * call cancelled: another loop's task (BR_EPERM) was not cancelled,
       * and a shielded wait for it would ignore the timeout just passed. */
      if (br__require_task()) br__await_shielded(f);
    }
    if (value) *value = NULL;
    return rc;
  }
  if (rc) return rc;
  if (value) *value = f->value;
  return f->err;
}
