/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the process pool's decoding of what a worker wrote
 * (src/exec/procpool_decode.c): the result records of a result ring and the
 * per-item entries of a map chunk's result. A worker's job may corrupt its
 * own memory, so these bytes are hostile to the parent.
 *
 * The input: 4 bytes of tail position, 4 of head distance, then the bytes
 * laid into a ring of exactly PP_RING_CAP bytes from the tail on (wrapping
 * at the end, as a real ring does); the whole input is also decoded as chunk
 * entries. Beyond "no crash, no read outside the ring" (ASan), it checks the
 * decoder's promises: a record it accepts lies inside the published bytes,
 * every slice it returns lies inside the ring, a failed job carries no
 * data, and the same bytes always decode the same way.
 * Run as CI does: make fuzz FUZZ_TARGETS=procpool_decode. */
// fuzz-cflags: src/exec/procpool_decode.c
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "braid.h"
#include "exec/procpool_decode.h"

static unsigned char *ring; /* PP_RING_CAP bytes: ASan sees a read past it */

static void in_ring(const void *p, uint64_t n) {
  if (!p) return;
  const unsigned char *c = p;
  assert(c >= ring && c <= ring + PP_RING_CAP && n <= (uint64_t)(ring + PP_RING_CAP - c));
}

static void entries(const char *p, size_t n) {
  /* A private copy, exactly n bytes long. */
  char *buf = malloc(n ? n : 1);
  memcpy(buf, p, n);
  pp_entry_cursor c = {buf, buf + n};
  int err;
  const void *d;
  size_t len, ml;
  const char *msg;
  size_t count = 0;
  while (br__pp_entry_next(&c, &err, &d, &len, &msg, &ml)) {
    assert(err <= 0);
    assert(!err || !len);
    assert((const char *)d >= buf && len <= (size_t)(buf + n - (const char *)d));
    assert(msg >= buf && ml <= (size_t)(buf + n - msg));
    assert(c.p > buf && c.p <= buf + n);
    volatile char sink = 0;
    for (size_t i = 0; i < len; i++) sink ^= ((const char *)d)[i];
    for (size_t i = 0; i < ml; i++) sink ^= msg[i];
    (void)sink;
    count++;
    assert(count <= n / sizeof(pp_entry));
  }
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ring) ring = calloc(1, PP_RING_CAP);
  entries((const char *)data, size);
  if (size < 8) return 0;
  uint32_t t32, h32;
  memcpy(&t32, data, 4);
  memcpy(&h32, data + 4, 4);
  /* Mostly 8-aligned positions near the end of the ring (where PADs are),
   * sometimes anything. */
  uint64_t tail = (t32 & 0x80000000u) ? t32 : ((PP_RING_CAP - (t32 & 0xffff)) & ~(uint64_t)7);
  tail += (uint64_t)3 * PP_RING_CAP; /* a position after a few laps */
  uint64_t head = tail + ((h32 & 0x80000000u) ? h32 : (h32 & 0xfffff));
  const uint8_t *body = data + 8;
  size_t n = size - 8;
  if (n > PP_RING_CAP) n = PP_RING_CAP;
  for (size_t i = 0; i < n; i++) ring[(tail + i) & (PP_RING_CAP - 1)] = body[i];

  pp_res r, r2;
  const char *why, *why2;
  int rc = br__pp_res_decode(ring, tail, head, &r, &why);
  assert(rc == 0 || rc == 1 || rc == BR_EIO);
  if (rc == BR_EIO) assert(why && *why);
  if (rc == 1) {
    assert(r.end > tail && r.end <= head && r.end - tail <= PP_RING_CAP);
    assert(!(r.end & 7) || (tail & 7));
    assert(!(r.flags & ~(PP_F_FD | PP_F_CHUNK | PP_F_BLOCKED)));
    bool fd = r.flags & PP_F_FD;
    if (fd) assert(!r.data);
    else in_ring(r.data, r.len);
    if (!(r.flags & PP_F_CHUNK)) {
      assert(r.code <= 0);
      assert(!r.code || (!r.len && !fd));
      assert(r.msglen <= PP_MSG_MAX);
      in_ring(r.msg, r.msglen);
    } else if (!fd) {
      entries((const char *)r.data, (size_t)r.len);
    }
    if (r.data) {
      volatile unsigned char sink = 0;
      for (uint64_t i = 0; i < r.len; i++) sink ^= r.data[i];
      (void)sink;
    }
  }
  /* No hidden state. */
  int rc2 = br__pp_res_decode(ring, tail, head, &r2, &why2);
  assert(rc2 == rc);
  if (rc == 1) assert(r2.end == r.end && r2.len == r.len && r2.seq == r.seq);
  for (size_t i = 0; i < n; i++) ring[(tail + i) & (PP_RING_CAP - 1)] = 0;
  return 0;
}
