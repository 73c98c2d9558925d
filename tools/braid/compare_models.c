/* SPDX-License-Identifier: MIT */
/* braid compare — the models: how N task bodies are run.
 *
 *   sequential  one after another on the calling thread
 *   threads     one pthread per task, all started, then all joined; for
 *               computing work the CPU pool instead (compare_pool.c)
 *   coroutines  one braid task per task on one loop (br_run + br_spawn +
 *               br_gather_tasks), the coroutine body suspending in braid
 *   processes   the process pool (compare_procs.c)
 *   auto        the auto executor (compare_auto.c)
 *
 * Each runner measures the wall and process CPU time of the whole run and
 * hands every body the run's start time t0, so tasks stamp their own
 * start / end relative to it. */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <braid.h>

#include "compare.h"

int64_t cmp_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cmp_thread_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool cmp_model_available(cmp_model m) { return (unsigned)m < CMP_NMODELS; }

void cmp_task_begin(cmp_task *t, int64_t t0) { t->start = br_now() - t0; }
void cmp_task_waited(cmp_task *t, int64_t t0) { t->wait_end = br_now() - t0; }
void cmp_task_end(cmp_task *t, int64_t t0) {
  t->end = br_now() - t0;
  if (t->end <= 0) t->end = 1; /* end == 0 means "never ran" */
}

void cmp_task_segment(cmp_task *t, int64_t start, int64_t end, int64_t t0) {
  if (!t->segs) return;
  if (t->nsegs == t->cap) { /* full (should not happen): extend the last one */
    t->segs[t->nsegs - 1].end = end - t0;
    return;
  }
  t->segs[t->nsegs++] = (cmp_span){start - t0, end - t0};
}

void cmp_run_free(cmp_run *r) {
  if (!r->tasks) return;
  for (size_t i = 0; i < r->ntasks; i++) free(r->tasks[i].segs);
  free(r->tasks);
  r->tasks = NULL;
}

void cmp_run_error(cmp_run *r, int err, const char *fmt, ...) {
  r->err = err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
}

/* ---- sequential ------------------------------------------------------- */

static void run_sequential(const cmp_work *w, cmp_run *r) {
  snprintf(r->how, sizeof r->how, "one after another, 1 thread");
  r->workers = 1;
  int64_t t0 = br_now();
  for (size_t i = 0; i < r->ntasks; i++) w->blocking(w, &r->tasks[i], t0);
  r->wall_ns = br_now() - t0;
}

/* ---- threads: one per task -------------------------------------------- */

typedef struct thread_arg {
  const cmp_work *w;
  cmp_task *t;
  int64_t t0;
} thread_arg;

static void *thread_main(void *p) {
  thread_arg *a = p;
  a->w->blocking(a->w, a->t, a->t0);
  return NULL;
}

static void run_threads(const cmp_work *w, cmp_run *r) {
  size_t n = r->ntasks;
  snprintf(r->how, sizeof r->how, "%zu thread%s, one per task", n, n == 1 ? "" : "s");
  pthread_t *ids = calloc(n, sizeof *ids);
  thread_arg *args = calloc(n, sizeof *args);
  if (!ids || !args) {
    cmp_run_error(r, BR_ENOMEM, "not enough memory for the thread table");
    goto out;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024); /* the bodies are shallow */
  size_t started = 0;
  int64_t t0 = br_now();
  r->workers = (int)n;
  for (; started < n; started++) {
    args[started] = (thread_arg){w, &r->tasks[started], t0};
    int rc = pthread_create(&ids[started], &attr, thread_main, &args[started]);
    if (rc) {
      cmp_run_error(r, -rc,
                    "could not start thread %zu of %zu: %s (every thread is a kernel task: "
                    "see ulimit -u, kernel.threads-max, kernel.pid_max, vm.max_map_count)",
                    started + 1, n, strerror(rc));
      break;
    }
  }
  for (size_t i = 0; i < started; i++) pthread_join(ids[i], NULL);
  r->wall_ns = br_now() - t0;
  pthread_attr_destroy(&attr);
out:
  free(ids);
  free(args);
}

/* ---- coroutines: braid tasks on one loop ------------------------------- */

typedef struct coro_run {
  const cmp_work *w;
  cmp_run *r;
  int64_t t0;
} coro_run;

typedef struct coro_arg {
  coro_run *run;
  size_t i;
} coro_arg;

static void *coro_task(void *p) {
  coro_arg *a = p;
  const cmp_work *w = a->run->w;
  int rc = w->coroutine(w, &a->run->r->tasks[a->i], a->run->t0);
  return rc ? br_fail(rc, "%s", br_strerror(rc)) : NULL;
}

static void *coro_main(void *p) {
  coro_run *c = p;
  cmp_run *r = c->r;
  size_t n = r->ntasks;
  br_task **tasks = calloc(n, sizeof *tasks);
  br_result *res = calloc(n, sizeof *res);
  coro_arg *args = calloc(n, sizeof *args);
  if (!tasks || !res || !args) {
    cmp_run_error(r, BR_ENOMEM, "not enough memory for the task table");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    char name[24];
    cmp_task_label(i, n, name, sizeof name);
    br_spawn_opts so = {.name = name};
    args[i] = (coro_arg){c, i};
    int rc = br_spawn(&tasks[i], coro_task, &args[i], &so);
    if (rc) {
      cmp_run_error(r, rc, "could not spawn task %zu of %zu: %s", i + 1, n, br_strerror(rc));
      for (size_t j = 0; j < i; j++) br_task_close(tasks[j]);
      goto out;
    }
  }
  int rc = br_gather_tasks(res, tasks, n);
  if (rc) {
    for (size_t i = 0; i < n; i++) {
      if (res[i].err) {
        cmp_run_error(r, res[i].err, "task %zu of %zu failed: %s", i + 1, n,
                      res[i].msg ? res[i].msg : br_strerror(res[i].err));
        break;
      }
    }
    if (!r->err) cmp_run_error(r, rc, "gather failed: %s", br_strerror(rc));
  }
  br_results_free(res, n);
out:
  free(tasks);
  free(res);
  free(args);
  return NULL;
}

static void *coro_nothing(void *arg) { return arg; }

/* The first loop of a process pays one-time set-up (braid calibrates its
 * cycle counter: ~2 ms of CPU); pay it before the clocks start, as the other
 * models' one-time costs (the first thread's) are small. */
static void coro_warm_up(void) {
  static bool warm;
  if (!warm) br_run(NULL, coro_nothing, NULL);
  warm = true;
}

static void run_coroutines(const cmp_work *w, cmp_run *r) {
  size_t n = r->ntasks;
  if (w->computes && w->slice_ms > 0 && w->slice_ms < w->ms)
    snprintf(r->how, sizeof r->how, "1 loop, yield every %ld ms", w->slice_ms);
  else
    snprintf(r->how, sizeof r->how, "%zu task%s on 1 loop, 1 thread", n, n == 1 ? "" : "s");
  r->workers = 1;
  coro_run c = {.w = w, .r = r, .t0 = br_now()};
  int rc = br_run(NULL, coro_main, &c);
  r->wall_ns = br_now() - c.t0;
  if (rc && !r->err) cmp_run_error(r, rc, "the loop failed: %s", br_strerror(rc));
}

/* ---- dispatch ---------------------------------------------------------- */

int cmp_run_model(cmp_model m, const cmp_work *w, size_t n, int rows, cmp_run *out) {
  *out = (cmp_run){.model = m, .ntasks = n};
  if (!cmp_model_available(m)) {
    cmp_run_error(out, BR_ENOTSUP, "not available in this build");
    return out->err;
  }
  out->tasks = calloc(n, sizeof *out->tasks);
  if (!out->tasks) {
    cmp_run_error(out, BR_ENOMEM, "not enough memory for the task records");
    return out->err;
  }
  /* Coroutines and processes run a divisible task in pieces: track them for
   * the rows the timeline draws. */
  if ((m == CMP_CORO || m == CMP_PROCS) && w->pieces > 1) {
    size_t cap = (size_t)w->pieces + 1;
    for (size_t i = 0; i < n; i++) {
      if (!cmp_row_shown(i, n, rows)) continue;
      out->tasks[i].segs = calloc(cap, sizeof(cmp_span));
      out->tasks[i].cap = out->tasks[i].segs ? cap : 0;
    }
  }
  if (m == CMP_CORO) coro_warm_up();
  int64_t cpu0 = cmp_cpu_now();
  switch (m) {
  case CMP_SEQ: run_sequential(w, out); break;
  case CMP_THREADS:
    if (w->computes)
      cmp_run_pool(w, out);
    else
      run_threads(w, out);
    break;
  case CMP_CORO: run_coroutines(w, out); break;
  case CMP_PROCS: cmp_run_procs(w, out); break;
  case CMP_AUTO: cmp_run_auto(w, out); break;
  default: break;
  }
  out->cpu_ns += cmp_cpu_now() - cpu0; /* runners may add their workers' CPU time */
  return out->err;
}
