/* SPDX-License-Identifier: MIT */
/* braid — coroutine stacks: see stack.h for the mapping budget. */
#include "sys/stack.h"

#include "sys/emulated.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef BRAID_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Stacks per slab: one mapping for all of them. 128 rather than 64 halves
 * the system calls that map slabs and install their guards: 100,000
 * sleepers took 1.145-1.150 s against 1.146-1.165 s (five rounds
 * alternated; 256 with a reserve of one slab, 1.174-1.183 s: the
 * provisioner could not stay ahead). */
#define SLAB_STACKS 128

#ifndef PIDFD_SELF_THREAD
#define PIDFD_SELF_THREAD (-10000) /* Linux 6.14: "the calling thread", no descriptor needed */
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13: guard pages that cost no mapping */
#endif

/* 1: the kernel supports MADV_GUARD_INSTALL, 0: it does not, -1: unknown. */
static atomic_int light_guards = -1;

/* Under a user-mode emulator (qemu-user) the kernel's guard pages are
 * invisible to the emulator, which then cannot turn a fault on one into the
 * guest's SIGSEGV: the overflow would kill the process without a report. */
static bool light_guard(char *page) {
  int known = atomic_load_explicit(&light_guards, memory_order_relaxed);
  if (known == 0) return false;
  if (known < 0 && (getenv("BRAID_NO_LIGHT_GUARDS") || br__emulated())) {
    atomic_store(&light_guards, 0);
    return false;
  }
  if (madvise(page, br__page_size(), MADV_GUARD_INSTALL) == 0) {
    if (known < 0) atomic_store(&light_guards, 1);
    return true;
  }
  if (errno == EINVAL || errno == ENOSYS) atomic_store(&light_guards, 0);
  return false;
}

struct br__slab {
  struct br__slab *next;
  char *base;
  size_t len;
  size_t size;  /* usable bytes of each of its stacks */
  bool made;    /* by the provisioner: guards tried, top pages touched */
  bool guards;  /* every slot's first page is a light guard (made, or batched inline) */
};

static atomic_size_t guarded_live;
static size_t guard_budget_v;
static atomic_int budget_once;

size_t br__page_size(void) {
  /* Racing first calls store the same value; atomic so that is not a race. */
  static atomic_size_t ps;
  size_t v = atomic_load_explicit(&ps, memory_order_relaxed);
  if (!v) {
    v = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store_explicit(&ps, v, memory_order_relaxed);
  }
  return v;
}

/* vm.max_map_count, read once (0: unknown). */
static size_t max_map_count(void) {
  static atomic_long cached = -1;
  long v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v >= 0) return (size_t)v;
  FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
  unsigned long maps = 0;
  if (f) {
    if (fscanf(f, "%lu", &maps) != 1) maps = 0;
    fclose(f);
  }
  atomic_store_explicit(&cached, (long)maps, memory_order_relaxed);
  return maps;
}

size_t br__stack_guard_budget(void) {
  if (atomic_load_explicit(&budget_once, memory_order_acquire)) return guard_budget_v;
  size_t budget = 16384;
  const char *env = getenv("BRAID_GUARD_STACKS");
  if (env && *env) {
    budget = (size_t)strtoull(env, NULL, 10);
  } else {
    /* Each guarded stack is two mappings; keep three quarters of the
     * mappings for everything else the program maps. */
    size_t maps = max_map_count();
    if (maps) budget = maps / 8;
  }
  guard_budget_v = budget;
  atomic_store_explicit(&budget_once, 1, memory_order_release);
  return budget;
}

size_t br__stack_guarded_live(void) { return atomic_load(&guarded_live); }

size_t br__stack_round(size_t size) {
  if (size < BR__STACK_MIN || size > BR__STACK_MAX) return 0;
  size_t ps = br__page_size();
  return (size + ps - 1) & ~(ps - 1);
}

void br__stack_cache_init(br__stack_cache *c, size_t size) {
  memset(c, 0, sizeof *c);
  c->size = size;
}

/* Only unguarded stacks carry a canary: writing it touches the stack's lowest
 * page, which a guarded stack never needs (its guard page does the job). */
static void arm_canary(br__stack *s) {
  if (!s->guard && !s->light_guard) *(volatile uint64_t *)s->lo = BR__STACK_CANARY;
}

static br__stack *new_desc(br__stack_cache *c) {
  br__stack *d = c->descs;
  if (d) {
    c->descs = d->next;
    return d;
  }
  return malloc(sizeof *d);
}

static br__stack *map_guarded(br__stack_cache *c, size_t size) {
  size_t ps = br__page_size();
  char *base = mmap(NULL, size + ps, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (base == MAP_FAILED) return NULL;
  if (mprotect(base, ps, PROT_NONE) != 0) {
    munmap(base, size + ps);
    return NULL;
  }
  br__stack *s = new_desc(c);
  if (!s) {
    munmap(base, size + ps);
    errno = ENOMEM;
    return NULL;
  }
  /* Every field: a descriptor comes from malloc or from a stack freed
   * earlier (a made one, say), and `made` or `light_guard` left over would
   * describe another stack. */
  *s = (br__stack){.guard = base, .lo = base + ps, .size = size};
  return s;
}

/* --- the provisioner ------------------------------------------------------
 *
 * A fresh stack costs its loop three things the kernel does: the page fault
 * of its first frame (allocating and zeroing the top page, ~1.5 us), its
 * guard page (MADV_GUARD_INSTALL, ~1 us) and a share of the page tables.
 * A warm stack from the cache costs none of them; spawning 1,000,000 tasks
 * that all stay alive needs 1,000,000 fresh ones, and those three are then
 * four fifths of what spawning costs (measured: 6.1 s for a million
 * sleepers on fresh stacks, 1.9 s on a loop's second round with its stacks
 * cached). So once a loop has carved PROV_AFTER slabs, a background thread
 * (one per process, on machines with two or more CPUs) makes slabs ahead of
 * it: mapped, every slot's guard installed, every slot's top page touched.
 * The loop takes a made slab when it needs a fresh one and carves one
 * itself when none is ready, so it never waits for the thread; the thread
 * only ever keeps PROV_RESERVE slabs ready (PROV_RESERVE * SLAB_STACKS
 * touched top pages: 1 MiB) and sleeps when the reserve is full.
 * It changes where the work is done, not how much (a little more, even:
 * two threads faulting into one address space contend in the kernel, ~20 %
 * more system time for a million stacks); the wall time is shorter when a
 * core is free. The memory of a stack is the same either way (its top
 * page). BRAID_STACK_PROVISION=0 turns it off.
 *
 * Locking: prov.lock guards everything in `prov`; the thread maps and
 * touches a slab without it (the slab is nobody else's until it is on the
 * ready list, and taking it off under the lock orders the thread's writes
 * before the loop's). Across fork() the lock is held (atfork) and the child
 * starts with no thread: it carves its own slabs, and asks for a thread
 * again when it needs one. */

#define PROV_AFTER 4
#define PROV_RESERVE 2

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool running;         /* the thread exists (in this process) */
  bool refused;         /* off: one CPU, BRAID_STACK_PROVISION=0, no thread */
  bool atfork;          /* fork handlers registered */
  size_t size;          /* stack size of the slabs it makes; 0: none asked */
  size_t nready;
  struct br__slab *ready;
} prov = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void prov_prepare(void) { pthread_mutex_lock(&prov.lock); }
static void prov_parent(void) { pthread_mutex_unlock(&prov.lock); }
static void prov_child(void) {
  prov.running = false;
  /* The parent's thread may have been waiting on the condition variable:
   * its state still counts that waiter, who does not exist here, and a
   * signal would wait for it for ever. Start from a fresh one. */
  prov.cond = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
  pthread_mutex_unlock(&prov.lock);
}

/* Every slot's first page of a fresh slab made a light guard: one
 * process_madvise call for all of them where the kernel takes the advice
 * that way (it saves a system call per stack), else one madvise per slot.
 * Whether every slot got its guard. */
static bool slab_guards(char *base, size_t slot) {
  size_t ps = br__page_size();
  size_t done = 0;
#if defined(SYS_process_madvise) && defined(SYS_pidfd_open)
  static atomic_int batch = 1; /* 0 once the kernel refused the batch */
  if (atomic_load_explicit(&light_guards, memory_order_relaxed) == 1 &&
      atomic_load_explicit(&batch, memory_order_relaxed)) {
    struct iovec iov[SLAB_STACKS];
    for (size_t i = 0; i < SLAB_STACKS; i++) iov[i] = (struct iovec){base + i * slot, ps};
    /* Linux 6.14 and later name the caller without a descriptor
     * (PIDFD_SELF_THREAD: its memory is the process's; the process's own
     * sentinel changed value in 6.17); before, a pidfd is opened and closed
     * at once (a program counting its own descriptors never sees it), which
     * costs ~3.6 us a slab on a VM. */
    static atomic_int self_works = 1; /* 0 once the kernel refused the sentinel */
    long r = -1;
    if (atomic_load_explicit(&self_works, memory_order_relaxed)) {
      r = syscall(SYS_process_madvise, PIDFD_SELF_THREAD, iov, SLAB_STACKS, MADV_GUARD_INSTALL, 0);
      if (r < 0 && errno == EBADF) atomic_store_explicit(&self_works, 0, memory_order_relaxed);
    }
    if (r < 0 && !atomic_load_explicit(&self_works, memory_order_relaxed)) {
      int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
      r = pidfd >= 0 ? syscall(SYS_process_madvise, pidfd, iov, SLAB_STACKS, MADV_GUARD_INSTALL, 0) : -1;
      if (pidfd >= 0) close(pidfd);
    }
    if (r == (long)(SLAB_STACKS * ps)) return true;
    if (r < 0) atomic_store_explicit(&batch, 0, memory_order_relaxed);
    if (r > 0) done = (size_t)r / ps; /* a short batch: the rest one by one */
  }
#endif
  bool all = true;
  for (size_t i = done; i < SLAB_STACKS; i++)
    if (!light_guard(base + i * slot)) all = false;
  return all;
}

/* Where the next slab should go: a page below the lowest one mapped so
 * far, so that the page left free between them keeps the two from merging
 * into one mapping. Merged, every new slab extends the mapping that the
 * other thread (the loop, or the provisioner) is faulting stacks in at that
 * moment, and the kernel makes each wait for the other: measured, a
 * 100,000-task spawn took 150-180 ms merged and 131-139 ms apart. Each
 * separate slab is one more of the process's memory mappings, so past an
 * eighth of vm.max_map_count of them (8,191 slabs, a million stacks, by
 * default) the kernel places them as it likes, and they merge. NULL: no
 * preference. A hint the kernel cannot take costs nothing. */
static _Atomic(uintptr_t) slab_low;   /* the lowest slab's base, 0: none known */
static atomic_size_t slabs_live;

static void *slab_hint(size_t len) {
  uintptr_t low = atomic_load_explicit(&slab_low, memory_order_relaxed);
  size_t ps = br__page_size();
  size_t apart = max_map_count() / 8;
  if (!low || low < len + 2 * ps || atomic_load_explicit(&slabs_live, memory_order_relaxed) >= apart)
    return NULL;
  return (void *)(low - ps - len);
}

static void slab_mapped(char *base) {
  atomic_fetch_add_explicit(&slabs_live, 1, memory_order_relaxed);
  uintptr_t b = (uintptr_t)base, low = atomic_load_explicit(&slab_low, memory_order_relaxed);
  /* Two threads map slabs: keep the lowest (a lost race costs a hint). */
  while ((!low || b < low) &&
         !atomic_compare_exchange_weak_explicit(&slab_low, &low, b, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

static void slab_unmap(char *base, size_t len) {
  munmap(base, len);
  atomic_fetch_sub_explicit(&slabs_live, 1, memory_order_relaxed);
  /* The lowest slab gone: the next one goes where the kernel puts it, so
   * that a program that frees and makes loops does not walk its slabs
   * down the address space. */
  uintptr_t b = (uintptr_t)base;
  atomic_compare_exchange_strong_explicit(&slab_low, &b, 0, memory_order_relaxed,
                                          memory_order_relaxed);
}

/* A slab of SLAB_STACKS slots of (page + size), mapped; made=true also tries
 * every slot's guard and touches every slot's top page. NULL with errno. */
static struct br__slab *slab_map(size_t size, bool made) {
  size_t ps = br__page_size();
  size_t slot = size + ps;
  size_t len = slot * SLAB_STACKS;
  char *base = mmap(slab_hint(len), len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (base == MAP_FAILED) return NULL;
  slab_mapped(base);
  struct br__slab *sl = malloc(sizeof *sl);
  if (!sl) {
    slab_unmap(base, len);
    errno = ENOMEM;
    return NULL;
  }
  *sl = (struct br__slab){.base = base, .len = len, .size = size, .made = made};
  if (made) {
    bool guards = slab_guards(base, slot);
    for (size_t i = 0; i < SLAB_STACKS; i++) {
      char *s = base + i * slot;
      /* The first frame lands here: fault the page in now. */
      *(volatile uint64_t *)(s + slot - sizeof(uint64_t)) = 0;
    }
    /* A slab whose guards failed part-way keeps the ones it got; its stacks
     * are treated as unguarded (a canary each), which is what they would be
     * when carved inline with the same refusal. */
    sl->guards = guards;
  }
  /* Without light guards the slots are unguarded (a canary each), and an
   * overflow runs down through the slots below into whatever is mapped
   * under the slab: the provisioner's ready slabs, say, tens of MiB of
   * writable memory, and the fault lands too far away to name the task. One
   * protected page at the slab's bottom (the first slot's unused guard
   * position: one more mapping per slab) stops it within the slab. */
  if (!sl->guards && atomic_load_explicit(&light_guards, memory_order_relaxed) == 0)
    (void)mprotect(base, ps, PROT_NONE); /* out of mappings: no floor, still correct */
  return sl;
}

static void *prov_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&prov.lock);
  for (;;) {
    while (!prov.size || prov.nready >= PROV_RESERVE) pthread_cond_wait(&prov.cond, &prov.lock);
    size_t size = prov.size;
    pthread_mutex_unlock(&prov.lock);
    struct br__slab *sl = slab_map(size, true);
    pthread_mutex_lock(&prov.lock);
    if (!sl) {
      prov.size = 0; /* out of memory or mappings: stop until asked again */
      continue;
    }
    sl->next = prov.ready;
    prov.ready = sl;
    prov.nready++;
  }
  return NULL;
}

static bool prov_wanted(void) {
  const char *env = getenv("BRAID_STACK_PROVISION");
  if (env && *env == '0') return false;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < 2) return false;
  return true;
}

/* A made slab for stacks of `size`, or NULL; and from the PROV_AFTER-th
 * fresh slab on, the thread is asked (and started) to keep slabs of this
 * size ready. Any thread; never blocks on the thread's work. */
static struct br__slab *prov_take(br__stack_cache *c, size_t size) {
  if (++c->fresh_slabs < PROV_AFTER) return NULL;
  struct br__slab *sl = NULL;
  pthread_mutex_lock(&prov.lock);
  if (prov.refused) {
    pthread_mutex_unlock(&prov.lock);
    return NULL;
  }
  for (struct br__slab **pp = &prov.ready; *pp; pp = &(*pp)->next) {
    if ((*pp)->size == size) {
      sl = *pp;
      *pp = sl->next;
      prov.nready--;
      break;
    }
  }
  if (!prov.running) {
    if (!prov_wanted()) {
      prov.refused = true;
    } else {
      if (!prov.atfork) prov.atfork = pthread_atfork(prov_prepare, prov_parent, prov_child) == 0;
      pthread_attr_t at;
      pthread_t th;
      pthread_attr_init(&at);
      pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&at, 64 * 1024);
      /* Without fork handlers a fork could leave the lock held in the child. */
      if (prov.atfork && pthread_create(&th, &at, prov_main, NULL) == 0) {
        prov.running = true;
        pthread_setname_np(th, "braid-stacks");
      }
      else
        prov.refused = true; /* EAGAIN (thread limit): carve inline for good */
      pthread_attr_destroy(&at);
    }
  }
  /* The thread makes the size asked for last; slabs of another size would
   * fill the reserve with stacks nobody takes, so they go. */
  struct br__slab *stale = NULL;
  if (prov.running && prov.size != size) {
    prov.size = size;
    stale = prov.ready;
    prov.ready = NULL;
    prov.nready = 0;
  }
  pthread_cond_signal(&prov.cond);
  pthread_mutex_unlock(&prov.lock);
  while (stale) {
    struct br__slab *n = stale->next;
    slab_unmap(stale->base, stale->len);
    free(stale);
    stale = n;
  }
  return sl;
}

/* Slab stacks: one mapping holds SLAB_STACKS slots of (page + size). Where
 * the kernel has MADV_GUARD_INSTALL, each slot's first page becomes a guard
 * page without splitting the mapping; otherwise the slot's first page is
 * simply never used and the stack is protected by its canary. */
static br__stack *carve_unguarded(br__stack_cache *c, size_t size) {
  size_t ps = br__page_size();
  size_t slot = size + ps;
  if (size != c->size) {
    /* Odd sizes: a mapping of their own. */
    char *base = mmap(NULL, slot, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return NULL;
    br__stack *s = new_desc(c);
    if (!s) {
      munmap(base, slot);
      errno = ENOMEM;
      return NULL;
    }
    *s = (br__stack){.lo = base + ps, .size = size, .light_guard = light_guard(base), .map = base};
    return s;
  }
  if (!c->slab_left) {
    struct br__slab *sl = prov_take(c, size);
    bool inline_carved = !sl;
    if (!sl) sl = slab_map(size, false);
    if (!sl) return NULL;
    /* From a loop's second slab on it is spawning many: all its guards in
     * one call (a first slab may serve a handful of tasks, each guarded
     * as it is carved). */
    if (inline_carved && c->fresh_slabs >= 2) sl->guards = slab_guards(sl->base, slot);
    sl->next = c->slabs;
    c->slabs = sl;
    c->slab_next = sl->base;
    c->slab_left = SLAB_STACKS;
    c->slab_made = sl->made;
    c->slab_guards = sl->guards;
  }
  br__stack *s = new_desc(c);
  if (!s) {
    errno = ENOMEM;
    return NULL;
  }
  /* A made slab whose guards failed part-way: its stacks go unguarded (a
   * canary each); an inline one tries the slot's guard again. */
  *s = (br__stack){.lo = c->slab_next + ps, .size = size, .from_slab = true, .made = c->slab_made,
                   .light_guard = c->slab_guards || (!c->slab_made && light_guard(c->slab_next))};
  c->slab_next += slot;
  c->slab_left--;
  return s;
}

br__stack *br__stack_get(br__stack_cache *c, size_t size) {
  br__stack *s;
  if (size == c->size && c->free) {
    s = c->free;
    c->free = s->next;
    c->cached--;
    s->next = NULL;
    arm_canary(s);
    return s;
  }
  /* Light guards cost no mapping: use them for every stack if we can. */
  if (atomic_load_explicit(&light_guards, memory_order_relaxed) != 0) {
    s = carve_unguarded(c, size); /* probes the kernel on first use */
    if (s) arm_canary(s);         /* only if the probe said no */
    return s;
  }
  size_t budget = br__stack_guard_budget();
  if (atomic_fetch_add(&guarded_live, 1) < budget) {
    s = map_guarded(c, size);
    if (s) {
      arm_canary(s);
      return s;
    }
    atomic_fetch_sub(&guarded_live, 1);
    if (errno != ENOMEM) return NULL;
  } else {
    atomic_fetch_sub(&guarded_live, 1);
  }
  s = carve_unguarded(c, size);
  if (s) arm_canary(s);
  return s;
}

br__stack *br__stack_get_guarded(br__stack_cache *c, size_t size) {
  if (atomic_load_explicit(&light_guards, memory_order_relaxed) != 0) {
    br__stack *s = carve_unguarded(c, size);
    if (s && s->light_guard) return s;
    if (s) br__stack_put(c, s);
  }
  atomic_fetch_add(&guarded_live, 1); /* outside the budget: one per loop */
  br__stack *s = map_guarded(c, size);
  if (!s) atomic_fetch_sub(&guarded_live, 1);
  return s;
}

static void unmap_one(br__stack_cache *c, br__stack *s) {
  if (s->guard) {
    munmap(s->guard, s->size + br__page_size());
    atomic_fetch_sub(&guarded_live, 1);
  } else if (!s->from_slab) {
    munmap(s->map, s->size + br__page_size());
  }
  if (s->from_slab) {
    /* slab memory is released with the cache; keep the descriptor */
    s->next = c->descs;
    c->descs = s;
    return;
  }
  s->next = c->descs;
  c->descs = s;
}

void br__stack_put(br__stack_cache *c, br__stack *s) {
#ifdef BRAID_ASAN
  /* A dead task's frames leave poisoned redzones behind; the next task on
   * this stack must start from clean shadow memory. */
  __asan_unpoison_memory_region(s->lo, s->size);
#endif
  if (s->size == c->size) {
    s->next = c->free;
    c->free = s;
    c->cached++;
    return;
  }
  unmap_one(c, s);
}

void br__stack_cache_fini(br__stack_cache *c) {
  while (c->free) {
    br__stack *s = c->free;
    c->free = s->next;
    unmap_one(c, s);
  }
  while (c->slabs) {
    struct br__slab *sl = c->slabs;
    c->slabs = sl->next;
    slab_unmap(sl->base, sl->len);
    free(sl);
  }
  while (c->descs) {
    br__stack *d = c->descs;
    c->descs = d->next;
    free(d);
  }
  c->cached = 0;
}

bool br__stack_overflow_at(const br__stack *s, const void *addr, const void *sp) {
  const char *a = addr, *p = sp;
  size_t ps = br__page_size();
  if (s->guard && a >= s->guard && a < s->guard + ps) return true;
  if (s->light_guard && a >= s->lo - ps && a < s->lo) return true;
  if (a < s->lo && a >= s->lo - 65536) return true;
  /* An unguarded stack overflows into the memory below and faults further
   * down, at its slab's bottom page at the latest (slab_map); the
   * interrupted stack pointer below the stack still says whose overflow it
   * is. A stack of its own has no such floor: a bound wide enough for a
   * run of neighbours, narrow enough not to claim a fault on some other
   * stack the task switched to. */
  size_t reach = s->from_slab ? SLAB_STACKS * (s->size + ps) : (size_t)64 << 20;
  return p && p < s->lo && (size_t)(s->lo - p) <= reach;
}
