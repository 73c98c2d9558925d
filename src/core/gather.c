/* SPDX-License-Identifier: MIT */
/* braid — gather, wait and as_completed over tasks and futures. */
#include "core/core.h"
#include "core/job.h"
#include "core/trace.h"

#include "sys/futex.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A result borrows the future's value: whoever owns it (the future, for an
 * owned value) still frees it, so value_free stays NULL. */
static void fill(br_result *out, struct br_future *f) {
  *out = (br_result){0};
  out->value = f->value;
  out->err = f->err;
  out->msg = f->err ? br_strdupf("%s", f->msg ? f->msg : br_strerror(f->err)) : NULL;
}

int br_gather_tasks(br_result *out, br_task **tasks, size_t n) {
  struct br__task *self = br__require_task();
  if (!self) return BR_ENOTTASK;
  if ((!tasks || !out) && n) return BR_EINVAL;
  /* Handles are decoded at each use: each stays live (held) until the
   * last loop below gives it back. */
#define TASK(i) br__task_get(tasks[i])
  /* The same handle twice would be given back twice: BR_EINVAL. A mark
   * on each task finds duplicates in one pass. */
  int bad = 0;
  size_t checked = 0;
  for (; checked < n && !bad; checked++) {
    struct br__task *t = TASK(checked);
    if (!br__task_valid(t) || !t->handle_held) bad = BR_EHANDLE;
    else if (t == self) bad = BR_EDEADLK;
    else if (t->loop != self->loop) bad = BR_EINVAL;
    else if (t->gather_mark) bad = BR_EINVAL;
    else t->gather_mark = true;
  }
  for (size_t i = 0; i < checked; i++) {
    struct br__task *t = TASK(i);
    if (br__task_valid(t)) t->gather_mark = false;
  }
  if (bad) return bad;
  int interrupted = 0;
  for (size_t i = 0; i < n; i++) {
    if (!interrupted) {
      int rc = br__task_wait_done(self, TASK(i), BR_NEVER, true);
      if (rc) {
        interrupted = rc;
        for (size_t k = i; k < n; k++) br__task_cancel(TASK(k));
      }
    }
    if (interrupted) br__task_wait_done(self, TASK(i), BR_NEVER, false);
  }
  int first = 0;
  for (size_t i = 0; i < n; i++) {
    struct br__task *t = TASK(i);
    fill(&out[i], &t->fut);
    if (!first && out[i].err) first = out[i].err;
    br__task_release(t);
  }
#undef TASK
  return interrupted ? interrupted : first;
}

int br_gather(br_result *out, br_future *const *fs, size_t n) {
  if ((!fs || !out) && n) return BR_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!fs[i]) return BR_EINVAL;
  int interrupted = 0;
  for (size_t i = 0; i < n && !interrupted; i++) {
    int rc = br__future_wait(fs[i], BR_NEVER);
    if (rc == BR_ENOTTASK || rc == BR_EDEADLK) return rc;
    if (rc) interrupted = rc;
  }
  if (interrupted) {
    /* asyncio.gather: cancelling the gather cancels what it waits for. */
    for (size_t i = 0; i < n; i++)
      if (!br_future_done(fs[i])) br_future_cancel(fs[i]);
    struct br__task *self = br__require_task();
    for (size_t i = 0; i < n; i++) {
      if (br_future_done(fs[i])) continue;
      if (fs[i]->owner_task && self) br__task_wait_done(self, fs[i]->owner_task, BR_NEVER, false);
    }
  }
  int first = 0;
  for (size_t i = 0; i < n; i++) {
    if (br_future_done(fs[i])) {
      fill(&out[i], fs[i]);
    } else {
      out[i] = (br_result){.err = BR_ECANCELED, .msg = br_strdupf("cancelled")};
    }
    if (!first && out[i].err) first = out[i].err;
  }
  return interrupted ? interrupted : first;
}

/* --- waiting for any of several futures ----------------------------------- */

/* What a task waiting for these futures waits on: their common origin
 * (all pool jobs, all tasks ...), else futures in general. */
static br_wait_kind wait_kind_of(br_future *const *fs, size_t n, const unsigned char *skip) {
  int k = -1;
  for (size_t i = 0; i < n; i++) {
    if (skip && skip[i]) continue;
    int ki = fs[i]->owner_task ? BR_WAIT_JOIN : fs[i]->origin ? fs[i]->origin : BR_WAIT_FUTURE;
    if (k >= 0 && ki != k) return BR_WAIT_FUTURE;
    k = ki;
  }
  return k < 0 ? BR_WAIT_FUTURE : (br_wait_kind)k;
}

static void any_done(void *arg) {
  br_future *any = arg;
  (void)br_future_set(any, NULL); /* BR_EALREADY once another one was first */
  br_future_unref(any);
}

/* wait_any for a thread running an executor's job (job.h): one future that
 * the first of fs to complete completes, waited for the executor's way, so
 * that a CPU-pool worker runs other jobs meanwhile; blocking it instead
 * would hang a pool whose every worker waits for jobs still queued. Each
 * callback holds a reference until its future completes. */
static int wait_any_job(br__job_ctx *ctx, br_future *const *fs, size_t n,
                        const unsigned char *skip, int64_t deadline) {
  br_future *any;
  int rc = br_future_new(&any);
  if (rc) return rc;
  for (size_t i = 0; i < n && !br_future_done(any); i++) {
    if (skip && skip[i]) continue;
    br_future_ref(any);
    if ((rc = br_future_on_done(fs[i], any_done, any)) != 0) {
      br_future_unref(any);
      break;
    }
  }
  if (rc == 0) rc = ctx->ops->wait(ctx, any, deadline);
  br_future_unref(any);
  return rc;
}

/* Park until any future in fs (not marked in skip) completes, or the
 * deadline. Works from a task (parks), a thread running a job (the
 * executor's wait) and a plain thread (futex). */
static int wait_any(br_future *const *fs, size_t n, const unsigned char *skip, int64_t deadline) {
  struct br__task *self = br__require_task();
  if (!self && br__tls_loop) return BR_ENOTTASK;
  br__job_ctx *ctx = self ? NULL : br__job_current();
  if (ctx && ctx->ops && ctx->ops->wait) return wait_any_job(ctx, fs, n, skip, deadline);
  for (size_t i = 0; self && i < n; i++)
    if (!(skip && skip[i]) && fs[i]->owner_task == self && !br_future_done(fs[i])) return BR_EDEADLK;
  br__waiter *ws = calloc(n, sizeof *ws);
  if (!ws) return BR_ENOMEM;
  atomic_int word = 0;
  if (self) br__park_begin_remote(self);
  bool any_done = false;
  for (size_t i = 0; i < n && !any_done; i++) {
    if (skip && skip[i]) continue;
    br__future_lock(fs[i]);
    if (atomic_load_explicit(&fs[i]->done, memory_order_relaxed)) {
      any_done = true;
    } else {
      ws[i].task = self;
      ws[i].futex = self ? NULL : &word;
      br__waiter_link(fs[i], &ws[i]);
    }
    br__future_unlock(fs[i]);
  }
  int rc = 0;
  if (self) {
    if (any_done) {
      if (atomic_exchange_explicit(&self->parked, 0, memory_order_acq_rel) != 1)
        br__park_end(self, BR_NEVER, false); /* consume the wake already queued */
    } else {
      br__wait_on(self, wait_kind_of(fs, n, skip), "any of", NULL, NULL, (int64_t)n);
      rc = br__park_end(self, deadline, true);
    }
  } else if (!any_done) {
    rc = br__futex_wait_until(&word, deadline);
  }
  for (size_t i = 0; i < n; i++) {
    if (!ws[i].task && !ws[i].futex) continue;
    br__future_lock(fs[i]);
    if (ws[i].linked) br__waiter_unlink(fs[i], &ws[i]);
    br__future_unlock(fs[i]);
    br__waiter_settle(&ws[i]);
  }
  free(ws);
  return rc;
}

static int check(br_future *const *fs, size_t n, br_wait_mode mode) {
  size_t done = 0;
  for (size_t i = 0; i < n; i++) {
    if (!br_future_done(fs[i])) continue;
    done++;
    if (mode == BR_WAIT_FIRST) return (int)i;
    if (mode == BR_WAIT_FIRST_ERROR && fs[i]->err) return (int)i;
  }
  /* ALL, or FIRST_ERROR with no failure: every future is done. Return a
   * valid index (the last) so fs[r] is always safe to read. */
  return done == n ? (int)n - 1 : -1;
}

int br_wait(br_future *const *fs, size_t n, br_wait_mode mode, int64_t deadline) {
  if (!fs || !n || n > INT32_MAX || (unsigned)mode > BR_WAIT_ALL) return BR_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!fs[i]) return BR_EINVAL;
  /* Futures already complete are skipped when waiting again: only a new
   * completion can change the answer. */
  unsigned char *done = calloc(n, 1);
  if (!done) return BR_ENOMEM;
  int r;
  for (;;) {
    r = check(fs, n, mode);
    if (r >= 0) break;
    for (size_t i = 0; i < n; i++) done[i] = br_future_done(fs[i]);
    int rc = wait_any(fs, n, done, deadline);
    if (rc) {
      r = check(fs, n, mode);
      if (r < 0) r = rc;
      break;
    }
  }
  free(done);
  return r;
}

struct br_as_completed {
  br_future *const *fs;
  size_t n, reported;
  unsigned char *seen;
};

int br_as_completed_new(br_as_completed **out, br_future *const *fs, size_t n) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  if ((!fs && n) || n > INT32_MAX) return BR_EINVAL; /* next returns an int index */
  for (size_t i = 0; i < n; i++)
    if (!fs[i]) return BR_EINVAL;
  struct br_as_completed *it = calloc(1, sizeof *it);
  if (!it) return BR_ENOMEM;
  it->seen = calloc(n ? n : 1, 1);
  if (!it->seen) {
    free(it);
    return BR_ENOMEM;
  }
  it->fs = fs;
  it->n = n;
  *out = it;
  return 0;
}

int br_as_completed_next(br_as_completed *it, int64_t deadline) {
  if (!it) return BR_EINVAL;
  for (;;) {
    if (it->reported == it->n) return BR_ECLOSED;
    for (size_t i = 0; i < it->n; i++) {
      if (!it->seen[i] && br_future_done(it->fs[i])) {
        it->seen[i] = 1;
        it->reported++;
        return (int)i;
      }
    }
    int rc = wait_any(it->fs, it->n, it->seen, deadline);
    if (rc) return rc;
  }
}

void br_as_completed_free(br_as_completed *it) {
  if (!it) return;
  free(it->seen);
  free(it);
}
