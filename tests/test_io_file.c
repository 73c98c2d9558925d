/* SPDX-License-Identifier: MIT */
/* Files from braid tasks: the ring on io_uring loops, the blocking pool's
 * FILE class on epoll loops, plain system calls on plain threads. Run once
 * per backend. */
#include <braid.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/stat.h>

#include "core/poller.h"
#include "core/loop.h"
#include "test_io_util.h"

static char dir[64];

/* The backend the loop really got (io_uring may have fallen back to epoll,
 * e.g. under qemu-user or seccomp). */
static bool on_uring(void) { return br__loop_poller(br_loop_current())->ops->submit != NULL; }

/* br_file_read_all of path gives exactly want, and with a limit of
 * `small` bytes (less than want's length) BR_E2BIG and nothing. */
static void expect_read_all(const char *path, const char *want, size_t small) {
  char *all = NULL;
  size_t len = 0;
  assert_int_equal(br_file_read_all(&all, &len, path, 0, BR_NEVER), 0);
  assert_int_equal(len, strlen(want));
  assert_string_equal(all, want);
  free(all);
  assert_int_equal(br_file_read_all(&all, &len, path, small, BR_NEVER), BR_E2BIG);
  assert_null(all);
}

static void *body_basic(void *arg) {
  (void)arg;
  br_blocking_stats before, after;
  br_blocking_get_stats(BR_BLOCKING_FILE, &before);
  char path[128];
  snprintf(path, sizeof path, "%s/basic", dir);
  int fd = br_file_open(path, O_CREAT | O_RDWR | O_TRUNC, 0600, BR_NEVER);
  assert_true(fd >= 0);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  /* Positional writes and reads. */
  assert_int_equal(br_file_write(fd, "hello world", 11, 0, BR_NEVER), 11);
  assert_int_equal(br_file_write(fd, "W", 1, 6, BR_NEVER), 1);
  char buf[64] = {0};
  assert_int_equal(br_file_read(fd, buf, sizeof buf, 0, BR_NEVER), 11);
  assert_string_equal(buf, "hello World");
  assert_int_equal(br_file_read(fd, buf, sizeof buf, 11, BR_NEVER), 0); /* EOF */
  /* The file position (offset -1). */
  lseek(fd, 0, SEEK_SET);
  memset(buf, 0, sizeof buf);
  assert_int_equal(br_file_read(fd, buf, 5, -1, BR_NEVER), 5);
  assert_int_equal(br_file_read(fd, buf + 5, 6, -1, BR_NEVER), 6);
  assert_string_equal(buf, "hello World");
  assert_int_equal(br_file_write(fd, "!", 1, -1, BR_NEVER), 1);
  assert_int_equal(br_file_fsync(fd, BR_NEVER), 0);
  assert_int_equal(br_file_close(fd), 0);

  expect_read_all(path, "hello World!", 5);
  char *all = NULL;
  size_t len = 0;

  /* Errors are negated errnos. */
  assert_int_equal(br_file_open("/nonexistent/x", O_RDONLY, 0, BR_NEVER), BR_ENOENT);
  assert_int_equal(br_file_read_all(&all, &len, "/nonexistent/x", 0, BR_NEVER), BR_ENOENT);
  assert_int_equal(br_file_read(-1, buf, 1, 0, BR_NEVER), BR_EBADF);
  unlink(path);

  /* A file bigger than the first read buffer. */
  snprintf(path, sizeof path, "%s/big", dir);
  fd = br_file_open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600, BR_NEVER);
  size_t big = 300000;
  char *data = malloc(big);
  for (size_t i = 0; i < big; i++) data[i] = (char)(i % 251);
  size_t off = 0;
  while (off < big) {
    ssize_t w = br_file_write(fd, data + off, big - off, (int64_t)off, BR_NEVER);
    assert_true(w > 0);
    off += (size_t)w;
  }
  br_file_close(fd);
  assert_int_equal(br_file_read_all(&all, &len, path, 0, BR_NEVER), 0);
  assert_int_equal(len, big);
  assert_memory_equal(all, data, big);
  free(all);
  free(data);
  unlink(path);

  /* On io_uring the pool was not involved at all. */
  br_blocking_get_stats(BR_BLOCKING_FILE, &after);
  if (on_uring())
    assert_int_equal(after.completed, before.completed);
  else
    assert_true(after.completed > before.completed);
  return NULL;
}

static void test_basic(void **state) {
  (void)state;
  io_run(body_basic, NULL);
}

/* --- many files at once, from normal and compact tasks ------------------------ */

static void *read_one(void *arg) {
  int i = (int)(intptr_t)arg;
  char path[128], want[64];
  snprintf(path, sizeof path, "%s/f%d", dir, i);
  int n = snprintf(want, sizeof want, "file number %d\n", i);
  /* A buffer on the task's own stack: for a compact task it must go through
   * a bounce buffer, since that stack is shared while the task waits. */
  char buf[64];
  memset(buf, 0, sizeof buf);
  int fd = br_file_open(path, O_RDONLY, 0, BR_NEVER);
  if (fd < 0) return br_fail(fd, "open %s", path);
  ssize_t r = br_file_read(fd, buf, sizeof buf, 0, BR_NEVER);
  br_file_close(fd);
  if (r != n || memcmp(buf, want, (size_t)n)) return br_fail(BR_EIO, "file %d: got %zd", i, r);
  char *all;
  size_t len;
  int rc = br_file_read_all(&all, &len, path, 0, BR_NEVER);
  if (rc) return br_fail(rc, "read_all");
  rc = len == (size_t)n && !memcmp(all, want, len) ? 0 : BR_EIO;
  free(all);
  return rc ? br_fail(rc, "read_all %d", i) : NULL;
}

static void *body_many(void *arg) {
  (void)arg;
  int n = (int)br_test_scaled(2000);
  for (int i = 0; i < n; i++) {
    char path[128], text[64];
    snprintf(path, sizeof path, "%s/f%d", dir, i);
    int len = snprintf(text, sizeof text, "file number %d\n", i);
    int fd = br_file_open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600, BR_NEVER);
    assert_true(fd >= 0);
    assert_int_equal(br_file_write(fd, text, (size_t)len, 0, BR_NEVER), len);
    br_file_close(fd);
  }
  for (int compact = 0; compact < 2; compact++) {
    br_group *g = NULL;
    (void)br_group_new(&g);
    for (int i = 0; i < n; i++)
      br_group_spawn(g, read_one, (void *)(intptr_t)i,
                     &(br_spawn_opts){.flags = compact ? BR_SPAWN_COMPACT : BR_SPAWN_OWN_STACK});
    int rc = br_group_wait(g);
    if (rc) fprintf(stderr, "%s\n", br_group_message(g));
    assert_int_equal(rc, 0);
    br_group_free(g);
  }
  for (int i = 0; i < n; i++) {
    char path[128];
    snprintf(path, sizeof path, "%s/f%d", dir, i);
    unlink(path);
  }
  return NULL;
}

static void test_many(void **state) {
  (void)state;
  io_run(body_many, NULL);
}

/* --- cancellation and deadlines -------------------------------------------- */

static void *reader_forever(void *arg) {
  (void)arg;
  int fd = br_file_open("/dev/zero", O_RDONLY, 0, BR_NEVER);
  if (fd < 0) return br_fail(fd, "open");
  char buf[256];
  ssize_t r;
  do r = br_file_read(fd, buf, sizeof buf, -1, BR_NEVER);
  while (r > 0);
  br_file_close(fd);
  return (void *)(intptr_t)r;
}

static void *body_cancel(void *arg) {
  (void)arg;
  int fds = br_test_count_fds();
  br_task *t[8];
  for (int i = 0; i < 8; i++) br_spawn(&t[i], reader_forever, NULL, NULL);
  br_sleep_ms(20);
  for (int i = 0; i < 8; i++) br_cancel(t[i]);
  for (int i = 0; i < 8; i++) {
    void *v;
    br_join(t[i], &v);
    assert_int_equal((int)(intptr_t)v, BR_ECANCELED);
  }
  /* A scope deadline interrupts the same way. */
  br_scope s;
  br_scope_enter(&s, br_deadline_ms(20), false);
  void *v = reader_forever(NULL);
  br_scope_exit(&s);
  assert_int_equal((int)(intptr_t)v, BR_ETIMEDOUT);
  /* An open interrupted right away leaves no descriptor behind. */
  for (int i = 0; i < 50; i++) {
    br_scope_enter(&s, br_now() - 1, false);
    int fd = br_file_open("/dev/null", O_RDONLY, 0, BR_NEVER);
    br_scope_exit(&s);
    if (fd >= 0) br_file_close(fd);
  }
  assert_int_equal(br_test_count_fds(), fds);
  return NULL;
}

static void test_cancel(void **state) {
  (void)state;
  io_run(body_cancel, NULL);
}

/* --- in place: what the kernel can do without waiting --------------------- */

/* Whether this kernel (or emulator: qemu-user may lack them) reads without
 * waiting (preadv2 RWF_NOWAIT) and opens from the dentry cache only
 * (openat2 RESOLVE_CACHED): the in-place path needs both. */
static bool in_place_possible(int fd) {
  char c;
  struct iovec iov = {.iov_base = &c, .iov_len = 1};
  if (preadv2(fd, &iov, 1, 0, RWF_NOWAIT) < 0) return false;
#ifdef SYS_openat2
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_CACHED};
  int o = (int)syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
  if (o < 0) return false;
  close(o);
  return true;
#else
  return false;
#endif
}

/* A file just written is in the page cache: reading it from a lone task
 * takes no hand-off (on epoll, no pool job; the same calls on io_uring go
 * in place too, which only the timing would show). */
static void *body_in_place(void *arg) {
  (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/cached", dir);
  int fd = br_file_open(path, O_CREAT | O_RDWR | O_TRUNC, 0600, BR_NEVER);
  assert_true(fd >= 0);
  assert_int_equal(br_file_write(fd, "in the page cache", 17, 0, BR_NEVER), 17);
  br_blocking_stats before, after;
  br_blocking_get_stats(BR_BLOCKING_FILE, &before);
  char buf[64] = {0};
  assert_int_equal(br_file_read(fd, buf, sizeof buf, 0, BR_NEVER), 17);
  assert_string_equal(buf, "in the page cache");
  assert_int_equal(br_file_read(fd, buf, sizeof buf, 17, BR_NEVER), 0);
  lseek(fd, 3, SEEK_SET);
  memset(buf, 0, sizeof buf);
  assert_int_equal(br_file_read(fd, buf, 4, -1, BR_NEVER), 4);
  assert_string_equal(buf, "the ");
  assert_int_equal(lseek(fd, 0, SEEK_CUR), 7); /* the position moved */
  expect_read_all(path, "in the page cache", 16);
  br_blocking_get_stats(BR_BLOCKING_FILE, &after);
  if (in_place_possible(fd))
    assert_int_equal(after.completed, before.completed);
  else
    fprintf(stderr, "(no RWF_NOWAIT or RESOLVE_CACHED here: the reads took the usual path)\n");
  br_file_close(fd);
  unlink(path);
  return NULL;
}

static void test_in_place(void **state) {
  (void)state;
  io_run(body_in_place, NULL);
}

/* The writer of a FIFO: its open waits for the reader's, so it runs only if
 * the reader's open left the loop free. */
static void *fifo_writer(void *arg) {
  const char *path = arg;
  int fd = br_file_open(path, O_WRONLY, 0, BR_NEVER);
  if (fd < 0) return br_fail(fd, "open %s for writing", path);
  ssize_t w = br_file_write(fd, "through a fifo", 14, -1, BR_NEVER);
  br_file_close(fd);
  return w == 14 ? NULL : br_fail(BR_EIO, "write: %zd", w);
}

/* read_all of a FIFO: the open in place must not wait for a writer (it
 * would hold the loop, and the writer is a task of the same loop), and a
 * FIFO is read by the usual path to its end. */
static void *body_fifo(void *arg) {
  (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  br_task *w;
  assert_int_equal(br_spawn(&w, fifo_writer, path, NULL), 0);
  char *all = NULL;
  size_t len = 0;
  assert_int_equal(br_file_read_all(&all, &len, path, 0, BR_NEVER), 0);
  assert_int_equal(len, 14);
  assert_string_equal(all, "through a fifo");
  free(all);
  assert_int_equal(br_join(w, NULL), 0);
  unlink(path);
  return NULL;
}

static void test_fifo_read_all(void **state) {
  (void)state;
  io_run(body_fifo, NULL);
}

/* read_all of a FIFO nobody writes to keeps to its deadline and to
 * cancellation, on every path: in place (the FIFO's own path) and handed
 * off (a /proc/self/fd path, which the in-place open refuses: it is a magic
 * link), where the open used to wait for a writer in the kernel or in a
 * pool thread past any deadline. Nothing leaks; a FIFO reached either way
 * is still read to its end once a writer comes. */
static void *read_all_forever(void *arg) {
  char *all = NULL;
  int rc = br_file_read_all(&all, NULL, arg, 0, BR_NEVER);
  free(all);
  return rc ? br_fail(rc, "read_all") : NULL;
}

/* A writer that does not depend on how br_file_open opens a FIFO for
 * writing: it tries a non-blocking open until the reader has the FIFO open
 * (ENXIO until then), then writes and closes. */
static void *fifo_writer_nb(void *arg) {
  const char *path = arg;
  int fd;
  while ((fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0 && errno == ENXIO) {
    int rc = br_sleep_ms(1);
    if (rc) return br_fail(rc, "waiting for the reader");
  }
  if (fd < 0) return br_fail(-errno, "open %s for writing", path);
  ssize_t w = br_write(fd, "through a fifo", 14, br_deadline_ms(10000));
  br_close(fd);
  return w == 14 ? NULL : br_fail(BR_EIO, "write: %zd", w);
}

static void *body_fifo_deadline(void *arg) {
  (void)arg;
  char path[128], viaproc[64];
  snprintf(path, sizeof path, "%s/lonely-fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  int opath = open(path, O_PATH | O_CLOEXEC);
  assert_true(opath >= 0);
  snprintf(viaproc, sizeof viaproc, "/proc/self/fd/%d", opath);
  const char *paths[] = {path, viaproc};
  for (int i = 0; i < 2; i++) {
    int fds = br_test_count_fds();
    char *all = (char *)1;
    size_t len = 1;
    assert_int_equal(br_file_read_all(&all, &len, paths[i], 0, br_deadline_ms(20)), BR_ETIMEDOUT);
    assert_null(all);
    assert_int_equal(len, 0);
    br_task *t;
    assert_int_equal(br_spawn(&t, read_all_forever, (void *)paths[i], NULL), 0);
    assert_int_equal(br_yield(), 0);
    assert_int_equal(br_cancel(t), 0);
    assert_int_equal(br_join(t, NULL), BR_ECANCELED);
    assert_int_equal(br_test_count_fds(), fds);
    /* With a writer it is read to the end. */
    br_task *w;
    assert_int_equal(br_spawn(&w, fifo_writer_nb, path, NULL), 0);
    assert_int_equal(br_file_read_all(&all, &len, paths[i], 0, br_deadline_ms(10000)), 0);
    assert_int_equal(len, 14);
    assert_string_equal(all, "through a fifo");
    free(all);
    assert_int_equal(br_join(w, NULL), 0);
  }
  close(opath);
  unlink(path);
  return NULL;
}

static void test_fifo_deadline(void **state) {
  (void)state;
  io_run(body_fifo_deadline, NULL);
}

/* Whether page `page` of fd's file is in the page cache. */
static bool page_cached(int fd, size_t page) {
  long ps = sysconf(_SC_PAGESIZE);
  void *m = mmap(NULL, (page + 1) * (size_t)ps, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return true;
  unsigned char vec[64];
  if (page >= sizeof vec) return true;
  bool cached = mincore(m, (page + 1) * (size_t)ps, vec) != 0 || (vec[page] & 1);
  munmap(m, (page + 1) * (size_t)ps);
  return cached;
}

/* A read of a regular file whose first page is cached and the rest is not:
 * the kernel can give the first page at once, but read(2) would have
 * waited for all of it, and so must br_file_read (a short read of a
 * regular file means its end to most callers). */
static void *body_partly_cached(void *arg) {
  (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/partly", dir);
  size_t size = 1 << 20, want = 256 << 10;
  char *data = malloc(size);
  for (size_t i = 0; i < size; i++) data[i] = (char)(i * 7 % 253);
  int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, size), (ssize_t)size);
  assert_int_equal(fsync(fd), 0);
  /* Out of the page cache, then only the first page back in (no
   * read-ahead). On tmpfs nothing leaves the cache: the read is then one
   * in-place read, and only the result is checked. */
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  char one;
  assert_int_equal(pread(fd, &one, 1, 0), 1);
  bool evicted = !page_cached(fd, 8);
  if (!evicted) fprintf(stderr, "(the file stayed in the page cache: no partly cached read)\n");
  br_blocking_stats before, after;
  br_blocking_get_stats(BR_BLOCKING_FILE, &before);
  char *buf = malloc(want);
  assert_int_equal(br_file_read(fd, buf, want, 0, BR_NEVER), (ssize_t)want);
  assert_memory_equal(buf, data, want);
  br_blocking_get_stats(BR_BLOCKING_FILE, &after);
  if (evicted && !on_uring()) assert_true(after.completed > before.completed);
  free(buf);
  free(data);
  close(fd);
  unlink(path);
  return NULL;
}

static void test_partly_cached(void **state) {
  (void)state;
  io_run(body_partly_cached, NULL);
}

/* --- from a plain thread: the calls just block ------------------------------ */

static void *plain_thread(void *arg) {
  (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/plain", dir);
  int fd = br_file_open(path, O_CREAT | O_RDWR | O_TRUNC, 0600, BR_NEVER);
  if (fd < 0) return (void *)1;
  if (br_file_write(fd, "plain", 5, 0, BR_NEVER) != 5) return (void *)2;
  char buf[8] = {0};
  if (br_file_read(fd, buf, 5, 0, BR_NEVER) != 5 || strcmp(buf, "plain")) return (void *)3;
  br_file_close(fd);
  unlink(path);
  /* Socket calls need a task. */
  if (br_read(0, buf, 1, BR_NEVER) != BR_ENOTTASK) return (void *)4;
  return NULL;
}

static void test_plain_thread(void **state) {
  (void)state;
  pthread_t t;
  pthread_create(&t, NULL, plain_thread, NULL);
  void *v;
  pthread_join(t, &v);
  assert_null(v);
}

/* br_file_read_all's limit SIZE_MAX is the largest limit there is, not a
 * limit of nothing: every path (in place for a small cached file, the ring
 * or the pool for a large one, a /proc file that says its size is 0, a
 * plain thread) reads the whole file, and SIZE_MAX - 1 behaves the same. */
static void read_all_no_limit(const char *path, size_t want) {
  const size_t limits[] = {SIZE_MAX, SIZE_MAX - 1, 0};
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    char *all = NULL;
    size_t len = 0;
    assert_int_equal(br_file_read_all(&all, &len, path, limits[i], BR_NEVER), 0);
    assert_non_null(all);
    if (want) assert_int_equal(len, want);
    else assert_true(len > 0);
    free(all);
  }
}

static void *body_read_all_huge_limit(void *arg) {
  (void)arg;
  char path[128];
  const size_t sizes[] = {100, 1 << 20}; /* in place; past the in-place limit */
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    snprintf(path, sizeof path, "%s/limit%zu", dir, i);
    char *data = calloc(1, sizes[i]);
    assert_non_null(data);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, sizes[i]), (ssize_t)sizes[i]);
    close(fd);
    free(data);
    read_all_no_limit(path, sizes[i]);
    if (arg) unlink(path);
  }
  read_all_no_limit("/proc/self/status", 0);
  return NULL;
}

static void test_read_all_huge_limit(void **state) {
  (void)state;
  io_run(body_read_all_huge_limit, NULL);
  /* The test's own thread runs no loop: the plain system calls. */
  body_read_all_huge_limit((void *)1);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/braid-file-test-%d", (int)getpid());
  return mkdir(dir, 0700);
}

static int teardown(void **state) {
  (void)state;
  return rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_basic),
    cmocka_unit_test(test_many),
    cmocka_unit_test(test_cancel),
    cmocka_unit_test(test_in_place),
    cmocka_unit_test(test_fifo_read_all),
    cmocka_unit_test(test_fifo_deadline),
    cmocka_unit_test(test_partly_cached),
    cmocka_unit_test(test_plain_thread),
    cmocka_unit_test(test_read_all_huge_limit),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
