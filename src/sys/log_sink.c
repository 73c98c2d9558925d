/* SPDX-License-Identifier: MIT */
/* braid — the process-wide message sink; see log_sink.h. */
#include "sys/log_sink.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* The sink and its user data are published together: a reader never pairs
 * one sink with another's ud. Two slots alternate, so a reader holding the
 * previous one (a message in flight) still reads a consistent pair; set the
 * sink at start-up, not in a hot loop. */
typedef struct {
  br__log_sink_fn fn;
  void *ud;
} sink;

static sink slots[2];
static _Atomic(sink *) current;
static unsigned next_slot;
static pthread_mutex_t set_lock = PTHREAD_MUTEX_INITIALIZER;

void br__log_sink_set(br__log_sink_fn fn, void *ud) {
  pthread_mutex_lock(&set_lock);
  if (!fn) {
    atomic_store_explicit(&current, NULL, memory_order_release);
  } else {
    sink *s = &slots[next_slot++ & 1];
    s->fn = fn;
    s->ud = ud;
    atomic_store_explicit(&current, s, memory_order_release);
  }
  pthread_mutex_unlock(&set_lock);
}

static void default_sink(const char *msg) {
  char buf[1024];
  size_t n = strlen(msg);
  if (n > sizeof buf - 8) n = sizeof buf - 8;
  memcpy(buf, "braid: ", 7);
  memcpy(buf + 7, msg, n);
  buf[7 + n] = '\n';
  ssize_t w = write(2, buf, 8 + n);
  (void)w; /* nowhere left to report a failed report */
}

void br__log_emit(int level, const char *msg) {
  sink *s = atomic_load_explicit(&current, memory_order_acquire);
  if (s)
    s->fn(level, msg, s->ud);
  else
    default_sink(msg);
}
