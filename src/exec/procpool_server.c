/* braid — process pool: the fork server and the worker loop.
 *
 * Why a fork server reached by exec: fork() copies only the calling thread,
 * so a child forked from a multi-threaded parent can find a lock (malloc's,
 * stdio's, the program's own) held forever by a thread that does not exist
 * there (cpython#84559). br_procpool_new() therefore posix_spawn()s
 * /proc/self/exe — the program itself, a fresh single-threaded image with
 * the same BR_JOB section — with PP_ENV in its environment. The constructor
 * below runs before main() in that image, sees the marker and never returns:
 * it becomes the fork server, which forks one worker per request. posix_spawn
 * uses CLONE_VM|CLONE_VFORK and is safe from any thread. Forking from the
 * server is cheap (~0.1 ms, the image is small and untouched) and safe (it
 * has one thread).
 *
 * The server knows nothing of jobs: it forks, kills on request, reaps, and
 * reports exits with their wait status to the parent. It exits when the
 * parent's end of the control socket closes, killing its workers first;
 * workers die with it (PR_SET_PDEATHSIG), so nothing outlives the pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/jobs.h"
#include "exec/procpool_shm.h"

/* Referenced by procpool.c so that a static link keeps this object (and its
 * constructor) in every program that uses the pool. */
const int br__pp_server_linked = 1;

/* ---- fd passing */

int br__pp_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(4 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    mh.msg_control = u.b;
    mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
    if (n >= 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int br__pp_recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(4 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                      .msg_controllen = sizeof u.b};
  *nfds = 0;
  ssize_t n;
  do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int got[4];
    memcpy(got, CMSG_DATA(c), (size_t)k * sizeof(int));
    for (int i = 0; i < k; i++) {
      if (*nfds < maxfds) fds[(*nfds)++] = got[i];
      else close(got[i]);
    }
  }
  return (int)n;
}

/* ---- the worker */

typedef struct worker {
  pp_pool_shm *pool;
  pp_slot_shm *ctl;
  pp_ring *req, *res;
  int sock;   /* slot socket: memfds in both directions */
  int efd;    /* the manager's eventfd */
  uint64_t rd;      /* read cursor in the request ring */
  uint64_t res_pos; /* write position in the result ring */
  uint64_t jobs;
  br_bytes acc;     /* chunk results */
} worker;

static void worker_wake_manager(worker *w) {
  pp_fence();
  if (atomic_load_explicit(&w->pool->mgr_sleeping, memory_order_relaxed) &&
      atomic_exchange(&w->pool->mgr_sleeping, 0)) {
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

/* Run one item; the outcome is in *out (on success) or err/msg. */
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
  br__job_reset_error();
  int err = d->fn(in, len, out);
  if (err > 0) err = BR_EFAILED;
  if (err < 0) {
    *msg = br__job_take_error();
    if (!**msg) *msg = br_strerror(err);
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

static void worker_fatal(const char *what, int err) {
  fprintf(stderr, "braid worker %d: %s: %s\n", (int)getpid(), what, br_strerror(err));
  _exit(120);
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
      int r = br__pp_send_fds(w->sock, "r", 1, &mfd, 1, 0);
      if (r < 0) worker_fatal("sending a result", r);
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
      int r = br__pp_send_fds(w->sock, "r", 1, &mfd, 1, 0);
      if (r < 0) worker_fatal("sending a result", r);
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
  pp_entry *e = (pp_entry *)(rec + 1);
  e->err = err;
  e->msglen = (uint32_t)ml;
  e->len = dl;
  char *p = (char *)(e + 1);
  if (!fd && dl) memcpy(p, out->data, dl), p += dl;
  if (ml) memcpy(p, msg, ml);
  worker_publish(w, end);
}

static void worker_run(worker *w, pp_rec *req) {
  const void *payload = req + 1;
  void *map = NULL;
  size_t map_len = 0;
  if (req->flags & PP_F_FD) {
    int fd = -1, nfd = 0;
    char c;
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
  /* The start-of-job handshake (procpool_shm.h). */
  atomic_store(&w->ctl->started_seq, req->seq);
  bool cancelled = atomic_load(&req->cancel) != 0;
  int64_t t0 = pp_now();
  br_bytes out = {0};
  if (!chunk) {
    const char *msg;
    int err = cancelled ? BR_ECANCELED : run_item(w, req->job, 0, payload, req->len, &out, &msg);
    if (cancelled) msg = "cancelled before it started";
    worker_result(w, req, err, msg, &out, false, (uint64_t)(pp_now() - t0));
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
    worker_result(w, req, 0, "", NULL, true, (uint64_t)(pp_now() - t0));
  }
  atomic_store_explicit(&w->ctl->item_start_ns, 0, memory_order_release);
  if (map) munmap(map, map_len);
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

static _Noreturn void worker_main(pp_pool_shm *pool, int efd, int slot_fd, int sock) {
  worker w = {.pool = pool, .efd = efd, .sock = sock};
  br__in_worker = true;
  void *base = mmap(NULL, PP_SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, slot_fd, 0);
  if (base == MAP_FAILED) worker_fatal("mapping the slot", -errno);
  close(slot_fd);
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
    worker_run(&w, req);
    w.rd += req->size;
    w.jobs++;
    if (pool->max_jobs && w.jobs >= pool->max_jobs) {
      atomic_store(&w.ctl->state, PP_W_RETIRING);
      fflush(NULL);
      _exit(0);
    }
  }
}

/* ---- the server */

typedef struct child {
  pid_t pid;
  uint32_t slot;
  uint64_t gen;
} child;

/* The server's children. A global so that it stays reachable in workers
 * (LeakSanitizer runs when a job calls exit()). */
static child *kids;

static int server_send(int ctl, uint32_t type, uint32_t slot, uint64_t gen, int pid, int status,
                       int err) {
  pp_msg m = {.type = type, .slot = slot, .gen = gen, .pid = pid, .status = status, .err = err};
  return br__pp_send_fds(ctl, &m, sizeof m, NULL, 0, 0);
}

static void server_reap(int ctl, size_t nkids) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < nkids; i++) {
      if (kids[i].pid != pid) continue;
      server_send(ctl, PP_M_EXITED, kids[i].slot, kids[i].gen, pid, st, 0);
      kids[i].pid = 0;
      break;
    }
  }
}

_Noreturn void br__pp_server_main(void);
_Noreturn void br__pp_server_main(void) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle */
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(2);

  pp_msg m;
  int fds[4], nfd;
  int r = br__pp_recv_fds(PP_CTL_FD, &m, sizeof m, fds, 4, &nfd, 0);
  if (r != (int)sizeof m || m.type != PP_M_CONFIG || nfd != 2) _exit(3);
  int efd = fds[0];
  off_t psz = lseek(fds[1], 0, SEEK_END);
  pp_pool_shm *pool = mmap(NULL, (size_t)psz, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  if (pool == MAP_FAILED) _exit(4);
  close(fds[1]);
  if (server_send(PP_CTL_FD, PP_M_HELLO, 0, 0, (int)getpid(), 0, 0) < 0) _exit(6);

  size_t nkids = 0, capkids = 16;
  kids = calloc(capkids, sizeof *kids);
  if (!kids) _exit(5);
  pid_t self = getpid();

  for (;;) {
    struct pollfd pf[2] = {{.fd = PP_CTL_FD, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    if (poll(pf, 2, -1) < 0 && errno != EINTR) break;
    if (pf[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      server_reap(PP_CTL_FD, nkids);
    }
    if (!pf[0].revents) continue;
    r = br__pp_recv_fds(PP_CTL_FD, &m, sizeof m, fds, 4, &nfd, MSG_DONTWAIT);
    if (r == BR_EAGAIN) continue;
    if (r <= 0) break; /* the parent is gone or shut us down */
    if (m.type == PP_M_KILL) {
      for (size_t i = 0; i < nkids; i++)
        if (kids[i].pid > 0 && kids[i].slot == m.slot && kids[i].gen == m.gen)
          kill(kids[i].pid, SIGKILL);
      continue;
    }
    if (m.type != PP_M_START || nfd != 2) {
      for (int i = 0; i < nfd; i++) close(fds[i]);
      continue;
    }
    size_t k = 0;
    while (k < nkids && kids[k].pid > 0) k++;
    if (k == nkids) {
      if (nkids == capkids) {
        child *nk = realloc(kids, 2 * capkids * sizeof *kids);
        if (!nk) {
          server_send(PP_CTL_FD, PP_M_START_FAILED, m.slot, m.gen, 0, 0, BR_ENOMEM);
          close(fds[0]), close(fds[1]);
          continue;
        }
        kids = nk;
        capkids *= 2;
      }
      nkids++;
    }
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != self) _exit(1);
      close(PP_CTL_FD);
      close(sfd);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      worker_main(pool, efd, fds[0], fds[1]);
    }
    close(fds[0]);
    close(fds[1]);
    if (pid < 0) {
      server_send(PP_CTL_FD, PP_M_START_FAILED, m.slot, m.gen, 0, 0, -errno);
      continue;
    }
    kids[k] = (child){.pid = pid, .slot = m.slot, .gen = m.gen};
    server_send(PP_CTL_FD, PP_M_STARTED, m.slot, m.gen, pid, 0, 0);
  }
  /* Shutting down: no worker outlives the server. */
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid > 0) kill(kids[i].pid, SIGKILL);
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  _exit(0);
}

/* Runs before main() in every image of a program linked with the pool. Only
 * the image br_procpool_new() exec'd carries PP_ENV. */
__attribute__((constructor(101))) static void br__pp_server_entry(void) {
  const char *v = getenv(PP_ENV);
  if (!v || strcmp(v, "3") != 0) return;
  unsetenv(PP_ENV);
  int type = 0;
  socklen_t tl = sizeof type;
  if (getsockopt(PP_CTL_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
    /* The marker without our socket: someone else's environment. */
    return;
  }
  br__pp_server_main();
}
