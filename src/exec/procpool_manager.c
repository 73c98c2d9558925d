/* SPDX-License-Identifier: MIT */
/* braid — process pool: the manager thread, in the parent.
 *
 * Who runs this: the pool's one manager thread (br__pp_mgr_main, started
 * by br_procpool_new with every signal blocked), and nothing else. It takes
 * the results the workers publish, fails the jobs of workers that died or
 * ran out of time, restarts workers and the fork server, moves pending jobs
 * into rings, and completes the futures; when the pool is shut down it
 * stops everything and completes p->closed last.
 *
 * Lock rules: the manager takes p->mu for each pass over the slots and for
 * each control message, collecting finished jobs in a pp_donelist; it
 * completes their futures only after releasing p->mu (complete_all), since
 * a future's callbacks run right there, on this thread, and may submit
 * again (br_procpool_shutdown and br_procpool_free refuse to run here:
 * BR_EDEADLK). It sleeps in epoll_wait on the eventfd the workers and
 * br__pp_wake_manager write, after announcing it in pshm->mgr_sleeping
 * (procpool_shm.h: sleeping and waking).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "exec/jobs.h"
#include "exec/procpool_decode.h"
#include "exec/procpool_int.h"
#include "sys/fd_link.h"

static void donelist_push(pp_donelist *l, pp_job *j, int code, char *msg, br_bytes *value) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    pp_done *v = realloc(l->v, cap * sizeof *v);
    if (!v) {
      /* Out of memory while finishing jobs: there is no way to report it
       * that does not lose a job, and no job may be lost silently. */
      br__log(BR_LOG_ERROR, "out of memory completing process-pool jobs");
      abort();
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (pp_done){j, code, msg, value};
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

/* ---- results: what the workers published */

static void update_depth(br_procpool *p, uint64_t run_ns) {
  double x = (double)run_ns + 200.0; /* + a hand-off's fixed cost */
  p->avg_ns = p->avg_ns ? p->avg_ns * 0.875 + x * 0.125 : x;
  double d = PP_DEPTH_BUDGET_NS / p->avg_ns;
  p->depth = d < 2 ? 2 : d > PP_MAX_DEPTH ? PP_MAX_DEPTH : (uint32_t)d;
}

/* Take the memfd a worker sent with its result and map `len` bytes of it.
 * The worker can still write to the memfd through any descriptor or shared
 * mapping it kept, and shrink it (a read past its end is SIGBUS), so the
 * parent only accepts a memfd sealed against writing and shrinking (the
 * worker seals it, procpool_worker.c; we seal it here if it did not and
 * can) that is at least `len` bytes long, and maps it private: the user's
 * bytes never change after delivery, and they may write to their copy.
 * Returns NULL with *err: BR_EIO (a protocol violation, *why says which)
 * or the system's error (BR_EMFILE: we had no descriptor for it; *why says
 * so). */
static br_bytes *recv_mapped(pp_slot *s, uint64_t len, int *err, const char **why) {
  int fd = -1, nfd = 0;
  char c;
  bool truncated = false;
  int r = br__pp_recv_fds_ex(s->sock, &c, 1, &fd, 1, &nfd, MSG_DONTWAIT, &truncated);
  *why = NULL;
  if (r > 0 && nfd == 0 && truncated) {
    /* The worker sent its memfd, but this process had no descriptor
     * number free (RLIMIT_NOFILE) and the kernel dropped it: our shortage,
     * not the worker's fault. The message is consumed, so the worker's
     * socket stays in step: only this result is lost. */
    *err = BR_EMFILE;
    *why = "this process is out of file descriptors (RLIMIT_NOFILE), so the memfd holding "
           "the result could not be received";
    return NULL;
  }
  if (r < 0 || nfd != 1) {
    if (fd >= 0) close(fd);
    *err = BR_EIO;
    *why = "a result said to be in shared memory came without its memfd";
    return NULL;
  }
  const int need = F_SEAL_WRITE | F_SEAL_SHRINK;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0 && (seals & need) != need) {
    (void)fcntl(fd, F_ADD_SEALS, need | F_SEAL_GROW | F_SEAL_SEAL);
    seals = fcntl(fd, F_GET_SEALS);
  }
  struct stat stt;
  if (seals < 0 || (seals & need) != need || fstat(fd, &stt) < 0 || !S_ISREG(stt.st_mode) ||
      (uint64_t)stt.st_size < len || len > (uint64_t)PTRDIFF_MAX) {
    close(fd);
    *err = BR_EIO;
    *why = "a result memfd not sealed against writing and shrinking, or shorter than the result";
    return NULL;
  }
  br_bytes *b = calloc(1, sizeof *b);
  void *m = len ? mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : NULL;
  close(fd);
  if (!b || m == MAP_FAILED) {
    *err = b ? -errno : BR_ENOMEM;
    if (m && m != MAP_FAILED) munmap(m, (size_t)len);
    free(b);
    return NULL;
  }
  br__bytes_adopt_map(b, m, (size_t)len);
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

/* Ask the server to kill slot s's worker (once). False if the request
 * could not be sent now (the control socket is non-blocking and full). */
static bool ask_kill(br_procpool *p, pp_slot *s) {
  if (s->killing) return true;
  pp_msg m = {.type = PP_M_KILL, .slot = (uint32_t)s->idx, .gen = s->gen};
  if (br__pp_send_fds(p->ctl, &m, sizeof m, NULL, 0, 0) < 0) return false;
  s->killing = true;
  return true;
}

/* "worker 2 (pid 4811)", or "worker 2" while the server has not yet
 * reported its pid (a worker can publish a result before that report). */
static const char *slot_who(const pp_slot *s, char buf[48]) {
  if (s->pid > 0) snprintf(buf, 48, "worker %d (pid %d)", s->idx, (int)s->pid);
  else snprintf(buf, 48, "worker %d", s->idx);
  return buf;
}

/* Slot s's worker broke the result protocol (what: why): stop reading its
 * rings, have it killed; the death path then fails the job it was running
 * (naming `what`) and requeues the ones it had not started. p->mu held. */
static void slot_violation(br_procpool *p, pp_slot *s, const char *what) {
  char who[48];
  br__log(BR_LOG_ERROR, "process pool %s wrote a malformed result (%s); killing it",
          slot_who(s, who), what);
  s->violation = what;
  if (!ask_kill(p, s)) p->timers_changed = true; /* check_timers asks again */
}

/* Take one published result of slot s; false if there is none. p->mu held. */
static bool take_result(br_procpool *p, pp_slot *s, pp_donelist *dl, int64_t now) {
  if (s->violation) return false;
  pp_res rr;
  const char *why;
  uint64_t head = atomic_load_explicit(&s->res->head, memory_order_acquire);
  int dr = br__pp_res_decode(s->res->data, s->res_tail, head, &rr, &why);
  if (dr == 0) return false;
  pp_job *j = s->fifo_n ? pp_fifo_at(s, 0) : NULL;
  if (dr < 0 || !j || j->seq != rr.seq) {
    slot_violation(p, s, dr < 0 ? why : "a result for a request it was not running");
    return false;
  }
  int code = 0, err = 0;
  char *msg = NULL;
  br_bytes *value = NULL;
  bool fd = rr.flags & PP_F_FD;
  if (rr.flags & PP_F_CHUNK) {
    value = fd ? recv_mapped(s, rr.len, &err, &why) : bytes_copy(rr.data, rr.len);
  } else if (rr.code) {
    code = rr.code;
    msg = strndup(rr.msg, rr.msglen);
  } else {
    value = fd ? recv_mapped(s, rr.len, &err, &why) : bytes_copy(rr.data, rr.len);
  }
  if (!value && !code) {
    if (err == BR_EIO && why) {
      slot_violation(p, s, why);
      return false;
    }
    code = err ? err : BR_ENOMEM;
    msg = br__pp_strdupf("could not take the result: %s", why ? why : br_strerror(code));
  }
  s->res_tail = rr.end;
  atomic_store_explicit(&s->res->tail, s->res_tail, memory_order_release);
  update_depth(p, rr.run_ns);
  s->fifo_head = (s->fifo_head + 1) & (PP_MAX_DEPTH - 1);
  s->fifo_n--;
  s->head_since = now;
  s->stuck = false;
  s->req_free = j->rec_end;
  if (j->timeout_ns) p->ntimeout--;
  j->state = J_DONE;
  p->st.completed++;
  if (code) p->st.failed++;
  p->st.run_ns += rr.run_ns;
  p->st.cpu_ns += rr.cpu_ns;
  if (rr.flags & PP_F_BLOCKED) p->st.blocked++;
  donelist_push(dl, j, code, msg, value);
  return true;
}

static bool drain_slot(br_procpool *p, pp_slot *s, pp_donelist *dl, int64_t now) {
  bool any = false;
  /* Bounded: a full ring holds fewer records than this, and a worker that
   * publishes without end must not keep the manager here holding p->mu. */
  for (int n = 0; n < 16384 && s->state == S_LIVE && take_result(p, s, dl, now); n++) any = true;
  if (any) pp_notify(&s->res->prod_wait, &s->res->prod_seq);
  return any;
}

/* Complete the futures of finished jobs, without p->mu (callbacks run
 * here). A submitted job's value becomes the caller's (they take it once
 * and br_bytes_free it); a chunk's value stays owned by its future, which
 * frees it (procpool_map.c only reads it). If the future was cancelled
 * first, br__job_complete loses and the outcome is dropped here. */
static void complete_all(pp_donelist *dl) {
  for (size_t i = 0; i < dl->n; i++) {
    pp_done *d = &dl->v[i];
    pp_job *j = d->job;
    bool chunk = j->flags & PP_F_CHUNK;
    char *msg = d->msg;
    if (d->code && !msg) msg = strdup(br_strerror(d->code));
    int r = br__job_complete(&j->base, d->value, chunk ? br__bytes_free_cb : NULL, d->code, msg);
    if (r < 0 && !chunk) br_bytes_free(d->value);
  }
  dl->n = 0;
}

/* ---- deaths: workers that crashed, timed out, retired or never started */

/* Build the result entries of a chunk whose worker ended at item `at`
 * (code, msg). The other items of the chunk fail too: the ones before `at`
 * finished but their results went with the worker, the ones after it never
 * ran. With BR_SHUTDOWN_CANCEL they are cancelled like every other job the
 * shutdown stopped (BR_ECANCELED); otherwise they report the death
 * (BR_EWORKERDIED). */
static br_bytes *chunk_failure(uint32_t count, uint32_t at, int code, const char *msg,
                               bool cancel) {
  br_bytes *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  char lost[160], notrun[160];
  if (cancel) {
    snprintf(lost, sizeof lost,
             "result lost: the pool was shut down with BR_SHUTDOWN_CANCEL while the same chunk "
             "ran (item %u)",
             at);
    snprintf(notrun, sizeof notrun, "not run: the pool was shut down with BR_SHUTDOWN_CANCEL");
  } else {
    snprintf(lost, sizeof lost, "result lost: the worker died later in the same chunk (item %u)",
             at);
    snprintf(notrun, sizeof notrun, "not run: the worker died earlier in the same chunk (item %u)",
             at);
  }
  int other = cancel ? BR_ECANCELED : BR_EWORKERDIED;
  static const char zero[8];
  for (uint32_t i = 0; i < count; i++) {
    const char *m = i < at ? lost : i == at ? msg : notrun;
    pp_entry e = {.err = i == at ? code : other, .msglen = (uint32_t)strlen(m)};
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
  char why[256], who[48];
  describe_status(st, why, sizeof why);
  if (atomic_load(&s->ctl->state) == PP_W_FDS_LOST) /* the worker's own word: see worker_fds_lost */
    snprintf(why, sizeof why, "the job closed or replaced the worker's own descriptors");
  int code;
  char *msg;
  bool cancel = p->closing == C_CANCEL && !j->timed_out;
  if (cancel) {
    code = BR_ECANCELED;
    msg = br__pp_strdupf("job '%s' stopped: the pool was shut down with BR_SHUTDOWN_CANCEL",
                         br__pp_job_name(j->job));
  } else if (s->violation) {
    code = BR_EWORKERDIED;
    msg = br__pp_strdupf("%s was killed while running job '%s': it wrote a malformed result (%s)",
                         slot_who(s, who), br__pp_job_name(j->job), s->violation);
  } else if (j->timed_out) {
    code = BR_ETIMEDOUT;
    msg = br__pp_strdupf("job '%s' timed out after %lld ms; %s was killed and replaced",
                         br__pp_job_name(j->job), (long long)(j->timeout_ns / 1000000),
                         slot_who(s, who));
  } else {
    code = BR_EWORKERDIED;
    msg = br__pp_strdupf("%s died while running job '%s': %s", slot_who(s, who),
                         br__pp_job_name(j->job), why);
  }
  j->state = J_DONE;
  if (j->timeout_ns) p->ntimeout--;
  p->st.completed++;
  p->st.failed++;
  if (j->flags & PP_F_CHUNK) {
    uint32_t at = atomic_load(&s->ctl->cur_item);
    if (at >= j->count) at = 0;
    br_bytes *v = chunk_failure(j->count, at, code, msg ? msg : br_strerror(code), cancel);
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
      br__job_unref(&j->base);
      continue;
    }
    p->st.completed++;
    p->st.failed++;
    donelist_push(dl, j, code, br__pp_strdupf("job '%s': %s", br__pp_job_name(j->job), msg), NULL);
  }
  p->pend_tail = NULL;
}

/* A worker for slot s could not be started (err: the parent could not make
 * its region or socket, or the server could not fork it): try again a
 * little later. Resources that ran out (EMFILE, EAGAIN from fork, ENOMEM)
 * may come back, so the pool does not break; but while no worker of the
 * pool is live nothing can run the pending jobs, and after
 * PP_START_FAILS_MAX tries in a row they fail with the reason rather than
 * wait for ever. Jobs submitted later wait for the next try (another
 * PP_RESTART_DELAY_NS at most) and fail the same way if it fails too.
 * p->mu held. */
static void start_failed(br_procpool *p, pp_slot *s, int err, int64_t now, pp_donelist *dl) {
  s->restart_at = now + PP_RESTART_DELAY_NS;
  s->start_err = err < 0 ? err : BR_EAGAIN;
  if (s->start_fails < UINT32_MAX) s->start_fails++;
  if (s->start_fails < PP_START_FAILS_MAX || !p->pend_head) return;
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].state == S_LIVE) return; /* a worker will run them */
  char why[192];
  snprintf(why, sizeof why,
           "no worker could be started (%u tries in a row, the last one: %s); the pool "
           "keeps trying", s->start_fails, br_strerror(s->start_err));
  fail_pending(p, s->start_err, why, dl);
}

/* Slot s's worker is gone (wait status st, -1 if unknown). Fail the job it
 * had started, requeue the ones it had not, start a replacement. p->mu held.
 */
static void slot_died(br_procpool *p, pp_slot *s, int st, int how, pp_donelist *dl) {
  drain_slot(p, s, dl, pp_now());
  uint32_t wstate = atomic_load(&s->ctl->state);
  bool busy = false;
  pp_job *rq_head = NULL, **rq_tail = &rq_head;
  size_t nrq = 0;
  for (size_t i = 0; i < s->fifo_n; i++) {
    pp_job *j = pp_fifo_at(s, i);
    /* The start-of-job claim (procpool_shm.h): either the worker claimed
     * the request first, and it counts as started, or it never can. */
    if (!br__pp_take_back(s, j)) {
      busy = true;
      fail_started(p, s, j, st, dl);
      continue;
    }
    if (j->timeout_ns) p->ntimeout--;
    if (j->cancelled) {
      j->state = J_DONE;
      br__job_unref(&j->base);
      continue;
    }
    /* It never started, so it did not time out: its next worker's
     * death must not be reported as its timeout. */
    j->timed_out = false;
    /* Never started: take the bytes back out of the dead ring. */
    if (j->memfd < 0 && j->len) {
      pp_rec *rec = (pp_rec *)(s->req->data + j->rec_off);
      j->payload = malloc(j->len);
      if (!j->payload) {
        p->st.completed++;
        p->st.failed++;
        donelist_push(dl, j, BR_ENOMEM, br__pp_strdupf("out of memory requeueing a job"), NULL);
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
    /* Worker-written: a bounded copy, whatever the worker left there. */
    char imsg[PP_MSG_MAX];
    memcpy(imsg, s->ctl->init_msg, sizeof imsg);
    imsg[sizeof imsg - 1] = 0;
    int ierr = s->ctl->init_err;
    p->broken_msg = br__pp_strdupf("the initializer '%s' failed in a worker (%s): %s",
                                   p->init_name, br_errname(ierr < 0 ? ierr : BR_EFAILED), imsg);
  }
  /* A worker that dies before it is ready (an initializer that crashes or
   * exits) would be replaced for ever. Only its
   * own wait status counts: a killed fork server takes every starting
   * worker with it, and is restarted. */
  if (wstate != PP_W_STARTING) {
    s->early_deaths = 0;
  } else if (st != -1 && !(how & SD_NO_COUNT) && ++s->early_deaths >= PP_EARLY_DEATHS_MAX &&
             !p->broken) {
    char why[256];
    if (s->init_timed_out)
      snprintf(why, sizeof why, "killed by the pool: its initializer '%s' ran past the pool's "
               "timeout of %lld ms", p->init_name, (long long)(p->timeout_ns / 1000000));
    else
      describe_status(st, why, sizeof why);
    p->broken = BR_EFAILED;
    free(p->broken_msg);
    p->broken_msg = br__pp_strdupf("worker %d died %u times in a row before it was ready "
                                   "(the last one: %s); the pool gives up",
                                   s->idx, s->early_deaths, why);
  }
  br__pp_slot_teardown(s);
  if (p->broken) {
    fail_pending(p, p->broken, p->broken_msg ? p->broken_msg : "the pool is broken", dl);
    return;
  }
  if (p->closing == C_CANCEL || p->stopped || (how & SD_NO_RESTART)) return;
  int err = br__pp_slot_start(p, s);
  if (err < 0) start_failed(p, s, err, pp_now(), dl);
}

/* ---- the fork server's messages */

/* The server vanished: its workers died with it. p->mu held. */
static void server_died(br_procpool *p, pp_donelist *dl) {
  /* Reaping it means PR_SET_PDEATHSIG has been sent to its workers. */
  int st = br__pp_server_lost(p);
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state != S_LIVE) continue;
    slot_died(p, s, -1, SD_NO_RESTART | (p->server_hello ? 0 : SD_NO_COUNT), dl);
  }
  if (p->closing == C_CANCEL) return;
  /* Killed (kill -9, OOM): start another. Exited by itself before it said
   * hello: this program cannot be a fork server; do not loop. */
  bool killed = st != -1 && WIFSIGNALED(st);
  bool no_exec = !p->server_hello && !p->server_forked && st != -1 && WIFEXITED(st) &&
                 WEXITSTATUS(st) == 127;
  int err = no_exec || p->server_hello || killed ? br__pp_server_attach(p, no_exec) : BR_ENOSYS;
  if (err < 0) {
    p->broken = err;
    free(p->broken_msg);
    p->broken_msg = err == BR_ENOSYS
                        ? br__pp_strdupf("the fork server (the program exec'd from "
                                         "/proc/self/exe) exited before it was ready")
                        : br__pp_strdupf("the fork server died and could not be restarted: %s",
                                         br_strerror(err));
    fail_pending(p, err, p->broken_msg, dl);
    return;
  }
  for (int i = 0; i < p->nworkers; i++) {
    int serr = br__pp_slot_start(p, &p->slots[i]);
    if (serr < 0) start_failed(p, &p->slots[i], serr, pp_now(), dl);
  }
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
        s->start_fails = 0;
      } else if (m.type == PP_M_EXITED) {
        slot_died(p, s, m.status, 0, dl);
      } else if (m.type == PP_M_START_FAILED) {
        /* fork failed (EAGAIN, ENOMEM): requeue, retry a little later. */
        p->st.started--; /* counted when it was asked for */
        slot_died(p, s, -1, SD_NO_RESTART | SD_NO_COUNT, dl);
        start_failed(p, s, m.err, pp_now(), dl);
      }
    }
    pthread_mutex_unlock(&p->mu);
  }
  return any;
}

/* ---- the loop */

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }
static int64_t sat_mul(int64_t a, uint32_t n) {
  return n && a > INT64_MAX / (int64_t)n ? INT64_MAX : a * (int64_t)n;
}

/* Kill workers whose job ran out of time; restart slots that failed to
 * start; take back requests queued behind a long one for an idle worker
 * (br__pp_rebalance). Returns the next time to look again (BR_NEVER: none). p->mu held.
 */
static int64_t check_timers(br_procpool *p, int64_t now, pp_donelist *dl) {
  int64_t next = BR_NEVER;
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state == S_EMPTY) {
      if (s->restart_at && !p->broken && p->closing != C_CANCEL) {
        if (now >= s->restart_at) {
          s->restart_at = 0;
          int err = br__pp_slot_start(p, s);
          if (err < 0) start_failed(p, s, err, now, dl);
        }
        if (s->restart_at && s->restart_at < next) next = s->restart_at;
      }
      continue;
    }
    if (s->violation && !s->killing) {
      if (!ask_kill(p, s) && now + 1000000 < next) next = now + 1000000;
      continue;
    }
    /* The initializer runs before any job, so the one timeout there is
     * for it is the pool's: past it (counted from the worker's start as
     * the parent saw it, or from the initializer's own start if the worker
     * wrote one inside that) the worker is killed. One that hangs thus
     * breaks the pool after PP_EARLY_DEATHS_MAX tries, with a message
     * naming it, instead of leaving every job waiting for a worker that
     * never gets ready. */
    if (!s->ready_at && atomic_load(&s->ctl->state) != PP_W_STARTING) s->ready_at = now;
    if (!s->ready_at && p->init_name && p->timeout_ns > 0 && !s->killing) {
      int64_t due = sat_add(s->started_at, sat_add(p->timeout_ns, PP_TIMEOUT_SLACK_NS));
      int64_t t0 = atomic_load(&s->ctl->item_start_ns);
      if (t0 >= s->started_at && t0 <= now && sat_add(t0, p->timeout_ns) < due)
        due = sat_add(t0, p->timeout_ns);
      if (now < due) {
        if (due < next) next = due;
      } else if (ask_kill(p, s)) {
        s->init_timed_out = true;
        continue;
      } else if (now + 1000000 < next) {
        next = now + 1000000; /* the server's socket is full: again soon */
      }
    }
    if (!p->ntimeout || !s->fifo_n || s->killing) continue;
    pp_job *j = pp_fifo_at(s, 0);
    if (!j->timeout_ns) continue;
    /* A job's time starts when its worker can start it: a worker still in
     * its initializer has started nothing, however long that takes (a slow
     * initializer must not be killed for a job's timeout, five times, until
     * the pool gives up). The manager notes the moment it first sees the
     * worker ready, or this job started, and never takes it back, so
     * nothing the worker writes later turns the clock back. */
    if (!s->ready_at) {
      if (atomic_load(&s->ctl->started_seq) != j->seq) {
        if (now + PP_READY_POLL_NS < next) next = now + PP_READY_POLL_NS;
        continue;
      }
      s->ready_at = now;
    }
    int64_t since = s->head_since > s->ready_at ? s->head_since : s->ready_at;
    /* The item's start is worker-written: it counts only inside what the
     * parent saw itself. Whatever the worker stores there, a request is
     * killed once it has been the oldest for its whole budget (each item
     * its timeout, plus slack for the hand-offs). */
    int64_t cap = sat_add(since, sat_mul(j->timeout_ns, j->count));
    cap = sat_add(cap, PP_TIMEOUT_SLACK_NS);
    int64_t due = cap;
    int64_t t0 = atomic_load(&s->ctl->item_start_ns);
    if (atomic_load(&s->ctl->started_seq) == j->seq && t0 > 0 && t0 <= now) {
      if (sat_add(t0, j->timeout_ns) < due) due = sat_add(t0, j->timeout_ns);
    } else if (now - since < PP_TIMEOUT_SLACK_NS && now + 1000000 < next) {
      next = now + 1000000; /* about to start */
    }
    if (now >= due) {
      if (ask_kill(p, s)) {
        j->timed_out = true;
        p->st.timeouts++;
      } else if (now + 1000000 < next) {
        next = now + 1000000; /* the server's socket is full: again soon */
      }
    } else if (due < next) {
      next = due;
    }
  }
  int64_t r = br__pp_rebalance(p, now);
  p->timers_changed = false;
  return r < next ? r : next;
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
  br__pp_server_detach(p);
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state == S_LIVE) slot_died(p, s, SIGKILL, SD_NO_RESTART | SD_NO_COUNT, dl);
  }
  fail_pending(p, BR_ECANCELED, "cancelled: the pool was shut down with BR_SHUTDOWN_CANCEL", dl);
  pthread_mutex_unlock(&p->mu);
  complete_all(dl);
}

/* Whether descriptor fd is still what the pool made (`what`, as
 * /proc/self/fd names it): open, close-on-exec, of that kind. */
static bool own_fd(int fd, const char *what) {
  char link[64];
  if (fcntl(fd, F_GETFD) != FD_CLOEXEC) return false;
  if (br__fd_link(0, fd, link, sizeof link) < 0) return true; /* no /proc: open and close-on-exec will do */
  return strcmp(link, what) == 0;
}

/* The program closed the pool's descriptors behind its back (closefrom or
 * close_range(3, ~0U) while a pool exists): nothing can wake the manager or
 * reach the fork server any more, and the numbers may belong to someone
 * else by now. The pool breaks: every job not finished fails BR_EBADF (what
 * the workers had published is still delivered: the rings are memory), later
 * submissions fail too, and the pool forgets its descriptors instead of
 * writing to or closing numbers that are no longer its own. p->mu not held. */
static void fds_lost(br_procpool *p, pp_donelist *dl) {
  pthread_mutex_lock(&p->mu);
  if (!p->broken) {
    p->broken = BR_EBADF;
    free(p->broken_msg);
    p->broken_msg = br__pp_strdupf("the pool's descriptors were closed behind its back (by "
                                   "closefrom or close_range in the program?); the pool stopped");
  }
  br__log(BR_LOG_ERROR, "process pool: its descriptors were closed behind its back; it stops");
  p->ctl = p->efd = p->epfd = p->pshm_fd = p->cwd_fd = -1;
  for (int i = 0; i < p->nworkers; i++) {
    pp_slot *s = &p->slots[i];
    if (s->state != S_LIVE) continue;
    s->sock = -1;
    slot_died(p, s, -1, SD_NO_RESTART | SD_NO_COUNT, dl);
  }
  fail_pending(p, p->broken, p->broken_msg ? p->broken_msg : "the pool is broken", dl);
  pthread_mutex_unlock(&p->mu);
  complete_all(dl);
}

void *br__pp_mgr_main(void *arg) {
  br_procpool *p = arg;
  pp_donelist dl = {0};
  int64_t last_progress = pp_now();
  for (;;) {
    bool progress = false;
    pthread_mutex_lock(&p->mu);
    int64_t now = pp_now();
    for (int i = 0; i < p->nworkers; i++)
      if (p->slots[i].state == S_LIVE) progress |= drain_slot(p, &p->slots[i], &dl, now);
    if (p->pend_head) br__pp_pump(p);
    int64_t next = check_timers(p, now, &dl);
    bool finish = p->closing == C_CANCEL || (p->closing == C_DRAIN && all_idle(p));
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
    /* timers_changed: a job with a timeout (or one queued behind another
     * while a worker idles) was dispatched after check_timers computed
     * `next`; the submitter saw mgr_sleeping 0 then, so look again. */
    bool waiting = results_waiting(p) || (p->closing == C_DRAIN && all_idle(p)) ||
                   p->closing == C_CANCEL || p->timers_changed;
    pthread_mutex_unlock(&p->mu);
    if (!waiting) {
      /* Never for ever: a manager whose descriptors the program closed
       * would never be woken (fds_lost). */
      int ms = PP_IDLE_CHECK_MS;
      if (next != BR_NEVER && next - now < (int64_t)PP_IDLE_CHECK_MS * 1000000) {
        int64_t d = next - now;
        ms = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
      }
      struct epoll_event ev[4];
      int n = epoll_wait(p->epfd, ev, 4, ms);
      if (((n < 0 && errno != EINTR) || (n == 0 && ms == PP_IDLE_CHECK_MS)) &&
          (!own_fd(p->epfd, "anon_inode:[eventpoll]") || !own_fd(p->efd, "anon_inode:[eventfd]"))) {
        fds_lost(p, &dl);
        break;
      }
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

void br__pp_wake_manager(br_procpool *p) {
  uint64_t one = 1;
  ssize_t r = write(p->efd, &one, sizeof one);
  (void)r;
}
