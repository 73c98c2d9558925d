/* SPDX-License-Identifier: MIT */
/* braid — small helpers shared by the core. */
#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sys/clock.h"
#include "sys/cpu.h"

int64_t br_now(void) { return br__mono_ns(); }

int64_t br_deadline_ms(int64_t ms) {
  if (ms <= 0) return br__mono_ns();
  int64_t now = br__mono_ns();
  if (ms >= (BR_NEVER - now) / 1000000) return BR_NEVER;
  return now + ms * 1000000;
}

int br_cpu_count(void) { return br__cpu_count(); }

char *br__vfmt(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

char *br_strdupf(const char *fmt, ...) {
  if (!fmt) return NULL;
  va_list ap;
  va_start(ap, fmt);
  char *s = br__vfmt(fmt, ap);
  va_end(ap);
  return s;
}

void br_results_free(br_result *r, size_t n) {
  if (!r) return;
  for (size_t i = 0; i < n; i++) {
    free(r[i].msg);
    if (r[i].br__private.value_free && r[i].value) r[i].br__private.value_free(r[i].value);
    r[i] = (br_result){0};
  }
}
