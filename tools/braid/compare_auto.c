/* SPDX-License-Identifier: MIT */
/* braid compare — the auto model: every task's blocking body handed to
 * br_auto_submit, which measures the body and routes it (inline, the
 * blocking pool or the CPU pool), then awaited. The measurements start from
 * nothing at every run, so the first calls' measuring is part of the time. */
#include <stdlib.h>

#include <braid.h>
#include <braid/auto.h>

#include "compare.h"

typedef struct auto_job {
  const cmp_work *w;
  cmp_task *t;
  int64_t t0;
} auto_job;

static void *auto_body(void *arg) {
  auto_job *j = arg;
  j->w->blocking(j->w, j->t, j->t0);
  return NULL;
}

void cmp_run_auto(const cmp_work *w, cmp_run *r) {
  size_t n = r->ntasks, submitted = 0;
  br_future **f = calloc(n, sizeof *f);
  auto_job *jobs = calloc(n, sizeof *jobs);
  if (!f || !jobs) {
    cmp_run_error(r, BR_ENOMEM, "not enough memory for the job table");
    goto out;
  }
  (void)br_auto_shutdown(); /* forget earlier runs: measure afresh */
  int64_t t0 = br_now();
  for (; submitted < n; submitted++) {
    jobs[submitted] = (auto_job){w, &r->tasks[submitted], t0};
    int rc = br_auto_submit(&f[submitted], auto_body, &jobs[submitted]);
    if (rc) {
      cmp_run_error(r, rc, "could not submit task %zu of %zu: %s", submitted + 1, n,
                    br_strerror(rc));
      break;
    }
  }
  for (size_t i = 0; i < submitted; i++) {
    int rc = br_await(f[i], NULL);
    if (rc && !r->err) cmp_run_error(r, rc, "task %zu failed: %s", i + 1, br_strerror(rc));
    br_future_unref(f[i]);
  }
  r->wall_ns = br_now() - t0;
  br_auto_route route = br_auto_route_of(auto_body);
  r->workers = route == BR_AUTO_CPU_POOL ? br_cpu_count() : route == BR_AUTO_INLINE ? 1 : (int)n;
  snprintf(r->how, sizeof r->how, "measured, then: %s", br_auto_route_name(route));
  (void)br_auto_shutdown();
out:
  free(f);
  free(jobs);
}
