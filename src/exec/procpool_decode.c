/* SPDX-License-Identifier: MIT */
/* braid — process pool: decoding what a worker wrote, in the parent
 * (procpool_decode.h says why every byte is treated as hostile). */
#include <string.h>

#include "braid.h"
#include "exec/procpool_decode.h"

/* The compiler may not re-read shared memory in place of a copy made
 * before this point (a worker could change the bytes in between). */
static inline void pp_copied(void) { __asm__ volatile("" ::: "memory"); }

int br__pp_res_decode(const unsigned char *data, uint64_t tail, uint64_t head, pp_res *out,
                      const char **why) {
  *why = "";
  if (head == tail) return 0;
  if (head < tail || head - tail > PP_RING_CAP || (head & 7) || (tail & 7)) {
    *why = "the published position is outside the ring";
    return BR_EIO;
  }
  uint64_t pos = tail;
  for (int pads = 0;; pads++) {
    if (pos == head) return 0; /* only a PAD so far: the record follows */
    uint64_t off = pos & (PP_RING_CAP - 1);
    /* The first 8 bytes of a record (size, kind, flags) always lie inside
     * the ring: positions are 8-aligned and the capacity a multiple of 8. */
    struct {
      uint32_t size;
      uint16_t kind, flags;
    } h8;
    memcpy(&h8, data + off, sizeof h8);
    pp_copied();
    if (h8.kind == PP_PAD) {
      /* A PAD fills exactly the rest of the ring (pp_ring_reserve), once. */
      if (pads || off == 0 || h8.size != PP_RING_CAP - off || h8.size > head - pos) {
        *why = "a padding record of a wrong size";
        return BR_EIO;
      }
      pos += h8.size;
      continue;
    }
    if (h8.kind != PP_RES) {
      *why = "a record of an unknown kind";
      return BR_EIO;
    }
    if (h8.size < sizeof(pp_rec) || (h8.size & 7) || h8.size > PP_RING_CAP - off ||
        h8.size > head - pos) {
      *why = "a record whose size does not fit what was published";
      return BR_EIO;
    }
    if (h8.flags & ~(PP_F_FD | PP_F_CHUNK | PP_F_BLOCKED)) {
      *why = "a record with unknown flags";
      return BR_EIO;
    }
    pp_rec rec;
    memcpy(&rec, data + off, sizeof rec);
    pp_copied();
    const unsigned char *body = data + off + sizeof rec;
    uint64_t room = h8.size - sizeof rec; /* inline bytes the record holds */
    memset(out, 0, sizeof *out);
    out->seq = rec.seq;
    out->run_ns = rec.run_ns;
    out->cpu_ns = rec.cpu_ns;
    out->flags = h8.flags;
    out->end = pos + h8.size;
    bool fd = h8.flags & PP_F_FD;
    if (h8.flags & PP_F_CHUNK) {
      /* The entries, inline or in a memfd; decoded later from a copy. */
      if (!fd && rec.len > room) {
        *why = "a chunk result longer than its record";
        return BR_EIO;
      }
      out->data = fd ? NULL : body;
      out->len = rec.len;
      return 1;
    }
    /* A single job: one entry, inline; its data inline or in a memfd. */
    if (rec.len > room || rec.len < sizeof(pp_entry)) {
      *why = "a result entry that does not fit its record";
      return BR_EIO;
    }
    pp_entry e;
    memcpy(&e, body, sizeof e);
    pp_copied();
    uint64_t after = rec.len - sizeof e; /* inline bytes after the entry */
    uint64_t inl = fd ? 0 : e.len;
    if (e.err > 0 || e.msglen > PP_MSG_MAX || inl > after || e.msglen > after - inl) {
      *why = "a result entry with a wrong length or code";
      return BR_EIO;
    }
    if (e.err && (e.len || fd)) {
      *why = "a failed job's result that carries data";
      return BR_EIO;
    }
    out->code = e.err;
    out->data = fd ? NULL : body + sizeof e;
    out->len = e.len;
    out->msg = (const char *)body + sizeof e + inl;
    out->msglen = e.msglen;
    return 1;
  }
}

bool br__pp_entry_next(pp_entry_cursor *c, int *err, const void **data, size_t *len,
                       const char **msg, size_t *msglen) {
  if (!c->p || (size_t)(c->end - c->p) < sizeof(pp_entry)) return false;
  pp_entry e;
  memcpy(&e, c->p, sizeof e);
  const char *d = c->p + sizeof e;
  size_t left = (size_t)(c->end - d);
  if (e.err > 0 || e.len > left || e.msglen > left - e.len) return false;
  if (e.err && e.len) return false;
  *err = e.err;
  *data = d;
  *len = (size_t)e.len;
  *msg = d + e.len;
  *msglen = e.msglen;
  /* The padding to 8 may be missing after the last entry. */
  uint64_t step = pp_align8(e.len + e.msglen);
  c->p = step <= left ? d + step : c->end;
  return true;
}
