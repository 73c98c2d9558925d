/* braid — the log hook (br_set_log) and br__log. */
#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The hook and its user data are published together: a reader never pairs
 * one hook with another's ud. */
typedef struct {
  br_log_fn fn;
  void *ud;
} log_sink;

static log_sink sinks[2];
static _Atomic(log_sink *) current;
static atomic_int next_slot;
static pthread_mutex_t set_lock = PTHREAD_MUTEX_INITIALIZER;

void br_set_log(br_log_fn fn, void *ud) {
  pthread_mutex_lock(&set_lock);
  if (!fn) {
    atomic_store_explicit(&current, NULL, memory_order_release);
  } else {
    /* Alternate between two slots so a reader holding the old one still
     * reads a consistent pair (a reader races at most one update). */
    int i = atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) & 1;
    sinks[i].fn = fn;
    sinks[i].ud = ud;
    atomic_store_explicit(&current, &sinks[i], memory_order_release);
  }
  pthread_mutex_unlock(&set_lock);
}

static void default_sink(const char *msg) {
  char buf[1024];
  size_t n = strlen(msg);
  if (n > sizeof buf - 9) n = sizeof buf - 9;
  memcpy(buf, "braid: ", 7);
  memcpy(buf + 7, msg, n);
  buf[7 + n] = '\n';
  ssize_t w = write(2, buf, 8 + n);
  (void)w;
}

void br__log_raw(br_log_level level, const char *msg) {
  log_sink *s = atomic_load_explicit(&current, memory_order_acquire);
  if (s) {
    s->fn(level, msg, s->ud);
    return;
  }
  default_sink(msg);
}

void br__vlog(br_log_level level, const char *fmt, va_list ap) {
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  /* Strip one trailing newline: the sink adds its own. */
  size_t len = strlen(buf);
  if (len && buf[len - 1] == '\n') buf[len - 1] = '\0';
  br__log_raw(level, buf);
}

void br__log(br_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  br__vlog(level, fmt, ap);
  va_end(ap);
}
