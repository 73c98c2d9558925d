/* SPDX-License-Identifier: MIT */
/* braid — process pool: the parent side's private types, shared by
 * procpool_api.c, procpool_slot.c, procpool_spawn.c, procpool_manager.c and
 * procpool_map.c. What the parent shares with the fork server and the
 * workers (memory layouts, messages) is in procpool_shm.h.
 *
 * Threads. In the parent, two kinds of thread touch a pool: submitters (any
 * thread of the program: submit, map, shutdown, stats) and the pool's one
 * manager thread (procpool_manager.c), which collects results, watches
 * timeouts, talks to the fork server and completes the futures.
 *
 * The lock. One mutex, br_procpool.mu, guards everything below marked "mu":
 * the pending queue, the slots (their in-flight FIFOs and ring positions),
 * the counters and the shutdown state. Futures are never completed with mu
 * held: completing one may run callbacks that submit again (the manager
 * collects finished jobs in a pp_donelist under mu and completes them after
 * unlocking). Nothing else is locked while mu is held except the core's
 * future lock (br_future_cancel's hook runs without it).
 *
 * Job flow. A submitter writes the request straight into the request ring
 * of the least-loaded worker when the pending queue is empty and that
 * worker has room (fewer than p->depth requests in flight); otherwise the
 * job waits in the pending queue, and whoever next finds room (the manager
 * after a result, or the next submitter) moves it on, oldest first. p->depth
 * adapts to the measured job length: deep rings for tiny jobs (no worker
 * waits for a hand-off, no wake-up per job), two requests per worker for
 * long ones (load balance). A request that turns out long would hold up
 * the ones queued behind it: when a worker idles, the manager takes those
 * back (br__pp_rebalance, the start-of-job claim of procpool_shm.h) and
 * marks the slot stuck so it gets no more until its long request ends.
 *
 * Failure. The fork server reports every worker exit with its wait status.
 * The manager drains what that worker published, fails the request it had
 * started (procpool_shm.h: the start-of-job claim), requeues the ones it
 * had not started at the front of the pending queue, and starts a
 * replacement. A timed-out job is failed the same way after the manager
 * asked the server to SIGKILL its worker, and so is the job of a worker that
 * wrote a malformed result (procpool_decode.h). The fork server is the
 * process's, shared with its other pools (procpool_spawn.c). If it dies, every
 * worker dies with it (PR_SET_PDEATHSIG) and the manager handles them all
 * as dead, then attaches to a new server (the first pool to see the death
 * starts it).
 */
#ifndef BRAID_EXEC_PROCPOOL_INT_H
#define BRAID_EXEC_PROCPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "braid.h"
#include "core/job.h"
#include "exec/procpool_shm.h"

#define PP_MAX_DEPTH 4096                 /* requests in flight per worker, power of two */
#define PP_DEPTH_BUDGET_NS 200000.0       /* keep ~200 us of work queued per worker */
/* A slot whose workers died this many times in a row before they were
 * ready breaks the pool: replacing them would go on for ever. */
#define PP_EARLY_DEATHS_MAX 5
#define PP_RESTART_DELAY_NS (100 * 1000 * 1000) /* retry a worker that failed to start */
/* While no worker of a pool is live, this many failed starts in a row of
 * one slot (fork or descriptors refused: EAGAIN, EMFILE, ENOMEM) fail the
 * pending jobs with the reason instead of leaving them waiting for ever;
 * the pool keeps trying, and works again once a worker starts. */
#define PP_START_FAILS_MAX 5
#define PP_STEAL_MIN_NS 1000000           /* least run of a request before its queue is taken */
#define PP_TIMEOUT_SLACK_NS ((int64_t)1000000000) /* timeouts: a request's budget beyond its items' */
#define PP_READY_POLL_NS (10 * 1000 * 1000) /* timeouts: how often a starting worker is looked at */
#define PP_IDLE_CHECK_MS 1000 /* an idle manager looks at its own descriptors this often */

/* pp_job.state */
enum { J_PENDING = 0, J_DISPATCHED, J_DONE };
/* pp_slot.state */
enum { S_EMPTY = 0, S_LIVE };
/* br_procpool.closing: only ever increases */
enum { C_OPEN = 0, C_DRAIN, C_CANCEL };
/* how a slot died (procpool_manager.c, slot_died) */
enum { SD_NO_RESTART = 1, SD_NO_COUNT = 2 };

typedef struct pp_job pp_job;

/* One request: a job, or a map chunk of `count` items (PP_F_CHUNK).
 *
 * References: the core's job protocol (core/job.h). `base` (first, so a
 * br__job* is a pp_job*) holds the record's reference to the future and
 * the two references on the record. RUN belongs to whichever structure
 * holds the job — the pending queue, then a slot's FIFO, then the manager's
 * completion list — and is dropped by br__job_complete (the manager) or by
 * br__job_unref where a cancelled job is unlinked without an outcome
 * (br__pp_pump, the manager's requeue and fail paths). HOOK belongs to the
 * future's cancel hook. pp_job_cancel never takes a job back (returns
 * false); it only marks it. */
struct pp_job {
  br__job base;
  pp_job *next;   /* mu: pending queue link */
  br_procpool *pool;
  uint32_t job;   /* registry index */
  uint32_t count; /* items (1 for a job) */
  uint16_t flags; /* PP_F_CHUNK */
  uint8_t state;  /* mu: J_* */
  bool cancelled; /* mu: the future was cancelled; drop the outcome */
  bool timed_out; /* mu: the manager killed its worker for the timeout */
  void *payload;  /* owned copy while pending (NULL with a memfd) */
  size_t len;
  int memfd;      /* large payload, or -1 */
  int64_t timeout_ns;
  int slot;       /* mu: while dispatched */
  uint64_t seq;
  uint64_t rec_off; /* record offset in the request ring's data */
  uint64_t rec_end; /* ring position after the record */
};

/* One worker's place in the pool: its shared region, socket and in-flight
 * FIFO. A slot outlives its worker processes: a replacement reuses the slot
 * with a fresh region and the next generation number. Every field: mu. */
typedef struct pp_slot {
  int idx;
  int state;
  uint64_t gen;
  pid_t pid; /* 0 until the server said it started */
  void *base;
  pp_slot_shm *ctl;
  pp_ring *req, *res;
  int sock;
  uint64_t req_head, req_free, res_tail;
  uint64_t next_seq, dispatched;
  pp_job **fifo; /* PP_MAX_DEPTH entries: dispatched jobs, oldest first */
  size_t fifo_head, fifo_n;
  bool killing;
  /* The worker broke the result protocol (procpool_decode.h): what it did.
   * Its rings are no longer read; it is being killed. */
  const char *violation;
  int64_t head_since; /* when the oldest request in flight became the oldest */
  int64_t ready_at;   /* when the manager first saw its worker ready, 0: not yet
                       * (check_timers: a job's time starts no earlier) */
  int64_t started_at; /* when its worker was asked for */
  bool init_timed_out; /* its worker was killed for the initializer's time */
  bool stuck;         /* its oldest request has run long: give it no more (rebalance) */
  int64_t restart_at; /* when an EMPTY slot should be started again */
  unsigned early_deaths; /* its workers that died before they were ready, in a row */
  unsigned start_fails;  /* starts of a worker that failed in a row (manager: start_failed) */
  int start_err;         /* the last one's code */
} pp_slot;

/* A finished job waiting to have its future completed (outside mu). */
typedef struct pp_done {
  pp_job *job;
  int code;
  char *msg;
  br_bytes *value;
} pp_done;

typedef struct pp_donelist {
  pp_done *v;
  size_t n, cap;
} pp_donelist;

struct br_procpool {
  pthread_mutex_t mu;
  int nworkers;
  pp_slot *slots;
  pp_job *pend_head, *pend_tail; /* mu */
  size_t npending;               /* mu */
  int closing;                   /* mu: C_* */
  int broken;                    /* mu: the code every job fails with, or 0 */
  char *broken_msg;              /* mu */
  size_t max_payload;
  int64_t timeout_ns;
  uint64_t max_jobs;
  uint32_t depth;  /* mu */
  double avg_ns;   /* mu */
  uint32_t rr;     /* mu */
  size_t ntimeout; /* mu: dispatched jobs that have a timeout */
  bool timers_changed; /* mu: a dispatch since check_timers that may need an earlier wake-up */
  /* The process's fork server as this pool attached to it
   * (procpool_spawn.c); changed by br_procpool_new and the manager, under
   * mu once the manager runs. ctl is this pool's connection to it. */
  pid_t server_pid;
  uint64_t server_gen; /* which of the process's servers */
  bool server_hello;   /* the server said hello on ctl */
  bool server_forked;  /* fallback: the server was forked, not exec'd */
  int ctl, efd, epfd;
  /* The working directory when the pool was created (O_PATH, -1 if it
   * could not be opened): its workers start there, whatever the
   * process-wide server's is. */
  int cwd_fd;
  pp_pool_shm *pshm;
  size_t pshm_size;
  int pshm_fd;
  char *init_name;
  pthread_t mgr;
  bool mgr_started;
  bool stopped;       /* mu: the manager stopped everything */
  br_future *closed;  /* completed by the manager as it ends */
  br_procpool_stats st; /* mu */
};

static inline pp_job *pp_fifo_at(pp_slot *s, size_t i) {
  return s->fifo[(s->fifo_head + i) & (PP_MAX_DEPTH - 1)];
}

/* ---- procpool_api.c */

/* Queue one request (a job, or a chunk of `count` items when flags has
 * PP_F_CHUNK) whose payload is the concatenation of iov[0..iovcnt), `len`
 * bytes in all, and store its future in *out. The future's value is a
 * br_bytes*: the job's output, or for a chunk the raw result entries
 * (pp_entry...); its value_free is br_bytes_free. timeout_ms as in
 * br_procpool_submit_opts. Any thread; takes mu. */
int br__pp_submit(br_procpool *p, br_future **out, uint32_t job, const struct iovec *iov,
                  int iovcnt, size_t len, uint16_t flags, uint32_t count, int64_t timeout_ms);

/* The registry index of job `name`, or BR_ENOJOB / BR_EINVAL (NULL). */
int br__pp_job_index(const char *name);

/* The name of registry entry idx, "?" if none. */
const char *br__pp_job_name(uint32_t idx);

/* asprintf that returns NULL on failure. */
char *br__pp_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- procpool_slot.c: every function with mu held.
 * slot_start: a fresh region and socket for s, and a worker asked of the
 * server (0 or a negative code); slot_teardown: release them;
 * slot_dispatch: write j's request (payload from iov, or j's own copy when
 * iov is NULL) into s's ring, false if s has no room (and wake a sleeping
 * manager when the job needs a deadline); slot_pick: the live slot with the
 * fewest requests in flight, not stuck behind a long request, or NULL; pump: move pending jobs
 * into rings while there is room; pend_push_back: queue j last. */

int br__pp_slot_start(br_procpool *p, pp_slot *s);
void br__pp_slot_teardown(pp_slot *s);
bool br__pp_slot_dispatch(br_procpool *p, pp_slot *s, pp_job *j, const struct iovec *iov,
                          int iovcnt);
pp_slot *br__pp_slot_pick(br_procpool *p);
/* The start-of-job claim (procpool_shm.h) from the parent's side: take
 * dispatched job j back from slot s. True: the worker can never start it
 * (the caller owns it again); false: it counts as started. */
bool br__pp_take_back(pp_slot *s, pp_job *j);
/* Take back the requests queued behind a request that has run long (a few
 * average jobs, at least PP_STEAL_MIN_NS) when a worker is idle, mark that
 * slot stuck, and hand them out again (oldest first, before what is
 * pending). Returns when to look again (BR_NEVER: no need). */
int64_t br__pp_rebalance(br_procpool *p, int64_t now);
void br__pp_pump(br_procpool *p);
void br__pp_pend_push_back(br_procpool *p, pp_job *j);

/* ---- procpool_spawn.c: the process's one fork server, shared by every
 * pool, in the parent (br_procpool_new with mu held, then the manager with
 * mu held).
 *
 * attach: connect p to the server, starting one if none runs (exec'd, or
 * forked when fork_server says exec proved impossible or under an
 * emulator); sets p->ctl (non-blocking, in p->epfd as 1), p->server_pid,
 * p->server_gen, p->server_forked, clears p->server_hello and stores the
 * process's key in p->pshm. 0 or a negative code.
 * detach: the orderly end (shutdown): ask the server to kill and reap p's
 * workers and wait until it has; p->ctl is closed after.
 * lost: p->ctl read EOF outside detach, so the server died: close p->ctl,
 * reap the server (once, whichever pool sees it first) and return its wait
 * status, -1 if unknown.
 * peek (tests): the running server's pid (0: none) and how many servers
 * this process has started. */

int br__pp_server_attach(br_procpool *p, bool fork_server);
void br__pp_server_detach(br_procpool *p);
int br__pp_server_lost(br_procpool *p);
void br__pp_server_peek(pid_t *pid, uint64_t *started);

/* ---- procpool_manager.c */

/* The manager thread's body (arg: the pool); it ends after a shutdown,
 * completing p->closed last. */
void *br__pp_mgr_main(void *arg);
/* Wake the manager if it sleeps (a write to its eventfd). Any thread. */
void br__pp_wake_manager(br_procpool *p);

/* ---- procpool_server.c (the fork server process) */

/* The fork server, forked (not exec'd) by the parent: receive CONFIG,
 * check it carries `key`, run. */
_Noreturn void br__pp_server_main(const uint8_t *key);
extern const int br__pp_server_linked;

/* ---- procpool_worker.c (a worker process, forked by the server) */

_Noreturn void br__pp_worker_main(pp_pool_shm *pool, int efd, int slot_fd, int sock);

#endif
