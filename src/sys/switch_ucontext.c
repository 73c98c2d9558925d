/* SPDX-License-Identifier: MIT */
/* braid — portable context switch on ucontext (build with
 * -DBRAID_SWITCH=ucontext). makecontext only passes int arguments, so the
 * function and its argument travel through a pointer split in two ints. */
#ifdef BRAID_SWITCH_UCONTEXT
#include "sys/switch.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

static void trampoline(unsigned hi_fn, unsigned lo_fn, unsigned hi_arg, unsigned lo_arg) {
  void (*fn)(void *) = (void (*)(void *))(uintptr_t)(((uint64_t)hi_fn << 32) | lo_fn);
  void *arg = (void *)(uintptr_t)(((uint64_t)hi_arg << 32) | lo_arg);
  fn(arg);
  br__ctx_fell_off();
}

void br__ctx_make(br__ctx *c, void *lo, size_t size, void (*fn)(void *), void *arg) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = lo;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = NULL;
  uint64_t f = (uint64_t)(uintptr_t)fn, a = (uint64_t)(uintptr_t)arg;
  makecontext(&c->uc, (void (*)(void))trampoline, 4, (unsigned)(f >> 32), (unsigned)f,
              (unsigned)(a >> 32), (unsigned)a);
  c->sp = (char *)lo + size;
}

void br__ctx_switch(br__ctx *from, br__ctx *to) {
  /* Record an approximate stack pointer for compact mode's copy: everything
   * this frame and swapcontext use lies above it. */
  from->sp = (void *)((uintptr_t)__builtin_frame_address(0) - 512);
  /* swapcontext also switches the signal mask; a thread's mask must not
   * change because a task switched (the assembly switch leaves it alone),
   * so the resumed context gets the mask in force now. */
  pthread_sigmask(SIG_SETMASK, NULL, &to->uc.uc_sigmask);
  swapcontext(&from->uc, &to->uc);
}
#endif
