/* braid — process pool internals shared by procpool.c and procpool_map.c. */
#ifndef BRAID_EXEC_PROCPOOL_INT_H
#define BRAID_EXEC_PROCPOOL_INT_H

#include <sys/uio.h>

#include "braid.h"
#include "exec/procpool_shm.h"

/* Queue one request (a job, or a chunk of `count` items when flags has
 * PP_F_CHUNK) whose payload is the concatenation of iov[0..iovcnt), `len`
 * bytes in all. The future's value is a br_bytes*: the job's output, or for
 * a chunk the raw result entries (pp_entry...). timeout_ms as in
 * br_submit_opts. */
int br__pp_submit(br_procpool *p, uint32_t job, const struct iovec *iov, int iovcnt, size_t len,
                  uint16_t flags, uint32_t count, int64_t timeout_ms, br_future **out);

/* br__pp_check: validate a job name against the pool: index or BR_ENOJOB /
 * BR_EINVAL. */
int br__pp_job_index(const char *name);

/* The fork server's main loop (procpool_server.c), on PP_CTL_FD. */
_Noreturn void br__pp_server_main(void);

#endif
