/* SPDX-License-Identifier: MIT */
/* braid — futex wrappers (sys layer): the one copy every part of braid
 * uses. */
#ifndef BRAID_SYS_FUTEX_H
#define BRAID_SYS_FUTEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* br__futex_wait: block while *word == val, at most timeout_ns (relative;
 * < 0: no limit). Returns 0 when woken (or *word != val already, or a
 * signal interrupted the wait), -ETIMEDOUT when the time ran out. Spurious
 * returns are possible: callers re-check their condition. shared: the word
 * lives in memory shared with other processes (MAP_SHARED), else the
 * cheaper process-private futex. */
int br__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t timeout_ns, bool shared);

/* br__futex_wake: wake up to n threads blocked on word (INT32_MAX: all).
 * Waking an address whose owner moved on is harmless: at worst a spurious
 * wake-up of a futex that reuses the address. */
void br__futex_wake(_Atomic uint32_t *word, int n, bool shared);

/* br__futex_wait_until: block the calling thread until *word != 0 or the
 * monotonic clock reaches deadline (ns; INT64_MAX: never). Returns 0 when
 * *word became non-zero, -ETIMEDOUT otherwise. Spurious wake-ups are
 * absorbed. */
int br__futex_wait_until(atomic_int *word, int64_t deadline);

/* br__futex_wake_all: wake every thread blocked on word. */
void br__futex_wake_all(atomic_int *word);

#endif
