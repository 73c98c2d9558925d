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
 * The evidence. Before the signal, the monitor reads the stuck thread's
 * /proc files the way `braid profile` does (obs/profile_syscall.c): which
 * system call it sits in and on what kind of descriptor, or that it runs on
 * a CPU or waits for one; and, from schedstat read when the monitor first
 * saw the stalled heartbeat, how much of the stall it ran. The loop's
 * kernel thread id comes from its pthread's CPU clock id (the kernel's
 * encoding, ~(tid << 3) | 6, which glibc builds the id from).
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
#include "core/env.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/loop.h"
#include "obs/profile_int.h"
#include "sys/clock.h"

#include <fcntl.h>
#include <stdio.h>

#define MAX_FRAMES 64

typedef struct entry {
  br_loop *loop;
  int64_t threshold_ns;
  int64_t stalled_hb; /* heartbeat of the stall already reported, or 0 */
  bool automatic;     /* watched because of BRAID_DEBUG */
  /* The loop thread's /proc files (-1: not known), and its schedstat when
   * the monitor first saw heartbeat base_hb. */
  int fd_sched, fd_syscall;
  int64_t base_hb, base_at;
  uint64_t base_run, base_rq;
  /* The last system call the thread was seen blocked in during this stretch
   * (-1: none; a monitor round reads it once the stretch outlasts a round). */
  long seen_nr;
  int seen_cat;
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
static int64_t sample_hb; /* the loop's heartbeat when the handler ran */
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
    sample_hb = br__loop_heartbeat(L);
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
  static atomic_bool warned;
  long long v;
  if (br__env_long("BRAID_WATCHDOG_MS", 1, 3600000, &v, &warned) != 1) v = 100;
  return v * 1000000LL;
}

/* Take a sample of loop L's thread; W.mu held. Returns the frame count. */
static int take_sample(br_loop *L, void **frames, char *name, int64_t *hb) {
  name[0] = '\0';
  *hb = 0;
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
      *hb = sample_hb;
    }
  }
  atomic_store(&sample_loop, NULL);
  return n;
}

/* Open the loop thread's /proc files: its kernel thread id is encoded in
 * the CPU clock id of its pthread (~(tid << 3) | CPUCLOCK_PERTHREAD_MASK |
 * CPUCLOCK_SCHED, the kernel's ABI for per-thread CPU clocks). */
static void open_thread_files(entry *e) {
  e->fd_sched = e->fd_syscall = -1;
  e->seen_nr = -1;
  clockid_t cid;
  if (pthread_getcpuclockid(br__loop_thread(e->loop), &cid) != 0 || (cid & 7) != 6) return;
  pid_t tid = (pid_t)~(cid >> 3);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
  e->fd_sched = open(path, O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
  e->fd_syscall = open(path, O_RDONLY | O_CLOEXEC);
}

static void close_thread_files(entry *e) {
  if (e->fd_sched >= 0) close(e->fd_sched);
  if (e->fd_syscall >= 0) close(e->fd_syscall);
  e->fd_sched = e->fd_syscall = -1;
}

static bool read_sched(const entry *e, uint64_t *run, uint64_t *rq) {
  char buf[96];
  ssize_t n = e->fd_sched >= 0 ? pread(e->fd_sched, buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) return false;
  buf[n] = '\0';
  unsigned long long r, q;
  if (sscanf(buf, "%llu %llu", &r, &q) != 2) return false;
  *run = r;
  *rq = q;
  return true;
}

typedef struct evidence {
  char syscall[24];
  char waits_on[16];
  double cpu_share;
  char text[320];
} evidence;

/* What the stuck thread is doing, before the sample's signal disturbs it.
 * Monitor thread, W.mu held. */
/* Whether cat (with call number nr) is a thread blocked in a system call. */
static bool in_call(int cat, long nr) {
  return nr >= 0 && cat > BR_PROFILE_T_RUNQUEUE && cat < BR_PROFILE_T_COUNT;
}

static void gather(const entry *e, int64_t now, evidence *ev) {
  ev->syscall[0] = ev->waits_on[0] = ev->text[0] = '\0';
  ev->cpu_share = -1;
  if (e->fd_syscall < 0) return;
  long nr = -1;
  int cat = br__prof_blocked_call(getpid(), e->fd_syscall, &nr);
  if (cat == BR_PROFILE_T_COUNT) return; /* the thread is gone */
  bool again = false; /* runnable now, between two blocking calls */
  uint64_t run, rq;
  int64_t span = now - e->base_at;
  if (e->base_hb && span > 0 && read_sched(e, &run, &rq)) {
    double ran = (double)(run - e->base_run), queued = (double)(rq - e->base_rq);
    double could = (double)span - queued;
    ev->cpu_share = could > 0 ? ran / could : 1.0;
    if (ev->cpu_share > 1) ev->cpu_share = 1;
    if (ev->cpu_share < 0) ev->cpu_share = 0;
  }
  /* Runnable now ("running" covers a thread waiting for a CPU too) but it
   * ran little of the stall: not computing. A thread that sleeps or reads
   * in steps is runnable for a moment between two calls, and on a busy
   * machine until it gets a CPU. Name the call it was seen in during the
   * stall, or look again for a few milliseconds. */
  if (!in_call(cat, nr) && ev->cpu_share >= 0 && ev->cpu_share < 0.5) {
    long nr2 = e->seen_nr;
    int cat2 = e->seen_cat;
    for (int i = 0; i < 10 && nr2 < 0; i++) {
      struct timespec ts = {0, 1000000L};
      nanosleep(&ts, NULL);
      long n3 = -1;
      int c3 = br__prof_blocked_call(getpid(), e->fd_syscall, &n3);
      if (in_call(c3, n3)) {
        nr2 = n3;
        cat2 = c3;
      }
    }
    if (nr2 >= 0) {
      nr = nr2;
      cat = cat2;
      again = true;
    }
  }
  const char *name = nr >= 0 ? br__prof_syscall_name(nr) : NULL;
  if (nr >= 0 && name) snprintf(ev->syscall, sizeof ev->syscall, "%s", name);
  else if (nr >= 0) snprintf(ev->syscall, sizeof ev->syscall, "%ld", nr);
  snprintf(ev->waits_on, sizeof ev->waits_on, "%s",
           cat < 0 ? "cpu" : br_profile_time_name((br_profile_time)cat));
  char ran[64] = "";
  if (ev->cpu_share >= 0)
    snprintf(ran, sizeof ran, " and ran %.0f%% of the last %lld ms", 100 * ev->cpu_share,
             (long long)(span / 1000000));
  const char *advice;
  switch (cat) {
  case -1:
    snprintf(ev->text, sizeof ev->text, "the loop thread is running (on a CPU or waiting for one)%s: the task "
             "computes without giving the loop back; hand the computing to the CPU pool "
             "(br_pool_submit + br_await) or br_yield() in its loop", ran);
    return;
  case BR_PROFILE_T_RUNQUEUE:
    snprintf(ev->text, sizeof ev->text, "the loop thread is runnable but waits for a CPU%s: "
             "the task computes on a busy machine; hand the computing to the CPU pool "
             "(br_pool_submit + br_await)", ran);
    return;
  case BR_PROFILE_T_SLEEP:
    advice = "a sleep that blocks the loop; use br_sleep_ms() in a task, or run the call with "
             "br_to_thread()";
    break;
  case BR_PROFILE_T_LOCK:
    advice = "a lock held by another thread; use br_mutex (it suspends the task, not the "
             "loop), or run the call with br_to_thread()";
    break;
  case BR_PROFILE_T_CHILD:
    advice = "waiting for a child process on the loop; use br_process_wait() (braid/io.h)";
    break;
  case BR_PROFILE_T_NET:
  case BR_PROFILE_T_PIPE:
  case BR_PROFILE_T_DISK:
    advice = "blocking I/O on the loop; use braid's own I/O from the task (braid/io.h), or "
             "run the call with br_to_thread()";
    break;
  default:
    advice = "a blocking call on the loop; run it with br_to_thread()";
    break;
  }
  snprintf(ev->text, sizeof ev->text, "the loop thread is blocked in %s (%s)%s%s: %s",
           ev->syscall[0] ? ev->syscall : "a system call", ev->waits_on,
           again ? ", call after call (runnable between two just now)" : "", ran, advice);
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
  if (r->evidence && r->evidence[0]) br__log(BR_LOG_WARN, "%s", r->evidence);
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
  evidence ev;
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
      if (hb && hb != e->base_hb && read_sched(e, &e->base_run, &e->base_rq)) {
        /* A new stretch away from the poller: the baseline of its CPU use. */
        e->base_hb = hb;
        e->base_at = now;
        e->seen_nr = -1;
      } else if (hb && hb == e->base_hb && !e->stalled_hb && e->fd_syscall >= 0) {
        /* Away from the poller for a round already: what does it wait on? */
        long nr = -1;
        int cat = br__prof_blocked_call(getpid(), e->fd_syscall, &nr);
        if (in_call(cat, nr)) {
          e->seen_nr = nr;
          e->seen_cat = cat;
        }
      }
      pending p;
      memset(&p, 0, sizeof p);
      bool have = false;
      if (e->stalled_hb && hb != e->stalled_hb) {
        /* It moved again: say for how long it was stuck in all. */
        p.r = (br_watchdog_report){.loop = e->loop, .task = "", .stalled_ns = now - e->stalled_hb,
                                   .frames = NULL, .nframes = -1, .syscall = "",
                                   .waits_on = "", .cpu_share = -1, .evidence = ""};
        e->stalled_hb = 0;
        have = true;
      } else if (hb && !e->stalled_hb && now - hb > e->threshold_ns) {
        e->stalled_hb = hb;
        gather(e, now, &p.ev); /* first: the signal would interrupt the call */
        int64_t sampled_hb;
        int n = take_sample(e->loop, p.frames, p.name, &sampled_hb);
        if (sampled_hb != hb) {
          /* The loop moved on before the sample was taken (a sanitizer
           * holds a signal back until the call it arrived in returns): the
           * backtrace and the task are of whatever runs now, not of the
           * stall. Taken late but in the same stretch, they are. */
          n = 0;
          p.name[0] = '\0';
        }
        p.r = (br_watchdog_report){.loop = e->loop, .task = p.name, .stalled_ns = br_now() - hb,
                                   .frames = p.frames, .nframes = n, .syscall = p.ev.syscall,
                                   .waits_on = p.ev.waits_on, .cpu_share = p.ev.cpu_share,
                                   .evidence = p.ev.text};
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
    W.v[W.n] = (entry){.loop = loop, .threshold_ns = th, .automatic = automatic};
    open_thread_files(&W.v[W.n]);
    W.n++;
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
    close_thread_files(&W.v[i]);
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
