/* SPDX-License-Identifier: MIT */
/* braid — files without blocking the loop.
 *
 * Regular files are always "ready" to epoll, yet reading one may wait for
 * the disk, so readiness cannot help. A read the kernel can do at once (the
 * pages are in the page cache) is done in place (see "in place" below);
 * anything else takes one of three paths, picked per call:
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
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/job.h"
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
  /* read_all for a task: a FIFO is opened without waiting for its writer
   * and handed back here, unread, for the task to read by readiness
   * (fifo_read_all); -1 otherwise. */
  bool fifo_back;
  int fifo_fd;
  /* open for a task (fifo_check): a FIFO is not opened (a blocking open
   * would wait in the pool thread, past any deadline, for the other end)
   * but handed back in fifo_fd as an O_PATH descriptor, with res
   * FIFO_PENDING, for fifo_open_wait. */
  bool fifo_check;
} fop;

/* res of an open whose FIFO waits for its other end (fifo_fd holds it). */
#define FIFO_PENDING ((ssize_t)INT32_MIN)

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

/* A write to a pipe or socket whose reader is gone raises SIGPIPE, whose
 * default action ends the process. The threads this runs on have it
 * blocked (a blocking-pool thread blocks every signal; a plain caller's
 * thread has it blocked around the call by run_op); the signal the write
 * left pending is consumed, so the caller sees BR_EPIPE only. */
static ssize_t sys_write(int fd, const void *buf, size_t n, int64_t off) {
  ssize_t r;
  do r = off < 0 ? write(fd, buf, n) : pwrite(fd, buf, n, (off_t)off);
  while (r < 0 && errno == EINTR);
  int e = r < 0 ? errno : 0;
  if (e == EPIPE) br__eat_sigpipe();
  return r < 0 ? -e : r;
}

static ssize_t run_sync(fop *f);

/* A plain thread's write, made in place: SIGPIPE blocked around it (see
 * sys_write), the caller's own mask restored after. */
static ssize_t plain_thread_write(fop *f) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ssize_t r = run_sync(f);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

static int sys_open(const char *path, int flags, int mode) {
  int fd;
  do fd = open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

/* --- FIFOs: an open that waits for the other end -----------------------------
 *
 * open(2) of a FIFO for reading only or writing only, without O_NONBLOCK,
 * waits until the other end is opened too, which may be never. A task's
 * open must keep to its deadline and to cancellation, and must not hold a
 * FILE-class thread (there are few) for that long; and on io_uring the
 * kernel opens a FIFO as if O_NONBLOCK were given (a writer gets ENXIO at
 * once, a reader does not wait), which differs from open(2). So a task's
 * open of a FIFO goes this way on every backend:
 *   1. the usual path finds out that path is a FIFO without waiting (the
 *      pool job: stat, then an O_PATH descriptor, fifo_fd; the ring: its
 *      reader descriptor, or ENXIO for a writer, which is then retried by
 *      the pool job) and keeps a descriptor of it, the anchor;
 *   2. a USER-class pool job (the class meant for slow calls) makes the
 *      real, blocking open of the anchor's inode (/proc/self/fd/N: the same
 *      FIFO even if path is renamed meanwhile) and so completes exactly when
 *      the other end arrives;
 *      When the anchor is itself a reader (the ring's), a writer may come,
 *      write and go before that open starts, which would then wait for
 *      another one: so a watcher task also waits for the anchor to become
 *      readable (data, or the hang-up of a writer that came and went), and
 *      whichever comes first ends the wait (the anchor is then the result);
 *   3. if the task is interrupted first, it releases the job by opening the
 *      FIFO itself, O_RDWR | O_NONBLOCK (which never waits and is both a
 *      reader and a writer), holds it until the job's open has returned,
 *      then closes both. Another process waiting to open the FIFO's other
 *      end at that moment may see that brief partner come and go. */

/* A task's open that may wait for a FIFO's other end (see above). */
static bool may_wait_fifo(int flags) {
  int acc = flags & O_ACCMODE;
  if (flags & (O_NONBLOCK | O_PATH)) return false;
  if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) return false; /* never a FIFO */
  return acc == O_RDONLY || acc == O_WRONLY;
}

/* Open the FIFO that anchor (any descriptor of it) names, with flags; path
 * if /proc is not mounted. The fd or a negated errno. */
static int fifo_reopen(int anchor, const char *path, int flags) {
  char proc[40];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", anchor);
  flags &= ~(O_CREAT | O_EXCL | O_TRUNC);
  int fd = sys_open(proc, flags, 0);
  if (fd == -ENOENT && access("/proc/self/fd", F_OK) != 0) fd = sys_open(path, flags, 0);
  return fd;
}

/* The pool job's open for a task: a FIFO is handed back (FIFO_PENDING). */
static ssize_t sys_open_checked(fop *f) {
  struct stat st;
  int r = (f->flags & O_NOFOLLOW) ? lstat(f->path, &st) : stat(f->path, &st);
  if (r == 0 && S_ISFIFO(st.st_mode)) {
    int a = sys_open(f->path, O_PATH | (f->flags & (O_NOFOLLOW | O_DIRECTORY)), 0);
    if (a >= 0 && fstat(a, &st) == 0 && S_ISFIFO(st.st_mode)) {
      f->fifo_fd = a;
      return FIFO_PENDING;
    }
    if (a >= 0) close(a); /* replaced meanwhile: open whatever is there now */
  }
  return sys_open(f->path, f->flags, f->mode);
}

typedef struct fifo_wait {
  int anchor;
  const char *path;
  int flags;
  atomic_bool stop; /* the task gave up: do not open */
  int res;
} fifo_wait;

static void *fifo_wait_job(void *arg) {
  fifo_wait *w = arg;
  w->res = atomic_load(&w->stop) ? BR_ECANCELED : fifo_reopen(w->anchor, w->path, w->flags);
  return NULL;
}

/* The watcher of a reader anchor: returns once it is readable (level). */
static void *anchor_watch(void *arg) {
  int fd = (int)(intptr_t)arg;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n != 0) return NULL; /* readable, hung up, or an error: look */
    int w = br__io_wait(fd, BR_READABLE, BR_NEVER);
    if (w < 0) return br_fail(w, "fifo watch");
  }
}

/* Steps 2 and 3 above: the fd opened with flags once the other end of the
 * FIFO anchor is open, or an error (BR_ETIMEDOUT, BR_ECANCELED, a pool
 * refusal, the open's own). Takes anchor over (closed, or returned);
 * reader: it is a reader descriptor with the caller's flags. Task only. */
static ssize_t fifo_open_wait(int anchor, bool reader, const char *path, int flags,
                              int64_t deadline) {
  fifo_wait *w = calloc(1, sizeof *w);
  if (!w) {
    close(anchor);
    return BR_ENOMEM;
  }
  *w = (fifo_wait){.anchor = anchor, .path = path, .flags = flags, .res = BR_ECANCELED};
  atomic_init(&w->stop, false);
  br_future *fut = NULL;
  br_task *watch = NULL;
  int rc = br_to_thread_class(&fut, BR_BLOCKING_USER, fifo_wait_job, w);
  if (rc < 0) {
    free(w);
    close(anchor);
    return rc;
  }
  if (reader) {
    rc = br_spawn(&watch, anchor_watch, (void *)(intptr_t)anchor,
                  &(br_spawn_opts){.name = "fifo-open-watch"});
    if (rc < 0) watch = NULL; /* the blocking open alone: still correct but for the race */
  }
  bool writer_seen = false;
  if (watch) {
    br_future *both[2] = {fut, br_task_future(watch)};
    int i = br_wait(both, 2, BR_WAIT_FIRST, deadline);
    rc = i < 0 ? i : 0;
    writer_seen = i == 1 && !br_future_done(fut) && br_future_error(both[1]) == 0;
    if (i == 1 && !writer_seen && !br_future_done(fut)) rc = br_future_error(both[1]);
    if (!br_task_done(watch)) br_cancel(watch);
    br_join(watch, NULL);
  } else {
    rc = br_await_until(fut, NULL, deadline);
  }
  int partner = -1;
  if (!br_future_done(fut)) {
    /* Interrupted while the job may sit in open(2): be its other end until
     * it returns (or let it skip the open if it has not started). */
    atomic_store(&w->stop, true);
    partner = fifo_reopen(anchor, path, O_RDWR | O_NONBLOCK);
    br__await_shielded(fut);
  }
  bool ran = br_future_done(fut) && br_future_error(fut) == 0;
  br_future_unref(fut);
  if (partner >= 0) close(partner);
  ssize_t res = rc != 0 ? rc : writer_seen ? anchor : w->res;
  if ((rc != 0 || writer_seen) && ran && w->res >= 0) close(w->res);
  if (res != anchor) {
    if (watch) br_close(anchor); /* the watcher waited on it */
    else close(anchor);
  }
  free(w);
  return res;
}

/* One read of a read-to-end, at the file's position (the file is ours and
 * read from its start; a FIFO has no offsets): the count, 0 at end of
 * file, or a negative code (BR_EAGAIN from the in-place reader: it would
 * have to wait). */
typedef ssize_t (*read_fn)(void *ctx, int fd, void *buf, size_t n);

/* Read fd to its end into f->data / f->len (NUL-terminated; at most f->max
 * bytes when f->max > 0, else BR_E2BIG), starting with a buffer of `size`
 * bytes (the file's size, if known) plus one: reading a regular file of a
 * known size then takes two reads, the second one seeing its end. 0 or a
 * negative code; nothing is kept on failure. fd stays open. */
static ssize_t read_to_end(fop *f, int fd, size_t size, read_fn rd, void *ctx) {
  size_t cap = size ? size + 1 : 4096;
  if (f->max && cap > f->max + 1) cap = f->max + 1;
  char *buf = malloc(cap + 1);
  size_t len = 0;
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
    ssize_t r = rd(ctx, fd, buf + len, cap - len);
    if (r < 0) rc = r;
    else if (r == 0) break;
    else len += (size_t)r;
  }
  if (rc == 0 && f->max && len > f->max) rc = BR_E2BIG;
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  f->data = buf;
  f->len = len;
  return 0;
}

/* The size of fd if it is a regular file, else 0. */
static size_t size_of(const struct stat *st) {
  return S_ISREG(st->st_mode) && st->st_size > 0 ? (size_t)st->st_size : 0;
}

static size_t regular_size(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? size_of(&st) : 0;
}

static ssize_t sys_read_next(void *ctx, int fd, void *buf, size_t n) {
  (void)ctx;
  return sys_read(fd, buf, n, -1);
}

/* fd, opened O_NONBLOCK so that a FIFO's open would not wait for its
 * writer: its stat in *st, and unless it is a FIFO (read by readiness) made
 * blocking again, as the caller's open would have made it (F_SETFL changes
 * only the status flags: O_NONBLOCK is the one we set). */
static bool opened_fifo(int fd, struct stat *st) {
  if (fstat(fd, st) != 0) {
    memset(st, 0, sizeof *st);
    return false;
  }
  if (S_ISFIFO(st->st_mode)) return true;
  (void)fcntl(fd, F_SETFL, 0);
  return false;
}

/* read_all with plain system calls: into f->data / f->len. For a task
 * (f->fifo_back) the open does not wait for a FIFO's writer, which could
 * take for ever and hold the call past its deadline: the FIFO is handed
 * back unread in f->fifo_fd. Anything else but a regular file is read
 * blocking, as the caller opened it. */
static ssize_t sys_read_all(fop *f) {
  int fd = sys_open(f->path, O_RDONLY | (f->fifo_back ? O_NONBLOCK : 0), 0);
  if (fd < 0) return fd;
  size_t size;
  if (f->fifo_back) {
    struct stat st;
    if (opened_fifo(fd, &st)) {
      f->fifo_fd = fd;
      return 0;
    }
    size = size_of(&st);
  } else {
    size = regular_size(fd);
  }
  ssize_t rc = read_to_end(f, fd, size, sys_read_next, NULL);
  close(fd);
  return rc;
}

static ssize_t run_sync(fop *f) {
  switch (f->op) {
  case OP_OPEN:
    return f->fifo_check ? sys_open_checked(f) : sys_open(f->path, f->flags, f->mode);
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
  if (f->op == OP_OPEN && f->res == FIFO_PENDING && f->fifo_fd >= 0) close(f->fifo_fd);
  if (f->op == OP_READ_ALL) {
    free(f->data);
    f->data = NULL;
    if (f->fifo_fd >= 0) close(f->fifo_fd);
    f->fifo_fd = -1;
  }
}

/* --- in place, when the kernel can answer without waiting ----------------
 *
 * Most file work does not wait: the pages are in the page cache and the
 * path's components in the dentry cache. The kernel can be asked to do an
 * operation only if it need not wait (preadv2 with RWF_NOWAIT, openat2 with
 * RESOLVE_CACHED: either says EAGAIN instead), and done on the loop's
 * thread that costs one system call, where a hand-off to the ring or to a
 * pool thread costs a suspension, a completion and a wake-up. Whatever the
 * kernel cannot do at once takes the usual path. A read is done in place up
 * to INLINE_READ_MAX bytes, so that one call never holds the loop for long
 * (copying 256 KiB from the page cache takes tens of microseconds), and the
 * I/O budget (br__io_budget) makes a task that does many in a row yield. */
enum { INLINE_READ_MAX = 256 * 1024 };

/* The read, if the kernel can do it without waiting; BR_EAGAIN otherwise
 * (and for any error: the usual path repeats the call and reports it). A
 * file that does not support RWF_NOWAIT says EOPNOTSUPP at once. */
static ssize_t inline_read(int fd, void *buf, size_t n, int64_t off) {
  if (n > INLINE_READ_MAX) return BR_EAGAIN;
  struct iovec iov = {.iov_base = buf, .iov_len = n};
  ssize_t r;
  do r = preadv2(fd, &iov, 1, off < 0 ? -1 : (off_t)off, RWF_NOWAIT);
  while (r < 0 && errno == EINTR);
  return r < 0 ? BR_EAGAIN : r;
}

static ssize_t inline_read_next(void *ctx, int fd, void *buf, size_t n) {
  (void)ctx;
  return inline_read(fd, buf, n, -1);
}

/* 1: openat2 with RESOLVE_CACHED works here (Linux 5.12), 0: it does not,
 * -1: not tried yet. */
static atomic_int cached_open_works = -1;

/* Open path for reading if every component of it is in the dentry cache;
 * BR_EAGAIN otherwise. O_NONBLOCK, so that opening a FIFO cannot wait for
 * its writer; only regular files and FIFOs (*fifo set) are kept (anything
 * else is closed again and opened by the usual path, with the flags the
 * caller gave). */
static int inline_open_regular(const char *path, size_t *size, bool *fifo) {
#ifdef SYS_openat2
  if (atomic_load_explicit(&cached_open_works, memory_order_relaxed) == 0) return BR_EAGAIN;
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK, .resolve = RESOLVE_CACHED};
  int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
  if (fd < 0) {
    /* These flags are valid everywhere openat2 is: EINVAL means no
     * RESOLVE_CACHED (Linux 5.6 to 5.11). */
    if (errno == ENOSYS || errno == EINVAL)
      atomic_store_explicit(&cached_open_works, 0, memory_order_relaxed);
    return BR_EAGAIN;
  }
  atomic_store_explicit(&cached_open_works, 1, memory_order_relaxed);
  struct stat st;
  bool ok = fstat(fd, &st) == 0;
  *fifo = ok && S_ISFIFO(st.st_mode);
  if (!*fifo && (!ok || !S_ISREG(st.st_mode))) {
    close(fd);
    return BR_EAGAIN;
  }
  *size = !*fifo && st.st_size > 0 ? (size_t)st.st_size : 0;
  return fd;
#else
  (void)path;
  (void)size;
  (void)fifo;
  return BR_EAGAIN;
#endif
}

/* A FIFO opened with O_NONBLOCK, read by readiness, as a socket is: the
 * task waits (within its deadline) for the writer, the loop goes on.
 * Until something arrives, a read of 0 only means that no writer has
 * opened it yet (a blocking open would still be waiting for one); once
 * the FIFO has been readable, 0 is its end: every writer closed it. */
typedef struct fifo_reader {
  int64_t deadline;
  bool readable;
} fifo_reader;

static ssize_t fifo_read_next(void *ctx, int fd, void *buf, size_t n) {
  fifo_reader *fr = ctx;
  for (;;) {
    ssize_t r = read(fd, buf, n);
    if (r > 0 || (r == 0 && fr->readable)) {
      fr->readable = true;
      return r;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN) return -errno;
    int w = br__io_wait(fd, BR_READABLE, fr->deadline);
    if (w < 0) return w;
    fr->readable = true;
  }
}

/* read_all of the FIFO fd (ours: closed here). */
static ssize_t fifo_read_all(fop *f, int fd, int64_t deadline) {
  fifo_reader fr = {.deadline = deadline};
  ssize_t rc = read_to_end(f, fd, 0, fifo_read_next, &fr);
  br_close(fd); /* the loop has waited on it */
  return rc;
}

/* read_all done entirely in place, or BR_EAGAIN (nothing kept) if any step
 * would have to wait. A FIFO is read here by readiness. */
static ssize_t inline_read_all(fop *f, int64_t deadline) {
  size_t size = 0;
  bool fifo = false;
  int fd = inline_open_regular(f->path, &size, &fifo);
  if (fd < 0) return BR_EAGAIN;
  if (fifo) return fifo_read_all(f, fd, deadline);
  if (size >= INLINE_READ_MAX) { /* read by the usual path: no buffer for nothing */
    close(fd);
    return BR_EAGAIN;
  }
  ssize_t rc = read_to_end(f, fd, size, inline_read_next, NULL);
  close(fd);
  return rc;
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

/* A read of a ring read_all: in place if the kernel can do it at once,
 * else through the ring (yielding and retrying when the ring has no room). */
typedef struct ring_reader {
  br_loop *L;
  int64_t deadline;
} ring_reader;

static ssize_t ring_read_next(void *ctx, int fd, void *buf, size_t n) {
  ring_reader *rr = ctx;
  ssize_t r = inline_read(fd, buf, n, -1);
  if (r != BR_EAGAIN) return r;
  for (;;) {
    ssize_t late = -1;
    fop op = {.op = OP_READ, .fd = fd, .buf = buf, .n = n, .off = -1};
    r = ring_one(rr->L, &op, rr->deadline, &late);
    if (r != BR_EAGAIN) return r;
    int y = br_yield();
    if (y < 0) return y;
  }
}

/* read_all on the ring: open, read until end of file, close. */
static ssize_t ring_read_all(br_loop *L, fop *f, int64_t deadline) {
  /* O_NONBLOCK: the open of a FIFO must not wait for its writer (the
   * kernel's worker would hold it past any deadline); a FIFO is read by
   * readiness, anything else blocking, as without the flag. */
  fop o = {.op = OP_OPEN, .path = f->path, .flags = O_RDONLY | O_NONBLOCK};
  ssize_t late = -1;
  ssize_t fd;
  do fd = ring_one(L, &o, deadline, &late);
  while (fd == BR_EAGAIN && br_yield() == 0);
  if (fd < 0) {
    if (late >= 0) close((int)late);
    return fd;
  }
  struct stat st;
  if (opened_fifo((int)fd, &st)) return fifo_read_all(f, (int)fd, deadline);
  ring_reader rr = {.L = L, .deadline = deadline};
  ssize_t rc = read_to_end(f, (int)fd, size_of(&st), ring_read_next, &rr);
  /* Closing a regular file does not block: do it here rather than spend a
   * loop round trip on it. */
  close((int)fd);
  return rc;
}

/* --- dispatch ------------------------------------------------------------- */

static ssize_t run_handed_off(fop *f, int64_t deadline);

/* Whether a read of fd that returned fewer bytes than asked, ending at
 * offset `end` (< 0: at the file's position), stopped short of the end of
 * a regular file: some of the pages it wanted were not in the page cache.
 * A short read of anything else (a pipe, a socket, a device) is final. */
static bool stopped_short(int fd, int64_t end) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (end < 0) end = (int64_t)lseek(fd, 0, SEEK_CUR);
  return end >= 0 && end < (int64_t)st.st_size;
}

/* Run *f by the best path. On success f->res holds the result; the return
 * value is the result or an error (interruption included). */
static ssize_t run_op(fop *f, int64_t deadline) {
  if (!br__in_task()) return f->res = f->op == OP_WRITE ? plain_thread_write(f) : run_sync(f);
  int b = br__io_budget();
  if (b < 0) return b;

  /* In place first, on the ring too: even where the ring would batch the
   * operations of many tasks into one system call, the suspension and
   * wake-up it costs each of them are more than the call saves (10,000
   * cached files, open on the ring then read: 55 ms with the read in place,
   * 90 ms with the read on the ring; bench/files.c). */
  if (f->op == OP_READ_ALL) {
    ssize_t r = inline_read_all(f, deadline);
    if (r != BR_EAGAIN) return f->res = r;
  } else if (f->op == OP_READ) {
    ssize_t r = inline_read(f->fd, f->buf, f->n, f->off);
    if (r >= 0 && ((size_t)r == f->n || r == 0 || !stopped_short(f->fd, f->off < 0 ? -1 : f->off + r)))
      return f->res = r;
    if (r > 0) {
      /* A regular file partly in the page cache: read(2) would wait for
       * the rest, and so does this call (a short read of a regular file
       * means its end). An error after the first part returns that part,
       * as read(2) does. */
      fop rest = *f;
      rest.buf = (char *)f->buf + r;
      rest.n = f->n - (size_t)r;
      if (rest.off >= 0) rest.off += r;
      ssize_t more = run_handed_off(&rest, deadline);
      return f->res = more > 0 ? r + more : r;
    }
  }
  return run_handed_off(f, deadline);
}

/* A read or write of a non-blocking pipe, FIFO, socket or character
 * device (br_pipe's ends, a socket, an fd the user made non-blocking): by
 * readiness, on the loop, as br_read / br_write do. Handed off, the same
 * call said EAGAIN at once from a pool thread and waited past its
 * deadline on the ring (the kernel parks it until data comes); a task's
 * wait keeps to its deadline and cancellation on both. BR_ENOSYS for
 * anything else (a regular file or block device, or a blocking
 * descriptor: the usual path). */
static ssize_t nonblocking_stream(fop *f, int64_t deadline) {
  int fl = fcntl(f->fd, F_GETFL);
  if (fl < 0 || !(fl & O_NONBLOCK)) return BR_ENOSYS; /* EBADF: reported by the usual path */
  struct stat st;
  if (fstat(f->fd, &st) != 0 || S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return BR_ENOSYS;
  bool rd = f->op == OP_READ;
  for (;;) {
    ssize_t r;
    if (rd) r = f->off < 0 ? read(f->fd, f->buf, f->n) : pread(f->fd, f->buf, f->n, (off_t)f->off);
    else r = f->off < 0 ? write(f->fd, f->buf, f->n) : pwrite(f->fd, f->buf, f->n, (off_t)f->off);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    int w = br__io_wait(f->fd, rd ? BR_READABLE : BR_WRITABLE, deadline);
    if (w < 0) return w;
  }
}

/* Run *f on the loop's ring or in the blocking pool (it may wait). */
static ssize_t run_handed_off(fop *f, int64_t deadline) {
  br_loop *L = task_loop();
  if (L && (f->op == OP_READ || f->op == OP_WRITE)) {
    ssize_t r = nonblocking_stream(f, deadline);
    if (r != BR_ENOSYS) return f->res = r;
  }
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
      if (f->op == OP_OPEN && may_wait_fifo(f->flags)) {
        /* The ring opens a FIFO as if O_NONBLOCK were given (see
         * fifo_open_wait): a reader has not waited for its writer, a
         * writer without a reader got ENXIO (which the pool job tells
         * apart from a device's). */
        struct stat st;
        if (r >= 0 && fstat((int)r, &st) == 0 && S_ISFIFO(st.st_mode)) {
          return f->res = fifo_open_wait((int)r, true, f->path, f->flags, deadline);
        }
        if (r == -ENXIO) break;
      }
      return f->res = r;
    }
  }

  /* Blocking pool: the description must live on the heap. */
  fop *h = malloc(sizeof *h);
  if (!h) return BR_ENOMEM;
  *h = *f;
  h->fifo_back = f->op == OP_READ_ALL;
  h->fifo_check = f->op == OP_OPEN && may_wait_fifo(f->flags);
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
  if (f->op == OP_OPEN && f->res == FIFO_PENDING) {
    int anchor = f->fifo_fd;
    f->fifo_fd = -1;
    return f->res = fifo_open_wait(anchor, false, f->path, f->flags, deadline);
  }
  if (f->op == OP_READ_ALL && f->res == 0 && f->fifo_fd >= 0) {
    int fd = f->fifo_fd;
    f->fifo_fd = -1;
    return f->res = fifo_read_all(f, fd, deadline);
  }
  return f->res;
}

int br_file_open(const char *path, int flags, int mode, int64_t deadline) {
  if (!path) return BR_EINVAL;
  fop f = {.op = OP_OPEN, .flags = flags, .mode = mode, .fifo_fd = -1};
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
  /* On the ring the kernel may make the write on the loop's own thread,
   * and a pipe without reader then raises SIGPIPE there: block it, as
   * br_write does, and consume it (the pool job and a plain thread do the
   * same in sys_write). */
  if (br__in_task()) br__block_sigpipe();
  ssize_t r = run_op(&f, deadline);
  if (r == BR_EPIPE && br__in_task()) br__eat_sigpipe();
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
  if (br_loop_current()) br_fd_forget(fd); /* a FIFO may have been waited on */
  if (close(fd) < 0 && errno != EINTR) return -errno;
  return 0;
}

int br_file_read_all(char **out, size_t *len, const char *path, size_t max, int64_t deadline) {
  if (!path || !out) return BR_EINVAL;
  *out = NULL;
  if (len) *len = 0;
  /* No file that fits in memory reaches SIZE_MAX bytes: that limit is no
   * limit (read_to_end sizes its buffer from max + 1, which would wrap to
   * 0 and read nothing). */
  if (max == SIZE_MAX) max = 0;
  fop f = {.op = OP_READ_ALL, .max = max, .fifo_fd = -1};
  f.path = strdup(path);
  if (!f.path) return BR_ENOMEM;
  ssize_t r = run_op(&f, deadline);
  free(f.path);
  if (r < 0) return (int)r;
  *out = f.data;
  if (len) *len = f.len;
  return 0;
}
