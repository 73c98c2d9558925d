/* SPDX-License-Identifier: MIT */
/* braid — machine context switch (sys layer).
 *
 * A br__ctx is a suspended stack. Three implementations sit behind this
 * header, chosen at build time: hand-written assembly for x86-64
 * (switch_x86_64.S) and aarch64 (switch_aarch64.S), and a ucontext fallback
 * (switch_ucontext.c, -DBRAID_SWITCH=ucontext) for anything else. The
 * assembly saves only what the psABI says a callee must preserve; ucontext
 * also saves the signal mask, which is why it makes a system call per switch
 * (~320 ns here against ~6 ns).
 */
#ifndef BRAID_SYS_SWITCH_H
#define BRAID_SYS_SWITCH_H

#include <stddef.h>

#ifdef BRAID_SWITCH_UCONTEXT
#include <ucontext.h>
#endif

typedef struct br__ctx {
  void *sp; /* saved stack pointer (asm); first field, the .S files rely on it */
#ifdef BRAID_SWITCH_UCONTEXT
  ucontext_t uc;
#endif
} br__ctx;

/* br__ctx_make: prepare c so that the first switch to it runs fn(arg) on the
 * stack [lo, lo + size). fn must never return: it ends by switching away for
 * good. If it does return, br__ctx_fell_off() reports it and aborts. */
void br__ctx_make(br__ctx *c, void *lo, size_t size, void (*fn)(void *), void *arg);

/* br__ctx_switch: save the running context into from and resume to. Returns
 * when something switches back to from. */
void br__ctx_switch(br__ctx *from, br__ctx *to);

/* The trap a context function lands on if it returns. */
void br__ctx_fell_off(void) __attribute__((noreturn));

#endif
