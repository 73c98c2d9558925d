/* braid — hooks the loop offers to the facilities above the core (io, obs).
 * Not public API. */
#ifndef BRAID_CORE_LOOP_H
#define BRAID_CORE_LOOP_H

#include <braid.h>
#include <pthread.h>
#include <stdint.h>

#include "backends/poller.h"

/* The loop's poller (for backends offering native operations). */
br__poller *br__loop_poller(br_loop *loop);
/* br_now() at the loop's last return from its poller; 0 while it sleeps in
 * the poller (idle is not stuck). Read racily by the watchdog thread: a torn
 * read is impossible for an aligned int64 on our targets. */
int64_t br__loop_heartbeat(br_loop *loop);
/* Name of the task running now, or NULL (loop thread only, or racy read for
 * diagnostics). */
const char *br__loop_current_task_name(br_loop *loop);
pthread_t br__loop_thread(br_loop *loop);

#endif
