/* SPDX-License-Identifier: MIT */
/* braid — process pool: the public API, in the parent.
 *
 * Who runs this: any thread of the program, concurrently (submitters), and
 * the manager thread when a future's callback submits again. Lock rules:
 * a call takes p->mu only for the moment it queues or dispatches a job
 * (procpool_slot.c) or reads the state; it never completes a future and
 * never waits with p->mu held. br_procpool_shutdown and br_procpool_free
 * wait for the manager thread, so they refuse to run on it (BR_EDEADLK).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/job.h"
#include "core/log.h"
#include "exec/jobs.h"
#include "exec/procpool_int.h"

char *br__pp_strdupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

/* ---- the job record's ops (core/job.h: the reference protocol) */

/* br_future_cancel on a job's future, on the cancelling thread. The job is
 * never taken back here: a pending one stays queued, marked, until
 * br__pp_pump or the manager unlinks it (and drops RUN), which keeps the
 * pending queue singly linked; a dispatched one gets its request's cancel
 * flag, so the worker skips it if it has not started (procpool_shm.h: the
 * start-of-job handshake) and a running job sees br_cancelled(). Its
 * outcome is then dropped by br__job_complete, which loses. */
static bool pp_job_cancel(br__job *base) {
  pp_job *j = (pp_job *)base;
  br_procpool *p = j->pool;
  pthread_mutex_lock(&p->mu);
  j->cancelled = true;
  if (j->state == J_DISPATCHED) {
    pp_slot *s = &p->slots[j->slot];
    pp_rec *rec = (pp_rec *)(s->req->data + j->rec_off);
    atomic_fetch_or(&rec->cancel, PP_C_CANCEL);
  }
  pthread_mutex_unlock(&p->mu);
  return false;
}

static void pp_job_release(br__job *base) {
  pp_job *j = (pp_job *)base;
  free(j->payload);
  if (j->memfd >= 0) close(j->memfd);
  free(j);
}

static const br__job_ops pp_job_ops = {.cancel = pp_job_cancel, .release = pp_job_release,
                                       .origin = BR_WAIT_PROCPOOL};

const char *br__pp_job_name(uint32_t idx) {
  const br_job_desc *d = br_job_at(idx);
  return d ? d->name : "?";
}


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
  if (workers == BR_CPUS) workers = br_cpu_count();
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
  p->timeout_ns = opts->timeout_ms > INT64_MAX / 1000000 ? 0 : opts->timeout_ms * 1000000;
  p->max_jobs = opts->max_jobs_per_worker;
  p->depth = 8;
  p->ctl = p->efd = p->epfd = p->pshm_fd = -1;
  p->cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  p->init_name = opts->initializer ? strdup(opts->initializer) : NULL;
  p->slots = calloc((size_t)workers, sizeof *p->slots);
  if (!p->slots || br_future_new(&p->closed) < 0 || (opts->initializer && !p->init_name)) {
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
  err = -pthread_create(&p->mgr, NULL, br__pp_mgr_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err < 0) {
    pthread_mutex_unlock(&p->mu);
    goto fail;
  }
  p->mgr_started = true;
  /* The process's fork server (procpool_spawn.c): started now if this is
   * the first pool, or if it died since the last one. */
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
  epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ev);
  err = br__pp_server_attach(p, false);
  for (int i = 0; i < workers && err == 0; i++) err = br__pp_slot_start(p, &p->slots[i]);
  if (err < 0) {
    /* Stop the manager: it finds nothing to finish and ends at once. */
    p->closing = C_CANCEL;
    pthread_mutex_unlock(&p->mu);
    br__pp_wake_manager(p);
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
  br__pp_server_detach(p);
  for (int i = 0; i < workers && p->slots; i++) {
    if (p->slots[i].state == S_LIVE) br__pp_slot_teardown(&p->slots[i]);
    free(p->slots[i].fifo);
  }
  free(p->slots);
  if (p->pshm) munmap(p->pshm, p->pshm_size);
  if (p->pshm_fd >= 0) close(p->pshm_fd);
  if (p->efd >= 0) close(p->efd);
  if (p->epfd >= 0) close(p->epfd);
  if (p->cwd_fd >= 0) close(p->cwd_fd);
  br_future_unref(p->closed);
  free(p->init_name);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return err;
}

int br__pp_submit(br_procpool *p, br_future **out, uint32_t job, const struct iovec *iov,
                  int iovcnt, size_t len, uint16_t flags, uint32_t count, int64_t timeout_ms) {
  if (len > p->max_payload) return BR_E2BIG;
  pp_job *j = calloc(1, sizeof *j);
  if (!j) return BR_ENOMEM;
  j->memfd = -1;
  br_future *f;
  if (br__job_init(&j->base, &pp_job_ops, &f) < 0) {
    free(j);
    return BR_ENOMEM;
  }
  j->pool = p;
  j->job = job;
  j->count = count;
  j->flags = flags;
  j->len = len;
  /* Past ~292 years a timeout is no timeout (and would overflow in ns). */
  j->timeout_ns = timeout_ms > INT64_MAX / 1000000 ? 0
                  : timeout_ms > 0                 ? timeout_ms * 1000000
                  : timeout_ms < 0                 ? 0
                                                   : p->timeout_ns;
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
      br__job_abandon(&j->base);
      return err == BR_ENOSPC ? BR_ENOMEM : err;
    }
  }
  pthread_mutex_lock(&p->mu);
  int err = p->closing ? BR_ESHUTDOWN : p->broken ? p->broken : 0;
  if (err) {
    pthread_mutex_unlock(&p->mu);
    br__job_abandon(&j->base);
    return err;
  }
  p->st.submitted++;
  bool placed = false;
  if (p->pend_head) br__pp_pump(p);
  if (!p->pend_head) {
    pp_slot *s = br__pp_slot_pick(p);
    placed = s && br__pp_slot_dispatch(p, s, j, iov, iovcnt);
  }
  if (!placed) {
    if (j->memfd < 0 && len) {
      j->payload = malloc(len);
      if (!j->payload) {
        p->st.submitted--;
        pthread_mutex_unlock(&p->mu);
        br__job_abandon(&j->base);
        return BR_ENOMEM;
      }
      char *d = j->payload;
      for (int i = 0; i < iovcnt; i++) {
        memcpy(d, iov[i].iov_base, iov[i].iov_len);
        d += iov[i].iov_len;
      }
    }
    br__pp_pend_push_back(p, j);
  }
  pthread_mutex_unlock(&p->mu);
  *out = f;
  return 0;
}

int br_procpool_submit(br_procpool *p, br_future **out, const char *job, const void *arg,
                       size_t len, const br_procpool_submit_opts *opts) {
  if (out) *out = NULL;
  if (!p || !out || (len && !arg)) return BR_EINVAL;
  int idx = br__pp_job_index(job);
  if (idx < 0) return idx;
  struct iovec iov = {.iov_base = (void *)arg, .iov_len = len};
  return br__pp_submit(p, out, (uint32_t)idx, &iov, 1, len, 0, 1, opts ? opts->timeout_ms : 0);
}

/* Ask the manager to stop (a CANCEL upgrades a DRAIN, never the reverse). */
static void begin_shutdown(br_procpool *p, br_shutdown_mode mode) {
  pthread_mutex_lock(&p->mu);
  int want = mode == BR_SHUTDOWN_CANCEL ? C_CANCEL : C_DRAIN;
  if (want > p->closing) p->closing = want;
  pthread_mutex_unlock(&p->mu);
  br__pp_wake_manager(p);
}

static bool on_manager(const br_procpool *p) {
  return p->mgr_started && pthread_equal(pthread_self(), p->mgr);
}

int br_procpool_shutdown(br_procpool *p, br_shutdown_mode mode) {
  if (!p || (mode != BR_SHUTDOWN_DRAIN && mode != BR_SHUTDOWN_CANCEL)) return BR_EINVAL;
  /* Future callbacks run on the manager thread: waiting there for the
   * manager to finish would never end. */
  if (on_manager(p)) return BR_EDEADLK;
  begin_shutdown(p, mode);
  return br_await(p->closed, NULL);
}

int br_procpool_free(br_procpool *p) {
  if (!p) return 0;
  if (on_manager(p)) {
    br__log(BR_LOG_WARN, "br_procpool_free called from a callback of one of the pool's futures: "
                         "refused (BR_EDEADLK), the pool is not freed");
    return BR_EDEADLK;
  }
  /* Even a cancelled task waits here: the manager thread must be gone
   * before the memory goes. */
  begin_shutdown(p, BR_SHUTDOWN_DRAIN);
  br__await_shielded(p->closed);
  if (p->mgr_started) pthread_join(p->mgr, NULL);
  for (int i = 0; i < p->nworkers; i++) {
    if (p->slots[i].state == S_LIVE) br__pp_slot_teardown(&p->slots[i]);
    free(p->slots[i].fifo);
  }
  free(p->slots);
  munmap(p->pshm, p->pshm_size);
  close(p->pshm_fd);
  close(p->efd);
  close(p->epfd);
  if (p->cwd_fd >= 0) close(p->cwd_fd);
  br_future_unref(p->closed);
  free(p->broken_msg);
  free(p->init_name);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return 0;
}

int br_procpool_get_stats(br_procpool *p, br_procpool_stats *out) {
  if (!p || !out) return BR_EINVAL;
  pthread_mutex_lock(&p->mu);
  *out = p->st;
  out->workers = p->nworkers;
  out->alive = 0;
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].state == S_LIVE && p->slots[i].pid > 0) out->alive++;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int br_procpool_size(const br_procpool *p) { return p ? p->nworkers : 0; }
