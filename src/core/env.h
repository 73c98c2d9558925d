/* SPDX-License-Identifier: MIT */
/* braid — reading braid's environment variables (BRAID_*): one place, and
 * one warning naming the variable and what it accepts when a value is not
 * understood (the setting is then ignored: the default applies). */
#ifndef BRAID_CORE_ENV_H
#define BRAID_CORE_ENV_H

#include <stdatomic.h>

/* The whole number in environment variable `name`, in [lo, hi] (decimal,
 * or 0x hexadecimal): 1 and *out set; 0 when unset or empty; -1 when set to
 * anything else, after a warning (the first time *warned is false). */
int br__env_long(const char *name, long long lo, long long hi, long long *out,
                 atomic_bool *warned);

/* Which of `choices` (a NULL-terminated list) environment variable `name`
 * holds: its index; -1 when unset or empty; -2 when it holds anything
 * else, after a warning (the first time *warned is false). */
int br__env_choice(const char *name, const char *const *choices, atomic_bool *warned);

#endif
