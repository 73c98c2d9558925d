/* braid — process pool: the parent side.
 *
 * Threads and locks. Submitters (any thread) and the pool's manager thread
 * share one mutex, p->mu, which guards the pending queue, the slots (their
 * in-flight FIFOs and ring positions), the counters and the shutdown state.
 * Futures are never completed with p->mu held: completing one may run
 * callbacks that submit again.
 *
 * Job flow. A submitter writes the request straight into the request ring of
 * the least-loaded worker when the pending queue is empty and that worker has
 * room (fewer than p->depth requests in flight); otherwise the job waits in
 * the pending queue, and whoever next finds room (the manager after a result,
 * or the next submitter) moves it on, oldest first. p->depth adapts to the
 * measured job length: deep rings for tiny jobs (no worker waits for a
 * hand-off, no wake-up per job), two requests per worker for long ones (load
 * balance). The manager copies results out of the result rings, frees the
 * request's ring space, and completes the futures.
 *
 * Job ownership. A pp_job has two references: the "owner" one (pending
 * queue, then a slot's FIFO, then the manager's completion list) and the
 * cancel hook's. The hook's reference is dropped by the hook if it runs, or
 * by whoever completes the future if br_future_set/fail succeed (the hook can
 * then never run). The job holds its own reference to the future.
 *
 * Failure. The fork server reports every worker exit with its wait status.
 * The manager drains what that worker published, fails the request it had
 * started (procpool_shm.h: the start-of-job handshake), requeues the ones it
 * had not started at the front of the pending queue, and starts a
 * replacement. A timed-out job is failed the same way after the manager asked
 * the server to SIGKILL its worker. If the server itself dies, every worker
 * dies with it (PR_SET_PDEATHSIG) and the manager handles them all as dead,
 * then starts a new server.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/jobs.h"
#include "exec/procpool_int.h"
#include "sys/emulated.h"

extern char **environ;
extern const int br__pp_server_linked;

#define PP_MAX_DEPTH 4096
#define PP_DEPTH_BUDGET_NS 200000.0 /* keep ~200 us of work queued per worker */
#define PP_RESTART_DELAY_NS (100 * 1000 * 1000)
#define PP_HELLO_TIMEOUT_MS 10000

enum { J_PENDING = 0, J_DISPATCHED, J_DONE };
enum { S_EMPTY = 0, S_LIVE };
enum { C_OPEN = 0, C_GRACEFUL, C_IMMEDIATE };
/* slot_died flags */
enum { SD_NO_RESTART = 1, SD_NO_COUNT = 2 };

typedef struct pp_job pp_job;
struct pp_job {
  _Atomic int refs;
  pp_job *next;
  br_procpool *pool;
  br_future *fut;
  uint32_t job;
  uint32_t count;
  uint16_t flags; /* PP_F_CHUNK */
  uint8_t state;
  bool cancelled;
  bool timed_out;
  void *payload; /* owned copy while pending (NULL with a memfd) */
  size_t len;
  int memfd;
  int64_t timeout_ns;
  int slot;
  uint64_t seq;
  uint64_t rec_off; /* record offset in the request ring's data */
  uint64_t rec_end; /* ring position after the record */
};

typedef struct pp_slot {
  int idx;
  int state;
  uint64_t gen;
  pid_t pid;
  void *base;
  pp_slot_shm *ctl;
  pp_ring *req, *res;
  int sock;
  uint64_t req_head, req_free, res_tail;
  uint64_t next_seq, dispatched;
  pp_job **fifo;
  size_t fifo_head, fifo_n;
  bool killing;
  int64_t restart_at; /* when an EMPTY slot should be started again */
} pp_slot;

/* A finished job waiting to have its future completed (outside p->mu). */
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
  pp_job *pend_head, *pend_tail;
  size_t npending;
  int closing;
  int broken;
  char *broken_msg;
  size_t max_payload;
  int64_t timeout_ns;
  uint64_t max_jobs;
  uint32_t depth;
  double avg_ns;
  uint32_t rr;
  size_t ntimeout; /* dispatched jobs that have a timeout */
  pid_t server_pid;
  bool server_hello; /* the server said it is configured */
  bool server_forked; /* fallback: the server was forked, not exec'd */
  int ctl, efd, epfd;
  pp_pool_shm *pshm;
  size_t pshm_size;
  int pshm_fd;
  char *init_name;
  pthread_t mgr;
  bool mgr_started;
  bool stopped;
  br_future *closed;
  br_procpool_stats st;
};

/* ------------------------------------------------------------------------ */
/* small helpers */

static void donelist_push(pp_donelist *l, pp_job *j, int code, char *msg, br_bytes *value) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    pp_done *v = realloc(l->v, cap * sizeof *v);
    if (!v) {
      /* Out of memory while finishing jobs: there is no way to report it
       * that does not lose a job, and no job may be lost silently. */
      fprintf(stderr, "braid: out of memory completing process-pool jobs\n");
      abort();
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (pp_done){j, code, msg, value};
}

static char *xstrdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xstrdupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static void job_unref(pp_job *j) {
  if (atomic_fetch_sub(&j->refs, 1) != 1) return;
  br_future_unref(j->fut);
  free(j->payload);
  if (j->memfd >= 0) close(j->memfd);
  free(j);
}

static const char *job_name(uint32_t idx) {
  const br_job_desc *d = br_job_at(idx);
  return d ? d->name : "?";
}

/* Text for a wait status: "killed by signal 11 (SIGSEGV: Segmentation
 * fault)" or "exited with status 3". */
static void describe_status(int st, char *buf, size_t n) {
  if (st == -1) {
    snprintf(buf, n, "lost with the fork server");
  } else if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    const char *abbrev = sigabbrev_np(sig);
    snprintf(buf, n, "killed by signal %d (SIG%s: %s)%s%s", sig, abbrev ? abbrev : "?",
             strsignal(sig), WCOREDUMP(st) ? ", core dumped" : "",
             sig == SIGKILL ? "; SIGKILL comes from outside, e.g. kill -9 or the OOM killer" : "");
  } else if (WIFEXITED(st)) {
    snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
  } else {
    snprintf(buf, n, "ended with wait status 0x%x", st);
  }
}

/* ------------------------------------------------------------------------ */
/* slots */

static void slot_teardown(br_procpool *p, pp_slot *s) {
  (void)p;
  if (s->base) munmap(s->base, PP_SLOT_SIZE);
  if (s->sock >= 0) close(s->sock);
  s->base = NULL;
  s->sock = -1;
  s->state = S_EMPTY;
  s->pid = 0;
  s->killing = false;
  s->fifo_head = s->fifo_n = 0;
}

/* Create a fresh region and socket for slot s and ask the server for a
 * worker. Jobs may be dispatched into it at once. Called with p->mu held (or
 * before the manager exists). */
static int slot_start(br_procpool *p, pp_slot *s) {
  int fd = memfd_create("braid-worker", MFD_CLOEXEC);
  if (fd < 0) return -errno;
  int sv[2] = {-1, -1};
  int err = 0;
  if (ftruncate(fd, (off_t)PP_SLOT_SIZE) < 0) goto fail_errno;
  s->base = mmap(NULL, PP_SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (s->base == MAP_FAILED) {
    s->base = NULL;
    goto fail_errno;
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) goto fail_errno;
  s->gen++;
  pp_msg m = {.type = PP_M_START, .slot = (uint32_t)s->idx, .gen = s->gen};
  int fds[2] = {fd, sv[1]};
  err = br__pp_send_fds(p->ctl, &m, sizeof m, fds, 2, 0);
  if (err < 0) goto fail;
  close(fd);
  close(sv[1]);
  s->ctl = s->base;
  s->req = pp_slot_req(s->base);
  s->res = pp_slot_res(s->base);
  s->sock = sv[0];
  s->req_head = s->req_free = s->res_tail = 0;
  s->next_seq = s->dispatched = 0;
  s->fifo_head = s->fifo_n = 0;
  s->state = S_LIVE;
  s->pid = 0;
  s->killing = false;
  return 0;
fail_errno:
  err = -errno;
fail:
  if (s->base) munmap(s->base, PP_SLOT_SIZE);
  s->base = NULL;
  if (sv[0] >= 0) close(sv[0]), close(sv[1]);
  close(fd);
  return err;
}

static pp_job *fifo_at(pp_slot *s, size_t i) {
  return s->fifo[(s->fifo_head + i) & (PP_MAX_DEPTH - 1)];
}

/* Write job j's request into slot s. payload: iov (a new job) or the job's
 * own copy. Returns false if s has no room now. p->mu held. */
static bool slot_dispatch(br_procpool *p, pp_slot *s, pp_job *j, const struct iovec *iov,
                          int iovcnt) {
  if (s->state != S_LIVE || s->killing || s->fifo_n >= p->depth) return false;
  if (p->max_jobs && s->dispatched >= p->max_jobs) return false;
  bool fd = j->memfd >= 0;
  uint64_t need = sizeof(pp_rec) + (fd ? 0 : pp_align8(j->len));
  uint64_t end;
  pp_rec *rec = pp_ring_reserve(s->req, s->req_head, s->req_free + PP_RING_CAP, need, &end);
  if (!rec) return false;
  if (fd && br__pp_send_fds(s->sock, "p", 1, &j->memfd, 1, MSG_DONTWAIT) < 0) return false;
  rec->size = (uint32_t)need;
  rec->kind = PP_REQ;
  rec->flags = (uint16_t)(j->flags | (fd ? PP_F_FD : 0));
  atomic_store_explicit(&rec->cancel, 0, memory_order_relaxed);
  rec->job = j->job;
  rec->seq = ++s->next_seq;
  rec->len = j->len;
  rec->run_ns = 0;
  if (!fd) {
    char *dst = (char *)(rec + 1);
    if (iov) {
      for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len) memcpy(dst, iov[i].iov_base, iov[i].iov_len);
        dst += iov[i].iov_len;
      }
    } else if (j->len) {
      memcpy(dst, j->payload, j->len);
    }
  }
  j->slot = s->idx;
  j->seq = rec->seq;
  j->rec_off = (uint64_t)((unsigned char *)rec - s->req->data);
  j->rec_end = end;
  j->state = J_DISPATCHED;
  s->fifo[(s->fifo_head + s->fifo_n) & (PP_MAX_DEPTH - 1)] = j;
  s->fifo_n++;
  s->dispatched++;
  if (j->timeout_ns) p->ntimeout++;
  s->req_head = end;
  atomic_store_explicit(&s->req->head, end, memory_order_release);
  pp_notify(&s->req->cons_wait, &s->req->cons_seq);
  return true;
}

/* The live slot with the fewest requests in flight, or NULL. */
static pp_slot *slot_pick(br_procpool *p) {
  pp_slot *best = NULL;
  uint32_t n = (uint32_t)p->nworkers;
  uint32_t start = p->rr++ % n;
  for (uint32_t k = 0; k < n; k++) {
    pp_slot *s = &p->slots[(start + k) % n];
    if (s->state != S_LIVE || s->killing || s->fifo_n >= p->depth) continue;
    if (p->max_jobs && s->dispatched >= p->max_jobs) continue;
    if (!best || s->fifo_n < best->fifo_n) best = s;
    if (s->fifo_n == 0) break;
  }
  return best;
}

/* Move pending jobs into rings while there is room. p->mu held. */
static void pump(br_procpool *p) {
  while (p->pend_head) {
    pp_job *j = p->pend_head;
    if (j->cancelled) {
      p->pend_head = j->next;
      if (!p->pend_head) p->pend_tail = NULL;
      p->npending--;
      j->state = J_DONE;
      job_unref(j);
      continue;
    }
    pp_slot *s = slot_pick(p);
    if (!s || !slot_dispatch(p, s, j, NULL, 0)) {
      /* The least-loaded slot may be full by bytes; try the others. */
      bool ok = false;
      for (int i = 0; i < p->nworkers && !ok; i++)
        if (&p->slots[i] != s) ok = slot_dispatch(p, &p->slots[i], j, NULL, 0);
      if (!ok) return;
    }
    p->pend_head = j->next;
    if (!p->pend_head) p->pend_tail = NULL;
    p->npending--;
    j->next = NULL;
    free(j->payload);
    j->payload = NULL;
  }
}

static void pend_push_back(br_procpool *p, pp_job *j) {
  j->next = NULL;
  j->state = J_PENDING;
  if (p->pend_tail) p->pend_tail->next = j;
  else p->pend_head = j;
  p->pend_tail = j;
  p->npending++;
}

/* ------------------------------------------------------------------------ */
/* results */

static void update_depth(br_procpool *p, uint64_t run_ns) {
  double x = (double)run_ns + 200.0; /* + a hand-off's fixed cost */
  p->avg_ns = p->avg_ns ? p->avg_ns * 0.875 + x * 0.125 : x;
  double d = PP_DEPTH_BUDGET_NS / p->avg_ns;
  p->depth = d < 2 ? 2 : d > PP_MAX_DEPTH ? PP_MAX_DEPTH : (uint32_t)d;
}

/* Map a memfd received on the slot socket; NULL on failure. */
static br_bytes *recv_mapped(pp_slot *s, size_t len, int *err) {
  int fd = -1, nfd = 0;
  char c;
  int r = br__pp_recv_fds(s->sock, &c, 1, &fd, 1, &nfd, MSG_DONTWAIT);
  if (r < 0 || nfd != 1) {
    *err = r < 0 ? r : BR_EIO;
    return NULL;
  }
  br_bytes *b = calloc(1, sizeof *b);
  void *m = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : NULL;
  close(fd);
  if (!b || m == MAP_FAILED) {
    *err = b ? -errno : BR_ENOMEM;
    if (m && m != MAP_FAILED) munmap(m, len);
    free(b);
    return NULL;
  }
  br__bytes_adopt_map(b, m, len);
  return b;
}

static br_bytes *bytes_copy(const void *p, size_t n) {
  br_bytes *b = calloc(1, sizeof *b);
  if (!b || br_bytes_set(b, p, n) < 0) {
    free(b);
    return NULL;
  }
  return b;
}

/* Take one published result of slot s; false if there is none. p->mu held. */
static bool take_result(br_procpool *p, pp_slot *s, pp_donelist *dl) {
  pp_rec *rec = pp_ring_peek(s->res, &s->res_tail);
  if (!rec) return false;
  pp_job *j = s->fifo_n ? fifo_at(s, 0) : NULL;
  if (!j || j->seq != rec->seq) {
    /* Impossible unless the worker scribbled over its own rings; kill it
     * and let the death path fail what it held. */
    fprintf(stderr, "braid: process pool worker %d broke the result protocol\n", (int)s->pid);
    s->res_tail = atomic_load(&s->res->head);
    atomic_store(&s->res->tail, s->res_tail);
    pp_msg m = {.type = PP_M_KILL, .slot = (uint32_t)s->idx, .gen = s->gen};
    br__pp_send_fds(p->ctl, &m, sizeof m, NULL, 0, 0);
    s->killing = true;
    return false;
  }
  int code = 0, err = 0;
  char *msg = NULL;
  br_bytes *value = NULL;
  if (rec->flags & PP_F_CHUNK) {
    value = rec->flags & PP_F_FD ? recv_mapped(s, rec->len, &err) : bytes_copy(rec + 1, rec->len);
    if (!value) {
      code = err ? err : BR_ENOMEM;
      msg = xstrdupf("could not take the results of a chunk: %s", br_strerror(code));
    }
  } else {
    const pp_entry *e = (const pp_entry *)(rec + 1);
    const char *after = (const char *)(e + 1);
    if (e->err) {
      code = e->err;
      const char *m = after;
      msg = strndup(m, e->msglen);
    } else {
      value = rec->flags & PP_F_FD ? recv_mapped(s, e->len, &err) : bytes_copy(after, e->len);
      if (!value) {
        code = err ? err : BR_ENOMEM;
        msg = xstrdupf("could not take the result: %s", br_strerror(code));
      }
    }
  }
  s->res_tail += rec->size;
  atomic_store_explicit(&s->res->tail, s->res_tail, memory_order_release);
  update_depth(p, rec->run_ns);
  s->fifo_head = (s->fifo_head + 1) & (PP_MAX_DEPTH - 1);
  s->fifo_n--;
  s->req_free = j->rec_end;
  if (j->timeout_ns) p->ntimeout--;
  j->state = J_DONE;
  p->st.completed++;
  if (code) p->st.failed++;
  donelist_push(dl, j, code, msg, value);
  return true;
}

static bool drain_slot(br_procpool *p, pp_slot *s, pp_donelist *dl) {
  bool any = false;
  while (s->state == S_LIVE && take_result(p, s, dl)) any = true;
  if (any) pp_notify(&s->res->prod_wait, &s->res->prod_seq);
  return any;
}

/* Complete the futures of finished jobs. Without p->mu. */
static void complete_all(pp_donelist *dl) {
  for (size_t i = 0; i < dl->n; i++) {
    pp_done *d = &dl->v[i];
    pp_job *j = d->job;
    int r;
    if (d->code == 0) {
      r = br_future_set(j->fut, d->value);
      if (r < 0) br_bytes_free(d->value);
    } else {
      r = br_future_fail(j->fut, d->code, "%s", d->msg ? d->msg : br_strerror(d->code));
    }
    free(d->msg);
    if (r == 0) job_unref(j); /* the cancel hook can no longer run */
    job_unref(j);
  }
  dl->n = 0;
}

/* Build the result entries of a chunk that died at item `at`. */
static br_bytes *chunk_failure(uint32_t count, uint32_t at, int code, const char *msg) {
  br_bytes *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  char lost[160], notrun[160];
  snprintf(lost, sizeof lost, "result lost: the worker died later in the same chunk (item %u)", at);
  snprintf(notrun, sizeof notrun, "not run: the worker died earlier in the same chunk (item %u)",
           at);
  static const char zero[8];
  for (uint32_t i = 0; i < count; i++) {
    const char *m = i < at ? lost : i == at ? msg : notrun;
    pp_entry e = {.err = i == at ? code : BR_EWORKERDIED, .msglen = (uint32_t)strlen(m)};
    if (br_bytes_append(b, &e, sizeof e) < 0 || br_bytes_append(b, m, e.msglen) < 0 ||
        br_bytes_append(b, zero, pp_align8(e.msglen) - e.msglen) < 0) {
      br_bytes_free(b);
      return NULL;
    }
  }
  return b;
}

/* Fail job j, which was running in slot s when it ended. p->mu held. */
static void fail_started(br_procpool *p, pp_slot *s, pp_job *j, int st, pp_donelist *dl) {
  char why[256];
  describe_status(st, why, sizeof why);
  int code;
  char *msg;
  if (p->closing == C_IMMEDIATE && !j->timed_out) {
    code = BR_ECANCELED;
    msg = xstrdupf("job '%s' stopped: the pool was shut down immediately", job_name(j->job));
  } else if (j->timed_out) {
    code = BR_ETIMEDOUT;
    msg = xstrdupf("job '%s' timed out after %lld ms; worker %d (pid %d) was killed and replaced",
                   job_name(j->job), (long long)(j->timeout_ns / 1000000), s->idx, (int)s->pid);
  } else {
    code = BR_EWORKERDIED;
    msg = xstrdupf("worker %d (pid %d) died while running job '%s': %s", s->idx, (int)s->pid,
                   job_name(j->job), why);
  }
  j->state = J_DONE;
  if (j->timeout_ns) p->ntimeout--;
  p->st.completed++;
  p->st.failed++;
  if (j->flags & PP_F_CHUNK) {
    uint32_t at = atomic_load(&s->ctl->cur_item);
    if (at >= j->count) at = 0;
    br_bytes *v = chunk_failure(j->count, at, code, msg ? msg : br_strerror(code));
    if (v) {
      free(msg);
      donelist_push(dl, j, 0, NULL, v);
      return;
    }
  }
  donelist_push(dl, j, code, msg, NULL);
}

/* Fail every pending job: the pool broke or stops at once. p->mu held. */
static void fail_pending(br_procpool *p, int code, const char *msg, pp_donelist *dl) {
  while (p->pend_head) {
    pp_job *j = p->pend_head;
    p->pend_head = j->next;
    p->npending--;
    j->state = J_DONE;
    if (j->cancelled) {
      job_unref(j);
      continue;
    }
    p->st.completed++;
    p->st.failed++;
    donelist_push(dl, j, code, xstrdupf("job '%s': %s", job_name(j->job), msg), NULL);
  }
  p->pend_tail = NULL;
}

/* Slot s's worker is gone (wait status st, -1 if unknown). Fail the job it
 * had started, requeue the ones it had not, start a replacement. p->mu held.
 */
static void slot_died(br_procpool *p, pp_slot *s, int st, int how, pp_donelist *dl) {
  drain_slot(p, s, dl);
  uint32_t wstate = atomic_load(&s->ctl->state);
  /* The start-of-job handshake: mark every request we still hold, then
   * read how far the worker got. */
  for (size_t i = 0; i < s->fifo_n; i++) {
    pp_rec *rec = (pp_rec *)(s->req->data + fifo_at(s, i)->rec_off);
    atomic_store(&rec->cancel, 1);
  }
  uint64_t started = atomic_load(&s->ctl->started_seq);
  bool busy = false;
  pp_job *rq_head = NULL, **rq_tail = &rq_head;
  size_t nrq = 0;
  for (size_t i = 0; i < s->fifo_n; i++) {
    pp_job *j = fifo_at(s, i);
    if (j->seq <= started) {
      busy = true;
      fail_started(p, s, j, st, dl);
      continue;
    }
    if (j->timeout_ns) p->ntimeout--;
    if (j->cancelled) {
      j->state = J_DONE;
      job_unref(j);
      continue;
    }
    /* Never started: take the bytes back out of the dead ring. */
    if (j->memfd < 0 && j->len) {
      pp_rec *rec = (pp_rec *)(s->req->data + j->rec_off);
      j->payload = malloc(j->len);
      if (!j->payload) {
        p->st.completed++;
        p->st.failed++;
        donelist_push(dl, j, BR_ENOMEM, xstrdupf("out of memory requeueing a job"), NULL);
        continue;
      }
      memcpy(j->payload, rec + 1, j->len);
    }
    j->state = J_PENDING;
    j->next = NULL;
    *rq_tail = j;
    rq_tail = &j->next;
    nrq++;
  }
  if (rq_head) {
    *rq_tail = p->pend_head;
    if (!p->pend_head) p->pend_tail = (pp_job *)((char *)rq_tail - offsetof(pp_job, next));
    p->pend_head = rq_head;
    p->npending += nrq;
  }
  bool retired = !busy && st == 0 && wstate == PP_W_RETIRING;
  if (retired) p->st.recycled++;
  else if (!(how & SD_NO_COUNT)) p->st.worker_deaths++;
  if (wstate == PP_W_INIT_FAILED && !p->broken) {
    p->broken = BR_EFAILED;
    free(p->broken_msg);
    p->broken_msg = xstrdupf("the initializer '%s' failed in a worker (%s): %s", p->init_name,
                             br_errname(s->ctl->init_err), s->ctl->init_msg);
  }
  slot_teardown(p, s);
  if (p->broken) {
    fail_pending(p, p->broken, p->broken_msg ? p->broken_msg : "the pool is broken", dl);
    return;
  }
  if (p->closing == C_IMMEDIATE || p->stopped || (how & SD_NO_RESTART)) return;
  if (slot_start(p, s) < 0) s->restart_at = pp_now() + PP_RESTART_DELAY_NS;
}

/* ------------------------------------------------------------------------ */
/* the fork server */

/* Start the fork server: exec this very program with the marker (see
 * procpool_server.c for why) and hand it its configuration. posix_spawn
 * reports a failed exec; we do not wait for the server's hello (it would
 * cost a round trip before the first worker is even asked for): requests
 * queue on the socket meanwhile, and a server that exits before its hello
 * breaks the pool (handle_ctl) instead of being restarted in a loop. */
static int server_spawn(br_procpool *p) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  if (sv[1] == PP_CTL_FD) { /* dup2 onto itself would keep FD_CLOEXEC */
    int d = fcntl(sv[1], F_DUPFD_CLOEXEC, PP_CTL_FD + 1);
    close(sv[1]);
    sv[1] = d;
  }
  size_t nenv = 0;
  while (environ && environ[nenv]) nenv++;
  char **envp = calloc(nenv + 2, sizeof *envp);
  int err = 0;
  if (!envp || sv[1] < 0) {
    err = BR_ENOMEM;
    goto out;
  }
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], PP_ENV "=", sizeof PP_ENV) != 0) envp[k++] = environ[i];
  envp[k++] = PP_ENV "=3";
  envp[k] = NULL;

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], PP_CTL_FD);
  posix_spawn_file_actions_addclosefrom_np(&fa, PP_CTL_FD + 1);
  posix_spawnattr_init(&at);
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGCHLD);
  sigaddset(&dfl, SIGPIPE);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char *argv[] = {"braid-procpool-server", NULL};
  pid_t pid;
  int r = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (r != 0) {
    err = r == ENOENT || r == EACCES || r == ENOEXEC ? BR_ENOSYS : -r;
    goto out;
  }
  close(sv[1]);
  sv[1] = -1;
  int fds[2] = {p->efd, p->pshm_fd};
  pp_msg m = {.type = PP_M_CONFIG};
  err = br__pp_send_fds(sv[0], &m, sizeof m, fds, 2, 0);
  if (err < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    goto out;
  }
  p->server_pid = pid;
  p->server_hello = false;
  p->ctl = sv[0];
  sv[0] = -1;
out:
  free(envp);
  if (sv[0] >= 0) close(sv[0]);
  if (sv[1] >= 0) close(sv[1]);
  return err;
}

/* Close the control socket (the server then kills its workers and exits)
 * and reap the server. Returns its wait status, -1 if there was none. */
/* The fallback when exec'ing the program is impossible although
 * posix_spawn reported success: under qemu-user without binfmt_misc, vfork
 * is emulated by fork and the exec of the foreign binary fails in the child
 * (status 127). Fork the server from here instead. This is the one place
 * braid forks a process that may have other threads, so it says so once on
 * stderr: a job that takes a lock another thread held at this moment (a
 * stdio stream, say) would wait forever. The server itself only uses system
 * calls and malloc, which glibc makes safe in a forked child. */
static int server_fork(br_procpool *p, bool warn) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  static atomic_bool warned;
  if (warn && !atomic_exchange(&warned, true))
    fprintf(stderr, "braid: cannot exec /proc/self/exe (an emulator without binfmt_misc?); "
                    "forking the process pool's server from this process instead\n");
  pid_t pid = fork();
  if (pid < 0) {
    int e = -errno;
    close(sv[0]);
    close(sv[1]);
    return e;
  }
  if (pid == 0) {
    if (dup2(sv[1], PP_CTL_FD) < 0) _exit(126);
    if (syscall(SYS_close_range, PP_CTL_FD + 1, ~0U, 0) < 0)
      for (int fd = PP_CTL_FD + 1; fd < 65536; fd++) close(fd);
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    br__pp_server_main();
  }
  close(sv[1]);
  int fds[2] = {p->efd, p->pshm_fd};
  pp_msg m = {.type = PP_M_CONFIG};
  int err = br__pp_send_fds(sv[0], &m, sizeof m, fds, 2, 0);
  if (err < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(sv[0]);
    return err;
  }
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  p->server_pid = pid;
  p->server_hello = false;
  p->server_forked = true;
  p->ctl = sv[0];
  return 0;
}

static int server_stop(br_procpool *p) {
  int st = -1;
  if (p->ctl >= 0) {
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->ctl, NULL);
    close(p->ctl);
    p->ctl = -1;
  }
  if (p->server_pid > 0) {
    while (waitpid(p->server_pid, &st, 0) < 0 && errno == EINTR) {
    }
    p->server_pid = 0;
  }
  return st;
}

/* The server vanished: its workers died with it. p->mu held. */
static void server_died(br_procpool *p, pp_donelist *dl) {
  /* Reaping it means PR_SET_PDEATHSIG has been sent to its workers. */
  int st = server_stop(p);
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state != S_LIVE) continue;
    slot_died(p, s, -1, SD_NO_RESTART | (p->server_hello ? 0 : SD_NO_COUNT), dl);
  }
  if (p->closing == C_IMMEDIATE) return;
  /* Killed (kill -9, OOM): start another. Exited by itself before it said
   * hello: this program cannot be a fork server; do not loop. */
  bool killed = st != -1 && WIFSIGNALED(st);
  bool no_exec = !p->server_hello && !p->server_forked && st != -1 && WIFEXITED(st) &&
                 WEXITSTATUS(st) == 127;
  int err = no_exec ? server_fork(p, true)
            : p->server_hello || killed ? (p->server_forked ? server_fork(p, false) : server_spawn(p))
                                        : BR_ENOSYS;
  if (err < 0) {
    p->broken = err;
    free(p->broken_msg);
    p->broken_msg = err == BR_ENOSYS
                        ? xstrdupf("the fork server (the program exec'd from /proc/self/exe) "
                                   "exited before it was ready")
                        : xstrdupf("the fork server died and could not be restarted: %s",
                                   br_strerror(err));
    fail_pending(p, err, p->broken_msg, dl);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1};
  epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->ctl, &ev);
  fcntl(p->ctl, F_SETFL, O_NONBLOCK);
  for (int i = 0; i < p->nworkers; i++)
    if (slot_start(p, &p->slots[i]) < 0) p->slots[i].restart_at = pp_now() + PP_RESTART_DELAY_NS;
}

/* Read every message the server sent. Returns true if any. */
static bool handle_ctl(br_procpool *p, pp_donelist *dl) {
  bool any = false;
  while (p->ctl >= 0) {
    pp_msg m;
    int fds[4], nfd;
    int r = br__pp_recv_fds(p->ctl, &m, sizeof m, fds, 4, &nfd, MSG_DONTWAIT);
    for (int i = 0; i < nfd; i++) close(fds[i]);
    if (r == BR_EAGAIN) break;
    any = true;
    pthread_mutex_lock(&p->mu);
    if (r <= 0) {
      server_died(p, dl);
      pthread_mutex_unlock(&p->mu);
      continue;
    }
    if (m.type == PP_M_HELLO) {
      p->server_hello = true;
      pthread_mutex_unlock(&p->mu);
      continue;
    }
    pp_slot *s = m.slot < (uint32_t)p->nworkers ? &p->slots[m.slot] : NULL;
    if (s && s->state == S_LIVE && s->gen == m.gen) {
      if (m.type == PP_M_STARTED) {
        p->server_hello = true;
        s->pid = m.pid;
        p->st.started++;
      } else if (m.type == PP_M_EXITED) {
        slot_died(p, s, m.status, 0, dl);
      } else if (m.type == PP_M_START_FAILED) {
        /* fork failed (EAGAIN, ENOMEM): requeue, retry a little later. */
        slot_died(p, s, -1, SD_NO_RESTART | SD_NO_COUNT, dl);
        s->restart_at = pp_now() + PP_RESTART_DELAY_NS;
      }
    }
    pthread_mutex_unlock(&p->mu);
  }
  return any;
}

/* ------------------------------------------------------------------------ */
/* the manager thread */

/* Kill workers whose job ran out of time; restart slots that failed to
 * start. Returns the next time to look again (BR_NEVER: none). p->mu held.
 */
static int64_t check_timers(br_procpool *p, int64_t now) {
  int64_t next = BR_NEVER;
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state == S_EMPTY) {
      if (s->restart_at && !p->broken && p->closing != C_IMMEDIATE) {
        if (now >= s->restart_at) {
          s->restart_at = 0;
          if (slot_start(p, s) < 0) s->restart_at = now + PP_RESTART_DELAY_NS;
        }
        if (s->restart_at && s->restart_at < next) next = s->restart_at;
      }
      continue;
    }
    if (!p->ntimeout || !s->fifo_n || s->killing) continue;
    pp_job *j = fifo_at(s, 0);
    if (!j->timeout_ns) continue;
    int64_t t0 = atomic_load(&s->ctl->item_start_ns);
    if (atomic_load(&s->ctl->started_seq) != j->seq || !t0) {
      if (now + 1000000 < next) next = now + 1000000; /* about to start */
      continue;
    }
    if (now - t0 >= j->timeout_ns) {
      pp_msg m = {.type = PP_M_KILL, .slot = (uint32_t)s->idx, .gen = s->gen};
      j->timed_out = true;
      s->killing = true;
      p->st.timeouts++;
      br__pp_send_fds(p->ctl, &m, sizeof m, NULL, 0, 0);
    } else if (t0 + j->timeout_ns < next) {
      next = t0 + j->timeout_ns;
    }
  }
  return next;
}

static bool all_idle(br_procpool *p) {
  if (p->npending) return false;
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].state == S_LIVE && p->slots[i].fifo_n) return false;
  return true;
}

static bool results_waiting(br_procpool *p) {
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state == S_LIVE && atomic_load(&s->res->head) != s->res_tail) return true;
  }
  return false;
}

/* Stop everything: the server kills the workers; what they finished is
 * delivered, the rest fails BR_ECANCELED. */
static void stop_all(br_procpool *p, pp_donelist *dl) {
  pthread_mutex_lock(&p->mu);
  p->stopped = true;
  server_stop(p);
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state == S_LIVE) slot_died(p, s, SIGKILL, SD_NO_RESTART | SD_NO_COUNT, dl);
  }
  fail_pending(p, BR_ECANCELED, "cancelled: the pool was shut down immediately", dl);
  pthread_mutex_unlock(&p->mu);
  complete_all(dl);
}

static void *mgr_main(void *arg) {
  br_procpool *p = arg;
  pp_donelist dl = {0};
  int64_t last_progress = pp_now();
  for (;;) {
    bool progress = false;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nworkers; i++)
      if (p->slots[i].state == S_LIVE) progress |= drain_slot(p, &p->slots[i], &dl);
    if (p->pend_head) pump(p);
    int64_t now = pp_now();
    int64_t next = check_timers(p, now);
    bool finish = p->closing == C_IMMEDIATE || (p->closing == C_GRACEFUL && all_idle(p));
    pthread_mutex_unlock(&p->mu);
    complete_all(&dl);
    progress |= handle_ctl(p, &dl);
    complete_all(&dl);
    if (finish) break;
    now = pp_now();
    if (progress) {
      last_progress = now;
      continue;
    }
    if (now - last_progress < PP_SPIN_NS) {
      for (int i = 0; i < 32; i++) pp_cpu_relax();
      continue;
    }
    atomic_store(&p->pshm->mgr_sleeping, 1);
    pp_fence();
    pthread_mutex_lock(&p->mu);
    bool waiting = results_waiting(p) || (p->closing == C_GRACEFUL && all_idle(p)) ||
                   p->closing == C_IMMEDIATE;
    pthread_mutex_unlock(&p->mu);
    if (!waiting) {
      int ms = -1;
      if (next != BR_NEVER) {
        int64_t d = next - now;
        ms = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
      }
      struct epoll_event ev[4];
      epoll_wait(p->epfd, ev, 4, ms);
    }
    atomic_store(&p->pshm->mgr_sleeping, 0);
    uint64_t v;
    while (read(p->efd, &v, sizeof v) > 0) {
    }
    last_progress = pp_now();
  }
  stop_all(p, &dl);
  free(dl.v);
  br_future_set(p->closed, NULL);
  return NULL;
}

static void wake_manager(br_procpool *p) {
  uint64_t one = 1;
  ssize_t r = write(p->efd, &one, sizeof one);
  (void)r;
}

/* ------------------------------------------------------------------------ */
/* public API */

int br__pp_job_index(const char *name) {
  if (!name) return BR_EINVAL;
  return br__job_index(name);
}

int br_procpool_new(br_procpool **out, int workers, const br_procpool_opts *opts) {
  static const br_procpool_opts defaults = {0};
  (void)br__pp_server_linked;
  if (!out) return BR_EINVAL;
  *out = NULL;
  if (!opts) opts = &defaults;
  if (workers == BR_PROCPOOL_CPUS) workers = br_cpu_count();
  if (workers < 1 || workers > BR_PROCPOOL_MAX_WORKERS) return BR_EINVAL;
  if (opts->timeout_ms < 0 || (opts->init_arg_len && !opts->init_arg)) return BR_EINVAL;
  int err = br__jobs_init();
  if (err < 0) return err;
  int init_job = -1;
  if (opts->initializer) {
    init_job = br__job_index(opts->initializer);
    if (init_job < 0) return init_job;
  }
  size_t max_payload = opts->max_payload ? opts->max_payload : (size_t)1 << 30;
  if (opts->init_arg_len > max_payload) return BR_E2BIG;

  br_procpool *p = calloc(1, sizeof *p);
  if (!p) return BR_ENOMEM;
  pthread_mutex_init(&p->mu, NULL);
  p->nworkers = workers;
  p->max_payload = max_payload;
  p->timeout_ns = opts->timeout_ms * 1000000;
  p->max_jobs = opts->max_jobs_per_worker;
  p->depth = 8;
  p->ctl = p->efd = p->epfd = p->pshm_fd = -1;
  p->init_name = opts->initializer ? strdup(opts->initializer) : NULL;
  p->slots = calloc((size_t)workers, sizeof *p->slots);
  p->closed = br_future_new();
  if (!p->slots || !p->closed || (opts->initializer && !p->init_name)) {
    err = BR_ENOMEM;
    goto fail;
  }
  for (int i = 0; i < workers; i++) {
    pp_slot *s = &p->slots[i];
    s->idx = i;
    s->sock = -1;
    s->fifo = calloc(PP_MAX_DEPTH, sizeof *s->fifo);
    if (!s->fifo) {
      err = BR_ENOMEM;
      goto fail;
    }
  }

  /* The pool page: configuration the workers read, and the manager's
   * sleeping flag. */
  p->pshm_size = PP_POOL_SHM_HDR + opts->init_arg_len;
  p->pshm_fd = memfd_create("braid-pool", MFD_CLOEXEC);
  if (p->pshm_fd < 0 || ftruncate(p->pshm_fd, (off_t)p->pshm_size) < 0) goto fail_errno;
  p->pshm = mmap(NULL, p->pshm_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->pshm_fd, 0);
  if (p->pshm == MAP_FAILED) {
    p->pshm = NULL;
    goto fail_errno;
  }
  p->pshm->max_jobs = opts->max_jobs_per_worker;
  p->pshm->mem_limit = opts->mem_limit;
  p->pshm->cpu_limit_s = opts->cpu_limit_s;
  p->pshm->max_payload = max_payload;
  p->pshm->init_job = init_job;
  p->pshm->init_arg_len = opts->init_arg_len;
  if (opts->init_arg_len)
    memcpy((char *)p->pshm + PP_POOL_SHM_HDR, opts->init_arg, opts->init_arg_len);

  p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->efd < 0 || p->epfd < 0) goto fail_errno;
  /* The manager thread starts first, and waits on p->mu until the server
   * and the first slots exist: qemu-user (the aarch64 CI) cannot create a
   * thread in a process that has forked, and a thread of ours does not make
   * posix_spawn any less safe. */
  pthread_mutex_lock(&p->mu);
  sigset_t all, old;
  sigfillset(&all); /* the manager takes no signals: the program's handlers run elsewhere */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = -pthread_create(&p->mgr, NULL, mgr_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err < 0) {
    pthread_mutex_unlock(&p->mu);
    goto fail;
  }
  p->mgr_started = true;
  /* Under a user-mode emulator the exec of /proc/self/exe cannot work
   * without binfmt_misc, and qemu's emulation of the failed vfork+exec
   * leaves it unable to create threads afterwards: fork the server. */
  err = br__emulated() ? server_fork(p, false) : server_spawn(p);
  if (err == 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ev);
    ev.data.u32 = 1;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->ctl, &ev);
    fcntl(p->ctl, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < workers && err == 0; i++) err = slot_start(p, &p->slots[i]);
  }
  if (err < 0) {
    /* Stop the manager: it finds nothing to finish and ends at once. */
    p->closing = C_IMMEDIATE;
    pthread_mutex_unlock(&p->mu);
    wake_manager(p);
    pthread_join(p->mgr, NULL);
    p->mgr_started = false;
    goto fail;
  }
  pthread_mutex_unlock(&p->mu);
  *out = p;
  return 0;
fail_errno:
  err = -errno;
fail:
  server_stop(p);
  for (int i = 0; i < workers && p->slots; i++) {
    if (p->slots[i].state == S_LIVE) slot_teardown(p, &p->slots[i]);
    free(p->slots[i].fifo);
  }
  free(p->slots);
  if (p->pshm) munmap(p->pshm, p->pshm_size);
  if (p->pshm_fd >= 0) close(p->pshm_fd);
  if (p->efd >= 0) close(p->efd);
  if (p->epfd >= 0) close(p->epfd);
  br_future_unref(p->closed);
  free(p->init_name);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return err;
}

static void cancel_hook(void *arg) {
  pp_job *j = arg;
  br_procpool *p = j->pool;
  pthread_mutex_lock(&p->mu);
  j->cancelled = true;
  if (j->state == J_DISPATCHED) {
    pp_slot *s = &p->slots[j->slot];
    pp_rec *rec = (pp_rec *)(s->req->data + j->rec_off);
    atomic_store(&rec->cancel, 1);
  }
  pthread_mutex_unlock(&p->mu);
  job_unref(j);
}

int br__pp_submit(br_procpool *p, uint32_t job, const struct iovec *iov, int iovcnt, size_t len,
                  uint16_t flags, uint32_t count, int64_t timeout_ms, br_future **out) {
  if (len > p->max_payload) return BR_E2BIG;
  pp_job *j = calloc(1, sizeof *j);
  br_future *f = br_future_new();
  if (!j || !f) {
    free(j);
    br_future_unref(f);
    return BR_ENOMEM;
  }
  atomic_init(&j->refs, 2);
  j->pool = p;
  j->fut = br_future_ref(f);
  j->job = job;
  j->count = count;
  j->flags = flags;
  j->len = len;
  j->memfd = -1;
  j->timeout_ns = timeout_ms > 0 ? timeout_ms * 1000000 : timeout_ms < 0 ? 0 : p->timeout_ns;
  if (len > PP_INLINE_MAX) {
    /* Large: a memfd the worker maps, written here outside the lock. */
    j->memfd = memfd_create("braid-arg", MFD_CLOEXEC);
    int err = j->memfd < 0 ? -errno : 0;
    for (int i = 0; i < iovcnt && !err; i++) {
      const char *b = iov[i].iov_base;
      size_t left = iov[i].iov_len;
      while (left && !err) {
        ssize_t w = write(j->memfd, b, left);
        if (w < 0 && errno != EINTR) err = -errno;
        if (w > 0) b += w, left -= (size_t)w;
      }
    }
    if (err) {
      atomic_store(&j->refs, 1);
      job_unref(j);
      br_future_unref(f);
      return err == BR_ENOSPC ? BR_ENOMEM : err;
    }
  }
  br_future_set_cancel_hook(f, cancel_hook, j);
  pthread_mutex_lock(&p->mu);
  int err = p->closing ? BR_ESHUTDOWN : p->broken ? p->broken : 0;
  if (err) {
    pthread_mutex_unlock(&p->mu);
    atomic_store(&j->refs, 1);
    job_unref(j);
    br_future_unref(f);
    return err;
  }
  p->st.submitted++;
  bool placed = false;
  if (p->pend_head) pump(p);
  if (!p->pend_head) {
    pp_slot *s = slot_pick(p);
    placed = s && slot_dispatch(p, s, j, iov, iovcnt);
  }
  if (!placed) {
    if (j->memfd < 0 && len) {
      j->payload = malloc(len);
      if (!j->payload) {
        p->st.submitted--;
        pthread_mutex_unlock(&p->mu);
        atomic_store(&j->refs, 1);
        job_unref(j);
        br_future_unref(f);
        return BR_ENOMEM;
      }
      char *d = j->payload;
      for (int i = 0; i < iovcnt; i++) {
        memcpy(d, iov[i].iov_base, iov[i].iov_len);
        d += iov[i].iov_len;
      }
    }
    pend_push_back(p, j);
  }
  pthread_mutex_unlock(&p->mu);
  *out = f;
  return 0;
}

int br_procpool_submit_ex(br_procpool *p, const char *job, const void *arg, size_t len,
                          const br_submit_opts *opts, br_future **out) {
  if (!p || !out || (len && !arg)) return BR_EINVAL;
  *out = NULL;
  int idx = br__pp_job_index(job);
  if (idx < 0) return idx;
  struct iovec iov = {.iov_base = (void *)arg, .iov_len = len};
  return br__pp_submit(p, (uint32_t)idx, &iov, 1, len, 0, 1, opts ? opts->timeout_ms : 0, out);
}

int br_procpool_submit(br_procpool *p, const char *job, const void *arg, size_t len,
                       br_future **out) {
  return br_procpool_submit_ex(p, job, arg, len, NULL, out);
}

int br_procpool_shutdown(br_procpool *p, br_shutdown_mode mode) {
  if (!p) return BR_EINVAL;
  /* Future callbacks run on the manager thread: waiting there for the
   * manager to finish would never end. */
  if (p->mgr_started && pthread_equal(pthread_self(), p->mgr)) return BR_EDEADLK;
  pthread_mutex_lock(&p->mu);
  int want = mode == BR_SHUTDOWN_IMMEDIATE ? C_IMMEDIATE : C_GRACEFUL;
  if (want > p->closing) p->closing = want;
  pthread_mutex_unlock(&p->mu);
  wake_manager(p);
  return br_await(p->closed, NULL);
}

void br_procpool_free(br_procpool *p) {
  if (!p) return;
  if (p->mgr_started && pthread_equal(pthread_self(), p->mgr)) {
    fprintf(stderr, "braid: br_procpool_free called from a pool future's callback; leaked\n");
    return;
  }
  /* If a task's wait is interrupted, block instead: the manager must be
   * gone before the memory goes. */
  br_procpool_shutdown(p, BR_SHUTDOWN_GRACEFUL);
  if (p->mgr_started) pthread_join(p->mgr, NULL);
  for (int i = 0; i < p->nworkers; i++) {
    if (p->slots[i].state == S_LIVE) slot_teardown(p, &p->slots[i]);
    free(p->slots[i].fifo);
  }
  free(p->slots);
  munmap(p->pshm, p->pshm_size);
  close(p->pshm_fd);
  close(p->efd);
  close(p->epfd);
  br_future_unref(p->closed);
  free(p->broken_msg);
  free(p->init_name);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

void br_procpool_get_stats(br_procpool *p, br_procpool_stats *out) {
  if (!p || !out) return;
  pthread_mutex_lock(&p->mu);
  *out = p->st;
  out->workers = p->nworkers;
  out->alive = 0;
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].state == S_LIVE && p->slots[i].pid > 0) out->alive++;
  pthread_mutex_unlock(&p->mu);
}

int br_procpool_size(const br_procpool *p) { return p ? p->nworkers : 0; }
