/* SPDX-License-Identifier: MIT */
/* braid — process pool: what the parent, the fork server and the workers
 * share. Internal.
 *
 * Three kinds of shared memory, all memfds mapped MAP_SHARED:
 *
 *  - The pool page (pp_pool_shm): created by the parent, passed to the fork
 *    server with each worker start and mapped by the worker (the server
 *    never maps it: it serves many pools, and a worker must not reach
 *    another pool's page). It holds the configuration workers need
 *    (limits, initializer and its argument) and the manager's "sleeping"
 *    flag.
 *  - One slot region per worker incarnation (pp_slot_shm + two rings),
 *    created by the parent before it asks the server for the worker, so the
 *    parent may queue jobs into it before the worker even exists.
 *  - A memfd per large payload or result, passed over the slot's socketpair
 *    with SCM_RIGHTS.
 *
 * The request ring (parent -> worker) and the result ring (worker -> parent)
 * are single-producer single-consumer byte rings of 8-aligned records. Every
 * position is an absolute byte count (never wraps in practice); a record that
 * would straddle the end is preceded by a PAD record.
 *
 * Request ring ownership: the parent writes records (under the pool mutex)
 * and publishes `head`; the worker reads with its own cursor. The parent
 * frees a request's space only when it has consumed that request's result,
 * so a dispatched request's bytes stay valid for the parent (to set its
 * cancel bit, or to copy it back out and requeue it) for as long as the
 * parent tracks the job. Requests taken back leave no result: their space
 * is reclaimed when a later request's result is consumed, or, once the
 * parent tracks no request in the ring, up to the worker's published read
 * position (`tail`, stored after each request it ran or skipped).
 *
 * Result ring: the worker writes and publishes `head`; the manager thread
 * copies each result out, then advances `tail`.
 *
 * Sleeping and waking (Linux futexes on shared memory, so no _PRIVATE ops):
 *  - The worker, finding no request, spins briefly, then announces itself in
 *    req.cons_wait and sleeps on req.cons_seq; the producer, after publishing,
 *    bumps cons_seq and wakes it only if cons_wait is set. A busy worker thus
 *    costs the submitter no system call at all.
 *  - The worker, finding the result ring full, sleeps the same way on
 *    res.prod_seq; the manager wakes it after freeing space.
 *  - The manager sleeps in epoll_wait on an eventfd; pool.mgr_sleeping tells
 *    workers whether a write(eventfd) is needed after a result.
 * Each pair is a Dekker handshake (store flag; full fence; check the other
 * side), so a wake-up can be redundant but never lost.
 *
 * The start-of-job claim (no job is run twice, none is lost): a request's
 * `cancel` word holds three bits. The worker, before running a request,
 * sets PP_C_STARTED with one atomic fetch-or and skips the request, without
 * a result, if PP_C_TAKEN was already set. The parent takes a request back
 * (from a worker that died, or from a busy worker's ring for an idle one:
 * procpool_slot.c, rebalancing) by setting PP_C_TAKEN the same way: if
 * PP_C_STARTED was already set, the job counts as started (it runs on, or
 * fails with the dead worker); otherwise the worker can never start it and
 * the parent owns it again. Both read-modify-writes hit one word, so exactly
 * one side wins. PP_C_CANCEL is the job's future being cancelled: the worker
 * skips the job with BR_ECANCELED, and br_cancelled() reads it while it runs.
 * The worker also stores started_seq and item_start_ns for the timeouts and
 * its read position in the request ring's tail, which the parent uses to
 * reclaim the space of requests it took back (all three are worker-written,
 * so the parent never trusts them beyond bounds it checks).
 *
 * Everything a worker writes is hostile to the parent: a job may corrupt its
 * own process's memory. procpool_decode.h says how results are checked.
 */
#ifndef BRAID_EXEC_PROCPOOL_SHM_H
#define BRAID_EXEC_PROCPOOL_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "sys/clock.h"
#include "sys/futex.h"
#include "sys/spin.h"

/* The start marker: "3:<key in hex>" for the fork server (its socket on
 * fd 3), "w:<server pid>:<key in hex>" for a worker the server exec'd.
 * Every worker, forked or exec'd, starts with the pool page, eventfd, slot
 * region and slot socket on fds 3 to 6 and, if the pool has one, its
 * working directory on fd 7 (PP_W_FD_*), and nothing else open.
 * procpool_server.c checks it before anything runs. */
#define PP_ENV "BRAID_PROCPOOL_SERVER"
#define PP_CTL_FD 3
#define PP_KEY_LEN 32
enum { PP_W_FD_POOL = 3, PP_W_FD_EFD, PP_W_FD_SLOT, PP_W_FD_SOCK, PP_W_FD_CWD };
#define PP_MAX_FDS 5 /* descriptors one message carries at most */

#define PP_RING_CAP ((uint64_t)512 << 10) /* bytes per ring, power of two */
#define PP_INLINE_MAX ((size_t)32 << 10)  /* larger payloads go by memfd */
#define PP_MSG_MAX 1024                   /* job error messages, bytes */
#define PP_SPIN_NS 30000                  /* spin this long before sleeping */

/* Worker exit status that means "the initializer failed". */
#define PP_EXIT_INIT_FAILED 121

/* ---- records */

enum { PP_PAD = 1, PP_REQ = 2, PP_RES = 3 };
enum {
  PP_F_FD = 1,    /* payload (request) / item data or chunk payload (result)
                     is in a memfd sent on the slot socket just before */
  PP_F_CHUNK = 2, /* several items: see the chunk layouts below */
  PP_F_BLOCKED = 4 /* result: a job of 50 us or more, off a CPU most of its run */
};

/* pp_rec.cancel bits (requests; the start-of-job claim above). */
enum { PP_C_CANCEL = 1, PP_C_TAKEN = 2, PP_C_STARTED = 4 };

typedef struct pp_rec {
  uint32_t size;  /* whole record, header included, multiple of 8 */
  uint16_t kind;  /* PP_* */
  uint16_t flags; /* PP_F_* */
  _Atomic uint32_t cancel; /* requests: PP_C_* bits */
  uint32_t job;   /* registry index */
  uint64_t seq;   /* request sequence within the slot incarnation, from 1 */
  uint64_t len;   /* payload bytes (inline after the header unless PP_F_FD) */
  uint64_t run_ns; /* results: time the worker spent running the job(s) */
  uint64_t cpu_ns; /* results: CPU time they used (procpool_worker.c, worker_acct) */
} pp_rec;

/* A chunk request's payload starts with this header; then, unless every item
 * has item_size bytes (PP_CHUNK_FIXED), count uint64_t lengths; then the
 * items' bytes back to back. */
enum { PP_CHUNK_FIXED = 1 };
typedef struct pp_chunk_hdr {
  uint32_t count;
  uint32_t flags;
  uint64_t item_size;
} pp_chunk_hdr;

/* A result payload is a sequence of entries, one per item: this header,
 * `len` data bytes, `msglen` message bytes, zero padding to 8. For a
 * single-item result with PP_F_FD, the data bytes are in the memfd instead
 * (the entry is still inline, with its message). */
typedef struct pp_entry {
  int32_t err;
  uint32_t msglen;
  uint64_t len;
} pp_entry;

static inline uint64_t pp_align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

/* ---- rings */

typedef struct pp_ring {
  _Alignas(64) _Atomic uint64_t head; /* producer: bytes published */
  _Atomic uint32_t prod_wait;         /* producer sleeps for space */
  _Atomic uint32_t prod_seq;
  _Alignas(64) _Atomic uint64_t tail; /* consumer: bytes freed */
  _Atomic uint32_t cons_wait;         /* consumer sleeps for data */
  _Atomic uint32_t cons_seq;
  _Alignas(64) unsigned char data[];  /* PP_RING_CAP bytes follow */
} pp_ring;

/* Worker states in pp_slot_shm.state. PP_W_FDS_LOST: the worker found its
 * eventfd or slot socket closed or replaced by a job and exited (it can no
 * longer wake the manager or pass memfds). */
enum { PP_W_STARTING = 0, PP_W_READY = 1, PP_W_RETIRING = 2, PP_W_INIT_FAILED = 3,
       PP_W_FDS_LOST = 4 };

/* The control part of a slot region. */
typedef struct pp_slot_shm {
  _Atomic uint64_t started_seq;   /* last request the worker started */
  _Atomic uint32_t cur_item;      /* item of it being run */
  _Atomic uint32_t state;         /* PP_W_* */
  _Atomic int64_t item_start_ns;  /* when cur_item started (CLOCK_MONOTONIC) */
  int32_t init_err;
  char init_msg[PP_MSG_MAX];
} pp_slot_shm;

#define PP_SLOT_CTL_SIZE 4096
#define PP_RING_SIZE (sizeof(pp_ring) + PP_RING_CAP)
#define PP_SLOT_SIZE (PP_SLOT_CTL_SIZE + 2 * PP_RING_SIZE)

static inline pp_ring *pp_slot_req(void *base) {
  return (pp_ring *)((char *)base + PP_SLOT_CTL_SIZE);
}
static inline pp_ring *pp_slot_res(void *base) {
  return (pp_ring *)((char *)base + PP_SLOT_CTL_SIZE + PP_RING_SIZE);
}

/* The pool page. */
typedef struct pp_pool_shm {
  _Alignas(64) _Atomic uint32_t mgr_sleeping;
  _Alignas(64) uint64_t max_jobs;     /* per worker, 0: unlimited */
  uint64_t mem_limit;
  uint64_t cpu_limit_s;
  uint64_t max_payload;
  int32_t init_job;                   /* registry index, -1: none */
  uint32_t pad;
  uint64_t init_arg_len;              /* bytes after this struct */
  uint8_t key[32];                    /* the process's start key (procpool_server.c) */
} pp_pool_shm;

#define PP_POOL_SHM_HDR 4096

/* ---- control messages (SOCK_SEQPACKET)
 *
 * The fork server is one per parent process, shared by all its pools
 * (procpool_spawn.c). Two kinds of connection reach it:
 *  - the server's own socket (fd 3 in the server), made when the server is
 *    started: CONFIG first, then one ATTACH per pool; the server sends
 *    nothing on it. When the parent's end closes (the parent exited or
 *    exec'd), the server kills every worker and exits.
 *  - one connection per pool, whose server end travels in ATTACH: the pool
 *    asks for workers (START), kills them (KILL) and finally STOPs; the
 *    server says HELLO once, then reports STARTED / START_FAILED / EXITED
 *    for that pool's workers only. On STOP it SIGKILLs the pool's workers,
 *    reaps them and closes the connection: the pool's end reading EOF means
 *    none of its processes is left. If the pool's end closes without STOP,
 *    the server kills that pool's workers and forgets them. */

enum {
  PP_M_CONFIG = 1,  /* parent -> server socket: the key; no fds */
  PP_M_START,       /* pool -> server; fds: pool page, eventfd, slot region, worker
                       socket, and the pool's working directory if it has one */
  PP_M_KILL,        /* pool -> server */
  PP_M_STARTED,     /* server -> pool: pid */
  PP_M_START_FAILED,/* server -> pool: err */
  PP_M_EXITED,      /* server -> pool: pid, wait status */
  PP_M_HELLO,       /* server -> pool: attached and ready; pid: the server's */
  PP_M_ATTACH,      /* parent -> server socket; fd: the server end of a pool's connection */
  PP_M_STOP         /* pool -> server: kill and reap my workers, then close */
};

typedef struct pp_msg {
  uint32_t type;
  uint32_t slot;
  uint64_t gen;
  int32_t pid;
  int32_t status;
  int32_t err;
  int32_t pad;
} pp_msg;

/* PP_M_CONFIG: the first message, with the key the marker named. */
typedef struct pp_config_msg {
  pp_msg m;
  uint8_t key[PP_KEY_LEN];
} pp_config_msg;

/* ---- helpers */

static inline int64_t pp_now(void) { return br__mono_ns(); }

/* A full fence, for the Dekker handshakes above. GCC's ThreadSanitizer
 * refuses atomic_thread_fence; under it a seq_cst read-modify-write (a full
 * barrier on x86-64 and aarch64 as compiled) stands in. TSan only sees this
 * process's side of a handshake anyway: the other side is another process. */
static inline void pp_fence(void) {
#ifdef BRAID_TSAN
  static _Atomic int pp_fence_word;
  atomic_fetch_add_explicit(&pp_fence_word, 0, memory_order_seq_cst);
#else
  atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline void pp_cpu_relax(void) { br__cpu_pause(); }

/* Shared futexes: the words live in memory shared with the workers. */
static inline void pp_futex_wait(_Atomic uint32_t *w, uint32_t val, const struct timespec *ts) {
  (void)br__futex_wait(w, val, ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1, true);
}

static inline void pp_futex_wake(_Atomic uint32_t *w) { br__futex_wake(w, 1, true); }

/* Wake the side sleeping on (flag, seq) if it announced it. Call after
 * publishing. */
static inline void pp_notify(_Atomic uint32_t *flag, _Atomic uint32_t *seq) {
  pp_fence();
  if (atomic_load_explicit(flag, memory_order_relaxed)) {
    atomic_fetch_add_explicit(seq, 1, memory_order_seq_cst);
    pp_futex_wake(seq);
  }
}

/* Reserve `need` bytes (multiple of 8) for a record at position *pos of a
 * ring whose free-space limit is `limit` (the consumer's tail + capacity).
 * Writes a PAD record if the record would straddle the end. Returns the
 * record's address and sets *end to the position after it, or NULL if it
 * does not fit. The caller fills the record, then stores head = *end. */
static inline pp_rec *pp_ring_reserve(pp_ring *r, uint64_t pos, uint64_t limit, uint64_t need,
                                      uint64_t *end) {
  uint64_t off = pos & (PP_RING_CAP - 1);
  uint64_t pad = off + need > PP_RING_CAP ? PP_RING_CAP - off : 0;
  if (pos + pad + need > limit) return NULL;
  if (pad) {
    pp_rec *p = (pp_rec *)(r->data + off);
    p->size = (uint32_t)pad;
    p->kind = PP_PAD;
    pos += pad;
    off = 0;
  }
  *end = pos + need;
  return (pp_rec *)(r->data + off);
}

/* The record at position pos (skipping a PAD), or NULL if none is published
 * yet. *pos is advanced past the PAD. */
static inline pp_rec *pp_ring_peek(pp_ring *r, uint64_t *pos) {
  for (;;) {
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (*pos == head) return NULL;
    pp_rec *rec = (pp_rec *)(r->data + (*pos & (PP_RING_CAP - 1)));
    if (rec->kind == PP_PAD) {
      *pos += rec->size;
      continue;
    }
    return rec;
  }
}

/* Sending and receiving a message with up to PP_MAX_FDS descriptors attached
 * (SCM_RIGHTS) on a socket (procpool_fdpass.c). 0 / the bytes received, or
 * a negative code. */
int br__pp_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);
int br__pp_recv_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags);
/* br__pp_recv_fds that also says (*truncated) whether the kernel dropped
 * descriptors of the message (MSG_CTRUNC), as it does when the receiver has
 * no free descriptor number left. */
int br__pp_recv_fds_ex(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags,
                       bool *truncated);

#endif
