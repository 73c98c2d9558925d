/* SPDX-License-Identifier: MIT */
/* braid — reading braid's environment variables (see env.h). */
#include "core/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int br__env_long(const char *name, long long lo, long long hi, long long *out,
                 atomic_bool *warned) {
  const char *s = getenv(name);
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (errno == 0 && end != s && *end == '\0' && v >= lo && v <= hi) {
    *out = v;
    return 1;
  }
  if (!atomic_exchange(warned, true))
    br__log(BR_LOG_WARN, "%s=%s is not a whole number in %lld .. %lld: ignored", name, s, lo, hi);
  return -1;
}

int br__env_choice(const char *name, const char *const *choices, atomic_bool *warned) {
  const char *s = getenv(name);
  if (!s || !*s) return -1;
  for (int i = 0; choices[i]; i++)
    if (!strcmp(s, choices[i])) return i;
  if (!atomic_exchange(warned, true)) {
    char want[160] = "";
    size_t n = 0;
    for (int i = 0; choices[i] && n < sizeof want; i++)
      n += (size_t)snprintf(want + n, sizeof want - n, "%s%s", i ? ", " : "", choices[i]);
    br__log(BR_LOG_WARN, "%s=%s is not one of %s: ignored", name, s, want);
  }
  return -2;
}
