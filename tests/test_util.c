/* SPDX-License-Identifier: MIT */
/* test_util — see test_util.h. */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int br_test_scale(void) {
  static int scale; /* 0: not read yet; racing first reads compute the same value */
  int s = __atomic_load_n(&scale, __ATOMIC_RELAXED);
  if (s == 0) {
    const char *v = getenv("BRAID_TEST_SCALE");
    char *end = NULL;
    long n = v && *v ? strtol(v, &end, 10) : 1;
    s = (end && *end) || n < 1 || n > 1000000 ? 1 : (int)n;
    __atomic_store_n(&scale, s, __ATOMIC_RELAXED);
  }
  return s;
}

long br_test_scaled(long n) {
  long r = n / br_test_scale();
  return r < 1 && n >= 1 ? 1 : r;
}

bool br_test_emulated(void) {
  const char *v = getenv("BRAID_TEST_EMULATED");
  return v && *v && strcmp(v, "0") != 0;
}

void br_test_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("SKIP: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(NULL);
  exit(BR_TEST_SKIP);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append n bytes to the growing buffer *buf (NUL-terminated). */
static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t ncap = *cap ? *cap : 4096;
    while (*len + n + 1 > ncap) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb) return -ENOMEM;
    *buf = nb;
    *cap = ncap;
  }
  memcpy(*buf + *len, data, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

int br_test_run_child(void (*fn)(void *), void *arg, int timeout_ms, br_child_result *out) {
  memset(out, 0, sizeof *out);
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -errno;
  fflush(NULL); /* don't let the child flush the parent's buffered output again */
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return -e;
  }
  if (pid == 0) {
    /* cmocka catches SIGSEGV & co. to fail the running test and go on with
     * the next one: in the child that would run the rest of the suite. Give
     * the crash signals back their default action so a crash kills the child
     * (the code under test may install its own handlers again). */
    static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
      signal(crash_signals[i], SIG_DFL);
    /* No core files from crashes on purpose (qemu-user would also spend
     * seconds writing one). */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    dup2(p[1], STDERR_FILENO); /* dup2 clears O_CLOEXEC on the copy */
    close(p[0]);
    close(p[1]);
    fn(arg);
    fflush(NULL);
    _exit(0);
  }
  close(p[1]);

  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = append(&buf, &len, &cap, "", 0);
  int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
  bool killed = false, reaped = false, eof = false;
  int status = 0;
  /* Read stderr in slices of at most 50 ms so the child is reaped even if a
   * grandchild it left behind keeps the pipe open; once it is reaped, take
   * only what is already buffered. */
  while (!eof) {
    if (!reaped) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) reaped = true;
      else if (w < 0 && errno != EINTR) {
        if (rc == 0) rc = -errno;
        break;
      }
    }
    if (!reaped && !killed && deadline >= 0 && now_ms() >= deadline) {
      kill(pid, SIGKILL);
      killed = true;
    }
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    int n = poll(&pfd, 1, reaped ? 0 : 50);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (reaped) break;
      continue;
    }
    char chunk[4096];
    ssize_t r = read(p[0], chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) eof = true; /* every writer closed stderr */
    else if (rc == 0) rc = append(&buf, &len, &cap, chunk, (size_t)r);
  }
  close(p[0]);
  if (!reaped) {
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
    if (w < 0 && rc == 0) rc = -errno;
  }
  if (rc < 0) {
    free(buf);
    memset(out, 0, sizeof *out);
    return rc;
  }
  out->err = buf;
  out->err_len = len;
  out->timed_out = killed;
  if (WIFEXITED(status)) {
    out->exited = true;
    out->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out->signaled = true;
    out->signo = WTERMSIG(status);
  }
  return 0;
}

bool br_child_crashed(const br_child_result *r) {
  if (r->signaled) return true;
  return r->exited && r->exit_code != 0 && r->err &&
         (strstr(r->err, "AddressSanitizer") || strstr(r->err, "ThreadSanitizer") ||
          strstr(r->err, "UndefinedBehaviorSanitizer") || strstr(r->err, "LeakSanitizer"));
}

void br_child_result_free(br_child_result *r) {
  if (!r) return;
  free(r->err);
  r->err = NULL;
  r->err_len = 0;
}

int br_test_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -errno;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

int64_t br_test_runqueue_ns(void) {
  FILE *f = fopen("/proc/thread-self/schedstat", "re");
  if (!f) return 0;
  unsigned long long run = 0, wait = 0;
  int got = fscanf(f, "%llu %llu", &run, &wait);
  fclose(f);
  return got == 2 ? (int64_t)wait : 0;
}

char *br_test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *b = malloc(cap);
  size_t r;
  while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (cap - n < 2) b = realloc(b, cap *= 2);
  }
  fclose(f);
  b[n] = 0;
  if (len) *len = n;
  return b;
}
