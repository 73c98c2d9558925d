/* SPDX-License-Identifier: MIT */
/* braid — process pool: the fork server process.
 *
 * Who runs this: the fork server, one process per pool, single-threaded.
 * It is the program itself, exec'd from /proc/self/exe by the parent
 * (procpool_spawn.c) with PP_ENV in its environment: the constructor at the
 * end of this file runs before main() in that image, sees the marker and
 * never returns. (Under an emulator that cannot exec the program, the
 * parent forks it instead and calls br__pp_server_main directly.)
 *
 * The server knows nothing of jobs: it forks one worker per PP_M_START
 * request (procpool_worker.c), kills on request, reaps, and reports every
 * exit with its wait status to the parent. Forking from here is cheap
 * (~0.1 ms, the image is small and untouched) and safe (one thread, so no
 * lock can be held by a thread missing in the child). It exits when the
 * parent's end of the control socket closes, killing its workers first;
 * workers die with it (PR_SET_PDEATHSIG), so nothing outlives the pool.
 *
 * Lock rules: none (one thread, blocking poll on the control socket and a
 * signalfd for SIGCHLD).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/procpool_int.h"

/* Referenced by procpool_api.c so that a static link keeps this object (and
 * its constructor) in every program that uses the pool. */
const int br__pp_server_linked = 1;

typedef struct child {
  pid_t pid;
  uint32_t slot;
  uint64_t gen;
} child;

/* The server's children. A global so that it stays reachable in workers
 * (LeakSanitizer runs when a job calls exit()). */
static child *kids;

static int server_send(int ctl, uint32_t type, uint32_t slot, uint64_t gen, int pid, int status,
                       int err) {
  pp_msg m = {.type = type, .slot = slot, .gen = gen, .pid = pid, .status = status, .err = err};
  return br__pp_send_fds(ctl, &m, sizeof m, NULL, 0, 0);
}

static void server_reap(int ctl, size_t nkids) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < nkids; i++) {
      if (kids[i].pid != pid) continue;
      server_send(ctl, PP_M_EXITED, kids[i].slot, kids[i].gen, pid, st, 0);
      kids[i].pid = 0;
      break;
    }
  }
}

_Noreturn void br__pp_server_main(void) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle */
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(2);

  pp_msg m;
  int fds[4], nfd;
  int r = br__pp_recv_fds(PP_CTL_FD, &m, sizeof m, fds, 4, &nfd, 0);
  if (r != (int)sizeof m || m.type != PP_M_CONFIG || nfd != 2) _exit(3);
  int efd = fds[0];
  off_t psz = lseek(fds[1], 0, SEEK_END);
  pp_pool_shm *pool = mmap(NULL, (size_t)psz, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  if (pool == MAP_FAILED) _exit(4);
  close(fds[1]);
  if (server_send(PP_CTL_FD, PP_M_HELLO, 0, 0, (int)getpid(), 0, 0) < 0) _exit(6);

  size_t nkids = 0, capkids = 16;
  kids = calloc(capkids, sizeof *kids);
  if (!kids) _exit(5);
  pid_t self = getpid();

  for (;;) {
    struct pollfd pf[2] = {{.fd = PP_CTL_FD, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    if (poll(pf, 2, -1) < 0 && errno != EINTR) break;
    if (pf[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      server_reap(PP_CTL_FD, nkids);
    }
    if (!pf[0].revents) continue;
    r = br__pp_recv_fds(PP_CTL_FD, &m, sizeof m, fds, 4, &nfd, MSG_DONTWAIT);
    if (r == BR_EAGAIN) continue;
    if (r <= 0) break; /* the parent is gone or shut us down */
    if (m.type == PP_M_KILL) {
      for (size_t i = 0; i < nkids; i++)
        if (kids[i].pid > 0 && kids[i].slot == m.slot && kids[i].gen == m.gen)
          kill(kids[i].pid, SIGKILL);
      continue;
    }
    if (m.type != PP_M_START || nfd != 2) {
      for (int i = 0; i < nfd; i++) close(fds[i]);
      continue;
    }
    size_t k = 0;
    while (k < nkids && kids[k].pid > 0) k++;
    if (k == nkids) {
      if (nkids == capkids) {
        child *nk = realloc(kids, 2 * capkids * sizeof *kids);
        if (!nk) {
          server_send(PP_CTL_FD, PP_M_START_FAILED, m.slot, m.gen, 0, 0, BR_ENOMEM);
          close(fds[0]), close(fds[1]);
          continue;
        }
        kids = nk;
        capkids *= 2;
      }
      nkids++;
    }
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != self) _exit(1);
      close(PP_CTL_FD);
      close(sfd);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      br__pp_worker_main(pool, efd, fds[0], fds[1]);
    }
    close(fds[0]);
    close(fds[1]);
    if (pid < 0) {
      server_send(PP_CTL_FD, PP_M_START_FAILED, m.slot, m.gen, 0, 0, -errno);
      continue;
    }
    kids[k] = (child){.pid = pid, .slot = m.slot, .gen = m.gen};
    server_send(PP_CTL_FD, PP_M_STARTED, m.slot, m.gen, pid, 0, 0);
  }
  /* Shutting down: no worker outlives the server. */
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid > 0) kill(kids[i].pid, SIGKILL);
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  _exit(0);
}

/* Runs before main() in every image of a program linked with the pool. Only
 * the image br_procpool_new() exec'd carries PP_ENV. */
__attribute__((constructor(101))) static void br__pp_server_entry(void) {
  const char *v = getenv(PP_ENV);
  if (!v || strcmp(v, "3") != 0) return;
  unsetenv(PP_ENV);
  int type = 0;
  socklen_t tl = sizeof type;
  if (getsockopt(PP_CTL_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
    /* The marker without our socket: someone else's environment. */
    return;
  }
  br__pp_server_main();
}
