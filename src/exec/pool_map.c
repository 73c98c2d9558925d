/* SPDX-License-Identifier: MIT */
/* pool_map.c — data parallelism: br_pool_map, br_pool_map_fixed, br_pool_for
 * and br_pool_reduce, split recursively over fork-join.
 *
 * Who runs this code. The public calls run on the caller's thread: a plain
 * thread, a loop task, or a pool job. If the caller is one of the pool's own
 * workers, the root piece runs right there (the work is part of the job it
 * runs, and the other workers help by stealing); otherwise the root becomes
 * a job in the injection queue and the caller waits for it. Every piece
 * (par_piece, par_leaf) runs on a worker of the pool, any worker: which one
 * is decided by stealing.
 *
 * Shared state and locks. A br__par describes one call and lives on the
 * caller's stack; the pieces reach it through br__piece frames on the
 * workers' stacks. Its callbacks and arrays are read-only. Each output slot
 * (out[i], errors[i], an accumulator) is written by exactly one piece. The
 * only shared writes are stop / started / skipped (atomics) and the lowest
 * failing index with its code, under err_lock, a leaf lock taken after user
 * code has returned. Because the pieces use the caller's memory, the caller
 * never returns while one may still run: if it gives up (its task is
 * cancelled), it stops the pieces not yet started and waits, shielded, for
 * the running ones.
 *
 * Determinism. The split tree depends only on the range and the grain, and
 * reduce combines halves in index order, so an associative but not
 * commutative operation (a floating-point sum) gives the same bits on every
 * run, whichever worker runs which piece.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "exec/pool_int.h"

enum { PAR_MAP, PAR_FIXED, PAR_FOR, PAR_REDUCE };

#define ACC_INLINE 64
#define ACC_MAX 4096

typedef struct br__par {
  int kind;
  size_t grain;
  /* PAR_MAP */
  br_pool_fn fn;
  void *const *items;
  br_result *out;
  /* PAR_FIXED */
  br_pool_item_fn item_fn;
  const unsigned char *in;
  size_t in_size;
  unsigned char *fout;
  size_t out_size;
  int *errors;
  /* PAR_FOR, PAR_REDUCE */
  br_pool_range_fn body;
  br_pool_fold_fn fold;
  br_pool_combine_fn combine;
  void *ud;
  size_t size;
  const void *identity;
  _Atomic int stop;    /* skip pieces not started: cancelled or failed */
  _Atomic int started; /* the root piece began */
  _Atomic int skipped; /* a piece was skipped for cancellation */
  pthread_mutex_t err_lock;
  size_t err_lo; /* lowest failing index, SIZE_MAX if none */
  int err;
  int alloc_err; /* ENOMEM while splitting a reduce */
} br__par;

typedef struct br__piece {
  br__par *par;
  size_t lo, hi;
  void *acc;
} br__piece;

static void par_error(br__par *par, size_t lo, int err, bool stop) {
  pthread_mutex_lock(&par->err_lock);
  if (lo < par->err_lo) {
    par->err_lo = lo;
    par->err = err;
  }
  pthread_mutex_unlock(&par->err_lock);
  if (stop) atomic_store(&par->stop, 1);
}

static inline bool par_stopped(br__par *par, br__worker *w) {
  if (atomic_load_explicit(&par->stop, memory_order_relaxed)) return true;
  if (br__pool_cancelled(w)) {
    atomic_store_explicit(&par->skipped, 1, memory_order_relaxed);
    return true;
  }
  return false;
}

/* The items [lo, hi) of a map, each with its own outcome slot. */
static void leaf_map(br__par *par, br__worker *w, size_t lo, size_t hi) {
  br_fork slot;
  memset(&slot, 0, sizeof slot);
  br_fork *pcur = w->cur;
  for (size_t i = lo; i < hi; i++) {
    br_result *r = &par->out[i];
    if (par_stopped(par, w)) {
      *r = (br_result){.err = BR_ECANCELED};
      continue;
    }
    FK(&slot)->err = 0;
    FK(&slot)->msg = NULL;
    w->cur = &slot;
    void *v = par->fn(par->items[i]);
    w->cur = pcur;
    *r = (br_result){.value = v, .err = FK(&slot)->err, .msg = FK(&slot)->msg};
    if (r->err) par_error(par, i, r->err, false);
  }
}

/* The items [lo, hi) of a map_fixed. Skipped items count as failures with
 * BR_ECANCELED (the lowest index decides the call's result), recorded once
 * per leaf. */
static void leaf_fixed(br__par *par, br__worker *w, size_t lo, size_t hi) {
  br_fork slot;
  memset(&slot, 0, sizeof slot);
  br_fork *pcur = w->cur;
  size_t first_skip = SIZE_MAX;
  for (size_t i = lo; i < hi; i++) {
    if (par_stopped(par, w)) {
      if (par->errors) par->errors[i] = BR_ECANCELED;
      if (first_skip == SIZE_MAX) first_skip = i;
      continue;
    }
    const void *in = par->in_size ? par->in + i * par->in_size : par->in;
    void *out = par->out_size ? par->fout + i * par->out_size : par->fout;
    FK(&slot)->err = 0;
    FK(&slot)->msg = NULL;
    w->cur = &slot;
    int rc = par->item_fn(in, out);
    w->cur = pcur;
    free(FK(&slot)->msg);
    int code = rc < 0 ? rc : FK(&slot)->err;
    if (par->errors) par->errors[i] = code;
    if (code) par_error(par, i, code, false);
  }
  if (first_skip != SIZE_MAX) par_error(par, first_skip, BR_ECANCELED, false);
}

/* A for / reduce range: one call of the body, which may fail the call. */
static void leaf_range(br__par *par, br__worker *w, size_t lo, size_t hi, void *acc) {
  if (par_stopped(par, w)) {
    /* After a failure this does not matter: the error wins. */
    atomic_store_explicit(&par->skipped, 1, memory_order_relaxed);
    return;
  }
  br_fork slot;
  memset(&slot, 0, sizeof slot);
  br_fork *pcur = w->cur;
  w->cur = &slot;
  int rc = par->kind == PAR_FOR ? par->body(par->ud, lo, hi) : par->fold(par->ud, lo, hi, acc);
  w->cur = pcur;
  free(FK(&slot)->msg);
  if (rc == 0 && FK(&slot)->err) rc = FK(&slot)->err;
  if (rc != 0) par_error(par, lo, rc < 0 ? rc : BR_EFAILED, true);
}

static void par_leaf(br__par *par, size_t lo, size_t hi, void *acc) {
  br__worker *w = br__pool_tls_w;
  switch (par->kind) {
  case PAR_MAP: leaf_map(par, w, lo, hi); break;
  case PAR_FIXED: leaf_fixed(par, w, lo, hi); break;
  default: leaf_range(par, w, lo, hi, acc); break;
  }
}

static void *par_piece(void *arg) {
  br__piece *pc = arg;
  br__par *par = pc->par;
  size_t lo = pc->lo, hi = pc->hi;
  if (hi - lo <= par->grain) {
    par_leaf(par, lo, hi, pc->acc);
    return NULL;
  }
  /* A map must still give every item its outcome: its leaves skip. */
  if ((par->kind == PAR_FOR || par->kind == PAR_REDUCE) && par_stopped(par, br__pool_tls_w))
    return NULL;
  size_t mid = lo + (hi - lo) / 2;
  _Alignas(max_align_t) unsigned char inline_acc[ACC_INLINE];
  void *racc = NULL;
  if (par->kind == PAR_REDUCE) {
    racc = par->size <= ACC_INLINE ? inline_acc : malloc(par->size);
    if (!racc) {
      /* No memory for the right half's accumulator: do this piece serially. */
      par_leaf(par, lo, hi, pc->acc);
      return NULL;
    }
    memcpy(racc, par->identity, par->size);
  }
  br__piece right = {par, mid, hi, racc};
  br__piece left = {par, lo, mid, pc->acc};
  br_fork f;
  br_pool_fork(&f, par_piece, &right);
  par_piece(&left);
  br_pool_join(&f, NULL);
  if (par->kind == PAR_REDUCE) {
    if (!atomic_load(&par->stop)) par->combine(par->ud, pc->acc, racc);
    if (racc != inline_acc) free(racc);
  }
  return NULL;
}

static size_t auto_grain(size_t n, int workers, size_t per) {
  size_t g = n / ((size_t)workers * per);
  return g ? g : 1;
}

/* The root piece of a map / for / reduce. */
static void *par_root(void *arg) {
  br__piece *pc = arg;
  atomic_store(&pc->par->started, 1);
  return par_piece(pc);
}

/* Run par over [begin, end): directly if the caller is one of pool's
 * workers (the work is part of the job it runs), otherwise as a root job
 * the caller waits for. Returns 0 once the work has run (par says how it
 * went), or an error of the call itself: BR_ESHUTDOWN / BR_ENOMEM (nothing
 * ran), or the waiter's BR_ECANCELED / BR_ETIMEDOUT (what had started has
 * finished; the rest was skipped). */
static int par_run(br_pool *pool, br__par *par, size_t begin, size_t end, void *acc) {
  br__piece root = {par, begin, end, acc};
  br__worker *w = br__pool_tls_w;
  if (w && w->pool == pool) {
    par_root(&root);
    return 0;
  }
  br__pjob *job;
  br_future *fut;
  if (br__pool_job_new(&job, &fut, pool, par_root, &root) < 0) return BR_ENOMEM;
  /* A third reference, ours, so that we may still touch the job after it
   * finished. Nobody else can complete this future: it only completes when
   * the root has returned, or was cancelled before it started. */
  br__job_ref(&job->core);
  int rc = br__pool_inj_push(pool, job);
  if (rc < 0) {
    br__job_unref(&job->core);
    br__job_abandon(&job->core);
    return rc;
  }
  /* A task suspends, a thread blocks, a worker (of any pool) helps. */
  rc = br_await(fut, NULL);
  if (rc < 0 && !br_future_done(fut)) {
    /* The waiting task was cancelled (or its scope timed out): skip what has
     * not started, but wait for what runs, since it uses our memory. */
    atomic_store(&par->stop, 1);
    atomic_store(&job->cancelled, 1);
    /* Still queued (seen under the lock after setting cancelled): it will
     * never run, whoever takes it now sees the flag, so complete it at once
     * rather than wait for its turn. Taken already: it may be running. */
    pthread_mutex_lock(&pool->inj_lock);
    bool queued = job->qstate == Q_QUEUED;
    pthread_mutex_unlock(&pool->inj_lock);
    if (queued) (void)br_future_cancel(fut);
    br__await_shielded(fut);
  } else {
    rc = 0; /* the root ran, or was cancelled unstarted (started == 0) */
  }
  br_future_unref(fut);
  br__job_unref(&job->core);
  return rc;
}

/* A call with nothing to do answers as one with work would: refused once
 * shutdown began, unless a job of the pool makes it (its work would run
 * right there, as part of that job: see par_run). */
static int empty_call(br_pool *pool) {
  br__worker *w = br__pool_tls_w;
  if (w && w->pool == pool) return 0;
  return atomic_load(&pool->state) == S_RUNNING ? 0 : BR_ESHUTDOWN;
}

/* The outcome of a for / reduce. */
static int par_result(br__par *par, int rc) {
  if (rc < 0) return rc;
  if (par->err) return par->err;
  if (!atomic_load(&par->started) || atomic_load(&par->skipped)) return BR_ECANCELED;
  return 0;
}

static void par_init(br__par *par, int kind, size_t grain) {
  memset(par, 0, sizeof *par);
  par->kind = kind;
  par->grain = grain;
  par->err_lo = SIZE_MAX;
  atomic_init(&par->stop, 0);
  atomic_init(&par->started, 0);
  atomic_init(&par->skipped, 0);
  pthread_mutex_init(&par->err_lock, NULL);
}

/* The code every item gets when nothing ran: the call's own error (a
 * waiter's timeout counts as a cancellation of the items). */
static int unstarted_code(int *rc) {
  if (*rc == 0) *rc = BR_ECANCELED;
  return *rc == BR_ETIMEDOUT ? BR_ECANCELED : *rc;
}

int br_pool_map(br_pool *pool, br_result *out, br_pool_fn fn, void *const *items, size_t n,
                size_t chunk) {
  if (!pool || !fn || (n > 0 && (!items || !out))) return BR_EINVAL;
  if (n == 0) return empty_call(pool);
  br__par par;
  par_init(&par, PAR_MAP, chunk ? chunk : auto_grain(n, pool->n, 64));
  par.fn = fn;
  par.items = items;
  par.out = out;
  int rc = par_run(pool, &par, 0, n, NULL);
  if (!atomic_load(&par.started)) {
    /* Nothing ran: every item still gets an outcome. */
    int item = unstarted_code(&rc);
    for (size_t i = 0; i < n; i++) out[i] = (br_result){.err = item};
  } else if (rc == 0) {
    /* Every out[i] holds its item's outcome (BR_ECANCELED if skipped). */
    for (size_t i = 0; i < n && rc == 0; i++) rc = out[i].err;
  }
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}

int br_pool_map_fixed(br_pool *pool, void *out, size_t out_size, int *errors, br_pool_item_fn fn,
                      const void *in, size_t in_size, size_t n, size_t chunk) {
  if (!pool || !fn || (n > 0 && ((in_size && !in) || (out_size && !out)))) return BR_EINVAL;
  if (n == 0) return empty_call(pool);
  if ((in_size && n > SIZE_MAX / in_size) || (out_size && n > SIZE_MAX / out_size))
    return BR_EINVAL;
  br__par par;
  par_init(&par, PAR_FIXED, chunk ? chunk : auto_grain(n, pool->n, 64));
  par.item_fn = fn;
  par.in = in;
  par.in_size = in_size;
  par.fout = out;
  par.out_size = out_size;
  par.errors = errors;
  int rc = par_run(pool, &par, 0, n, NULL);
  if (!atomic_load(&par.started)) {
    int item = unstarted_code(&rc);
    if (errors)
      for (size_t i = 0; i < n; i++) errors[i] = item;
  } else if (rc == 0) {
    rc = par.err; /* the lowest failing or skipped index's code, or 0 */
  }
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}

int br_pool_for(br_pool *pool, size_t begin, size_t end, size_t grain, br_pool_range_fn body,
                void *ud) {
  if (!pool || !body) return BR_EINVAL;
  if (begin >= end) return empty_call(pool);
  br__par par;
  par_init(&par, PAR_FOR, grain ? grain : auto_grain(end - begin, pool->n, 32));
  par.body = body;
  par.ud = ud;
  int rc = par_result(&par, par_run(pool, &par, begin, end, NULL));
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}

int br_pool_reduce(br_pool *pool, void *result, size_t size, size_t begin, size_t end, size_t grain,
                   br_pool_fold_fn fold, br_pool_combine_fn combine, void *ud) {
  if (!pool || !result || !fold || !combine || size == 0 || size > ACC_MAX) return BR_EINVAL;
  if (begin >= end) return empty_call(pool);
  br__par par;
  par_init(&par, PAR_REDUCE, grain ? grain : auto_grain(end - begin, pool->n, 32));
  par.fold = fold;
  par.combine = combine;
  par.ud = ud;
  par.size = size;
  par.identity = result;
  void *acc = malloc(size);
  if (!acc) {
    pthread_mutex_destroy(&par.err_lock);
    return BR_ENOMEM;
  }
  memcpy(acc, result, size);
  int rc = par_result(&par, par_run(pool, &par, begin, end, acc));
  if (rc == 0) memcpy(result, acc, size);
  free(acc);
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}
