/* SPDX-License-Identifier: MIT */
/* braid — br_set_log and br__log: formatting on top of the sys layer's
 * process-wide sink (sys/log_sink.h). */
#include "core/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "sys/log_sink.h"

/* The user's hook and data, handed to the sink as its ud; two pairs
 * alternate for the same reason as the sink's own slots. */
typedef struct {
  br_log_fn fn;
  void *ud;
} user_hook;

static user_hook hooks[2];
static unsigned next_hook;
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;

static void trampoline(int level, const char *msg, void *ud) {
  const user_hook *h = ud;
  h->fn((br_log_level)level, msg, h->ud);
}

void br_set_log(br_log_fn fn, void *ud) {
  if (!fn) {
    br__log_sink_set(NULL, NULL);
    return;
  }
  pthread_mutex_lock(&hook_lock);
  user_hook *h = &hooks[next_hook++ & 1];
  h->fn = fn;
  h->ud = ud;
  br__log_sink_set(trampoline, h); /* publishes h (release) */
  pthread_mutex_unlock(&hook_lock);
}

void br__log_raw(br_log_level level, const char *msg) { br__log_emit((int)level, msg); }

void br__vlog(br_log_level level, const char *fmt, va_list ap) {
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  /* One line: the sink adds its own newline. */
  size_t len = strlen(buf);
  if (len && buf[len - 1] == '\n') buf[len - 1] = '\0';
  br__log_emit((int)level, buf);
}

void br__log(br_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  br__vlog(level, fmt, ap);
  va_end(ap);
}
