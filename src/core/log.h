/* SPDX-License-Identifier: MIT */
/* braid — the library's one way to report something (convention 12). */
#ifndef BRAID_CORE_LOG_H
#define BRAID_CORE_LOG_H

#include <braid.h>
#include <stdarg.h>

/* br__log: format a message and hand it to the hook set with br_set_log
 * (default: "braid: <msg>\n" on stderr in one write(2)). Any thread; not
 * async-signal-safe (it formats with vsnprintf): signal handlers use
 * br__log_raw with a message they formatted themselves. */
void br__log(br_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void br__vlog(br_log_level level, const char *fmt, va_list ap);

/* br__log_raw: pass an already formatted message (no stdio, no malloc):
 * async-signal-safe as long as the hook is. */
void br__log_raw(br_log_level level, const char *msg);

#endif
