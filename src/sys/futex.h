/* braid — futex wrappers (sys layer). */
#ifndef BRAID_SYS_FUTEX_H
#define BRAID_SYS_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* br__futex_wait_until: block the calling thread until *word != 0 or the
 * monotonic clock reaches deadline (ns; INT64_MAX: never). Returns 0 when
 * *word became non-zero, -ETIMEDOUT otherwise. Spurious wake-ups are
 * absorbed. */
int br__futex_wait_until(atomic_int *word, int64_t deadline);

/* br__futex_wake_all: wake every thread blocked on word. */
void br__futex_wake_all(atomic_int *word);

#endif
