/* SPDX-License-Identifier: MIT */
/* braid — internal side of the BR_JOB registry and of br_bytes, shared by the
 * process pool and the MPI backend. */
#ifndef BRAID_EXEC_JOBS_H
#define BRAID_EXEC_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "braid.h"

/* br_bytes kinds. */
enum {
  BR__BYTES_HEAP = 0,  /* malloc'd (or empty) */
  BR__BYTES_MEMFD = 1, /* MAP_SHARED mapping of the memfd br__private.fd */
  BR__BYTES_MAP = 2    /* MAP_SHARED mapping, no fd kept (a received result) */
};

/* Buffers at least this big are memfd-backed inside a worker. */
#define BR__BYTES_MEMFD_MIN ((size_t)1 << 20)

/* br__jobs_init: build the sorted table once (thread-safe, idempotent).
 * Returns 0, or BR_EEXIST if two jobs share a name (logged), or
 * BR_EINVAL for a corrupt descriptor. */
int br__jobs_init(void);

/* br__job_index: index of name in the sorted table, or BR_ENOJOB. */
int br__job_index(const char *name);

/* True in a worker process (set once as it starts, before any job): big
 * br_bytes are then memfd-backed. */
extern bool br__in_worker;

/* br_bytes_free with the signature of a future's or result's value_free. */
void br__bytes_free_cb(void *b);

/* br__bytes_adopt_map: make b own a MAP_SHARED mapping of len bytes
 * (released with munmap). */
void br__bytes_adopt_map(br_bytes *b, void *data, size_t len);

/* br__bytes_to_memfd: make sure b is memfd-backed (copying if needed) and
 * return the fd (still owned by b), or a negative code. */
int br__bytes_to_memfd(br_bytes *b);

#endif
