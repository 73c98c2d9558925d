/* SPDX-License-Identifier: MIT */
/* braid — coroutine stacks (sys layer).
 *
 * Stacks are mmap'd with MAP_NORESERVE, so only the pages a task touches
 * cost memory, and are cached for reuse by the allocator that made them, so
 * a warm spawn touches no fresh page.
 *
 * Mappings are the scarce resource: a stack with its own mprotect'd guard
 * page is two kernel mappings (VMAs), and vm.max_map_count is 65,530 on a
 * stock machine. So:
 *  - where the kernel has MADV_GUARD_INSTALL (Linux 6.13+), every stack is
 *    carved from a slab (one mapping for 128 stacks) and gets a guard page
 *    that splits nothing: a million guarded stacks cost ~7,800 mappings;
 *  - elsewhere, mprotect'd guard pages come from a process-wide budget
 *    (max_map_count / 8, BRAID_GUARD_STACKS overrides); past it, stacks are
 *    carved from slabs and protected by a canary word at their low end that
 *    is checked at every switch instead.
 * Either way an overflow is reported with the task's name.
 *
 * A loop that needs many fresh stacks gets slabs made ahead by a background
 * thread (guards installed, top pages faulted in): see "the provisioner" in
 * stack.c.
 */
#ifndef BRAID_SYS_STACK_H
#define BRAID_SYS_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BR__STACK_CANARY 0xB7A1D5EEDCA7A11EULL
#define BR__STACK_MIN ((size_t)16 * 1024)
#define BR__STACK_MAX ((size_t)1 << 30)
#define BR__STACK_DEFAULT ((size_t)256 * 1024)

typedef struct br__stack {
  char *lo;       /* lowest usable byte (the canary lives here) */
  size_t size;    /* usable bytes */
  char *guard;    /* guard page, or NULL if unguarded */
  struct br__stack *next; /* free-list link while cached */
  bool from_slab; /* carved from a slab: never unmapped on its own */
  bool light_guard; /* the page below lo is a MADV_GUARD_INSTALL guard */
  bool made;      /* its slab was made ahead by the provisioner (stack.c) */
  char *map;      /* start of its own mapping (odd-size unguarded stacks) */
} br__stack;

typedef struct br__stack_cache {
  br__stack *free;     /* cached stacks of size `size` */
  size_t size;         /* the one size this cache keeps */
  size_t cached;
  /* slab carving for unguarded stacks */
  char *slab_next;
  size_t slab_left;    /* stacks left in the current slab */
  struct br__slab *slabs;
  struct br__stack *descs; /* free descriptors */
  unsigned fresh_slabs;    /* slabs it has needed (the provisioner starts at PROV_AFTER) */
  bool slab_made, slab_guards; /* the current slab was made ahead / has all its guards (stack.c) */
} br__stack_cache;

size_t br__page_size(void);

/* Round a requested size to whole pages; 0 on out-of-range input. */
size_t br__stack_round(size_t size);

void br__stack_cache_init(br__stack_cache *c, size_t size);
void br__stack_cache_fini(br__stack_cache *c);

/* br__stack_get: a stack of exactly `size` usable bytes (page multiple),
 * from the cache when its size matches. NULL with errno ENOMEM, or ELIMIT
 * reported through *why when mappings run out. */
br__stack *br__stack_get(br__stack_cache *c, size_t size);
void br__stack_put(br__stack_cache *c, br__stack *s);
/* A stack that always has a guard page, whatever the budget (the shared
 * stack of a loop's compact tasks: one per loop). NULL with errno. */
br__stack *br__stack_get_guarded(br__stack_cache *c, size_t size);

/* Whether the canary at the low end of s is intact. */
static inline bool br__stack_canary_ok(const br__stack *s) {
  return s->guard || s->light_guard || *(const volatile uint64_t *)s->lo == BR__STACK_CANARY;
}

/* Whether a fault at addr, taken with the stack pointer at sp (NULL:
 * unknown), is an overflow of s: addr in its guard page or within 64 KiB
 * below its low end, or sp below its low end by no more than an overflow
 * of an unguarded stack can run before it faults. Async-signal-safe. */
bool br__stack_overflow_at(const br__stack *s, const void *addr, const void *sp);

/* Number of guarded stacks alive now and the budget (for diagnostics). */
size_t br__stack_guarded_live(void);
size_t br__stack_guard_budget(void);

#endif
