/* SPDX-License-Identifier: MIT */
/* braid — process pool: starting the fork server, in the parent.
 *
 * Who runs this: the parent process — br_procpool_new's caller (any thread)
 * for the first server, then the pool's manager thread when a server dies
 * and is replaced. Lock rule: br_procpool_new holds p->mu while it starts
 * the first server (the manager already runs and waits on it); the manager
 * holds p->mu for a replacement. These functions only set up the server's
 * process and socket; the slots are started by the caller.
 *
 * Why exec: fork() copies only the calling thread, so a child forked from a
 * multi-threaded parent can find a lock (malloc's, stdio's, the program's
 * own) held forever by a thread that does not exist there (cpython#84559).
 * br__pp_server_spawn therefore posix_spawn()s /proc/self/exe — the program
 * itself, a fresh single-threaded image with the same BR_JOB section — with
 * PP_ENV in its environment; procpool_server.c's constructor turns that
 * image into the fork server before main() runs. posix_spawn uses
 * CLONE_VM|CLONE_VFORK and is safe from any thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "exec/procpool_int.h"

extern char **environ;


/* Start the fork server: exec this very program with the marker (see the
 * top of this file for why) and hand it its configuration. posix_spawn
 * reports a failed exec; we do not wait for the server's hello (it would
 * cost a round trip before the first worker is even asked for): requests
 * queue on the socket meanwhile, and a server that exits before its hello
 * breaks the pool (procpool_manager.c, server_died) instead of being
 * restarted in a loop. */
int br__pp_server_spawn(br_procpool *p) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  if (sv[1] == PP_CTL_FD) { /* dup2 onto itself would keep FD_CLOEXEC */
    int d = fcntl(sv[1], F_DUPFD_CLOEXEC, PP_CTL_FD + 1);
    close(sv[1]);
    sv[1] = d;
  }
  size_t nenv = 0;
  while (environ && environ[nenv]) nenv++;
  char **envp = calloc(nenv + 2, sizeof *envp);
  int err = 0;
  if (!envp || sv[1] < 0) {
    err = BR_ENOMEM;
    goto out;
  }
  /* The marker with the pool's key (procpool_server.c checks that the
   * CONFIG message below carries the same one before anything runs). */
  char mark[sizeof PP_ENV + 3 + 2 * PP_KEY_LEN];
  int n = snprintf(mark, sizeof mark, PP_ENV "=3:");
  for (int i = 0; i < PP_KEY_LEN; i++)
    n += snprintf(mark + n, sizeof mark - (size_t)n, "%02x", p->pshm->key[i]);
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], PP_ENV "=", sizeof PP_ENV) != 0) envp[k++] = environ[i];
  envp[k++] = mark;
  envp[k] = NULL;

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], PP_CTL_FD);
  posix_spawn_file_actions_addclosefrom_np(&fa, PP_CTL_FD + 1);
  posix_spawnattr_init(&at);
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGCHLD);
  sigaddset(&dfl, SIGPIPE);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char *argv[] = {"braid-procpool-server", NULL};
  pid_t pid;
  int r = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (r != 0) {
    err = r == ENOENT || r == EACCES || r == ENOEXEC ? BR_ENOSYS : -r;
    goto out;
  }
  close(sv[1]);
  sv[1] = -1;
  int fds[2] = {p->efd, p->pshm_fd};
  pp_config_msg m = {.m.type = PP_M_CONFIG};
  memcpy(m.key, p->pshm->key, sizeof m.key);
  err = br__pp_send_fds(sv[0], &m, sizeof m, fds, 2, 0);
  if (err < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    goto out;
  }
  p->server_pid = pid;
  p->server_hello = false;
  p->ctl = sv[0];
  sv[0] = -1;
out:
  free(envp);
  if (sv[0] >= 0) close(sv[0]);
  if (sv[1] >= 0) close(sv[1]);
  return err;
}

/* The fallback when exec'ing the program is impossible although
 * posix_spawn reported success: under qemu-user without binfmt_misc, vfork
 * is emulated by fork and the exec of the foreign binary fails in the child
 * (status 127). Fork the server from here instead. This is the one place
 * braid forks a process that may have other threads, so it says so once
 * (BR_LOG_WARN): a job that takes a lock another thread held at this moment (a
 * stdio stream, say) would wait forever. The server itself only uses system
 * calls and malloc, which glibc makes safe in a forked child. */
int br__pp_server_fork(br_procpool *p, bool warn) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  static atomic_bool warned;
  if (warn && !atomic_exchange(&warned, true))
    br__log(BR_LOG_WARN, "cannot exec /proc/self/exe (an emulator without binfmt_misc?); "
                         "forking the process pool's server from this process instead");
  pid_t pid = fork();
  if (pid < 0) {
    int e = -errno;
    close(sv[0]);
    close(sv[1]);
    return e;
  }
  if (pid == 0) {
    if (dup2(sv[1], PP_CTL_FD) < 0) _exit(126);
    if (syscall(SYS_close_range, PP_CTL_FD + 1, ~0U, 0) < 0)
      for (int fd = PP_CTL_FD + 1; fd < 65536; fd++) close(fd);
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    br__pp_server_main(p->pshm->key);
  }
  close(sv[1]);
  int fds[2] = {p->efd, p->pshm_fd};
  pp_config_msg m = {.m.type = PP_M_CONFIG};
  memcpy(m.key, p->pshm->key, sizeof m.key);
  int err = br__pp_send_fds(sv[0], &m, sizeof m, fds, 2, 0);
  if (err < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(sv[0]);
    return err;
  }
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  p->server_pid = pid;
  p->server_hello = false;
  p->server_forked = true;
  p->ctl = sv[0];
  return 0;
}

/* Close the control socket (the server then kills its workers and exits)
 * and reap the server. Returns its wait status, -1 if there was none. */
int br__pp_server_stop(br_procpool *p) {
  int st = -1;
  if (p->ctl >= 0) {
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->ctl, NULL);
    close(p->ctl);
    p->ctl = -1;
  }
  if (p->server_pid > 0) {
    while (waitpid(p->server_pid, &st, 0) < 0 && errno == EINTR) {
    }
    p->server_pid = 0;
  }
  return st;
}

