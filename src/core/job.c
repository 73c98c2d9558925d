/* SPDX-License-Identifier: MIT */
/* braid — job context, job records and shielded waits; the protocol is
 * written down in job.h. */
#include "core/job.h"

#include <stdlib.h>

#include "core/core.h"

static _Thread_local br__job_ctx *tls_job;

br__job_ctx *br__job_enter(br__job_ctx *ctx) {
  br__job_ctx *prev = tls_job;
  tls_job = ctx;
  return prev;
}

void br__job_leave(br__job_ctx *prev) { tls_job = prev; }

br__job_ctx *br__job_current(void) { return tls_job; }

/* --- job records ----------------------------------------------------------- */

static void job_drop(br__job *job, int n) {
  if (atomic_fetch_sub_explicit(&job->refs, n, memory_order_acq_rel) != n) return;
  br_future *f = job->fut;
  job->fut = NULL;
  job->ops->release(job);
  br_future_unref(f);
}

void br__job_ref(br__job *job) { atomic_fetch_add_explicit(&job->refs, 1, memory_order_relaxed); }

void br__job_unref(br__job *job) { job_drop(job, 1); }

/* The future's cancel hook: runs once, on the cancelling thread, only when
 * br_future_cancel is what completed the future. */
static void job_cancel_hook(void *arg) {
  br__job *job = arg;
  bool taken = job->ops->cancel && job->ops->cancel(job);
  job_drop(job, taken ? 2 : 1); /* HOOK, and RUN if the executor gave it up */
}

int br__job_init(br__job *job, const br__job_ops *ops, br_future **out) {
  *out = NULL;
  struct br_future *f = malloc(sizeof *f);
  if (!f) return BR_ENOMEM;
  br__future_init(f, NULL);
  f->origin = ops->origin;
  job->ops = ops;
  job->fut = f;
  atomic_init(&job->refs, 2); /* RUN + HOOK */
  f->cancel_hook = job_cancel_hook; /* nobody else sees f yet: no lock */
  f->cancel_arg = job;
  *out = br_future_ref(f);
  return 0;
}

int br__job_complete(br__job *job, void *value, void (*value_free)(void *), int err, char *msg) {
  int rc;
  if (err) {
    rc = br__future_complete_ex(job->fut, NULL, NULL, err < 0 ? err : BR_EFAILED, msg);
  } else {
    free(msg);
    rc = br__future_complete_ex(job->fut, value, value_free, 0, NULL);
    if (rc && value_free && value) value_free(value);
  }
  job_drop(job, rc == 0 ? 2 : 1);
  return rc;
}

void br__job_abandon(br__job *job) {
  br_future *f = job->fut;
  f->cancel_hook = NULL;
  f->cancel_arg = NULL;
  br_future_unref(f); /* the submitter's reference */
  job_drop(job, 2);
}

/* --- shielded wait --------------------------------------------------------- */

void br__await_shielded(br_future *f) {
  if (!f) return;
  br_scope s;
  bool in_scope = br_self() && br_scope_enter(&s, BR_NEVER, true) == 0;
  while (!br_future_done(f)) {
    int rc = br__future_wait(f, BR_NEVER);
    /* A task or job waiting on its own future can never see it complete;
     * neither can a loop callback (it must not block). */
    if (rc == BR_EDEADLK || rc == BR_ENOTTASK) break;
  }
  if (in_scope) (void)br_scope_exit(&s);
}

/* --- a task's outcome around an inline call ------------------------------- */

bool br__outcome_save(br__outcome *saved) {
  struct br__task *t = br__require_task();
  if (!t) return false;
  saved->code = t->fail_code;
  saved->msg = t->fail_msg;
  t->fail_code = 0;
  t->fail_msg = NULL;
  return true;
}

void br__outcome_restore(const br__outcome *saved, br__outcome *got) {
  struct br__task *t = br__require_task();
  got->code = t->fail_code;
  got->msg = t->fail_msg;
  t->fail_code = saved->code;
  t->fail_msg = saved->msg;
}
