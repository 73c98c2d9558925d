/* SPDX-License-Identifier: MIT */
/* braid — telling the sanitizers about stack switches (sys layer).
 *
 * AddressSanitizer must know which stack is current (or it reports false
 * stack overflows and loses its fake stacks), and ThreadSanitizer keeps one
 * shadow state per fiber. These wrappers compile to nothing in normal
 * builds. */
#ifndef BRAID_SYS_FIBER_SAN_H
#define BRAID_SYS_FIBER_SAN_H

#include <stddef.h>

#ifdef BRAID_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define BR__ASAN_START(fake_save, bottom, size) __sanitizer_start_switch_fiber(fake_save, bottom, size)
#define BR__ASAN_FINISH(fake, bottom_old, size_old) __sanitizer_finish_switch_fiber(fake, bottom_old, size_old)
#define BR__ASAN_UNPOISON(p, n) __asan_unpoison_memory_region(p, n)
#else
#define BR__ASAN_START(fake_save, bottom, size) ((void)0)
#define BR__ASAN_FINISH(fake, bottom_old, size_old) ((void)0)
#define BR__ASAN_UNPOISON(p, n) ((void)0)
#endif

#ifdef BRAID_TSAN
#include <signal.h>
#include <sanitizer/tsan_interface.h>
#define BR__TSAN_CURRENT() __tsan_get_current_fiber()
#define BR__TSAN_CREATE() __tsan_create_fiber(0)
#define BR__TSAN_DESTROY(f) __tsan_destroy_fiber(f)
#define BR__TSAN_SWITCH(f) br__tsan_switch(f)
/* ThreadSanitizer defers a signal's handler to the next function it
 * intercepts, and keeps what it deferred per fiber: a SIGINT that landed
 * while a task ran, and that task then parked for good, would never have
 * its handler run (br_run's Ctrl-C then hangs under TSan only). So signals
 * are blocked across the switch: blocking them (an intercepted call) runs
 * what the outgoing fiber deferred, and unblocking them delivers what came
 * meanwhile to the incoming one and runs it there. Faults stay unblocked:
 * a synchronous SIGSEGV cannot wait. */
static inline void br__tsan_switch(void *fiber) {
  sigset_t async, old;
  sigfillset(&async);
  sigdelset(&async, SIGSEGV);
  sigdelset(&async, SIGBUS);
  sigdelset(&async, SIGILL);
  sigdelset(&async, SIGFPE);
  sigdelset(&async, SIGTRAP);
  pthread_sigmask(SIG_BLOCK, &async, &old);
  __tsan_switch_to_fiber(fiber, 0);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}
#else
#define BR__TSAN_CURRENT() NULL
#define BR__TSAN_CREATE() NULL
#define BR__TSAN_DESTROY(f) ((void)(f))
#define BR__TSAN_SWITCH(f) ((void)(f))
#endif

#endif
