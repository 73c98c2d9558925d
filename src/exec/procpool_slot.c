/* SPDX-License-Identifier: MIT */
/* braid — process pool: worker slots and the pending queue, in the parent.
 *
 * Who runs this: submitters (any thread, from br__pp_submit) and the
 * manager thread. Lock rule: every function here is called with p->mu held
 * and never releases it; none completes a future or blocks (the only system
 * calls are the non-blocking sends of a slot start or of a large payload's
 * memfd, and a futex wake of a sleeping worker).
 *
 * A slot is one worker's place in the pool. br__pp_slot_start gives it a
 * fresh shared region (procpool_shm.h) and socket and asks the fork server
 * for a worker; requests may be written into the region's request ring at
 * once, before the worker exists. The ring's bytes of a dispatched request
 * stay valid until the manager has taken its result (procpool_shm.h:
 * request ring ownership), which is what lets the manager requeue the
 * requests of a worker that died.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec/procpool_int.h"

/* A live worker with nothing to do and room to take something. */
static bool any_idle(const br_procpool *p) {
  for (int i = 0; i < p->nworkers; i++) {
    const pp_slot *s = &p->slots[i];
    if (s->state == S_LIVE && !s->killing && !s->fifo_n && !s->stuck &&
        !(p->max_jobs && s->dispatched >= p->max_jobs))
      return true;
  }
  return false;
}

/* Release slot s's region and socket; its worker is gone (or going: the
 * server kills what it forked when asked). The slot reads EMPTY after. */
void br__pp_slot_teardown(pp_slot *s) {
  if (s->base) munmap(s->base, PP_SLOT_SIZE);
  if (s->sock >= 0) close(s->sock);
  s->base = NULL;
  s->sock = -1;
  s->state = S_EMPTY;
  s->pid = 0;
  s->killing = false;
  s->violation = NULL;
  s->stuck = false;
  s->fifo_head = s->fifo_n = 0;
}

/* Create a fresh region and socket for slot s and ask the server for a
 * worker. Jobs may be dispatched into it at once. Before the manager
 * exists, br_procpool_new holds p->mu too. */
int br__pp_slot_start(br_procpool *p, pp_slot *s) {
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
  int fds[5] = {p->pshm_fd, p->efd, fd, sv[1], p->cwd_fd};
  err = br__pp_send_fds(p->ctl, &m, sizeof m, fds, p->cwd_fd >= 0 ? 5 : 4, 0);
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
  s->violation = NULL;
  s->stuck = false;
  s->head_since = 0;
  s->ready_at = 0;
  s->started_at = pp_now();
  s->init_timed_out = false;
  /* Counted now, not when the server reports the pid: a replacement asked
   * for while a death is handled is in the stats before the dead worker's
   * job fails (the report can come after the new worker's first result). */
  p->st.started++;
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

/* Write job j's request into slot s. payload: iov (a new job) or the job's
 * own copy. Returns false if s has no room now. */
bool br__pp_slot_dispatch(br_procpool *p, pp_slot *s, pp_job *j, const struct iovec *iov,
                          int iovcnt) {
  if (s->state != S_LIVE || s->killing || s->fifo_n >= p->depth) return false;
  if (p->max_jobs && s->dispatched >= p->max_jobs) return false;
  if (s->fifo_n == 0) {
    /* Nothing of ours is left in the ring: what the worker has read (its
     * published position, checked) is free, requests taken back included. */
    uint64_t t = atomic_load_explicit(&s->req->tail, memory_order_acquire);
    if (t > s->req_free && t <= s->req_head && !(t & 7)) s->req_free = t;
  }
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
  if (s->fifo_n == 0) s->head_since = pp_now();
  s->fifo[(s->fifo_head + s->fifo_n) & (PP_MAX_DEPTH - 1)] = j;
  s->fifo_n++;
  s->dispatched++;
  if (j->timeout_ns) p->ntimeout++;
  s->req_head = end;
  atomic_store_explicit(&s->req->head, end, memory_order_release);
  pp_notify(&s->req->cons_wait, &s->req->cons_seq);
  /* A sleeping manager has no deadline for this job's timeout, nor for
   * taking back requests queued behind a long one while a worker idles:
   * tell it (procpool_manager.c rechecks timers_changed before it sleeps,
   * under p->mu, after announcing the sleep). */
  if (j->timeout_ns || s->fifo_n >= 2) {
    p->timers_changed = true;
    if (atomic_load_explicit(&p->pshm->mgr_sleeping, memory_order_relaxed) &&
        (j->timeout_ns || any_idle(p)) && atomic_exchange(&p->pshm->mgr_sleeping, 0))
      br__pp_wake_manager(p);
  }
  return true;
}

bool br__pp_take_back(pp_slot *s, pp_job *j) {
  pp_rec *rec = (pp_rec *)(s->req->data + j->rec_off);
  return !(atomic_fetch_or(&rec->cancel, PP_C_TAKEN) & PP_C_STARTED);
}

/* How long a slot's oldest request must have run before an idle worker
 * takes back the requests queued behind it: a few average jobs, at least
 * PP_STEAL_MIN_NS (so tiny jobs in deep rings are never shuffled), at most
 * a second. */
static int64_t steal_after(const br_procpool *p) {
  double t = 4 * p->avg_ns;
  return t < PP_STEAL_MIN_NS ? PP_STEAL_MIN_NS : t > 1e9 ? (int64_t)1e9 : (int64_t)t;
}

int64_t br__pp_rebalance(br_procpool *p, int64_t now) {
  if (!any_idle(p)) return BR_NEVER;
  int64_t after = steal_after(p), next = BR_NEVER;
  pp_job *head = NULL, **tail = &head;
  size_t n = 0;
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *v = &p->slots[i];
    if (v->state != S_LIVE || v->violation || v->fifo_n < 2) continue;
    if (now - v->head_since < after) {
      if (v->head_since + after < next) next = v->head_since + after;
      continue;
    }
    v->stuck = true;
    /* Newest first, down to the oldest (running) one; stop at a request
     * the worker has claimed (it got past the long one meanwhile). */
    pp_job *got = NULL;
    size_t ngot = 0;
    while (v->fifo_n > 1) {
      pp_job *j = pp_fifo_at(v, v->fifo_n - 1);
      void *copy = NULL;
      if (j->memfd < 0 && j->len) {
        copy = malloc(j->len);
        if (!copy) break;
        memcpy(copy, (pp_rec *)(v->req->data + j->rec_off) + 1, j->len);
      }
      if (!br__pp_take_back(v, j)) {
        free(copy);
        break;
      }
      j->payload = copy;
      v->fifo_n--;
      v->dispatched--;
      if (j->timeout_ns) p->ntimeout--;
      j->state = J_PENDING;
      j->next = got;
      got = j;
      ngot++;
    }
    if (!got) continue;
    *tail = got;
    while (*tail) tail = &(*tail)->next;
    n += ngot;
    p->st.taken_back += ngot;
  }
  if (head) {
    /* Older than anything pending: they go first. */
    *tail = p->pend_head;
    if (!p->pend_head) p->pend_tail = (pp_job *)((char *)tail - offsetof(pp_job, next));
    p->pend_head = head;
    p->npending += n;
    br__pp_pump(p);
  }
  return next;
}

/* The live slot with the fewest requests in flight, or NULL. A stuck slot
 * (its oldest request has run long, br__pp_rebalance) gets nothing while
 * another slot is not stuck: a job queued behind a long one would wait for
 * it. */
pp_slot *br__pp_slot_pick(br_procpool *p) {
  pp_slot *best = NULL, *best_stuck = NULL;
  bool other = false; /* a live slot that is not stuck exists */
  uint32_t n = (uint32_t)p->nworkers;
  uint32_t start = p->rr++ % n;
  for (uint32_t k = 0; k < n; k++) {
    pp_slot *s = &p->slots[(start + k) % n];
    if (s->state != S_LIVE || s->killing) continue;
    if (!s->stuck) other = true;
    if (s->fifo_n >= p->depth || (p->max_jobs && s->dispatched >= p->max_jobs)) continue;
    pp_slot **b = s->stuck ? &best_stuck : &best;
    if (!*b || s->fifo_n < (*b)->fifo_n) *b = s;
  }
  return best ? best : other ? NULL : best_stuck;
}

/* Move pending jobs into rings while there is room, oldest first; drop
 * the cancelled ones. */
void br__pp_pump(br_procpool *p) {
  while (p->pend_head) {
    pp_job *j = p->pend_head;
    if (j->cancelled) {
      p->pend_head = j->next;
      if (!p->pend_head) p->pend_tail = NULL;
      p->npending--;
      j->state = J_DONE;
      br__job_unref(&j->base);
      continue;
    }
    pp_slot *s = br__pp_slot_pick(p);
    if (!s || !br__pp_slot_dispatch(p, s, j, NULL, 0)) {
      /* The least-loaded slot may be full by bytes; try the others. */
      bool ok = false;
      for (int i = 0; i < p->nworkers && !ok; i++)
        if (&p->slots[i] != s && (!p->slots[i].stuck || (s && s->stuck)))
          ok = br__pp_slot_dispatch(p, &p->slots[i], j, NULL, 0);
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

void br__pp_pend_push_back(br_procpool *p, pp_job *j) {
  j->next = NULL;
  j->state = J_PENDING;
  if (p->pend_tail) p->pend_tail->next = j;
  else p->pend_head = j;
  p->pend_tail = j;
  p->npending++;
}
