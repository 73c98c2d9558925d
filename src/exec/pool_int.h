/* SPDX-License-Identifier: MIT */
/* pool_int.h — the CPU pool's private structures and the contracts between
 * its files (not public; braid/pool.h is the public face).
 *
 * The pool is split by who runs the code and which lock rules apply:
 *
 *   pool.c         lifecycle: new, shutdown, free, stats. Called by the
 *                  pool's owner from outside the pool; shut_lock.
 *   pool_submit.c  jobs and the injection queue: submit, cancellation of a
 *                  queued job, the job's references. Any thread; inj_lock.
 *   pool_worker.c  the worker loop, running jobs and stolen children, the
 *                  helping wait, the job context (br_fail / br_cancelled /
 *                  br_await inside pool work). Worker threads only; no lock.
 *   pool_park.c    idle workers: spinning, parking, waking (the Dekker
 *                  protocol over nspinning / nsleeping). Lock-free.
 *   pool_fork.c    br_pool_fork / br_pool_join and leapfrogging. The forking
 *                  worker, and a thief; lock-free, one owner per deque.
 *   pool_map.c     br_pool_map / _map_fixed / _for / _reduce: recursive
 *                  splitting over fork-join. Any thread; par->err_lock.
 *
 * Lock order, for the whole pool: shut_lock, then inj_lock, then a
 * par->err_lock; inj_lock and err_lock are leaves under which no user code,
 * future call or other lock is ever taken. The lock-free parts (deques, park
 * words, the spinning / sleeping counters) are described in pool_park.c and
 * pool_fork.c.
 */
#ifndef BRAID_EXEC_POOL_INT_H
#define BRAID_EXEC_POOL_INT_H

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "braid.h"
#include "core/job.h"
#include "sys/deque.h"
#include "sys/clock.h"
#include "sys/futex.h"
#include "sys/spin.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A full (store-load) barrier. ThreadSanitizer does not support stand-alone
 * fences (gcc refuses them with -Wtsan), so under TSan a seq_cst read-modify-
 * write stands in: TSan implements it with a locked instruction, which is a
 * full barrier on the hardware we run on. */
#ifdef BR__DEQUE_TSAN
extern _Atomic int br__pool_fence_word;
#define FULL_FENCE() ((void)atomic_fetch_add_explicit(&br__pool_fence_word, 0, memory_order_seq_cst))
#else
#define FULL_FENCE() atomic_thread_fence(memory_order_seq_cst)
#endif

/* br_fork.br__private.state values. Distinct non-trivial constants so that
 * joining a br_fork that was never forked is caught (most of the time). */
enum {
  F_PUSHED = 0x5a1, /* in the owner's deque, or stolen */
  F_INLINE = 0x5a2, /* ran at fork time (deque could not grow) */
  F_FAILED = 0x5a3, /* the fork itself failed; err says why */
  F_JOINED = 0x5a4, /* joined: nothing left to collect */
  F_JOB = 0x5a5     /* header of a heap br__pjob */
};

/* br_fork done values (a futex word). */
enum { D_RUNNING = 0, D_DONE = 1, D_PARKED = 2 };

/* Worker park word. */
enum { P_AWAKE = 0, P_SLEEPY = 1, P_WOKEN = 2, P_EXITED = 3 };

/* Pool state. */
enum { S_RUNNING = 0, S_DRAIN = 1, S_CANCEL = 2 };

/* Injection-queue state of a job (under inj_lock). */
enum { Q_NEW = 0, Q_QUEUED, Q_TAKEN, Q_UNLINKED };

/* How a job accepted by the pool ended. */
enum { END_RAN, END_FAILED, END_CANCELLED };

#define DEFAULT_SPIN_NS 50000
#define DEFAULT_STACK (8u << 20)
#define DEQUE_INITIAL 256
#define MAX_HELP_DEPTH 16
#define JOIN_PARK_MIN_NS 50000
#define JOIN_PARK_MAX_NS 1000000

/* Shorthands for the private block of a br_fork. */
#define FK(f) (&(f)->br__private)

typedef struct br__worker br__worker;

/* A job accepted through the injection queue: a submitted job, or the root
 * of a map / for / reduce called from outside the pool. Its header is a
 * br_fork whose state is F_JOB, so that a worker can tell it from a stolen
 * child. The future, its cancel hook and the record's references are the
 * core's (core/job.h); pool_submit.c says how the pool plays its part. */
typedef struct br__pjob {
  br_fork fk; /* fn, arg, value, err, msg; state == F_JOB. First. */
  br__job core; /* core.fut: the record's reference to the job's future */
  br_pool *pool;
  struct br__pjob *next, *prev; /* injection queue, under inj_lock */
  int qstate;            /* Q_*, under inj_lock */
  _Atomic int cancelled; /* its future was cancelled, or its caller gave up */
} br__pjob;

/* The roots of everything running on a worker's stack, innermost first
 * (the helping wait's deadlock check). Lives on the worker's stack. */
typedef struct br__chain {
  br__pjob *job;
  struct br__chain *prev;
} br__chain;

/* Counters written by their worker only, read racily by br_pool_get_stats.
 * Relaxed load + store (not fetch_add): a plain increment on x86, and no data
 * race for ThreadSanitizer. */
typedef _Atomic uint64_t br__ctr;
static inline void ctr_inc(br__ctr *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}
static inline void ctr_add(br__ctr *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* A worker. Everything but park, the counters and dq's top is touched only
 * by the worker's own thread. */
struct br__worker {
  br__deque dq; /* first: cache-line aligned */
  br_pool *pool;
  int index;
  br_fork *cur;     /* outcome slot of what runs now (br_fail) */
  br__pjob *root;   /* the job what runs now descends from */
  br__chain *chain; /* roots on this stack, for the helping wait */
  int help_depth;
  int64_t open_forks; /* forked and not yet joined, on this worker's stack */
  uint64_t rng;
  _Alignas(BR__CACHELINE) _Atomic uint32_t park; /* P_*, futex word */
  br__ctr forks, steals, parks;
  br__ctr run_ns, cpu_ns, blocked; /* pool work's run vs CPU time (pool_worker.c) */
  pthread_t thread;
  bool started;
  /* The open accounting window (pool_worker.c): the thread's CPU clock when
   * it opened (-1: none open), the cycle counter then, the ticks of pool work
   * run in it, and what "a long piece of work" is in ticks; the thread's
   * voluntary context switches when it opened. */
  int64_t acct_cpu0;
  long acct_vcsw;
  uint64_t acct_t0, acct_run, acct_long, acct_window;
  /* Current while the worker runs pool work (pool_worker.c). Last: only its
   * address is used on the hot paths, so it stays off the lines above. */
  br__job_ctx ctx;
};

struct br_pool {
  int n;
  br__worker **workers;
  int64_t spin_ns;
  bool membarrier;

  _Alignas(BR__CACHELINE) _Atomic int nspinning;
  _Atomic int nsleeping;

  _Alignas(BR__CACHELINE) pthread_mutex_t inj_lock;
  br__pjob *inj_head, *inj_tail;
  _Atomic int64_t inj_count;
  _Atomic int state;       /* S_*, written under inj_lock */
  _Atomic int64_t pending; /* jobs accepted and not finished */

  _Atomic int refs;  /* the user's handle + one per live job */
  _Atomic int live;  /* workers not yet exited */
  br_future *exited; /* completed by the last worker to exit */
  pthread_mutex_t shut_lock;
  bool shut_done;
  br_pool_report report;
  uint64_t snap_completed, snap_cancelled;

  _Atomic uint64_t submitted, completed, failed, cancelled, wakes;
};

/* The worker the calling thread is, or NULL. Set by worker_main only. */
extern __thread br__worker *br__pool_tls_w __attribute__((tls_model("initial-exec")));

/* ------------------------------------------------------------------------ */
/* Small system helpers                                                      */

/* The sys layer's helpers (sys/spin.h, sys/clock.h, sys/futex.h). */
static inline void cpu_relax(void) { br__cpu_pause(); }

static inline int64_t now_ns(void) { return br__mono_ns(); }

/* timeout_ns <= 0: no limit. */
static inline void futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns) {
  (void)br__futex_wait(addr, val, timeout_ns > 0 ? timeout_ns : -1, false);
}

/* Waking an address whose owner may already have moved on (a stack frame
 * that returned) is harmless: at worst a spurious wake-up of a futex that
 * reuses the address, and every waiter here re-checks its condition. */
static inline void futex_wake(_Atomic uint32_t *addr, int n) { br__futex_wake(addr, n, false); }

static inline uint64_t rng_next(br__worker *w) {
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return w->rng = x;
}

/* Whether the workers may exit: the pool is stopping and nothing it
 * accepted is left to run. */
static inline bool br__pool_should_exit(br_pool *p) {
  return atomic_load(&p->state) != S_RUNNING && atomic_load(&p->pending) == 0;
}

/* ------------------------------------------------------------------------ */
/* pool_park.c: idle workers                                                 */

bool br__pool_membarrier_register(void);
void br__pool_wake_one(br_pool *p);
void br__pool_wake_all(br_pool *p);
void br__pool_stop_spinning(br__worker *w);
void br__pool_park(br__worker *w);

/* notify: new work was published (a fork, a submitted job). The light side
 * of the Dekker pair of pool_park.c: with membarrier it is two relaxed loads
 * of a line that is written only when workers park or wake. */
static inline void br__pool_notify(br_pool *p) {
  if (!p->membarrier) FULL_FENCE();
  if (LIKELY(atomic_load_explicit(&p->nsleeping, memory_order_relaxed) == 0)) return;
  if (atomic_load_explicit(&p->nspinning, memory_order_relaxed) != 0) return;
  br__pool_wake_one(p);
}

/* ------------------------------------------------------------------------ */
/* pool_submit.c: jobs and the injection queue                               */

int br__pool_job_new(br__pjob **job, br_future **fut, br_pool *p, br_pool_fn fn, void *arg);
void br__pool_job_finished(br_pool *p, int how);
int br__pool_inj_push(br_pool *p, br__pjob *job);
br__pjob *br__pool_inj_pop(br_pool *p);
br__pjob *br__pool_inj_take(br_pool *p, br_future *f);

/* ------------------------------------------------------------------------ */
/* pool_worker.c: running work                                               */

void *br__pool_worker_main(void *arg);
void br__pool_run_stolen(br__worker *w, br_fork *f);
br_fork *br__pool_find_work(br__worker *w);
int br__pool_worker_wait(br__worker *w, br_future *f, int64_t deadline);
int br__pool_cancelled(br__worker *w);
void br__pool_ctx_init(br__worker *w);

/* ------------------------------------------------------------------------ */
/* pool.c: lifecycle                                                         */

void br__pool_release(br_pool *p);

#endif
