/* SPDX-License-Identifier: MIT */
/* braid — process pool: the worker process.
 *
 * Who runs this: a worker process, forked by the fork server
 * (procpool_server.c) for one slot of the pool, single-threaded (unless a
 * job starts threads of its own). It maps its slot region, runs the
 * initializer, then loops: take the next request from the request ring,
 * run the job (or every item of a map chunk), write the outcome into the
 * result ring, wake the manager if it sleeps. It exits to be recycled after
 * max_jobs_per_worker requests, and dies with the server (PR_SET_PDEATHSIG).
 *
 * Lock rules: none; the rings are single-producer single-consumer and the
 * handshakes with the parent are in procpool_shm.h (sleeping and waking,
 * the start-of-job handshake). While a job runs, the worker's job context
 * (core/job.h) is current, so br_fail() records the job's code and message
 * and br_cancelled() reads the request's cancel flag.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/job.h"
#include "core/log.h"
#include "exec/jobs.h"
#include "exec/procpool_int.h"
#include "sys/clock.h"

typedef struct worker {
  pp_pool_shm *pool;
  pp_slot_shm *ctl;
  pp_ring *req, *res;
  int sock;   /* slot socket: memfds in both directions */
  int efd;    /* the manager's eventfd */
  dev_t sock_dev; /* the socket's identity: tells it from a descriptor */
  ino_t sock_ino; /* that a job put on its number (worker_check_fd) */
  uint64_t rd;      /* read cursor in the request ring */
  uint64_t res_pos; /* write position in the result ring */
  uint64_t jobs;
  br_bytes acc;     /* chunk results */
  /* The job context (core/job.h), current while a job runs. */
  br__job_ctx ctx;
  const pp_rec *cur;  /* the request being run, for br_cancelled() */
  int fail_code;      /* br_fail's during the current item, or 0 */
  char *fail_msg;     /* malloc'd, or NULL */
  /* Run time vs CPU time (worker_acct): the open window. */
  bool win_open;
  int64_t win_cpu0, win_t0, win_run;
  long win_vcsw;      /* voluntary context switches when the window opened */
  uint64_t res_cpu;   /* for the result being sent */
  bool res_blocked;
} worker;

/* Run time against CPU time per job (br_procpool_stats run_ns, cpu_ns,
 * blocked). The process CPU clock is a system call, as costly as a small
 * job, so it is read when an accounting window opens (a job starts with
 * none open) and when one closes: after a job of 50 us or more, once the
 * window is 1 ms old, or when no request is waiting. The window's jobs ran
 * win_run in all and used min(CPU read, win_run); the result that closes
 * the window carries that CPU time (the others carry 0), so the parent's
 * sums are right once the window closes, which is before this result is
 * published. A long job closing a window is marked blocked when the window
 * spent more than half of its run off a CPU and the worker gave up its CPU
 * itself in it (off a CPU without that, it was preempted: a busy machine). */
static void worker_acct(worker *w, const pp_rec *req, int64_t t0, int64_t t1) {
  int64_t run = t1 - t0;
  w->win_run += run;
  w->res_cpu = 0;
  w->res_blocked = false;
  bool more = atomic_load_explicit(&w->req->head, memory_order_acquire) > w->rd + req->size;
  if (run < 50000 && t1 - w->win_t0 < 1000000 && more) return;
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  int64_t cpu = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - w->win_cpu0;
  if (cpu > w->win_run) cpu = w->win_run;
  if (cpu < 0) cpu = 0;
  w->res_cpu = (uint64_t)cpu;
  w->res_blocked = run >= 50000 && w->win_run - cpu > run / 2 &&
                   br__thread_voluntary_switches() > w->win_vcsw;
  w->win_open = false;
}

/* br_fail() inside a job: the last call wins. */
static void worker_ctx_fail(br__job_ctx *ctx, int code, char *msg) {
  worker *w = (worker *)((char *)ctx - offsetof(worker, ctx));
  free(w->fail_msg);
  w->fail_code = code;
  w->fail_msg = msg;
}

/* br_cancelled() inside a job: the parent sets the request's cancel flag
 * when the job's future is cancelled (its result would be dropped). */
static int worker_ctx_cancelled(br__job_ctx *ctx) {
  worker *w = (worker *)((char *)ctx - offsetof(worker, ctx));
  return w->cur && (atomic_load_explicit(&((pp_rec *)w->cur)->cancel, memory_order_relaxed) &
                    PP_C_CANCEL)
             ? BR_ECANCELED
             : 0;
}

static const br__job_ctx_ops worker_ctx_ops = {
    .fail = worker_ctx_fail, .cancelled = worker_ctx_cancelled, .wait = NULL};

/* Jobs are arbitrary code: one may close descriptors it did not open
 * (closefrom(3) before an exec, a daemon-style loop) or dup2 onto them. The
 * worker's own eventfd and socket are moved out of the way (worker_hide_fd)
 * and checked before each use: writing a wake-up into a descriptor that is
 * no longer ours would leave the manager asleep and the job's future
 * waiting for ever. A worker whose descriptors are gone says so in its
 * state and exits; what it published before is still collected, and the
 * manager names the cause on the job it was running, if any. */
static _Noreturn void worker_fds_lost(worker *w) {
  atomic_store(&w->ctl->state, PP_W_FDS_LOST);
  br__log(BR_LOG_ERROR, "process pool worker %d: a job closed or replaced the worker's own "
          "descriptors; the worker exits and is replaced", (int)getpid());
  _exit(120);
}

/* Ours are close-on-exec (worker_hide_fd); dup2 or open onto the number
 * makes one without the flag. The socket is also compared by identity. */
static void worker_check_fd(worker *w, int fd) {
  if (fcntl(fd, F_GETFD) != FD_CLOEXEC) worker_fds_lost(w);
  if (fd == w->sock) {
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_dev != w->sock_dev || st.st_ino != w->sock_ino)
      worker_fds_lost(w);
  }
}

/* Move descriptor fd high, close-on-exec (children a job execs do not
 * inherit it), and return the new number; fd itself is closed. Low numbers
 * are where jobs and the libraries they call open, close and dup2. */
static int worker_hide_fd(int fd) {
  struct rlimit rl;
  int base = 512;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * (rlim_t)base)
    base = (int)(rl.rlim_cur / 2);
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, base > PP_W_FD_CWD ? base : PP_W_FD_CWD + 1);
  if (nfd < 0) { /* no room up there: keep the number, still close-on-exec */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
  }
  close(fd);
  return nfd;
}

static void worker_wake_manager(worker *w) {
  pp_fence();
  if (atomic_load_explicit(&w->pool->mgr_sleeping, memory_order_relaxed) &&
      atomic_exchange(&w->pool->mgr_sleeping, 0)) {
    worker_check_fd(w, w->efd);
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r;
  }
}

/* The next request, sleeping while there is none. */
static pp_rec *worker_next(worker *w) {
  pp_rec *rec = pp_ring_peek(w->req, &w->rd);
  if (rec) return rec;
  int64_t spin_until = pp_now() + PP_SPIN_NS;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      pp_cpu_relax();
      if ((rec = pp_ring_peek(w->req, &w->rd))) return rec;
    }
    if (pp_now() > spin_until) break;
  }
  /* Going idle: a worker whose descriptors a job took is replaced now,
   * not when the next job's result cannot be announced. */
  worker_check_fd(w, w->efd);
  worker_check_fd(w, w->sock);
  for (;;) {
    uint32_t seq = atomic_load(&w->req->cons_seq);
    atomic_store(&w->req->cons_wait, 1);
    pp_fence();
    if ((rec = pp_ring_peek(w->req, &w->rd))) {
      atomic_store(&w->req->cons_wait, 0);
      return rec;
    }
    pp_futex_wait(&w->req->cons_seq, seq, NULL);
    atomic_store(&w->req->cons_wait, 0);
    if ((rec = pp_ring_peek(w->req, &w->rd))) return rec;
  }
}

/* Reserve a result record of `need` bytes, waiting for the manager to free
 * space if the ring is full. */
static pp_rec *worker_reserve(worker *w, uint64_t need, uint64_t *end) {
  for (;;) {
    uint64_t limit = atomic_load_explicit(&w->res->tail, memory_order_acquire) + PP_RING_CAP;
    pp_rec *r = pp_ring_reserve(w->res, w->res_pos, limit, need, end);
    if (r) return r;
    uint32_t seq = atomic_load(&w->res->prod_seq);
    atomic_store(&w->res->prod_wait, 1);
    pp_fence();
    limit = atomic_load(&w->res->tail) + PP_RING_CAP;
    if (!pp_ring_reserve(w->res, w->res_pos, limit, need, end)) {
      worker_wake_manager(w);
      struct timespec ts = {0, 50 * 1000 * 1000};
      pp_futex_wait(&w->res->prod_seq, seq, &ts);
    }
    atomic_store(&w->res->prod_wait, 0);
  }
}

static void worker_publish(worker *w, uint64_t end) {
  w->res_pos = end;
  atomic_store_explicit(&w->res->head, end, memory_order_release);
  worker_wake_manager(w);
}

/* Set in a child that a job fork()ed (the pthread_atfork child handler,
 * registered in the worker only). Such a child that returns from the job
 * instead of calling exec or _exit() would go on as a second worker on the
 * same rings: publish over the real one's results and run every later job
 * again. It must end before it touches them. */
static bool worker_is_fork_child;
static void worker_atfork_child(void) { worker_is_fork_child = true; }

static _Noreturn void worker_stray_child(void) {
  br__log(BR_LOG_ERROR, "process pool worker %d: a child a job forked (pid %d) returned from the "
          "job instead of calling _exit(); it exits so that nothing runs twice",
          (int)getppid(), (int)getpid());
  _exit(0);
}

/* Run one item; the outcome is in *out (on success) or err/msg. *msg stays
 * valid until the next run_item. A job fails if it returns a negative code
 * (that code) or called br_fail (br_fail's code); the message is br_fail's,
 * else the code's text. */
static int run_item(worker *w, uint32_t job, uint32_t item, const void *in, size_t len,
                    br_bytes *out, const char **msg) {
  const br_job_desc *d = br_job_at(job);
  *msg = "";
  atomic_store_explicit(&w->ctl->cur_item, item, memory_order_relaxed);
  atomic_store_explicit(&w->ctl->item_start_ns, pp_now(), memory_order_release);
  if (!d) {
    *msg = "job index unknown in the worker";
    return BR_ENOJOB;
  }
  free(w->fail_msg);
  w->fail_msg = NULL;
  w->fail_code = 0;
  br__job_ctx *prev = br__job_enter(&w->ctx);
  int err = d->fn(in, len, out);
  if (worker_is_fork_child) worker_stray_child();
  br__job_leave(prev);
  if (err > 0) err = BR_EFAILED;
  if (err == 0 && w->fail_code < 0) err = w->fail_code;
  if (err < 0) {
    *msg = w->fail_msg && *w->fail_msg ? w->fail_msg : br_strerror(err);
    br_bytes_clear(out);
    return err;
  }
  if (w->pool->max_payload && out->len > w->pool->max_payload) {
    static _Thread_local char m[160];
    snprintf(m, sizeof m, "result of %zu bytes is over the pool's limit of %llu", out->len,
             (unsigned long long)w->pool->max_payload);
    *msg = m;
    br_bytes_clear(out);
    return BR_E2BIG;
  }
  return 0;
}

static void entry_append(br_bytes *acc, int err, const char *msg, const br_bytes *out) {
  size_t ml = err ? strnlen(msg, PP_MSG_MAX - 1) : 0;
  pp_entry e = {.err = err, .msglen = (uint32_t)ml, .len = err ? 0 : out->len};
  static const char zero[8];
  br_bytes_append(acc, &e, sizeof e);
  if (e.len) br_bytes_append(acc, out->data, e.len);
  if (ml) br_bytes_append(acc, msg, ml);
  size_t pad = (size_t)(pp_align8(e.len + ml) - (e.len + ml));
  if (pad) br_bytes_append(acc, zero, pad);
}

/* Something the worker cannot go on without failed: say so and exit; the
 * manager fails the job it was running with the exit status. */
static _Noreturn void worker_fatal(const char *what, int err) {
  br__log(BR_LOG_ERROR, "process pool worker %d: %s: %s", (int)getpid(), what, br_strerror(err));
  _exit(120);
}

/* Hand the parent b's memfd: drop our writable mapping, seal the memfd
 * against writing and resizing (the parent accepts no other: procpool_decode.h),
 * send it. b keeps only the descriptor, closed by br_bytes_clear. */
static void send_sealed(worker *w, br_bytes *b, int mfd) {
  if (b->data) munmap(b->data, b->br__private.cap);
  b->data = NULL;
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    worker_fatal("sealing a result", -errno);
  worker_check_fd(w, w->sock);
  int r = br__pp_send_fds(w->sock, "r", 1, &mfd, 1, 0);
  if (r < 0) worker_fatal("sending a result", r);
}

/* Send a result record whose payload is acc (chunk) or a single entry. */
static void worker_result(worker *w, const pp_rec *req, int err, const char *msg, br_bytes *out,
                          bool chunk, uint64_t run_ns) {
  uint16_t flags = chunk ? PP_F_CHUNK : 0;
  uint64_t end;
  if (chunk) {
    br_bytes *acc = &w->acc;
    bool fd = acc->len > PP_INLINE_MAX;
    if (fd) {
      int mfd = br__bytes_to_memfd(acc);
      if (mfd < 0) worker_fatal("memfd for a chunk result", mfd);
      send_sealed(w, acc, mfd);
      flags |= PP_F_FD;
    }
    uint64_t need = sizeof(pp_rec) + (fd ? 0 : pp_align8(acc->len));
    pp_rec *rec = worker_reserve(w, need, &end);
    rec->size = (uint32_t)need;
    rec->kind = PP_RES;
    rec->flags = flags;
    rec->seq = req->seq;
    rec->job = req->job;
    rec->len = acc->len;
    rec->run_ns = run_ns;
    rec->cpu_ns = w->res_cpu;
    if (w->res_blocked) rec->flags |= PP_F_BLOCKED;
    if (!fd && acc->len) memcpy(rec + 1, acc->data, acc->len);
    worker_publish(w, end);
    br_bytes_clear(acc);
    return;
  }
  size_t ml = err ? strnlen(msg, PP_MSG_MAX - 1) : 0;
  size_t dl = err ? 0 : out->len;
  bool fd = dl > PP_INLINE_MAX;
  if (fd) {
    int mfd = br__bytes_to_memfd(out);
    if (mfd < 0) {
      err = mfd;
      msg = "could not allocate shared memory for the result";
      ml = strlen(msg);
      dl = 0;
      fd = false;
    } else {
      send_sealed(w, out, mfd);
      flags |= PP_F_FD;
    }
  }
  uint64_t body = sizeof(pp_entry) + (fd ? 0 : dl) + ml;
  uint64_t need = sizeof(pp_rec) + pp_align8(body);
  pp_rec *rec = worker_reserve(w, need, &end);
  rec->size = (uint32_t)need;
  rec->kind = PP_RES;
  rec->flags = flags;
  rec->seq = req->seq;
  rec->job = req->job;
  rec->len = body;
  rec->run_ns = run_ns;
  rec->cpu_ns = w->res_cpu;
  if (w->res_blocked) rec->flags |= PP_F_BLOCKED;
  pp_entry *e = (pp_entry *)(rec + 1);
  e->err = err;
  e->msglen = (uint32_t)ml;
  e->len = dl;
  char *p = (char *)(e + 1);
  if (!fd && dl) memcpy(p, out->data, dl), p += dl;
  if (ml) memcpy(p, msg, ml);
  worker_publish(w, end);
}

/* Run request req; false if it was taken back (skipped, no result). */
static bool worker_run(worker *w, pp_rec *req) {
  const void *payload = req + 1;
  void *map = NULL;
  size_t map_len = 0;
  if (req->flags & PP_F_FD) {
    int fd = -1, nfd = 0;
    char c;
    worker_check_fd(w, w->sock);
    int r = br__pp_recv_fds(w->sock, &c, 1, &fd, 1, &nfd, 0);
    if (r < 0 || nfd != 1) worker_fatal("receiving a payload", r < 0 ? r : BR_EIO);
    map_len = req->len;
    if (map_len) {
      map = mmap(NULL, map_len, PROT_READ, MAP_SHARED, fd, 0);
      if (map == MAP_FAILED) worker_fatal("mapping a payload", -errno);
    }
    close(fd);
    payload = map;
  }
  bool chunk = req->flags & PP_F_CHUNK;
  /* The start-of-job claim (procpool_shm.h). */
  uint32_t claim = atomic_fetch_or(&req->cancel, PP_C_STARTED);
  if (claim & PP_C_TAKEN) { /* the parent took it back: no result */
    if (map) munmap(map, map_len);
    return false;
  }
  atomic_store(&w->ctl->started_seq, req->seq);
  bool cancelled = claim & PP_C_CANCEL;
  w->cur = req;
  int64_t t0 = pp_now();
  if (!w->win_open) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    w->win_cpu0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    w->win_vcsw = br__thread_voluntary_switches();
    w->win_t0 = t0;
    w->win_run = 0;
    w->win_open = true;
  }
  br_bytes out = {0};
  if (!chunk) {
    const char *msg;
    int err = cancelled ? BR_ECANCELED : run_item(w, req->job, 0, payload, req->len, &out, &msg);
    if (cancelled) msg = "cancelled before it started";
    int64_t t1 = pp_now();
    worker_acct(w, req, t0, t1);
    worker_result(w, req, err, msg, &out, false, (uint64_t)(t1 - t0));
    br_bytes_clear(&out);
  } else {
    const pp_chunk_hdr *h = payload;
    const uint64_t *lens = (const uint64_t *)(h + 1);
    const char *data = (const char *)(h->flags & PP_CHUNK_FIXED ? (const void *)lens
                                                                 : (const void *)(lens + h->count));
    for (uint32_t i = 0; i < h->count; i++) {
      size_t len = h->flags & PP_CHUNK_FIXED ? h->item_size : lens[i];
      const char *msg = "cancelled before it started";
      int err = cancelled ? BR_ECANCELED : run_item(w, req->job, i, data, len, &out, &msg);
      entry_append(&w->acc, err, msg, &out);
      br_bytes_clear(&out);
      data += len;
    }
    int64_t t1 = pp_now();
    worker_acct(w, req, t0, t1);
    worker_result(w, req, 0, "", NULL, true, (uint64_t)(t1 - t0));
  }
  w->cur = NULL;
  atomic_store_explicit(&w->ctl->item_start_ns, 0, memory_order_release);
  if (map) munmap(map, map_len);
  return true;
}

static void apply_limits(const pp_pool_shm *pool) {
  if (pool->mem_limit) {
    struct rlimit rl = {pool->mem_limit, pool->mem_limit};
    setrlimit(RLIMIT_AS, &rl);
  }
  if (pool->cpu_limit_s) {
    /* Soft limit: SIGXCPU; hard limit a second later: SIGKILL. */
    struct rlimit rl = {pool->cpu_limit_s, pool->cpu_limit_s + 1};
    setrlimit(RLIMIT_CPU, &rl);
  }
}

_Noreturn void br__pp_worker_main(pp_pool_shm *pool, int efd, int slot_fd, int sock) {
  worker w = {.pool = pool, .efd = efd, .sock = sock, .ctx = {&worker_ctx_ops}};
  br__in_worker = true;
  pthread_atfork(NULL, NULL, worker_atfork_child);
  void *base = mmap(NULL, PP_SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, slot_fd, 0);
  if (base == MAP_FAILED) worker_fatal("mapping the slot", -errno);
  close(slot_fd);
  w.efd = worker_hide_fd(efd);
  w.sock = worker_hide_fd(sock);
  struct stat sst;
  if (fstat(w.sock, &sst) < 0) worker_fatal("the slot socket", -errno);
  w.sock_dev = sst.st_dev;
  w.sock_ino = sst.st_ino;
  w.ctl = base;
  w.req = pp_slot_req(base);
  w.res = pp_slot_res(base);
  apply_limits(pool);
  if (pool->init_job >= 0) {
    const char *msg;
    br_bytes out = {0};
    const void *arg = (const char *)pool + PP_POOL_SHM_HDR;
    int err = run_item(&w, (uint32_t)pool->init_job, 0, arg, pool->init_arg_len, &out, &msg);
    br_bytes_clear(&out);
    if (err < 0) {
      w.ctl->init_err = err;
      snprintf(w.ctl->init_msg, sizeof w.ctl->init_msg, "%s", msg);
      atomic_store(&w.ctl->state, PP_W_INIT_FAILED);
      fflush(NULL);
      _exit(PP_EXIT_INIT_FAILED);
    }
    atomic_store(&w.ctl->item_start_ns, 0);
  }
  atomic_store(&w.ctl->state, PP_W_READY);
  for (;;) {
    pp_rec *req = worker_next(&w);
    bool ran = worker_run(&w, req);
    w.rd += req->size;
    /* Our read position: the parent reclaims taken-back requests' space
     * with it (procpool_shm.h, request ring ownership). */
    atomic_store_explicit(&w.req->tail, w.rd, memory_order_release);
    if (!ran) continue;
    w.jobs++;
    if (pool->max_jobs && w.jobs >= pool->max_jobs) {
      atomic_store(&w.ctl->state, PP_W_RETIRING);
      fflush(NULL);
      _exit(0);
    }
  }
}
