/* SPDX-License-Identifier: MIT */
/* braid (the command) — one string hash for the tool's hash tables (the
 * taken file names of `braid fetch -o`, the row names `braid trace`
 * groups). FNV-1a, 64 bits: short keys, no adversary to fear (a collision
 * costs a probe, never a wrong answer: every table compares the strings). */
#ifndef BRAID_TOOL_STR_HASH_H
#define BRAID_TOOL_STR_HASH_H

#include <stdint.h>

static inline uint64_t tool_str_hash(const char *s) {
  uint64_t h = 1469598103934665603u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

#endif
