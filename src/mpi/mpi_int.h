/* SPDX-License-Identifier: MIT */
/* braid-mpi — internals shared by init.c, root.c, serve.c and fd.c.
 *
 * Roles. Rank 0 holds the pool (root.c): submitters on any thread queue
 * work under the pool's mutex; one progress thread makes every MPI call,
 * hands work to ranks that have room, receives results and completes the
 * futures. Every other rank runs serve.c: the rank's thread receives
 * work, sends results, heartbeats and watches timeouts; a one-thread braid
 * CPU pool runs the units in order. With one rank, root.c forwards
 * everything to a br_procpool (the fallback).
 *
 * The wire. Every message is MPI_BYTE on the pool's own
 * communicator (a dup of MPI_COMM_WORLD); its tag says what it is. All
 * integers are in the sender's byte order: every rank runs the same
 * program image, hence the same architecture.
 *   HELLO  worker -> root, once: w_hello + init message
 *   WORK   root -> worker: u32 count, then count units, each w_unit, then
 *          nitems u64 lengths, then the items' bytes back to back
 *   CANCEL root -> worker: u64 unit ids (drop them if not started, or make
 *          br_cancelled() true in the job running them)
 *   STOP   root -> worker: nothing; the rank returns from br_mpipool_new
 *   RESULT worker -> root: one unit, or part of one: w_result, then nitems
 *          w_item, then each item's bytes followed by its message. MPI
 *          counts a message's bytes in an int, so a unit whose results add
 *          up to more than MP_PART_MAX comes back in several RESULTs, in
 *          item order (first: the index of the part's first item; more: 1
 *          on every part but the last). One item always fits: max_payload
 *          is at most 1 GiB.
 *   BEAT   worker -> root: nothing (alive while busy)
 *   DIED   worker -> root, from the rank's fatal-signal handler or its
 *          watchdog just before it ends: w_died
 *
 * Flow control. The root gives each rank at most `depth` units at a time
 * (its credits); each RESULT returns one credit, so ranks in effect ask for
 * work as they finish it. depth adapts to the measured unit time (deep for
 * tiny jobs so no rank waits for a round trip, 2 for long ones so the
 * queue stays balanced).
 *
 * Failure detection lives in fd.c only (see there): a ULFM build would
 * replace its probes with MPI_ERR_PROC_FAILED / MPIX_Comm_agree.
 */
#ifndef BRAID_MPI_INT_H
#define BRAID_MPI_INT_H

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "braid.h"
#include "braid/mpi.h"

/* Milliseconds (>= 0) as nanoseconds, saturating: a timeout of "years"
 * (INT64_MAX as "never") must stay a long time, not wrap to a negative or
 * tiny one. */
static inline int64_t br__mp_ms_ns(int64_t ms) {
  return ms > INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000;
}

#define MP_WIRE_VERSION 2
#define MP_HOST_MAX 64
#define MP_MSG_MAX 1024
#define MP_PART_MAX ((size_t)INT32_MAX) /* the most bytes of one RESULT message */

enum { T_HELLO = 1, T_WORK, T_CANCEL, T_STOP, T_RESULT, T_BEAT, T_DIED };

typedef struct w_hello {
  uint32_t version;
  uint32_t njobs;
  uint64_t table_hash; /* FNV-1a over the sorted job names */
  int32_t pid;
  int32_t init_err;    /* the initializer's code, 0 if none or it succeeded */
  uint32_t msglen;     /* the initializer's message follows */
  uint32_t pad;
  char host[MP_HOST_MAX];
} w_hello;

typedef struct w_unit {
  uint64_t id;
  uint32_t job;
  uint32_t nitems;
  int64_t timeout_ns;  /* per item; 0: none */
} w_unit;

typedef struct w_result {
  uint64_t id;
  uint32_t nitems;     /* items in this message */
  uint32_t skipped;    /* 1: cancelled before it started, 2: out of memory; no
                          items follow, this ends the unit */
  uint32_t first;      /* the unit's index of this message's first item */
  uint32_t more;       /* 1: another RESULT of the unit follows */
} w_result;

typedef struct w_item {
  int32_t err;
  uint32_t msglen;
  uint64_t len;
  int64_t ns;          /* how long the item ran */
} w_item;

typedef struct w_died {
  int32_t sig;         /* the signal, or 0 */
  int32_t why;         /* DIED_SIGNAL, DIED_OVERRUN */
  uint64_t unit;       /* the unit running, or 0 */
  uint64_t item;
  int64_t overrun_ns;
} w_died;

enum { DIED_SIGNAL = 1, DIED_OVERRUN = 2 };

/* ---- init.c */
int br__mpi_ensure_init(int *argc, char ***argv);
bool br__mpi_single(void);       /* no MPI: one rank */
void br__mpi_saw_death(void);    /* a rank died: bounds MPI_Finalize */
int br__mpi_thread_level(void);
uint64_t br__mpi_table_hash(void);
void br__mpi_hostname(char *buf, size_t n);
/* braid's log (see init.c). */
void br__mplog(br_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void br__mplog_raw(br_log_level level, const char *msg); /* async-signal-safe */
/* Map an MPI error code to a braid code, logging what MPI says. */
int br__mpi_err(int mpirc, const char *what);

/* ---- a growable byte buffer for packing messages (init.c) */
typedef struct mp_buf {
  char *p;
  size_t len, cap;
} mp_buf;
int mp_buf_put(mp_buf *b, const void *p, size_t n);
void mp_buf_free(mp_buf *b);

/* ---- options after defaults */
typedef struct mp_opts {
  const char *initializer;
  const void *init_arg;
  size_t init_arg_len;
  int64_t timeout_ns;
  int64_t kill_after_ns;  /* < 0: never */
  size_t max_payload;
  int fallback_workers;
  int64_t dead_after_ns;
  int64_t heartbeat_ns;
} mp_opts;
int br__mp_opts(mp_opts *o, const br_mpipool_opts *in);

/* ---- serve.c: a worker rank's whole life in the pool */
int br__mpi_serve(MPI_Comm comm, const mp_opts *o);

#endif
