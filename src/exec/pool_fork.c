/* SPDX-License-Identifier: MIT */
/* pool_fork.c — nested fork-join: br_pool_fork, br_pool_join, leapfrogging.
 *
 * Who runs this code. br_pool_fork and br_pool_join run on the worker that
 * forks (the owner of the deque and of the br_fork frame, which lives on its
 * stack). The only other thread that touches a frame is the thief that stole
 * it (pool_worker.c's run_stolen): it publishes itself in thief, runs the
 * child, writes value / err / msg, and sets done last. After done is
 * visible the thief never touches the frame again, and the joiner may
 * return (its stack frame, and f, are then gone).
 *
 * Locks. None. The deque is Chase-Lev (src/sys/deque.h): one owner pushes
 * and takes at the bottom, thieves steal at the top. done is a futex word
 * (D_RUNNING, D_DONE, D_PARKED) moved by the thief's exchange to D_DONE and
 * the joiner's CAS D_RUNNING -> D_PARKED; whoever sees the other's value
 * knows what to do (wake, or not sleep).
 *
 * The fast path. br_pool_join takes the frame back from its own deque and
 * calls the child: no atomics beyond the deque's one fence, no allocation;
 * br_pool_fork's only shared-memory cost is notify()'s two relaxed loads.
 *
 * Leapfrogging. When the child was stolen, the joiner steals only from that
 * thief until the child is done. When a worker waits in a join, its deque is
 * empty (joins are LIFO and steals take the oldest first, so everything
 * older than the stolen frame was stolen too); hence the thief's deque, at
 * the moment of the steal, was empty and everything in it now descends from
 * our child. Running those keeps the waiting worker busy with work it needs
 * anyway, and bounds the growth of its stack by the depth of the child's
 * work: no unbounded stacking of unrelated stolen work (rayon#854), no
 * deadlock, no extra threads.
 */
#include <sched.h>
#include <stdlib.h>

#include "exec/pool_int.h"

/* The uncommon ends of br_pool_fork, out of line so that the fast path
 * needs no stack frame. */
__attribute__((noinline, cold)) static int fork_refused(br__worker *w, br_fork *f) {
  if (!f) return BR_EINVAL;
  FK(f)->state = F_FAILED;
  FK(f)->err = !w ? BR_EPERM : BR_EINVAL;
  FK(f)->msg = NULL;
  return FK(f)->err;
}

/* No memory to grow the deque: run the child now. Still correct, just serial
 * for this fork. */
__attribute__((noinline, cold)) static int fork_inline(br__worker *w, br_fork *f) {
  br_fork *pcur = w->cur;
  w->cur = f;
  FK(f)->value = FK(f)->fn(FK(f)->arg);
  w->cur = pcur;
  FK(f)->state = F_INLINE;
  return 0;
}

__attribute__((noinline)) static void notify_slow(br_pool *p) { br__pool_wake_one(p); }

int br_pool_fork(br_fork *f, br_pool_fn fn, void *arg) {
  br__worker *w = br__pool_tls_w;
  if (UNLIKELY(!w || !f || !fn)) return fork_refused(w, f);
  FK(f)->fn = fn;
  FK(f)->arg = arg;
  FK(f)->msg = NULL;
  FK(f)->err = 0;
  FK(f)->owner = w;
  FK(f)->root = w->root;
  __atomic_store_n(&FK(f)->thief, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&FK(f)->done, D_RUNNING, __ATOMIC_RELAXED);
  FK(f)->state = F_PUSHED;
  ctr_inc(&w->forks);
  if (UNLIKELY(br__deque_push(&w->dq, f) < 0)) return fork_inline(w, f);
  w->open_forks++;
  /* notify(), with the wake-up out of line. */
  br_pool *p = w->pool;
  if (!p->membarrier) FULL_FENCE();
  if (LIKELY(atomic_load_explicit(&p->nsleeping, memory_order_relaxed) == 0)) return 0;
  if (atomic_load_explicit(&p->nspinning, memory_order_relaxed) != 0) return 0;
  notify_slow(p);
  return 0;
}

static int join_finish(br_fork *f, void **value, char **msg) {
  if (value) *value = FK(f)->value;
  FK(f)->state = F_JOINED;
  int err = FK(f)->err;
  if (msg) *msg = FK(f)->msg;
  else free(FK(f)->msg);
  FK(f)->msg = NULL;
  return err;
}

/* The child was stolen: leapfrog until it is done. */
static void join_wait(br__worker *w, br_fork *f) {
  uintptr_t t;
  /* The thief publishes itself right after winning the CAS on top. */
  while ((t = __atomic_load_n(&FK(f)->thief, __ATOMIC_ACQUIRE)) == 0) cpu_relax();
  br__worker *thief = (br__worker *)t;
  int64_t spin_until = 0, nap = JOIN_PARK_MIN_NS;
  unsigned backoff = 1;
  while (__atomic_load_n(&FK(f)->done, __ATOMIC_ACQUIRE) != D_DONE) {
    void *x = br__deque_steal(&thief->dq);
    if (x == BR__DEQUE_ABORT) continue;
    if (x) {
      br__pool_run_stolen(w, x);
      spin_until = 0;
      backoff = 1;
      nap = JOIN_PARK_MIN_NS;
      continue;
    }
    if (spin_until == 0) spin_until = now_ns() + w->pool->spin_ns;
    if (now_ns() < spin_until) {
      for (unsigned i = 0; i < backoff; i++) cpu_relax();
      if (backoff < 256) backoff *= 2;
      else sched_yield();
      continue;
    }
    /* A long child: park on its done word. Wake up now and then to look at
     * the thief's deque again, since new descendants there are not
     * announced to us. */
    uint32_t z = D_RUNNING;
    if (__atomic_compare_exchange_n(&FK(f)->done, &z, D_PARKED, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE) ||
        z == D_PARKED) {
      ctr_inc(&w->parks);
      futex_wait((_Atomic uint32_t *)&FK(f)->done, D_PARKED, nap);
      if (nap < JOIN_PARK_MAX_NS) nap *= 2;
    }
  }
}

static int join_slow(br__worker *w, br_fork *f, void **value, char **msg) {
  if (!w) return BR_EPERM;
  switch (FK(f)->state) {
  case F_INLINE: return join_finish(f, value, msg);
  case F_FAILED: FK(f)->state = F_JOINED; return FK(f)->err;
  case F_PUSHED: break;
  default: return BR_EINVAL;
  }
  if (FK(f)->owner != w) return BR_EINVAL;
  br_fork *x = br__deque_take(&w->dq);
  if (x == f) {
    w->open_forks--;
    br_fork *pcur = w->cur;
    w->cur = f;
    FK(f)->value = FK(f)->fn(FK(f)->arg);
    w->cur = pcur;
    return join_finish(f, value, msg);
  }
  if (x) {
    /* Not the most recent fork: put it back, refuse. */
    (void)br__deque_push(&w->dq, x);
    return BR_EINVAL;
  }
  w->open_forks--;
  join_wait(w, f);
  return join_finish(f, value, msg);
}

int br_pool_join(br_fork *f, void **value) {
  br__worker *w = br__pool_tls_w;
  if (LIKELY(w && f && FK(f)->state == F_PUSHED && FK(f)->owner == w)) {
    br_fork *x = br__deque_take(&w->dq);
    if (LIKELY(x == f)) {
      /* Not stolen: a plain call. */
      w->open_forks--;
      br_fork *pcur = w->cur;
      w->cur = f;
      void *v = FK(f)->fn(FK(f)->arg);
      w->cur = pcur;
      FK(f)->state = F_JOINED;
      if (value) *value = v;
      if (UNLIKELY(FK(f)->err)) {
        free(FK(f)->msg);
        FK(f)->msg = NULL;
      }
      return FK(f)->err;
    }
    if (x) {
      (void)br__deque_push(&w->dq, x);
      return BR_EINVAL;
    }
    w->open_forks--;
    join_wait(w, f);
    return join_finish(f, value, NULL);
  }
  if (!f) return BR_EINVAL;
  return join_slow(w, f, value, NULL);
}

int br_pool_join_result(br_fork *f, br_result *res) {
  if (!res) return br_pool_join(f, NULL);
  void *value = NULL;
  char *msg = NULL;
  int rc = f ? join_slow(br__pool_tls_w, f, &value, &msg) : BR_EINVAL;
  *res = (br_result){.value = value, .err = rc, .msg = msg};
  return rc;
}
