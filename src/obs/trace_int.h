/* SPDX-License-Identifier: MIT */
/* braid — the trace exporters and the flight recorder (obs internals). */
#ifndef BRAID_OBS_TRACE_INT_H
#define BRAID_OBS_TRACE_INT_H

#include <stdbool.h>

/* Write the recorded events to fd as Chrome/Perfetto trace-event JSON
 * (trace_json.c). in_signal: async-signal-safe (the buffers are only
 * try-locked; BR_EBUSY if a writer holds them). 0, BR_ENOMEM, BR_EBUSY or
 * a negated errno of write(2). */
int br__trace_export_fd(int fd, bool in_signal);

#endif
