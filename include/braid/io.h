/* SPDX-License-Identifier: MIT */
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
 *  - Every call that can fail returns 0, or a documented non-negative value
 *    (a descriptor, a byte count, a number of addresses), or a negative
 *    braid code (braid/errno.h): BR_E* or a negated errno. Arguments come in
 *    the order receiver (the descriptor or object acted on), out-parameters,
 *    inputs, options/flags, deadline.
 *  - Every blocking call takes an absolute `deadline` (br_now() ns, BR_NEVER
 *    for none) and also honours the enclosing scope's deadline: it returns
 *    BR_ETIMEDOUT when either passes and BR_ECANCELED when the task is
 *    cancelled. Such an interrupted call never leaks a descriptor or memory.
 *  - "Task-only" calls return BR_ENOTTASK from a plain thread. Socket, pipe,
 *    signal and process calls that wait are task-only; the br_file_* calls
 *    and br_resolve also work from a plain thread, where they simply block.
 *    Calls marked "any thread" may be made from a task, a loop callback or a
 *    plain thread; unless their comment says otherwise they never wait.
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

/* br_addr_port: the port (0..65535) of an IPv4/IPv6 address; BR_EINVAL for
 * NULL or another family. Any thread. */
int br_addr_port(const br_addr *a);

/* br_addr_format: write a readable form of a into buf (n bytes:
 * "127.0.0.1:80", "[::1]:80", "/run/x.sock", "@abstract"), always
 * NUL-terminated when n > 0. Returns the length it needed without the NUL
 * (like snprintf; >= n means truncated), or BR_EINVAL (NULL a, NULL buf
 * with n > 0, an unknown family). Any thread. */
int br_addr_format(const br_addr *a, char *buf, size_t n);

/* br_sock_local / br_sock_peer: the local / remote address of the socket
 * fd, stored in *out. 0 or a negative code (BR_EINVAL for NULL out,
 * BR_EBADF, BR_ENOTCONN, -ENOTSOCK). Any thread. */
int br_sock_local(int fd, br_addr *out);
int br_sock_peer(int fd, br_addr *out);

/* ------------------------------------------------------------------------ */
/* DNS                                                                       */

/* br_resolve: getaddrinfo without blocking the loop. Resolves host (a name
 * or a numeric literal; NULL for the wildcard, as with AI_PASSIVE) and
 * service (a port number or a service name such as "http"; NULL means port
 * 0) for stream sockets, keeping family (AF_UNSPEC, AF_INET or AF_INET6).
 * Stores at most max addresses in out[0..max) (the caller's array) in the
 * resolver's preference order and returns how many (>= 1). Numeric hosts
 * are answered at once; names go to the blocking pool's DNS class, so they
 * never queue behind slow user jobs (br_to_thread). If the wait is
 * interrupted (deadline, cancel) the lookup finishes in the background and
 * its result is dropped.
 * Errors: BR_ENOENT (no such host or no address of that family), BR_EAGAIN
 * (temporary resolver failure, or no DNS thread could be started), BR_EINVAL
 * (NULL out, max 0, bad service or family), BR_EIO (permanent resolver
 * failure), BR_ENOMEM, BR_EFULL (DNS queue full), BR_ESHUTDOWN (during
 * br_blocking_shutdown), BR_ETIMEDOUT, BR_ECANCELED. Any thread: from a
 * task only that task waits; a plain thread blocks in getaddrinfo (and the
 * deadline is not applied there). */
int br_resolve(br_addr *out, size_t max, const char *host, const char *service, int family,
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
 * Unix) with SO_REUSEADDR; backlog <= 0 means SOMAXCONN; flags:
 * BR_SOCK_REUSEPORT, BR_SOCK_V6ONLY. The caller owns the returned
 * descriptor (close it with br_close). For a Unix path, a stale socket file
 * left by an earlier run is removed first; the file is not removed at close.
 * Returns the fd or a negative code (BR_EINVAL for NULL or empty a,
 * BR_EADDRINUSE, BR_EACCES, BR_EMFILE, ...). Any thread (it never blocks). */
int br_listen(const br_addr *a, int backlog, unsigned flags);

/* br_tcp_listen: br_listen on host:port. host is a numeric literal, NULL
 * (every address, IPv6 and IPv4) or a name (resolved with br_resolve, so it
 * may suspend a task, or block a plain thread). port 0 picks a free port:
 * read it back with br_sock_local(). Errors as br_listen and br_resolve,
 * BR_EINVAL for a port outside 0..65535. Any thread. */
int br_tcp_listen(const char *host, int port, int backlog, unsigned flags);

/* br_unix_listen: br_listen on a Unix path (see br_addr_unix). Errors as
 * br_addr_unix and br_listen. Any thread. */
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
 * BR_EBADF, BR_EINVAL (not listening), -ENOTSOCK. Task-only. */
int br_accept(int lfd, br_addr *peer, int64_t deadline);

/* br_accept_flags: br_accept, applying flags (BR_SOCK_NODELAY) to the new
 * socket. Errors as br_accept. Task-only. */
int br_accept_flags(int lfd, br_addr *peer, unsigned flags, int64_t deadline);

/* br_connect: connect a new stream socket to a (TCP or Unix). Returns the
 * connected descriptor (owned by the caller) or BR_ECONNREFUSED,
 * BR_ETIMEDOUT (deadline, scope deadline or the network), BR_ECANCELED,
 * BR_EINVAL (NULL or empty a), BR_EMFILE, other negated errnos
 * (-ENETUNREACH, -EHOSTUNREACH, ...). An interrupted connect closes its
 * socket. flags: BR_SOCK_NODELAY. Task-only. */
int br_connect(const br_addr *a, unsigned flags, int64_t deadline);

/* br_tcp_connect: resolve host (br_resolve; at most 8 addresses) and try
 * its addresses in order until one connects, all within the deadline.
 * Returns the fd or the error of the last attempt (or of the resolution,
 * BR_EINVAL for a NULL or empty host or a bad port); BR_ETIMEDOUT and
 * BR_ECANCELED stop at once. Task-only. */
int br_tcp_connect(const char *host, int port, unsigned flags, int64_t deadline);

/* br_unix_connect: br_connect to a Unix path (see br_addr_unix). Errors as
 * br_addr_unix and br_connect. Task-only. */
int br_unix_connect(const char *path, int64_t deadline);

/* br_socketpair: a connected pair of Unix sockets of the given type
 * (SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET), both non-blocking and
 * close-on-exec, stored in fds[0..1] (the caller owns both). 0, BR_EINVAL
 * (NULL fds, another type) or a negated errno (BR_EMFILE). Any thread. */
int br_socketpair(int fds[2], int type);

/* br_udp_bind: a UDP socket bound to a (port 0: any free port). With
 * BR_SOCK_REUSEPORT several sockets may share the port. Returns the fd
 * (owned by the caller) or a negative code (BR_EINVAL for NULL or empty a,
 * BR_EADDRINUSE, ...). Any thread. */
int br_udp_bind(const br_addr *a, unsigned flags);

/* br_udp_open: an unbound UDP socket of family AF_INET or AF_INET6 (the
 * kernel binds it on the first send). Returns the fd (owned by the caller),
 * BR_EINVAL for another family, or a negated errno. Any thread. */
int br_udp_open(int family);

/* br_sendto: send one datagram of n bytes to `to` (NULL on a connected
 * socket). Returns n, or a negated errno (-EMSGSIZE, BR_ECONNREFUSED after
 * an ICMP error on a connected socket, ...), BR_ETIMEDOUT, BR_ECANCELED.
 * Task-only. */
ssize_t br_sendto(int fd, const void *buf, size_t n, const br_addr *to, int64_t deadline);

/* br_recvfrom: receive one datagram into buf (truncated to n bytes, the
 * rest is dropped, as recvfrom does); stores the sender in *from if from is
 * not NULL. Returns the datagram's length as received (<= n), or an error as
 * br_sendto. Task-only. */
ssize_t br_recvfrom(int fd, void *buf, size_t n, br_addr *from, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Byte streams on any non-blocking descriptor (sockets, pipes, ttys)       */

/* br_read: read at most n bytes into buf, waiting until at least one is
 * there. Returns the count (> 0), 0 at end of stream (peer closed or shut
 * down its writing side) or when n is 0, or BR_ECONNRESET, BR_ETIMEDOUT,
 * BR_ECANCELED, BR_EBADF (also when another task closes fd with br_close
 * meanwhile), BR_EBUSY (another task is waiting to read fd), another negated
 * errno. On io_uring (kernel 5.19+) the loop's ring receives from a drained
 * socket for the task (docs/io.md); buf then belongs to the kernel until the
 * call returns, and bytes that arrived as a deadline or cancellation hit are
 * returned, not dropped. Task-only. */
ssize_t br_read(int fd, void *buf, size_t n, int64_t deadline);

/* br_read_ready: the read for after a short read (one that returned fewer
 * bytes than asked for). On readiness it tries the read first, exactly as
 * br_read, so an end of stream that arrived together with the short read's
 * data (one readiness edge for both, already consumed) is returned at once
 * as 0 rather than after the deadline; on io_uring a socket's receive goes
 * straight to the ring, which waits for data without that risk. Returns and
 * errors as br_read. Task-only. */
ssize_t br_read_ready(int fd, void *buf, size_t n, int64_t deadline);

/* br_read_full: read exactly n bytes, fewer only at end of stream. Returns
 * the count, or an error as br_read; bytes read before an error are in buf
 * but their count is lost (treat the stream as broken). Task-only. */
ssize_t br_read_full(int fd, void *buf, size_t n, int64_t deadline);

/* br_readv: scatter read into iov[0..iovcnt), as br_read (at least one
 * byte, or 0 at end of stream). Errors as br_read, BR_EINVAL for iovcnt
 * outside 0..IOV_MAX. Task-only. */
ssize_t br_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);

/* br_write: write all n bytes of buf, waiting for room as often as needed
 * (partial writes are continued). Returns n, or BR_EPIPE / BR_ECONNRESET
 * (peer gone; SIGPIPE never kills the process: it is blocked in the calling
 * thread, and the ring's send never raises it), BR_ETIMEDOUT, BR_ECANCELED,
 * BR_EBADF, BR_EBUSY (fd has no room and another task is waiting to write
 * it), another negated
 * errno. After an error some prefix of buf may have been sent. On io_uring
 * (kernel 5.19+) a socket's send goes to the kernel with the loop's next
 * submission, batched with other tasks' (docs/io.md). Task-only. */
ssize_t br_write(int fd, const void *buf, size_t n, int64_t deadline);

/* br_write_some: write what fits now, waiting only if nothing fits. Returns
 * the count (> 0; 0 when n is 0) or an error as br_write. Task-only. */
ssize_t br_write_some(int fd, const void *buf, size_t n, int64_t deadline);

/* br_writev: gather write of every byte of iov[0..iovcnt) (the array is not
 * modified). Returns the total, or an error as br_write, BR_EINVAL for
 * iovcnt outside 0..IOV_MAX, BR_ENOMEM. Task-only. */
ssize_t br_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);

/* br_shutdown: shut down one or both directions of a socket (SHUT_RD,
 * SHUT_WR, SHUT_RDWR): after SHUT_WR the peer reads end of stream while this
 * side can still read (half-close). 0 or a negated errno (BR_EBADF,
 * BR_ENOTCONN, BR_EINVAL). Any thread. */
int br_shutdown(int fd, int how);

/* br_sendfile: copy count bytes of the file in_fd, from *offset (advanced
 * by the bytes sent) or from its current position when offset is NULL, to
 * the stream out_fd, without copying through user space. Stops early at end
 * of file. Returns the bytes sent, or an error as br_write. Task-only. */
ssize_t br_sendfile(int out_fd, int in_fd, off_t *offset, size_t count, int64_t deadline);

/* br_close: br_fd_forget(fd) (when called on a loop thread), then close(fd).
 * Waiters on fd get BR_EBADF. 0 or a negated errno (BR_EBADF; EINTR is not
 * an error: the descriptor is closed). Any thread, but only the loop's
 * thread may close a descriptor a task of that loop waits on. */
int br_close(int fd);

/* br_set_nonblocking: make an inherited descriptor usable with the calls
 * above (O_NONBLOCK and FD_CLOEXEC). 0 or a negated errno (BR_EBADF). Any
 * thread. */
int br_set_nonblocking(int fd);

/* ------------------------------------------------------------------------ */
/* Pipes and signals                                                         */

/* br_pipe: a pipe, both ends non-blocking and close-on-exec: fds[0] to read,
 * fds[1] to write (the caller owns both). 0, BR_EINVAL (NULL fds) or a
 * negated errno (BR_EMFILE). Any thread. */
int br_pipe(int fds[2]);

/* br_signal_open: a descriptor that receives the n given signals (a
 * signalfd). The signals are blocked in the calling thread (and so in
 * threads it creates afterwards; braid's pool threads block every signal),
 * so they are delivered to the descriptor instead of a handler. Block them
 * in every other thread of yours too. Note that br_run's Ctrl-C handling
 * yields SIGINT to you once you take it here. Returns the fd (close with
 * br_close; the signals stay blocked) or BR_EINVAL, BR_EMFILE. Any thread. */
int br_signal_open(const int *signals, size_t n);

/* br_signal_wait: wait for the next of the signals of sfd (a descriptor of
 * br_signal_open) and return its number (> 0); pending signals are returned
 * one by one. BR_ETIMEDOUT, BR_ECANCELED, BR_EBADF, BR_EINVAL (not a
 * signalfd). Task-only. */
int br_signal_wait(int sfd, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Files (never block the loop: io_uring natively, else the blocking pool)   */

/* Common to the br_file_* calls: any thread. In a task only that task waits
 * (on the loop's ring with io_uring, else in the blocking pool's FILE
 * class); a plain thread makes the system call itself and blocks (the
 * deadline is not applied there). Besides the operation's own negated
 * errno they may return BR_ETIMEDOUT, BR_ECANCELED, BR_ENOMEM and the
 * blocking pool's refusals (BR_EFULL, BR_EAGAIN, BR_ESHUTDOWN; see
 * br_to_thread). */

/* br_file_open: open(2) of path with O_CLOEXEC added to flags, mode for a
 * created file. Returns the fd (owned by the caller, close it with
 * br_file_close) or a negative code (BR_EINVAL for a NULL path, BR_ENOENT,
 * BR_EACCES, ...). An interrupted open closes the file it opened.
 * A FIFO opened for reading only or writing only (without O_NONBLOCK)
 * waits, as open(2) does, for its other end, on every backend and within
 * the deadline; in a task that wait takes a thread of the blocking pool's
 * USER class, not a FILE one. */
int br_file_open(const char *path, int flags, int mode, int64_t deadline);

/* br_file_read: read at most n bytes of fd into buf at offset (offset < 0:
 * at the file's current position, which then advances). Returns the count
 * (0 at end of file) or a negated errno (BR_EBADF, BR_EINVAL for a NULL buf
 * with n > 0, BR_EIO, ...). The buffer must stay valid until the call
 * returns, which it does only once the kernel is done with it: if the task
 * is cancelled or its deadline passes during the read, the call still waits
 * for the transfer to finish (a few ms at most for a disk) and then returns
 * BR_ECANCELED / BR_ETIMEDOUT. In a task, a non-blocking pipe, FIFO,
 * socket or character device is read by readiness (as br_read), so the
 * deadline holds there too. */
ssize_t br_file_read(int fd, void *buf, size_t n, int64_t offset, int64_t deadline);

/* br_file_write: write at most n bytes of buf at offset (< 0: current
 * position). Returns the count written or a negated errno (BR_ENOSPC,
 * BR_EINVAL for a NULL buf with n > 0, BR_EPIPE for a pipe without reader:
 * SIGPIPE is blocked around the write and consumed, the caller's signal
 * mask is left as it was, ...); same cancellation and readiness rules as
 * br_file_read. */
ssize_t br_file_write(int fd, const void *buf, size_t n, int64_t offset, int64_t deadline);

/* br_file_fsync: fsync(2) of fd. 0 or a negated errno (BR_EBADF, BR_EIO,
 * ...). */
int br_file_fsync(int fd, int64_t deadline);

/* br_file_close: close(2), in place: closing a local file does not wait
 * for the disk, so any hand-off would cost more (call br_file_fsync first
 * where durability matters). On a loop thread it first does
 * br_fd_forget(fd) (the loop may have waited on a FIFO or pipe). 0 or a
 * negated errno (BR_EBADF). Any thread, never waits. */
int br_file_close(int fd);

/* br_file_read_all: read the whole file at path into a malloc'd buffer
 * stored in *out (NUL-terminated for convenience; the caller free()s it)
 * and its length in *len (len may be NULL); at most max bytes (0: no
 * limit; SIZE_MAX is no limit too), BR_E2BIG beyond. Open, read and close
 * run as one batch (a single pool job on epoll); a FIFO is opened without
 * waiting for its writer and read by readiness, within the deadline.
 * Returns 0 or a negative code (BR_EINVAL for NULL out or path, BR_ENOENT,
 * BR_ETIMEDOUT, ...); on failure *out is NULL and *len 0. */
int br_file_read_all(char **out, size_t *len, const char *path, size_t max, int64_t deadline);

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

/* A running or finished child. The caller owns the struct (br_process_spawn
 * fills it, br_process_close releases what it holds); the public fields are
 * read-only. */
typedef struct br_process {
  int pid;
  int in, out, err; /* parent's pipe ends (non-blocking, close-on-exec), or
                       -1. Closing `in` (br_close) sends end of file. */
  /* private: do not touch; may change in any release */
  struct {
    int pidfd;
    int status;
    bool reaped;
  } br__private;
} br_process;

/* br_process_spawn: start argv[0] with arguments argv (NULL-terminated)
 * and the streams of opts (NULL: inherit everything). Only the three
 * standard streams are inherited: every other braid descriptor is
 * close-on-exec. Returns 0, or a negative code: BR_ENOENT / BR_EACCES when
 * the program cannot be executed (reported by the spawn itself, no child is
 * left), BR_EMFILE, BR_ENOMEM, BR_EINVAL (NULL p or argv, empty argv,
 * BR_STDIO_STDOUT for stdin or stdout), BR_EBADF (BR_STDIO_FD with a
 * negative descriptor). On success release *p with br_process_close; on
 * failure nothing is left to release. Any thread (it never waits). */
int br_process_spawn(br_process *p, const char *const argv[], const br_process_opts *opts);

/* br_process_wait: wait for the child to exit (without blocking the loop:
 * a pidfd is polled) and store its return code in *status if not NULL:
 * the exit status (0..255), or -N if signal N killed it (Python's
 * returncode). Waiting again returns the same status, also from a plain
 * thread. BR_ETIMEDOUT and BR_ECANCELED leave the child running; BR_EINVAL
 * for a NULL or never spawned p, BR_ECHILD if somebody else reaped it,
 * BR_EBUSY while another task waits for the same child. Task-only while the
 * child has not been reaped. */
int br_process_wait(br_process *p, int *status, int64_t deadline);

/* br_process_kill: send signal sig to the child unless it has been reaped
 * (then BR_ESRCH). 0 or a negative code (BR_EINVAL for a NULL or never
 * spawned p or a bad sig, BR_EPERM). Any thread. */
int br_process_kill(br_process *p, int sig);

/* br_process_close: close the parent's pipe ends and the pidfd. A child
 * that has not been waited for is killed (SIGKILL) and reaped, so no zombie
 * and no descriptor outlives the struct; calling it again does nothing, and
 * NULL is a no-op. Cannot fail. Any thread (the reap of a killed child
 * blocks for the moment the kernel takes to end it). */
void br_process_close(br_process *p);

/* br_process_communicate: write in_len bytes of input to the child's stdin
 * pipe (then close it), read its stdout and stderr pipes to end of file
 * concurrently, then wait for its exit, all within deadline. *out / *err
 * (either may be NULL to discard that stream) receive malloc'd
 * NUL-terminated buffers the caller frees, with their lengths in *out_len /
 * *err_len (may be NULL); *status (may be NULL) receives the return code as
 * br_process_wait. Streams that are not pipes are skipped (*out / *err then
 * get ""). A child that exits without reading all its input is not an
 * error. Returns 0, or a negative code (BR_EINVAL for NULL p, BR_ENOMEM,
 * BR_ETIMEDOUT, BR_ECANCELED, a read error): on failure the output gathered
 * so far is freed and the outs are NULL / 0. Task-only. */
int br_process_communicate(br_process *p, char **out, size_t *out_len, char **err,
                           size_t *err_len, int *status, const void *input, size_t in_len,
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

/* br_to_thread: queue fn(arg) on a thread of the blocking pool's USER class
 * and store a new future for its outcome in *out (one reference, the
 * caller's: br_future_unref it; dropping it does not cancel the job). Await
 * it from a task (only that task waits; the loop goes on) or wait for it
 * from a plain thread. Threads are created on demand up to the class's
 * limit and reaped after sitting idle. The future completes with fn's
 * result, or with the code and message of br_fail() if the job called it
 * (`return br_fail(BR_EIO, "reading %s", path);`: the last call wins, and
 * the job's result is then dropped), or with BR_ECANCELED if
 * br_future_cancel() took it back before it started. A job that has started
 * runs to its end (threads cannot be interrupted), but br_cancelled() inside
 * it says whether its future was cancelled, so it may stop early; a result
 * it returns after its future was cancelled is dropped. br_await() inside a
 * job blocks its pool thread, except for another br_to_thread job still
 * queued, which it runs itself when the wait has no deadline (so that jobs
 * nested deeper than there are threads cannot hang).
 * Errors (*out NULL, nothing queued): BR_EINVAL for NULL out or fn,
 * BR_EFULL when the class's queue is full, BR_EAGAIN when no thread could
 * be created and none exists to run the job, BR_ESHUTDOWN during
 * br_blocking_shutdown(), BR_ENOMEM. Any thread, including blocking-pool
 * jobs and CPU-pool jobs. */
int br_to_thread(br_future **out, br_task_fn fn, void *arg);

/* br_to_thread_class: br_to_thread in class cls (BR_EINVAL for a class
 * outside 0..BR_BLOCKING_NCLASSES-1). */
int br_to_thread_class(br_future **out, br_blocking_class cls, br_task_fn fn, void *arg);

typedef struct br_blocking_limits {
  unsigned max_threads; /* 0: keep the current value */
  size_t max_queue;     /* queued (not yet running) jobs; 0: keep */
  int64_t idle_ms;      /* reap a thread idle this long; 0: keep */
} br_blocking_limits;

/* br_blocking_set_limits: change class cls's limits to the non-zero fields
 * of *l (defaults: user 64 threads / 65536 queued, file 8 / 65536, dns 4 /
 * 4096, all reaped after 10 s idle; also BRAID_BLOCKING_THREADS for the
 * user class). Shrinking lets surplus threads retire once idle; jobs
 * already queued beyond a lowered max_queue stay queued. 0 or BR_EINVAL
 * (bad class, NULL l, negative idle_ms). Any thread. */
int br_blocking_set_limits(br_blocking_class cls, const br_blocking_limits *l);

typedef struct br_blocking_stats {
  unsigned threads;   /* alive */
  unsigned idle;      /* of which waiting for work */
  size_t queued;      /* jobs waiting for a thread */
  uint64_t completed; /* jobs run to completion since start */
  uint64_t rejected;  /* BR_EFULL / thread-creation failures */
} br_blocking_stats;

/* br_blocking_get_stats: a snapshot of class cls in *out. 0 or BR_EINVAL
 * (bad class, NULL out). Any thread. */
int br_blocking_get_stats(br_blocking_class cls, br_blocking_stats *out);

/* br_blocking_shutdown: stop accepting jobs (br_to_thread returns
 * BR_ESHUTDOWN meanwhile), let queued and running ones finish, and join
 * every pool thread. For orderly exits and leak checkers; the pool accepts
 * jobs again once it returns. 0, or BR_EDEADLK when called from a
 * blocking-pool job (it would wait for itself), BR_EBUSY from a task (it
 * would block the loop). Plain thread (it blocks). */
int br_blocking_shutdown(void);

/* ------------------------------------------------------------------------ */
/* One loop per core (br_run_loops)                                          */

/* br_run_loops: run n loops (BR_CPUS: one per CPU the process may use,
 * br_cpu_count()), each on its own thread (loop 0 on the calling thread),
 * each running main(arg) as a task named "main-<i>". Servers open one listener per loop with
 * BR_SOCK_REUSEPORT so the kernel spreads connections. opts (may be NULL)
 * is used for every loop. The group stays up while any main or any task
 * handed over with br_loops_spawn still runs; then each loop ends once its
 * own remaining tasks are done, and the call returns.
 * Returns 0; else the first failing main's code in loop order (mains
 * stopped by br_loops_cancel count as successes; after Ctrl-C they report
 * BR_ECANCELED, as br_run's main does; a failing main's message is logged
 * through br_set_log's hook); BR_EINVAL (NULL main, n < 0, n > 4096),
 * BR_EBUSY from inside a running loop, BR_EAGAIN / BR_ENOMEM when a thread
 * or a loop could not be created (nothing is left running).
 * SIGINT: blocked in the loop threads and read by loop 0; the first one
 * cancels every main, a second exits with status 130. Threads of yours that
 * exist before the call must block SIGINT too, or the kernel may deliver it
 * to them (default action: the process dies). Plain thread only. */
int br_run_loops(int n, br_task_fn main, void *arg, const br_loop_opts *opts);

/* br_loops_index / br_loops_count: in a br_run_loops loop thread, this
 * loop's index (0..count-1) and the number of loops; -1 / 0 on any other
 * thread. Cannot fail. */
int br_loops_index(void);
int br_loops_count(void);

/* br_loops_spawn: hand a task to loop i of the calling thread's group:
 * fn(arg) runs there as a detached task named name (may be NULL); a failure
 * is reported like any detached task's. This is also how to pass a message
 * to another loop: a task that delivers it (arg is the message; its owner
 * is the task). The name is copied (truncated to 31 bytes). From any loop
 * thread of the group, including loop i itself. 0, BR_EINVAL (bad index,
 * NULL fn, not a loop thread of a group), BR_ECLOSED (the group has ended),
 * BR_ENOMEM, BR_EAGAIN (BR_CALL_SOON_THREADSAFE_MAX hand-offs already wait
 * for loop i: try again later). If loop i cannot spawn the task when the
 * hand-off arrives,
 * that is logged (BR_LOG_ERROR) and fn never runs. */
int br_loops_spawn(int i, br_task_fn fn, void *arg, const char *name);

/* br_loops_cancel: cancel every loop's main task of the calling thread's
 * group: the way to stop a server from inside (br_run_loops then returns
 * 0 if they had not failed). From a loop thread of the group; elsewhere it
 * does nothing. Cannot fail. */
void br_loops_cancel(void);

/* ------------------------------------------------------------------------ */
/* Blocking-call watchdog                                                    */

/* What the watchdog saw: a loop that has not come back to its poller for
 * `stalled_ns` while running the task `task` (a name, "" between tasks).
 * frames/nframes: return addresses of the stuck thread, innermost first
 * (backtrace(3) format; 0 frames and task "" if the thread could not be
 * sampled, or the loop moved on before the sample was taken, so it would
 * not show the stall). A "loop" here is a poller round: a busy loop polls
 * every 32 rounds of its ready tasks, so a long run of tasks that yield
 * without waiting can count as one stall.
 * nframes == -1 marks the second report of a stall, when the loop has moved
 * again: stalled_ns is then the stall's total length, task is "". */
typedef struct br_watchdog_report {
  const br_loop *loop;
  const char *task;
  int64_t stalled_ns;
  void *const *frames;
  int nframes;
  /* The evidence, read from the loop thread's /proc files as `braid
   * profile` reads them, before the backtrace is taken (first report of a
   * stall only; "" and -1 in the second or when it could not be read):
   *  - syscall: the system call the thread sits in ("nanosleep", "read",
   *    "futex", ...; a number when braid does not know its name), "" when
   *    it is not in one;
   *  - waits_on: what it waits for, as braid profile names it ("sleep",
   *    "network", "pipe", "disk", "lock", "child", "idle", "other"), or
   *    "cpu" (it computes) or "runqueue" (it is runnable but waits for a
   *    CPU);
   *  - cpu_share: the share of the stall so far that the thread ran on a
   *    CPU (0..1; time it waited for a CPU left out), -1 if unknown;
   *  - evidence: one sentence with these facts and what to do instead. */
  const char *syscall;
  const char *waits_on;
  double cpu_share;
  const char *evidence;
} br_watchdog_report;

typedef void (*br_watchdog_fn)(const br_watchdog_report *r, void *ud);

/* br_watchdog_enable: watch loop: whenever it stays away from its poller
 * longer than threshold_ms (<= 0: 100 ms, or BRAID_WATCHDOG_MS) — a task
 * that blocks the thread, or computes too long between yields — report it
 * once per stall: through the log hook (br_set_log; by default on stderr)
 * at BR_LOG_WARN as
 *   braid: loop blocked for 250 ms in task 'parser' (watchdog threshold 100 ms)
 * then the evidence ("braid: the loop thread is blocked in nanosleep
 * (sleep) and ran 0% of the last 240 ms: a blocking call on the loop; ...":
 * which system call or wait, from /proc, as braid profile sees it),
 * followed by a symbolised backtrace of the loop thread (one message per
 * frame), or to the handler set with br_watchdog_set_handler, and once more
 * when the loop moves again ("braid: loop was blocked for 312 ms in
 * total"). Reports are made on the monitor thread, never in a signal
 * handler, so a log hook needs no async-signal safety for them. The
 * backtrace is taken
 * by a signal (SIGRTMIN+5) sent to the stuck thread once per stall: a
 * blocking call it interrupts may return early with EINTR, as under a
 * profiler (link with -rdynamic for function names). Loops created with
 * br_loop_opts.watchdog_ms > 0 are watched from birth, and every loop is
 * when BRAID_DEBUG=1; a loop is forgotten automatically when it is freed.
 * One monitor thread serves every loop; it reads the loop's heartbeat every
 * threshold/4 and costs the loop nothing.
 * 0, BR_EINVAL (NULL loop), BR_ENOMEM, BR_EAGAIN (the monitor thread
 * could not be started). Enabling a watched loop again sets its threshold.
 * Any thread. */
int br_watchdog_enable(br_loop *loop, int64_t threshold_ms);

/* br_watchdog_disable: stop watching loop (NULL or a loop not watched: no
 * effect). Idempotent; br_loop_free does it by itself. Cannot fail. Any
 * thread. */
void br_watchdog_disable(br_loop *loop);

/* br_watchdog_set_handler: route reports to fn(report, ud) instead of the
 * log hook (NULL restores the log). fn runs on the monitor thread, must not
 * call into the stalled loop, and the report is only valid during the call.
 * Cannot fail. Any thread. */
void br_watchdog_set_handler(br_watchdog_fn fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif
