/* SPDX-License-Identifier: MIT */
/* braid — where the library's messages go (sys layer): one sink for the
 * whole process, usable from a signal handler. The core's log.c (br__log,
 * br_set_log) formats messages and installs the user's hook here; the sys
 * layer itself, which knows nothing of braid, emits its few fatal messages
 * directly. Levels are the values of braid.h's br_log_level (0 error,
 * 1 warn, 2 info, 3 debug). */
#ifndef BRAID_SYS_LOG_SINK_H
#define BRAID_SYS_LOG_SINK_H

typedef void (*br__log_sink_fn)(int level, const char *msg, void *ud);

/* Install fn(level, msg, ud) as the sink (NULL: the default, "braid: <msg>\n"
 * on stderr in one write(2)). Any thread; a message racing with a change
 * goes to the old sink or the new one. */
void br__log_sink_set(br__log_sink_fn fn, void *ud);

/* Emit one formatted line (no trailing newline needed). Async-signal-safe
 * with the default sink (an atomic load and a write(2)). */
void br__log_emit(int level, const char *msg);

#endif
