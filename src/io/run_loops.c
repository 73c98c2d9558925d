/* SPDX-License-Identifier: MIT */
/* braid — one loop per core (br_run_loops).
 *
 * A coroutine never migrates between threads, so a server uses every core
 * by running one loop per core, each with its own SO_REUSEPORT listener
 * (the kernel spreads connections over them; no shared accept queue, no
 * lock). This file starts the loops, lets them hand work to each other and
 * collects their outcome.
 *
 * Life of a loop i: its thread creates the loop, waits until every loop
 * exists (so hand-offs work from the first instruction of main), then runs
 * a hidden "keeper" task that spawns main-<i> and joins it. The group
 * counts its outstanding work: the mains and every task handed over with
 * br_loops_spawn (counted from the hand-off until the task returns). When
 * that count reaches zero, every keeper closes its loop to hand-offs and
 * returns; each loop then ends when the tasks it still has are done.
 * Hand-offs check the closed flag under the group lock, so a task handed
 * over is either queued before the close (and run) or refused with
 * BR_ECLOSED: never silently lost.
 */
#include <braid.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "core/log.h"
#include "io/io_internal.h"

typedef struct member {
  struct group *g;
  int index;
  br_loop *loop;
  pthread_t thread;
  bool started;  /* thread created (index > 0) */
  bool closed;   /* refuses hand-offs; under g->mu */
  bool no_keeper; /* its keeper could not be spawned */
  bool cancel_sent; /* its main's cancellation is on its way; under g->mu */
  br_task *main; /* loop thread only */
  int rc;
  char *msg;
} member;

typedef struct group {
  int n;
  br_task_fn main;
  void *arg;
  const br_loop_opts *opts;
  member *m;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int created; /* loops created so far; under mu */
  bool failed; /* a loop or thread could not be created; under mu */
  br_future *all_done; /* completed when `outstanding` drops to zero */
  atomic_int outstanding;
  atomic_int cancelled; /* 1: br_loops_cancel, 2: SIGINT */
  bool sigint;
} group;

static void work_done(group *g) {
  if (atomic_fetch_sub(&g->outstanding, 1) == 1) br_future_set(g->all_done, NULL);
}

static _Thread_local member *tls_member;

int br_loops_index(void) { return tls_member ? tls_member->index : -1; }
int br_loops_count(void) { return tls_member ? tls_member->g->n : 0; }

/* --- hand-offs --------------------------------------------------------------- */

typedef struct handoff {
  group *g;
  br_task_fn fn;
  void *arg;
  char name[32];
  bool named;
} handoff;

/* The handed-over task: the user's function, then the group's count. */
static void *handoff_body(void *arg) {
  handoff *h = arg;
  void *v = h->fn(h->arg);
  work_done(h->g);
  free(h);
  return v;
}

static void handoff_run(void *arg) {
  handoff *h = arg;
  int rc = br_loop_spawn(br_loop_current(), NULL, handoff_body, h,
                         &(br_spawn_opts){.name = h->named ? h->name : NULL,
                                          .flags = BR_SPAWN_DETACHED});
  if (rc) {
    br__log(BR_LOG_ERROR, "br_loops_spawn: cannot spawn on loop %d: %s", br_loops_index(),
            br_strerror(rc));
    work_done(h->g);
    free(h);
  }
}

int br_loops_spawn(int i, br_task_fn fn, void *arg, const char *name) {
  member *self = tls_member;
  if (!self || !fn) return BR_EINVAL;
  group *g = self->g;
  if (i < 0 || i >= g->n) return BR_EINVAL;
  handoff *h = calloc(1, sizeof *h);
  if (!h) return BR_ENOMEM;
  h->g = g;
  h->fn = fn;
  h->arg = arg;
  if (name) {
    snprintf(h->name, sizeof h->name, "%s", name);
    h->named = true;
  }
  pthread_mutex_lock(&g->mu);
  int rc = BR_ECLOSED;
  if (!g->m[i].closed) {
    /* Counted before it is queued: the group cannot end in between. */
    atomic_fetch_add(&g->outstanding, 1);
    rc = br_call_soon_threadsafe(g->m[i].loop, handoff_run, h);
    if (rc) atomic_fetch_sub(&g->outstanding, 1);
  }
  pthread_mutex_unlock(&g->mu);
  if (rc) free(h);
  return rc;
}

static void cancel_main_cb(void *arg) {
  member *m = arg;
  if (m->main && !br_task_done(m->main)) br_cancel(m->main);
}

/* Once per loop: a control message, which a loop whose hand-off queue the
 * program filled (BR_EAGAIN for br_loops_spawn) still takes. */
static void cancel_all(group *g) {
  pthread_mutex_lock(&g->mu);
  for (int i = 0; i < g->n; i++) {
    member *m = &g->m[i];
    if (m->closed || m->cancel_sent) continue;
    if (br__call_soon_control(m->loop, cancel_main_cb, m) == 0) m->cancel_sent = true;
  }
  pthread_mutex_unlock(&g->mu);
}

void br_loops_cancel(void) {
  if (!tls_member) return;
  int none = 0;
  atomic_compare_exchange_strong(&tls_member->g->cancelled, &none, 1);
  cancel_all(tls_member->g);
}

/* --- the loops --------------------------------------------------------------- */

/* Loop 0 also turns SIGINT into cancellation, as br_run does (the signal is
 * blocked in every loop thread and read here from a signalfd). */
static void *sigint_watch(void *arg) {
  group *g = arg;
  int sig = SIGINT;
  int fd = br_signal_open(&sig, 1);
  if (fd < 0) return NULL;
  int count = 0;
  while (br_signal_wait(fd, BR_NEVER) == SIGINT) {
    if (++count == 1) {
      int none = 0;
      atomic_compare_exchange_strong(&g->cancelled, &none, 2);
      cancel_all(g);
    } else {
      br__log(BR_LOG_ERROR, "second interrupt, exiting");
      _exit(130);
    }
  }
  br_close(fd);
  return NULL;
}

static void *keeper(void *arg) {
  member *m = arg;
  group *g = m->g;
  br_task *watcher = NULL;
  if (m->index == 0 && g->sigint)
    br_spawn(&watcher, sigint_watch, g, &(br_spawn_opts){.name = "loops-sigint"});
  char name[32];
  snprintf(name, sizeof name, "main-%d", m->index);
  int rc = br_spawn(&m->main, g->main, g->arg, &(br_spawn_opts){.name = name});
  /* Cancelled before this main existed: its cancellation found no main. */
  if (!rc && atomic_load(&g->cancelled)) br_cancel(m->main);
  if (rc) {
    m->rc = rc;
    m->msg = br_strdupf("cannot spawn %s", name);
  } else {
    br_scope shield; /* the keeper itself is never cancelled; be explicit */
    br_scope_enter(&shield, BR_NEVER, true);
    br_result res;
    m->rc = br_join_result(m->main, &res);
    m->main = NULL;
    if (m->rc && res.msg && res.msg[0]) {
      m->msg = res.msg; /* ours now */
      res.msg = NULL;
    }
    br_results_free(&res, 1);
    br_scope_exit(&shield);
  }
  work_done(g);
  br_await(g->all_done, NULL);
  if (watcher) br_task_close(watcher);
  pthread_mutex_lock(&g->mu);
  m->closed = true;
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

/* Create m's loop and queue its keeper, on the loop's own thread. */
static void prepare(member *m) {
  group *g = m->g;
  if (br_loop_new(&m->loop, g->opts) < 0) return; /* m->loop stays NULL */
  int rc = br_loop_spawn(m->loop, NULL, keeper, m,
                         &(br_spawn_opts){.name = "loops-keeper", .flags = BR_SPAWN_DETACHED});
  if (rc) {
    m->rc = rc;
    m->no_keeper = true;
    work_done(g);
  }
}

static void *loop_thread(void *arg) {
  member *m = arg;
  group *g = m->g;
  if (m->index > 0) prepare(m); /* loop 0 was prepared before any thread */
  br_loop *L = m->loop;
  pthread_mutex_lock(&g->mu);
  if (L)
    g->created++;
  else
    g->failed = true;
  pthread_cond_broadcast(&g->cv);
  while (!g->failed && g->created < g->n) pthread_cond_wait(&g->cv, &g->mu);
  bool go = !g->failed;
  pthread_mutex_unlock(&g->mu);
  if (!L) return NULL;
  if (go && !m->no_keeper) {
    tls_member = m;
    br_loop_run(L);
    tls_member = NULL;
  }
  /* Refuse hand-offs from here on (the keeper did, unless it never ran). */
  pthread_mutex_lock(&g->mu);
  m->closed = true;
  pthread_mutex_unlock(&g->mu);
  br_loop_free(L);
  return NULL;
}

int br_run_loops(int n, br_task_fn main, void *arg, const br_loop_opts *opts) {
  if (!main || n < 0 || n > 4096) return BR_EINVAL;
  if (br_loop_current()) return BR_EBUSY;
  if (n == BR_CPUS) n = br_cpu_count();
  group g = {.n = n, .main = main, .arg = arg, .opts = opts};
  g.m = calloc((size_t)n, sizeof *g.m);
  if (!g.m || br_future_new(&g.all_done) < 0) {
    free(g.m);
    br_future_unref(g.all_done);
    return BR_ENOMEM;
  }
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  atomic_init(&g.outstanding, n);
  atomic_init(&g.cancelled, 0);

  /* SIGINT: block it before the loop threads exist so they inherit the
   * mask; loop 0 reads it from a signalfd. Left alone if ignored. */
  struct sigaction cur;
  sigaction(SIGINT, NULL, &cur);
  g.sigint = cur.sa_handler != SIG_IGN;
  sigset_t old, block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  if (g.sigint) pthread_sigmask(SIG_BLOCK, &block, &old);

  int rc = 0;
  for (int i = 0; i < n; i++) {
    g.m[i].g = &g;
    g.m[i].index = i;
  }
  /* Loop 0 first, on this thread, before any other thread exists: the
   * first loop and spawn of the process set up lazily initialised state
   * (page size, stack cache) without racing the other loops. */
  prepare(&g.m[0]);
  for (int i = 1; i < n; i++) {
    if (pthread_create(&g.m[i].thread, NULL, loop_thread, &g.m[i]) != 0) {
      pthread_mutex_lock(&g.mu);
      g.failed = true;
      pthread_cond_broadcast(&g.cv);
      pthread_mutex_unlock(&g.mu);
      rc = BR_EAGAIN;
      break;
    }
    g.m[i].started = true;
  }
  if (!rc) loop_thread(&g.m[0]);
  for (int i = 1; i < n; i++)
    if (g.m[i].started) pthread_join(g.m[i].thread, NULL);

  if (g.sigint) {
    /* Drop a SIGINT that arrived after the watcher ended, then unblock. */
    sigset_t pending;
    struct timespec zero = {0, 0};
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGINT)) sigtimedwait(&block, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  if (!rc) {
    pthread_mutex_lock(&g.mu);
    if (g.failed) rc = BR_ENOMEM;
    pthread_mutex_unlock(&g.mu);
  }
  /* Mains cancelled by br_loops_cancel stopped as asked: not a failure.
   * After SIGINT they report BR_ECANCELED, as br_run's main does. */
  bool asked = atomic_load(&g.cancelled) == 1;
  for (int i = 0; i < n; i++) {
    if (asked && g.m[i].rc == BR_ECANCELED) g.m[i].rc = 0;
    if (!rc && g.m[i].rc) {
      rc = g.m[i].rc;
      if (g.m[i].msg && rc != BR_ECANCELED)
        br__log(BR_LOG_ERROR, "main-%d failed: %s: %s", i, br_strerror(rc), g.m[i].msg);
    }
    free(g.m[i].msg);
  }
  br_future_unref(g.all_done);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
  free(g.m);
  return rc;
}
