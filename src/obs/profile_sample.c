/* SPDX-License-Identifier: MIT */
/* profile_sample.c — one sampling round over a process tree.
 *
 * The tree is found from the profiling process downwards: the children
 * listed in /proc/PID/task/TID/children of every thread of every process
 * already known. In command mode the profiling process is a child subreaper,
 * so an orphaned grandchild is reparented to it and stays in the tree. Each
 * thread's schedstat, syscall and children files are opened once and re-read
 * with pread, so a round costs about three system calls per thread.
 */
#include "obs/profile_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sys/clock.h"

static int64_t now_ns(void) { return br__mono_ns(); }

static int open_task_file(pid_t pid, pid_t tid, const char *name) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/%s", (int)pid, (int)tid, name);
  return open(path, O_RDONLY | O_CLOEXEC);
}

static prof_thread *find_thread(prof_state *s, pid_t tid) {
  for (size_t i = 0; i < s->nth; i++)
    if (s->th[i].tid == tid && s->th[i].alive) return &s->th[i];
  return NULL;
}

/* A process seen in an earlier round keeps its entry: its /proc/PID/io
 * counters are totals, read again each round into the same record. */
static prof_proc *find_proc(prof_state *s, pid_t pid) {
  for (size_t i = 0; i < s->npr; i++)
    if (s->pr[i].pid == pid) return &s->pr[i];
  return NULL;
}

static prof_proc *add_proc(prof_state *s, pid_t pid) {
  prof_proc *p = find_proc(s, pid);
  if (p) {
    p->alive = true;
    return p;
  }
  if (s->npr == s->cap_pr) {
    size_t cap = s->cap_pr ? 2 * s->cap_pr : 16;
    prof_proc *np = realloc(s->pr, cap * sizeof *np);
    if (!np) return NULL;
    s->pr = np;
    s->cap_pr = cap;
  }
  p = &s->pr[s->npr++];
  *p = (prof_proc){.pid = pid, .alive = true};
  return p;
}

static prof_thread *add_thread(prof_state *s, pid_t pid, pid_t tid, int64_t now) {
  if (s->nth == s->cap_th) {
    size_t cap = s->cap_th ? 2 * s->cap_th : 32;
    prof_thread *nt = realloc(s->th, cap * sizeof *nt);
    if (!nt) return NULL;
    s->th = nt;
    s->cap_th = cap;
  }
  prof_thread *t = &s->th[s->nth];
  *t = (prof_thread){.pid = pid, .tid = tid, .cat = -1, .seen_blocked = -1, .alive = true, .trace_cat = -1,
                     .first_ns = now, .last_ns = now, .last_cat = BR_PROFILE_T_OTHER};
  t->fd_sched = open_task_file(pid, tid, "schedstat");
  if (t->fd_sched < 0) return NULL; /* gone already */
  t->fd_syscall = open_task_file(pid, tid, "syscall");
  t->fd_children = open_task_file(pid, tid, "children");
  s->nth++;
  return t;
}

static void close_thread(prof_thread *t) {
  if (t->fd_sched >= 0) close(t->fd_sched);
  if (t->fd_syscall >= 0) close(t->fd_syscall);
  if (t->fd_children >= 0) close(t->fd_children);
  t->fd_sched = t->fd_syscall = t->fd_children = -1;
  t->alive = false;
}

/* ------------------------------------------------------------------------ */
/* Trace: one slice per stretch of a thread in the same state.               */

static void trace_close_slice(prof_state *s, prof_thread *t, int64_t at) {
  if (!s->trace || t->trace_cat < 0 || at <= t->trace_from) return;
  fprintf(s->trace, "%s\n{\"name\":\"%s\",\"cat\":\"braid.profile\",\"ph\":\"X\",\"ts\":%.3f,"
          "\"dur\":%.3f,\"pid\":%d,\"tid\":%d}",
          s->trace_any ? "," : "", br_profile_time_name((br_profile_time)t->trace_cat),
          (double)(t->trace_from - s->start_ns) / 1e3, (double)(at - t->trace_from) / 1e3,
          (int)t->pid, (int)t->tid);
  s->trace_any = true;
}

static void trace_state(prof_state *s, prof_thread *t, int cat, int64_t from) {
  if (!s->trace || cat == t->trace_cat) return;
  trace_close_slice(s, t, from);
  t->trace_cat = cat;
  t->trace_from = from;
}

static void trace_name_thread(prof_state *s, const prof_thread *t) {
  if (!s->trace) return;
  char path[96], comm[64] = "?";
  snprintf(path, sizeof path, "/proc/%d/task/%d/comm", (int)t->pid, (int)t->tid);
  FILE *f = fopen(path, "re");
  if (f) {
    if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n\"\\")] = '\0';
    fclose(f);
  }
  fprintf(s->trace, "%s\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,"
          "\"args\":{\"name\":\"%s\"}}",
          s->trace_any ? "," : "", (int)t->pid, (int)t->tid, comm);
  s->trace_any = true;
}

/* ------------------------------------------------------------------------ */
/* Discovery                                                                 */

/* Add pid's threads (and their children's pids to the work list). */
static void discover_process(prof_state *s, pid_t pid, pid_t **work, size_t *nwork,
                             size_t *capwork, int64_t now) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return;
  if (pid != s->self || s->include_self) add_proc(s, pid);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t tid = (pid_t)atoi(e->d_name);
    prof_thread *t = find_thread(s, tid);
    bool counted = (pid != s->self || s->include_self) && tid != s->skip_tid;
    if (!t) {
      if (!counted && pid != s->self) continue;
      t = add_thread(s, pid, tid, now);
      if (!t) continue;
      if (!counted) t->cat = -2; /* the profiler's own thread: only its children matter */
      else trace_name_thread(s, t);
    }
    t->seen = true;
    if (t->fd_children < 0) continue;
    char buf[4096];
    ssize_t n = pread(t->fd_children, buf, sizeof buf - 1, 0);
    if (n <= 0) continue;
    buf[n] = '\0';
    for (char *p = buf, *end; *p; p = end) {
      long c = strtol(p, &end, 10);
      if (end == p) break;
      if (*nwork == *capwork) {
        size_t cap = *capwork ? 2 * *capwork : 16;
        pid_t *nw = realloc(*work, cap * sizeof *nw);
        if (!nw) break;
        *work = nw;
        *capwork = cap;
      }
      (*work)[(*nwork)++] = (pid_t)c;
    }
  }
  closedir(d);
}

static void read_io(prof_proc *p) {
  char path[64], line[128];
  snprintf(path, sizeof path, "/proc/%d/io", (int)p->pid);
  FILE *f = fopen(path, "re");
  if (!f) return;
  unsigned long long v;
  /* What grew since the last reading is added; a total that went down
   * belongs to a new process under a reused pid, and all of it is new. */
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "read_bytes: %llu", &v) == 1) {
      p->read_bytes += v >= p->read_seen ? v - p->read_seen : v;
      p->read_seen = v;
    } else if (sscanf(line, "write_bytes: %llu", &v) == 1) {
      p->write_bytes += v >= p->write_seen ? v - p->write_seen : v;
      p->write_seen = v;
    }
  }
  fclose(f);
}

/* ------------------------------------------------------------------------ */

int br__prof_init(prof_state *s, bool include_self, pid_t skip_tid, const char *trace_path) {
  *s = (prof_state){.self = getpid(), .skip_tid = skip_tid, .include_self = include_self};
  s->start_ns = s->last_ns = now_ns();
  if (trace_path) {
    s->trace = fopen(trace_path, "we");
    if (!s->trace) return -errno;
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[", s->trace);
  }
  if (access("/proc/self/task", R_OK) != 0) return BR_ENOSYS;
  return 0;
}

void br__prof_round(prof_state *s) {
  int64_t now = now_ns();
  for (size_t i = 0; i < s->nth; i++) s->th[i].seen = false;
  for (size_t i = 0; i < s->npr; i++) s->pr[i].alive = false;

  pid_t *work = NULL;
  size_t nwork = 0, capwork = 0;
  discover_process(s, s->self, &work, &nwork, &capwork, now);
  for (size_t i = 0; i < nwork; i++) {
    bool dup = false;
    for (size_t j = 0; j < i && !dup; j++) dup = work[j] == work[i];
    if (!dup) discover_process(s, work[i], &work, &nwork, &capwork, now);
  }
  free(work);

  uint64_t round_run = 0;
  double round_demand = 0, round_late = 0, fresh_seen = 0;
  bool known = false; /* some thread was already there at the last round */
  int64_t span = now - s->last_ns;
  for (size_t i = 0; i < s->nth; i++) {
    prof_thread *t = &s->th[i];
    if (!t->alive) continue;
    char buf[128];
    /* Read even a thread this round did not find (its process may have been
     * between parents): only a failed read means it is gone. */
    ssize_t n = pread(t->fd_sched, buf, sizeof buf - 1, 0);
    int cat = n > 0 && t->cat != -2 && t->fd_syscall >= 0
                  ? br__prof_blocked_category(t->pid, t->fd_syscall)
                  : BR_PROFILE_T_OTHER;
    if (n <= 0 || cat == BR_PROFILE_T_COUNT) { /* exited since the last round */
      trace_close_slice(s, t, t->last_ns);
      close_thread(t);
      continue;
    }
    if (t->cat == -2) continue; /* the profiler's own thread */
    buf[n] = '\0';
    unsigned long long run = 0, wait = 0;
    if (sscanf(buf, "%llu %llu", &run, &wait) != 2) continue;
    /* Profiling a call of this process, the first round is the baseline:
     * what its threads ran before the call is not the call's. A command's
     * processes are all new: their first round counts in full. */
    bool baseline = s->samples == 0 && s->include_self;
    bool fresh = !baseline && t->last_ns == t->first_ns && t->run_ns == 0 && t->wait_ns == 0;
    uint64_t drun = run - t->run_ns, dwait = wait - t->wait_ns;
    int64_t dt = fresh ? (int64_t)(drun + dwait) : now - t->last_ns;
    double blocked = (double)dt - (double)drun - (double)dwait;
    if (baseline) drun = dwait = 0, blocked = 0;
    else if (!fresh) known = true;
    else if ((double)dt > fresh_seen) fresh_seen = (double)dt;
    double active0 = t->t[BR_PROFILE_T_CPU] + t->t[BR_PROFILE_T_RUNQUEUE];
    t->t[BR_PROFILE_T_CPU] += (double)drun;
    t->t[BR_PROFILE_T_RUNQUEUE] += (double)dwait;
    t->blocked_balance += blocked;
    if (t->blocked_balance > 0) {
      double give = t->blocked_balance;
      /* Found running at both ends of the round, the thread blocked in
       * between on what it blocks on in general: a thread that computes
       * 10 ms and waits 10 ms for a lock is seen running half the time,
       * and its waits are still lock waits. */
      int before = t->cat >= 0 ? t->cat : cat >= 0 ? cat : t->seen_blocked;
      int after = cat >= 0 ? cat : before;
      if (before < 0) {
        /* Not seen blocked yet: placed once it is (or as "other" at the end). */
        t->unplaced += give;
      } else {
        t->t[before] += give / 2;
        t->t[after] += give / 2;
        t->last_cat = after;
      }
      t->blocked_balance = 0;
    } else if (t->blocked_balance < 0) {
      /* The counters caught up with time given out before: take it back. */
      double back = -t->blocked_balance;
      if (t->unplaced > 0) {
        double u = back < t->unplaced ? back : t->unplaced;
        t->unplaced -= u;
        t->blocked_balance += u;
        back -= u;
      }
      if (back > t->t[t->last_cat]) back = t->t[t->last_cat];
      t->t[t->last_cat] -= back;
      t->blocked_balance += back;
    }
    if (s->trace) {
      /* The round's dominant state for the trace. */
      int shown = cat >= 0 ? cat : BR_PROFILE_T_CPU;
      if (dt > 0 && (double)drun > 0.5 * (double)dt) shown = BR_PROFILE_T_CPU;
      trace_state(s, t, shown, fresh ? now - dt : t->last_ns);
    }
    t->cat = cat;
    if (cat >= 0) t->seen_blocked = cat;
    /* The first wait it is caught in explains the blocked time it had not
     * been caught in, unless it is one braid cannot name: a thread that did
     * direct I/O too quick to catch and is then found stopped by a tracer
     * (a sanitizer's leak check at exit, in sched_yield) waited on the disk,
     * which its process's storage counters tell at the report. */
    if (cat >= 0 && cat != BR_PROFILE_T_OTHER) {
      t->t[cat] += t->unplaced;
      t->unplaced = 0;
    }
    t->run_ns = run;
    t->wait_ns = wait;
    t->last_ns = now;
    round_run += drun;
    /* The thread's computing in this round, its late-counted run-queue time
     * moved back where it belongs by the balance above. */
    double demand = t->t[BR_PROFILE_T_CPU] + t->t[BR_PROFILE_T_RUNQUEUE] - active0;
    /* More than the round lasted: a run-queue wait longer than a round,
     * counted only now that it ended; it covered earlier rounds' time. */
    if (dt > 0 && demand > (double)dt) {
      if (demand - (double)dt > round_late) round_late = demand - (double)dt;
      demand = (double)dt;
    }
    round_demand += demand;
  }
  /* The work was computing (or trying to) for as long as any of its threads
   * was on a CPU or in the run queue; no more than the round lasted. */
  if (round_demand > 0 && span > 0) {
    double wanted = round_demand < (double)span ? round_demand : (double)span;
    double ran = (double)round_run < round_demand + round_late ? (double)round_run
                                                               : round_demand + round_late;
    wanted += round_late;
    round_demand += round_late;
    s->covered_ns += wanted;
    /* Without contention the same computing would have taken only the
     * running share of that time. */
    s->uncontended_ns += wanted * ran / round_demand;
  }
  /* The time the work is known to have existed in this round: all of it
   * when a thread of it was there at the last round, else what its new
   * threads ran and waited for a CPU. Before a command's first thread is
   * seen and after its last one has gone, nobody knows what it did. */
  if (span > 0) s->observed_ns += known ? (double)span : fresh_seen < (double)span ? fresh_seen
                                                                                    : (double)span;
  for (size_t i = 0; i < s->npr; i++)
    if (s->pr[i].alive) read_io(&s->pr[i]);
  if (span > 0 && s->samples > 0) {
    double cores = (double)round_run / (double)span;
    if (cores > s->cores_peak) s->cores_peak = cores;
  }
  s->last_ns = now;
  s->samples++;
}

int br__prof_finish(prof_state *s) {
  for (size_t i = 0; i < s->nth; i++) {
    if (!s->th[i].alive) continue;
    trace_close_slice(s, &s->th[i], s->last_ns);
    close_thread(&s->th[i]);
  }
  int rc = 0;
  if (s->trace) {
    /* A trace cut short by a full disk would read as a run that ended
     * early: its loss is said, not hidden. */
    errno = 0;
    fputs("\n]}\n", s->trace);
    if (fflush(s->trace) != 0 || ferror(s->trace)) rc = -(errno ? errno : EIO);
    if (fclose(s->trace) != 0 && rc == 0) rc = -(errno ? errno : EIO);
    s->trace = NULL;
  }
  return rc;
}

void br__prof_free(prof_state *s) {
  br__prof_finish(s);
  free(s->th);
  free(s->pr);
  *s = (prof_state){0};
}
