/* SPDX-License-Identifier: MIT */
/* braid (the command) — one UTF-8 check for what the tool prints from
 * elsewhere: URLs in `braid fetch --json`, task names in `braid trace`. */
#ifndef BRAID_TOOL_UTF8_H
#define BRAID_TOOL_UTF8_H

#include <stddef.h>

/* The length of the well-formed UTF-8 sequence at s (1 to 4; RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0. A NUL ends
 * any sequence, so s may end anywhere. */
static inline size_t tool_utf8_seq(const unsigned char *s) {
  unsigned c = s[0];
  size_t n;
  unsigned lo = 0x80, hi = 0xbf; /* the second byte's range */
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  else return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return n;
}

#endif
