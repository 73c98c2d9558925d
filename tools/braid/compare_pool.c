/* SPDX-License-Identifier: MIT */
/* braid compare — threads for computing work: the CPU pool (br_pool).
 *
 * One pool job per task, all submitted at once, waited for with br_gather.
 * Each job spreads its task's pieces over the pool's workers with
 * br_pool_for (nested parallelism: idle workers steal the pieces), so five
 * tasks on two cores keep both cores busy to the end, where whole tasks on
 * two workers would leave one idle while the fifth runs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

#include "compare.h"

typedef struct pool_job {
  const cmp_work *w;
  cmp_task *t;
  int64_t t0;
} pool_job;

static int pool_pieces(void *ud, size_t lo, size_t hi) {
  const cmp_work *w = ud;
  for (size_t k = lo; k < hi; k++) w->piece(w, (long)k);
  return 0;
}

static void *pool_task(void *arg) {
  pool_job *j = arg;
  cmp_task_begin(j->t, j->t0);
  int rc = br_pool_for(br_pool_current(), 0, (size_t)j->w->pieces, 1, pool_pieces, (void *)j->w);
  cmp_task_end(j->t, j->t0);
  return rc ? br_fail(rc, "%s", br_strerror(rc)) : NULL;
}

void cmp_run_pool(const cmp_work *w, cmp_run *r) {
  size_t n = r->ntasks, submitted = 0;
  br_future **futures = calloc(n, sizeof *futures);
  pool_job *jobs = calloc(n, sizeof *jobs);
  br_result *res = calloc(n, sizeof *res);
  if (!futures || !jobs || !res) {
    cmp_run_error(r, BR_ENOMEM, "not enough memory for the job table");
    goto out;
  }
  int64_t t0 = br_now();
  br_pool *pool;
  int prc = br_pool_new(&pool, BR_CPUS, NULL);
  if (prc != 0) {
    cmp_run_error(r, prc, "could not start the CPU pool: %s", br_strerror(prc));
    goto out;
  }
  r->setup_ns = br_now() - t0;
  int workers = r->workers = br_pool_size(pool);
  snprintf(r->how, sizeof r->how, "CPU pool of %d thread%s", workers, workers == 1 ? "" : "s");
  for (; submitted < n; submitted++) {
    jobs[submitted] = (pool_job){w, &r->tasks[submitted], t0};
    int rc = br_pool_submit(pool, &futures[submitted], pool_task, &jobs[submitted]);
    if (rc) {
      cmp_run_error(r, rc, "could not submit job %zu of %zu: %s", submitted + 1, n,
                    br_strerror(rc));
      break;
    }
  }
  if (br_gather(res, futures, submitted) != 0 && !r->err) {
    for (size_t i = 0; i < submitted; i++) {
      if (res[i].err) {
        cmp_run_error(r, res[i].err, "job %zu of %zu failed: %s", i + 1, n,
                      res[i].msg ? res[i].msg : br_strerror(res[i].err));
        break;
      }
    }
  }
  br_results_free(res, submitted);
  for (size_t i = 0; i < submitted; i++) br_future_unref(futures[i]);
  br_pool_free(pool);
  r->wall_ns = br_now() - t0;
out:
  free(futures);
  free(jobs);
  free(res);
}
