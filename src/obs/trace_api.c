/* SPDX-License-Identifier: MIT */
/* braid — braid/trace.h: starting and stopping traces, BRAID_TRACE and
 * BRAID_TRACE_FLIGHT, the flight recorder's triggers and the SIGQUIT dump.
 *
 * The triggers (a crash report, the watchdog, a deadlock, SIGQUIT) may
 * fire in a signal handler: the path is copied into static storage when the
 * session starts, and the writer (trace_json.c) is async-signal-safe. A
 * trigger that finds the buffers held by a writer skips its write rather
 * than wait (it may be that writer's thread it interrupted).
 */
#include <braid.h>
#include <braid/trace.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/trace.h"
#include "obs/trace_int.h"

/* The static build references this symbol (-u br__trace_link, as for the
 * watchdog) so that a static link keeps this file and its constructor:
 * BRAID_TRACE works in programs that never call braid/trace.h. */
void br__trace_link(void) {}

static char path_buf[4096];
static _Atomic bool have_path, flight, ever;
static pid_t owner_pid; /* forked workers do not write their parent's file */
static atomic_int writing;

static size_t env_mb(size_t dflt) {
  const char *e = getenv("BRAID_TRACE_BUFFER_MB");
  if (!e || !*e) return dflt;
  char *end;
  unsigned long long v = strtoull(e, &end, 10);
  if (*end || v == 0 || v > (1u << 20)) {
    br__log(BR_LOG_WARN, "BRAID_TRACE_BUFFER_MB=%s is not a number of MiB (1 .. 1048576): using %zu",
            e, dflt);
    return dflt;
  }
  return (size_t)v;
}

static int write_path(const char *path, bool in_signal) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc = br__trace_export_fd(fd, in_signal);
  if (close(fd) != 0 && !rc) rc = -errno;
  return rc;
}

/* A message without stdio: "flight recorder: <why>: wrote <path>". */
static void say(const char *why, const char *what, const char *path) {
  char b[600];
  size_t n = 0;
  const char *parts[] = {"trace: ", why, ": ", what, " ", path};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
    for (const char *p = parts[i]; *p && n < sizeof b - 1; p++) b[n++] = *p;
  b[n] = 0;
  br__log_raw(BR_LOG_WARN, b);
}

static void on_trigger(const char *why, bool in_signal) {
  if (!atomic_load(&flight) || !atomic_load(&have_path) || getpid() != owner_pid) return;
  int busy = 0;
  if (!atomic_compare_exchange_strong(&writing, &busy, 1)) return; /* one writer at a time */
  int rc = write_path(path_buf, in_signal);
  atomic_store(&writing, 0);
  say(why, rc ? "could not write" : "flight recorder written to", path_buf);
}

/* --- SIGQUIT ------------------------------------------------------------------ */

static struct sigaction prev_quit;
static _Atomic bool quit_on;

static void fd_line(br__dumpout *o, const char *s, size_t n) {
  char nl = '\n';
  while (n) {
    ssize_t w = write(o->fd, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= (size_t)w;
  }
  (void)!write(o->fd, &nl, 1);
}

static void on_quit(int sig) {
  (void)sig;
  int e = errno;
  br__dumpout o = {.line = fd_line, .fd = 2};
  br__dump_all(&o);
  on_trigger("SIGQUIT", true);
  errno = e;
}

int br_dump_on_sigquit(bool on) {
  bool was = atomic_exchange(&quit_on, on);
  if (was == on) return 0;
  if (on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_quit;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGQUIT, &sa, &prev_quit) != 0) {
      atomic_store(&quit_on, false);
      return -errno;
    }
  } else if (sigaction(SIGQUIT, &prev_quit, NULL) != 0) {
    return -errno;
  }
  return 0;
}

/* --- sessions ------------------------------------------------------------------ */

int br_trace_start(const char *path, const br_trace_opts *opts) {
  bool fl = opts && opts->flight;
  if (fl && !path) return BR_EINVAL;
  if (path && strlen(path) >= sizeof path_buf) return BR_EINVAL;
  /* Memory: a flight recorder keeps its last 8 MiB; a whole-run trace with
   * a file has a budget of 16 MiB, keeps half of it in memory and spools
   * the oldest chunks beyond that to a temporary file (trace.c). */
  size_t mb = opts && opts->buffer_mb ? opts->buffer_mb : env_mb(fl ? 8 : 16);
  br__trace_disable();
  atomic_store(&have_path, false);
  if (path) {
    memcpy(path_buf, path, strlen(path) + 1);
    atomic_store(&have_path, true);
  }
  atomic_store(&flight, fl);
  owner_pid = getpid();
  atomic_store_explicit(&br__trace_trigger, on_trigger, memory_order_release);
  if (fl) (void)br_dump_on_sigquit(true);
  int rc = br__trace_enable(mb << 20, !fl && path);
  if (rc == 0) atomic_store(&ever, true);
  return rc;
}

int br_trace_stop(void) {
  if (!br__tracing()) return 0;
  br__trace_finish();
  if (atomic_load(&flight) || !atomic_load(&have_path) || getpid() != owner_pid) return 0;
  uint64_t lost = br__trace_dropped();
  if (lost)
    br__log(BR_LOG_WARN, "trace: the oldest %llu KiB of events were dropped (the spool to disk fell "
            "behind: raise BRAID_TRACE_BUFFER_MB)", (unsigned long long)lost * (sizeof(br__tchunk) / 1024));
  return write_path(path_buf, false);
}

int br_trace_write(const char *path) {
  if (!path) return BR_EINVAL;
  if (!atomic_load(&ever)) return BR_ENOENT;
  return write_path(path, false);
}

bool br_trace_enabled(void) { return br__tracing() != 0; }

/* --- the environment ------------------------------------------------------------- */

static void at_exit(void) {
  if (!br__tracing()) return;
  int rc = br_trace_stop();
  if (rc) br__log(BR_LOG_ERROR, "BRAID_TRACE: could not write %s: %s", path_buf, br_strerror(rc));
}

__attribute__((constructor)) static void trace_from_env(void) {
  const char *full = getenv("BRAID_TRACE"), *fl = getenv("BRAID_TRACE_FLIGHT");
  const char *dbg = getenv("BRAID_DEBUG");
  if (dbg && !strcmp(dbg, "1")) (void)br_dump_on_sigquit(true);
  int rc = 0;
  if (fl && *fl) {
    rc = br_trace_start(fl, &(br_trace_opts){.flight = true});
  } else if (full && *full) {
    rc = br_trace_start(full, NULL);
    if (rc == 0) atexit(at_exit);
  }
  if (rc) br__log(BR_LOG_ERROR, "cannot start tracing: %s", br_strerror(rc));
}
