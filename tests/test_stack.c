/* SPDX-License-Identifier: MIT */
/* test_stack — task stacks made ahead by the provisioner (sys/stack.c): a
 * loop with many live tasks gets slabs whose guards and top pages were
 * prepared by a background thread. Those stacks must behave exactly like the
 * ones a loop carves itself: each task's frames are its own (a pattern
 * written before a park is intact after it, while hundreds of neighbours
 * park and run), pointers into a parked task's stack stay valid (a child
 * writes into its parent's local array while the parent waits), an
 * overflow is reported with the task's name, BRAID_STACK_PROVISION=0 turns
 * the thread off, and a fork while the thread runs leaves a child that
 * provisions for itself. Every case runs in a child process of its own, so
 * each starts with a fresh provisioner. */
#include "test_util.h"
#include "core_test.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "core/core.h"

/* Tasks alive at once: enough for several slabs of 128 (the provisioner
 * starts at a loop's 4th fresh slab). Under TSan at most 8,128 fibers. */
#define LIVE 1500

/* Set once every task of a case is spawned: until then they wait, so all
 * are alive at once (enough of them for made slabs, however slowly the
 * machine or a sanitizer runs them). */
static br_event *gate;

typedef struct {
  long made;     /* tasks whose stack came from a slab made ahead */
  long bad;      /* patterns found changed */
  long done;
} census;

static void *patterned(void *arg) {
  census *c = arg;
  volatile unsigned char frame[8192];
  uintptr_t key = (uintptr_t)&frame[0];
  for (size_t i = 0; i < sizeof frame; i++) frame[i] = (unsigned char)(key >> 4 ^ i);
  struct br__task *self = br__task_get(br_self());
  if (self && self->stack && self->stack->made) c->made++;
  /* Park three times: meanwhile every other task writes its own frames. */
  T_OK(br_event_wait(gate));
  T_OK(br_sleep_ms(5));
  T_OK(br_yield());
  for (size_t i = 0; i < sizeof frame; i++)
    if (frame[i] != (unsigned char)(key >> 4 ^ i)) {
      c->bad++;
      break;
    }
  c->done++;
  return NULL;
}

static void *patterned_main(void *arg) {
  census *c = arg;
  long n = br_test_scaled(LIVE);
  if (n < 1000) n = 1000; /* well past the provisioner's threshold */
  br_task **h = calloc((size_t)n, sizeof *h);
  T_TRUE(h != NULL);
  T_OK(br_event_new(&gate));
  for (long i = 0; i < n; i++) {
    T_OK(br_spawn(&h[i], patterned, c, NULL));
    /* A pause per slab lets the thread (just started, maybe descheduled on
     * a busy machine) deliver before the loop has carved everything. */
    if (i % 64 == 63) T_OK(br_sleep_ms(2));
  }
  br_event_set(gate);
  for (long i = 0; i < n; i++) T_OK(br_join(h[i], NULL));
  free(h);
  br_event_free(gate);
  T_EQ(c->done, n);
  return NULL;
}

/* The provisioner makes slabs, and stacks come from slabs wherever the
 * kernel has light guards (MADV_GUARD_INSTALL); elsewhere (older kernels,
 * and qemu-user, where braid does not use them: the emulator cannot turn a
 * fault on one into the program's SIGSEGV) only past the budget of stacks
 * with a guard page of their own (8,191 on a stock machine), far more than
 * a case spawns. A budget of 0 takes every stack from slabs from the first
 * one, so the provisioner is exercised there too; where light guards exist
 * the budget is never consulted and this changes nothing. Called in each
 * case's child, before its first loop. */
static void stacks_from_slabs(void) { setenv("BRAID_GUARD_STACKS", "0", 1); }

static bool provision_possible(void) {
  const char *env = getenv("BRAID_STACK_PROVISION");
  return br_cpu_count() >= 2 && !(env && *env == '0');
}

/* Run body (a task) as main in a child process; the child exits 0 when the
 * run succeeded, no check failed and the census is clean (and, where the
 * thread may run, some task got a made stack). Every case runs in a child:
 * the test process itself never starts the provisioner, so its forks are
 * of a single-threaded process (ThreadSanitizer supports no other). */
typedef struct {
  br_task_fn body;
} census_case;

static void census_child(void *arg) {
  census_case *k = arg;
  stacks_from_slabs();
  census c = {0};
  int rc = br_run(NULL, k->body, &c);
  fprintf(stderr, "rc=%d made=%ld bad=%ld done=%ld failed_checks=%s\n", rc, c.made, c.bad, c.done,
          tf_msg[0] ? tf_msg : "none");
  /* On one CPU the thread never starts: every slab is carved inline. */
  exit(rc == 0 && !tf_msg[0] && c.bad == 0 && c.done > 0 && (!provision_possible() || c.made > 0) ? 0 : 1);
}

static void expect_clean_census(br_task_fn body) {
  census_case k = {body};
  br_child_result r;
  assert_int_equal(br_test_run_child(census_child, &k, 120000, &r), 0);
  bool ok = r.exited && r.exit_code == 0;
  char msg[2200];
  snprintf(msg, sizeof msg, "exited=%d code=%d signo=%d timed_out=%d stderr:\n%.2000s", r.exited,
           r.exit_code, r.signo, r.timed_out, r.err);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

static void test_made_stacks_keep_their_frames(void **state) {
  (void)state;
  expect_clean_census(patterned_main);
}

/* --- a child writes into its parent's stack while the parent waits ------- */

typedef struct {
  int *slots; /* the parent's local array */
  int n;
  br_chan *done;
} fill_arg;

static void *filler(void *arg) {
  fill_arg *f = arg;
  T_OK(br_event_wait(gate)); /* the parent is parked now */
  for (int i = 0; i < f->n; i++) f->slots[i] = i * 7 + 1;
  int one = 1;
  T_OK(br_chan_send(f->done, &one));
  return NULL;
}

static void *parent(void *arg) {
  census *c = arg;
  int slots[512] = {0};
  br_chan *done = tf_chan(sizeof(int), 0);
  T_TRUE(done != NULL);
  fill_arg f = {.slots = slots, .n = 512, .done = done};
  br_task *t;
  T_OK(br_spawn(&t, filler, &f, NULL));
  int got = 0;
  T_OK(br_chan_recv(done, &got));
  T_OK(br_join(t, NULL));
  for (int i = 0; i < 512; i++)
    if (slots[i] != i * 7 + 1) {
      c->bad++;
      break;
    }
  br_chan_free(done);
  struct br__task *self = br__task_get(br_self());
  if (self && self->stack && self->stack->made) c->made++;
  c->done++;
  return NULL;
}

static void *parents_main(void *arg) {
  census *c = arg;
  long n = br_test_scaled(LIVE / 2);
  if (n < 1000) n = 1000;
  br_task **h = calloc((size_t)n, sizeof *h);
  T_TRUE(h != NULL);
  T_OK(br_event_new(&gate));
  for (long i = 0; i < n; i++) {
    T_OK(br_spawn(&h[i], parent, c, NULL));
    if (i % 64 == 63) T_OK(br_sleep_ms(2)); /* see patterned_main */
  }
  br_event_set(gate);
  for (long i = 0; i < n; i++) T_OK(br_join(h[i], NULL));
  free(h);
  br_event_free(gate);
  T_EQ(c->done, n);
  return NULL;
}

static void test_pointers_into_parked_stacks_stay_valid(void **state) {
  (void)state;
  expect_clean_census(parents_main);
}

/* --- overflow on a made stack -------------------------------------------- */

static volatile int stop_depth = -1;

__attribute__((noinline)) static int recurse(volatile char *prev, int depth) {
  volatile char frame[512];
  if (depth == stop_depth) return 0;
  frame[0] = (char)depth;
  frame[511] = prev ? prev[0] : 0;
  return recurse(frame, depth + 1) + frame[17];
}

static void *deep(void *arg) {
  (void)arg;
  struct br__task *self = br__task_get(br_self());
  fprintf(stderr, "deep task: made=%d guard=%d\n", self->stack->made, self->stack->light_guard);
  /* Without its guard a made stack is protected by a canary, checked at a
   * switch: an endless recursion would run through its neighbours' stacks
   * first. Nothing to test then (the parent skips). */
  if (!self->stack->light_guard) return NULL;
  return (void *)(intptr_t)recurse(NULL, 0);
}

static void *idle(void *arg) {
  (void)arg;
  br_sleep_ms(100000);
  return NULL;
}

static void *overflow_main(void *arg) {
  (void)arg;
  /* Keep tasks alive until one lands on a made slab: the next stack comes
   * from the same slab (it has 63 slots left). */
  for (int i = 0; i < 4000; i++) {
    br_task *t;
    if (br_spawn(&t, idle, NULL, NULL)) break;
    struct br__task *it = br__task_get(t);
    bool made = it->stack && it->stack->made;
    br_detach(t);
    if (made) break;
    if (i % 64 == 63) br_sleep_ms(5); /* let the thread get ahead */
  }
  br_task *t;
  if (br_spawn(&t, deep, NULL, &(br_spawn_opts){.name = "made-deep"}) == 0) br_join(t, NULL);
  fprintf(stderr, "SURVIVED\n");
  exit(0);
}

static void overflow_child(void *arg) {
  (void)arg;
  stacks_from_slabs();
  br_run(NULL, overflow_main, NULL);
}

static void test_overflow_on_made_stack_is_reported(void **state) {
  (void)state;
  if (!provision_possible()) skip();
  br_child_result r;
  assert_int_equal(br_test_run_child(overflow_child, NULL, 60000, &r), 0);
  bool made = strstr(r.err, "deep task: made=1") != NULL;
  bool ok = r.signaled && r.signo == SIGSEGV && strstr(r.err, "task 'made-deep' overflowed its 256 KiB stack");
  char msg[2600];
  snprintf(msg, sizeof msg, "made=%d signaled=%d signo=%d exited=%d stderr:\n%.2000s", made, r.signaled,
           r.signo, r.exited, r.err);
  bool guarded = strstr(r.err, "deep task: made=1 guard=1") != NULL;
  br_child_result_free(&r);
  if (!made) fail_msg("the overflowing task did not get a made stack: %s", msg);
  if (!guarded) {
    /* A made slab's guards are light guards; without them there is no
     * overflow to catch. Every native stage on Linux 6.13+ runs this. */
    fprintf(stderr,
            "SKIP: made stacks have no guard page here (no light guards, MADV_GUARD_INSTALL%s)\n",
            br_test_emulated() ? ": braid does not use it under qemu-user, which cannot deliver "
                                 "a fault on such a page as the program's SIGSEGV"
                               : ": refused by this kernel, or BRAID_NO_LIGHT_GUARDS is set");
    skip();
  }
  if (!ok) fail_msg("%s", msg);
}

/* --- the guard pages of a made slab --------------------------------------- */

/* Every slot of a made slab has its guard (installed in one batch where the
 * kernel takes one): reading the page below a made stack kills the process
 * with SIGSEGV. Without the guard the read would succeed: the page is part
 * of the slab's mapping. Tasks parked on made stacks of one slab are probed
 * at their first, a middle and their last slot. */
static void *guard_main(void *arg) {
  (void)arg;
  enum { N = 1200 };
  static br_task *h[N];
  struct br__stack *made[N];
  int nmade = 0;
  /* PROBE_INLINE: slots of the second to fourth slab the loop carved
   * itself, whose guards were installed in one batch. */
  bool carved = getenv("PROBE_INLINE") != NULL;
  for (int i = 0; i < N; i++) {
    if (br_spawn(&h[i], idle, NULL, NULL)) break;
    struct br__task *it = br__task_get(h[i]);
    if (carved ? (i >= 64 && i < 4 * 64 && it->stack && !it->stack->made && it->stack->light_guard)
               : (it->stack && it->stack->made && it->stack->light_guard))
      made[nmade++] = it->stack;
    if (i % 64 == 63) br_sleep_ms(5);
  }
  fprintf(stderr, "made=%d\n", nmade);
  if (nmade < 64) exit(0); /* nothing to probe: the parent skips */
  int which = (int)(intptr_t)getenv("PROBE_SLOT")[0] - '0';
  struct br__stack *s = made[which == 0 ? 0 : which == 1 ? nmade / 2 : nmade - 1];
  fprintf(stderr, "probing\n");
  volatile char c = *(volatile char *)(s->lo - 1);
  fprintf(stderr, "SURVIVED %d\n", c);
  exit(0);
}

static void guard_child(void *arg) {
  setenv("PROBE_SLOT", arg, 1);
  br_run(NULL, guard_main, NULL);
}

static void expect_guards_fault(void);

static void test_made_slab_guards_fault(void **state) {
  (void)state;
  if (!provision_possible()) skip();
  expect_guards_fault();
}

/* The slabs a loop carves itself from its second on get their 64 guards in
 * one batch too: probed with the thread off. */
static void test_carved_slab_guards_fault(void **state) {
  (void)state;
  setenv("PROBE_INLINE", "1", 1);
  setenv("BRAID_STACK_PROVISION", "0", 1);
  expect_guards_fault();
  unsetenv("PROBE_INLINE");
  unsetenv("BRAID_STACK_PROVISION");
}

static void expect_guards_fault(void) {
  for (int k = 0; k < 3; k++) {
    char which[2] = {(char)('0' + k), 0};
    br_child_result r;
    assert_int_equal(br_test_run_child(guard_child, which, 60000, &r), 0);
    bool probed = strstr(r.err, "probing") != NULL;
    bool ok = r.signaled && r.signo == SIGSEGV && !strstr(r.err, "SURVIVED");
    char msg[2200];
    snprintf(msg, sizeof msg, "slot %d: signaled=%d signo=%d stderr:\n%.2000s", k, r.signaled, r.signo, r.err);
    br_child_result_free(&r);
    if (!probed) {
      if (strstr(msg, "made=")) skip(); /* no light guards on this kernel */
      fail_msg("%s", msg);
    }
    if (!ok) fail_msg("%s", msg);
  }
}

/* --- BRAID_STACK_PROVISION=0 ---------------------------------------------- */

/* Whether this process has a thread named "braid-stacks". */
static bool provisioner_thread(void) {
  bool found = false;
  DIR *d = opendir("/proc/self/task");
  if (!d) return false;
  struct dirent *e;
  while ((e = readdir(d)) && !found) {
    if (e->d_name[0] == '.') continue;
    char path[300], comm[32] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    if (fgets(comm, sizeof comm, f) && strncmp(comm, "braid-stacks", 12) == 0) found = true;
    fclose(f);
  }
  closedir(d);
  return found;
}

static void off_child(void *arg) {
  (void)arg;
  stacks_from_slabs();
  setenv("BRAID_STACK_PROVISION", "0", 1);
  census c = {0};
  int rc = br_run(NULL, patterned_main, &c);
  bool thread = provisioner_thread();
  fprintf(stderr, "rc=%d made=%ld bad=%ld done=%ld thread=%d\n", rc, c.made, c.bad, c.done, thread);
  /* The test process never provisions, so nothing made was inherited. */
  exit(rc == 0 && !thread && c.made == 0 && c.bad == 0 && c.done > 0 ? 0 : 1);
}

static void test_provisioning_can_be_turned_off(void **state) {
  (void)state;
  br_child_result r;
  assert_int_equal(br_test_run_child(off_child, NULL, 60000, &r), 0);
  bool ok = r.exited && r.exit_code == 0;
  char msg[2200];
  snprintf(msg, sizeof msg, "exited=%d code=%d stderr:\n%.2000s", r.exited, r.exit_code, r.err);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

/* --- fork while the thread runs ------------------------------------------- */

static void fork_child(void *arg) {
  (void)arg;
  stacks_from_slabs();
  census c = {0};
  if (br_run(NULL, patterned_main, &c) != 0 || c.bad) exit(2);
  /* The thread has been asked for; it may be making a slab (holding no
   * lock) or waiting. Fork twice in a row so one fork lands while it works. */
  for (int k = 0; k < 2; k++) {
    pid_t pid = fork();
    if (pid == 0) {
      census d = {0};
      int rc = br_run(NULL, patterned_main, &d);
      _exit(rc == 0 && d.bad == 0 && d.done > 0 && (!provision_possible() || d.made > 0) ? 0 : 3);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "fork %d: status %d\n", k, st);
      exit(4);
    }
  }
  exit(0);
}

static void test_fork_child_provisions_for_itself(void **state) {
  (void)state;
#ifdef BRAID_TSAN
  skip(); /* ThreadSanitizer cannot start threads after a multi-threaded fork */
#endif
  br_child_result r;
  assert_int_equal(br_test_run_child(fork_child, NULL, 120000, &r), 0);
  bool ok = r.exited && r.exit_code == 0;
  char msg[2200];
  snprintf(msg, sizeof msg, "exited=%d code=%d signo=%d timed_out=%d stderr:\n%.2000s", r.exited,
           r.exit_code, r.signo, r.timed_out, r.err);
  br_child_result_free(&r);
  if (!ok) fail_msg("%s", msg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_made_stacks_keep_their_frames),
      cmocka_unit_test(test_pointers_into_parked_stacks_stay_valid),
      cmocka_unit_test(test_overflow_on_made_stack_is_reported),
      cmocka_unit_test(test_made_slab_guards_fault),
      cmocka_unit_test(test_carved_slab_guards_fault),
      cmocka_unit_test(test_provisioning_can_be_turned_off),
      cmocka_unit_test(test_fork_child_provisions_for_itself),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
