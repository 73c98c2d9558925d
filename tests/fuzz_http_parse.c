/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the HTTP request parser of examples/http_parse.h.
 *
 * Build and run (clang; bounded, as CI does):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iexamples \
 *         tests/fuzz_http_parse.c -o build/fuzz_http_parse
 *   mkdir -p build/fuzz-corpus
 *   build/fuzz_http_parse -max_total_time=60 -max_len=4096 build/fuzz-corpus
 * Not a ctest test (tests/CMakeLists.txt builds tests/test_*.c only).
 *
 * Beyond "no crash, no out-of-bounds read" (ASan), it checks the parser's
 * promises: a complete head ends with a line feed inside the buffer, every
 * slice lies inside the buffer, and the same bytes always parse the same
 * way (no hidden state). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

static void in_buf(const char *buf, size_t len, http_slice s) {
  if (s.n == 0) return;
  assert(s.p >= buf && s.p + s.n <= buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A private copy, exactly the input's size: ASan catches a read past it. */
  char *buf = malloc(size ? size : 1);
  memcpy(buf, data, size);
  http_request r, r2;
  int64_t rc = http_parse(buf, size, &r);
  assert(rc >= HTTP_UNSUPPORTED);
  if (rc > 0) {
    assert((size_t)rc <= size && (size_t)rc == r.head_len);
    assert(buf[rc - 1] == '\n');
    assert(r.nheaders <= HTTP_MAX_HEADERS);
    assert(r.method.n > 0 && r.target.n > 0);
    in_buf(buf, size, r.method);
    in_buf(buf, size, r.target);
    for (size_t i = 0; i < r.nheaders; i++) {
      in_buf(buf, size, r.names[i]);
      in_buf(buf, size, r.values[i]);
      assert(r.names[i].n > 0);
    }
    assert(r.content_length >= -1);
    /* Bytes after the head do not change how the head parses. */
    int64_t again = http_parse(buf, (size_t)rc, &r2);
    assert(again == rc);
  }
  assert(http_parse(buf, size, &r2) == rc);
  free(buf);
  return 0;
}
