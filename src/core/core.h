/* SPDX-License-Identifier: MIT */
/* braid — core internals shared by the core's files (not public).
 *
 * Threading model: a loop and its tasks live on one thread. Only futures,
 * br_call_soon_threadsafe, br_loop_stop and the remote run queue are touched
 * by other threads; everything else here is owned by the loop thread and
 * needs no locking.
 */
#ifndef BRAID_CORE_CORE_H
#define BRAID_CORE_CORE_H

#include <braid.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/poller.h"
#include "core/timer.h"
#include "sys/clock.h"
#include "sys/stack.h"
#include "sys/switch.h"

#define BR__TASK_MAGIC 0x7a5cb4a1u
#define BR__TASK_DEAD 0xdead7a5cu

enum br__task_state {
  BR__NEW,     /* spawned, not yet run */
  BR__READY,   /* on the run queue */
  BR__RUNNING,
  BR__PARKED,  /* waiting for a wake-up */
  BR__DONE     /* body returned; stack released */
};

/* Something a parked task can be woken by, living in the task itself so
 * waiting allocates nothing. */
typedef struct br__waiter {
  struct br__waiter *prev, *next;
  struct br__task *task;     /* for task waiters */
  bool linked;
  /* for thread waiters (a plain thread blocked on a future) */
  atomic_int *futex;
  /* for callbacks */
  br_callback_fn cb;
  void *cb_arg;
  /* 1 from the moment a completer takes this waiter out (under the future's
   * lock) until it has woken it; see br__future_complete_ex. */
  atomic_int waking;
} br__waiter;

struct br_future {
  atomic_int lock;          /* spinlock: guards everything below */
  atomic_int refs;
  atomic_int done;          /* 0 pending, 1 complete (release-published) */
  void *value;
  int err;
  char *msg;                /* malloc'd, NULL if none */
  br__waiter *waiters;      /* doubly linked, under lock */
  br_callback_fn cancel_hook;
  void *cancel_arg;
  void (*value_free)(void *); /* frees an owned value nobody took */
  /* When the future is embedded in a task, the task is freed with it. */
  struct br__task *owner_task;
  /* What completes it, for the wait record of a task awaiting it
   * (br_wait_kind: BR_WAIT_POOL, _BLOCKING, _PROCPOOL, _IO; 0 for a plain
   * future). Set by its executor with br__future_set_origin (core/trace.h). */
  uint8_t origin;
};

/* What a parked task waits on (set by the wait just before it parks, read
 * by br_task_get_stats, the tracer, br_dump and the deadlock check). */
typedef struct br__wait {
  uint8_t kind;            /* br_wait_kind */
  const char *what;        /* static text: "receive", "mutex", "read" ... or NULL */
  const void *obj;         /* the channel, mutex, future ... waited on */
  struct br__task *task;   /* the task that would end it (join target, mutex owner) */
  int64_t arg;             /* fd, pid, ... (-1: none) */
  int64_t deadline;        /* the park's deadline (BR_NEVER: none) */
} br__wait;

struct br__task {
  uint32_t magic;
  uint8_t state;
  bool compact;
  bool handle_held;       /* a user handle is outstanding */
  bool detached;
  bool cancelled;         /* br_cancel was called */
  bool orphan;            /* outlived its loop (someone still holds its future) */
  bool gather_mark;       /* br_gather_tasks' duplicate check */
  br__ctx ctx;
  struct br_loop *loop;
  struct br__task *next;   /* run-queue link */
  br_task_fn fn;
  void *arg;
  br__stack *stack;       /* own stack, or NULL for compact tasks */
  /* compact mode: the live part of the shared stack while suspended */
  char *saved;
  size_t saved_len, saved_cap;
  /* parking */
  atomic_int parked;      /* 1 while parked and no wake claimed */
  int wake_code;
  bool park_cancellable;  /* the current park may be interrupted by cancel */
  bool park_remote;       /* parked where another thread may wake it */
  br__waiter waitnode;    /* for waiting on one future (join, await) */
  /* sync wait queues (sync/waitq.h) */
  struct br__task *wq_next, *wq_prev;
  void *wq_ptr;           /* the waiter's element buffer (its own stack) */
  bool wq_linked, wq_done;
  br__timer timer;
  struct br_scope *scope; /* innermost cancel scope */
  struct br_group *group;
  struct br__task *group_next, *group_prev;
  /* outcome (the task's future) */
  struct br_future fut;
  int fail_code;
  char *fail_msg;
  void *result;
  /* accounting */
  uint64_t id;
  uint64_t created, finished; /* br__ticks(): a cycle-counter read is cheap */
  uint64_t run_ticks, resumed_at;
  int64_t cpu_ns, cpu_at;
  uint64_t switches;
  void *tsan_fiber;
  struct br__task *all_next, *all_prev; /* every task whose memory is held */
  /* what it waits on while parked, and for how long it waited by kind
   * (core/trace.h: the one record the stats, tracer, dump and deadlock
   * check read) */
  br__wait wait;
  uint64_t parent_id;     /* the spawning task's id on this loop, 0 if none */
  uint64_t suspended_at;  /* br__ticks() at its last suspend (accounting on) */
  uint16_t wait_seen;     /* bit k: wait_ticks[k] is this task's (else stale) */
  uint32_t trace_gen;     /* tracer generation its name was last recorded in */
  char name[32];          /* spawn zeroes everything up to here */
  /* The handle's slot and generation (handle.c): kept while the struct is
   * recycled, so they live past the part spawn zeroes. */
  uint32_t slot, gen;
  /* Time parked by kind, in ticks. Not zeroed at spawn (a spawn would pay
   * for 100 bytes most tasks never use): an entry counts once its bit in
   * wait_seen is set. */
  uint64_t wait_ticks[BR_WAIT_KINDS];
};

typedef struct br__cb {
  struct br__cb *next;
  br_callback_fn fn;
  void *arg;
} br__cb;

typedef struct br__fdrec {
  struct br__task *reader, *writer;
  uint8_t ready;  /* readiness bits seen and not yet consumed */
  bool armed;
  bool not_socket; /* the poller refused a socket operation on it (ENOTSOCK) */
  /* Receive and send in flight in the poller (br__sock_io), one each. */
  struct br__sockop *rx, *tx;
} br__fdrec;

struct br_loop {
  pthread_t thread;
  bool running, stopping, freeing;
  atomic_bool stop_flag;
  br_loop_opts opts;
  br_accounting acct;
  size_t stack_size;
  br__ctx sched;                 /* the scheduler's own context */
  void *sched_tsan;
  /* TSan builds: br_run owns SIGINT and has not had one yet, so it is
   * blocked while tasks run (br__loop_iterate, core/loop.c). Loop thread
   * only. */
  bool tsan_hold_sigint;
  struct br__task *current;
  struct br__task *until;         /* br_run / run_until target: stop blocking once done */
  /* run queue (FIFO, intrusive) */
  struct br__task *rq_head, *rq_tail;
  size_t ready;
  size_t budget;                 /* resumes left in this iteration */
  br__cb *cb_head, *cb_tail;     /* call_soon */
  /* remote wake-ups and callbacks from other threads */
  pthread_mutex_t remote_lock;
  struct br__task *remote_tasks;  /* LIFO, reversed when drained */
  br__cb *remote_cbs;
  size_t remote_ncbs;             /* on remote_cbs (BR_CALL_SOON_THREADSAFE_MAX) */
  struct br__task *remote_free;   /* tasks whose last ref went on another thread */
  atomic_int remote_pending;
  atomic_int sleeping;           /* 1 while (about to be) in poll */
  bool remote_closed;
  /* timers */
  br__timer_heap timers;
  /* tasks */
  size_t live;                   /* tasks not yet DONE */
  size_t handles;                /* tasks whose memory is not yet freed */
  uint64_t next_id;
  struct br__task *all;
  struct br__task *free_tasks;    /* recycled task structs */
  br__stack_cache stacks;
  /* compact mode */
  br__stack *shared;             /* the shared stack */
  struct br__task *shared_owner;  /* whose frames are on it now */
  /* I/O */
  br__poller poller;
  br__fdrec *fds;
  size_t nfds;
  _Atomic int64_t heartbeat;     /* br_now() at the last return from poll */
  unsigned busy_iters;           /* iterations since the last poll while busy */
  /* unobserved failures to report at free */
  size_t unobserved;
  /* tracing, dump and deadlock check (core/trace.h) */
  uint32_t serial;               /* process-wide loop number (from 1) */
  bool no_deadlock_check;        /* br_loop_set_deadlock_check(loop, false) */
  atomic_bool foreign_cbs;       /* another thread has handed it a callback */
};

extern _Thread_local struct br_loop *br__tls_loop;

/* --- scheduling (task.c) --- */
static inline struct br__task *br__self_inline(void) {
  struct br_loop *L = br__tls_loop;
  return L ? L->current : NULL;
}
/* The calling task, or NULL from a plain thread or a loop callback. */
#define br__require_task() br__self_inline()
int br__checkpoint_slow(struct br__task *t);
/* The common case (no scope, not cancelled) without a call. */
static inline int br__checkpoint(struct br__task *t) {
  if (!t->scope && !t->cancelled) return 0;
  return br__checkpoint_slow(t);
}
void br__ready(struct br__task *t);                 /* loop thread */
void br__wake(struct br__task *t, int code);        /* loop thread: claim + ready */
bool br__wake_any_thread(struct br__task *t, int code); /* claim + ready or remote */
/* Parking: br__park_begin(t), publish t somewhere a waker finds it, then
 * br__park_end(t, deadline, cancellable) suspends until woken or `deadline`
 * (also scope deadlines). It returns the wake code: 0 or what the waker
 * passed, BR_ETIMEDOUT at a deadline, BR_ECANCELED on cancel; at once
 * (without suspending) if the task is already cancelled or past its
 * deadline and the park is cancellable. */
void br__park_begin(struct br__task *t);
/* As br__park_begin, for waits another thread may end (foreign futures). */
void br__park_begin_remote(struct br__task *t);
int br__park_end(struct br__task *t, int64_t deadline, bool cancellable);
void br__run_ready(struct br_loop *L);
#ifdef BRAID_TSAN
/* br_signal_open took SIGINT on this thread: br__loop_iterate must leave it
 * blocked (core/loop.c). */
void br__tsan_sigint_claimed(void);
#endif
void br__timer_fired(br__timer *tm);
void br__task_future_gone(struct br__task *t);
/* Wake t if it is parked cancellably and a scope cancel now reaches it. */
void br__scope_cancel_wake(struct br__task *t);
/* Whether a deadline (not a cancel) of t's scopes has passed. */
bool br__scope_expired(struct br__task *t);
/* Whether t is a live task struct (not NULL, not recycled). */
bool br__task_valid(const struct br__task *t);
/* --- handles (handle.c): br_task * values are slot + generation --- */
int br__task_slot_new(struct br__task *t);       /* a fresh struct: BR_ENOMEM, BR_ELIMIT */
void br__task_slot_retire(struct br__task *t);   /* struct recycled: old handles die */
void br__task_slot_free(struct br__task *t);     /* struct freed: slot back to the table */
br_task *br__task_handle(const struct br__task *t);
/* The live task a handle names, or NULL (stale, garbage, NULL). */
struct br__task *br__task_get(br_task *h);
const char *br__task_name(struct br__task *t);
int br__loop_spawn(struct br_loop *L, struct br__task **out, br_task_fn fn, void *arg,
                   const br_spawn_opts *opts);
/* Give the user handle back (join, close, detach, gather, loop free). */
void br__task_release(struct br__task *t);
/* Wait (as `self`) until t is done; BR_ECANCELED/BR_ETIMEDOUT if interrupted. */
int br__task_wait_done(struct br__task *self, struct br__task *t, int64_t deadline,
                       bool cancellable);
void br__task_cancel(struct br__task *t);
int br__run_until(struct br_loop *loop, struct br__task *t); /* outside tasks */

/* A pointer into t's stack, usable now: a suspended compact task's frames
 * live in its save buffer, not on the shared stack. */
void *br__task_addr_slow(struct br__task *t, void *p);
static inline void *br__task_addr(struct br__task *t, void *p) {
  return t->compact ? br__task_addr_slow(t, p) : p;
}

/* --- loop (loop.c) --- */
int br__loop_iterate(struct br_loop *loop, bool block);
void br__remote_push_task(struct br_loop *loop, struct br__task *t);
void br__remote_push_free(struct br_loop *loop, struct br__task *t);
void br__task_free_mem(struct br__task *t);      /* loop thread */
void br__task_free_orphan(struct br__task *t);   /* its loop is gone: any thread */
void br__task_struct_freed(struct br__task *t);  /* slot back, struct freed */
long br__task_structs_live(void);                /* task structs not yet freed */
/* Report a detached task's failure: the loop's on_detached_error, else the
 * log hook (br__log). */
void br__report_failure_code(struct br__task *t, int code, const char *msg);

/* --- futures (future.c) --- */
void br__future_init(struct br_future *f, struct br__task *owner);
int br__future_complete(struct br_future *f, void *value, int err, char *msg);
/* As br__future_complete; value_free (may be NULL) makes the value owned. */
int br__future_complete_ex(struct br_future *f, void *value, void (*value_free)(void *), int err,
                           char *msg);
void br__waiter_settle(br__waiter *w);
void br__future_lock(struct br_future *f);
void br__future_unlock(struct br_future *f);
void br__waiter_link(struct br_future *f, br__waiter *w);
void br__waiter_unlink(struct br_future *f, br__waiter *w);

/* --- fds (fdwait.c) --- */
void br__fd_ready(void *ctx, int fd, int events);
void br__fds_free(struct br_loop *loop);

/* --- groups (group.c) --- */
void br__group_child_done(struct br__task *t);

/* --- overflow detection (overflow.c) --- */
void br__overflow_install(void);

/* --- loop.c --- */
/* br_call_soon_threadsafe for braid's own messages to a loop (a
 * cancellation), which a queue the user's callbacks filled must not refuse:
 * no BR_EAGAIN. The caller bounds how many it sends (one per loop and
 * event). Errors: BR_EINVAL, BR_ENOMEM, BR_ECLOSED. Any thread. */
int br__call_soon_control(br_loop *loop, br_callback_fn cb, void *arg);

/* --- util.c --- */
/* malloc'd vsnprintf; NULL on ENOMEM. */
char *br__vfmt(const char *fmt, __builtin_va_list ap);

/* --- overflow.c: the alternate signal stack of a thread running a loop --- */
void br__overflow_thread_begin(void);
void br__overflow_thread_end(void);

/* --- future.c --- */
/* Wait for f as the caller can: a task parks, an executor's job waits its
 * executor's way (job.h), a plain thread blocks. 0 once f is complete,
 * BR_ETIMEDOUT, BR_ECANCELED, BR_EDEADLK, BR_ENOTTASK (loop callback). */
int br__future_wait(struct br_future *f, int64_t deadline);

#endif
