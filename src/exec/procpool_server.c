/* SPDX-License-Identifier: MIT */
/* braid — process pool: the fork server process.
 *
 * Who runs this: the fork server, one process per parent process, shared
 * by all its pools; single-threaded unless a shared library started threads
 * before our constructor ran (then it execs its workers instead of forking
 * them; see br__pp_server_entry). It is the program itself, exec'd from
 * /proc/self/exe by the parent (procpool_spawn.c) with PP_ENV in its
 * environment: the constructor at the end of this file runs before main()
 * in that image, checks the marker and never returns. (Under an emulator
 * that cannot exec the program, the parent forks it instead and calls
 * br__pp_server_main directly.) An exec'd worker passes through the same
 * constructor (worker_entry).
 *
 * The server knows nothing of jobs: each pool has its own connection to it
 * (procpool_shm.h: control messages), on which it forks one worker per
 * PP_M_START request (procpool_worker.c), kills on request, reaps, and
 * reports every exit of that pool's workers with its wait status. Forking
 * from here is cheap (~0.1 ms, the image is small and untouched) and safe
 * (one thread, so no lock can be held by a thread missing in the child). A
 * worker starts with its own pool's four descriptors and nothing else: no
 * other pool's connection, page or eventfd. On PP_M_STOP the server kills
 * and reaps that pool's workers, then closes its connection. It exits when
 * the parent's end of its own socket closes (the parent exited or exec'd),
 * killing every worker first; workers die with it (PR_SET_PDEATHSIG), and
 * the processes a job started die with its worker (kill_group), so nothing
 * outlives the parent that stays in a worker's process group.
 *
 * Lock rules: none (the server's own work is one thread: blocking poll on
 * its sockets and a signalfd for SIGCHLD, plus a periodic reap when
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/procpool_int.h"

extern char **environ;

#define PP_REAP_POLL_MS 20       /* reaping without a reliable SIGCHLD (threads) */
#define PP_CONFIG_WAIT_MS 30000  /* the parent sends CONFIG right after the exec */

/* Referenced by procpool_api.c so that a static link keeps this object (and
 * its constructor) in every program that uses the pool. */
const int br__pp_server_linked = 1;

/* A pool's connection (procpool_shm.h: control messages). */
typedef struct conn {
  int fd; /* -1: free */
} conn;

typedef struct child {
  pid_t pid;     /* 0: free */
  int conn;      /* index in conns, -1: its pool is gone (reaped, not reported) */
  uint32_t slot;
  uint64_t gen;
} child;

/* The server's state. Globals so that they stay reachable in workers
 * (LeakSanitizer runs when a job calls exit()). */
static child *kids;
static size_t nkids, capkids;
static conn *conns;
static size_t nconns, capconns;
static uint8_t srv_key[PP_KEY_LEN];

/* Make room in array *v (*cap elements of sz bytes, *n in use) for one
 * more element at index *n. False on out of memory. */
static bool grow(void **v, size_t *n, size_t *cap, size_t sz) {
  if (*n < *cap) return true;
  size_t nc = *cap ? 2 * *cap : 16;
  void *nv = realloc(*v, nc * sz);
  if (!nv) return false;
  *v = nv;
  *cap = nc;
  return true;
}

static int server_send(int fd, uint32_t type, uint32_t slot, uint64_t gen, int pid, int status,
                       int err) {
  pp_msg m = {.type = type, .slot = slot, .gen = gen, .pid = pid, .status = status, .err = err};
  return br__pp_send_fds(fd, &m, sizeof m, NULL, 0, 0);
}

static child *kid_of(pid_t pid) {
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid == pid) return &kids[i];
  return NULL;
}

/* Each worker leads a process group of its own (server_start_worker), which
 * the processes its jobs start are in too: killing the group kills them
 * with it, so what a job left running in the background (fork() without
 * a wait, `system("cmd &")`) does not outlive its worker. A process that
 * left the group (setsid, setpgid) is the job's to end. */
static void kill_group(pid_t worker) {
  kill(-worker, SIGKILL);
  kill(worker, SIGKILL); /* if it could not be made a group leader */
}

/* A worker was reaped: end what its jobs left running, tell its pool, if
 * the pool is still there. (The group outlives its leader while members
 * remain, so its number cannot have been reused.) */
static void kid_gone(child *k, int st) {
  kill(-k->pid, SIGKILL);
  if (k->conn >= 0 && conns[k->conn].fd >= 0)
    server_send(conns[k->conn].fd, PP_M_EXITED, k->slot, k->gen, k->pid, st, 0);
  k->pid = 0;
}

static void server_reap(void) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    child *k = kid_of(pid);
    if (k) kid_gone(k, st);
  }
}

/* Pool connection c is done: with `reap`, its workers are killed and
 * reaped before the connection closes (STOP: the pool then reads EOF only
 * when none of its processes is left); without, they are killed and
 * reaped later like any other (the pool went away). */
static void conn_close(int c, bool reap) {
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid > 0 && kids[i].conn == c) kill_group(kids[i].pid);
  for (size_t i = 0; i < nkids; i++) {
    if (kids[i].pid <= 0 || kids[i].conn != c) continue;
    kids[i].conn = -1;
    if (!reap) continue;
    while (waitpid(kids[i].pid, NULL, 0) < 0 && errno == EINTR) {
    }
    kids[i].pid = 0;
  }
  close(conns[c].fd);
  conns[c].fd = -1;
}

/* Receive the CONFIG message on the server's socket and check its key
 * (constant time). 0, or -1 (nothing received, a wrong message, a wrong
 * key). Waits at most timeout_ms for the message. */
static int server_config(const uint8_t *key, int timeout_ms) {
  struct pollfd pf = {.fd = PP_CTL_FD, .events = POLLIN};
  int pr;
  do pr = poll(&pf, 1, timeout_ms);
  while (pr < 0 && errno == EINTR);
  if (pr <= 0) return -1;
  pp_config_msg c;
  int fds[PP_MAX_FDS], nfd;
  int r = br__pp_recv_fds(PP_CTL_FD, &c, sizeof c, fds, PP_MAX_FDS, &nfd, MSG_DONTWAIT);
  for (int i = 0; r >= 0 && i < nfd; i++) close(fds[i]);
  unsigned diff = 0;
  for (int i = 0; i < PP_KEY_LEN; i++) diff |= (unsigned)(c.key[i] ^ key[i]);
  if (r != (int)sizeof c || c.m.type != PP_M_CONFIG || nfd != 0 || diff) return -1;
  memcpy(srv_key, key, sizeof srv_key);
  return 0;
}

/* Map the pool page on PP_W_FD_POOL and become the worker (fds 3 to 6 in
 * place, nothing else open). An exec'd worker (spid: the server that
 * started it, 0 when forked, which has done this already) dies with the
 * server from here on. Returns only if the page does not carry `key`. */
static void worker_start(const uint8_t *key, pid_t spid) {
  struct stat st;
  if (fstat(PP_W_FD_POOL, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < PP_POOL_SHM_HDR)
    return;
  pp_pool_shm *pool =
      mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, PP_W_FD_POOL, 0);
  if (pool == MAP_FAILED) return;
  unsigned diff = 0;
  for (int i = 0; i < PP_KEY_LEN; i++) diff |= (unsigned)(pool->key[i] ^ key[i]);
  if (diff) {
    munmap(pool, (size_t)st.st_size);
    return;
  }
  close(PP_W_FD_POOL);
  /* The pool's working directory, not the server's (absent: keep ours). */
  if (fchdir(PP_W_FD_CWD) < 0) {
  }
  close(PP_W_FD_CWD);
  /* In a process group of its own, out of the terminal's foreground group:
   * a job that reads the terminal (or writes to it under `stty tostop`)
   * must get EIO, not be stopped for ever. */
  signal(SIGTTIN, SIG_IGN);
  signal(SIGTTOU, SIG_IGN);
  if (spid) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != spid) _exit(1); /* the server is gone already */
  }
  br__pp_worker_main(pool, PP_W_FD_EFD, PP_W_FD_SLOT, PP_W_FD_SOCK);
}

/* Start a worker with the nfd (4 or 5) descriptors of a START message,
 * src = {pool page, eventfd, slot region, socket[, working directory]}:
 * fork it (one thread here, nothing can be held), or, when this process
 * has threads of its own (exec_workers), exec the program again in worker
 * mode. Either way it starts with those on fds 3 to 7 and nothing else
 * open: not this server's sockets, nor another pool's. Returns the pid or a
 * negative code. */
static pid_t server_start_worker(const int *src, int nfd, bool exec_workers, pid_t self) {
  /* Descriptors to 3..7 in that order. dup2 onto a descriptor that another
   * source still needs would lose it, so first move them all above 7. */
  int hi[PP_MAX_FDS];
  pid_t pid = BR_EMFILE;
  bool ok = true;
  for (int i = 0; i < nfd; i++) ok &= (hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, PP_W_FD_CWD + 1)) >= 0;
  if (!ok) goto out;
  if (!exec_workers) {
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != self) _exit(1);
      setpgid(0, 0); /* a group of its own: kill_group */
      for (int i = 0; i < nfd; i++)
        if (dup2(hi[i], PP_W_FD_POOL + i) < 0) _exit(1);
      if (syscall(SYS_close_range, PP_W_FD_POOL + nfd, ~0U, 0) < 0) _exit(1);
      sigset_t chld;
      sigemptyset(&chld);
      sigaddset(&chld, SIGCHLD);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      worker_start(srv_key, 0);
      _exit(1);
    }
    if (pid < 0) pid = -errno;
    else setpgid(pid, pid); /* as the child does: whichever runs first */
    goto out;
  }
  /* The marker names us and carries the key (the pool page has it too:
   * the worker compares them before it runs anything). */
  char mark[sizeof PP_ENV + 32 + 2 * PP_KEY_LEN];
  int n = snprintf(mark, sizeof mark, PP_ENV "=w:%d:", (int)self);
  for (int i = 0; i < PP_KEY_LEN; i++)
    n += snprintf(mark + n, sizeof mark - (size_t)n, "%02x", srv_key[i]);
  size_t nenv = 0;
  while (environ && environ[nenv]) nenv++;
  char **envp = calloc(nenv + 2, sizeof *envp);
  if (!envp) {
    pid = BR_ENOMEM;
    goto out;
  }
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], PP_ENV "=", sizeof PP_ENV) != 0) envp[k++] = environ[i];
  envp[k++] = mark;
  envp[k] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  for (int i = 0; i < nfd; i++) posix_spawn_file_actions_adddup2(&fa, hi[i], PP_W_FD_POOL + i);
  posix_spawn_file_actions_addclosefrom_np(&fa, PP_W_FD_POOL + nfd);
  posix_spawnattr_init(&at);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setpgroup(&at, 0); /* a group of its own: kill_group */
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  char *argv[] = {"braid-procpool-worker", NULL};
  int r = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  free(envp);
  if (r) pid = -r;
out:
  for (int i = 0; i < nfd; i++)
    if (hi[i] >= 0) close(hi[i]);
  return pid;
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

/* A new pool: its connection, announced on the server's socket. */
static void server_attach(int fd, pid_t self) {
  size_t c = 0;
  while (c < nconns && conns[c].fd >= 0) c++;
  if (c == nconns) {
    if (!grow((void **)&conns, &nconns, &capconns, sizeof *conns)) {
      close(fd); /* the pool reads EOF: the server cannot serve it */
      return;
    }
    nconns++;
  }
  conns[c].fd = fd;
  server_send(fd, PP_M_HELLO, 0, 0, (int)self, 0, 0);
}

/* One message on pool connection c. */
static void server_conn_msg(size_t c, bool exec_workers, pid_t self) {
  pp_msg m;
  int fds[PP_MAX_FDS], nfd;
  int r = br__pp_recv_fds(conns[c].fd, &m, sizeof m, fds, PP_MAX_FDS, &nfd, MSG_DONTWAIT);
  if (r == BR_EAGAIN) return;
  if (r <= 0) { /* the pool's end closed without STOP: it is gone */
    conn_close((int)c, false);
    return;
  }
  int fd = conns[c].fd;
  if (m.type == PP_M_STOP) {
    for (int i = 0; i < nfd; i++) close(fds[i]);
    conn_close((int)c, true);
    return;
  }
  if (m.type == PP_M_KILL) {
    for (int i = 0; i < nfd; i++) close(fds[i]);
    for (size_t i = 0; i < nkids; i++)
      if (kids[i].pid > 0 && kids[i].conn == (int)c && kids[i].slot == m.slot &&
          kids[i].gen == m.gen)
        kill(kids[i].pid, SIGKILL);
    return;
  }
  if (m.type != PP_M_START) {
    for (int i = 0; i < nfd; i++) close(fds[i]);
    return;
  }
  if (nfd < 4) {
    /* Its descriptors did not arrive: we had no numbers free to receive
     * them (RLIMIT_NOFILE; the kernel dropped them). Say so, or the pool
     * would wait for ever for a worker nobody starts. */
    for (int i = 0; i < nfd; i++) close(fds[i]);
    server_send(fd, PP_M_START_FAILED, m.slot, m.gen, 0, 0, BR_EMFILE);
    return;
  }
  size_t k = 0;
  while (k < nkids && kids[k].pid > 0) k++;
  pid_t pid = BR_ENOMEM;
  if (k < nkids || grow((void **)&kids, &nkids, &capkids, sizeof *kids)) {
    if (k == nkids) kids[nkids++].pid = 0;
    pid = server_start_worker(fds, nfd, exec_workers, self);
  }
  for (int i = 0; i < nfd; i++) close(fds[i]);
  if (pid < 0) {
    server_send(fd, PP_M_START_FAILED, m.slot, m.gen, 0, 0, pid);
    return;
  }
  kids[k] = (child){.pid = pid, .conn = (int)c, .slot = m.slot, .gen = m.gen};
  server_send(fd, PP_M_STARTED, m.slot, m.gen, pid, 0, 0);
}

/* The server's loop, configured: take ATTACHes on its socket, and on each
 * pool's connection fork (or exec) a worker per PP_M_START, kill on
 * PP_M_KILL, reap and report, stop on PP_M_STOP; until the server's socket
 * closes (the parent is gone). */
static _Noreturn void server_run(bool exec_workers) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle */
  /* With other threads, SIGCHLD may go to one of them instead of the
   * signalfd: then reaping also runs every PP_REAP_POLL_MS. */
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(2);
  pid_t self = getpid();
  struct pollfd *pf = NULL;
  size_t cappf = 0;

  for (;;) {
    if (cappf < nconns + 2) {
      struct pollfd *np = realloc(pf, (nconns + 2) * sizeof *pf);
      if (!np) break;
      pf = np;
      cappf = nconns + 2;
    }
    pf[0] = (struct pollfd){.fd = PP_CTL_FD, .events = POLLIN};
    pf[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
    for (size_t c = 0; c < nconns; c++)
      pf[2 + c] = (struct pollfd){.fd = conns[c].fd, .events = POLLIN};
    size_t npf = 2 + nconns;
    int pr = poll(pf, npf, exec_workers ? PP_REAP_POLL_MS : -1);
    if (pr < 0 && errno != EINTR) break;
    if (pr < 0) continue;
    if (pf[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
    }
    if (pf[1].revents || exec_workers) server_reap();
    for (size_t c = 0; c + 2 < npf; c++)
      if (pf[2 + c].revents && conns[c].fd >= 0) server_conn_msg(c, exec_workers, self);
    if (pf[0].revents) {
      pp_msg m;
      int fds[PP_MAX_FDS], nfd;
      int r = br__pp_recv_fds(PP_CTL_FD, &m, sizeof m, fds, PP_MAX_FDS, &nfd, MSG_DONTWAIT);
      if (r == BR_EAGAIN) continue;
      if (r <= 0) break; /* the parent is gone */
      if (m.type == PP_M_ATTACH && nfd == 1) {
        server_attach(fds[0], self);
      } else {
        for (int i = 0; i < nfd; i++) close(fds[i]);
      }
    }
  }
  /* Shutting down: no worker, nor what its jobs started, outlives the server. */
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid > 0) kill_group(kids[i].pid);
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
  if (server_config(key, -1) < 0) _exit(3);
  server_run(false);
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

/* The process `pid` runs this very program file. A parent that dropped
 * its privileges (setuid from root) is not dumpable, and its exe link
 * cannot be read (EACCES) by the copy it exec'd, which then ran main() a
 * second time instead of serving its pool: there the key the parent sends
 * on fd 3 (server_config) is what proves the start, as for any start. */
static bool same_exe(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
  struct stat a, b;
  if (stat(path, &a) != 0) return errno == EACCES;
  return stat("/proc/self/exe", &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
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
  if (!our_socket(PP_W_FD_SOCK, SOCK_SEQPACKET, &peer)) return;
  worker_start(key, (pid_t)spid);
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
  if (server_config(key, PP_CONFIG_WAIT_MS) < 0) return;
  server_run(process_threaded());
}
