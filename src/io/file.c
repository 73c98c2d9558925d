/* SPDX-License-Identifier: MIT */
/* braid — files without blocking the loop.
 *
 * Regular files are always "ready" to epoll, yet reading one may wait for
 * the disk, so readiness cannot help. Three paths, picked per call:
 *   - the loop's poller performs I/O itself (io_uring): the operation is
 *     submitted to it (br__loop_submit_io, the poller's optional `submit`)
 *     and goes to the kernel with the loop's next poll, so the file
 *     operations of many tasks cost one system call;
 *   - a poller without it (epoll), or one that refuses the operation: a job
 *     in the blocking pool's FILE class;
 *   - a plain thread: the system call itself (blocking is allowed there).
 *
 * Memory rules. The kernel (poller) or a pool thread uses the caller's memory
 * while the task is suspended, so: (1) an interrupted call waits, shielded,
 * for the operation to finish before it returns (br__await_pinned), and
 * releases what the operation produced (an opened fd, a buffer); (2) the
 * descriptions handed over live on the heap, never on the task's stack;
 * (3) a compact task's stack is shared while it is suspended, so a buffer
 * of a compact task goes through a heap bounce buffer.
 */
#include <braid.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/loop.h"
#include "io/io_internal.h"

enum { OP_OPEN, OP_READ, OP_WRITE, OP_FSYNC, OP_READ_ALL };

typedef struct fop {
  int op;
  int fd;
  char *path;
  int flags, mode;
  void *buf; /* caller's buffer, or a bounce buffer we own */
  size_t n;
  int64_t off;
  size_t max;
  ssize_t res;
  char *data; /* read_all: result buffer */
  size_t len;
} fop;

/* Whether the calling task runs on the loop's shared (compact) stack. */
static bool task_is_compact(void) {
  br_task *t = br_self();
  return t && br__task_is_compact(t);
}

/* --- the system calls themselves (plain thread, pool job) ---------------- */

static ssize_t sys_read(int fd, void *buf, size_t n, int64_t off) {
  ssize_t r;
  do r = off < 0 ? read(fd, buf, n) : pread(fd, buf, n, (off_t)off);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

static ssize_t sys_write(int fd, const void *buf, size_t n, int64_t off) {
  ssize_t r;
  do r = off < 0 ? write(fd, buf, n) : pwrite(fd, buf, n, (off_t)off);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

static int sys_open(const char *path, int flags, int mode) {
  int fd;
  do fd = open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

/* read_all with plain system calls: into f->data / f->len. */
static ssize_t sys_read_all(fop *f) {
  int fd = sys_open(f->path, O_RDONLY, 0);
  if (fd < 0) return fd;
  struct stat st;
  size_t cap = 4096;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) cap = (size_t)st.st_size + 1;
  if (f->max && cap > f->max + 1) cap = f->max + 1;
  char *buf = malloc(cap + 1);
  size_t len = 0;
  ssize_t rc = 0;
  if (!buf) rc = BR_ENOMEM;
  while (rc == 0) {
    if (len == cap) {
      if (f->max && len > f->max) {
        rc = BR_E2BIG;
        break;
      }
      size_t ncap = cap * 2;
      if (f->max && ncap > f->max + 1) ncap = f->max + 1;
      char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        rc = BR_ENOMEM;
        break;
      }
      buf = nb;
      cap = ncap;
    }
    ssize_t r = sys_read(fd, buf + len, cap - len, -1);
    if (r < 0) rc = r;
    else if (r == 0) break;
    else len += (size_t)r;
  }
  if (rc == 0 && f->max && len > f->max) rc = BR_E2BIG;
  close(fd);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  f->data = buf;
  f->len = len;
  return 0;
}

static ssize_t run_sync(fop *f) {
  switch (f->op) {
  case OP_OPEN:
    return sys_open(f->path, f->flags, f->mode);
  case OP_READ:
    return sys_read(f->fd, f->buf, f->n, f->off);
  case OP_WRITE:
    return sys_write(f->fd, f->buf, f->n, f->off);
  case OP_FSYNC:
    return fsync(f->fd) < 0 ? -errno : 0;
  case OP_READ_ALL:
    return sys_read_all(f);
  }
  return BR_EINVAL;
}

static void *pool_job(void *arg) {
  fop *f = arg;
  f->res = run_sync(f);
  return NULL;
}

/* Release what an operation produced for a caller that no longer wants it. */
static void undo(fop *f) {
  if (f->op == OP_OPEN && f->res >= 0) close((int)f->res);
  if (f->op == OP_READ_ALL) {
    free(f->data);
    f->data = NULL;
  }
}

/* --- submitted to the loop's poller -------------------------------------- */

/* The loop's poller, if the caller is a task (only a task may wait). */
static br_loop *task_loop(void) {
  br_loop *L = br_loop_current();
  return L && br__in_task() ? L : NULL;
}

/* One operation through the poller; returns its result, or the
 * interruption code (after the kernel is done; the result is then in
 * *late). BR_ENOSYS: the poller does not perform it (fall back); BR_EAGAIN:
 * no room or a transient -EAGAIN/-EINTR (retry). */
static ssize_t ring_one(br_loop *L, fop *f, int64_t deadline, ssize_t *late) {
  br__io_req req = {.fd = f->fd, .path = f->path, .flags = f->flags, .mode = f->mode,
                    .buf = f->buf, .n = f->n, .off = f->off};
  switch (f->op) {
  case OP_OPEN: req.op = BR__IO_OPEN; break;
  case OP_READ: req.op = BR__IO_READ; break;
  case OP_WRITE: req.op = BR__IO_WRITE; break;
  case OP_FSYNC: req.op = BR__IO_FSYNC; break;
  default: return BR_ENOSYS;
  }
  br_future *fut = NULL;
  int rc = br__loop_submit_io(L, &req, &fut);
  if (rc < 0) return rc;
  void *v = NULL;
  rc = br__await_pinned(fut, &v, deadline);
  br_future_unref(fut);
  ssize_t res = (ssize_t)(intptr_t)v;
  if (rc < 0 && rc != BR_ETIMEDOUT && rc != BR_ECANCELED) return rc;
  if (rc < 0) {
    *late = res;
    return rc;
  }
  if (res == -EINTR || res == -EAGAIN) return BR_EAGAIN; /* retried by the caller */
  return res;
}

/* read_all on the ring: open, read until end of file, close. */
static ssize_t ring_read_all(br_loop *L, fop *f, int64_t deadline) {
  fop o = {.op = OP_OPEN, .path = f->path, .flags = O_RDONLY};
  ssize_t late = -1;
  ssize_t fd;
  do fd = ring_one(L, &o, deadline, &late);
  while (fd == BR_EAGAIN && br_yield() == 0);
  if (fd < 0) {
    if (late >= 0) close((int)late);
    return fd;
  }
  size_t cap = 4096, len = 0;
  if (f->max && cap > f->max + 1) cap = f->max + 1;
  char *buf = malloc(cap + 1);
  ssize_t rc = buf ? 0 : BR_ENOMEM;
  while (rc == 0) {
    if (len == cap) {
      if (f->max && len > f->max) {
        rc = BR_E2BIG;
        break;
      }
      size_t ncap = cap * 4;
      if (f->max && ncap > f->max + 1) ncap = f->max + 1;
      char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        rc = BR_ENOMEM;
        break;
      }
      buf = nb;
      cap = ncap;
    }
    fop r = {.op = OP_READ, .fd = (int)fd, .buf = buf + len, .n = cap - len, .off = (int64_t)len};
    ssize_t n = ring_one(L, &r, deadline, &late);
    if (n == BR_EAGAIN) {
      int y = br_yield();
      if (y < 0) rc = y;
      continue;
    }
    if (n < 0) rc = n;
    else if (n == 0) break;
    else len += (size_t)n;
  }
  if (rc == 0 && f->max && len > f->max) rc = BR_E2BIG;
  /* Closing a regular file does not block: do it here rather than spend a
   * loop round trip on it. */
  close((int)fd);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  f->data = buf;
  f->len = len;
  return 0;
}

/* --- dispatch ------------------------------------------------------------- */

/* Run *f by the best path. On success f->res holds the result; the return
 * value is the result or an error (interruption included). */
static ssize_t run_op(fop *f, int64_t deadline) {
  if (!br__in_task()) return f->res = run_sync(f);
  int b = br__io_budget();
  if (b < 0) return b;

  br_loop *L = task_loop();
  if (L && f->op == OP_READ_ALL) {
    ssize_t r = ring_read_all(L, f, deadline);
    if (r != BR_ENOSYS) return f->res = r;
  } else if (L) {
    for (;;) {
      ssize_t late = -1;
      ssize_t r = ring_one(L, f, deadline, &late);
      if (r == BR_ENOSYS) break; /* the poller does not do it: the pool does */
      if (r == BR_EAGAIN) {
        /* no room in the poller or a transient -EAGAIN: retry after the
         * loop has had a turn */
        int y = br_yield();
        if (y < 0) return y;
        continue;
      }
      if (r == BR_ETIMEDOUT || r == BR_ECANCELED) {
        f->res = late;
        undo(f);
        return r;
      }
      return f->res = r;
    }
  }

  /* Blocking pool: the description must live on the heap. */
  fop *h = malloc(sizeof *h);
  if (!h) return BR_ENOMEM;
  *h = *f;
  br_future *fut = NULL;
  int trc = br_to_thread_class(&fut, BR_BLOCKING_FILE, pool_job, h);
  if (trc < 0) {
    free(h);
    return trc;
  }
  int rc = br__await_pinned(fut, NULL, deadline);
  /* rc is the job's outcome, a pool refusal (the job never ran) or an
   * interruption (the job ran to its end meanwhile). */
  bool ran = br_future_done(fut) && br_future_error(fut) == 0;
  br_future_unref(fut);
  if (rc < 0) {
    if (ran) undo(h);
    free(h);
    return rc;
  }
  *f = *h;
  free(h);
  return f->res;
}

int br_file_open(const char *path, int flags, int mode, int64_t deadline) {
  if (!path) return BR_EINVAL;
  fop f = {.op = OP_OPEN, .flags = flags, .mode = mode};
  f.path = strdup(path);
  if (!f.path) return BR_ENOMEM;
  ssize_t r = run_op(&f, deadline);
  free(f.path);
  return (int)r;
}

ssize_t br_file_read(int fd, void *buf, size_t n, int64_t offset, int64_t deadline) {
  if (!buf && n) return BR_EINVAL;
  fop f = {.op = OP_READ, .fd = fd, .buf = buf, .n = n, .off = offset};
  void *bounce = NULL;
  if (br__in_task() && task_is_compact() && n) {
    bounce = malloc(n);
    if (!bounce) return BR_ENOMEM;
    f.buf = bounce;
  }
  ssize_t r = run_op(&f, deadline);
  if (bounce) {
    if (r > 0) memcpy(buf, bounce, (size_t)r);
    free(bounce);
  }
  return r;
}

ssize_t br_file_write(int fd, const void *buf, size_t n, int64_t offset, int64_t deadline) {
  if (!buf && n) return BR_EINVAL;
  fop f = {.op = OP_WRITE, .fd = fd, .buf = (void *)buf, .n = n, .off = offset};
  void *bounce = NULL;
  if (br__in_task() && task_is_compact() && n) {
    bounce = malloc(n);
    if (!bounce) return BR_ENOMEM;
    memcpy(bounce, buf, n);
    f.buf = bounce;
  }
  ssize_t r = run_op(&f, deadline);
  free(bounce);
  return r;
}

int br_file_fsync(int fd, int64_t deadline) {
  fop f = {.op = OP_FSYNC, .fd = fd};
  return (int)run_op(&f, deadline);
}

int br_file_close(int fd) {
  if (fd < 0) return BR_EBADF;
  /* Closing a local file never waits for the disk; doing it in place costs
   * less than any hand-off. (NFS may flush on close: use br_file_fsync
   * first if that matters.) */
  if (close(fd) < 0 && errno != EINTR) return -errno;
  return 0;
}

int br_file_read_all(char **out, size_t *len, const char *path, size_t max, int64_t deadline) {
  if (!path || !out) return BR_EINVAL;
  *out = NULL;
  if (len) *len = 0;
  fop f = {.op = OP_READ_ALL, .max = max};
  f.path = strdup(path);
  if (!f.path) return BR_ENOMEM;
  ssize_t r = run_op(&f, deadline);
  free(f.path);
  if (r < 0) return (int)r;
  *out = f.data;
  if (len) *len = f.len;
  return 0;
}
