/* SPDX-License-Identifier: MIT */
/* braid — process pool: the fork server process.
 *
 * Who runs this: the fork server, one process per pool, single-threaded
 * unless a shared library started threads before our constructor ran (then
 * it execs its workers instead of forking them; see br__pp_server_entry).
 * It is the program itself, exec'd from /proc/self/exe by the parent
 * (procpool_spawn.c) with PP_ENV in its environment: the constructor at the
 * end of this file runs before main() in that image, checks the marker and
 * never returns. (Under an emulator that cannot exec the program, the
 * parent forks it instead and calls br__pp_server_main directly.) An exec'd
 * worker passes through the same constructor (worker_entry).
 *
 * The server knows nothing of jobs: it forks one worker per PP_M_START
 * request (procpool_worker.c), kills on request, reaps, and reports every
 * exit with its wait status to the parent. Forking from here is cheap
 * (~0.1 ms, the image is small and untouched) and safe (one thread, so no
 * lock can be held by a thread missing in the child). It exits when the
 * parent's end of the control socket closes, killing its workers first;
 * workers die with it (PR_SET_PDEATHSIG), so nothing outlives the pool.
 *
 * Lock rules: none (the server's own work is one thread: blocking poll on
 * the control socket and a signalfd for SIGCHLD, plus a periodic reap when
 * other threads exist and may take the signal).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/procpool_int.h"

extern char **environ;

#define PP_REAP_POLL_MS 20       /* reaping without a reliable SIGCHLD (threads) */
#define PP_CONFIG_WAIT_MS 30000  /* the parent sends CONFIG right after the exec */

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

/* Receive the CONFIG message on the control socket and check its key
 * (constant time). 0 with the eventfd and pool page descriptors, or -1
 * (nothing received, a wrong message, a wrong key: the descriptors are
 * closed). Waits at most timeout_ms for the message. */
static int server_config(const uint8_t *key, int timeout_ms, int *efd, int *pfd) {
  struct pollfd pf = {.fd = PP_CTL_FD, .events = POLLIN};
  int pr;
  do pr = poll(&pf, 1, timeout_ms);
  while (pr < 0 && errno == EINTR);
  if (pr <= 0) return -1;
  pp_config_msg c;
  int fds[4], nfd;
  int r = br__pp_recv_fds(PP_CTL_FD, &c, sizeof c, fds, 4, &nfd, MSG_DONTWAIT);
  unsigned diff = 0;
  for (int i = 0; i < PP_KEY_LEN; i++) diff |= (unsigned)(c.key[i] ^ key[i]);
  if (r != (int)sizeof c || c.m.type != PP_M_CONFIG || nfd != 2 || diff) {
    for (int i = 0; r >= 0 && i < nfd; i++) close(fds[i]);
    return -1;
  }
  *efd = fds[0];
  *pfd = fds[1];
  return 0;
}

/* Start a worker for slot region slot_fd and socket sock: fork it (one
 * thread here, nothing can be held), or, when this process has threads of
 * its own (exec_workers), exec the program again in worker mode. Returns the
 * pid or a negative code. */
static pid_t server_start_worker(pp_pool_shm *pool, int efd, int pfd, int sfd, int slot_fd,
                                 int sock, bool exec_workers, pid_t self) {
  if (!exec_workers) {
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != self) _exit(1);
      close(PP_CTL_FD);
      close(sfd);
      sigset_t chld;
      sigemptyset(&chld);
      sigaddset(&chld, SIGCHLD);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      br__pp_worker_main(pool, efd, slot_fd, sock);
    }
    return pid < 0 ? -errno : pid;
  }
  /* The marker names us and carries the key (the pool page has it too:
   * the worker compares them before it runs anything). */
  char mark[sizeof PP_ENV + 32 + 2 * PP_KEY_LEN];
  int n = snprintf(mark, sizeof mark, PP_ENV "=w:%d:", (int)self);
  for (int i = 0; i < PP_KEY_LEN; i++)
    n += snprintf(mark + n, sizeof mark - (size_t)n, "%02x", pool->key[i]);
  size_t nenv = 0;
  while (environ && environ[nenv]) nenv++;
  char **envp = calloc(nenv + 2, sizeof *envp);
  if (!envp) return BR_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], PP_ENV "=", sizeof PP_ENV) != 0) envp[k++] = environ[i];
  envp[k++] = mark;
  envp[k] = NULL;
  /* Descriptors to 3..6 in that order. dup2 onto a descriptor that another
   * source still needs would lose it, so first move all four above 6. */
  int src[4] = {pfd, efd, slot_fd, sock}, hi[4];
  for (int i = 0; i < 4; i++) hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 7);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  for (int i = 0; i < 4; i++) posix_spawn_file_actions_adddup2(&fa, hi[i], PP_CTL_FD + i);
  posix_spawn_file_actions_addclosefrom_np(&fa, PP_CTL_FD + 4);
  posix_spawnattr_init(&at);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
  char *argv[] = {"braid-procpool-worker", NULL};
  pid_t pid;
  int r = (hi[0] < 0 || hi[1] < 0 || hi[2] < 0 || hi[3] < 0)
              ? EMFILE
              : posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  for (int i = 0; i < 4; i++)
    if (hi[i] >= 0) close(hi[i]);
  free(envp);
  return r ? -r : pid;
}

/* More than one thread in this process (a shared library's constructor
 * started some before ours ran: OpenBLAS does)? fork() would copy only this
 * one, and a lock another held would stay held in the worker forever. */
static bool process_threaded(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return true; /* cannot tell: the safe answer */
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n != 1;
}

/* The server's loop, configured: fork (or exec) a worker per PP_M_START,
 * kill on PP_M_KILL, reap and report, until the control socket closes. */
static _Noreturn void server_run(int efd, int pfd, bool exec_workers) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle */
  /* With other threads, SIGCHLD may go to one of them instead of the
   * signalfd: then reaping also runs every PP_REAP_POLL_MS. */
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(2);
  off_t psz = lseek(pfd, 0, SEEK_END);
  pp_pool_shm *pool = mmap(NULL, (size_t)psz, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
  if (pool == MAP_FAILED) _exit(4);
  if (!exec_workers) {
    close(pfd);
    pfd = -1;
  }
  if (server_send(PP_CTL_FD, PP_M_HELLO, 0, 0, (int)getpid(), 0, 0) < 0) _exit(6);

  size_t nkids = 0, capkids = 16;
  kids = calloc(capkids, sizeof *kids);
  if (!kids) _exit(5);
  pid_t self = getpid();
  pp_msg m;
  int fds[4], nfd, r;

  for (;;) {
    struct pollfd pf[2] = {{.fd = PP_CTL_FD, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    int pr = poll(pf, 2, exec_workers ? PP_REAP_POLL_MS : -1);
    if (pr < 0 && errno != EINTR) break;
    if (pf[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
    }
    if (pf[1].revents || exec_workers) server_reap(PP_CTL_FD, nkids);
    if (pr <= 0 || !pf[0].revents) continue;
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
    pid_t pid = server_start_worker(pool, efd, pfd, sfd, fds[0], fds[1], exec_workers, self);
    close(fds[0]);
    close(fds[1]);
    if (pid < 0) {
      server_send(PP_CTL_FD, PP_M_START_FAILED, m.slot, m.gen, 0, 0, pid);
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

/* The forked server (br__pp_server_fork) forks its workers: fork() left it
 * one thread whatever the parent had, and exec'ing them is what the fork was
 * chosen to avoid (it cannot work here). /proc/self/task is no guide in this
 * case: under qemu-user it also lists the emulator's own thread (its RCU
 * thread, restarted in every child), which holds none of our locks; taking
 * it for a thread of ours made every worker an exec that exited with 127,
 * started again at once, forever. */
_Noreturn void br__pp_server_main(const uint8_t *key) {
  int efd, pfd;
  if (server_config(key, -1, &efd, &pfd) < 0) _exit(3);
  server_run(efd, pfd, false);
}

/* ---- the start marker, checked before main() */

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool parse_key(const char *h, uint8_t *key) {
  for (int i = 0; i < PP_KEY_LEN; i++) {
    int a = hexval(h[2 * i]), b = a < 0 ? -1 : hexval(h[2 * i + 1]);
    if (b < 0) return false;
    key[i] = (uint8_t)(a << 4 | b);
  }
  return h[2 * PP_KEY_LEN] == 0;
}

/* The process `pid` runs this very program file. */
static bool same_exe(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
  struct stat a, b;
  return stat(path, &a) == 0 && stat("/proc/self/exe", &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

/* fd is a Unix socket of `type`; *peer gets the pid of the process at its
 * other end (0 if it cannot be known) and the peer must run as our user. */
static bool our_socket(int fd, int type, pid_t *peer) {
  int t = 0, dom = 0;
  socklen_t tl = sizeof t, dl = sizeof dom;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &tl) < 0 || t != type) return false;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) < 0 || dom != AF_UNIX) return false;
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) return false;
  *peer = cr.pid;
  return cr.uid == getuid() && cr.uid == geteuid();
}

/* Worker mode (the server has threads and exec'd us): the marker names the
 * server (our parent, this program, our user) and carries the key; the pool
 * page on fd 3 must hold the same key. */
static void worker_entry(const char *v) {
  char *end;
  long spid = strtol(v, &end, 10);
  uint8_t key[PP_KEY_LEN];
  if (end == v || *end != ':' || spid <= 1 || !parse_key(end + 1, key)) return;
  if (getppid() != (pid_t)spid || !same_exe((pid_t)spid)) return;
  pid_t peer;
  struct stat st;
  if (fstat(PP_CTL_FD, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < PP_POOL_SHM_HDR ||
      !our_socket(PP_CTL_FD + 3, SOCK_SEQPACKET, &peer))
    return;
  pp_pool_shm *pool =
      mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, PP_CTL_FD, 0);
  if (pool == MAP_FAILED) return;
  unsigned diff = 0;
  for (int i = 0; i < PP_KEY_LEN; i++) diff |= (unsigned)(pool->key[i] ^ key[i]);
  if (diff) {
    munmap(pool, (size_t)st.st_size);
    return;
  }
  close(PP_CTL_FD);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != (pid_t)spid) _exit(1); /* the server is gone already */
  br__pp_worker_main(pool, PP_CTL_FD + 1, PP_CTL_FD + 2, PP_CTL_FD + 3);
}

/* Runs before main() in every image of a program linked with the pool. The
 * image br_procpool_new() exec'd carries the marker; anything else that
 * carries it (an environment someone else set, a setuid program) must not
 * turn into a server, so main() runs as usual unless every check holds:
 *  - not in a privileged process (setuid, setgid, file capabilities:
 *    AT_SECURE; secure_getenv then hides the marker anyway);
 *  - fd 3 is a Unix seqpacket socket whose other end our parent holds, the
 *    parent runs this same program file as our user;
 *  - the first message on it is CONFIG with the key the marker names (the
 *    parent drew it from getrandom and told no one else).
 * Then, if this process already has other threads (a shared library's
 * constructor started them before ours ran), the server starts each worker
 * by exec'ing the program again instead of forking from here (slower per
 * worker start, never a child with locks held by threads it lacks). */
__attribute__((constructor(101))) static void br__pp_server_entry(void) {
  const char *v = secure_getenv(PP_ENV);
  if (!v) return;
  char val[16 + 2 * PP_KEY_LEN + 16];
  snprintf(val, sizeof val, "%s", v);
  unsetenv(PP_ENV); /* main() and its children never see it */
  if (getauxval(AT_SECURE) || getuid() != geteuid() || getgid() != getegid()) return;
  if (val[0] == 'w' && val[1] == ':') {
    worker_entry(val + 2);
    return;
  }
  uint8_t key[PP_KEY_LEN];
  if (val[0] != '3' || val[1] != ':' || !parse_key(val + 2, key)) return;
  pid_t peer = 0;
  if (!our_socket(PP_CTL_FD, SOCK_SEQPACKET, &peer) || peer != getppid() || !same_exe(peer))
    return;
  int efd, pfd;
  if (server_config(key, PP_CONFIG_WAIT_MS, &efd, &pfd) < 0) return;
  server_run(efd, pfd, process_threaded());
}
