/* SPDX-License-Identifier: MIT */
/* files — bench/io_run.py's file workload: read N small files concurrently
 * (one task per file) with br_file_read_all, and again with
 * br_file_open + br_file_read + br_file_close. The backend (epoll: the
 * blocking pool; io_uring: the loop's ring) comes from BRAID_BACKEND.
 *   bench_files DIR N        (creates DIR/f<i> of 1-4 KiB if missing)
 * Prints one JSON line: milliseconds for each variant, bytes read. */
#include <braid.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>

static const char *dir;
static int nfiles;
static long long bytes;

static void *read_all_task(void *arg) {
  char path[512];
  snprintf(path, sizeof path, "%s/f%d", dir, (int)(intptr_t)arg);
  char *data;
  size_t len;
  int rc = br_file_read_all(&data, &len, path, 0, BR_NEVER);
  if (rc) return br_fail(rc, "%s", path);
  bytes += (long long)len;
  free(data);
  return NULL;
}

static void *open_read_task(void *arg) {
  char path[512];
  snprintf(path, sizeof path, "%s/f%d", dir, (int)(intptr_t)arg);
  int fd = br_file_open(path, O_RDONLY, 0, BR_NEVER);
  if (fd < 0) return br_fail(fd, "%s", path);
  char *buf = malloc(8192);
  ssize_t n = br_file_read(fd, buf, 8192, 0, BR_NEVER);
  free(buf);
  br_file_close(fd);
  if (n < 0) return br_fail((int)n, "read");
  bytes += n;
  return NULL;
}

static double run(br_task_fn fn) {
  int64_t t0 = br_now();
  br_group *g;
  if (br_group_new(&g) < 0) return -1;
  for (int i = 0; i < nfiles; i++) br_group_spawn(g, fn, (void *)(intptr_t)i, NULL);
  int rc = br_group_wait(g);
  if (rc) fprintf(stderr, "files: %s\n", br_group_message(g));
  br_group_free(g);
  return rc ? -1 : (double)(br_now() - t0) / 1e6;
}

static void *main_task(void *arg) {
  (void)arg;
  mkdir(dir, 0755);
  for (int i = 0; i < nfiles; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/f%d", dir, i);
    struct stat st;
    if (stat(path, &st) == 0) continue;
    FILE *f = fopen(path, "w");
    int size = 1024 + (i * 37) % 3072;
    for (int k = 0; k < size; k++) fputc('a' + (i + k) % 26, f);
    fclose(f);
  }
  /* Warm the page cache, the pool and the loop's stack cache: a variant
   * whose tasks wait needs a stack for each of them, one that does not
   * reuses a few, and neither should pay for the other's first run. */
  run(read_all_task);
  run(open_read_task);
  bytes = 0;
  double a = run(read_all_task);
  long long b1 = bytes;
  bytes = 0;
  double b = run(open_read_task);
  printf("{\"files\": %d, \"read_all_ms\": %.2f, \"open_read_close_ms\": %.2f, \"bytes\": %lld}\n",
         nfiles, a, b, b1 + bytes);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s DIR N\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  nfiles = atoi(argv[2]);
  return br_run(NULL, main_task, NULL) == 0 ? 0 : 1;
}
