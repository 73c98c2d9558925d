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
#include <sanitizer/tsan_interface.h>
#define BR__TSAN_CURRENT() __tsan_get_current_fiber()
#define BR__TSAN_CREATE() __tsan_create_fiber(0)
#define BR__TSAN_DESTROY(f) __tsan_destroy_fiber(f)
#define BR__TSAN_SWITCH(f) __tsan_switch_to_fiber(f, 0)
#else
#define BR__TSAN_CURRENT() NULL
#define BR__TSAN_CREATE() NULL
#define BR__TSAN_DESTROY(f) ((void)(f))
#define BR__TSAN_SWITCH(f) ((void)(f))
#endif

#endif
