/* pool.c — the work-stealing CPU pool (braid/pool.h).
 *
 * Shape. N workers, each owning a Chase-Lev deque (src/sys/deque.h) of
 * br_fork pointers, plus one injection queue (a mutex-protected list) for
 * jobs submitted with br_pool_submit and for the roots of map / for / reduce
 * called from outside the pool. Deques hold only forked children; submitted
 * jobs only ever sit in the injection queue. An idle worker looks for work
 * in this order: steal from another worker's deque (finish started work
 * first), then the injection queue.
 *
 * Fork-join. br_pool_fork pushes a frame that lives on the forking job's
 * stack; br_pool_join takes it back (the common case: a plain call of the
 * child, no atomics beyond the deque's one fence) or, if a thief stole it,
 * leapfrogs: it steals only from that thief until the child is done. When a
 * worker waits in a join, its deque is empty (joins are LIFO and steals take
 * the oldest first, so everything older than the stolen frame was stolen
 * too); hence the thief's deque, at the moment of the steal, was empty and
 * everything in it now descends from our child. Running those keeps the
 * waiting worker busy with work it needs anyway, and bounds the growth of its
 * stack by the depth of the child's work: no unbounded stacking of unrelated
 * stolen work (rayon#854), no deadlock, no extra threads.
 *
 * Sleeping. Workers that find nothing spin for spin_ns, then park on their own
 * futex word. A producer (fork, submit) wakes a parked worker only when
 * nobody is spinning: a spinner will find the new work by itself, and one
 * wake-up costs 25-30 us on the other core. The protocol, after Go's
 * scheduler (runtime/proc.go, "Worker thread parking/unparking"):
 *
 *  - nspinning counts workers searching for work; nsleeping those parked or
 *    about to park. A waker first reserves a spinning slot (CAS nspinning
 *    0 -> 1) and hands it to the worker it wakes, so a burst of forks issues
 *    one wake-up, not one per fork, while the woken worker is still on its
 *    way (it takes 30 us to run).
 *  - A worker about to park: park word SLEEPY, nsleeping++, nspinning--, a
 *    full barrier, then one more look for work. A producer: publish the work,
 *    then read nsleeping / nspinning. This is a Dekker pattern: each side
 *    writes then reads the other's variable, so a store-load barrier is
 *    needed on both sides or a wake-up can be lost. To keep the fork path
 *    free of a second fence, the parking side pays for both with
 *    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): it forces a full barrier
 *    on every running thread of the process, so either the producer's
 *    publication is visible to the parking worker's last look, or the
 *    producer's read comes after the barrier and sees the parking worker.
 *    Where membarrier is unavailable, producers issue a seq_cst fence
 *    instead (correct, a few ns slower per fork).
 *  - The park word resolves the race between a waker and a worker that
 *    cancels its own sleep: both CAS it from SLEEPY (to WOKEN / AWAKE); the
 *    winner does the nsleeping/nspinning accounting.
 *
 * Jobs, futures, cancellation. A submitted job is a heap br__job holding a
 * reference to its future. br_future_cancel's hook (job_cancel_hook) marks the
 * job cancelled and, if it still sits in the injection queue, unlinks and
 * releases it at once. The job is reference-counted (one reference for
 * whoever executes or unlinks it, one for the hook) because the hook may run
 * on another thread while the worker finishes the job: the executor drops
 * both references only when its own completion of the future succeeded (then
 * the hook can never run). Jobs hold a reference to the pool, so a hook that
 * runs late still finds the pool's memory.
 *
 * Lock order: inj_lock is a leaf lock; no user code, future call or other
 * lock is ever taken while holding it.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "braid.h"
#include "core/loop.h"
#include "sys/deque.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A full (store-load) barrier. ThreadSanitizer does not support stand-alone
 * fences (gcc refuses them with -Wtsan), so under TSan a seq_cst read-modify-
 * write stands in: TSan implements it with a locked instruction, which is a
 * full barrier on the hardware we run on. */
#ifdef BR__DEQUE_TSAN
static _Atomic int br__fence_word;
#define FULL_FENCE() ((void)atomic_fetch_add_explicit(&br__fence_word, 0, memory_order_seq_cst))
#else
#define FULL_FENCE() atomic_thread_fence(memory_order_seq_cst)
#endif

/* br_fork.state values. Distinct non-trivial constants so that joining a
 * br_fork that was never forked is caught (most of the time). */
enum {
  F_PUSHED = 0x5a1, /* in the owner's deque, or stolen */
  F_INLINE = 0x5a2, /* ran at fork time (deque could not grow) */
  F_FAILED = 0x5a3, /* the fork itself failed; err says why */
  F_JOINED = 0x5a4, /* joined: nothing left to collect */
  F_JOB = 0x5a5     /* header of a heap br__job */
};

/* br_fork.done values (a futex word). */
enum { D_RUNNING = 0, D_DONE = 1, D_PARKED = 2 };

/* Worker park word. */
enum { P_AWAKE = 0, P_SLEEPY = 1, P_WOKEN = 2, P_EXITED = 3 };

/* Pool state. */
enum { S_RUNNING = 0, S_DRAIN = 1, S_CANCEL = 2 };

/* Injection-queue state of a job (under inj_lock). */
enum { Q_NEW = 0, Q_QUEUED, Q_TAKEN, Q_UNLINKED };

#define DEFAULT_SPIN_NS 50000
#define DEFAULT_STACK (8u << 20)
#define DEQUE_INITIAL 256
#define MAX_HELP_DEPTH 16
#define JOIN_PARK_MIN_NS 50000
#define JOIN_PARK_MAX_NS 1000000

typedef struct br__worker br__worker;

typedef struct br__job {
  br_fork fk; /* fn, arg, value, err, msg; fk.state == F_JOB */
  br_future *fut;
  br_pool *pool;
  struct br__job *next, *prev; /* injection queue, under inj_lock */
  _Atomic int refs;
  int qstate;                  /* Q_*, under inj_lock */
  _Atomic int cancelled;       /* its future was cancelled, or its caller gave up */
} br__job;

/* The roots of everything running on a worker's stack, innermost first
 * (br_pool_wait's deadlock check). Lives on the worker's stack. */
typedef struct br__chain {
  br__job *job;
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

struct br__worker {
  br__deque dq; /* first: cache-line aligned */
  br_pool *pool;
  int index;
  br_fork *cur;     /* outcome slot of what runs now (br_pool_fail) */
  br__job *root;    /* the job what runs now descends from */
  br__chain *chain; /* roots on this stack, for br_pool_wait */
  int help_depth;
  int64_t open_forks; /* forked and not yet joined, on this worker's stack */
  uint64_t rng;
  _Alignas(BR__CACHELINE) _Atomic uint32_t park; /* P_*, futex word */
  br__ctr forks, steals, parks;
  pthread_t thread;
  bool started;
};

struct br_pool {
  int n;
  br__worker **workers;
  int64_t spin_ns;
  bool membarrier;

  _Alignas(BR__CACHELINE) _Atomic int nspinning;
  _Atomic int nsleeping;

  _Alignas(BR__CACHELINE) pthread_mutex_t inj_lock;
  br__job *inj_head, *inj_tail;
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

static __thread br__worker *tls_w __attribute__((tls_model("initial-exec")));

/* ------------------------------------------------------------------------ */
/* Small system helpers                                                      */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield" ::: "memory");
#else
  __asm__ volatile("" ::: "memory");
#endif
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns) {
  struct timespec ts, *tp = NULL;
  if (timeout_ns > 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tp = &ts;
  }
  syscall(SYS_futex, (void *)addr, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

/* Waking an address whose owner may already have moved on (a stack frame
 * that returned) is harmless: at worst a spurious wake-up of a futex that
 * reuses the address, and every waiter here re-checks its condition. */
static void futex_wake(_Atomic uint32_t *addr, int n) {
  syscall(SYS_futex, (void *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static bool membarrier_register(void) {
  static _Atomic int state; /* 0 unknown, 1 usable, 2 not */
  int s = atomic_load(&state);
  if (s) return s == 1;
  long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  bool ok = q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
            syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  atomic_store(&state, ok ? 1 : 2);
  return ok;
}

/* The parking side's heavy barrier (see the comment at the top). */
static void heavy_barrier(br_pool *p) {
  if (p->membarrier && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
    return;
  FULL_FENCE();
}

static inline uint64_t rng_next(br__worker *w) {
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return w->rng = x;
}

/* ------------------------------------------------------------------------ */
/* Sleeping and waking                                                       */

static void wake_one(br_pool *p);

/* notify: new work was published (a fork, a submitted job). The light side of
 * the Dekker pair: with membarrier it is two relaxed loads of a line that is
 * written only when workers park or wake. */
static inline void notify(br_pool *p) {
  if (!p->membarrier) FULL_FENCE();
  if (LIKELY(atomic_load_explicit(&p->nsleeping, memory_order_relaxed) == 0)) return;
  if (atomic_load_explicit(&p->nspinning, memory_order_relaxed) != 0) return;
  wake_one(p);
}

static void wake_one(br_pool *p) {
  int zero = 0;
  /* Reserve a spinning slot for the worker we wake; if someone is spinning
   * (or another waker holds the slot) they will find the work. */
  if (!atomic_compare_exchange_strong(&p->nspinning, &zero, 1)) return;
  int start = tls_w && tls_w->pool == p ? (int)(rng_next(tls_w) % (uint64_t)p->n) : 0;
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

/* wake_all: for shutdown; every parked worker wakes, counted as spinning. */
static void wake_all(br_pool *p) {
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

/* ------------------------------------------------------------------------ */
/* Jobs and the injection queue                                              */

static void pool_release(br_pool *p);

static void job_release(br__job *job, int n) {
  if (atomic_fetch_sub(&job->refs, n) != n) return;
  br_pool *p = job->pool;
  free(job->fk.msg);
  br_future_unref(job->fut);
  free(job);
  pool_release(p);
}

/* How a job accepted by the pool ended. */
enum { END_RAN, END_FAILED, END_CANCELLED };

/* A job accepted by the pool has finished. The counters move together with
 * pending under inj_lock, so that a shutdown report taken under the same lock
 * always adds up (pending == completed + cancelled). */
static void job_finished(br_pool *p, int how) {
  pthread_mutex_lock(&p->inj_lock);
  int64_t left = atomic_fetch_sub(&p->pending, 1) - 1;
  if (how == END_CANCELLED) {
    atomic_fetch_add_explicit(&p->cancelled, 1, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&p->completed, 1, memory_order_relaxed);
    if (how == END_FAILED) atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
  }
  bool stopping = atomic_load(&p->state) != S_RUNNING;
  pthread_mutex_unlock(&p->inj_lock);
  if (left == 0 && stopping) wake_all(p);
}

static void job_cancel_hook(void *arg) {
  br__job *job = arg;
  br_pool *p = job->pool;
  atomic_store(&job->cancelled, 1);
  bool unlinked = false;
  pthread_mutex_lock(&p->inj_lock);
  if (job->qstate == Q_QUEUED) {
    if (job->prev) job->prev->next = job->next;
    else p->inj_head = job->next;
    if (job->next) job->next->prev = job->prev;
    else p->inj_tail = job->prev;
    job->qstate = Q_UNLINKED;
    atomic_fetch_sub(&p->inj_count, 1);
    unlinked = true;
  }
  pthread_mutex_unlock(&p->inj_lock);
  if (unlinked) {
    job_finished(p, END_CANCELLED);
    job_release(job, 2); /* the queue's reference and ours */
  } else {
    job_release(job, 1);
  }
}

static br__job *job_new(br_pool *p, br_pool_fn fn, void *arg) {
  br__job *job = calloc(1, sizeof *job);
  if (!job) return NULL;
  job->fut = br_future_new();
  if (!job->fut) {
    free(job);
    return NULL;
  }
  job->fk.fn = fn;
  job->fk.arg = arg;
  job->fk.state = F_JOB;
  job->fk.root = job;
  job->pool = p;
  atomic_init(&job->refs, 2);
  atomic_init(&job->cancelled, 0);
  job->qstate = Q_NEW;
  return job;
}

/* Queue a new job. On success the job (and its reference to the pool) is
 * the queue's; on failure the caller still owns it. */
static int inj_push(br_pool *p, br__job *job) {
  pthread_mutex_lock(&p->inj_lock);
  if (atomic_load_explicit(&p->state, memory_order_relaxed) != S_RUNNING) {
    pthread_mutex_unlock(&p->inj_lock);
    return BR_ESHUTDOWN;
  }
  atomic_fetch_add(&p->refs, 1);
  job->prev = p->inj_tail;
  job->next = NULL;
  if (p->inj_tail) p->inj_tail->next = job;
  else p->inj_head = job;
  p->inj_tail = job;
  job->qstate = Q_QUEUED;
  atomic_fetch_add(&p->inj_count, 1);
  atomic_fetch_add(&p->pending, 1);
  atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
  pthread_mutex_unlock(&p->inj_lock);
  notify(p);
  return 0;
}

static br__job *inj_pop(br_pool *p) {
  if (atomic_load_explicit(&p->inj_count, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&p->inj_lock);
  br__job *job = p->inj_head;
  if (job) {
    p->inj_head = job->next;
    if (p->inj_head) p->inj_head->prev = NULL;
    else p->inj_tail = NULL;
    job->next = job->prev = NULL;
    job->qstate = Q_TAKEN;
    atomic_fetch_sub(&p->inj_count, 1);
  }
  pthread_mutex_unlock(&p->inj_lock);
  return job;
}

/* ------------------------------------------------------------------------ */
/* Running work                                                              */

static void fatal_unjoined(int64_t n) {
  fprintf(stderr,
          "braid: a pool job returned with %lld forked child(ren) never joined "
          "(br_pool_join each br_pool_fork before returning)\n",
          (long long)n);
  abort();
}

/* Run a stolen fork frame on w and publish its completion. */
static void run_stolen(br__worker *w, br_fork *f) {
  atomic_store_explicit((_Atomic uintptr_t *)&f->thief, (uintptr_t)w, memory_order_release);
  ctr_inc(&w->steals);
  br_fork *pcur = w->cur;
  br__job *proot = w->root;
  br__chain link = {f->root, w->chain};
  w->cur = f;
  w->root = f->root;
  w->chain = &link;
  int64_t open0 = w->open_forks;
  void *v = f->fn(f->arg);
  if (UNLIKELY(w->open_forks != open0)) fatal_unjoined(w->open_forks - open0);
  f->value = v;
  w->cur = pcur;
  w->root = proot;
  w->chain = link.prev;
  /* The last access to f: once done is visible the joiner may return and
   * its stack frame (f) is gone. */
  if (__atomic_exchange_n(&f->done, D_DONE, __ATOMIC_ACQ_REL) == D_PARKED)
    futex_wake((_Atomic uint32_t *)&f->done, 1);
}

/* Run a job taken from the injection queue. */
static void run_job(br__worker *w, br__job *job) {
  br_pool *p = w->pool;
  if (atomic_load(&job->cancelled) || atomic_load(&p->state) == S_CANCEL ||
      br_future_done(job->fut)) {
    /* Cancelled before it started: by its future (the hook ran or will run,
     * and finds the job no longer queued), by its waiter giving up (a map /
     * for / reduce root), or by shutdown(BR_POOL_CANCEL) after we took it.
     * Make sure the future says so; if this cancel is the one that completes
     * it, the hook runs now and drops its own reference. */
    atomic_store(&job->cancelled, 1);
    (void)br_future_cancel(job->fut);
    job_finished(p, END_CANCELLED);
    job_release(job, 1);
    return;
  }
  br_fork *pcur = w->cur;
  br__job *proot = w->root;
  br__chain link = {job, w->chain};
  w->cur = &job->fk;
  w->root = job;
  w->chain = &link;
  int64_t open0 = w->open_forks;
  void *v = job->fk.fn(job->fk.arg);
  if (UNLIKELY(w->open_forks != open0)) fatal_unjoined(w->open_forks - open0);
  w->cur = pcur;
  w->root = proot;
  w->chain = link.prev;

  /* Count it first: whoever sees the future complete also sees the stats. */
  job_finished(p, job->fk.err ? END_FAILED : END_RAN);
  int rc;
  if (job->fk.err)
    rc = br_future_fail(job->fut, job->fk.err, "%s", job->fk.msg ? job->fk.msg : "");
  else
    rc = br_future_set(job->fut, v);
  /* If our completion won, the cancel hook can never run: drop its
   * reference too. Otherwise the hook ran or will run and drops its own. */
  job_release(job, rc == 0 ? 2 : 1);
}

static inline void run_any(br__worker *w, br_fork *x) {
  if (x->state == F_JOB) run_job(w, (br__job *)x);
  else run_stolen(w, x);
}

/* One sweep over the other workers' deques, from a random one. */
static br_fork *steal_any(br__worker *w) {
  br_pool *p = w->pool;
  int n = p->n;
  if (n < 2) return NULL;
  int start = (int)(rng_next(w) % (uint64_t)n);
  for (int i = 0; i < n; i++) {
    br__worker *v = p->workers[(start + i) % n];
    if (v == w) continue;
    for (int tries = 0; tries < 4; tries++) {
      void *x = br__deque_steal(&v->dq);
      if (x == NULL) break;
      if (x != BR__DEQUE_ABORT) return x;
    }
  }
  return NULL;
}

static br_fork *find_work(br__worker *w) {
  br_fork *x = steal_any(w);
  if (x) return x;
  return (br_fork *)inj_pop(w->pool);
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

static bool should_exit(br_pool *p) {
  return atomic_load(&p->state) != S_RUNNING && atomic_load(&p->pending) == 0;
}

/* A spinning worker found work and stops spinning. If it was the last
 * spinner and more work is visible while others sleep, wake one so the rest
 * does not wait for the next producer (Go's "resetspinning"). */
static void stop_spinning(br__worker *w) {
  br_pool *p = w->pool;
  if (atomic_fetch_sub(&p->nspinning, 1) == 1 && atomic_load(&p->nsleeping) > 0 &&
      work_visible(p))
    wake_one(p);
}

/* Park until woken. On return the worker counts as spinning. */
static void park(br__worker *w) {
  br_pool *p = w->pool;
  atomic_store(&w->park, P_SLEEPY);
  atomic_fetch_add(&p->nsleeping, 1);
  atomic_fetch_sub(&p->nspinning, 1);
  heavy_barrier(p);
  if (work_visible(p) || should_exit(p)) {
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

static void *worker_main(void *arg) {
  br__worker *w = arg;
  br_pool *p = w->pool;
  tls_w = w;
  for (;;) {
    br_fork *x = find_work(w);
    if (x) {
      run_any(w, x);
      continue;
    }
    atomic_fetch_add(&p->nspinning, 1);
    for (;;) {
      int64_t deadline = p->spin_ns > 0 ? now_ns() + p->spin_ns : 0;
      unsigned backoff = 1;
      for (;;) {
        x = find_work(w);
        if (x || should_exit(p)) break;
        if (p->spin_ns <= 0 || now_ns() >= deadline) break;
        for (unsigned i = 0; i < backoff; i++) cpu_relax();
        if (backoff < 256) backoff *= 2;
        /* A thread sharing our CPU (the submitter waiting to run, another
         * worker when the pool is larger than the machine) gets its turn. */
        else sched_yield();
      }
      if (x) {
        stop_spinning(w);
        run_any(w, x);
        break;
      }
      if (should_exit(p)) {
        atomic_fetch_sub(&p->nspinning, 1);
        atomic_store(&w->park, P_EXITED);
        if (atomic_fetch_sub(&p->live, 1) == 1) br_future_set(p->exited, NULL);
        tls_w = NULL;
        return NULL;
      }
      park(w);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Pool lifecycle                                                            */

static void pool_destroy(br_pool *p) {
  for (int i = 0; i < p->n; i++) {
    if (!p->workers[i]) continue;
    br__deque_destroy(&p->workers[i]->dq);
    free(p->workers[i]);
  }
  free(p->workers);
  if (p->exited) br_future_unref(p->exited);
  pthread_mutex_destroy(&p->inj_lock);
  pthread_mutex_destroy(&p->shut_lock);
  free(p);
}

static void pool_release(br_pool *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1) pool_destroy(p);
}

int br__pool_vfail(int code, const char *fmt, va_list ap);
int br__pool_thread_wait(br_future *f, int64_t deadline);

br_pool *br_pool_new(int nthreads, const br_pool_opts *opts) {
  /* `return br_fail(...)` in a pool job fails the job, as in a task, and
   * br_await in a job waits the pool's way (helping, BR_EDEADLK on itself). */
  br__set_fail_hook(br__pool_vfail);
  br__set_thread_wait_hook(br__pool_thread_wait);
  br_pool_opts o = {0};
  if (opts) o = *opts;
  if (nthreads < 0 || nthreads > BR_POOL_MAX_THREADS) {
    errno = EINVAL;
    return NULL;
  }
  if (nthreads == 0) nthreads = br_cpu_count();
  if (nthreads > BR_POOL_MAX_THREADS) nthreads = BR_POOL_MAX_THREADS;
  if (o.stack_size == 0) o.stack_size = DEFAULT_STACK;
  if (o.stack_size < (64u << 10) || o.stack_size > ((size_t)1 << 30)) {
    errno = EINVAL;
    return NULL;
  }
  if (o.spin_ns == 0) o.spin_ns = DEFAULT_SPIN_NS;
  const char *name = o.name ? o.name : "br-pool";

  br_pool *p = calloc(1, sizeof *p);
  if (!p) goto fail_nomem;
  p->n = nthreads;
  p->spin_ns = o.spin_ns;
  p->membarrier = membarrier_register();
  atomic_init(&p->refs, 1);
  atomic_init(&p->live, nthreads);
  pthread_mutex_init(&p->inj_lock, NULL);
  pthread_mutex_init(&p->shut_lock, NULL);
  p->workers = calloc((size_t)nthreads, sizeof *p->workers);
  p->exited = br_future_new();
  if (!p->workers || !p->exited) goto fail_destroy;
  for (int i = 0; i < nthreads; i++) {
    br__worker *w = aligned_alloc(BR__CACHELINE, sizeof *w);
    if (!w) goto fail_destroy;
    memset(w, 0, sizeof *w);
    p->workers[i] = w;
    if (br__deque_init(&w->dq, DEQUE_INITIAL) < 0) {
      p->workers[i] = NULL;
      free(w);
      goto fail_destroy;
    }
    w->pool = p;
    w->index = i;
    w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) ^ (uint64_t)(uintptr_t)p;
    if (!w->rng) w->rng = 1;
    atomic_init(&w->park, P_AWAKE);
  }

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, o.stack_size);
  int started = 0, err = 0;
  for (; started < nthreads; started++) {
    br__worker *w = p->workers[started];
    err = pthread_create(&w->thread, &attr, worker_main, w);
    if (err) break;
    w->started = true;
    char tname[16];
    snprintf(tname, sizeof tname, "%.10s-%d", name, started);
    pthread_setname_np(w->thread, tname);
  }
  pthread_attr_destroy(&attr);
  if (err) {
    /* Stop the workers that did start; the others never will. */
    atomic_fetch_sub(&p->live, nthreads - started);
    pthread_mutex_lock(&p->inj_lock);
    atomic_store(&p->state, S_CANCEL);
    pthread_mutex_unlock(&p->inj_lock);
    wake_all(p);
    for (int i = 0; i < started; i++) pthread_join(p->workers[i]->thread, NULL);
    pool_destroy(p);
    errno = err == EAGAIN ? EAGAIN : err;
    return NULL;
  }
  return p;

fail_destroy:
  pool_destroy(p);
fail_nomem:
  errno = ENOMEM;
  return NULL;
}

int br_pool_size(const br_pool *pool) { return pool ? pool->n : 0; }

br_pool *br_pool_current(void) { return tls_w ? tls_w->pool : NULL; }

int br_pool_worker_index(void) { return tls_w ? tls_w->index : -1; }

/* Wait for f to complete where a cancelled task must not give up (the pool
 * still uses the caller's memory): a shielded scope in a task, a plain wait
 * on a thread, a helping wait in a pool worker. */
static void await_shielded(br_future *f) {
  if (tls_w) {
    (void)br_pool_wait(f, NULL);
    return;
  }
  br_scope s;
  bool in_scope = br_self() && br_scope_enter(&s, BR_NEVER, true) == 0;
  while (!br_future_done(f)) (void)br_await(f, NULL);
  if (in_scope) (void)br_scope_exit(&s);
}

int br_pool_shutdown(br_pool *pool, unsigned mode, br_pool_report *report) {
  if (!pool || (mode != BR_POOL_DRAIN && mode != BR_POOL_CANCEL)) return BR_EINVAL;
  if (tls_w && tls_w->pool == pool) return BR_EDEADLK;
  pthread_mutex_lock(&pool->shut_lock);
  if (pool->shut_done) {
    if (report) *report = pool->report;
    pthread_mutex_unlock(&pool->shut_lock);
    return BR_EALREADY;
  }

  pthread_mutex_lock(&pool->inj_lock);
  atomic_store(&pool->state, mode == BR_POOL_DRAIN ? S_DRAIN : S_CANCEL);
  pool->report.mode = mode;
  pool->report.pending = (uint64_t)atomic_load(&pool->pending);
  pool->snap_completed = atomic_load(&pool->completed);
  pool->snap_cancelled = atomic_load(&pool->cancelled);
  pthread_mutex_unlock(&pool->inj_lock);

  if (mode == BR_POOL_CANCEL) {
    /* Cancel what has not started. br_future_cancel runs the hook, which
     * finds the job taken (Q_TAKEN) and only marks it. */
    br__job *job;
    while ((job = inj_pop(pool))) {
      atomic_store(&job->cancelled, 1);
      (void)br_future_cancel(job->fut);
      job_finished(pool, END_CANCELLED);
      job_release(job, 1);
    }
  }
  wake_all(pool);
  await_shielded(pool->exited);
  for (int i = 0; i < pool->n; i++)
    if (pool->workers[i]->started) pthread_join(pool->workers[i]->thread, NULL);

  pool->report.completed = atomic_load(&pool->completed) - pool->snap_completed;
  pool->report.cancelled = atomic_load(&pool->cancelled) - pool->snap_cancelled;
  pool->report.submitted = atomic_load(&pool->submitted);
  pool->report.failed = atomic_load(&pool->failed);
  pool->shut_done = true;
  if (report) *report = pool->report;
  pthread_mutex_unlock(&pool->shut_lock);
  return 0;
}

int br_pool_free(br_pool *pool) {
  if (!pool) return 0;
  if (tls_w && tls_w->pool == pool) return BR_EDEADLK;
  (void)br_pool_shutdown(pool, BR_POOL_CANCEL, NULL);
  pool_release(pool);
  return 0;
}

int br_pool_get_stats(br_pool *pool, br_pool_stats *out) {
  if (!pool || !out) return BR_EINVAL;
  memset(out, 0, sizeof *out);
  out->nthreads = pool->n;
  out->submitted = atomic_load_explicit(&pool->submitted, memory_order_relaxed);
  out->completed = atomic_load_explicit(&pool->completed, memory_order_relaxed);
  out->failed = atomic_load_explicit(&pool->failed, memory_order_relaxed);
  out->cancelled = atomic_load_explicit(&pool->cancelled, memory_order_relaxed);
  out->wakes = atomic_load_explicit(&pool->wakes, memory_order_relaxed);
  for (int i = 0; i < pool->n; i++) {
    br__worker *w = pool->workers[i];
    out->forks += atomic_load_explicit(&w->forks, memory_order_relaxed);
    out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
    out->parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Submitting and waiting                                                    */

int br_pool_submit(br_pool *pool, br_future **out, br_pool_fn fn, void *arg) {
  if (!pool || !out || !fn) return BR_EINVAL;
  br__job *job = job_new(pool, fn, arg);
  if (!job) return BR_ENOMEM;
  br_future *mine = br_future_ref(job->fut);
  br_future_set_cancel_hook(job->fut, job_cancel_hook, job);
  int rc = inj_push(pool, job);
  if (rc < 0) {
    /* Never visible to anyone: the hook cannot run. */
    br_future_unref(mine);
    br_future_unref(job->fut);
    free(job);
    return rc;
  }
  *out = mine;
  return 0;
}

/* br__pool_vfail: the core's fail hook (br__set_fail_hook, registered by
 * br_pool_new): br_fail() outside a task lands here, so `return br_fail(...)`
 * also works in pool jobs. Records the failure and returns 0 on a pool worker
 * running a job, 1 (nothing done) anywhere else. */
int br__pool_vfail(int code, const char *fmt, va_list ap) {
  br__worker *w = tls_w;
  if (!w || !w->cur) return 1;
  br_fork *c = w->cur;
  char *msg = NULL;
  if (fmt && vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  free(c->msg);
  c->msg = msg;
  c->err = code < 0 ? code : BR_EFAILED;
  return 0;
}

void *br_pool_fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  (void)br__pool_vfail(code, fmt, ap);
  va_end(ap);
  return NULL;
}

int br_pool_cancelled(void) {
  br__worker *w = tls_w;
  if (!w) return 0;
  if (atomic_load_explicit(&w->pool->state, memory_order_relaxed) == S_CANCEL) return BR_ECANCELED;
  if (w->root && atomic_load_explicit(&w->root->cancelled, memory_order_relaxed))
    return BR_ECANCELED;
  return 0;
}

/* A worker waiting for a future: woken by an on_done callback. Heap-allocated
 * and shared with the callback (two references), because a wait with a
 * deadline may give up before the future completes, and braid has no way to
 * unregister a callback. */
typedef struct {
  _Atomic uint32_t flag;
  _Atomic int refs;
} br__pwaiter;

static void pwaiter_release(br__pwaiter *wt) {
  if (atomic_fetch_sub(&wt->refs, 1) == 1) free(wt);
}

static void pwaiter_done(void *arg) {
  br__pwaiter *wt = arg;
  atomic_store(&wt->flag, 1);
  futex_wake(&wt->flag, 1);
  pwaiter_release(wt);
}

/* Wait on a pool worker for f to complete, running other pool work
 * meanwhile: 0 once it is complete, BR_EDEADLK if it cannot complete before
 * the caller does, BR_ETIMEDOUT at the deadline. */
static int worker_wait(br__worker *w, br_future *f, int64_t deadline) {
  for (br__chain *c = w->chain; c; c = c->prev)
    if (c->job && c->job->fut == f) return BR_EDEADLK;
  if (br_future_done(f)) return 0;
  br__pwaiter *wt = malloc(sizeof *wt);
  if (wt) {
    atomic_init(&wt->flag, 0);
    atomic_init(&wt->refs, 2);
    if (br_future_on_done(f, pwaiter_done, wt) != 0) {
      free(wt);
      wt = NULL;
    }
  }
  int rc = 0;
  int64_t nap = JOIN_PARK_MIN_NS;
  for (;;) {
    if (wt ? atomic_load(&wt->flag) != 0 : br_future_done(f)) break;
    br_fork *x = NULL;
    if (w->help_depth < MAX_HELP_DEPTH) x = find_work(w);
    if (x) {
      w->help_depth++;
      run_any(w, x);
      w->help_depth--;
      nap = JOIN_PARK_MIN_NS;
      continue;
    }
    int64_t left = deadline == BR_NEVER ? nap : deadline - now_ns();
    if (left <= 0) {
      rc = br_future_done(f) ? 0 : BR_ETIMEDOUT;
      break;
    }
    if (left > nap) left = nap;
    if (wt) futex_wait(&wt->flag, 0, left);
    else nanosleep(&(struct timespec){0, left}, NULL);
    if (nap < JOIN_PARK_MAX_NS) nap *= 2;
  }
  if (wt) pwaiter_release(wt);
  return rc;
}

int br_pool_wait(br_future *f, void **value) { return br_pool_wait_until(f, BR_NEVER, value); }

int br_pool_wait_until(br_future *f, int64_t deadline, void **value) {
  br__worker *w = tls_w;
  if (!w) return br_await_until(f, deadline, value);
  if (!f) return BR_EINVAL;
  int rc = worker_wait(w, f, deadline);
  if (rc) {
    if (value) *value = NULL;
    return rc;
  }
  if (value) *value = br_future_value(f);
  return br_future_error(f);
}

/* br__pool_thread_wait: for the core. br_await / br_await_until on a plain
 * thread can call this first: on a pool worker it waits the pool's way
 * (helping, BR_EDEADLK for a job waiting on itself) and returns 0 once f is
 * complete, BR_EDEADLK or BR_ETIMEDOUT; on any other thread it returns 1 and
 * does nothing, and the caller waits as usual. */
int br__pool_thread_wait(br_future *f, int64_t deadline) {
  br__worker *w = tls_w;
  if (!w || !f) return 1;
  return worker_wait(w, f, deadline);
}

/* ------------------------------------------------------------------------ */
/* Fork-join                                                                 */

/* The uncommon ends of br_pool_fork, out of line so that the fast path
 * needs no stack frame. */
__attribute__((noinline, cold)) static int fork_refused(br__worker *w, br_fork *f) {
  if (!f) return BR_EINVAL;
  f->state = F_FAILED;
  f->err = !w ? BR_EPERM : BR_EINVAL;
  f->msg = NULL;
  return f->err;
}

/* No memory to grow the deque: run the child now. Still correct, just serial
 * for this fork. */
__attribute__((noinline, cold)) static int fork_inline(br__worker *w, br_fork *f) {
  br_fork *pcur = w->cur;
  w->cur = f;
  f->value = f->fn(f->arg);
  w->cur = pcur;
  f->state = F_INLINE;
  return 0;
}

__attribute__((noinline)) static void notify_slow(br_pool *p) { wake_one(p); }

int br_pool_fork(br_fork *f, br_pool_fn fn, void *arg) {
  br__worker *w = tls_w;
  if (UNLIKELY(!w || !f || !fn)) return fork_refused(w, f);
  f->fn = fn;
  f->arg = arg;
  f->msg = NULL;
  f->err = 0;
  f->owner = w;
  f->root = w->root;
  __atomic_store_n(&f->thief, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&f->done, D_RUNNING, __ATOMIC_RELAXED);
  f->state = F_PUSHED;
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
  if (value) *value = f->value;
  f->state = F_JOINED;
  int err = f->err;
  if (msg) *msg = f->msg;
  else free(f->msg);
  f->msg = NULL;
  return err;
}

/* The child was stolen: leapfrog until it is done. */
static void join_wait(br__worker *w, br_fork *f) {
  uintptr_t t;
  /* The thief publishes itself right after winning the CAS on top. */
  while ((t = __atomic_load_n(&f->thief, __ATOMIC_ACQUIRE)) == 0) cpu_relax();
  br__worker *thief = (br__worker *)t;
  int64_t spin_until = 0, nap = JOIN_PARK_MIN_NS;
  unsigned backoff = 1;
  while (__atomic_load_n(&f->done, __ATOMIC_ACQUIRE) != D_DONE) {
    void *x = br__deque_steal(&thief->dq);
    if (x == BR__DEQUE_ABORT) continue;
    if (x) {
      run_stolen(w, x);
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
    if (__atomic_compare_exchange_n(&f->done, &z, D_PARKED, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE) ||
        z == D_PARKED) {
      ctr_inc(&w->parks);
      futex_wait((_Atomic uint32_t *)&f->done, D_PARKED, nap);
      if (nap < JOIN_PARK_MAX_NS) nap *= 2;
    }
  }
}

static int join_slow(br__worker *w, br_fork *f, void **value, char **msg) {
  if (!w) return BR_EPERM;
  switch (f->state) {
  case F_INLINE: return join_finish(f, value, msg);
  case F_FAILED: f->state = F_JOINED; return f->err;
  case F_PUSHED: break;
  default: return BR_EINVAL;
  }
  if (f->owner != w) return BR_EINVAL;
  br_fork *x = br__deque_take(&w->dq);
  if (x == f) {
    w->open_forks--;
    br_fork *pcur = w->cur;
    w->cur = f;
    f->value = f->fn(f->arg);
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
  br__worker *w = tls_w;
  if (LIKELY(w && f && f->state == F_PUSHED && f->owner == w)) {
    br_fork *x = br__deque_take(&w->dq);
    if (LIKELY(x == f)) {
      /* Not stolen: a plain call. */
      w->open_forks--;
      br_fork *pcur = w->cur;
      w->cur = f;
      void *v = f->fn(f->arg);
      w->cur = pcur;
      f->state = F_JOINED;
      if (value) *value = v;
      if (UNLIKELY(f->err)) {
        free(f->msg);
        f->msg = NULL;
      }
      return f->err;
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

int br_pool_join_msg(br_fork *f, void **value, char **msg) {
  if (msg) *msg = NULL;
  if (!f) return BR_EINVAL;
  return join_slow(tls_w, f, value, msg);
}

/* ------------------------------------------------------------------------ */
/* map / for / reduce                                                        */

enum { PAR_MAP, PAR_FOR, PAR_REDUCE };

#define ACC_INLINE 64
#define ACC_MAX 4096

typedef struct br__par {
  int kind;
  size_t grain;
  br_pool_fn fn;
  void *const *items;
  br_result *out;
  br_pool_range_fn body;
  br_pool_fold_fn fold;
  br_pool_combine_fn combine;
  void *ud;
  size_t size;
  const void *identity;
  _Atomic int stop;    /* skip pieces not started: cancelled or failed */
  _Atomic int started; /* the root piece began */
  _Atomic int skipped; /* a piece was skipped for cancellation */
  pthread_mutex_t err_lock;
  size_t err_lo; /* lowest failing index, SIZE_MAX if none */
  int err;
  int alloc_err; /* ENOMEM while splitting a reduce */
} br__par;

typedef struct br__piece {
  br__par *par;
  size_t lo, hi;
  void *acc;
} br__piece;

static void par_error(br__par *par, size_t lo, int err, bool stop) {
  pthread_mutex_lock(&par->err_lock);
  if (lo < par->err_lo) {
    par->err_lo = lo;
    par->err = err;
  }
  pthread_mutex_unlock(&par->err_lock);
  if (stop) atomic_store(&par->stop, 1);
}

static inline bool par_stopped(br__par *par) {
  if (atomic_load_explicit(&par->stop, memory_order_relaxed)) return true;
  if (br_pool_cancelled()) {
    atomic_store_explicit(&par->skipped, 1, memory_order_relaxed);
    return true;
  }
  return false;
}

static void par_leaf(br__par *par, size_t lo, size_t hi, void *acc) {
  br__worker *w = tls_w;
  br_fork slot;
  memset(&slot, 0, sizeof slot);
  br_fork *pcur = w->cur;
  if (par->kind == PAR_MAP) {
    for (size_t i = lo; i < hi; i++) {
      br_result *r = &par->out[i];
      if (par_stopped(par)) {
        r->value = NULL;
        r->err = BR_ECANCELED;
        r->msg = NULL;
        continue;
      }
      slot.err = 0;
      slot.msg = NULL;
      w->cur = &slot;
      r->value = par->fn(par->items[i]);
      w->cur = pcur;
      r->err = slot.err;
      r->msg = slot.msg;
      if (slot.err) par_error(par, i, slot.err, false);
    }
    return;
  }
  if (par_stopped(par)) {
    /* After a failure this does not matter: the error wins. */
    atomic_store_explicit(&par->skipped, 1, memory_order_relaxed);
    return;
  }
  w->cur = &slot;
  int rc = par->kind == PAR_FOR ? par->body(par->ud, lo, hi) : par->fold(par->ud, lo, hi, acc);
  w->cur = pcur;
  free(slot.msg);
  if (rc == 0 && slot.err) rc = slot.err;
  if (rc != 0) par_error(par, lo, rc < 0 ? rc : BR_EFAILED, true);
}

static void *par_piece(void *arg) {
  br__piece *pc = arg;
  br__par *par = pc->par;
  size_t lo = pc->lo, hi = pc->hi;
  if (hi - lo <= par->grain) {
    par_leaf(par, lo, hi, pc->acc);
    return NULL;
  }
  if (par->kind != PAR_MAP && par_stopped(par)) return NULL;
  size_t mid = lo + (hi - lo) / 2;
  _Alignas(max_align_t) unsigned char inline_acc[ACC_INLINE];
  void *racc = NULL;
  if (par->kind == PAR_REDUCE) {
    racc = par->size <= ACC_INLINE ? inline_acc : malloc(par->size);
    if (!racc) {
      /* No memory for the right half's accumulator: do this piece serially. */
      par_leaf(par, lo, hi, pc->acc);
      return NULL;
    }
    memcpy(racc, par->identity, par->size);
  }
  br__piece right = {par, mid, hi, racc};
  br__piece left = {par, lo, mid, pc->acc};
  br_fork f;
  br_pool_fork(&f, par_piece, &right);
  par_piece(&left);
  br_pool_join(&f, NULL);
  if (par->kind == PAR_REDUCE) {
    if (!atomic_load(&par->stop)) par->combine(par->ud, pc->acc, racc);
    if (racc != inline_acc) free(racc);
  }
  return NULL;
}

static size_t auto_grain(size_t n, int workers, size_t per) {
  size_t g = n / ((size_t)workers * per);
  return g ? g : 1;
}

/* The root piece of a map / for / reduce. */
static void *par_root(void *arg) {
  br__piece *pc = arg;
  atomic_store(&pc->par->started, 1);
  return par_piece(pc);
}

/* Run par over [begin, end): directly if the caller is one of pool's
 * workers (the work is part of the job it runs), otherwise as a root job
 * the caller waits for. Returns 0 once the work has run (par says how it
 * went), or an error of the call itself: BR_ESHUTDOWN / BR_ENOMEM (nothing
 * ran), or the waiter's BR_ECANCELED / BR_ETIMEDOUT (what had started has
 * finished; the rest was skipped). */
static int par_run(br_pool *pool, br__par *par, size_t begin, size_t end, void *acc) {
  br__piece root = {par, begin, end, acc};
  br__worker *w = tls_w;
  if (w && w->pool == pool) {
    par_root(&root);
    return 0;
  }
  br__job *job = job_new(pool, par_root, &root);
  if (!job) return BR_ENOMEM;
  br_future *fut = br_future_ref(job->fut);
  br_future_set_cancel_hook(job->fut, job_cancel_hook, job);
  /* A third reference, ours, so that we may still touch the job after it
   * finished. Nobody else can complete this future: it only completes when
   * the root has returned, or was cancelled before it started. */
  atomic_fetch_add(&job->refs, 1);
  int rc = inj_push(pool, job);
  if (rc < 0) {
    br_future_unref(fut);
    br_future_unref(job->fut);
    free(job);
    return rc;
  }
  rc = w ? br_pool_wait(fut, NULL) : br_await(fut, NULL);
  if (rc < 0 && !br_future_done(fut)) {
    /* The waiting task was cancelled (or its scope timed out): skip what has
     * not started, but wait for what runs, since it uses our memory. */
    atomic_store(&par->stop, 1);
    atomic_store(&job->cancelled, 1);
    /* Still queued (seen under the lock after setting cancelled): it will
     * never run, whoever takes it now sees the flag, so complete it at once
     * rather than wait for its turn. Taken already: it may be running. */
    pthread_mutex_lock(&pool->inj_lock);
    bool queued = job->qstate == Q_QUEUED;
    pthread_mutex_unlock(&pool->inj_lock);
    if (queued) (void)br_future_cancel(fut);
    await_shielded(fut);
  } else {
    rc = 0; /* the root ran, or was cancelled unstarted (started == 0) */
  }
  br_future_unref(fut);
  job_release(job, 1);
  return rc;
}

/* The outcome of a for / reduce. */
static int par_result(br__par *par, int rc) {
  if (rc < 0) return rc;
  if (par->err) return par->err;
  if (!atomic_load(&par->started) || atomic_load(&par->skipped)) return BR_ECANCELED;
  return 0;
}

static void par_init(br__par *par, int kind, size_t grain) {
  memset(par, 0, sizeof *par);
  par->kind = kind;
  par->grain = grain;
  par->err_lo = SIZE_MAX;
  atomic_init(&par->stop, 0);
  atomic_init(&par->started, 0);
  atomic_init(&par->skipped, 0);
  pthread_mutex_init(&par->err_lock, NULL);
}

int br_pool_map(br_pool *pool, br_pool_fn fn, void *const *items, size_t n, size_t chunk,
                br_result *out) {
  if (!pool || !fn || (n > 0 && (!items || !out))) return BR_EINVAL;
  if (n == 0) return 0;
  br__par par;
  par_init(&par, PAR_MAP, chunk ? chunk : auto_grain(n, pool->n, 64));
  par.fn = fn;
  par.items = items;
  par.out = out;
  int rc = par_run(pool, &par, 0, n, NULL);
  if (!atomic_load(&par.started)) {
    /* Nothing ran: every item still gets an outcome. */
    if (rc == 0) rc = BR_ECANCELED;
    int item = rc == BR_ETIMEDOUT ? BR_ECANCELED : rc;
    for (size_t i = 0; i < n; i++) out[i] = (br_result){NULL, item, NULL};
  } else if (rc == 0) {
    /* Every out[i] holds its item's outcome (BR_ECANCELED if skipped). */
    for (size_t i = 0; i < n && rc == 0; i++) rc = out[i].err;
  }
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}

int br_pool_for(br_pool *pool, size_t begin, size_t end, size_t grain, br_pool_range_fn body,
                void *ud) {
  if (!pool || !body) return BR_EINVAL;
  if (begin >= end) return atomic_load(&pool->state) == S_RUNNING ? 0 : BR_ESHUTDOWN;
  br__par par;
  par_init(&par, PAR_FOR, grain ? grain : auto_grain(end - begin, pool->n, 32));
  par.body = body;
  par.ud = ud;
  int rc = par_result(&par, par_run(pool, &par, begin, end, NULL));
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}

int br_pool_reduce(br_pool *pool, size_t begin, size_t end, size_t grain, void *result, size_t size,
                   br_pool_fold_fn fold, br_pool_combine_fn combine, void *ud) {
  if (!pool || !result || !fold || !combine || size == 0 || size > ACC_MAX) return BR_EINVAL;
  if (begin >= end) return atomic_load(&pool->state) == S_RUNNING ? 0 : BR_ESHUTDOWN;
  br__par par;
  par_init(&par, PAR_REDUCE, grain ? grain : auto_grain(end - begin, pool->n, 32));
  par.fold = fold;
  par.combine = combine;
  par.ud = ud;
  par.size = size;
  par.identity = result;
  void *acc = malloc(size);
  if (!acc) {
    pthread_mutex_destroy(&par.err_lock);
    return BR_ENOMEM;
  }
  memcpy(acc, result, size);
  int rc = par_result(&par, par_run(pool, &par, begin, end, acc));
  if (rc == 0) memcpy(result, acc, size);
  free(acc);
  pthread_mutex_destroy(&par.err_lock);
  return rc;
}
