/* braid/io.h — real I/O from braid tasks: sockets, DNS, files, pipes,
 * signals, child processes, blocking offload, multi-loop servers and the
 * blocking-call watchdog. Included by <braid.h>.
 *
 * Model. Descriptors are plain ints, always opened non-blocking and
 * close-on-exec. A call "suspends" only the calling task: it tries the system
 * call first and, when the kernel says EAGAIN, parks the task on
 * br_wait_fd() until the descriptor is ready, so the loop goes on serving
 * everything else. Files, DNS and user code that can only block go to the
 * blocking pool (br_to_thread); on a loop whose poller is io_uring, file
 * operations go to the ring instead.
 *
 * Conventions (in addition to braid.h's):
 *  - Every blocking call takes an absolute `deadline` (br_now() ns, BR_NEVER
 *    for none) and also honours the enclosing scope's deadline: it returns
 *    BR_ETIMEDOUT when either passes and BR_ECANCELED when the task is
 *    cancelled. Such an interrupted call never leaks a descriptor or memory.
 *  - Socket, pipe, signal and process calls are task-only (BR_ENOTTASK from a
 *    plain thread) unless stated otherwise; the br_file_* calls and
 *    br_resolve also work from a plain thread, where they simply block.
 *  - EINTR is retried internally and never returned.
 *  - Close descriptors that a loop has waited on with br_close() (it calls
 *    br_fd_forget() first); plain close() after br_fd_forget() is the same.
 */
#ifndef BRAID_IO_H
#define BRAID_IO_H

#include <braid.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */

/* A socket address of any family braid speaks (IPv4, IPv6, Unix), with its
 * length. Plain data: copy it freely. */
typedef struct br_addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_un un;
    struct sockaddr_storage ss;
  } u;
  socklen_t len;
} br_addr;

/* br_addr_ip: fill *out from a numeric IPv4 ("127.0.0.1") or IPv6 ("::1",
 * "[::1]", "fe80::1%lo") literal and a port. host NULL or "" means the
 * wildcard address of IPv6 ("::", which also accepts IPv4 on Linux).
 * Never resolves names (br_resolve does). BR_EINVAL for anything else or a
 * port outside 0..65535. Any thread. */
int br_addr_ip(br_addr *out, const char *host, int port);

/* br_addr_unix: a Unix-domain address. A leading '@' names an address in
 * the abstract namespace (no file). BR_E2BIG if path does not fit
 * sun_path, BR_EINVAL for NULL or "". Any thread. */
int br_addr_unix(br_addr *out, const char *path);

/* br_addr_port: the port of an IPv4/IPv6 address, -1 for other families. */
int br_addr_port(const br_addr *a);

/* br_addr_format: write a readable form into buf ("127.0.0.1:80",
 * "[::1]:80", "/run/x.sock", "@abstract"), always NUL-terminated when
 * n > 0. Returns the length it needed (like snprintf), or BR_EINVAL. */
int br_addr_format(const br_addr *a, char *buf, size_t n);

/* br_sock_local / br_sock_peer: the local / remote address of a socket.
 * 0 or a negated errno (BR_EBADF, BR_ENOTCONN). Any thread. */
int br_sock_local(int fd, br_addr *out);
int br_sock_peer(int fd, br_addr *out);

/* ------------------------------------------------------------------------ */
/* DNS                                                                       */

/* br_resolve: getaddrinfo without blocking the loop. Resolves host (a name
 * or a numeric literal; NULL for the wildcard, as with AI_PASSIVE) and
 * service (a port number or a service name such as "http"; NULL means port
 * 0) for stream sockets, keeping family (AF_UNSPEC, AF_INET or AF_INET6).
 * Stores at most max addresses in out[] in the resolver's preference order
 * and returns how many (>= 1). Numeric hosts are answered at once; names go
 * to the blocking pool's DNS class, so they never queue behind slow user
 * jobs (br_to_thread). If the wait is interrupted (deadline, cancel) the
 * lookup finishes in the background and its result is dropped.
 * Errors: BR_ENOENT (no such host or no address of that family), BR_EAGAIN
 * (temporary resolver failure), BR_EINVAL (bad service or family), BR_EIO
 * (permanent resolver failure), BR_ENOMEM, BR_EFULL (DNS queue full),
 * BR_ETIMEDOUT, BR_ECANCELED. From a plain thread it blocks. */
int br_resolve(const char *host, const char *service, int family, br_addr *out, size_t max,
               int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Sockets: TCP, Unix, UDP                                                   */

/* Flags for the listen / bind calls. */
enum {
  BR_SOCK_REUSEPORT = 1 << 0, /* SO_REUSEPORT: several listeners, one port,
                                 the kernel spreads connections (one loop
                                 per core, see br_run_loops) */
  BR_SOCK_V6ONLY = 1 << 1,    /* an IPv6 listener that refuses IPv4 */
  BR_SOCK_NODELAY = 1 << 2    /* TCP_NODELAY on accepted / connected TCP
                                 sockets (off by default) */
};

/* br_listen: a listening stream socket bound to a (TCP over IPv4/IPv6, or
 * Unix) with SO_REUSEADDR; backlog <= 0 means SOMAXCONN. The caller owns
 * the returned descriptor (close it with br_close). For a Unix path, a
 * stale socket file left by an earlier run is removed first; the file is
 * not removed at close. Returns the fd or a negated errno (BR_EADDRINUSE,
 * BR_EACCES, BR_EMFILE, ...). Any thread (it never blocks). */
int br_listen(const br_addr *a, int backlog, unsigned flags);

/* br_tcp_listen: br_listen on host:port. host is a numeric literal, NULL
 * (every address, IPv6 and IPv4) or a name (resolved with br_resolve, so it
 * may suspend a task). port 0 picks a free port: read it back with
 * br_sock_local(). Errors as br_listen and br_resolve. */
int br_tcp_listen(const char *host, int port, int backlog, unsigned flags);

/* br_unix_listen: br_listen on a Unix path (see br_addr_unix). */
int br_unix_listen(const char *path, int backlog);

/* br_accept: wait for and accept one connection on a listening socket.
 * Returns the new descriptor (non-blocking, close-on-exec, owned by the
 * caller) and stores the peer's address in *peer if peer is not NULL.
 * When the process runs out of descriptors (EMFILE/ENFILE) or kernel memory
 * (ENOBUFS/ENOMEM), accept does not fail: it backs off (1 ms doubling to
 * 100 ms) and tries again, so the tasks serving open connections go on and
 * accepting resumes by itself once descriptors are freed; the pending
 * connection waits in the backlog meanwhile. Connections that the peer
 * aborted before accept are skipped. Errors: BR_ETIMEDOUT, BR_ECANCELED,
 * BR_EBADF, BR_EINVAL (not listening). Task-only. */
int br_accept(int lfd, br_addr *peer, int64_t deadline);

/* br_accept_flags: br_accept, applying BR_SOCK_NODELAY to the new socket. */
int br_accept_flags(int lfd, br_addr *peer, unsigned flags, int64_t deadline);

/* br_connect: connect a new stream socket to a (TCP or Unix). Returns the
 * connected descriptor (owned by the caller) or BR_ECONNREFUSED,
 * BR_ETIMEDOUT (deadline, scope deadline or the network), BR_ECANCELED,
 * BR_ENETUNREACH-style negated errnos, BR_EMFILE. An interrupted connect
 * closes its socket. flags: BR_SOCK_NODELAY. Task-only. */
int br_connect(const br_addr *a, unsigned flags, int64_t deadline);

/* br_tcp_connect: resolve host (br_resolve) and try its addresses in order
 * until one connects, all within the deadline. Returns the fd or the error
 * of the last attempt (or of the resolution). Task-only. */
int br_tcp_connect(const char *host, int port, unsigned flags, int64_t deadline);

/* br_unix_connect: br_connect to a Unix path. Task-only. */
int br_unix_connect(const char *path, int64_t deadline);

/* br_socketpair: a connected pair of Unix sockets (type SOCK_STREAM or
 * SOCK_DGRAM), both non-blocking and close-on-exec, stored in fds[0..1].
 * 0 or a negated errno. Any thread. */
int br_socketpair(int type, int fds[2]);

/* br_udp_bind: a UDP socket bound to a (port 0: any free port). With
 * BR_SOCK_REUSEPORT several sockets may share the port. Returns the fd or a
 * negated errno. Any thread. */
int br_udp_bind(const br_addr *a, unsigned flags);

/* br_udp_open: an unbound UDP socket of family AF_INET or AF_INET6 (the
 * kernel binds it on the first send). Returns the fd or a negated errno. */
int br_udp_open(int family);

/* br_sendto: send one datagram of n bytes to `to` (NULL on a connected
 * socket). Returns n, or BR_EMSGSIZE-style negated errnos (-EMSGSIZE,
 * -ECONNREFUSED after an ICMP error on a connected socket), BR_ETIMEDOUT,
 * BR_ECANCELED. Task-only. */
ssize_t br_sendto(int fd, const void *buf, size_t n, const br_addr *to, int64_t deadline);

/* br_recvfrom: receive one datagram into buf (truncated to n bytes, the
 * rest is dropped, as recvfrom does); stores the sender in *from if from is
 * not NULL. Returns the datagram's length as received (<= n), or an error as
 * br_sendto. Task-only. */
ssize_t br_recvfrom(int fd, void *buf, size_t n, br_addr *from, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Byte streams on any non-blocking descriptor (sockets, pipes, ttys)       */

/* br_read: read at most n bytes, waiting until at least one is there.
 * Returns the count (> 0), 0 at end of stream (peer closed or shut down its
 * writing side), or BR_ECONNRESET, BR_ETIMEDOUT, BR_ECANCELED, BR_EBADF.
 * Task-only. */
ssize_t br_read(int fd, void *buf, size_t n, int64_t deadline);

/* br_read_ready: br_read that waits for readability *before* its first
 * attempt. Use it when the previous read on fd returned fewer bytes than it
 * asked for: the socket was drained then, so with edge-triggered readiness
 * any later data raises a fresh edge, and trying first would only cost a
 * system call failing with EAGAIN (a request/response server saves one
 * system call per request this way). After a read that filled its buffer,
 * use br_read. Errors as br_read. Task-only. */
ssize_t br_read_ready(int fd, void *buf, size_t n, int64_t deadline);

/* br_read_full: read exactly n bytes, fewer only at end of stream. Returns
 * the count, or an error; bytes read before an error are in buf but their
 * count is lost (treat the stream as broken). Task-only. */
ssize_t br_read_full(int fd, void *buf, size_t n, int64_t deadline);

/* br_readv: scatter read, as br_read (at least one byte, or 0 at EOF). */
ssize_t br_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);

/* br_write: write all n bytes, waiting for room as often as needed (partial
 * writes are continued). Returns n, or BR_EPIPE / BR_ECONNRESET (peer gone;
 * SIGPIPE is never raised for sockets), BR_ETIMEDOUT, BR_ECANCELED. After an
 * error some prefix of buf may have been sent. Task-only. */
ssize_t br_write(int fd, const void *buf, size_t n, int64_t deadline);

/* br_write_some: write what fits now, waiting only if nothing fits. Returns
 * the count (> 0) or an error as br_write. Task-only. */
ssize_t br_write_some(int fd, const void *buf, size_t n, int64_t deadline);

/* br_writev: gather write of every byte of iov[0..iovcnt) (the array is not
 * modified). Returns the total, or an error as br_write. Task-only. */
ssize_t br_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);

/* br_shutdown: shut down one or both directions of a socket (SHUT_RD,
 * SHUT_WR, SHUT_RDWR): after SHUT_WR the peer reads end of stream while this
 * side can still read (half-close). 0 or a negated errno. Any thread. */
int br_shutdown(int fd, int how);

/* br_sendfile: copy count bytes of the file in_fd, from *offset (advanced
 * by the bytes sent) or from its current position when offset is NULL, to
 * the stream out_fd, without copying through user space. Stops early at end
 * of file. Returns the bytes sent, or an error as br_write. Task-only. */
ssize_t br_sendfile(int out_fd, int in_fd, off_t *offset, size_t count, int64_t deadline);

/* br_close: br_fd_forget(fd) (when called on a loop thread), then close(fd).
 * Waiters on fd get BR_EBADF. 0 or a negated errno (EINTR is not an error:
 * the descriptor is closed). Any thread, but only the loop's thread may
 * close a descriptor a task of that loop waits on. */
int br_close(int fd);

/* br_set_nonblocking: make an inherited descriptor usable with the calls
 * above (O_NONBLOCK and FD_CLOEXEC). 0 or a negated errno. Any thread. */
int br_set_nonblocking(int fd);

/* ------------------------------------------------------------------------ */
/* Pipes and signals                                                         */

/* br_pipe: a pipe, both ends non-blocking and close-on-exec: fds[0] to read,
 * fds[1] to write. 0 or a negated errno (BR_EMFILE). Any thread. */
int br_pipe(int fds[2]);

/* br_signal_open: a descriptor that receives the n given signals (a
 * signalfd). The signals are blocked in the calling thread (and so in
 * threads it creates afterwards; braid's pool threads block every signal),
 * so they are delivered to the descriptor instead of a handler. Block them
 * in every other thread of yours too. Note that br_run's Ctrl-C handling
 * yields SIGINT to you once you take it here. Returns the fd (close with
 * br_close; the signals stay blocked) or BR_EINVAL, BR_EMFILE. Any thread. */
int br_signal_open(const int *signals, size_t n);

/* br_signal_wait: wait for the next of those signals and return its number
 * (> 0); pending signals are returned one by one. BR_ETIMEDOUT,
 * BR_ECANCELED, BR_EBADF. Task-only. */
int br_signal_wait(int sfd, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Files (never block the loop: io_uring natively, else the blocking pool)   */

/* br_file_open: open(2) with O_CLOEXEC added. Returns the fd (owned by the
 * caller, close it with br_file_close) or a negated errno. */
int br_file_open(const char *path, int flags, int mode, int64_t deadline);

/* br_file_read: read at most n bytes at offset (offset < 0: at the file's
 * current position, which then advances). Returns the count (0 at end of
 * file) or a negated errno. The buffer must stay valid until the call
 * returns, which it does only once the kernel is done with it: if the task
 * is cancelled or its deadline passes during the read, the call still waits
 * for the transfer to finish (a few ms at most for a disk) and then returns
 * BR_ECANCELED / BR_ETIMEDOUT. */
ssize_t br_file_read(int fd, void *buf, size_t n, int64_t offset, int64_t deadline);

/* br_file_write: write at most n bytes at offset (< 0: current position).
 * Returns the count written or a negated errno (BR_ENOSPC, ...); same
 * cancellation rule as br_file_read. */
ssize_t br_file_write(int fd, const void *buf, size_t n, int64_t offset, int64_t deadline);

/* br_file_fsync: fsync(2). 0 or a negated errno. */
int br_file_fsync(int fd, int64_t deadline);

/* br_file_close: close(2), in place: closing a local file does not wait
 * for the disk, so any hand-off would cost more (call br_file_fsync first
 * where durability matters). 0 or a negated errno. Any thread. */
int br_file_close(int fd);

/* br_file_read_all: read the whole file at path into a malloc'd buffer
 * (*out, NUL-terminated for convenience, free() it) of *len bytes; at most
 * max bytes (0: no limit), BR_E2BIG beyond. Open, read and close run as one
 * batch (a single pool job on epoll). Returns 0 or a negated errno. */
int br_file_read_all(const char *path, char **out, size_t *len, size_t max, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Child processes (asyncio.create_subprocess_exec)                          */

/* What a child's standard stream is connected to. */
typedef enum br_stdio {
  BR_STDIO_INHERIT = 0, /* the parent's own descriptor */
  BR_STDIO_PIPE,        /* a pipe; the parent's end is in br_process */
  BR_STDIO_NULL,        /* /dev/null */
  BR_STDIO_FD,          /* the descriptor given in the *_fd field */
  BR_STDIO_STDOUT       /* stderr only: the same as the child's stdout */
} br_stdio;

typedef struct br_process_opts {
  br_stdio in, out, err;     /* default: inherit all three */
  int in_fd, out_fd, err_fd; /* for BR_STDIO_FD */
  const char *cwd;           /* NULL: the parent's */
  char *const *envp;         /* NULL: the parent's environment */
  bool search_path;          /* look argv[0] up in PATH (execvp); default
                                false: argv[0] is a path */
} br_process_opts;

/* A running or finished child. The caller owns the struct; the public fields
 * are read-only. */
typedef struct br_process {
  int pid;
  int in, out, err; /* parent's pipe ends (non-blocking, close-on-exec), or
                       -1. Closing `in` (br_close) sends end of file. */
  /* private */
  int pidfd_;
  int status_;
  bool reaped_;
} br_process;

/* br_process_spawn: start argv[0] with arguments argv (NULL-terminated)
 * and the streams of opts (NULL: inherit everything). Only the three
 * standard streams are inherited: every other braid descriptor is
 * close-on-exec. Returns 0, or a negated errno: BR_ENOENT / BR_EACCES when
 * the program cannot be executed (reported by the spawn itself, no child is
 * left), BR_EMFILE, BR_ENOMEM, BR_EINVAL. On success free *p with
 * br_process_close. Any thread. */
int br_process_spawn(br_process *p, const char *const argv[], const br_process_opts *opts);

/* br_process_wait: wait for the child to exit (without blocking the loop:
 * a pidfd is polled) and store its return code in *status if not NULL:
 * the exit status (0..255), or -N if signal N killed it (Python's
 * returncode). Waiting again returns the same status. BR_ETIMEDOUT and
 * BR_ECANCELED leave the child running. Task-only. */
int br_process_wait(br_process *p, int *status, int64_t deadline);

/* br_process_kill: send signal sig to the child unless it has been reaped
 * (then BR_ESRCH). 0 or a negated errno. Any thread. */
int br_process_kill(br_process *p, int sig);

/* br_process_close: close the parent's pipe ends and the pidfd. A child
 * that has not been waited for is killed (SIGKILL) and reaped, so no zombie
 * and no descriptor outlives the struct. Loop thread or plain thread. */
void br_process_close(br_process *p);

/* br_process_communicate: write in_len bytes of input to the child's stdin
 * pipe (then close it), read its stdout and stderr pipes to end of file
 * concurrently, then wait for its exit, all within deadline. *out / *err
 * (may be NULL to discard) receive malloc'd NUL-terminated buffers the
 * caller frees, with their lengths in *out_len / *err_len. Streams that are
 * not pipes are skipped. Returns 0 with *status as br_process_wait, or a
 * negated errno (output gathered so far is freed). Task-only. */
int br_process_communicate(br_process *p, const void *input, size_t in_len, char **out,
                           size_t *out_len, char **err, size_t *err_len, int *status,
                           int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Blocking offload (asyncio.to_thread)                                      */

/* Work classes of the blocking pool. Each class has its own threads and its
 * own bounded queue, so DNS lookups and file operations never wait behind a
 * user's slow blocking job, and a storm of slow lookups cannot take every
 * thread either (libuv's threadpool lesson). */
typedef enum br_blocking_class {
  BR_BLOCKING_USER = 0, /* br_to_thread: arbitrary, possibly slow, code */
  BR_BLOCKING_FILE,     /* file system calls (the epoll file path) */
  BR_BLOCKING_DNS,      /* getaddrinfo */
  BR_BLOCKING_NCLASSES
} br_blocking_class;

/* br_to_thread: run fn(arg) on a thread of the blocking pool and return a
 * future for its result (one reference, the caller's: br_future_unref it).
 * Await it from a task (only that task waits; the loop goes on) or wait for
 * it from a plain thread. Threads are created on demand up to the class's
 * limit and reaped after sitting idle. A job can fail by calling
 * br_to_thread_fail() and returning its result. The returned future fails
 * with BR_EFULL when the class's queue is full, with BR_EAGAIN (and a
 * message) when no thread could be created and none exists to run the job,
 * and with BR_ESHUTDOWN after br_blocking_shutdown(); it never hangs.
 * br_future_cancel() on it drops a job that has not started; a running job
 * runs to its end (threads cannot be interrupted) and its result is then
 * discarded. NULL only when memory runs out. Any thread. */
br_future *br_to_thread(br_task_fn fn, void *arg);

/* br_to_thread_class: br_to_thread in a given class. */
br_future *br_to_thread_class(br_blocking_class cls, br_task_fn fn, void *arg);

/* br_to_thread_fail: from inside a job, record a failure (code < 0 and a
 * printf-style message) that its future will carry; returns NULL so a job
 * can `return br_to_thread_fail(BR_EIO, "...")`. Outside a job it does
 * nothing. */
void *br_to_thread_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct br_blocking_limits {
  unsigned max_threads; /* 0: keep the current value */
  size_t max_queue;     /* queued (not yet running) jobs; 0: keep */
  int64_t idle_ms;      /* reap a thread idle this long; 0: keep */
} br_blocking_limits;

/* br_blocking_set_limits: change a class's limits (defaults: user 64
 * threads / 65536 queued, file 8 / 65536, dns 4 / 4096, all reaped after
 * 10 s idle; also BRAID_BLOCKING_THREADS for the user class). Shrinking
 * lets surplus threads retire once idle. 0 or BR_EINVAL. Any thread. */
int br_blocking_set_limits(br_blocking_class cls, const br_blocking_limits *l);

typedef struct br_blocking_stats {
  unsigned threads;   /* alive */
  unsigned idle;      /* of which waiting for work */
  size_t queued;      /* jobs waiting for a thread */
  uint64_t completed; /* jobs run to completion since start */
  uint64_t rejected;  /* BR_EFULL / thread-creation failures */
} br_blocking_stats;

/* br_blocking_get_stats: a snapshot of one class. 0 or BR_EINVAL. */
int br_blocking_get_stats(br_blocking_class cls, br_blocking_stats *out);

/* br_blocking_shutdown: stop accepting jobs (they fail with BR_ESHUTDOWN),
 * let queued and running ones finish, and join every pool thread. For
 * orderly exits and leak checkers; the pool restarts on the next
 * br_to_thread. Plain thread only (it blocks). */
void br_blocking_shutdown(void);

/* ------------------------------------------------------------------------ */
/* One loop per core (br_run_loops)                                          */

/* br_run_loops: run n loops (n <= 0: br_cpu_count()), each on its own
 * thread (loop 0 on the calling thread), each running main(arg) as a task
 * named "main-<i>". Servers open one listener per loop with
 * BR_SOCK_REUSEPORT so the kernel spreads connections. opts (may be NULL)
 * is used for every loop. The group stays up while any main or any task
 * handed over with br_loops_spawn still runs; then each loop ends once its
 * own remaining tasks are done, and the call returns.
 * Returns 0; else the first failing main's code in loop order (mains
 * stopped by br_loops_cancel count as successes; after Ctrl-C they report
 * BR_ECANCELED, as br_run's main does); BR_EINVAL (NULL main, n > 4096),
 * BR_EBUSY from inside a running loop, BR_EAGAIN / BR_ENOMEM when a thread
 * or a loop could not be created (nothing is left running).
 * SIGINT: blocked in the loop threads and read by loop 0; the first one
 * cancels every main, a second exits with status 130. Threads of yours that
 * exist before the call must block SIGINT too, or the kernel may deliver it
 * to them (default action: the process dies). Plain thread only. */
int br_run_loops(int n, br_task_fn main, void *arg, const br_loop_opts *opts);

/* br_loops_index / br_loops_count: in a br_run_loops loop, this loop's
 * index (0..count-1) and the number of loops; -1 / 0 elsewhere. */
int br_loops_index(void);
int br_loops_count(void);

/* br_loops_spawn: hand a task to loop i of the calling thread's group:
 * fn(arg) runs there as a detached task named name (may be NULL); a failure
 * is reported like any detached task's. This is also how to pass a message
 * to another loop: a task that delivers it (arg is the message; its owner
 * is the task). From any loop thread of the group, including loop i itself.
 * 0, BR_EINVAL (bad index, NULL fn, not a loop thread of a group),
 * BR_ECLOSED (the group has ended), BR_ENOMEM. */
int br_loops_spawn(int i, br_task_fn fn, void *arg, const char *name);

/* br_loops_cancel: cancel every loop's main task of the calling thread's
 * group: the way to stop a server from inside (br_run_loops then returns
 * 0 if they had not failed). From a loop thread of the group; elsewhere it
 * does nothing. */
void br_loops_cancel(void);

/* ------------------------------------------------------------------------ */
/* Blocking-call watchdog                                                    */

/* What the watchdog saw: a loop that has not come back to its poller for
 * `stalled_ns` while running the task `task` (a name, "" between tasks).
 * frames/nframes: return addresses of the stuck thread, innermost first
 * (backtrace(3) format; 0 frames if the thread could not be sampled).
 * nframes == -1 marks the second report of a stall, when the loop has moved
 * again: stalled_ns is then the stall's total length, task is "". */
typedef struct br_watchdog_report {
  const br_loop *loop;
  const char *task;
  int64_t stalled_ns;
  void *const *frames;
  int nframes;
} br_watchdog_report;

typedef void (*br_watchdog_fn)(const br_watchdog_report *r, void *ud);

/* br_watchdog_enable: watch loop: whenever it stays away from its poller
 * longer than threshold_ms (<= 0: 100 ms, or BRAID_WATCHDOG_MS) — a task
 * that blocks the thread, or computes too long between yields — report it
 * once per stall: on stderr as
 *   braid: loop blocked for 250 ms in task 'parser' (watchdog threshold 100 ms)
 * followed by a symbolised backtrace of the loop thread, or to the handler
 * set with br_watchdog_set_handler, and once more when the loop moves again
 * ("braid: loop was blocked for 312 ms in total"). The backtrace is taken
 * by a signal (SIGRTMIN+5) sent to the stuck thread once per stall: a
 * blocking call it interrupts may return early with EINTR, as under a
 * profiler (link with -rdynamic for function names). Loops created with
 * br_loop_opts.watchdog_ms > 0 are watched from birth, and every loop is
 * when BRAID_DEBUG=1; a loop is forgotten automatically when it is freed.
 * One monitor thread serves every loop; it reads the loop's heartbeat every
 * threshold/4 and costs the loop nothing.
 * 0, BR_EINVAL, BR_ENOMEM, BR_EAGAIN (monitor thread). Any thread. */
int br_watchdog_enable(br_loop *loop, int64_t threshold_ms);

/* br_watchdog_disable: stop watching loop. Idempotent; br_loop_free does it
 * by itself. Any thread. */
void br_watchdog_disable(br_loop *loop);

/* br_watchdog_set_handler: route reports to fn(report, ud) instead of
 * stderr (NULL restores stderr). fn runs on the monitor thread, must not
 * call into the stalled loop, and the report is only valid during the call. */
void br_watchdog_set_handler(br_watchdog_fn fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif
