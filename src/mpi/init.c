/* SPDX-License-Identifier: MIT */
/* braid-mpi — MPI initialisation, launch detection, options, small helpers. */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include <stdarg.h>
#include <stdio.h>
#include "mpi/mpi_int.h"

/* State of this process's MPI, set once by br__mpi_ensure_init on the
 * thread that initialises (the main thread) before any pool thread exists,
 * read afterwards: no lock needed beyond the once-only call order. */
static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_inited;     /* br_mpi_init ran */
static int g_we_init;    /* we called MPI_Init_thread */
static int g_finalized;
static int g_single;     /* no MPI at all */
static int g_level;
static int g_rank, g_size = 1;

/* Started by a launcher? Open MPI's mpirun, MPICH's hydra (PMI), any PMIx
 * launcher (srun, prterun) set one of these in every rank's environment.
 * Without one, MPI_Init would make a singleton rank (Open MPI even starts a
 * helper daemon for it), which is nothing but cost for a single process. */
static bool launched(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                     "MPI_LOCALNRANKS", "MPIR_CVAR_CH3_INTERFACE_HOSTNAME", NULL};
  for (int i = 0; vars[i]; i++)
    if (getenv(vars[i])) return true;
  return false;
}

int br__mpi_err(int mpirc, const char *what) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(mpirc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", mpirc);
  br__mplog(BR_LOG_ERROR, "mpi: %s failed: %s", what, s);
  return BR_EIO;
}

int br__mpi_ensure_init(int *argc, char ***argv) {
  pthread_mutex_lock(&init_mu);
  int rc = 0;
  if (g_inited) goto out;
  int flag = 0;
  MPI_Initialized(&flag);
  if (flag) {
    MPI_Query_thread(&g_level);
  } else if (launched()) {
    int r = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &g_level);
    if (r != MPI_SUCCESS) {
      rc = br__mpi_err(r, "MPI_Init_thread");
      goto out;
    }
    g_we_init = 1;
  } else {
    g_single = 1;
    g_level = MPI_THREAD_MULTIPLE;
  }
  if (!g_single) {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  }
  g_inited = 1;
out:
  pthread_mutex_unlock(&init_mu);
  return rc;
}

int br_mpi_init(int *argc, char ***argv) { return br__mpi_ensure_init(argc, argv); }

/* Open MPI 4 can hang in MPI_Finalize once ranks have died (its final
 * fence waits for them), even with --enable-recovery. A watchdog bounds
 * it: if MPI_Finalize has not returned after a while (5 s once a death was
 * seen here, 60 s otherwise), the process flushes its streams and exits
 * with status 0, which is what the program was about to do anyway. */
static atomic_int g_deaths;
void br__mpi_saw_death(void) { atomic_store(&g_deaths, 1); }

static pthread_mutex_t fin_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fin_cv = PTHREAD_COND_INITIALIZER;
static int fin_done;

static void *fin_watchdog(void *arg) {
  (void)arg;
  int secs = atomic_load(&g_deaths) ? 5 : 60;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += secs;
  pthread_mutex_lock(&fin_mu);
  while (!fin_done)
    if (pthread_cond_timedwait(&fin_cv, &fin_mu, &ts) != 0) break;
  int done = fin_done;
  pthread_mutex_unlock(&fin_mu);
  if (!done) {
    br__mplog(BR_LOG_WARN, "mpi: rank %d: MPI_Finalize did not return within %d s%s; exiting",
              g_rank, secs, atomic_load(&g_deaths) ? " (ranks died)" : "");
    fflush(NULL);
    _exit(0);
  }
  return NULL;
}

int br_mpi_finalize(void) {
  pthread_mutex_lock(&init_mu);
  int rc = 0;
  if (g_we_init && !g_finalized) {
    g_finalized = 1;
    pthread_t wd;
    bool have_wd = pthread_create(&wd, NULL, fin_watchdog, NULL) == 0;
    int r = MPI_Finalize();
    if (have_wd) {
      pthread_mutex_lock(&fin_mu);
      fin_done = 1;
      pthread_cond_signal(&fin_cv);
      pthread_mutex_unlock(&fin_mu);
      pthread_join(wd, NULL);
    }
    if (r != MPI_SUCCESS) rc = br__mpi_err(r, "MPI_Finalize");
  }
  pthread_mutex_unlock(&init_mu);
  return rc;
}

int br_mpi_rank(void) { return g_inited ? g_rank : BR_EINVAL; }
int br_mpi_size(void) { return g_inited ? g_size : BR_EINVAL; }
bool br__mpi_single(void) { return g_single || g_size == 1; }
int br__mpi_thread_level(void) { return g_level; }

uint64_t br__mpi_table_hash(void) {
  uint64_t h = 1469598103934665603ull;
  size_t n = br_job_count();
  for (size_t i = 0; i < n; i++) {
    const char *s = br_job_at(i)->name;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  }
  return h;
}

void br__mpi_hostname(char *buf, size_t n) {
  if (gethostname(buf, n) != 0) snprintf(buf, n, "?");
  buf[n - 1] = 0;
}

int mp_buf_put(mp_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return BR_ENOMEM;
    b->p = q;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

void mp_buf_free(mp_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

#define MS 1000000ll

int br__mp_opts(mp_opts *o, const br_mpipool_opts *in) {
  br_mpipool_opts d = {0};
  if (!in) in = &d;
  memset(o, 0, sizeof *o);
  if (in->timeout_ms < 0 || in->dead_after_ms < 0 || in->heartbeat_ms < 0 ||
      in->fallback_workers < 0 || in->max_payload > ((size_t)1 << 30))
    return BR_EINVAL;
  if (in->init_arg_len && !in->init_arg) return BR_EINVAL;
  o->initializer = in->initializer;
  o->init_arg = in->init_arg;
  o->init_arg_len = in->init_arg_len;
  o->timeout_ns = br__mp_ms_ns(in->timeout_ms);
  o->kill_after_ns = in->kill_after_ms == 0 ? 2000 * MS
                     : in->kill_after_ms < 0 ? -1
                                             : br__mp_ms_ns(in->kill_after_ms);
  o->max_payload = in->max_payload ? in->max_payload : (size_t)256 << 20;
  o->fallback_workers = in->fallback_workers;
  o->dead_after_ns = br__mp_ms_ns(in->dead_after_ms ? in->dead_after_ms : 10000);
  o->heartbeat_ns = br__mp_ms_ns(in->heartbeat_ms ? in->heartbeat_ms : 1000);
  return 0;
}

/* braid's log. br__log is the core's internal entry (convention 12); it is
 * reachable when braid is linked statically, not from the shared libbraid,
 * which exports the br_ API only. Then messages go out the way braid's
 * default hook writes them: "braid: <msg>\n" on stderr in one write(2). */
extern void br__log_raw(br_log_level level, const char *msg) __attribute__((weak));

void br__mplog_raw(br_log_level level, const char *msg) {
  if (br__log_raw) {
    br__log_raw(level, msg);
    return;
  }
  char buf[1100];
  size_t n = strlen(msg);
  if (n > sizeof buf - 9) n = sizeof buf - 9;
  memcpy(buf, "braid: ", 7);
  memcpy(buf + 7, msg, n);
  buf[7 + n] = '\n';
  ssize_t w = write(2, buf, 8 + n);
  (void)w;
}

void br__mplog(br_log_level level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  br__mplog_raw(level, buf);
}
