/* SPDX-License-Identifier: MIT */
/* pool_park.c — idle workers: spinning, parking and waking.
 *
 * Who runs this code. park() and stop_spinning() run on a worker thread, for
 * that worker only. wake_one() runs on any thread that just published work
 * (a fork on a worker, a submission from anywhere, through notify() in
 * pool_int.h); wake_all() on the thread shutting the pool down or finishing
 * the last pending job of a stopping pool.
 *
 * Locks. None: everything here is atomics on three kinds of words, each with
 * one rule.
 *  - nspinning counts workers searching for work (looking at deques and the
 *    injection queue without having parked); nsleeping counts those parked
 *    or about to park. Both live on one cache line of the pool that is
 *    written only when a worker parks or wakes, so the fork path reads them
 *    without contention.
 *  - A worker's park word (P_*) is written to P_SLEEPY only by its owner,
 *    and moved away from P_SLEEPY only by a compare-and-swap: by a waker (to
 *    P_WOKEN) or by the owner cancelling its own sleep (to P_AWAKE). Whoever
 *    wins that CAS does the nsleeping / nspinning accounting, so the two
 *    counters are adjusted exactly once per park.
 *  - A worker woken counts as spinning: the waker reserves the spinning slot
 *    for it (CAS nspinning 0 -> 1) before waking it, and hands it over.
 *
 * The protocol, after Go's scheduler (runtime/proc.go, "Worker thread
 * parking/unparking"). Workers that find nothing spin for spin_ns, then park
 * on their own futex word. A producer wakes a parked worker only when nobody
 * is spinning: a spinner will find the new work by itself, and one wake-up
 * costs 25-30 us on the other core. Reserving the slot before the wake-up
 * means a burst of forks issues one wake-up, not one per fork, while the
 * woken worker is still on its way (it takes 30 us to run).
 *
 * A worker about to park: park word SLEEPY, nsleeping++, nspinning--, a
 * full barrier, then one more look for work. A producer: publish the work,
 * then read nsleeping / nspinning. This is a Dekker pattern: each side
 * writes then reads the other's variable, so a store-load barrier is needed
 * on both sides or a wake-up can be lost. To keep the fork path free of a
 * second fence, the parking side pays for both with
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): it forces a full barrier on
 * every running thread of the process, so either the producer's publication
 * is visible to the parking worker's last look, or the producer's read comes
 * after the barrier and sees the parking worker. Where membarrier is
 * unavailable, producers issue a seq_cst fence instead (correct, a few ns
 * slower per fork).
 */
#include <linux/membarrier.h>
#include <sched.h>

#include "exec/pool_int.h"

#ifdef BR__DEQUE_TSAN
_Atomic int br__pool_fence_word;
#endif

bool br__pool_membarrier_register(void) {
  static _Atomic int state; /* 0 unknown, 1 usable, 2 not */
  int s = atomic_load(&state);
  if (s) return s == 1;
  long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  bool ok = q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
            syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  atomic_store(&state, ok ? 1 : 2);
  return ok;
}

/* The parking side's heavy barrier (see the top of this file). */
static void heavy_barrier(br_pool *p) {
  if (p->membarrier && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
    return;
  FULL_FENCE();
}

void br__pool_wake_one(br_pool *p) {
  int zero = 0;
  /* Reserve a spinning slot for the worker we wake; if someone is spinning
   * (or another waker holds the slot) they will find the work. */
  if (!atomic_compare_exchange_strong(&p->nspinning, &zero, 1)) return;
  br__worker *self = br__pool_tls_w;
  int start = self && self->pool == p ? (int)(rng_next(self) % (uint64_t)p->n) : 0;
  for (int i = 0; i < p->n; i++) {
    br__worker *v = p->workers[(start + i) % p->n];
    uint32_t s = P_SLEEPY;
    if (atomic_load_explicit(&v->park, memory_order_relaxed) == P_SLEEPY &&
        atomic_compare_exchange_strong(&v->park, &s, P_WOKEN)) {
      atomic_fetch_sub(&p->nsleeping, 1);
      atomic_fetch_add_explicit(&p->wakes, 1, memory_order_relaxed);
      futex_wake(&v->park, 1);
      return; /* the slot now belongs to v */
    }
  }
  atomic_fetch_sub(&p->nspinning, 1); /* nobody to hand it to */
}

/* For shutdown: every parked worker wakes, counted as spinning. */
void br__pool_wake_all(br_pool *p) {
  for (int i = 0; i < p->n; i++) {
    br__worker *v = p->workers[i];
    uint32_t s = P_SLEEPY;
    if (atomic_compare_exchange_strong(&v->park, &s, P_WOKEN)) {
      atomic_fetch_sub(&p->nsleeping, 1);
      atomic_fetch_add(&p->nspinning, 1);
      futex_wake(&v->park, 1);
    }
  }
}

/* Whether any work is visible: the parking worker's last look. seq_cst
 * loads (plain moves on x86) for the Dekker argument. */
static bool work_visible(br_pool *p) {
  if (atomic_load(&p->inj_count) > 0) return true;
  for (int i = 0; i < p->n; i++) {
    br__deque *q = &p->workers[i]->dq;
    if (atomic_load(&q->bottom) - atomic_load(&q->top) > 0) return true;
  }
  return false;
}

/* A spinning worker found work and stops spinning. If it was the last
 * spinner and more work is visible while others sleep, wake one so the rest
 * does not wait for the next producer (Go's "resetspinning"). */
void br__pool_stop_spinning(br__worker *w) {
  br_pool *p = w->pool;
  if (atomic_fetch_sub(&p->nspinning, 1) == 1 && atomic_load(&p->nsleeping) > 0 &&
      work_visible(p))
    br__pool_wake_one(p);
}

/* Park until woken. Called by a spinning worker; on return it counts as
 * spinning again. */
void br__pool_park(br__worker *w) {
  br_pool *p = w->pool;
  atomic_store(&w->park, P_SLEEPY);
  atomic_fetch_add(&p->nsleeping, 1);
  atomic_fetch_sub(&p->nspinning, 1);
  heavy_barrier(p);
  if (work_visible(p) || br__pool_should_exit(p)) {
    uint32_t s = P_SLEEPY;
    if (atomic_compare_exchange_strong(&w->park, &s, P_AWAKE)) {
      /* We cancelled our own sleep: undo our accounting. */
      atomic_fetch_sub(&p->nsleeping, 1);
      atomic_fetch_add(&p->nspinning, 1);
      return;
    }
    /* A waker got here first and accounted for us. */
    atomic_store(&w->park, P_AWAKE);
    return;
  }
  ctr_inc(&w->parks);
  while (atomic_load(&w->park) == P_SLEEPY) futex_wait(&w->park, P_SLEEPY, 0);
  atomic_store(&w->park, P_AWAKE);
}
