/* braid — watchdog hooks for the core (not public; see braid/io.h for the
 * public br_watchdog_* calls). */
#ifndef BRAID_OBS_WATCHDOG_H
#define BRAID_OBS_WATCHDOG_H

#include <braid.h>

/* For the core: br_loop_new calls created() once the loop is ready, and
 * br_loop_free calls freed() before releasing it. created() watches the
 * loop when BRAID_DEBUG=1 (threshold BRAID_WATCHDOG_MS, default 100 ms) and
 * does nothing otherwise; freed() stops watching it if it was watched.
 * Both are cheap when the watchdog is off, and safe from any thread. */
void br__watchdog_loop_created(br_loop *loop);
void br__watchdog_loop_freed(br_loop *loop);

#endif
