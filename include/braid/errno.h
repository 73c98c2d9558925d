/* SPDX-License-Identifier: MIT */
/* braid — error codes.
 *
 * Every braid function that can fail returns a negative error code: either a
 * negated errno value (-ETIMEDOUT, -ECANCELED, ...) or one of braid's own codes
 * in a private range below BR__ERR_BASE. The table below is the single source
 * of the enum, br_strerror() and br_errname(): add a code here and all three
 * follow, so they can never drift apart (libuv's UV_ERRNO_MAP idea).
 */
#ifndef BRAID_ERRNO_H
#define BRAID_ERRNO_H

#include <errno.h>

/* X(name, value, message) — value is the (negative) code. */
#define BR_ERRNO_MAP(X)                                                       \
  X(EPERM, -EPERM, "operation not permitted")                                 \
  X(ENOENT, -ENOENT, "no such file or directory")                             \
  X(EINTR, -EINTR, "interrupted system call")                                 \
  X(EIO, -EIO, "i/o error")                                                   \
  X(EBADF, -EBADF, "bad file descriptor")                                     \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                      \
  X(ENOMEM, -ENOMEM, "not enough memory")                                     \
  X(EACCES, -EACCES, "permission denied")                                     \
  X(EBUSY, -EBUSY, "resource busy")                                           \
  X(EEXIST, -EEXIST, "already exists")                                        \
  X(EINVAL, -EINVAL, "invalid argument")                                      \
  X(EMFILE, -EMFILE, "too many open files")                                   \
  X(ENOSPC, -ENOSPC, "no space left")                                         \
  X(EPIPE, -EPIPE, "broken pipe")                                             \
  X(ERANGE, -ERANGE, "result out of range")                                   \
  X(EDEADLK, -EDEADLK, "would deadlock")                                      \
  X(ENOSYS, -ENOSYS, "function not implemented")                              \
  X(ENOTSUP, -ENOTSUP, "operation not supported")                             \
  X(EADDRINUSE, -EADDRINUSE, "address already in use")                        \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                        \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer")                      \
  X(ENOTCONN, -ENOTCONN, "socket is not connected")                           \
  X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                       \
  X(EALREADY, -EALREADY, "operation already done")                            \
  X(ECANCELED, -ECANCELED, "operation canceled")                              \
  X(ESRCH, -ESRCH, "no such task or process")                                 \
  X(ECHILD, -ECHILD, "no child processes")                                    \
  X(E2BIG, -E2BIG, "argument too large")                                      \
  X(EOVERFLOW, -EOVERFLOW, "value too large")                                 \
  X(EFAULT, -EFAULT, "bad address")                                           \
  X(ENXIO, -ENXIO, "no such device or address")                               \
  X(ENOTDIR, -ENOTDIR, "not a directory")                                     \
  X(EISDIR, -EISDIR, "is a directory")                                        \
  X(ENAMETOOLONG, -ENAMETOOLONG, "file name too long")                        \
  X(ELOOP, -ELOOP, "too many levels of symbolic links")                       \
  X(EROFS, -EROFS, "read-only file system")                                   \
  X(ENFILE, -ENFILE, "too many open files in the system")                     \
  X(ENOTSOCK, -ENOTSOCK, "not a socket")                                      \
  X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")                   \
  X(ENETUNREACH, -ENETUNREACH, "network unreachable")                         \
  X(EHOSTUNREACH, -EHOSTUNREACH, "host unreachable")                          \
  X(ENOTTASK, -30001, "must be called from a braid task")                     \
  X(EHANDLE, -30002, "invalid or already released handle")                    \
  X(ECLOSED, -30003, "channel or queue is closed")                            \
  X(EFAILED, -30004, "task failed")                                           \
  X(EWORKERDIED, -30005, "worker process died")                               \
  X(ESHUTDOWN, -30006, "pool is shutting down")                               \
  X(EFULL, -30007, "queue is full")                                           \
  X(ENOJOB, -30008, "no job registered under that name")                      \
  X(ELIMIT, -30009, "a system limit was reached") \
  X(ETLS, -30010, "TLS handshake or certificate verification failed") \
  X(EHTTP, -30011, "HTTP error status")

/* BR_E* codes, e.g. BR_ETIMEDOUT == -ETIMEDOUT, BR_ENOTTASK == -30001. */
enum br_errno {
#define BR__ERR_ENUM(name, value, msg) BR_##name = (value),
  BR_ERRNO_MAP(BR__ERR_ENUM)
#undef BR__ERR_ENUM
  BR__ERR_BASE = -30000
};

#ifdef __cplusplus
extern "C" {
#endif

/* br_strerror: human-readable message for any code braid returns (negative
 * errno or BR_E*). Never NULL; unknown codes fall back to strerror(-code) and
 * then to "unknown error". The string is static: do not free it. Thread-safe. */
const char *br_strerror(int code);

/* br_errname: the code's symbolic name without the BR_ prefix ("ETIMEDOUT",
 * "ENOTTASK"). Never NULL ("UNKNOWN" for codes outside the table). Static
 * storage, thread-safe. */
const char *br_errname(int code);

#ifdef __cplusplus
}
#endif

#endif
