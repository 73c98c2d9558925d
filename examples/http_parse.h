/* SPDX-License-Identifier: MIT */
/* http_parse.h — a small, strict HTTP/1.x request-head parser for the
 * examples (http_hello.c) and its libFuzzer target (tests/fuzz_http_parse.c).
 *
 * It never allocates and never reads outside [buf, buf+len). Header values
 * and names are returned as (pointer, length) slices of the caller's buffer.
 * It accepts what RFC 9112 calls a request line and header fields, with
 * CRLF or bare LF line ends, and refuses what a server should refuse:
 * control characters, header lines without a colon, whitespace before the
 * colon (request smuggling), conflicting Content-Length values,
 * Transfer-Encoding (not supported here: 501 is the server's answer). */
#ifndef BRAID_EXAMPLE_HTTP_PARSE_H
#define BRAID_EXAMPLE_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HTTP_MAX_HEADERS 32

typedef struct http_slice {
  const char *p;
  size_t n;
} http_slice;

typedef struct http_request {
  http_slice method, target;
  int minor;               /* HTTP/1.<minor> */
  size_t nheaders;
  http_slice names[HTTP_MAX_HEADERS], values[HTTP_MAX_HEADERS];
  int64_t content_length;  /* -1 if absent */
  bool keep_alive;         /* after this request */
  size_t head_len;         /* bytes of the request line and headers */
} http_request;

enum {
  HTTP_INCOMPLETE = 0,
  HTTP_BAD = -1,           /* 400 */
  HTTP_TOO_LARGE = -2,     /* 431: too many headers */
  HTTP_UNSUPPORTED = -3,   /* 501 (Transfer-Encoding), 505 (version) */
};

static inline bool http__tchar(unsigned char c) {
  /* RFC 9110 token characters */
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static inline bool http__ieq(http_slice s, const char *lit) {
  size_t n = strlen(lit);
  if (s.n != n) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char a = (unsigned char)s.p[i], b = (unsigned char)lit[i];
    if (a >= 'A' && a <= 'Z') a = (unsigned char)(a + 32);
    if (a != b) return false;
  }
  return true;
}

/* Does the comma-separated list s contain token tok (case-insensitive)? */
static inline bool http__has_token(http_slice s, const char *tok) {
  size_t i = 0;
  while (i < s.n) {
    while (i < s.n && (s.p[i] == ' ' || s.p[i] == '\t' || s.p[i] == ',')) i++;
    size_t start = i;
    while (i < s.n && s.p[i] != ',') i++;
    size_t end = i;
    while (end > start && (s.p[end - 1] == ' ' || s.p[end - 1] == '\t')) end--;
    if (end > start && http__ieq((http_slice){s.p + start, end - start}, tok)) return true;
  }
  return false;
}

/* Find the end of the line starting at *pos: returns the line's length and
 * advances *pos past its terminator, or returns SIZE_MAX if no terminator is
 * in the buffer yet. */
static inline size_t http__line(const char *buf, size_t len, size_t *pos) {
  const char *nl = memchr(buf + *pos, '\n', len - *pos);
  if (!nl) return SIZE_MAX;
  size_t end = (size_t)(nl - buf);
  size_t n = end - *pos;
  if (n > 0 && buf[end - 1] == '\r') n--;
  *pos = end + 1;
  return n;
}

/* http_parse: parse one request head at the start of buf. Returns the head's
 * length (> 0) and fills *r, HTTP_INCOMPLETE if more bytes are needed, or a
 * negative HTTP_* error. The body (content_length bytes) follows the head. */
static inline int64_t http_parse(const char *buf, size_t len, http_request *r) {
  memset(r, 0, sizeof *r);
  r->content_length = -1;
  size_t pos = 0;
  /* Tolerate empty lines before a request (RFC 9112 2.2). */
  while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n')) pos++;
  if (pos == len) return HTTP_INCOMPLETE;
  size_t start = pos;
  size_t n = http__line(buf, len, &pos);
  if (n == SIZE_MAX) {
    /* No line end yet: fail early on garbage instead of buffering it. */
    for (size_t i = start; i < len; i++)
      if ((unsigned char)buf[i] < 0x20 && buf[i] != '\r') return HTTP_BAD;
    return HTTP_INCOMPLETE;
  }
  const char *line = buf + start;
  /* method SP target SP HTTP/1.x */
  size_t i = 0;
  while (i < n && http__tchar((unsigned char)line[i])) i++;
  if (i == 0 || i >= n || line[i] != ' ') return HTTP_BAD;
  r->method = (http_slice){line, i};
  size_t t0 = ++i;
  while (i < n && line[i] != ' ') {
    unsigned char c = (unsigned char)line[i];
    if (c <= 0x20 || c == 0x7f) return HTTP_BAD;
    i++;
  }
  if (i == t0 || i >= n) return HTTP_BAD;
  r->target = (http_slice){line + t0, i - t0};
  i++;
  if (n - i != 8 || memcmp(line + i, "HTTP/1.", 7) != 0) {
    if (n - i == 8 && memcmp(line + i, "HTTP/", 5) == 0) return HTTP_UNSUPPORTED;
    return HTTP_BAD;
  }
  char minor = line[i + 7];
  if (minor < '0' || minor > '9') return HTTP_BAD;
  r->minor = minor - '0';
  bool close = false, keep = false;

  for (;;) {
    start = pos;
    if (pos >= len) return HTTP_INCOMPLETE;
    n = http__line(buf, len, &pos);
    if (n == SIZE_MAX) return HTTP_INCOMPLETE;
    if (n == 0) break; /* end of the head */
    line = buf + start;
    if (r->nheaders == HTTP_MAX_HEADERS) return HTTP_TOO_LARGE;
    size_t c = 0;
    while (c < n && http__tchar((unsigned char)line[c])) c++;
    if (c == 0 || c >= n || line[c] != ':') return HTTP_BAD; /* also "Name :" */
    size_t v = c + 1, ve = n;
    while (v < ve && (line[v] == ' ' || line[v] == '\t')) v++;
    while (ve > v && (line[ve - 1] == ' ' || line[ve - 1] == '\t')) ve--;
    for (size_t k = v; k < ve; k++) {
      unsigned char ch = (unsigned char)line[k];
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return HTTP_BAD;
    }
    http_slice name = {line, c}, value = {line + v, ve - v};
    r->names[r->nheaders] = name;
    r->values[r->nheaders] = value;
    r->nheaders++;
    if (http__ieq(name, "content-length")) {
      if (value.n == 0 || value.n > 15) return HTTP_BAD;
      int64_t cl = 0;
      for (size_t k = 0; k < value.n; k++) {
        if (value.p[k] < '0' || value.p[k] > '9') return HTTP_BAD;
        cl = cl * 10 + (value.p[k] - '0');
      }
      if (r->content_length >= 0 && r->content_length != cl) return HTTP_BAD;
      r->content_length = cl;
    } else if (http__ieq(name, "transfer-encoding")) {
      return HTTP_UNSUPPORTED;
    } else if (http__ieq(name, "connection")) {
      if (http__has_token(value, "close")) close = true;
      if (http__has_token(value, "keep-alive")) keep = true;
    }
  }
  r->keep_alive = !close && (r->minor >= 1 || keep);
  r->head_len = pos;
  return (int64_t)pos;
}

#endif
