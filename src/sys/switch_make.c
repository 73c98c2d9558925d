/* SPDX-License-Identifier: MIT */
/* braid — building the first frame of a new context for the assembly switch
 * (the ucontext fallback has its own in switch_ucontext.c). The frame layout
 * is documented at the top of switch_x86_64.S and switch_aarch64.S. */
#include "sys/switch.h"

#include "sys/log_sink.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void br__ctx_fell_off(void) {
  br__log_emit(0 /* error */, "a context function returned (internal error)");
  abort();
}

#ifndef BRAID_SWITCH_UCONTEXT

extern void br__ctx_start(void);

void br__ctx_make(br__ctx *c, void *lo, size_t size, void (*fn)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
  uint64_t *f = (uint64_t *)(top - 64);
  uint32_t mxcsr = 0x1F80; /* default: all exceptions masked, round to nearest */
  uint16_t fpucw = 0x037F;
  memset(f, 0, 64);
  memcpy((char *)f, &mxcsr, 4);
  memcpy((char *)f + 4, &fpucw, 2);
  f[3] = (uint64_t)(uintptr_t)fn;          /* r13 */
  f[4] = (uint64_t)(uintptr_t)arg;         /* r12 */
  f[6] = 0;                                /* rbp */
  f[7] = (uint64_t)(uintptr_t)br__ctx_start; /* return address */
  c->sp = f;
#elif defined(__aarch64__)
  uint64_t *f = (uint64_t *)(top - 176);
  memset(f, 0, 176);
  f[0] = (uint64_t)(uintptr_t)fn;  /* x19 */
  f[1] = (uint64_t)(uintptr_t)arg; /* x20 */
  f[10] = 0;                       /* x29 */
  f[11] = (uint64_t)(uintptr_t)br__ctx_start; /* x30 */
  c->sp = f;
#else
#error "no assembly context switch for this CPU: configure with -DBRAID_SWITCH=ucontext"
#endif
}

#endif
