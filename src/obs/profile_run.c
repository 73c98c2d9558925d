/* SPDX-License-Identifier: MIT */
/* profile_run.c — br_profile_command and br_profile: who samples, who waits.
 *
 * Command mode: the calling thread forks and execs the command, then samples
 * the tree at a rising interval (10, 20, 40 ms, ... up to the configured one)
 * until a reaper thread reports that no child is left. The reaper blocks in
 * waitpid(-1) and reaps everything (the command, and orphans reparented to
 * us as subreaper), so the end of the work is seen when it happens, not at
 * the next sample. CPU time of processes that lived between two samples is
 * not lost: getrusage(RUSAGE_CHILDREN) counts every reaped descendant, and
 * what it saw beyond the samples is added as on-CPU time.
 *
 * Function mode: a sampler thread samples this process while the caller runs
 * the function, and is told to stop through a pipe when it returns.
 */
#include "obs/profile_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sys/clock.h"

enum { FIRST_INTERVAL_MS = 10, DEFAULT_INTERVAL_MS = 100 };

static int64_t mono_ns(void) { return br__mono_ns(); }

static int64_t tv_ns(struct timeval tv) {
  return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
}

static int64_t rusage_cpu_ns(int who) {
  struct rusage ru;
  if (getrusage(who, &ru) != 0) return 0;
  return tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
}

/* Bytes read from and written to storage by the reaped descendants
 * (ru_inblock / ru_oublock count 512-byte units of the same accounting as
 * /proc/PID/io). */
static void rusage_io(uint64_t *rd, uint64_t *wr) {
  struct rusage ru;
  *rd = *wr = 0;
  if (getrusage(RUSAGE_CHILDREN, &ru) != 0) return;
  *rd = (uint64_t)ru.ru_inblock * 512;
  *wr = (uint64_t)ru.ru_oublock * 512;
}

static int interval_of(const br_profile_opts *opts) {
  return opts && opts->interval_ms > 0 ? opts->interval_ms : DEFAULT_INTERVAL_MS;
}

/* Wait up to about ms for fd to become readable. The wait varies by
 * +-25 % (xorshift, per thread): a fixed period locks onto the rhythm of a
 * periodic program (threads taking turns every 10 ms, sampled every 20 or
 * 40 ms, are always seen in the same state) and misreads it. */
static bool wait_readable(int fd, int ms) {
  static _Thread_local uint64_t x;
  if (!x) x = (uint64_t)br_now() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  if (ms >= 4) ms = ms * 3 / 4 + (int)(x % (uint64_t)(ms / 2 + 1));
  struct pollfd p = {fd, POLLIN, 0};
  int rc;
  do rc = poll(&p, 1, ms);
  while (rc < 0 && errno == EINTR);
  return rc > 0;
}

static double sampled_cpu_ns(const prof_state *s) {
  double cpu = 0;
  for (size_t i = 0; i < s->nth; i++)
    if (s->th[i].cat != -2) cpu += s->th[i].t[BR_PROFILE_T_CPU];
  return cpu;
}

/* ------------------------------------------------------------------------ */
/* Command mode                                                              */

/* Signals that would kill the profiler and leave the command running,
 * unwatched and unreported: Ctrl-C, Ctrl-\, kill, a closed terminal. While
 * the command runs, each of them whose disposition is the default is caught
 * and passed on to the command instead, so the command decides (it usually
 * dies of it), and the profile ends as it would have: report printed, exit
 * status 128 + N. A signal the terminal sent (si_code SI_KERNEL) went to its
 * whole foreground process group, the command included, and is not sent a
 * second time. A disposition the caller chose (ignored, or a handler of its
 * own) is left alone. fwd_child is the command's pid while it may receive
 * them (0 once it has been reaped: the pid may be reused); a signal caught
 * before it is known is kept in fwd_pending and sent once it is. */
static const int fwd_signals[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP};
enum { NFWD = sizeof fwd_signals / sizeof fwd_signals[0] };
static atomic_int fwd_child, fwd_pending;

static void fwd_handler(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  if (si && si->si_code == SI_KERNEL) return;
  int saved = errno;
  pid_t p = (pid_t)atomic_load(&fwd_child);
  if (p > 0) (void)kill(p, sig);
  else atomic_store(&fwd_pending, sig);
  errno = saved;
}

typedef struct fwd_state {
  struct sigaction old[NFWD];
  bool installed[NFWD];
} fwd_state;

static void fwd_install(fwd_state *f) {
  atomic_store(&fwd_child, 0);
  atomic_store(&fwd_pending, 0);
  struct sigaction sa = {.sa_sigaction = fwd_handler, .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < NFWD; i++) {
    f->installed[i] = false;
    if (sigaction(fwd_signals[i], NULL, &f->old[i]) != 0) continue;
    if ((f->old[i].sa_flags & SA_SIGINFO) || f->old[i].sa_handler != SIG_DFL) continue;
    f->installed[i] = sigaction(fwd_signals[i], &sa, NULL) == 0;
  }
}

static void fwd_restore(fwd_state *f) {
  for (int i = 0; i < NFWD; i++)
    if (f->installed[i]) (void)sigaction(fwd_signals[i], &f->old[i], NULL);
  atomic_store(&fwd_child, 0);
}

typedef struct reaper {
  pid_t child;
  int status;       /* the command's wait status */
  int64_t end_ns;   /* when the last child was reaped */
  int notify;       /* write end: "no child left" */
  int reaped;       /* processes reaped: the command and orphans given to us */
} reaper;

static void *reaper_main(void *arg) {
  reaper *r = arg;
  for (;;) {
    int st;
    pid_t p = waitpid(-1, &st, 0);
    if (p == r->child) {
      r->status = st;
      atomic_store(&fwd_child, 0); /* its pid may be reused from now on */
    }
    if (p > 0) r->reaped++;
    if (p < 0 && errno == EINTR) continue;
    if (p < 0) break; /* ECHILD: the whole tree is gone */
  }
  r->end_ns = mono_ns();
  char c = 1;
  ssize_t w;
  do w = write(r->notify, &c, 1);
  while (w < 0 && errno == EINTR);
  return NULL;
}

int br_profile_command(br_profile_report *out, char *const argv[], const br_profile_opts *opts) {
  if (!out || !argv || !argv[0]) return BR_EINVAL;
  int exec_pipe[2], done_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) return -errno;
  if (pipe2(done_pipe, O_CLOEXEC) != 0) {
    int e = -errno;
    close(exec_pipe[0]);
    close(exec_pipe[1]);
    return e;
  }
  prof_state s;
  /* The trace file is opened only once the command has started: a command
   * that cannot be run must not have replaced the trace of an earlier run
   * with an empty one. This first init checks for /proc. */
  const char *trace_path = opts ? opts->trace_path : NULL;
  int rc = br__prof_init(&s, false, 0, NULL);
  if (rc) {
    br__prof_free(&s);
    goto close_pipes;
  }
  int was_reaper = 0;
  (void)prctl(PR_GET_CHILD_SUBREAPER, &was_reaper);
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
  int64_t cpu0 = rusage_cpu_ns(RUSAGE_CHILDREN), self0 = rusage_cpu_ns(RUSAGE_SELF);
  uint64_t rd0, wr0;
  rusage_io(&rd0, &wr0);
  s.start_ns = s.last_ns = mono_ns();

  /* The forwarded signals are blocked over the fork: the child must not run
   * the forwarder (it restores the caller's dispositions and mask before
   * exec), and one that arrives meanwhile is passed on once the pid is
   * known. */
  fwd_state fwd;
  sigset_t fwd_set, old_mask;
  sigemptyset(&fwd_set);
  for (int i = 0; i < NFWD; i++) sigaddset(&fwd_set, fwd_signals[i]);
  pthread_sigmask(SIG_BLOCK, &fwd_set, &old_mask);
  fwd_install(&fwd);
  pid_t pid = fork();
  if (pid < 0) {
    rc = -errno;
    fwd_restore(&fwd);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    goto restore;
  }
  if (pid == 0) {
    for (int i = 0; i < NFWD; i++)
      if (fwd.installed[i]) (void)sigaction(fwd_signals[i], &fwd.old[i], NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    close(exec_pipe[0]);
    execvp(argv[0], argv);
    int e = errno;
    ssize_t w = write(exec_pipe[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  atomic_store(&fwd_child, (int)pid);
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
  int early = atomic_exchange(&fwd_pending, 0);
  if (early) (void)kill(pid, early);
  close(exec_pipe[1]);
  exec_pipe[1] = -1;
  int exec_errno = 0;
  ssize_t got;
  do got = read(exec_pipe[0], &exec_errno, sizeof exec_errno);
  while (got < 0 && errno == EINTR);
  if (got == (ssize_t)sizeof exec_errno) {
    (void)waitpid(pid, NULL, 0);
    fwd_restore(&fwd);
    rc = -exec_errno; /* the caller says it: it knows the command and its own name */
    goto restore;
  }
  if (trace_path) {
    int64_t start = s.start_ns;
    br__prof_free(&s);
    if ((rc = br__prof_init(&s, false, 0, trace_path)) != 0) {
      (void)kill(pid, SIGKILL);
      (void)waitpid(pid, NULL, 0);
      fwd_restore(&fwd);
      goto restore;
    }
    s.start_ns = s.last_ns = start;
  }

  reaper r = {.child = pid, .notify = done_pipe[1]};
  pthread_t reaper_thread;
  if ((rc = -pthread_create(&reaper_thread, NULL, reaper_main, &r)) != 0) {
    (void)kill(pid, SIGKILL);
    (void)waitpid(pid, NULL, 0);
    fwd_restore(&fwd);
    goto restore;
  }
  int interval = FIRST_INTERVAL_MS, target = interval_of(opts);
  if (interval > target) interval = target;
  br__prof_round(&s);
  while (!wait_readable(done_pipe[0], interval)) {
    br__prof_round(&s);
    if (interval < target) interval = interval * 2 < target ? interval * 2 : target;
  }
  pthread_join(reaper_thread, NULL);
  fwd_restore(&fwd);
  br__prof_round(&s); /* closes what exited */
  s.last_ns = r.end_ns;
  int trace_rc = br__prof_finish(&s);
  int64_t rusage_cpu = rusage_cpu_ns(RUSAGE_CHILDREN) - cpu0;
  int64_t extra = rusage_cpu - (int64_t)sampled_cpu_ns(&s);
  br__prof_report(&s, r.end_ns - s.start_ns, extra, out);
  out->exit_status = r.status;
  out->trace_error = trace_rc;
  /* Storage I/O from the reaped tree's rusage: every process of it has been
   * reaped by now, each parent having added its own reaped children's. The
   * sampled /proc/PID/io totals cannot be summed for this (a parent's
   * include its reaped children's, so a shell and its dd would count the
   * dd twice), and a process's last sample may be an interval before its
   * end. */
  uint64_t rd1, wr1;
  rusage_io(&rd1, &wr1);
  out->read_bytes = rd1 - rd0;
  out->write_bytes = wr1 - wr0;
  /* A process can end between two rounds and never be sampled (a parent
   * that forks and exits at once, on a busy machine): its exit is still
   * seen here. */
  if (r.reaped > out->processes) out->processes = r.reaped;
  out->profiler_cpu_s = (double)(rusage_cpu_ns(RUSAGE_SELF) - self0) / 1e9;
  rc = 0;

restore:
  (void)prctl(PR_SET_CHILD_SUBREAPER, was_reaper);
  br__prof_free(&s);
close_pipes:
  close(exec_pipe[0]);
  if (exec_pipe[1] >= 0) close(exec_pipe[1]);
  close(done_pipe[0]);
  close(done_pipe[1]);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Function mode                                                             */

typedef struct sampler {
  prof_state s;
  const br_profile_opts *opts;
  int stop;            /* read end: the call returned */
  atomic_int started;  /* the sampler knows its own thread id */
  int64_t cpu_ns;      /* the sampler thread's own CPU time */
  int rc;
} sampler;

static void *sampler_main(void *arg) {
  sampler *sm = arg;
  pid_t self_tid = (pid_t)syscall(SYS_gettid);
  sm->rc = br__prof_init(&sm->s, true, self_tid, sm->opts ? sm->opts->trace_path : NULL);
  atomic_store(&sm->started, 1);
  if (sm->rc) return NULL;
  int interval = FIRST_INTERVAL_MS, target = interval_of(sm->opts);
  if (interval > target) interval = target;
  br__prof_round(&sm->s);
  while (!wait_readable(sm->stop, interval)) {
    br__prof_round(&sm->s);
    if (interval < target) interval = interval * 2 < target ? interval * 2 : target;
  }
  br__prof_round(&sm->s);
  sm->cpu_ns = br__thread_cpu_ns();
  return NULL;
}

int br_profile(br_profile_report *out, void **result, void *(*fn)(void *), void *arg,
               const br_profile_opts *opts) {
  if (!out || !fn) return BR_EINVAL;
  int stop[2];
  if (pipe2(stop, O_CLOEXEC) != 0) return -errno;
  sampler *sm = calloc(1, sizeof *sm);
  if (!sm) {
    close(stop[0]);
    close(stop[1]);
    return BR_ENOMEM;
  }
  sm->opts = opts;
  sm->stop = stop[0];
  pthread_t th;
  int rc = -pthread_create(&th, NULL, sampler_main, sm);
  if (rc == 0) {
    /* The call must not start before the sampler has its first look, or a
     * short call would have nothing to show. */
    while (!atomic_load(&sm->started)) sched_yield();
    int64_t t0 = mono_ns();
    void *value = fn(arg);
    int64_t t1 = mono_ns();
    if (result) *result = value;
    char c = 1;
    ssize_t w;
    do w = write(stop[1], &c, 1);
    while (w < 0 && errno == EINTR);
    pthread_join(th, NULL);
    rc = sm->rc;
    if (rc == 0) {
      int trace_rc = br__prof_finish(&sm->s);
      br__prof_report(&sm->s, t1 - t0, 0, out);
      out->trace_error = trace_rc;
      out->profiler_cpu_s = (double)sm->cpu_ns / 1e9;
    }
  }
  br__prof_free(&sm->s);
  free(sm);
  close(stop[0]);
  close(stop[1]);
  return rc;
}
