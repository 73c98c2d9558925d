/* SPDX-License-Identifier: MIT */
/* braid — the BR_JOB registry and br_bytes.
 *
 * Who runs this: any thread of any process running the program — the
 * parent, the fork server, a worker, an MPI rank. The registry is built once
 * per process under pthread_once and read-only afterwards; a br_bytes is
 * used by one thread at a time (its owner's).
 *
 * BR_JOB puts one br_job_desc per job into the "br_jobs" section; the linker
 * defines __start_br_jobs / __stop_br_jobs around it. The references are weak
 * so a program without any job still links (both are then NULL). The table
 * is sorted by name once, so an index means the same job in every process
 * running the same image: the fork server, its workers and MPI ranks send
 * indexes, not names.
 */
#include "exec/jobs.h"

#include "core/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern const br_job_desc __start_br_jobs[] __attribute__((weak));
extern const br_job_desc __stop_br_jobs[] __attribute__((weak));

static pthread_once_t jobs_once = PTHREAD_ONCE_INIT;
static const br_job_desc **jobs_table;
static size_t jobs_n;
static int jobs_err;

bool br__in_worker;

static int desc_cmp(const void *a, const void *b) {
  const br_job_desc *x = *(const br_job_desc *const *)a;
  const br_job_desc *y = *(const br_job_desc *const *)b;
  return strcmp(x->name, y->name);
}

static void jobs_build(void) {
  const br_job_desc *d = __start_br_jobs, *end = __stop_br_jobs;
  if (!d || !end || d >= end) return;
  size_t cap = (size_t)(end - d);
  jobs_table = calloc(cap ? cap : 1, sizeof *jobs_table);
  if (!jobs_table) {
    jobs_err = BR_ENOMEM;
    return;
  }
  /* Entries are all the same aligned type, but a toolchain could pad the
   * section: skip zero words, refuse anything else without the magic. */
  for (; d < end; d++) {
    if (d->magic == 0 && d->name == NULL) continue;
    if (d->magic != BR__JOB_MAGIC || !d->name || !d->fn) {
      br__log(BR_LOG_ERROR, "corrupt entry in the br_jobs section");
      jobs_err = BR_EINVAL;
      return;
    }
    jobs_table[jobs_n++] = d;
  }
  qsort(jobs_table, jobs_n, sizeof *jobs_table, desc_cmp);
  for (size_t i = 1; i < jobs_n; i++) {
    if (strcmp(jobs_table[i - 1]->name, jobs_table[i]->name) == 0) {
      br__log(BR_LOG_ERROR, "two jobs are registered as \"%s\" (BR_JOB)", jobs_table[i]->name);
      jobs_err = BR_EEXIST;
    }
  }
}

int br__jobs_init(void) {
  pthread_once(&jobs_once, jobs_build);
  return jobs_err;
}

int br__job_index(const char *name) {
  if (!name) return BR_EINVAL;
  if (br__jobs_init() == BR_ENOMEM) return BR_ENOMEM;
  size_t lo = 0, hi = jobs_n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, jobs_table[mid]->name);
    if (c == 0) return (int)mid;
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return BR_ENOJOB;
}

const br_job_desc *br_job_find(const char *name) {
  int i = br__job_index(name);
  return i >= 0 ? jobs_table[i] : NULL;
}

size_t br_job_count(void) {
  br__jobs_init();
  return jobs_n;
}

const br_job_desc *br_job_at(size_t index) {
  br__jobs_init();
  return index < jobs_n ? jobs_table[index] : NULL;
}

bool br_job_in_worker(void) { return br__in_worker; }

/* ---- br_bytes */

/* The largest buffer: one object malloc and mmap can hand out, and a size a
 * memfd (off_t) can have. Bigger requests fail with BR_ENOMEM before any
 * arithmetic on them can wrap. */
#define BYTES_MAX ((size_t)PTRDIFF_MAX)

/* n rounded up to whole pages, or 0 if that exceeds BYTES_MAX. */
static size_t page_round(size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  if (n > BYTES_MAX - (pg - 1)) return 0;
  size_t r = (n + pg - 1) & ~(pg - 1);
  return r <= BYTES_MAX ? r : 0;
}

static void bytes_release(br_bytes *b) {
  if (!b->data && b->br__private.fd <= 0) return;
  switch (b->br__private.kind) {
  case BR__BYTES_MEMFD:
    if (b->data) munmap(b->data, b->br__private.cap);
    if (b->br__private.fd > 0) close(b->br__private.fd);
    break;
  case BR__BYTES_MAP:
    if (b->data) munmap(b->data, b->br__private.cap ? b->br__private.cap : 1);
    break;
  default:
    free(b->data);
  }
}

void br_bytes_clear(br_bytes *b) {
  if (!b) return;
  bytes_release(b);
  memset(b, 0, sizeof *b);
}

void br_bytes_free(br_bytes *b) {
  if (!b) return;
  bytes_release(b);
  free(b);
}

void br__bytes_free_cb(void *b) { br_bytes_free(b); }

void br__bytes_adopt_map(br_bytes *b, void *data, size_t len) {
  memset(b, 0, sizeof *b);
  b->data = data;
  b->len = len;
  b->br__private.cap = len;
  b->br__private.kind = BR__BYTES_MAP;
}

/* Grow a memfd-backed buffer to hold need bytes: a quarter more, page-rounded
 * (just need, rounded, where the quarter does not fit). */
static int memfd_grow(br_bytes *b, size_t need) {
  size_t cap = need <= BYTES_MAX - need / 4 ? page_round(need + need / 4) : 0;
  if (!cap) cap = page_round(need);
  if (!cap) return BR_ENOMEM;
  if (b->br__private.kind != BR__BYTES_MEMFD) {
    int fd = memfd_create("braid-bytes", MFD_CLOEXEC | MFD_ALLOW_SEALING); /* sealed when sent */
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)cap) < 0) {
      int e = -errno;
      close(fd);
      return e;
    }
    void *m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      int e = -errno;
      close(fd);
      return e;
    }
    if (b->len) memcpy(m, b->data, b->len);
    free(b->data);
    b->data = m;
    b->br__private.fd = fd;
    b->br__private.cap = cap;
    b->br__private.kind = BR__BYTES_MEMFD;
    return 0;
  }
  if (ftruncate(b->br__private.fd, (off_t)cap) < 0) return -errno;
  void *m = mremap(b->data, b->br__private.cap, cap, MREMAP_MAYMOVE);
  if (m == MAP_FAILED) return -errno;
  b->data = m;
  b->br__private.cap = cap;
  return 0;
}

static int bytes_reserve(br_bytes *b, size_t need) {
  if (need > BYTES_MAX) return BR_ENOMEM;
  if (need <= b->br__private.cap && b->br__private.kind != BR__BYTES_MAP) return 0;
  if (b->br__private.kind == BR__BYTES_MAP) {
    /* A received mapping: copy to the heap before growing. */
    void *m = malloc(need ? need : 1);
    if (!m) return BR_ENOMEM;
    if (b->len) memcpy(m, b->data, b->len);
    munmap(b->data, b->br__private.cap ? b->br__private.cap : 1);
    b->data = m;
    b->br__private.cap = need;
    b->br__private.kind = BR__BYTES_HEAP;
    return 0;
  }
  if (b->br__private.kind == BR__BYTES_MEMFD || (br__in_worker && need >= BR__BYTES_MEMFD_MIN))
    return memfd_grow(b, need);
  size_t cap = b->br__private.cap ? b->br__private.cap : 64;
  while (cap < need) cap = cap <= BYTES_MAX / 2 ? cap * 2 : need;
  void *m = realloc(b->data, cap);
  if (!m) return BR_ENOMEM;
  b->data = m;
  b->br__private.cap = cap;
  return 0;
}

void *br_bytes_resize(br_bytes *b, size_t len) {
  if (!b) return NULL;
  if (bytes_reserve(b, len ? len : 1) < 0) return NULL;
  b->len = len;
  return b->data;
}

int br_bytes_append(br_bytes *b, const void *p, size_t n) {
  if (!b || (n && !p)) return BR_EINVAL;
  if (b->len + n < b->len) return BR_ENOMEM;
  int r = bytes_reserve(b, b->len + n);
  if (r < 0) return r;
  if (n) memcpy((char *)b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int br_bytes_set(br_bytes *b, const void *p, size_t n) {
  if (!b || (n && !p)) return BR_EINVAL;
  b->len = 0;
  return br_bytes_append(b, p, n);
}

int br__bytes_to_memfd(br_bytes *b) {
  if (b->br__private.kind != BR__BYTES_MEMFD) {
    int r = memfd_grow(b, b->len ? b->len : 1);
    if (r < 0) return r;
  }
  return b->br__private.fd;
}
