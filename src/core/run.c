/* SPDX-License-Identifier: MIT */
/* braid — br_run: asyncio.run for C, with Ctrl-C handling.
 *
 * The first SIGINT cancels the main task, so its cleanup runs and br_run
 * returns BR_ECANCELED; a second one exits at once (status 130), for a
 * program whose cleanup hangs. The handler only counts and wakes the loop
 * (eventfd write: async-signal-safe); the loop does the cancelling. */
#include "core/core.h"
#include "core/log.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sys/fiber_san.h"

static atomic_int sigints;
static struct br_loop *_Atomic fg_loop;

static void on_sigint(int sig) {
  (void)sig;
  if (atomic_fetch_add(&sigints, 1) >= 1) {
    br__log_raw(BR_LOG_ERROR, "second interrupt, exiting"); /* async-signal-safe */
    _exit(130);
  }
  struct br_loop *L = atomic_load(&fg_loop);
  if (L) L->poller.ops->wake(&L->poller);
}

int br_run_opts(void **result, br_task_fn main, void *arg, const br_loop_opts *opts) {
  if (result) *result = NULL;
  if (!main) return BR_EINVAL;
  if (br__tls_loop && br__tls_loop->running) return BR_EBUSY;
  struct br_loop *L = NULL;
  int rc = br_loop_new(&L, opts);
  if (rc) return rc;
  struct br__task *t;
  rc = br__loop_spawn(L, &t, main, arg, &(br_spawn_opts){.name = "main"});
  if (rc) {
    br_loop_free(L);
    return rc;
  }
  struct br_loop *expected = NULL;
  bool owns_sigint = atomic_compare_exchange_strong(&fg_loop, &expected, L);
  struct sigaction old, sa;
  if (owns_sigint) {
    atomic_store(&sigints, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
  }
  struct br_loop *prev = br__tls_loop;
  br__tls_loop = L;
  L->running = true;
  L->sched_tsan = BR__TSAN_CURRENT();
  br__overflow_thread_begin();
  bool cancelled_main = false;
  L->until = t; /* once main is done, the poller must not block */
  atomic_store_explicit(&L->heartbeat, br_now(), memory_order_relaxed);
  int loop_rc = 0; /* BR_EDEADLK: every task asleep for good (core/trace.h) */
  while (!atomic_load_explicit(&t->fut.done, memory_order_acquire)) {
    if (owns_sigint && !cancelled_main && atomic_load(&sigints) > 0) {
      cancelled_main = true;
      br__task_cancel(t);
    }
    if ((loop_rc = br__loop_iterate(L, true)) < 0) break;
  }
  br__overflow_thread_end();
  L->until = NULL;
  L->running = false;
  br__tls_loop = prev;
  rc = atomic_load_explicit(&t->fut.done, memory_order_acquire) || loop_rc >= 0 ? t->fut.err : loop_rc;
  if (result) *result = t->fut.value;
  br__task_release(t);
  br_loop_free(L); /* cancels and joins whatever main left behind */
  if (owns_sigint) {
    sigaction(SIGINT, &old, NULL);
    atomic_store(&fg_loop, NULL);
  }
  return rc;
}

int br_run(void **result, br_task_fn main, void *arg) { return br_run_opts(result, main, arg, NULL); }
