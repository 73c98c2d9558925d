/* SPDX-License-Identifier: MIT */
/* profile_verdict.c — from where the time went to what to do about it.
 *
 * The verdict looks at how much of its time the work spends computing (some
 * thread of it on a CPU), as it would on an idle machine: at least 75 %, it
 * is computing (cpu-bound); at most 25 %, it is waiting (io-bound); in
 * between it does both in turns (mixed). Time spent waiting for a CPU is
 * taken out first, so the verdict stays the same on a busy machine, where
 * the sub-verdict "starved" says what happened. A thread that
 * barely ran and spent its life on a futex is an idle worker of a pool, not a
 * thread fighting for a lock: its futex time counts as idle.
 */
#include "obs/profile_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum {
  TOO_SHORT_NS = 10 * 1000 * 1000, /* under 10 ms, nothing is worth a thread */
};
#define CPU_BOUND_CORES 0.75
#define IO_BOUND_CORES 0.25

static const char *const time_names[BR_PROFILE_T_COUNT] = {
    "cpu", "runqueue", "network", "pipe", "disk", "sleep", "lock", "child", "idle", "other"};

const char *br_profile_time_name(br_profile_time t) {
  return (unsigned)t < BR_PROFILE_T_COUNT ? time_names[t] : "?";
}

const char *br_profile_verdict_name(br_profile_verdict v) {
  switch (v) {
  case BR_PROFILE_CPU_BOUND: return "cpu-bound";
  case BR_PROFILE_IO_BOUND: return "io-bound";
  case BR_PROFILE_MIXED: return "mixed";
  }
  return "?";
}

const char *br_profile_detail_name(br_profile_detail d) {
  switch (d) {
  case BR_PROFILE_PLAIN: return "";
  case BR_PROFILE_PARALLEL: return "parallel";
  case BR_PROFILE_SERIALIZED: return "serialized";
  case BR_PROFILE_STARVED: return "starved";
  case BR_PROFILE_TOO_SHORT: return "too-short";
  }
  return "?";
}

/* What the waiting is mostly made of (CPU and run queue left out). A
 * parent waiting for its children, and idle workers, say nothing the
 * children's and the busy threads' own waits do not: they count only when
 * nothing else waited. */
static br_profile_time main_wait(const double *t) {
  br_profile_time best = BR_PROFILE_T_OTHER;
  double most = 0;
  for (int k = BR_PROFILE_T_NET; k < BR_PROFILE_T_COUNT; k++) {
    if (k == BR_PROFILE_T_CHILD || k == BR_PROFILE_T_IDLE) continue;
    if (t[k] > most) {
      most = t[k];
      best = (br_profile_time)k;
    }
  }
  if (most > 0) return best;
  return t[BR_PROFILE_T_CHILD] >= t[BR_PROFILE_T_IDLE] ? BR_PROFILE_T_CHILD : BR_PROFILE_T_IDLE;
}

static const char *wait_words(br_profile_time k) {
  switch (k) {
  case BR_PROFILE_T_NET: return "waiting on the network";
  case BR_PROFILE_T_PIPE: return "waiting on a pipe or terminal";
  case BR_PROFILE_T_DISK: return "waiting on files or the disk";
  case BR_PROFILE_T_SLEEP: return "sleeping or waiting for timers";
  case BR_PROFILE_T_LOCK: return "blocked on locks";
  case BR_PROFILE_T_CHILD: return "waiting for child processes";
  case BR_PROFILE_T_IDLE: return "idle in an event loop or pool";
  default: return "blocked in other system calls";
  }
}

/* What to use for work of this verdict, on a machine it has to itself;
 * parallel: the computing is already spread over several cores. */
static void plain_advice(const br_profile_report *r, br_profile_time wait, bool parallel,
                         const char **rec, const char **py) {
  switch (r->verdict) {
  case BR_PROFILE_CPU_BOUND:
    if (parallel) {
      *rec = "already parallel: keep the CPU pool (br_pool) or process pool busy; more cores "
             "or less work is the next step";
      *py = "ProcessPoolExecutor(max_workers=os.cpu_count())";
    } else if (r->cores > 1) {
      *rec = "spread the computation over the cores: the CPU pool (br_pool_map, "
             "br_pool_submit), or the process pool (br_procpool) for isolation";
      *py = "multiprocessing.Pool / ProcessPoolExecutor (threads would hold the GIL)";
    } else {
      *rec = "one CPU only: leave it serial (more threads or processes cannot help)";
      *py = "a plain loop";
    }
    break;
  case BR_PROFILE_IO_BOUND:
    if (wait == BR_PROFILE_T_DISK) {
      *rec = "overlap the file I/O: br_to_thread, or br_file_* from tasks (io_uring)";
      *py = "asyncio.to_thread / ThreadPoolExecutor";
    } else if (wait == BR_PROFILE_T_LOCK) {
      *rec = "the threads wait for each other, not for the CPU: shrink the critical section "
             "or hand the shared state to one task (br_chan)";
      *py = "a queue.Queue owned by one thread instead of a shared lock";
    } else if (wait == BR_PROFILE_T_CHILD) {
      *rec = "it waits for its child processes: profile what they do; run them concurrently "
             "with br_process_spawn from tasks";
      *py = "asyncio.create_subprocess_exec";
    } else {
      *rec = "coroutines on a loop: br_spawn one task per wait with braid/io.h, thousands of "
             "waits overlap on one thread";
      *py = "asyncio (aiohttp for HTTP)";
    }
    break;
  case BR_PROFILE_MIXED:
    *rec = "tasks that wait on the loop and hand the computing to the CPU pool "
           "(br_pool_submit + br_await)";
    *py = "asyncio with loop.run_in_executor(ProcessPoolExecutor())";
    break;
  }
}

static void recommend(br_profile_report *r, br_profile_time wait, bool parallel) {
  const char *rec = "", *py = "";
  switch (r->detail) {
  case BR_PROFILE_TOO_SHORT:
    rec = "leave it serial: too short to be worth a thread or a process";
    py = "a plain function call";
    break;
  case BR_PROFILE_SERIALIZED:
    rec = "the threads take turns on one core: run the work in processes (br_procpool) or "
          "remove the lock they share";
    py = "multiprocessing / ProcessPoolExecutor instead of threads (the GIL serializes them)";
    break;
  case BR_PROFILE_STARVED:
    /* The machine's problem first, then what the work itself wants: on a
     * busy machine every verdict is starved, and the advice must stay. */
    plain_advice(r, wait, parallel, &rec, &py);
    snprintf(r->recommendation, sizeof r->recommendation,
             "the machine is oversubscribed (fewer workers, BR_CPUS, or a quieter "
             "machine); the work itself: %s", rec);
    snprintf(r->python, sizeof r->python, "fewer workers than os.cpu_count(); the work: %s", py);
    return;
  case BR_PROFILE_PARALLEL:
  case BR_PROFILE_PLAIN:
    plain_advice(r, wait, parallel, &rec, &py);
    break;
  }
  snprintf(r->recommendation, sizeof r->recommendation, "%s", rec);
  snprintf(r->python, sizeof r->python, "%s", py);
}

/* Whether process pid read or wrote storage (not the page cache): a thread
 * of it that blocked in many waits too short to be caught in a sample (direct
 * I/O, a cold tree of inodes) was waiting on the disk. */
static bool did_storage_io(const prof_state *s, pid_t pid) {
  for (size_t i = 0; i < s->npr; i++)
    if (s->pr[i].pid == pid && (s->pr[i].read_bytes || s->pr[i].write_bytes)) return true;
  return false;
}

/* What the other threads of th's process were seen blocked on most (a
 * wait that is not idling or unknown), or -1. A thread never caught in a
 * wait (on a busy machine, with few samples, a thread taking turns under a
 * lock may always be found running or runnable) most likely blocked on what
 * its siblings did. */
static int sibling_wait(const prof_state *s, const prof_thread *th) {
  double by[BR_PROFILE_T_COUNT] = {0};
  for (size_t i = 0; i < s->nth; i++) {
    const prof_thread *o = &s->th[i];
    if (o == th || o->cat == -2 || o->pid != th->pid) continue;
    for (int k = BR_PROFILE_T_NET; k <= BR_PROFILE_T_CHILD; k++) by[k] += o->t[k];
  }
  int best = -1;
  for (int k = BR_PROFILE_T_NET; k <= BR_PROFILE_T_CHILD; k++)
    if (by[k] > 0 && (best < 0 || by[k] > by[best])) best = k;
  return best;
}

void br__prof_report(const prof_state *s, int64_t wall_ns, int64_t extra_cpu_ns,
                     br_profile_report *out) {
  double t[BR_PROFILE_T_COUNT] = {0};
  int threads = 0, busy = 0;
  double busy_lock = 0, busy_total = 0;
  if (wall_ns <= 0) wall_ns = 1;
  for (size_t i = 0; i < s->nth; i++) {
    const prof_thread *th = &s->th[i];
    if (th->cat == -2) continue;
    threads++;
    double life = th->unplaced;
    for (int k = 0; k < BR_PROFILE_T_COUNT; k++) life += th->t[k];
    int sib = th->unplaced > 0 ? sibling_wait(s, th) : -1;
    int unplaced_as = did_storage_io(s, th->pid) ? BR_PROFILE_T_DISK : sib >= 0 ? sib : BR_PROFILE_T_OTHER;
    t[unplaced_as] += th->unplaced;
    double lock = th->t[BR_PROFILE_T_LOCK] + (unplaced_as == BR_PROFILE_T_LOCK ? th->unplaced : 0);
    bool idle_worker = life > 0 && th->t[BR_PROFILE_T_CPU] < 0.02 * life;
    for (int k = 0; k < BR_PROFILE_T_COUNT; k++) t[k] += th->t[k];
    if (idle_worker) {
      t[BR_PROFILE_T_LOCK] -= lock;
      t[BR_PROFILE_T_IDLE] += lock;
    }
    /* Busy: it wanted a CPU (ran, or waited for one) for a tenth of the
     * wall time. What it got alone would drop the threads of a starved
     * program, whose turns under a lock are then no longer seen. */
    double ran = th->t[BR_PROFILE_T_CPU], queued = th->t[BR_PROFILE_T_RUNQUEUE];
    if (ran + queued >= 0.1 * (double)wall_ns) {
      /* Its share of life on a lock, leaving out its waits for a CPU (which
       * only say how busy the machine was), weighted by how much it
       * computed: threads taking turns under a lock all wait on it, while
       * a reader handing jobs to workers waits on a queue the computing
       * threads hardly ever wait on. */
      busy++;
      busy_lock += ran * (life - queued > 0 ? lock / (life - queued) : 0);
      busy_total += ran;
    }
  }
  if (extra_cpu_ns > 0) t[BR_PROFILE_T_CPU] += (double)extra_cpu_ns;
  double total = 0;
  for (int k = 0; k < BR_PROFILE_T_COUNT; k++) total += t[k];

  *out = (br_profile_report){0};
  out->wall_s = (double)wall_ns / 1e9;
  out->cpu_s = t[BR_PROFILE_T_CPU] / 1e9;
  out->thread_s = total / 1e9;
  for (int k = 0; k < BR_PROFILE_T_COUNT; k++) out->time[k] = total > 0 ? t[k] / total : 0;
  out->cores_avg = t[BR_PROFILE_T_CPU] / (double)wall_ns;
  out->cores_peak = s->cores_peak > out->cores_avg ? s->cores_peak : out->cores_avg;
  out->cores = br_cpu_count();
  out->threads = threads;
  out->busy_threads = busy;
  out->samples = s->samples;
  for (size_t i = 0; i < s->npr; i++) {
    out->read_bytes += s->pr[i].read_bytes;
    out->write_bytes += s->pr[i].write_bytes;
  }
  out->processes = (int)s->npr; /* one record per pid */

  /* The verdict describes the work, not the machine it ran on: the share of
   * the time some thread of it was computing. Stretches in which it wanted a
   * CPU and waited for one are shrunk to what they would have taken on an
   * idle machine (their running share), so a busy machine, which stretches
   * the computing, does not turn waiting work into computing work; threads
   * taking turns under a lock keep the time covered. */
  double cpu = t[BR_PROFILE_T_CPU], rq = t[BR_PROFILE_T_RUNQUEUE];
  double asked = (cpu + rq) / (double)wall_ns;
  double rq_share = rq / (cpu + rq + 1);
  double extra = extra_cpu_ns > 0 ? (double)extra_cpu_ns : 0;
  /* Threads taking turns under a lock (the shape checked below) never want
   * a CPU at the same time, so the time some thread of them wanted one is
   * the sum of their own times on a CPU and in the run queue, which each
   * thread's counters give exactly. The union of the rounds can only be
   * short of it: a wait for a CPU counted in the round it ends, where the
   * other thread's turn already covers the time. On a starved machine,
   * where every covered stretch is shrunk by the contention, that shortfall
   * would read as idle. */
  bool takes_turns = busy >= 2 && out->cores >= 2 && asked <= 1.5 && busy_total > 0 &&
                     busy_lock >= 0.25 * busy_total;
  double covered = s->covered_ns, uncontended = s->uncontended_ns;
  if (takes_turns && s->observed_ns > 0 && covered > 0) {
    double wanted = cpu - extra + rq;
    if (wanted > s->observed_ns) wanted = s->observed_ns;
    if (wanted > covered) {
      uncontended *= wanted / covered;
      covered = wanted;
    }
  }
  double computing = uncontended + extra;
  /* Idle: observed time in which no thread of the work computed or waited
   * for a CPU. The start (before its first thread is sampled) and the end
   * (after its last sample) are not counted as idle: on a busy machine they
   * are mostly waits for a CPU, and a short run is mostly start and end.
   * The CPU time of processes never sampled ran somewhere in the idle-looking
   * time of their parents' rounds, taking as long as the contention seen
   * made the rest take. Nothing observed at all (the command was over before
   * its first sample): the wall time is all there is. */
  double stretch = uncontended > 0 ? covered / uncontended : 1;
  double idle_wall = s->observed_ns > 0 ? s->observed_ns - covered - extra * stretch
                                        : (double)wall_ns - covered - extra;
  if (idle_wall < 0) idle_wall = 0;
  double demand = computing + idle_wall > 0 ? computing / (computing + idle_wall) : 0;
  if (demand >= CPU_BOUND_CORES) out->verdict = BR_PROFILE_CPU_BOUND;
  else if (demand <= IO_BOUND_CORES) out->verdict = BR_PROFILE_IO_BOUND;
  else out->verdict = BR_PROFILE_MIXED;

  br_profile_time wait = main_wait(t);
  bool parallel = out->verdict == BR_PROFILE_CPU_BOUND && busy >= 2 && asked >= 1.5;
  /* Too short by what it would take on an idle machine: a busy machine
   * stretches `true` past 10 ms without making it worth a thread. Over
   * before the first sample saw it is too short as well. */
  if (wall_ns < TOO_SHORT_NS || s->observed_ns <= 0 || computing + idle_wall < TOO_SHORT_NS) {
    out->detail = BR_PROFILE_TOO_SHORT;
  } else if (out->verdict != BR_PROFILE_IO_BOUND && takes_turns) {
    /* Checked before starvation: a lock the program takes is its own design,
     * and stays the diagnosis on a busy machine too. What the threads asked
     * for (on a CPU or waiting for one), not what they got: threads taking
     * turns under a lock ask for about one core however idle the machine
     * (a little more on a busy one: a waiter's timed wake-ups queue too);
     * a reader handing jobs to two workers (zstd -T2, pigz) asks for two
     * and waits on its queue's lock, and on a busy machine gets one core. */
    out->detail = BR_PROFILE_SERIALIZED;
  } else if (out->verdict != BR_PROFILE_IO_BOUND && rq_share >= 0.25) {
    out->detail = BR_PROFILE_STARVED;
  } else if (parallel) {
    /* What it asked for, not what it got: on a lightly busy machine two
     * computing threads get 1.3 cores with too little run-queue time to be
     * starved, and are still parallel work. */
    out->detail = BR_PROFILE_PARALLEL;
  }

  char *e = out->evidence;
  size_t n = sizeof out->evidence;
  switch (out->detail) {
  case BR_PROFILE_SERIALIZED:
    snprintf(e, n, "%d threads computed but together asked for only %.2f of %d cores "
             "(%.2f busy on average); %.0f%% of those threads' time went to waiting on a lock",
             busy, asked, out->cores, out->cores_avg, 100 * busy_lock / busy_total);
    break;
  case BR_PROFILE_STARVED:
    snprintf(e, n, "it asked for %.2f cores but got %.2f of %d: %.0f%% of its runnable time "
             "was spent waiting for a CPU", asked, out->cores_avg, out->cores, 100 * rq_share);
    break;
  default:
    if (out->verdict == BR_PROFILE_IO_BOUND)
      snprintf(e, n, "%.2f of %d cores busy on average over %.2f s; %.0f%% of thread time %s, "
               "%.0f%% on a CPU", out->cores_avg, out->cores, out->wall_s,
               100 * out->time[wait], wait_words(wait), 100 * out->time[BR_PROFILE_T_CPU]);
    else if (out->time[wait] >= 0.01)
      snprintf(e, n, "%.2f of %d cores busy on average over %.2f s (peak %.2f); %.0f%% of "
               "thread time on a CPU, %.0f%% %s", out->cores_avg, out->cores, out->wall_s,
               out->cores_peak, 100 * out->time[BR_PROFILE_T_CPU], 100 * out->time[wait],
               wait_words(wait));
    else
      snprintf(e, n, "%.2f of %d cores busy on average over %.2f s (peak %.2f); %.0f%% of "
               "thread time on a CPU", out->cores_avg, out->cores, out->wall_s,
               out->cores_peak, 100 * out->time[BR_PROFILE_T_CPU]);
    break;
  }
  recommend(out, wait, parallel);
}
