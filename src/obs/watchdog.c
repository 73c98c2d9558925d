/* SPDX-License-Identifier: MIT */
/* braid — the blocking-call watchdog.
 *
 * A loop that does not come back to its poller cannot serve anything: some
 * task called a blocking function (sleep, a blocking read, a lock held by
 * another thread) or computes for too long between yields. asyncio's debug
 * mode reports callbacks slower than 100 ms; this does the same for braid,
 * with the task's name and the stuck thread's backtrace.
 *
 * Which loops: those created with br_loop_opts.watchdog_ms > 0, every loop
 * when BRAID_DEBUG=1 (the core reports loops to us through its observer
 * hook), and any loop given to br_watchdog_enable().
 *
 * How: the loop stamps a heartbeat each time it returns from its poller (0
 * while it sleeps inside it: idle is not stuck). One monitor thread for the
 * whole process reads the heartbeat of every watched loop every
 * threshold/4. When a heartbeat is older than the threshold, it sends the
 * loop thread a signal (SIGRTMIN+5); the handler, running on the stuck
 * thread itself, records its backtrace and the running task's name and posts
 * a semaphore. The monitor then reports once per stall, and once more when
 * the loop moves again, with the total time. The loop pays nothing: no
 * timer, no extra system call.
 *
 * The signal handler only does what is async-signal-safe: backtrace()
 * (its unwinder is loaded before the first signal, see sample_init), plain
 * loads of the running task's fields, and its own digit formatting for an
 * unnamed task ("task-<id>"; br_task_name would format with snprintf).
 * Everything that formats with stdio or allocates (the report, the
 * symbolised backtrace) runs on the monitor thread.
 *
 * Locking: W.mu guards the registry; the monitor holds it while it samples
 * a loop, so br_watchdog_disable() returning means the monitor no longer
 * touches that loop. Reports are delivered after W.mu is released (a
 * handler may call back into br_watchdog_*).
 */
#include <braid.h>

#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/loop.h"
#include "sys/clock.h"

#define MAX_FRAMES 64

typedef struct entry {
  br_loop *loop;
  int64_t threshold_ns;
  int64_t stalled_hb; /* heartbeat of the stall already reported, or 0 */
  bool automatic;     /* watched because of BRAID_DEBUG */
} entry;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* wakes the monitor early (new entry, new threshold) */
  entry *v;
  size_t n, cap;
  pthread_t thread;
  bool running;
  br_watchdog_fn fn;
  void *ud;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* The sample taken by the signal handler on the stuck thread. */
static sem_t sample_done;
static br_loop *_Atomic sample_loop;
static void *sample_frames[MAX_FRAMES];
static int sample_n;
static char sample_name[32];
static pthread_once_t sample_once = PTHREAD_ONCE_INIT;
static bool sample_ok;

static int sample_signal(void) { return SIGRTMIN + 5; }

/* The static build references this symbol (-u br__watchdog_link) so that
 * the linker keeps this file, whose constructor hooks the watchdog into
 * every loop, although no user code calls into it. */
void br__watchdog_link(void) {}

/* The name of the task running on L, into out[0..cap) (cap >= 2), as
 * br_task_name() gives it: its own name, or "task-<id>". Runs in the signal
 * handler on L's thread: no stdio, no locks, no allocation. "" between
 * tasks. */
static void current_task_name(br_loop *L, char *out, size_t cap) {
  struct br__task *t = L->current;
  size_t i = 0;
  if (t && t->magic == BR__TASK_MAGIC) {
    if (t->name[0]) {
      for (; i < sizeof t->name && t->name[i] && i < cap - 1; i++) out[i] = t->name[i];
    } else {
      static const char prefix[] = "task-";
      char digits[24];
      size_t nd = 0;
      uint64_t id = t->id;
      do {
        digits[nd++] = (char)('0' + id % 10);
        id /= 10;
      } while (id && nd < sizeof digits);
      for (size_t k = 0; prefix[k] && i < cap - 1; k++) out[i++] = prefix[k];
      while (nd && i < cap - 1) out[i++] = digits[--nd];
    }
  }
  out[i] = '\0';
}

static void on_sample(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)si;
  (void)uc;
  int saved = errno;
  br_loop *L = atomic_load(&sample_loop);
  if (L && br_loop_current() == L) {
    char name[sizeof sample_name];
    current_task_name(L, name, sizeof name);
    memcpy(sample_name, name, sizeof name);
    sample_n = backtrace(sample_frames, MAX_FRAMES);
    sem_post(&sample_done);
  }
  errno = saved;
}

/* After fork() the monitor thread is gone: start afresh in the child
 * (entries watched loops of the parent's threads, which are gone too). */
static void atfork_child(void) {
  pthread_mutex_init(&W.mu, NULL);
  pthread_cond_init(&W.cv, NULL);
  W.running = false;
  W.n = 0;
  sem_init(&sample_done, 0, 0);
  atomic_store(&sample_loop, NULL);
}

static void sample_init(void) {
  pthread_atfork(NULL, NULL, atfork_child);
  /* backtrace() loads libgcc's unwinder on first use (malloc, dlopen): do
   * that here, not in the signal handler. */
  void *warm[2];
  backtrace(warm, 2);
  sem_init(&sample_done, 0, 0);
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sample;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(sample_signal(), NULL, &old);
  /* Never take a signal somebody else uses. */
  if (old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO))
    sample_ok = sigaction(sample_signal(), &sa, NULL) == 0;
}

static int64_t default_threshold_ns(void) {
  const char *s = getenv("BRAID_WATCHDOG_MS");
  long v = s ? strtol(s, NULL, 10) : 0;
  return (v > 0 ? v : 100) * 1000000LL;
}

/* Take a sample of loop L's thread; W.mu held. Returns the frame count. */
static int take_sample(br_loop *L, void **frames, char *name) {
  name[0] = '\0';
  if (!sample_ok) return 0;
  while (sem_trywait(&sample_done) == 0) {
  }
  atomic_store(&sample_loop, L);
  int n = 0;
  if (pthread_kill(br__loop_thread(L), sample_signal()) == 0) {
    /* The handler normally runs within microseconds; a loaded machine or a
     * sanitizer that holds signals back until the interrupted system call
     * returns can take far longer. Past 500 ms the report goes out without
     * a sample. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 500000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    int rc;
    while ((rc = sem_timedwait(&sample_done, &ts)) < 0 && errno == EINTR) {
    }
    if (rc == 0) {
      n = sample_n;
      memcpy(frames, sample_frames, sizeof(void *) * (size_t)n);
      memcpy(name, sample_name, sizeof sample_name);
    }
  }
  atomic_store(&sample_loop, NULL);
  return n;
}

/* The default report, through the log hook (br_set_log): one message for
 * the stall, then one per frame of the backtrace. Monitor thread. */
static void report_log(const br_watchdog_report *r, int64_t threshold_ns) {
  if (r->nframes < 0) {
    br__log(BR_LOG_WARN, "loop was blocked for %lld ms in total",
            (long long)(r->stalled_ns / 1000000));
    return;
  }
  br__log(BR_LOG_WARN, "loop blocked for %lld ms in task '%s' (watchdog threshold %lld ms)",
          (long long)(r->stalled_ns / 1000000), r->task[0] ? r->task : "<none>",
          (long long)(threshold_ns / 1000000));
  if (r->nframes > 0) {
    br__log(BR_LOG_WARN, "where the loop thread is now:");
    char **syms = backtrace_symbols((void *const *)r->frames, r->nframes);
    for (int i = 0; i < r->nframes; i++) {
      if (syms)
        br__log(BR_LOG_WARN, "  #%d %s", i, syms[i]);
      else
        br__log(BR_LOG_WARN, "  #%d %p", i, r->frames[i]);
    }
    free(syms);
  }
}

typedef struct pending {
  br_watchdog_report r;
  int64_t threshold_ns;
  void *frames[MAX_FRAMES];
  char name[32];
} pending;

static void *monitor(void *arg) {
  (void)arg;
  pthread_mutex_lock(&W.mu);
  for (;;) {
    /* Nothing to watch: sleep until a loop is enabled. The monitor stays
     * for the life of the process once started (it is a debugging aid). */
    while (W.n == 0) pthread_cond_wait(&W.cv, &W.mu);
    int64_t period = 25000000;
    for (size_t i = 0; i < W.n; i++)
      if (W.v[i].threshold_ns / 4 < period) period = W.v[i].threshold_ns / 4;
    if (period < 1000000) period = 1000000;
    struct timespec ts;
    int64_t until = br__mono_ns() + period;
    ts.tv_sec = until / 1000000000LL;
    ts.tv_nsec = until % 1000000000LL;
    pthread_cond_clockwait(&W.cv, &W.mu, CLOCK_MONOTONIC, &ts);

    for (size_t i = 0; i < W.n; i++) {
      entry *e = &W.v[i];
      /* The clock first, then the heartbeat: if this thread is held back
       * between the two reads, the heartbeat only gets fresher. (The other
       * order made a descheduled monitor see a stall that never was.) */
      int64_t now = br_now();
      int64_t hb = br__loop_heartbeat(e->loop);
      pending p;
      memset(&p, 0, sizeof p);
      bool have = false;
      if (e->stalled_hb && hb != e->stalled_hb) {
        /* It moved again: say for how long it was stuck in all. */
        p.r = (br_watchdog_report){.loop = e->loop, .task = "", .stalled_ns = now - e->stalled_hb,
                                   .frames = NULL, .nframes = -1};
        e->stalled_hb = 0;
        have = true;
      } else if (hb && !e->stalled_hb && now - hb > e->threshold_ns) {
        e->stalled_hb = hb;
        int n = take_sample(e->loop, p.frames, p.name);
        if (br__loop_heartbeat(e->loop) != hb) {
          /* The loop moved on before the sample was taken: the backtrace
           * and the task are of whatever runs now, not of the stall. */
          n = 0;
          p.name[0] = '\0';
        }
        p.r = (br_watchdog_report){.loop = e->loop, .task = p.name, .stalled_ns = br_now() - hb,
                                   .frames = p.frames, .nframes = n};
        have = true;
      }
      if (!have) continue;
      p.threshold_ns = e->threshold_ns;
      br_watchdog_fn fn = W.fn;
      void *ud = W.ud;
      /* Deliver without the lock; re-scan from the start afterwards would
       * be fairer but the registry may have changed: just stop this round. */
      pthread_mutex_unlock(&W.mu);
      if (fn)
        fn(&p.r, ud);
      else
        report_log(&p.r, p.threshold_ns);
      if (p.r.stalled_ns) br__trace_fire("watchdog", false); /* the flight recorder, if on */
      pthread_mutex_lock(&W.mu);
      break;
    }
  }
  return NULL;
}

/* Start the monitor if needed; W.mu held. */
static int start_monitor(void) {
  if (W.running) return 0;
  pthread_once(&sample_once, sample_init);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the monitor takes no signal */
  int rc = pthread_create(&W.thread, NULL, monitor, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) return BR_EAGAIN;
  pthread_detach(W.thread);
  W.running = true;
  return 0;
}

static int enable(br_loop *loop, int64_t threshold_ms, bool automatic) {
  if (!loop) return BR_EINVAL;
  int64_t th = threshold_ms > 0 ? threshold_ms * 1000000LL : default_threshold_ns();
  pthread_mutex_lock(&W.mu);
  for (size_t i = 0; i < W.n; i++) {
    if (W.v[i].loop == loop) {
      W.v[i].threshold_ns = th;
      W.v[i].automatic = W.v[i].automatic && automatic;
      pthread_cond_signal(&W.cv);
      pthread_mutex_unlock(&W.mu);
      return 0;
    }
  }
  if (W.n == W.cap) {
    size_t cap = W.cap ? W.cap * 2 : 8;
    entry *v = realloc(W.v, cap * sizeof *v);
    if (!v) {
      pthread_mutex_unlock(&W.mu);
      return BR_ENOMEM;
    }
    W.v = v;
    W.cap = cap;
  }
  int rc = start_monitor();
  if (rc == 0) {
    W.v[W.n++] = (entry){.loop = loop, .threshold_ns = th, .automatic = automatic};
    pthread_cond_signal(&W.cv);
  }
  pthread_mutex_unlock(&W.mu);
  return rc;
}

int br_watchdog_enable(br_loop *loop, int64_t threshold_ms) { return enable(loop, threshold_ms, false); }

static void disable(br_loop *loop, bool only_automatic) {
  pthread_mutex_lock(&W.mu);
  for (size_t i = 0; i < W.n; i++) {
    if (W.v[i].loop != loop) continue;
    if (only_automatic && !W.v[i].automatic) break;
    W.v[i] = W.v[--W.n];
    break;
  }
  pthread_mutex_unlock(&W.mu);
}

void br_watchdog_disable(br_loop *loop) { disable(loop, false); }

void br_watchdog_set_handler(br_watchdog_fn fn, void *ud) {
  pthread_mutex_lock(&W.mu);
  W.fn = fn;
  W.ud = ud;
  pthread_mutex_unlock(&W.mu);
}

static int debug_on(void) {
  static atomic_int cached = -1;
  int v = atomic_load(&cached);
  if (v < 0) {
    const char *s = getenv("BRAID_DEBUG");
    v = s && *s && strcmp(s, "0") != 0;
    atomic_store(&cached, v);
  }
  return v;
}

/* The core tells us about every loop (br__loop_set_observer): watch the
 * ones created with br_loop_opts.watchdog_ms > 0, or all of them under
 * BRAID_DEBUG=1, and forget each one before it is freed. */
static void loop_observer(br_loop *loop, bool created) {
  if (created) {
    const br_loop_opts *o = br__loop_opts(loop);
    int64_t ms = o ? o->watchdog_ms : 0;
    if (ms > 0)
      enable(loop, ms, true);
    else if (debug_on())
      enable(loop, 0, true);
    return;
  }
  pthread_mutex_lock(&W.mu);
  bool any = W.n > 0;
  pthread_mutex_unlock(&W.mu);
  if (any) disable(loop, false);
}

__attribute__((constructor)) static void watchdog_init(void) { br__loop_set_observer(loop_observer); }
