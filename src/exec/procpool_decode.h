/* SPDX-License-Identifier: MIT */
/* braid — process pool: decoding what a worker wrote, in the parent.
 * Internal.
 *
 * A worker's result ring lives in memory the worker can write at any time,
 * and the job running in that worker may be exactly the kind of code that
 * scribbles over its own memory. So the parent treats every byte of it as
 * hostile: each field is read once (copied, then checked, then only the copy
 * is used), every length is checked against the record that holds it and
 * the record against the bytes published, and a record that breaks any rule
 * is a protocol violation (the manager then kills that worker and fails the
 * job it was running; procpool_manager.c, take_result). Nothing here
 * touches memory outside [data, data + PP_RING_CAP) or loops more than
 * twice, whatever the bytes are.
 *
 * These functions have no state and take no lock: procpool_manager.c calls
 * them with the pool mutex held, procpool_map.c on the caller's thread, and
 * tests/fuzz_procpool_decode.c on fuzzer input.
 */
#ifndef BRAID_EXEC_PROCPOOL_DECODE_H
#define BRAID_EXEC_PROCPOOL_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec/procpool_shm.h"

/* One result record, checked. Pointers point into the ring (still writable
 * by the worker: copy the bytes out before decoding them any further). */
typedef struct pp_res {
  uint64_t seq;
  uint64_t run_ns, cpu_ns;
  uint16_t flags;  /* PP_F_CHUNK, PP_F_FD, PP_F_BLOCKED */
  int code;        /* a single job: 0, or its (negative) code */
  /* A single job: its value (inline, or `len` bytes in a memfd with
   * PP_F_FD) and message. A chunk: its entries (inline, or `len` bytes in a
   * memfd with PP_F_FD). */
  const unsigned char *data; /* NULL with PP_F_FD */
  uint64_t len;
  const char *msg;
  uint32_t msglen;
  uint64_t end;    /* ring position after the record (PADs included) */
} pp_res;

/* Decode the result record at position `tail` of a result ring whose data
 * is `data` (PP_RING_CAP bytes) and whose producer published `head`.
 * Returns 1 with *out filled, 0 if nothing is published, or BR_EIO with
 * *why (a static string) naming the broken rule. */
int br__pp_res_decode(const unsigned char *data, uint64_t tail, uint64_t head, pp_res *out,
                      const char **why);

/* A cursor over the entries of a chunk's result (pp_entry, procpool_shm.h),
 * in memory the parent owns. */
typedef struct pp_entry_cursor {
  const char *p, *end;
} pp_entry_cursor;

/* The next entry: false at the end or on a malformed entry (a length past
 * the end, a positive code). */
bool br__pp_entry_next(pp_entry_cursor *c, int *err, const void **data, size_t *len,
                       const char **msg, size_t *msglen);

#endif
