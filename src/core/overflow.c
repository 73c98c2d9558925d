/* SPDX-License-Identifier: MIT */
/* braid — reporting a task's stack overflow by name.
 *
 * A SIGSEGV handler, running on an alternate signal stack (the faulting
 * stack is exhausted), checks whether the fault address lies in the running
 * task's guard page. If so it writes "task 'NAME' overflowed its N KiB
 * stack" and lets the process die of SIGSEGV as it would have; any other
 * fault goes to the handler that was installed before ours. Only
 * async-signal-safe calls are made here.
 *
 * Only a real fault is ours to look at: the kernel raising SIGSEGV/SIGBUS
 * for the interrupted instruction (si_code > 0), which faults again when the
 * handler returns. A SIGSEGV or SIGBUS sent with kill(), raise() or
 * sigqueue() (si_code <= 0; its si_addr means nothing) never reports an
 * overflow and is passed on to the previous disposition exactly as if we
 * were not there: a previous handler is called, an ignored one stays
 * ignored, and the default one kills the process by that signal (we put the
 * default back and send the signal again; it arrives when we return). */
#include "core/core.h"
#include "core/log.h"
#include "core/trace.h"

#include <pthread.h>
#include <signal.h>
#include <ucontext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct sigaction prev_segv, prev_bus;
static _Thread_local void *altstack_mem;
static _Thread_local int altstack_depth;

#define ALTSTACK_SIZE (64 * 1024)

static size_t put_str(char *b, size_t at, size_t cap, const char *s) {
  while (*s && at + 1 < cap) b[at++] = *s++;
  return at;
}

static size_t put_u64(char *b, size_t at, size_t cap, unsigned long long v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n && at + 1 < cap) b[at++] = tmp[--n];
  return at;
}

/* Whether the kernel raised sig for a fault of the interrupted instruction,
 * which repeats when the handler returns: not a signal some process sent
 * (SI_USER, SI_QUEUE, SI_TKILL: si_code <= 0), nor an asynchronous report
 * of a memory error elsewhere (BUS_MCEERR_AO). */
static bool synchronous_fault(int sig, const siginfo_t *si) {
  if (si->si_code <= 0) return false;
#ifdef BUS_MCEERR_AO
  if (sig == SIGBUS && si->si_code == BUS_MCEERR_AO) return false;
#else
  (void)sig;
#endif
  return true;
}

/* Die of sig as with no handler installed: the default action back, then a
 * real fault repeats when we return, and a sent signal is sent again (it is
 * blocked while we run, so it arrives as we return). */
static void die_by_default(int sig, bool fault) {
  signal(sig, SIG_DFL);
  if (!fault) raise(sig);
}

static void chain(struct sigaction *prev, int sig, siginfo_t *si, void *uc) {
  bool fault = synchronous_fault(sig, si);
  /* SIG_DFL and SIG_IGN are handler values whatever the flags say. */
  if (prev->sa_handler == SIG_IGN) {
    /* An ignored signal stays ignored, but a fault cannot be: the kernel
     * kills a process whose fault signal is ignored, and so do we. */
    if (fault) die_by_default(sig, true);
    return;
  }
  if (prev->sa_handler == SIG_DFL) {
    die_by_default(sig, fault);
    return;
  }
  if (prev->sa_flags & SA_SIGINFO)
    prev->sa_sigaction(sig, si, uc);
  else
    prev->sa_handler(sig);
}

static char *interrupted_sp(void *ucv) {
  ucontext_t *uc = ucv;
#if defined(__x86_64__)
  return (char *)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
  return (char *)uc->uc_mcontext.sp;
#else
  (void)uc;
  return NULL;
#endif
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  struct br_loop *L = br__tls_loop;
  struct br__task *t = L && synchronous_fault(sig, si) ? L->current : NULL;
  if (t) {
    br__stack *s = t->compact ? L->shared : t->stack;
    if (s && br__stack_overflow_at(s, si->si_addr, interrupted_sp(uc))) {
      char b[160];
      size_t n = put_str(b, 0, sizeof b, "task '");
      if (t->name[0]) {
        n = put_str(b, n, sizeof b, t->name);
      } else {
        n = put_str(b, n, sizeof b, "task-");
        n = put_u64(b, n, sizeof b, t->id);
      }
      n = put_str(b, n, sizeof b, "' overflowed its ");
      n = put_u64(b, n, sizeof b, s->size / 1024);
      n = put_str(b, n, sizeof b, " KiB stack");
      b[n < sizeof b ? n : sizeof b - 1] = '\0';
      br__log_raw(BR_LOG_ERROR, b); /* formatted without stdio: signal handler */
      br__trace_fire("stack overflow", true); /* the flight recorder, if on */
      signal(sig, SIG_DFL);
      return;
    }
  }
  chain(sig == SIGSEGV ? &prev_segv : &prev_bus, sig, si, uc);
}

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

static void install_one(int sig, struct sigaction *prev) {
  struct sigaction cur;
  if (sigaction(sig, NULL, &cur) != 0) return;
  if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_fault) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, prev);
}

/* Checked at every loop creation rather than once per process: a forked
 * child, or a program that installed its own handler since, gets ours again
 * (theirs is chained to). */
void br__overflow_install(void) {
  if (getenv("BRAID_NO_SEGV_HANDLER")) return;
  pthread_mutex_lock(&install_lock);
  install_one(SIGSEGV, &prev_segv);
  install_one(SIGBUS, &prev_bus);
  pthread_mutex_unlock(&install_lock);
}

/* Each thread that runs tasks needs an alternate signal stack; keep one the
 * thread (or a sanitizer) already has. */
void br__overflow_thread_begin(void) {
  if (altstack_depth++) return;
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
  altstack_mem = malloc(ALTSTACK_SIZE);
  if (!altstack_mem) return;
  stack_t ss = {.ss_sp = altstack_mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    free(altstack_mem);
    altstack_mem = NULL;
  }
}

void br__overflow_thread_end(void) {
  if (--altstack_depth) return;
  if (!altstack_mem) return;
  stack_t ss = {.ss_flags = SS_DISABLE};
  sigaltstack(&ss, NULL);
  free(altstack_mem);
  altstack_mem = NULL;
}
