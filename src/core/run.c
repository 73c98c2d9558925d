/* SPDX-License-Identifier: MIT */
/* braid — br_run: asyncio.run for C, with Ctrl-C handling.
 *
 * The first SIGINT cancels the main task, so its cleanup runs and br_run
 * returns BR_ECANCELED; a second one exits at once (status 130), for a
 * program whose cleanup hangs. The handler only counts and wakes the loop
 * (eventfd write: async-signal-safe); the loop does the cancelling.
 *
 * br_run takes SIGINT over only when it is not ignored: a program started in
 * the background (`cmd &`, nohup) inherits SIGINT ignored and keeps ignoring
 * it, as Python does. Only one br_run at a time owns SIGINT (fg_loop).
 *
 * The handler may run on any thread, at any moment, also while br_run is
 * finishing. So br_run puts the previous handler back *before* it frees the
 * loop, clears fg_loop, and then waits until no handler is between its read
 * of fg_loop and its wake-up of that loop (in_handler): a SIGINT from then on
 * goes to the previous disposition, and none touches the freed loop or its
 * closed eventfd. A handler counts itself in before it reads fg_loop and
 * br_run clears fg_loop before it reads the count (all sequentially
 * consistent), so either br_run waits for the handler or the handler reads
 * NULL. */
#include "core/core.h"
#include "core/log.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sys/fiber_san.h"

static atomic_int sigints;
static struct br_loop *_Atomic fg_loop;
static atomic_int in_handler;

static void on_sigint(int sig) {
  (void)sig;
  if (atomic_fetch_add(&sigints, 1) >= 1) {
    br__log_raw(BR_LOG_ERROR, "second interrupt, exiting"); /* async-signal-safe */
    _exit(130);
  }
  atomic_fetch_add(&in_handler, 1);
  struct br_loop *L = atomic_load(&fg_loop);
  if (L) L->poller.ops->wake(&L->poller);
  atomic_fetch_sub(&in_handler, 1);
}

static bool sigint_ignored(const struct sigaction *sa) {
  return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == SIG_IGN;
}

/* br_run_opts and br_run_result: run main on a loop of its own; *msg (when
 * msg is given) takes a copy of main's failure message, else that message
 * is reported (see braid.h). */
static int run_main(void **result, char **msg, br_task_fn main, void *arg,
                    const br_loop_opts *opts) {
  if (result) *result = NULL;
  if (msg) *msg = NULL;
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
  bool owns_sigint = false;
  struct sigaction old, sa;
  if (sigaction(SIGINT, NULL, &old) == 0 && !sigint_ignored(&old)) {
    struct br_loop *expected = NULL;
    owns_sigint = atomic_compare_exchange_strong(&fg_loop, &expected, L);
  }
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
  L->tsan_hold_sigint = owns_sigint; /* TSan builds only (core/loop.c) */
  br__overflow_thread_begin();
  bool cancelled_main = false;
  L->until = t; /* once main is done, the poller must not block */
  atomic_store_explicit(&L->heartbeat, br_now(), memory_order_relaxed);
  int loop_rc = 0; /* BR_EDEADLK: every task asleep for good (core/trace.h) */
  while (!atomic_load_explicit(&t->fut.done, memory_order_acquire)) {
    if (owns_sigint && !cancelled_main && atomic_load(&sigints) > 0) {
      cancelled_main = true;
      L->tsan_hold_sigint = false; /* a second one must not wait for a task (core/loop.c) */
      br__task_cancel(t);
    }
    if ((loop_rc = br__loop_iterate(L, true)) < 0) break;
  }
  br__overflow_thread_end();
  L->tsan_hold_sigint = false;
  L->until = NULL;
  L->running = false;
  br__tls_loop = prev;
  rc = atomic_load_explicit(&t->fut.done, memory_order_acquire) || loop_rc >= 0 ? t->fut.err : loop_rc;
  if (result) *result = t->fut.value;
  bool failed = atomic_load_explicit(&t->fut.done, memory_order_acquire) && t->fut.err &&
                t->fut.msg;
  if (failed && msg) {
    *msg = strdup(t->fut.msg);
  } else if (failed && t->fut.err != BR_ECANCELED) {
    /* br_run's caller gets main's code, never its message: like a failure
     * nobody joined (core/loop.c), the message is reported rather than lost
     * (as asyncio.run's traceback is). Not a cancellation: that is Ctrl-C
     * or the program's own doing. */
    br__log(BR_LOG_ERROR, "task '%s' failed: %s: %s", br__task_name(t), br_strerror(t->fut.err),
            t->fut.msg);
  }
  br__task_release(t);
  if (owns_sigint) {
    /* Before the loop goes (see the top of this file). */
    sigaction(SIGINT, &old, NULL);
    atomic_store(&fg_loop, NULL);
    while (atomic_load(&in_handler)) sched_yield();
  }
  br_loop_free(L); /* cancels and joins whatever main left behind */
  return rc;
}

int br_run_opts(void **result, br_task_fn main, void *arg, const br_loop_opts *opts) {
  return run_main(result, NULL, main, arg, opts);
}

int br_run(void **result, br_task_fn main, void *arg) { return run_main(result, NULL, main, arg, NULL); }

int br_run_result(br_result *out, br_task_fn main, void *arg, const br_loop_opts *opts) {
  if (!out) return BR_EINVAL;
  *out = (br_result){0};
  out->err = run_main(&out->value, &out->msg, main, arg, opts);
  return out->err;
}
