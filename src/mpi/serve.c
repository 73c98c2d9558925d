/* SPDX-License-Identifier: MIT */
/* braid-mpi — a worker rank: receive work, run jobs in order, send results.
 *
 * Threads. The rank's own thread (the one in br_mpipool_new) makes every
 * MPI call: it receives work and hands one unit at a time to the rank's job
 * thread, the single worker of a braid CPU pool (br_pool, 8 MiB stack).
 * The unit is one pool job that runs the unit's items one after another,
 * each as a fork child joined at once (br_pool_fork + br_pool_join_result),
 * so br_fail's code and message come back per item, with the public API
 * only. One hand-off per unit, not per item: a cross-core wake-up costs
 * 25-30 us, the whole budget of a small map item.
 *
 * While the unit runs the rank's thread goes on receiving (later work
 * queues up), sends heartbeats (so rank 0 can tell a busy rank on another
 * host from a dead one) and watches the item running: a CANCEL for the unit,
 * or the item passing its timeout, cancels the pool job's future, which
 * makes br_cancelled() true inside the job (the items not started are then
 * skipped); a job that still runs kill_after later ends the rank (a running
 * C function cannot be taken back, and a rank stuck for ever would make the
 * whole run hang in MPI_Finalize).
 *
 * Idle ranks sleep between probes with an exponential back-off, 1 us up to
 * 1 ms, and up to 5 ms after a second without work: a waiting rank costs a
 * fraction of a percent of a core (tests/test_mpi_basic.c measures it),
 * where a blocking MPI_Recv would spin a core at 100 % in Open MPI.
 *
 * A fatal signal inside a job (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) is
 * reported to rank 0 with a DIED message from the signal handler before
 * the signal is re-raised with its default action (so the launcher sees the
 * real cause). Sending from a signal handler is not async-signal-safe in
 * general; the handler only sends when it can take mpi_mu without waiting,
 * i.e. when the rank's thread is not inside an MPI call, and jobs never
 * call MPI. Otherwise rank 0 finds the death by itself (fd.c).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "braid/pool.h"
#include "mpi/mpi_fd.h"
#include "mpi/mpi_int.h"

typedef struct s_unit {
  struct s_unit *next;
  w_unit h;
  uint64_t *lens;
  char *data;
} s_unit;

typedef struct serve {
  MPI_Comm comm;
  const mp_opts *o;
  int rank;
  pthread_mutex_t mpi_mu; /* held around MPI calls (the signal handler tries it) */
  br_pool *pool;          /* one worker thread: runs the units */
  s_unit *head, *tail;
  bool stop;
  mp_peer root;
  uint64_t run_unit;      /* the unit running, 0 when none */
  bool cancel_run;        /* a CANCEL for it arrived (rank thread only) */
  size_t part_max;        /* the most bytes of one RESULT (part_max_bytes) */
} serve;

/* MP_PART_MAX, or less from BRAID_MPI_MESSAGE_MAX (bytes, at least 4096):
 * for a transport that copes badly with messages of gigabytes. A value
 * that is not such a number is ignored. */
static size_t part_max_bytes(void) {
  const char *v = getenv("BRAID_MPI_MESSAGE_MAX");
  if (!v || !*v) return MP_PART_MAX;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || *end || n < 4096 || n > MP_PART_MAX || v[0] == '-') return MP_PART_MAX;
  return (size_t)n;
}

/* One item's outcome, as sent back. */
typedef struct s_out {
  w_item h;
  br_bytes b;
  char *msg;
} s_out;

/* A unit handed to the pool's worker. state: R_NEW until the job starts
 * (R_RUN) or the rank thread gives it up before it did (R_DROP): a compare
 * and swap decides, so the rank thread knows whether br_cancelled() must be
 * raised in a running job or the job will merely see R_DROP and skip
 * everything. cur_t0 is when the item running started (0: none), read by
 * the rank thread for the timeout. done is set by the job as its last act
 * (the rank thread waits for it, not for the pool job's future, which a
 * cancellation completes while the job still runs). */
enum { R_NEW = 0, R_RUN, R_DROP };
typedef struct s_run {
  const s_unit *u;
  br_job_fn fn;        /* NULL: not in this program's BR_JOB table */
  const char *name;
  size_t max_payload;
  s_out *res;          /* u->h.nitems outcomes */
  atomic_int state;
  _Atomic int64_t cur_t0;
  br_future *done;     /* the job's reference */
} s_run;

/* One call of a job function, as a fork child. */
typedef struct s_call {
  br_job_fn fn;
  const void *in;
  size_t len;
  br_bytes out;
  int rc;
} s_call;

static serve *g_srv; /* for the signal handler */
static volatile sig_atomic_t g_in_job;
static volatile uint64_t g_unit, g_item;

/* ---- MPI under the lock */

static int send_msg(serve *s, int tag, const void *p, size_t n) {
  pthread_mutex_lock(&s->mpi_mu);
  int r = MPI_Send(p, (int)n, MPI_BYTE, 0, tag, s->comm);
  pthread_mutex_unlock(&s->mpi_mu);
  return r == MPI_SUCCESS ? 0 : br__mpi_err(r, "MPI_Send");
}

/* ---- fatal signals */

static const int fatal_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
#define NFATAL (sizeof fatal_sigs / sizeof *fatal_sigs)
static struct sigaction old_act[NFATAL];

static void put_str(char *b, size_t *n, size_t cap, const char *s) {
  while (*s && *n + 1 < cap) b[(*n)++] = *s++;
  b[*n] = 0;
}

static void put_num(char *b, size_t *n, size_t cap, long long v) {
  char t[24];
  int i = 0;
  if (v < 0) {
    put_str(b, n, cap, "-");
    v = -v;
  }
  do t[i++] = (char)('0' + v % 10); while ((v /= 10) && i < 23);
  while (i && *n + 1 < cap) b[(*n)++] = t[--i];
  b[*n] = 0;
}

static void on_fatal(int sig, siginfo_t *si, void *uc) {
  (void)si;
  (void)uc;
  serve *s = g_srv;
  if (s && g_in_job && pthread_mutex_trylock(&s->mpi_mu) == 0) {
    w_died d = {.sig = sig, .why = DIED_SIGNAL, .unit = g_unit, .item = g_item};
    MPI_Send(&d, (int)sizeof d, MPI_BYTE, 0, T_DIED, s->comm);
    /* Keep the lock: nothing else may use MPI in a dying process. */
    char b[160];
    size_t n = 0;
    put_str(b, &n, sizeof b, "mpi: rank ");
    put_num(b, &n, sizeof b, s->rank);
    put_str(b, &n, sizeof b, ": a job got signal ");
    put_num(b, &n, sizeof b, sig);
    put_str(b, &n, sizeof b, "; the rank ends");
    br__mplog_raw(BR_LOG_ERROR, b);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void install_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < NFATAL; i++) sigaction(fatal_sigs[i], &sa, &old_act[i]);
}

static void remove_handlers(void) {
  for (size_t i = 0; i < NFATAL; i++) sigaction(fatal_sigs[i], &old_act[i], NULL);
}

static void *call_fn(void *arg) {
  s_call *c = arg;
  g_in_job = 1;
  c->rc = c->fn(c->in, c->len, &c->out);
  g_in_job = 0;
  return NULL;
}

/* The pool job: run the unit's items in order (on the pool's worker). */
static void *unit_fn(void *arg) {
  s_run *r = arg;
  br_future *done = r->done;
  const s_unit *u = r->u;
  int expect = R_NEW;
  bool run = atomic_compare_exchange_strong(&r->state, &expect, R_RUN);
  size_t off = 0;
  for (size_t i = 0; i < u->h.nitems; i++) {
    s_out *o = &r->res[i];
    const char *in = u->data + off;
    size_t len = (size_t)u->lens[i];
    off += len;
    if (!r->fn) {
      o->h.err = BR_ENOJOB;
      continue;
    }
    if (!run || br_cancelled()) {
      o->h.err = BR_ECANCELED;
      continue;
    }
    g_unit = u->h.id;
    g_item = i;
    s_call c = {.fn = r->fn, .in = in, .len = len};
    br_result res = {0};
    int64_t t0 = br_now();
    atomic_store(&r->cur_t0, t0);
    br_fork fk;
    int rc = br_pool_fork(&fk, call_fn, &c);
    if (rc == 0) br_pool_join_result(&fk, &res);
    else res.err = rc;
    int64_t t1 = br_now();
    atomic_store(&r->cur_t0, 0);
    int err = c.rc < 0 ? c.rc : res.err < 0 ? res.err : 0;
    char *msg = res.msg; /* br_fail's, taken over */
    o->b = c.out;
    o->h.ns = t1 - t0;
    if (err == 0 && br_cancelled()) err = BR_ECANCELED; /* its result is not wanted */
    if (err == 0 && u->h.timeout_ns > 0 && t1 - t0 > u->h.timeout_ns) err = BR_ETIMEDOUT;
    if (err == BR_ETIMEDOUT) {
      free(msg);
      if (asprintf(&msg, "job '%s' ran %.1f ms, over its timeout of %.1f ms", r->name,
                   (double)(t1 - t0) / 1e6, (double)u->h.timeout_ns / 1e6) < 0)
        msg = NULL;
    } else if (err == 0 && o->b.len > r->max_payload) {
      /* Said as the local process pool says it: a bare BR_E2BIG does not
       * tell which limit the job ran into. */
      err = BR_E2BIG;
      free(msg);
      if (asprintf(&msg, "result of %zu bytes is over the pool's limit of %zu", o->b.len,
                   r->max_payload) < 0)
        msg = NULL;
    }
    o->h.err = err;
    if (err) {
      br_bytes_clear(&o->b);
      o->msg = msg;
      o->h.msglen = msg ? (uint32_t)strnlen(msg, MP_MSG_MAX) : 0;
    } else {
      free(msg);
      o->h.len = o->b.len;
    }
  }
  /* The last touch of r: after this the rank thread may release it. */
  br_future_set(done, NULL);
  br_future_unref(done);
  return NULL;
}

/* ---- receiving */

static void send_skipped(serve *s, uint64_t id) {
  w_result r = {.id = id, .nitems = 0, .skipped = 1};
  send_msg(s, T_RESULT, &r, sizeof r);
}

static int take_work(serve *s, const char *p, size_t n) {
  uint32_t count;
  if (n < sizeof count) return BR_EIO;
  memcpy(&count, p, sizeof count);
  size_t off = sizeof count;
  for (uint32_t k = 0; k < count; k++) {
    s_unit *u = calloc(1, sizeof *u);
    if (!u || off + sizeof u->h > n) {
      free(u);
      return u ? BR_EIO : BR_ENOMEM;
    }
    memcpy(&u->h, p + off, sizeof u->h);
    off += sizeof u->h;
    size_t ni = u->h.nitems, total = 0;
    u->lens = malloc((ni ? ni : 1) * sizeof *u->lens);
    if (!u->lens || off + ni * sizeof *u->lens > n) {
      free(u->lens);
      free(u);
      return BR_EIO;
    }
    memcpy(u->lens, p + off, ni * sizeof *u->lens);
    off += ni * sizeof *u->lens;
    for (size_t i = 0; i < ni; i++) total += u->lens[i];
    if (off + total > n || !(u->data = malloc(total ? total : 1))) {
      free(u->lens);
      free(u);
      return BR_EIO;
    }
    memcpy(u->data, p + off, total);
    off += total;
    if (s->tail) s->tail->next = u;
    else s->head = u;
    s->tail = u;
  }
  return 0;
}

static void free_unit(s_unit *u) {
  free(u->lens);
  free(u->data);
  free(u);
}

static void take_cancel(serve *s, const char *p, size_t n) {
  for (size_t off = 0; off + sizeof(uint64_t) <= n; off += sizeof(uint64_t)) {
    uint64_t id;
    memcpy(&id, p + off, sizeof id);
    if (s->run_unit == id) s->cancel_run = true;
    for (s_unit **pp = &s->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
      if ((*pp)->h.id != id) continue;
      s_unit *u = *pp;
      *pp = u->next;
      if (s->tail == u) s->tail = prev;
      free_unit(u);
      send_skipped(s, id);
      break;
    }
  }
}

/* Receive every message that has arrived; true if any did. */
static bool poll_msgs(serve *s) {
  bool any = false;
  for (;;) {
    int flag = 0;
    MPI_Status st;
    pthread_mutex_lock(&s->mpi_mu);
    int r = MPI_Iprobe(0, MPI_ANY_TAG, s->comm, &flag, &st);
    if (r != MPI_SUCCESS || !flag) {
      pthread_mutex_unlock(&s->mpi_mu);
      if (r != MPI_SUCCESS) {
        br__mpi_err(r, "MPI_Iprobe");
        s->stop = true;
      }
      return any;
    }
    int cnt = 0;
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    char *buf = malloc(cnt ? (size_t)cnt : 1);
    if (!buf) {
      pthread_mutex_unlock(&s->mpi_mu);
      br__mplog(BR_LOG_ERROR, "mpi: rank %d: out of memory receiving %d bytes", s->rank, cnt);
      s->stop = true;
      return any;
    }
    r = MPI_Recv(buf, cnt, MPI_BYTE, 0, st.MPI_TAG, s->comm, MPI_STATUS_IGNORE);
    pthread_mutex_unlock(&s->mpi_mu);
    any = true;
    if (r != MPI_SUCCESS) {
      br__mpi_err(r, "MPI_Recv");
      s->stop = true;
    } else if (st.MPI_TAG == T_WORK) {
      if (take_work(s, buf, (size_t)cnt) < 0) {
        br__mplog(BR_LOG_ERROR, "mpi: rank %d: malformed work message", s->rank);
        s->stop = true;
      }
    } else if (st.MPI_TAG == T_CANCEL) {
      take_cancel(s, buf, (size_t)cnt);
    } else if (st.MPI_TAG == T_STOP) {
      s->stop = true;
    }
    free(buf);
  }
}

/* ---- running */

static void sleep_ns(int64_t ns) {
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  nanosleep(&ts, NULL);
}

static bool poll_msgs(serve *s);

#define SPIN_NS (50 * 1000)

static void overrun_exit(serve *s, int64_t overrun_ns) {
  w_died d = {.why = DIED_OVERRUN, .unit = s->run_unit, .item = g_item, .overrun_ns = overrun_ns};
  br__mplog(BR_LOG_ERROR,
            "mpi: rank %d: a job ran %.1f s past its timeout or cancellation; the rank ends",
            s->rank, (double)overrun_ns / 1e9);
  pthread_mutex_lock(&s->mpi_mu);
  MPI_Send(&d, (int)sizeof d, MPI_BYTE, 0, T_DIED, s->comm);
  _exit(124);
}

/* Run unit u's items on the pool's worker (res: nitems outcomes); meanwhile
 * receive, beat, and watch for a cancellation or the item's timeout. */
static void exec_unit(serve *s, const s_unit *u, br_job_fn fn, const char *name, s_out *res) {
  s_run r = {.u = u, .fn = fn, .name = name, .max_payload = s->o->max_payload, .res = res};
  atomic_init(&r.state, R_NEW);
  atomic_init(&r.cur_t0, 0);
  br_future *done = NULL, *job = NULL;
  if (br_future_new(&done) < 0) goto lost;
  r.done = br_future_ref(done);
  if (br_pool_submit(s->pool, &job, unit_fn, &r) < 0) {
    br_future_unref(r.done);
    goto lost;
  }
  int64_t last_beat = br_now(), asked = 0;
  /* Short units: look for the end for a moment before sleeping on it (a
   * sleeping thread takes 5-30 us to wake, the cost of a small job). */
  for (int64_t until = last_beat + SPIN_NS; !br_future_done(done) && br_now() < until;)
    sched_yield();
  for (;;) {
    /* (br_await_until, not br_future_wait_for: that one cancels on timeout.) */
    if (br_await_until(done, NULL, br_now() + 10 * 1000 * 1000) != BR_ETIMEDOUT) break;
    int64_t now = br_now();
    poll_msgs(s);
    if (now - last_beat >= s->o->heartbeat_ns) {
      last_beat = now;
      send_msg(s, T_BEAT, NULL, 0);
    }
    int64_t t0 = atomic_load(&r.cur_t0);
    bool late = u->h.timeout_ns > 0 && t0 && now - t0 > u->h.timeout_ns;
    if (!asked && (s->cancel_run || late)) {
      asked = now;
      int expect = R_NEW;
      if (!atomic_compare_exchange_strong(&r.state, &expect, R_DROP))
        br_future_cancel(job); /* running: br_cancelled() turns true in it */
    }
    if (asked && s->o->kill_after_ns >= 0 && now - asked >= s->o->kill_after_ns)
      overrun_exit(s, now - asked);
  }
  br_future_unref(job);
  br_future_unref(done);
  return;
lost:
  br_future_unref(done);
  for (size_t i = 0; i < u->h.nitems; i++) res[i].h.err = BR_ENOMEM;
}

/* Send unit u's outcomes res (NULL: none could be had). Items go in order,
 * as many per RESULT as fit in s->part_max bytes: a chunk whose results add
 * up to more than one MPI message holds is split, so every item within
 * max_payload arrives, however many share its chunk (as in the local
 * process pool, which has no such limit). Each part's bytes are released
 * once it is sent. */
static void send_results(serve *s, const s_unit *u, s_out *res) {
  size_t ni = u->h.nitems, i = 0;
  do {
    size_t j = i, bytes = sizeof(w_result);
    while (res && j < ni) {
      size_t one = sizeof(w_item) + res[j].h.len + res[j].h.msglen;
      if (j > i && bytes + one > s->part_max) break;
      bytes += one;
      j++;
    }
    w_result r = {.id = u->h.id, .nitems = (uint32_t)(j - i), .first = (uint32_t)i,
                  .more = j < ni};
    mp_buf m = {0};
    int prc = res ? mp_buf_put(&m, &r, sizeof r) : BR_ENOMEM;
    for (size_t k = i; k < j && prc == 0; k++) prc = mp_buf_put(&m, &res[k].h, sizeof res[k].h);
    for (size_t k = i; k < j && prc == 0; k++) {
      if (res[k].h.len) prc = mp_buf_put(&m, res[k].b.data, res[k].h.len);
      if (prc == 0 && res[k].h.msglen) prc = mp_buf_put(&m, res[k].msg, res[k].h.msglen);
    }
    if (prc < 0) {
      /* Out of memory: the items not sent yet are reported lost (rank 0
       * keeps what earlier parts delivered) rather than nothing. */
      mp_buf_free(&m);
      w_result e = {.id = u->h.id, .nitems = 0, .skipped = 2, .first = (uint32_t)i};
      send_msg(s, T_RESULT, &e, sizeof e);
      return;
    }
    send_msg(s, T_RESULT, m.p, m.len);
    mp_buf_free(&m);
    for (size_t k = i; k < j; k++) {
      br_bytes_clear(&res[k].b);
      free(res[k].msg);
      res[k].msg = NULL;
    }
    i = j;
  } while (i < ni);
}

static void run_unit(serve *s, s_unit *u) {
  size_t ni = u->h.nitems;
  s_out *res = calloc(ni ? ni : 1, sizeof *res);
  const br_job_desc *d = br_job_at(u->h.job);
  s->run_unit = u->h.id;
  s->cancel_run = false;
  if (res) exec_unit(s, u, d ? d->fn : NULL, d ? d->name : "?", res);
  s->run_unit = 0;
  send_results(s, u, res);
  for (size_t i = 0; res && i < ni; i++) {
    br_bytes_clear(&res[i].b);
    free(res[i].msg);
  }
  free(res);
}

/* ---- the initializer and HELLO */

static int run_init(serve *s, char **msg) {
  *msg = NULL;
  if (!s->o->initializer) return 0;
  const br_job_desc *d = br_job_find(s->o->initializer);
  if (!d) return BR_ENOJOB;
  uint64_t len = s->o->init_arg_len;
  s_unit u = {.h = {.nitems = 1}, .lens = &len, .data = (char *)s->o->init_arg};
  s_out res = {0};
  exec_unit(s, &u, d->fn, d->name, &res);
  br_bytes_clear(&res.b);
  *msg = res.msg;
  return res.h.err;
}

int br__mpi_serve(MPI_Comm comm, const mp_opts *o) {
  serve s = {.comm = comm, .o = o, .part_max = part_max_bytes()};
  MPI_Comm_rank(comm, &s.rank);
  pthread_mutex_init(&s.mpi_mu, NULL);

  /* Rank 0's identity, for noticing that it is gone. */
  struct {
    int32_t pid;
    char host[MP_HOST_MAX];
  } rootid;
  int r = MPI_Bcast(&rootid, (int)sizeof rootid, MPI_BYTE, 0, comm);
  if (r != MPI_SUCCESS) return br__mpi_err(r, "MPI_Bcast");
  char myhost[MP_HOST_MAX];
  br__mpi_hostname(myhost, sizeof myhost);
  br__mpfd_init(&s.root, rootid.pid, rootid.host, myhost, br_now());

  br_pool_opts po = {.name = "mpi-job"};
  int rc = br_pool_new(&s.pool, 1, &po);
  if (rc < 0) {
    pthread_mutex_destroy(&s.mpi_mu);
    return rc;
  }
  char *imsg = NULL;
  int ierr = run_init(&s, &imsg);
  mp_buf h = {0};
  w_hello hello = {.version = MP_WIRE_VERSION, .njobs = (uint32_t)br_job_count(),
                   .table_hash = br__mpi_table_hash(), .pid = (int32_t)getpid(),
                   .init_err = ierr, .msglen = imsg ? (uint32_t)strnlen(imsg, MP_MSG_MAX) : 0};
  memcpy(hello.host, myhost, sizeof hello.host);
  if (mp_buf_put(&h, &hello, sizeof hello) < 0 || (imsg && mp_buf_put(&h, imsg, hello.msglen) < 0)) {
    free(imsg);
    mp_buf_free(&h);
    br_pool_free(s.pool);
    return BR_ENOMEM;
  }
  free(imsg);
  rc = send_msg(&s, T_HELLO, h.p, h.len);
  mp_buf_free(&h);
  if (rc < 0) {
    br_pool_free(s.pool);
    return rc;
  }

  g_srv = &s;
  install_handlers();

  int64_t backoff = 0, last_work = br_now(), last_probe = last_work;
  while (!s.stop) {
    bool got = poll_msgs(&s);
    if (s.head) {
      s_unit *u = s.head;
      s.head = u->next;
      if (!s.head) s.tail = NULL;
      run_unit(&s, u);
      free_unit(u);
      backoff = 0;
      last_work = br_now();
      continue;
    }
    if (s.stop) break;
    int64_t now = br_now();
    if (got) {
      backoff = 0;
      last_work = now;
      continue;
    }
    if (now - last_probe > MP_FD_PERIOD_NS * 10) {
      last_probe = now;
      if (br__mpfd_root_gone(&s.root)) {
        br__mplog(BR_LOG_ERROR, "mpi: rank %d: rank 0 (pid %d) is gone; this rank stops serving",
                s.rank, s.root.pid);
        break;
      }
    }
    int64_t cap = now - last_work > 1000000000 ? 5000000 : 1000000;
    backoff = backoff < 1000 ? 1000 : backoff * 2;
    if (backoff > cap) backoff = cap;
    sleep_ns(backoff);
  }

  /* Drop what was queued (after STOP, rank 0 expects nothing more). */
  while (s.head) {
    s_unit *u = s.head;
    s.head = u->next;
    free_unit(u);
  }
  remove_handlers();
  br_pool_free(s.pool);
  g_srv = NULL;
  pthread_mutex_destroy(&s.mpi_mu);
  return 0;
}
