/* SPDX-License-Identifier: MIT */
/* braid — child processes (asyncio.create_subprocess_exec).
 *
 * Spawning uses posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), so even a
 * large parent spawns in microseconds, and a failed exec is reported by the
 * call itself). The child gets pipe ends as its standard streams, a clean
 * signal mask and default dispositions (the parent may block SIGPIPE and
 * signalfd signals); every other descriptor of ours is close-on-exec.
 *
 * Waiting uses a pidfd (Linux 5.3), which becomes readable when the child
 * exits: the task waits on it like on a socket and reaps with waitpid. On
 * kernels without pidfd the wait polls waitpid with a growing sleep.
 *
 * Pipe ends: the parent's end is non-blocking, the child's is blocking
 * (most programs do not expect EAGAIN on their stdin/stdout) — two pipe2
 * calls without O_NONBLOCK, then O_NONBLOCK on our end only (the flag
 * belongs to each end's open file description).
 */
#include <braid.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/trace.h"
#include "io/io_internal.h"

extern char **environ;

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  return fd < 0 ? -errno : fd;
#else
  (void)pid;
  return -ENOSYS;
#endif
}

static int make_pipe(int fds[2], bool parent_reads) {
  if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
  int ours = parent_reads ? fds[0] : fds[1];
  int fl = fcntl(ours, F_GETFL);
  if (fl < 0 || fcntl(ours, F_SETFL, fl | O_NONBLOCK) < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    return -e;
  }
  return 0;
}

int br_process_spawn(br_process *p, const char *const argv[], const br_process_opts *opts) {
  if (!p || !argv || !argv[0]) return BR_EINVAL;
  br_process_opts o = opts ? *opts : (br_process_opts){0};
  p->pid = -1;
  p->in = p->out = p->err = -1;
  p->br__private.pidfd = -1;
  p->br__private.status = 0;
  p->br__private.reaped = false;
  if (o.in == BR_STDIO_STDOUT || o.out == BR_STDIO_STDOUT) return BR_EINVAL;

  br_stdio modes[3] = {o.in, o.out, o.err};
  int given[3] = {o.in_fd, o.out_fd, o.err_fd};
  int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int rc = 0;
  bool fa_init = false, attr_init = false;

  for (int i = 0; i < 3; i++) {
    if (modes[i] == BR_STDIO_PIPE) {
      rc = make_pipe(pipes[i], i != 0);
      if (rc) goto fail;
    } else if (modes[i] == BR_STDIO_FD && given[i] < 0) {
      rc = BR_EBADF;
      goto fail;
    }
  }
  if ((rc = posix_spawn_file_actions_init(&fa))) {
    rc = -rc;
    goto fail;
  }
  fa_init = true;
  for (int i = 0; i < 3 && !rc; i++) {
    switch (modes[i]) {
    case BR_STDIO_INHERIT:
      break;
    case BR_STDIO_PIPE:
      rc = posix_spawn_file_actions_adddup2(&fa, i == 0 ? pipes[i][0] : pipes[i][1], i);
      break;
    case BR_STDIO_NULL:
      rc = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
      break;
    case BR_STDIO_FD:
      rc = posix_spawn_file_actions_adddup2(&fa, given[i], i);
      break;
    case BR_STDIO_STDOUT:
      rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
      break;
    default:
      rc = EINVAL;
    }
  }
  if (!rc && o.cwd) rc = posix_spawn_file_actions_addchdir_np(&fa, o.cwd);
  if (rc) {
    rc = -rc;
    goto fail;
  }
  if ((rc = posix_spawnattr_init(&attr))) {
    rc = -rc;
    goto fail;
  }
  attr_init = true;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid;
  char *const *envp = o.envp ? o.envp : environ;
  if (o.search_path)
    rc = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, envp);
  else
    rc = posix_spawn(&pid, argv[0], &fa, &attr, (char *const *)argv, envp);
  if (rc) {
    rc = -rc;
    goto fail;
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);

  p->pid = pid;
  /* Close the child's ends; keep ours. */
  for (int i = 0; i < 3; i++) {
    if (pipes[i][0] < 0) continue;
    close(i == 0 ? pipes[i][0] : pipes[i][1]);
  }
  p->in = pipes[0][1];
  p->out = pipes[1][0];
  p->err = pipes[2][0];
  int pfd = pidfd_open_(pid);
  p->br__private.pidfd = pfd >= 0 ? pfd : -1;
  return 0;

fail:
  if (fa_init) posix_spawn_file_actions_destroy(&fa);
  if (attr_init) posix_spawnattr_destroy(&attr);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      if (pipes[i][j] >= 0) close(pipes[i][j]);
  return rc;
}

static int decode(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return -WTERMSIG(st);
  return st;
}

/* Reap without waiting: 1 if reaped, 0 if still running, or an error. */
static int try_reap(br_process *p) {
  if (p->br__private.reaped) return 1;
  int st;
  pid_t r;
  do r = waitpid(p->pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  if (r == 0) return 0;
  p->br__private.status = decode(st);
  p->br__private.reaped = true;
  return 1;
}

int br_process_wait(br_process *p, int *status, int64_t deadline) {
  if (!p || p->pid <= 0) return BR_EINVAL;
  if (!p->br__private.reaped && !br__in_task()) return BR_ENOTTASK;
  int64_t backoff = 1000000;
  for (;;) {
    int r = try_reap(p);
    if (r < 0) return r;
    if (r == 1) {
      if (status) *status = p->br__private.status;
      return 0;
    }
    if (p->br__private.pidfd >= 0) {
      br__wait_hint(BR_WAIT_CHILD, "child", p->pid);
      r = br__io_wait(p->br__private.pidfd, BR_READABLE, deadline);
      br__wait_unhint();
    } else {
      int64_t now = br_now();
      if (now >= deadline) return BR_ETIMEDOUT;
      r = br_sleep_until(br__min64(now + backoff, deadline));
      backoff = br__min64(backoff * 2, 50000000);
    }
    if (r < 0) return r;
  }
}

int br_process_kill(br_process *p, int sig) {
  if (!p || p->pid <= 0) return BR_EINVAL;
  if (p->br__private.reaped) return BR_ESRCH;
#ifdef SYS_pidfd_send_signal
  if (p->br__private.pidfd >= 0) {
    /* Through the pidfd: immune to the pid being reused. */
    if (syscall(SYS_pidfd_send_signal, p->br__private.pidfd, sig, NULL, 0) == 0) return 0;
    if (errno != ENOSYS) return -errno;
  }
#endif
  return kill(p->pid, sig) < 0 ? -errno : 0;
}

void br_process_close(br_process *p) {
  if (!p) return;
  if (p->in >= 0) br_close(p->in);
  if (p->out >= 0) br_close(p->out);
  if (p->err >= 0) br_close(p->err);
  p->in = p->out = p->err = -1;
  if (p->pid > 0 && !p->br__private.reaped && try_reap(p) == 0) {
    br_process_kill(p, SIGKILL);
    int st = 0;
    pid_t r;
    while ((r = waitpid(p->pid, &st, 0)) < 0 && errno == EINTR) {
    }
    /* Not ours to reap any more (SIGCHLD ignored: the kernel reaped it):
     * the kill is all that is known of its end. */
    p->br__private.status = r == p->pid ? decode(st) : -SIGKILL;
    p->br__private.reaped = true;
  }
  if (p->br__private.pidfd >= 0) br_close(p->br__private.pidfd);
  p->br__private.pidfd = -1;
}

/* --- communicate ---------------------------------------------------------- */

typedef struct sink {
  int fd;
  char *buf;
  size_t len, cap;
  int64_t deadline;
  int rc;
} sink;

static void *drain(void *arg) {
  sink *s = arg;
  for (;;) {
    if (s->cap - s->len < 4096) {
      size_t ncap = s->cap ? s->cap * 2 : 8192;
      char *nb = realloc(s->buf, ncap + 1);
      if (!nb) {
        s->rc = BR_ENOMEM;
        return NULL;
      }
      s->buf = nb;
      s->cap = ncap;
    }
    ssize_t r = br_read(s->fd, s->buf + s->len, s->cap - s->len, s->deadline);
    if (r < 0) {
      s->rc = (int)r;
      return NULL;
    }
    if (r == 0) break;
    s->len += (size_t)r;
  }
  if (s->buf) s->buf[s->len] = '\0';
  return NULL;
}

typedef struct feed {
  br_process *p;
  const void *data;
  size_t len;
  int64_t deadline;
  int rc;
} feed;

static void *feed_stdin(void *arg) {
  feed *f = arg;
  if (f->len) {
    ssize_t r = br_write(f->p->in, f->data, f->len, f->deadline);
    /* A child that exits without reading all its input is not an error
     * (asyncio ignores BrokenPipeError here too). */
    if (r < 0 && r != BR_EPIPE && r != BR_ECONNRESET) f->rc = (int)r;
  }
  br_close(f->p->in);
  f->p->in = -1;
  return NULL;
}

int br_process_communicate(br_process *p, char **out, size_t *out_len, char **err,
                           size_t *err_len, int *status, const void *input, size_t in_len,
                           int64_t deadline) {
  if (!p) return BR_EINVAL;
  if (!br__in_task()) return BR_ENOTTASK;
  if (out) *out = NULL;
  if (err) *err = NULL;
  if (out_len) *out_len = 0;
  if (err_len) *err_len = 0;
  /* The helpers' state lives on the heap: the tasks share it while the
   * caller is suspended (the caller may be a compact task). */
  struct {
    feed f;
    sink so, se;
  } *st = calloc(1, sizeof *st);
  if (!st) return BR_ENOMEM;
  st->f = (feed){.p = p, .data = input, .len = in_len, .deadline = deadline};
  st->so = (sink){.fd = p->out, .deadline = deadline};
  st->se = (sink){.fd = p->err, .deadline = deadline};

  br_task *tin = NULL, *terr = NULL;
  int rc = 0;
  void *in_copy = NULL;
  if (p->in >= 0) {
    if (in_len) {
      in_copy = malloc(in_len);
      if (!in_copy) {
        rc = BR_ENOMEM;
        goto done;
      }
      memcpy(in_copy, input, in_len);
      st->f.data = in_copy;
    }
    rc = br_spawn(&tin, feed_stdin, &st->f, &(br_spawn_opts){.name = "communicate-stdin"});
    if (rc) goto done;
  }
  if (p->err >= 0) {
    rc = br_spawn(&terr, drain, &st->se, &(br_spawn_opts){.name = "communicate-stderr"});
    if (rc) goto done;
  }
  if (p->out >= 0) drain(&st->so);

done:
  /* Join the helpers whatever happened (joining a cancelled caller cancels
   * them and still waits, so nothing outlives this call). */
  if (tin) br_join(tin, NULL);
  if (terr) br_join(terr, NULL);
  if (!rc) rc = st->so.rc ? st->so.rc : st->se.rc ? st->se.rc : st->f.rc;
  if (!rc) rc = br_process_wait(p, status, deadline);
  /* Streams that gave nothing (or were not pipes) hand back "". */
  if (!rc && out && !st->so.buf && !(st->so.buf = calloc(1, 1))) rc = BR_ENOMEM;
  if (!rc && err && !st->se.buf && !(st->se.buf = calloc(1, 1))) rc = BR_ENOMEM;
  if (!rc) {
    if (out) {
      *out = st->so.buf;
      st->so.buf = NULL;
      if (out_len) *out_len = st->so.len;
    }
    if (err) {
      *err = st->se.buf;
      st->se.buf = NULL;
      if (err_len) *err_len = st->se.len;
    }
  }
  free(st->so.buf);
  free(st->se.buf);
  free(st);
  free(in_copy);
  return rc;
}
