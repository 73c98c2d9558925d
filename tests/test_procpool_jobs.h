/* SPDX-License-Identifier: MIT */
/* Jobs and helpers shared by the process-pool tests (tests/test_procpool*.c).
 *
 * Every job takes a tjob argument. The "tinit" initializer maps a counter
 * file (its path is the init argument) shared by all workers and the test,
 * and every job increments counters[id] before doing anything else, so a
 * test can prove that each job ran exactly once (or never, if cancelled),
 * crashes included. "fail:<path>" and "exit:<path>" map the counter file
 * at <path>, wait until the test sets counters[0] (so that it can submit a
 * job first, however fast the workers start), then fail or _exit(7).
 */
#ifndef TEST_PROCPOOL_JOBS_H
#define TEST_PROCPOOL_JOBS_H

#include <braid.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum {
  A_OK = 0,    /* result: id as uint64 */
  A_SEGV,      /* dereference NULL */
  A_ABORT,     /* abort() */
  A_EXIT,      /* exit(3) */
  A_HANG,      /* never return */
  A_SLEEP,     /* sleep ms, then like A_OK */
  A_PIDHANG,   /* write our pid to path, then hang */
  A_FAIL,      /* return an error with a message */
  A_BIG,       /* result of ms MiB, byte i = (uint8_t)(i * 7 + 1) */
  A_SPIN,      /* burn CPU forever */
  A_ALLOC,     /* malloc and touch ms MiB */
  A_INITVAL,   /* result: the value the initializer stored */
  A_FAILONLY,  /* call br_fail(BR_ERANGE, ...) and return 0 */
  A_FAILCODE,  /* call br_fail(BR_ERANGE, ...) and return BR_EIO */
  A_CANCELWAIT, /* spin until br_cancelled() says so (at most ms), result: its code */
  A_WAITFLAG,   /* wait until counters[ms] is not 0 (set by the test) */
  A_DUP2LOW,    /* dup2 /dev/null over descriptors 0..10, then like A_OK */
  A_CLOSEALL,   /* close every descriptor from 3 up, then a result of ms MiB
                   (like A_BIG), or like A_OK if ms is 0 */
  A_FORKRET     /* fork(), and return like A_OK in both processes (the
                   mistake of a child that does not _exit) */
};

typedef struct tjob {
  uint32_t id;
  uint32_t action;
  uint32_t ms;
  char path[100];
} tjob;

#define TCOUNTERS (1u << 20)

static _Atomic uint32_t *tcounters; /* in workers, set by tinit */
static uint64_t tinit_value;

static int tinit_fn(const void *in, size_t len, br_bytes *out) {
  (void)out;
  char path[256];
  if (len == 0 || len >= sizeof path) {
    br_fail(BR_EINVAL, "bad init arg");
    return BR_EINVAL;
  }
  memcpy(path, in, len);
  path[len] = 0;
  bool die = strncmp(path, "exit:", 5) == 0, refuse = strncmp(path, "fail:", 5) == 0;
  if (die || refuse) {
    int fd = open(path + 5, O_RDWR);
    _Atomic uint32_t *c = fd < 0 ? MAP_FAILED
                                 : mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (c == MAP_FAILED) _exit(9);
    close(fd);
    while (atomic_load(&c[0]) == 0) sched_yield();
    if (die) _exit(7); /* dies before it is ready */
    br_fail(BR_EINVAL, "initializer refused: %s", path);
    return BR_EINVAL;
  }
  tinit_value = 4242;
  if (strcmp(path, "none") == 0) return 0;
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    int e = -errno;
    br_fail(e, "open %s", path);
    return e;
  }
  void *m = mmap(NULL, TCOUNTERS * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    int e = -errno;
    br_fail(e, "mmap");
    return e;
  }
  tcounters = m;
  return 0;
}
BR_JOB(tinit, tinit_fn);

static void tsleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0) {
  }
}

/* An initializer that sleeps for the uint32 number of ms in its argument. */
static int tslowinit_fn(const void *in, size_t len, br_bytes *out) {
  (void)out;
  uint32_t ms = 0;
  memcpy(&ms, in, len < sizeof ms ? len : sizeof ms);
  tsleep_ms(ms);
  return 0;
}
BR_JOB(tslowinit, tslowinit_fn);

static int tjob_fn(const void *in, size_t len, br_bytes *out) {
  if (len != sizeof(tjob)) {
    br_fail(BR_EINVAL, "tjob: %zu bytes", len);
    return BR_EINVAL;
  }
  tjob j;
  memcpy(&j, in, sizeof j);
  if (tcounters && j.id < TCOUNTERS) atomic_fetch_add(&tcounters[j.id], 1);
  uint64_t v = j.id;
  switch (j.action) {
  case A_SEGV: {
    volatile int *volatile bad = NULL;
    *bad = 1;
    break;
  }
  case A_ABORT:
    abort();
  case A_EXIT:
    exit(3);
  case A_HANG:
    for (;;) pause();
  case A_SLEEP:
    tsleep_ms(j.ms);
    break;
  case A_PIDHANG: {
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", j.path);
    FILE *f = fopen(tmp, "w");
    if (f) {
      fprintf(f, "%d\n", (int)getpid());
      fclose(f);
      rename(tmp, j.path);
    }
    for (;;) pause();
  }
  case A_FAIL:
    br_fail(BR_ERANGE, "job %u refuses", j.id);
    return BR_ERANGE;
  case A_FAILONLY: /* failing through br_fail alone */
    br_fail(BR_ERANGE, "job %u refuses through br_fail", j.id);
    return 0;
  case A_FAILCODE: /* the returned code wins, the message is br_fail's */
    br_fail(BR_ERANGE, "job %u: message from br_fail", j.id);
    return BR_EIO;
  case A_CANCELWAIT: {
    int64_t end = (int64_t)time(NULL) + (j.ms + 999) / 1000;
    int c;
    while ((c = br_cancelled()) == 0 && (int64_t)time(NULL) <= end) tsleep_ms(1);
    v = (uint64_t)(int64_t)c;
    break;
  }
  case A_DUP2LOW: {
    int nul = open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 10; fd++)
      if (fd != nul) dup2(nul, fd);
    break;
  }
  case A_FORKRET:
    fork();
    break;
  case A_WAITFLAG:
    while (tcounters && atomic_load(&tcounters[j.ms]) == 0) tsleep_ms(1);
    break;
  case A_CLOSEALL:
    syscall(SYS_close_range, 3u, ~0u, 0u);
    if (!j.ms) break;
    /* A big result goes by memfd over the worker's socket. */
    __attribute__((fallthrough));
  case A_BIG: {
    size_t n = (size_t)j.ms << 20;
    unsigned char *p = br_bytes_resize(out, n);
    if (!p) return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 1);
    return 0;
  }
  case A_SPIN:
    for (volatile uint64_t x = 0;; x++) {
    }
  case A_ALLOC: {
    size_t n = (size_t)j.ms << 20;
    char *p = malloc(n);
    if (!p) {
      br_fail(BR_ENOMEM, "malloc of %u MiB failed", j.ms);
      return BR_ENOMEM;
    }
    memset(p, 1, n);
    v = (uint64_t)p[n - 1];
    free(p);
    break;
  }
  case A_INITVAL:
    v = tinit_value;
    break;
  default:
    break;
  }
  return br_bytes_set(out, &v, sizeof v);
}
BR_JOB(tjob, tjob_fn);

static tjob tj(uint32_t id, uint32_t action, uint32_t ms) {
  tjob j;
  memset(&j, 0, sizeof j);
  j.id = id;
  j.action = action;
  j.ms = ms;
  return j;
}

/* A counter file for a test; unlinked by tcounter_close. */
typedef struct tcounter {
  char path[64];
  _Atomic uint32_t *c;
} tcounter;

static void tcounter_open(tcounter *t) {
  snprintf(t->path, sizeof t->path, "/tmp/braid-pp-test-%d-%ld", (int)getpid(), (long)random());
  int fd = open(t->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, TCOUNTERS * sizeof(uint32_t)) < 0) abort();
  t->c = mmap(NULL, TCOUNTERS * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (t->c == MAP_FAILED) abort();
  close(fd);
}

static void tcounter_close(tcounter *t) {
  munmap((void *)t->c, TCOUNTERS * sizeof(uint32_t));
  unlink(t->path);
}

/* Options with the counting initializer. */
static br_procpool_opts topts(const tcounter *t) {
  br_procpool_opts o;
  memset(&o, 0, sizeof o);
  o.initializer = "tinit";
  o.init_arg = t->path;
  o.init_arg_len = strlen(t->path);
  return o;
}

static uint64_t tresult(void *value) {
  br_bytes *b = value;
  uint64_t v = UINT64_MAX;
  if (b && b->len == sizeof v) memcpy(&v, b->data, sizeof v);
  br_bytes_free(b);
  return v;
}

#endif
