/* SPDX-License-Identifier: MIT */
/* braid — the trace buffers (see core/trace.h for the design).
 *
 * Ownership and locking. A thread's current chunk is written only by that
 * thread: it fills a record, then publishes it by storing the new count
 * with release order, so a reader that loads the count with acquire sees
 * complete records. (An unstamped wake-up is written but left unpublished:
 * the next record publishes it or, being the hand-off to the task woken,
 * takes its slot; no reader ever sees a slot that is rewritten.) `lock`
 * guards the list of full chunks, the free list, the registry of
 * per-thread buffers and the session's counters; it is taken only when a
 * chunk fills up, when a thread emits for the first time, and by readers.
 * Chunks are never returned to the system while the process runs: a stale
 * writer (one that read the flag just before a disable) can only scribble
 * on a chunk of the old session.
 */
#include "core/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sys/clock.h"

_Atomic int br__trace_flag;
_Atomic uint32_t br__trace_gen = 1;
void (*_Atomic br__trace_trigger)(const char *why, bool in_signal);

/* A thread's buffer: its current chunk. Registered so readers find the
 * chunks still being filled. Never freed (a thread may emit again). */
typedef struct tbuf {
  struct tbuf *next;     /* registry, under lock */
  br__tchunk *_Atomic cur;
  uint32_t session;      /* the session cur belongs to */
  int32_t tid;
} tbuf;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static tbuf *bufs;                      /* every thread that ever emitted */
static br__tchunk *full_head, *full_tail;
static br__tchunk *free_chunks;
static size_t nchunks, budget_chunks;   /* allocated, allowed (full ones) */
static size_t nfull;
static uint64_t seq, dropped;
_Atomic uint32_t br__trace_session;
_Thread_local br__tcursor br__tcur __attribute__((tls_model("initial-exec")));
static uint64_t start_ticks;
static _Thread_local tbuf *my;

/* Chunks are carved from 4 MiB arenas mapped with MAP_POPULATE: one system
 * call fills in the pages of 64 chunks, where touching fresh memory one
 * page at a time (a fault per 4 KiB, ~2.3 us on our virtual machines) was
 * most of the cost of tracing a busy loop. (Transparent huge pages were
 * tried: with the kernel's default defrag=madvise a fault may compact
 * memory for milliseconds.) Lock held. */
static char *arena_pos, *arena_end;

static const size_t chunk_stride = (sizeof(br__tchunk) + 63) & ~(size_t)63;

static bool arena_refill_locked(void) {
  size_t len = 64 * chunk_stride;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return false;
  arena_pos = p;
  arena_end = p + len;
  return true;
}

static br__tchunk *arena_chunk_locked(void) {
  const size_t sz = chunk_stride;
  if ((!arena_pos || arena_pos + sz > arena_end) && !arena_refill_locked()) return NULL;
  br__tchunk *c = (br__tchunk *)arena_pos;
  arena_pos += sz;
  return c;
}

/* A fresh chunk for the calling thread; lock held. NULL when memory runs
 * out (the record is then lost). */
static br__tchunk *chunk_get_locked(void) {
  br__tchunk *c = free_chunks;
  if (nfull >= budget_chunks && full_head) {
    /* The budget is used up: reuse the oldest full chunk (flight recorder). */
    c = full_head;
    full_head = c->next;
    if (!full_head) full_tail = NULL;
    nfull--;
    dropped++;
    atomic_fetch_add_explicit(&br__trace_gen, 1, memory_order_relaxed);
  } else if (c) {
    free_chunks = c->next; /* a previous session's chunks may be more than this budget */
  } else {
    c = arena_chunk_locked();
    if (!c) return NULL;
    nchunks++;
  }
  c->next = NULL;
  c->seq = ++seq;
  c->tid = my ? my->tid : (int32_t)syscall(SYS_gettid);
  c->pid = (int32_t)getpid();
  c->base = br__ticks();
  atomic_store_explicit(&c->used, 0, memory_order_relaxed);
  return c;
}

/* --- the spool: a whole-run trace goes to a temporary file ----------------
 *
 * In a session started with spool on, once half the budget is full chunks
 * a thread of ours takes the oldest off the list, appends them to an
 * unlinked temporary file and puts them back on the free list. So a long
 * run keeps half its budget of warm chunks in memory (touching fresh memory
 * was most of tracing's cost) and its file grows instead; a short one is
 * never written out before the export. `spooling` is the chunk being written (readers include
 * it); the file holds `spooled` chunks, which readers map. */
static int spool_fd = -1;
static bool spool_on, spool_stop;
static pthread_t spool_thread;
static pthread_cond_t spool_cv = PTHREAD_COND_INITIALIZER;
static br__tchunk *spooling;
static size_t spooled;
/* Full chunks kept in memory before the spool writes the oldest: half the
 * budget (writing every chunk as it filled cost the spool thread as much
 * CPU as the traced switches themselves; a run that fits stays in memory). */
static size_t spool_keep;
/* The spool is woken once a batch beyond the kept half is full and writes
 * down to that half: a wake-up per chunk cost the writer a futex call per
 * chunk handed over (and the spool a sleep per chunk written). */
static size_t spool_batch;
static void *spool_map;
static size_t spool_map_len;

static void push_full_locked(br__tchunk *c) {
  c->next = NULL;
  if (full_tail) full_tail->next = c; else full_head = c;
  full_tail = c;
  nfull++;
  if (spool_on && nfull > spool_keep + spool_batch) pthread_cond_signal(&spool_cv);
}

static void *spool_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  while (!spool_stop) {
    if (nfull <= spool_keep) {
      pthread_cond_wait(&spool_cv, &lock);
      continue;
    }
    br__tchunk *c = full_head;
    full_head = c->next;
    if (!full_head) full_tail = NULL;
    nfull--;
    spooling = c;
    off_t at = (off_t)(spooled * sizeof *c);
    pthread_mutex_unlock(&lock);
    size_t done = 0;
    while (done < sizeof *c) {
      ssize_t w = pwrite(spool_fd, (char *)c + done, sizeof *c - done, at + (off_t)done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      done += (size_t)w;
    }
    pthread_mutex_lock(&lock);
    if (done == sizeof *c) spooled++; else dropped++; /* a full disk: the chunk is lost */
    spooling = NULL;
    c->next = free_chunks;
    free_chunks = c;
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

static int spool_open(void) {
  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/braid-trace-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd >= 0) unlink(path);
  }
  return fd < 0 ? -errno : fd;
}

/* Stop the spool thread (the file stays readable); lock not held. */
static void spool_end(void) {
  pthread_mutex_lock(&lock);
  bool was = spool_on;
  spool_stop = true;
  spool_on = false;
  pthread_cond_broadcast(&spool_cv);
  pthread_mutex_unlock(&lock);
  if (was) pthread_join(spool_thread, NULL);
}

/* The slow path of br__trace_reserve: the thread's first record of this
 * session, or its chunk is full (pad it, hand it over, take a fresh one). */
void *br__trace_reserve_slow(size_t n) {
  (void)n; /* at most 4 <= a chunk */
  br__tcursor *c = &br__tcur;
  tbuf *b = my;
  uint32_t s = atomic_load_explicit(&br__trace_session, memory_order_relaxed);
  br__tchunk *old = (b && b->session == s && c->session == s) ? c->chunk : NULL;
  if (old) {
    /* Pad the rest so readers never see half a record, then hand it over. */
    for (uint32_t i = c->used; i < BR__TCHUNK_SLOTS; i++) old->slot[i][8] = BR__TEV_PAD;
    atomic_store_explicit(&old->used, BR__TCHUNK_SLOTS, memory_order_release);
  }
  pthread_mutex_lock(&lock);
  if (!b) {
    b = calloc(1, sizeof *b);
    if (!b) {
      pthread_mutex_unlock(&lock);
      return NULL;
    }
    b->tid = (int32_t)syscall(SYS_gettid);
    b->next = bufs;
    bufs = b;
    my = b;
  }
  if (old) push_full_locked(old);
  b->session = s;
  br__tchunk *fresh = chunk_get_locked();
  atomic_store_explicit(&b->cur, fresh, memory_order_release);
  pthread_mutex_unlock(&lock);
  c->chunk = fresh;
  c->gen = 0; /* the inline records wait for cursor_sync */
  c->used = 0;
  c->session = s;
  c->base = fresh ? fresh->base : 0;
  return fresh ? fresh->slot[0] : NULL;
}

void br__trace_emit(uint8_t type, uint8_t kind, uint32_t loop, uint64_t id, int64_t arg,
                    uint64_t ts) {
  br__trace_put(type, kind, 0, loop, id, arg, ts);
}

static void emit_text_at(uint8_t type, uint8_t kind, uint32_t loop, uint64_t id, int64_t arg,
                         const char *text, uint64_t ts) {
  if (!text) {
    br__trace_put(type, kind, 0, loop, id, arg, ts);
    return;
  }
  br__tev *e = br__trace_reserve(4);
  if (!e) return;
  *e = (br__tev){.ts = ts ? ts : br__ticks(), .type = type, .kind = kind, .text = 2,
                 .loop = loop, .id = id, .arg = arg};
  char *dst = (char *)&e[1];
  size_t len = strnlen(text, sizeof(br__tev) - 1);
  memcpy(dst, text, len);
  memset(dst + len, 0, sizeof(br__tev) - len);
  br__trace_commit(4);
}

void br__trace_emit_text(uint8_t type, uint8_t kind, uint32_t loop, uint64_t id, int64_t arg,
                         const char *text) {
  emit_text_at(type, kind, loop, id, arg, text, 0);
}

/* The name once per generation: a task spawned before tracing began, or
 * whose spawn record was reused, is still named. */
static inline void name_once(struct br__task *t, uint64_t now) {
  uint32_t g = atomic_load_explicit(&br__trace_gen, memory_order_relaxed);
  if (__builtin_expect(t->trace_gen == g, 1)) return;
  t->trace_gen = g;
  /* Unnamed: the exporters call it "task-ID" themselves (as br_task_name
   * would), so a flight recorder reusing chunks does not write a name per
   * task per chunk. */
  if (!t->name[0] && t->id <= UINT32_MAX) return;
  emit_text_at(BR__TEV_NAME, 0, t->loop->serial, t->id, (int64_t)t->parent_id, br__task_name(t), now);
}

void br__trace_resume(struct br__task *t, uint64_t now) {
  if (!now) now = br__ticks();
  name_once(t, now);
  br__trace_put(BR__TEV_RESUME, 0, 0, t->loop->serial, t->id, 0, now);
}

void br__trace_stop(struct br__task *t, uint64_t now) {
  uint8_t type = br__trace_stop_type(t);
  int64_t arg = type == BR__TEV_END ? t->fail_code : type == BR__TEV_PARK ? t->wait.arg : 0;
  br__trace_put(type, type == BR__TEV_PARK ? t->wait.kind : 0, 0, t->loop->serial, t->id, arg, now);
}

/* After a slow path: the cursor's chunk is of the current session, so the
 * inline records may trust it until gen moves. gen is read before the
 * session (acquire: a new session's gen comes after its session number),
 * so a cursor never takes a gen newer than its session. */
static void cursor_sync(void) {
  br__tcursor *c = &br__tcur;
  uint32_t g = atomic_load_explicit(&br__trace_gen, memory_order_acquire);
  uint32_t s = atomic_load_explicit(&br__trace_session, memory_order_relaxed);
  if (c->chunk && c->session == s) c->gen = g;
}

void br__trace_switch_slow(struct br__task *from, struct br__task *to, uint64_t now) {
  name_once(to, now);
  uint8_t type = br__trace_stop_type(from);
  uint32_t serial = from->loop->serial;
  br__tcursor *c = &br__tcur;
  if (c->chunk && c->used > atomic_load_explicit(&c->chunk->used, memory_order_relaxed)) {
    const br__tcev *r = (const br__tcev *)c->chunk->slot[c->used - 1];
    if (r->type == (BR__TEV_READY | BR__TEV_COMPACT) && r->id == to->id && r->loop == serial) c->used--;
  }
  br__trace_put(BR__TEV_SWITCH, type == BR__TEV_PARK ? from->wait.kind : 0, type, serial, from->id,
                (int64_t)to->id, now);
  cursor_sync();
}

/* A wake-up: from the scheduler (a timer, another thread's wake-up),
 * stamped; from the running task when the inline path could not write it,
 * unstamped and unpublished as there (trace.h). */
void br__trace_ready_slow(struct br__task *t) {
  struct br_loop *L = t->loop;
  if (!L->current) {
    br__trace_put(BR__TEV_READY, 0, 0, L->serial, t->id, 0, 0);
    return;
  }
  void *p = br__trace_reserve(2);
  if (!p) return;
  if (L->serial <= UINT16_MAX && t->id <= UINT32_MAX) {
    *(br__tcev *)p = (br__tcev){.type = BR__TEV_READY | BR__TEV_COMPACT, .kind = 1 << 4,
                                .loop = (uint16_t)L->serial, .id = (uint32_t)t->id};
    br__tcur.used++; /* published with the next record */
  } else {
    *(br__tev *)p = (br__tev){.ts = 0, .type = BR__TEV_READY, .pad = 1, .loop = L->serial, .id = t->id};
    br__trace_commit(2);
  }
  cursor_sync();
}

void br__trace_spawn(struct br__task *t) {
  t->trace_gen = atomic_load_explicit(&br__trace_gen, memory_order_relaxed);
  emit_text_at(BR__TEV_SPAWN, 0, t->loop->serial, t->id, (int64_t)t->parent_id,
               t->name[0] ? t->name : NULL, 0);
}

void br__trace_thread_name(const char *name) {
  if (br__tracing() && name) br__trace_emit_text(BR__TEV_THREAD, 0, 0, 0, 0, name);
}

int br__trace_enable(size_t budget, bool spool) {
  br__trace_disable();
  spool_end();
  int fd = -1;
  if (spool) {
    fd = spool_open();
    if (fd < 0) return fd;
  }
  pthread_mutex_lock(&lock);
  if (spool_fd >= 0) close(spool_fd);
  spool_fd = fd;
  spooled = 0;
  /* Everything of the last session goes back to the free list. */
  while (full_head) {
    br__tchunk *c = full_head;
    full_head = c->next;
    c->next = free_chunks;
    free_chunks = c;
  }
  full_tail = NULL;
  nfull = 0;
  for (tbuf *b = bufs; b; b = b->next) {
    br__tchunk *c = atomic_exchange_explicit(&b->cur, NULL, memory_order_acq_rel);
    if (c) {
      c->next = free_chunks;
      free_chunks = c;
    }
  }
  size_t want = budget / sizeof(br__tchunk);
  budget_chunks = want < 2 ? 2 : want;
  dropped = 0;
  /* The chunks a session keeps in memory (a flight recorder's budget, a
   * spooled session's half) have their pages filled in here, by whoever
   * starts the session, up to 64 MiB: filling them as events come (a 4 MiB
   * arena at a time) was most of what tracing cost a short busy run. One
   * mapping of just the chunks missing: carving them from 4 MiB arenas
   * filled in up to 4 MiB more than the session would use. */
  spool_keep = spool ? budget_chunks / 2 : 0;
  spool_batch = spool_keep / 16;
  {
    size_t have = 0;
    for (br__tchunk *c = free_chunks; c; c = c->next) have++;
    size_t keep = spool ? spool_keep : budget_chunks;
    size_t goal = keep + 4 < 1024 ? keep + 4 : 1024;
    if (have < goal) {
      size_t n = goal - have;
      char *p = mmap(NULL, n * chunk_stride, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      for (size_t i = 0; p != MAP_FAILED && i < n; i++) {
        br__tchunk *c = (br__tchunk *)(p + i * chunk_stride);
        nchunks++;
        c->next = free_chunks;
        free_chunks = c;
      }
    }
  }
  (void)br__ns_per_tick(); /* calibrate before anything is stamped */
  start_ticks = br__ticks();
  atomic_fetch_add_explicit(&br__trace_session, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&br__trace_gen, 1, memory_order_release); /* after the session: cursor_sync */
  if (spool) {
    spool_stop = false;
    if (pthread_create(&spool_thread, NULL, spool_main, NULL) == 0) {
      spool_on = true;
    } else {
      close(spool_fd); /* no thread: keep what fits in memory */
      spool_fd = -1;
    }
  }
  pthread_mutex_unlock(&lock);
  atomic_store_explicit(&br__trace_flag, 1, memory_order_release);
  return 0;
}

void br__trace_disable(void) {
  atomic_store_explicit(&br__trace_flag, 0, memory_order_release);
}

uint64_t br__trace_dropped(void) {
  pthread_mutex_lock(&lock);
  uint64_t d = dropped;
  pthread_mutex_unlock(&lock);
  return d;
}

void br__trace_finish(void) {
  br__trace_disable();
  spool_end();
}

bool br__trace_hold(bool try) {
  if (try) return pthread_mutex_trylock(&lock) == 0;
  pthread_mutex_lock(&lock);
  return true;
}

void br__trace_unhold(void) {
  if (spool_map) munmap(spool_map, spool_map_len);
  spool_map = NULL;
  pthread_mutex_unlock(&lock);
}

size_t br__trace_snapshot(const br__tchunk **out, size_t max, uint64_t *start,
                          uint64_t *ndropped) {
  size_t n = 0;
  /* The spooled chunks first (the oldest), read from the file. */
  if (spooled && spool_fd >= 0 && !spool_map && max) {
    void *m = mmap(NULL, spooled * sizeof(br__tchunk), PROT_READ, MAP_SHARED, spool_fd, 0);
    if (m != MAP_FAILED) {
      spool_map = m;
      spool_map_len = spooled * sizeof(br__tchunk);
    }
  }
  for (size_t i = 0; i < spooled; i++, n++)
    if (n < max && spool_map) out[n] = (const br__tchunk *)spool_map + i;
  if (spooling) {
    if (n < max) out[n] = spooling;
    n++;
  }
  for (br__tchunk *c = full_head; c; c = c->next, n++)
    if (n < max) out[n] = c;
  uint32_t s = atomic_load_explicit(&br__trace_session, memory_order_relaxed);
  for (tbuf *b = bufs; b; b = b->next) {
    br__tchunk *c = atomic_load_explicit(&b->cur, memory_order_acquire);
    if (!c || b->session != s) continue;
    if (n < max) out[n] = c;
    n++;
  }
  if (start) *start = start_ticks;
  if (ndropped) *ndropped = dropped;
  return n;
}
