/* SPDX-License-Identifier: MIT */
/* braid compare — processes: the process pool (br_procpool).
 *
 * Every piece of every task is one job, `braid_compare_piece`, registered
 * with BR_JOB so that it resolves in the pool's worker processes (exec'd
 * from this program). The job rebuilds the workload from the numbers it is
 * sent, runs one piece and returns its start, end (CLOCK_MONOTONIC, the same
 * clock in every process) and CPU time. The pieces are mapped over a pool of
 * one worker per usable CPU, one piece per hand-off, like
 * Pool().map(fn, items, chunksize=1).
 *
 * Figures: wall time includes starting and stopping the pool; setup is the
 * time until the first piece started (the start-up cost of processes); CPU
 * time is this process's plus what the workers report for their pieces. */
#include <stdlib.h>
#include <string.h>

#include <braid.h>

#include "compare.h"

typedef struct piece_in {
  int32_t kind;
  int32_t compute_ms; /* mixed: after the wait */
  int64_t ms, slice_ms, pieces, k;
  double iters_per_ms;
} piece_in;

typedef struct piece_out {
  int64_t start, end, cpu_ns;
} piece_out;

static int compare_piece(const void *in, size_t len, br_bytes *out) {
  if (len != sizeof(piece_in)) {
    br_fail(BR_EINVAL, "braid_compare_piece: %zu bytes of input, expected %zu", len,
            sizeof(piece_in));
    return BR_EINVAL;
  }
  piece_in a;
  memcpy(&a, in, sizeof a);
  cmp_work w = {.kind = (cmp_kind)a.kind,
                .ms = (long)a.ms,
                .slice_ms = (long)a.slice_ms,
                .compute_ms = a.compute_ms,
                .iters_per_ms = a.iters_per_ms};
  if (cmp_work_bodies(&w) != 0 || w.pieces != a.pieces || a.k < 0 || a.k >= a.pieces) {
    br_fail(BR_EINVAL, "braid_compare_piece: bad piece %lld of %lld (workload %d)",
            (long long)a.k, (long long)a.pieces, (int)a.kind);
    return BR_EINVAL;
  }
  piece_out o;
  int64_t c0 = cmp_thread_cpu_now();
  o.start = br_now();
  w.piece(&w, (long)a.k);
  o.end = br_now();
  o.cpu_ns = cmp_thread_cpu_now() - c0;
  return br_bytes_set(out, &o, sizeof o);
}
BR_JOB(braid_compare_piece, compare_piece);

/* Fold the outcome of piece j into its task. */
static void collect_piece(cmp_run *r, size_t per, size_t j, const piece_out *o, int64_t t0,
                          cmp_kind kind, int64_t ms) {
  cmp_task *t = &r->tasks[j / per];
  int64_t s = o->start - t0, e = o->end - t0;
  if (e <= 0) e = 1;
  if (t->end == 0 || s < t->start) t->start = s;
  if (e > t->end) t->end = e;
  /* What part of the piece was waiting, as the workload says. */
  if (kind == CMP_IO) t->wait_end = t->end;
  else if (kind == CMP_MIXED) t->wait_end = s + ms * 1000000 < e ? s + ms * 1000000 : e;
  cmp_task_segment(t, o->start, o->end, t0);
  r->cpu_ns += o->cpu_ns;
  if (r->setup_ns == 0 || s < r->setup_ns) r->setup_ns = s > 0 ? s : 1;
}

void cmp_run_procs(const cmp_work *w, cmp_run *r) {
  size_t n = r->ntasks, per = (size_t)w->pieces, total = n * per;
  piece_in *in = calloc(total, sizeof *in);
  br_buf *items = calloc(total, sizeof *items);
  br_result *res = calloc(total, sizeof *res);
  if (!in || !items || !res) {
    cmp_run_error(r, BR_ENOMEM, "not enough memory for the job table");
    goto out;
  }
  for (size_t j = 0; j < total; j++) {
    in[j] = (piece_in){.kind = (int32_t)w->kind,
                       .compute_ms = (int32_t)w->compute_ms,
                       .ms = w->ms,
                       .slice_ms = w->slice_ms,
                       .pieces = w->pieces,
                       .k = (int64_t)(j % per),
                       .iters_per_ms = w->iters_per_ms};
    items[j] = (br_buf){&in[j], sizeof in[j]};
  }
  int64_t t0 = br_now();
  br_procpool *pool;
  int rc = br_procpool_new(&pool, BR_CPUS, NULL);
  if (rc) {
    cmp_run_error(r, rc, "could not start the process pool: %s", br_strerror(rc));
    goto out;
  }
  int workers = r->workers = br_procpool_size(pool);
  br_procpool_map_opts mo = {.chunksize = 1};
  rc = br_procpool_map(pool, res, "braid_compare_piece", items, total, &mo);
  br_procpool_free(pool);
  r->wall_ns = br_now() - t0;
  for (size_t j = 0; j < total; j++) {
    const br_bytes *b = res[j].value;
    if (res[j].err == 0 && b && b->len == sizeof(piece_out)) {
      piece_out o;
      memcpy(&o, b->data, sizeof o);
      collect_piece(r, per, j, &o, t0, w->kind, w->ms);
    } else if (!r->err) {
      int err = res[j].err ? res[j].err : BR_ERANGE;
      cmp_run_error(r, err, "task %zu of %zu, piece %zu: %s", j / per + 1, n, j % per + 1,
                    res[j].msg ? res[j].msg : br_strerror(err));
    }
  }
  if (rc && !r->err) cmp_run_error(r, rc, "the process pool failed: %s", br_strerror(rc));
  br_results_free(res, total);
  snprintf(r->how, sizeof r->how, "%d process%s, start-up %.0f ms", workers,
           workers == 1 ? "" : "es", (double)r->setup_ns / 1e6);
out:
  free(in);
  free(items);
  free(res);
}
