/* SPDX-License-Identifier: MIT */
/* profile_syscall.c — what a blocked thread waits on.
 *
 * /proc/PID/task/TID/syscall names the system call a blocked thread sits in
 * and its arguments. The call alone tells sleeps, futexes and child waits
 * apart; for the calls that wait on descriptors (read, recv, poll,
 * epoll_wait, ...) the descriptor's kind decides: a socket is network, a
 * pipe or terminal is pipe, a file or block device is disk, an eventfd or
 * signalfd is an event loop with nothing to do. epoll sets are read from
 * /proc/PID/fdinfo/EPFD, poll and select sets from the thread's memory
 * (process_vm_readv, which needs the same permission as the syscall file).
 * All of it is best effort: whatever cannot be read is "other".
 */
#include "obs/profile_int.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "sys/fd_link.h"

enum { MAX_FDS_EXAMINED = 64 };

/* The category of descriptor fd of process pid, by its /proc link. */
static int fd_category(pid_t pid, long fd) {
  char link[128];
  if (br__fd_link(pid, (int)fd, link, sizeof link) <= 0) return BR_PROFILE_T_OTHER;
  if (!strncmp(link, "socket:", 7)) return BR_PROFILE_T_NET;
  if (!strncmp(link, "pipe:", 5)) return BR_PROFILE_T_PIPE;
  if (!strncmp(link, "/dev/pts/", 9) || !strncmp(link, "/dev/tty", 8)) return BR_PROFILE_T_PIPE;
  if (!strcmp(link, "anon_inode:[timerfd]")) return BR_PROFILE_T_SLEEP;
  if (!strcmp(link, "anon_inode:[pidfd]")) return BR_PROFILE_T_CHILD;
  if (!strncmp(link, "anon_inode:", 11)) return BR_PROFILE_T_IDLE; /* eventfd, signalfd, ... */
  if (!strcmp(link, "/dev/null")) return BR_PROFILE_T_OTHER;
  if (link[0] == '/') return BR_PROFILE_T_DISK;
  return BR_PROFILE_T_OTHER;
}

/* Several descriptors waited on at once: the most telling kind wins. */
static int stronger(int a, int b) {
  static const int rank[BR_PROFILE_T_COUNT] = {
      [BR_PROFILE_T_NET] = 6,   [BR_PROFILE_T_PIPE] = 5, [BR_PROFILE_T_DISK] = 4,
      [BR_PROFILE_T_CHILD] = 3, [BR_PROFILE_T_SLEEP] = 2, [BR_PROFILE_T_IDLE] = 1,
  };
  if (a < 0) return b;
  return rank[b] > rank[a] ? b : a;
}

/* An epoll set: the targets listed in fdinfo ("tfd: N events: ..."). */
static int epoll_category(pid_t pid, long epfd, long timeout) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/fdinfo/%ld", (int)pid, epfd);
  FILE *f = fopen(path, "re");
  int cat = -1, seen = 0;
  if (f) {
    while (seen < MAX_FDS_EXAMINED && fgets(line, sizeof line, f)) {
      long tfd;
      if (sscanf(line, "tfd: %ld", &tfd) != 1) continue;
      cat = stronger(cat, fd_category(pid, tfd));
      seen++;
    }
    fclose(f);
  }
  /* Only wake-up descriptors (or none): the loop waits for its next timer,
   * or for nothing at all. */
  if (cat < 0 || cat == BR_PROFILE_T_IDLE)
    return timeout >= 0 ? BR_PROFILE_T_SLEEP : BR_PROFILE_T_IDLE;
  return cat;
}

static bool read_remote(pid_t pid, unsigned long addr, void *buf, size_t len) {
  struct iovec local = {buf, len}, remote = {(void *)addr, len};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len;
}

static int poll_category(pid_t pid, unsigned long fds, unsigned long nfds, bool has_timeout) {
  if (nfds == 0) return BR_PROFILE_T_SLEEP;
  struct pollfd p[MAX_FDS_EXAMINED];
  size_t n = nfds < MAX_FDS_EXAMINED ? nfds : MAX_FDS_EXAMINED;
  if (!read_remote(pid, fds, p, n * sizeof *p)) return BR_PROFILE_T_OTHER;
  int cat = -1;
  for (size_t i = 0; i < n; i++)
    if (p[i].fd >= 0) cat = stronger(cat, fd_category(pid, p[i].fd));
  if (cat < 0 || cat == BR_PROFILE_T_IDLE) return has_timeout ? BR_PROFILE_T_SLEEP : BR_PROFILE_T_IDLE;
  return cat;
}

static int select_category(pid_t pid, long nfds, unsigned long rd, unsigned long wr) {
  if (nfds <= 0 || (!rd && !wr)) return BR_PROFILE_T_SLEEP;
  if (nfds > FD_SETSIZE) nfds = FD_SETSIZE;
  int cat = -1, seen = 0;
  unsigned long sets[2] = {rd, wr};
  for (int s = 0; s < 2; s++) {
    fd_set set;
    if (!sets[s] || !read_remote(pid, sets[s], &set, ((size_t)nfds + 7) / 8)) continue;
    for (int fd = 0; fd < nfds && seen < MAX_FDS_EXAMINED; fd++)
      if (FD_ISSET(fd, &set)) {
        cat = stronger(cat, fd_category(pid, fd));
        seen++;
      }
  }
  return cat < 0 ? BR_PROFILE_T_OTHER : cat;
}

static int syscall_category(pid_t pid, long nr, const unsigned long *a) {
  switch (nr) {
  case SYS_read: case SYS_readv: case SYS_pread64: case SYS_preadv:
  case SYS_write: case SYS_writev: case SYS_pwrite64: case SYS_pwritev:
  case SYS_recvfrom: case SYS_recvmsg: case SYS_recvmmsg:
  case SYS_sendto: case SYS_sendmsg: case SYS_sendmmsg:
  case SYS_sendfile: case SYS_splice: case SYS_tee:
  case SYS_fsync: case SYS_fdatasync: case SYS_sync_file_range: case SYS_flock:
    if (nr == SYS_flock) return BR_PROFILE_T_LOCK;
    return fd_category(pid, (long)a[0]);
  case SYS_accept: case SYS_accept4: case SYS_connect:
    return BR_PROFILE_T_NET;
  case SYS_openat: case SYS_close: case SYS_newfstatat: case SYS_statx:
  case SYS_getdents64: case SYS_sync: case SYS_syncfs: case SYS_fallocate:
  case SYS_unlinkat: case SYS_mkdirat:
#ifdef SYS_renameat
  case SYS_renameat:
#endif
    return BR_PROFILE_T_DISK;
  case SYS_epoll_pwait:
#ifdef SYS_epoll_wait
  case SYS_epoll_wait:
#endif
    return epoll_category(pid, (long)a[0], (long)a[3]);
#ifdef SYS_epoll_pwait2
  case SYS_epoll_pwait2:
    return epoll_category(pid, (long)a[0], a[3] ? 0 : -1);
#endif
#ifdef SYS_poll
  case SYS_poll:
    return poll_category(pid, a[0], a[1], (long)a[2] >= 0);
#endif
  case SYS_ppoll:
    return poll_category(pid, a[0], a[1], a[2] != 0);
#ifdef SYS_select
  case SYS_select:
#endif
  case SYS_pselect6:
    return select_category(pid, (long)a[0], a[1], a[2]);
  case SYS_io_uring_enter:
    return BR_PROFILE_T_IDLE;
  case SYS_nanosleep: case SYS_clock_nanosleep:
#ifdef SYS_pause
  case SYS_pause:
#endif
  case SYS_rt_sigtimedwait: case SYS_rt_sigsuspend:
    return BR_PROFILE_T_SLEEP;
  case SYS_futex:
#ifdef SYS_futex_waitv
  case SYS_futex_waitv:
#endif
  case SYS_semop: case SYS_semtimedop: case SYS_msgrcv: case SYS_msgsnd:
    return BR_PROFILE_T_LOCK;
  case SYS_wait4: case SYS_waitid:
    return BR_PROFILE_T_CHILD;
  default:
    return BR_PROFILE_T_OTHER;
  }
}

const char *br__prof_syscall_name(long nr) {
  switch (nr) {
#define N(x) case SYS_##x: return #x;
  N(read) N(readv) N(pread64) N(preadv) N(write) N(writev) N(pwrite64) N(pwritev)
  N(recvfrom) N(recvmsg) N(recvmmsg) N(sendto) N(sendmsg) N(sendmmsg) N(sendfile)
  N(splice) N(tee) N(fsync) N(fdatasync) N(sync_file_range) N(flock) N(accept) N(accept4)
  N(connect) N(openat) N(close) N(newfstatat) N(statx) N(getdents64) N(sync) N(syncfs)
  N(fallocate) N(unlinkat) N(mkdirat) N(epoll_pwait) N(ppoll) N(pselect6) N(io_uring_enter)
  N(nanosleep) N(clock_nanosleep) N(rt_sigtimedwait) N(rt_sigsuspend) N(futex) N(semop)
  N(semtimedop) N(msgrcv) N(msgsnd) N(wait4) N(waitid)
#ifdef SYS_epoll_wait
  N(epoll_wait)
#endif
#ifdef SYS_epoll_pwait2
  N(epoll_pwait2)
#endif
#ifdef SYS_poll
  N(poll)
#endif
#ifdef SYS_select
  N(select)
#endif
#ifdef SYS_pause
  N(pause)
#endif
#ifdef SYS_futex_waitv
  N(futex_waitv)
#endif
#ifdef SYS_restart_syscall
  N(restart_syscall)
#endif
#undef N
  default: return NULL;
  }
}

/* Under an emulator (qemu-user) the kernel sees the emulator's own calls:
 * /proc gives their numbers in the host's ABI, not ours. A thread reading
 * its own syscall file sees the read it makes (pread64): our number, or
 * x86-64's (17) when an x86-64 host runs us, whose numbers are mapped back;
 * anything else cannot be named. */
enum { ABI_UNKNOWN, ABI_NATIVE, ABI_X86_64, ABI_FOREIGN };

static int kernel_abi(void) {
  static _Atomic int abi;
  int a = abi;
  if (a != ABI_UNKNOWN) return a;
  a = ABI_FOREIGN;
  int fd = open("/proc/thread-self/syscall", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    if (n > 0) {
      buf[n] = '\0';
      long nr = strtol(buf, NULL, 10);
      a = nr == SYS_pread64 ? ABI_NATIVE : nr == 17 ? ABI_X86_64 : ABI_FOREIGN;
    } else {
      a = ABI_NATIVE; /* cannot tell: take the numbers as ours */
    }
  } else {
    a = ABI_NATIVE;
  }
  abi = a;
  return a;
}

/* x86-64's number of each call named above (from its asm/unistd_64.h). */
static long from_x86_64(long nr) {
  static const struct { short x86; short ours; } map[] = {
    {0, SYS_read}, {19, SYS_readv}, {17, SYS_pread64}, {295, SYS_preadv}, {1, SYS_write},
    {20, SYS_writev}, {18, SYS_pwrite64}, {296, SYS_pwritev}, {45, SYS_recvfrom},
    {47, SYS_recvmsg}, {299, SYS_recvmmsg}, {44, SYS_sendto}, {46, SYS_sendmsg},
    {307, SYS_sendmmsg}, {40, SYS_sendfile}, {275, SYS_splice}, {276, SYS_tee},
    {74, SYS_fsync}, {75, SYS_fdatasync}, {277, SYS_sync_file_range}, {73, SYS_flock},
    {43, SYS_accept}, {288, SYS_accept4}, {42, SYS_connect}, {257, SYS_openat},
    {3, SYS_close}, {262, SYS_newfstatat}, {332, SYS_statx}, {217, SYS_getdents64},
    {162, SYS_sync}, {306, SYS_syncfs}, {285, SYS_fallocate}, {263, SYS_unlinkat},
    {258, SYS_mkdirat}, {281, SYS_epoll_pwait}, {271, SYS_ppoll}, {270, SYS_pselect6},
    {426, SYS_io_uring_enter}, {35, SYS_nanosleep}, {230, SYS_clock_nanosleep},
    {128, SYS_rt_sigtimedwait}, {130, SYS_rt_sigsuspend}, {202, SYS_futex},
    {65, SYS_semop}, {220, SYS_semtimedop}, {70, SYS_msgrcv}, {69, SYS_msgsnd},
    {61, SYS_wait4}, {247, SYS_waitid},
#ifdef SYS_epoll_pwait2
    {441, SYS_epoll_pwait2},
#endif
#ifdef SYS_futex_waitv
    {449, SYS_futex_waitv},
#endif
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (map[i].x86 == nr) return map[i].ours;
  return -1;
}

int br__prof_blocked_category(pid_t pid, int fd_syscall) {
  return br__prof_blocked_call(pid, fd_syscall, NULL);
}

int br__prof_blocked_call(pid_t pid, int fd_syscall, long *nr_out) {
  if (nr_out) *nr_out = -1;
  char buf[256];
  ssize_t n = pread(fd_syscall, buf, sizeof buf - 1, 0);
  if (n <= 0) return BR_PROFILE_T_COUNT; /* a zombie, or gone */
  buf[n] = '\0';
  if (!strncmp(buf, "running", 7)) return -1;
  char *p = buf, *end;
  long nr = strtol(p, &end, 10);
  /* Not in a system call: preempted and waiting for a CPU (or, rarely, in a
   * page fault). */
  if (end == p || nr < 0) return BR_PROFILE_T_RUNQUEUE;
  switch (kernel_abi()) {
  case ABI_NATIVE: break;
  case ABI_X86_64: nr = from_x86_64(nr); break;
  default: nr = -1; break;
  }
  if (nr < 0) return BR_PROFILE_T_OTHER; /* in a call braid cannot name */
  if (nr_out) *nr_out = nr;
  unsigned long a[6] = {0};
  p = end;
  for (int i = 0; i < 6; i++) {
    a[i] = strtoul(p, &end, 16);
    if (end == p) break;
    p = end;
  }
  return syscall_category(pid, nr, a);
}
