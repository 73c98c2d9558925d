/* SPDX-License-Identifier: MIT */
/* braid — process pool: the process's fork server, from the parent's side.
 *
 * One fork server per process, shared by every pool (like Python's
 * multiprocessing forkserver): the first br_procpool_new starts it, later
 * pools reuse it, and it stays after the last pool is gone, so a pool costs
 * no exec. Each pool attaches its own connection to it
 * (procpool_shm.h: control messages): br__pp_server_attach, and the two
 * ways a pool leaves, br__pp_server_detach (shutdown: every worker of the
 * pool is reaped when it returns) and br__pp_server_lost (the server died
 * under it: this reaps the server and says how it ended). The server exits
 * when this process does (or execs): its socket's last end here closes.
 *
 * Who runs this: br_procpool_new's caller (any thread) and the pools'
 * manager threads. Lock rules: `srv` is guarded by srv.mu. Callers may hold
 * their pool's p->mu (br_procpool_new and the manager both do); srv.mu is
 * taken after it and never held while a pool's mutex is taken, so the
 * order is always p->mu, then srv.mu. Starting a server (an exec, ~0.3 ms)
 * and reaping a dead one happen under srv.mu: pools being created meanwhile
 * wait for that server anyway.
 *
 * Why exec: fork() copies only the calling thread, so a child forked from a
 * multi-threaded parent can find a lock (malloc's, stdio's, the program's
 * own) held forever by a thread that does not exist there (cpython#84559).
 * spawn_exec therefore posix_spawn()s /proc/self/exe — the program itself,
 * a fresh single-threaded image with the same BR_JOB section — with PP_ENV
 * in its environment; procpool_server.c's constructor turns that image into
 * the fork server before main() runs. posix_spawn uses CLONE_VM|CLONE_VFORK
 * and is safe from any thread.
 *
 * fork() of this process: the child must not talk to its parent's server
 * (the server is not its child, and would outlive the parent while the
 * child holds its socket). A pthread_atfork child handler closes the copy
 * of the socket and forgets the server; the child starts its own when it
 * creates a pool. A descriptor the program closed behind our back (and
 * perhaps reused) is recognized by its inode and never written to.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "exec/procpool_int.h"
#include "sys/emulated.h"

extern char **environ;

/* The process's fork server. Every field: mu. */
static struct {
  pthread_mutex_t mu;
  bool atfork;          /* the fork handler is registered */
  bool have_key;
  uint8_t key[PP_KEY_LEN]; /* the start key of this process's servers and workers */
  pid_t pid;            /* the running server, 0: none */
  int fd;               /* our end of its socket, -1: none */
  dev_t dev;            /* fd's identity: a descriptor closed and reused is not ours */
  ino_t ino;
  uint64_t gen;         /* servers started by this process */
  bool forked;          /* fork servers instead of exec'ing them (emulator, or exec failed) */
  uint64_t lost_gen;    /* the last server reaped after it died ... */
  int lost_status;      /* ... and its wait status */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

/* In the child of a fork(): forget the parent's server (see the top). The
 * mutex may have been held by another thread of the parent. */
static void srv_atfork_child(void) {
  pthread_mutex_init(&srv.mu, NULL);
  if (srv.fd >= 0) close(srv.fd);
  srv.fd = -1;
  srv.pid = 0;
  srv.have_key = false;
  srv.lost_gen = 0;
}

/* srv.fd still is the socket we made. */
static bool srv_fd_ours(void) {
  struct stat st;
  return srv.fd >= 0 && fstat(srv.fd, &st) == 0 && st.st_dev == srv.dev && st.st_ino == srv.ino;
}

/* Hand a freshly started server (pid, our end of its socket) its
 * configuration and make it the process's server. */
static int srv_adopt(pid_t pid, int fd) {
  pp_config_msg m = {.m.type = PP_M_CONFIG};
  memcpy(m.key, srv.key, sizeof m.key);
  struct stat st;
  int err = br__pp_send_fds(fd, &m, sizeof m, NULL, 0, 0);
  if (err == 0 && fstat(fd, &st) < 0) err = -errno;
  if (err < 0) {
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close(fd);
    return err;
  }
  srv.pid = pid;
  srv.fd = fd;
  srv.dev = st.st_dev;
  srv.ino = st.st_ino;
  srv.gen++;
  return 0;
}

/* Start the fork server: exec this very program with the marker (see the
 * top of this file for why). posix_spawn reports a failed exec; we do not
 * wait for the server to be ready (it would cost a round trip before the
 * first worker is even asked for): messages queue on the sockets meanwhile,
 * and a server that exits before its hello breaks the pool
 * (procpool_manager.c, server_died) instead of being restarted in a loop. */
static int spawn_exec(void) {
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
  /* The marker with the key (procpool_server.c checks that the CONFIG
   * message carries the same one before anything runs). */
  char mark[sizeof PP_ENV + 3 + 2 * PP_KEY_LEN];
  int n = snprintf(mark, sizeof mark, PP_ENV "=3:");
  for (int i = 0; i < PP_KEY_LEN; i++)
    n += snprintf(mark + n, sizeof mark - (size_t)n, "%02x", srv.key[i]);
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
  err = srv_adopt(pid, sv[0]);
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
static int spawn_fork(bool warn) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  static atomic_bool warned;
  if (warn && !atomic_exchange(&warned, true))
    br__log(BR_LOG_WARN, "cannot exec /proc/self/exe (an emulator without binfmt_misc?); "
                         "forking the process pool's server from this process instead");
  uint8_t key[PP_KEY_LEN];
  memcpy(key, srv.key, sizeof key);
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
    br__pp_server_main(key);
  }
  close(sv[1]);
  return srv_adopt(pid, sv[0]);
}

/* The running server is gone or unusable: make sure it is dead, reap it
 * and remember how it ended. srv.mu held. */
static void srv_reap(void) {
  int st = -1;
  if (srv_fd_ours()) close(srv.fd);
  srv.fd = -1;
  /* It closes a pool's connection only after that pool's STOP, and its own
   * socket only as it exits, so it is ending already; a SIGKILL to a
   * process in exit changes nothing, and one that lingers is of no use.
   * Signal it only while it is still our unreaped child: if the program
   * reaped it (SIGCHLD ignored, wait(-1)), its pid may be someone else's. */
  pid_t r;
  while ((r = waitpid(srv.pid, &st, WNOHANG)) < 0 && errno == EINTR) {
  }
  if (r == 0) {
    kill(srv.pid, SIGKILL);
    while ((r = waitpid(srv.pid, &st, 0)) < 0 && errno == EINTR) {
    }
  }
  if (r <= 0) st = -1;
  srv.lost_gen = srv.gen;
  srv.lost_status = st;
  srv.pid = 0;
}

int br__pp_server_attach(br_procpool *p, bool fork_server) {
  pthread_mutex_lock(&srv.mu);
  int err = 0;
  if (!srv.atfork) {
    err = -pthread_atfork(NULL, NULL, srv_atfork_child);
    if (err < 0) goto out;
    srv.atfork = true;
  }
  if (!srv.have_key) {
    if (getrandom(srv.key, sizeof srv.key, 0) != (ssize_t)sizeof srv.key) {
      err = -errno;
      goto out;
    }
    srv.have_key = true;
  }
  /* Workers check the pool page carries the key their server was given. */
  memcpy(p->pshm->key, srv.key, sizeof srv.key);
  /* Under a user-mode emulator the exec of /proc/self/exe cannot work
   * without binfmt_misc, and qemu's emulation of the failed vfork+exec
   * leaves it unable to create threads afterwards: fork the server. Once
   * an exec'd server exited 127 before its hello (fork_server), so do all
   * later ones. */
  bool warn = fork_server && !srv.forked;
  if (fork_server || br__emulated()) srv.forked = true;
  int conn[2] = {-1, -1};
  for (int tries = 0; tries < 2; tries++) {
    if (srv.pid && !srv_fd_ours()) srv_reap(); /* the program closed our socket */
    if (!srv.pid) {
      err = srv.forked ? spawn_fork(warn) : spawn_exec();
      if (err < 0) goto out;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, conn) < 0) {
      err = -errno;
      goto out;
    }
    pp_msg m = {.type = PP_M_ATTACH};
    err = br__pp_send_fds(srv.fd, &m, sizeof m, &conn[1], 1, 0);
    close(conn[1]);
    if (err == 0) break;
    close(conn[0]);
    conn[0] = -1;
    if (err != BR_EPIPE && err != BR_ECONNRESET && err != BR_ENOTCONN) goto out;
    srv_reap(); /* it died since the last pool: start another */
  }
  if (err < 0) goto out;
  fcntl(conn[0], F_SETFL, O_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, conn[0], &ev) < 0) {
    err = -errno;
    close(conn[0]);
    goto out;
  }
  p->ctl = conn[0];
  p->server_pid = srv.pid;
  p->server_gen = srv.gen;
  p->server_forked = srv.forked;
  p->server_hello = false;
out:
  pthread_mutex_unlock(&srv.mu);
  return err;
}

static void conn_close(br_procpool *p) {
  epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->ctl, NULL);
  close(p->ctl);
  p->ctl = -1;
}

void br__pp_server_detach(br_procpool *p) {
  if (p->ctl < 0) return;
  pp_msg m = {.type = PP_M_STOP};
  if (br__pp_send_fds(p->ctl, &m, sizeof m, NULL, 0, 0) == 0) {
    /* The server closes our connection once every worker of this pool is
     * reaped; what it reports meanwhile is of no use any more. */
    for (;;) {
      struct pollfd pf = {.fd = p->ctl, .events = POLLIN};
      if (poll(&pf, 1, -1) < 0 && errno != EINTR) break;
      int fds[4], nfd;
      int r = br__pp_recv_fds(p->ctl, &m, sizeof m, fds, 4, &nfd, MSG_DONTWAIT);
      for (int i = 0; r > 0 && i < nfd; i++) close(fds[i]);
      if (r == 0 || (r < 0 && r != BR_EAGAIN && r != BR_EINTR)) break;
    }
  }
  conn_close(p);
}

int br__pp_server_lost(br_procpool *p) {
  if (p->ctl >= 0) conn_close(p);
  pthread_mutex_lock(&srv.mu);
  if (srv.pid && srv.gen == p->server_gen) srv_reap();
  int st = srv.lost_gen == p->server_gen ? srv.lost_status : -1;
  pthread_mutex_unlock(&srv.mu);
  return st;
}

void br__pp_server_peek(pid_t *pid, uint64_t *started) {
  pthread_mutex_lock(&srv.mu);
  if (pid) *pid = srv.pid;
  if (started) *started = srv.gen;
  pthread_mutex_unlock(&srv.mu);
}
