/* SPDX-License-Identifier: MIT */
/* test_switch — the context switch itself: callee-saved registers (checked
 * in assembly around br_yield), the FP control state (rounding mode, x87
 * control word, MXCSR / FPCR flush-to-zero) kept per task across switches,
 * stack alignment, a task never migrating between threads, and many
 * switches in a row. Runs on x86-64 and aarch64. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "core_test.h"

#define IP(x) ((void *)(intptr_t)(x))
#define PI(p) ((intptr_t)(p))

/* --- callee-saved registers ------------------------------------------------ */

/* te_yield_check(seed, out): load every callee-saved register with a value
 * derived from seed, call br_yield (other tasks run and load their own), and
 * store what the registers hold afterwards in out[]. Returns br_yield's code.
 * x86-64: rbx rbp r12-r15 (6 values). aarch64: x19-x28 and d8-d15 (18). */
#if defined(__x86_64__)
#define NREGS 6
__asm__(".text\n"
        ".globl te_yield_check\n"
        ".type te_yield_check, @function\n"
        "te_yield_check:\n"
        "  pushq %rbx\n  pushq %rbp\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  pushq %rsi\n" /* out; 7 pushes + return address: rsp is 16-aligned */
        "  movq %rdi, %rbx\n"
        "  leaq 1(%rdi), %rbp\n  leaq 2(%rdi), %r12\n  leaq 3(%rdi), %r13\n"
        "  leaq 4(%rdi), %r14\n  leaq 5(%rdi), %r15\n"
        "  call br_yield@PLT\n"
        "  popq %rsi\n"
        "  movq %rbx, 0(%rsi)\n  movq %rbp, 8(%rsi)\n  movq %r12, 16(%rsi)\n"
        "  movq %r13, 24(%rsi)\n  movq %r14, 32(%rsi)\n  movq %r15, 40(%rsi)\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbp\n  popq %rbx\n"
        "  ret\n"
        ".size te_yield_check, .-te_yield_check\n");
#elif defined(__aarch64__)
#define NREGS 18
__asm__(".text\n"
        ".globl te_yield_check\n"
        ".type te_yield_check, %function\n"
        "te_yield_check:\n"
        "  stp x29, x30, [sp, #-176]!\n"
        "  mov x29, sp\n"
        "  stp x19, x20, [sp, #16]\n  stp x21, x22, [sp, #32]\n  stp x23, x24, [sp, #48]\n"
        "  stp x25, x26, [sp, #64]\n  stp x27, x28, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  str x1, [sp, #160]\n"
        "  mov x19, x0\n  add x20, x0, #1\n  add x21, x0, #2\n  add x22, x0, #3\n  add x23, x0, #4\n"
        "  add x24, x0, #5\n  add x25, x0, #6\n  add x26, x0, #7\n  add x27, x0, #8\n  add x28, x0, #9\n"
        "  add x9, x0, #10\n  fmov d8, x9\n  add x9, x0, #11\n  fmov d9, x9\n"
        "  add x9, x0, #12\n  fmov d10, x9\n  add x9, x0, #13\n  fmov d11, x9\n"
        "  add x9, x0, #14\n  fmov d12, x9\n  add x9, x0, #15\n  fmov d13, x9\n"
        "  add x9, x0, #16\n  fmov d14, x9\n  add x9, x0, #17\n  fmov d15, x9\n"
        "  bl br_yield\n"
        "  ldr x1, [sp, #160]\n"
        "  stp x19, x20, [x1, #0]\n  stp x21, x22, [x1, #16]\n  stp x23, x24, [x1, #32]\n"
        "  stp x25, x26, [x1, #48]\n  stp x27, x28, [x1, #64]\n"
        "  stp d8, d9, [x1, #80]\n  stp d10, d11, [x1, #96]\n  stp d12, d13, [x1, #112]\n"
        "  stp d14, d15, [x1, #128]\n"
        "  ldp x19, x20, [sp, #16]\n  ldp x21, x22, [sp, #32]\n  ldp x23, x24, [sp, #48]\n"
        "  ldp x25, x26, [sp, #64]\n  ldp x27, x28, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  ldp x29, x30, [sp], #176\n"
        "  ret\n"
        ".size te_yield_check, .-te_yield_check\n");
#endif

#ifdef NREGS
int te_yield_check(uint64_t seed, uint64_t *out);

static void *reg_checker(void *arg) {
  uint64_t base = (uint64_t)PI(arg) << 32;
  long rounds = br_test_scaled(2000);
  for (long r = 0; r < rounds; r++) {
    uint64_t seed = base + (uint64_t)r * 64;
    uint64_t out[NREGS];
    memset(out, 0, sizeof out);
    int rc = te_yield_check(seed, out);
    if (rc) return br_fail(rc, "yield");
    for (int i = 0; i < NREGS; i++)
      if (out[i] != seed + (uint64_t)i)
        return br_fail(BR_EIO, "register %d: %#llx, want %#llx (round %ld)", i, (unsigned long long)out[i],
                       (unsigned long long)(seed + (uint64_t)i), r);
  }
  return NULL;
}

static void *m_regs(void *arg) {
  (void)arg;
  br_task *t[8];
  for (int i = 0; i < 8; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], reg_checker, IP(i + 1), &o));
  }
  for (int i = 0; i < 8; i++) {
    int rc = br_join(t[i], NULL);
    if (rc) T_STR(br_future_message(br_task_future(t[i])), "");
  }
  return NULL;
}
#endif

static void test_callee_saved_registers(void **state) {
  (void)state;
#ifdef NREGS
  run_main(m_regs, NULL);
#else
  skip();
#endif
}

/* --- FP control state ---------------------------------------------------------- */

static double ref_third[4]; /* 1/3 under each mode below, computed outside braid */
static const int rmodes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};

static double third(void) {
  volatile double one = 1.0, three = 3.0;
  return one / three;
}

static void compute_refs(void) {
  int saved = fegetround();
  for (int i = 0; i < 4; i++) {
    fesetround(rmodes[i]);
    ref_third[i] = third();
  }
  fesetround(saved);
}

typedef struct {
  int mode_idx;
  long rounds;
} fp_arg;

static void *fp_task(void *arg) {
  fp_arg *a = arg;
  int want = rmodes[a->mode_idx];
  if (fegetround() != FE_TONEAREST) return br_fail(BR_EIO, "a new task starts in mode %d", fegetround());
  if (fesetround(want)) return br_fail(BR_EIO, "fesetround");
  for (long r = 0; r < a->rounds; r++) {
    int rc = (r % 16 == 0) ? br_sleep_ms(0) : br_yield();
    if (rc) return br_fail(rc, "yield");
    if (fegetround() != want)
      return br_fail(BR_EIO, "round %ld: mode %#x, want %#x", r, (unsigned)fegetround(), (unsigned)want);
    double q = third();
    if (q != ref_third[a->mode_idx]) return br_fail(BR_EIO, "round %ld: 1/3 = %.17g, want %.17g", r, q, ref_third[a->mode_idx]);
  }
  fesetround(FE_TONEAREST);
  return NULL;
}

static void *m_rounding(void *arg) {
  (void)arg;
  br_task *t[8];
  fp_arg a[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (fp_arg){.mode_idx = i % 4, .rounds = br_test_scaled(3000)};
    br_spawn_opts o = {.flags = (i / 4) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], fp_task, &a[i], &o));
  }
  /* The spawner keeps its own mode too. */
  T_EQ(fesetround(FE_TOWARDZERO), 0);
  for (int i = 0; i < 8; i++) {
    int rc = br_join(t[i], NULL);
    if (rc) T_STR(br_future_message(br_task_future(t[i])), "");
    T_EQ(fegetround(), FE_TOWARDZERO);
  }
  fesetround(FE_TONEAREST);
  return NULL;
}

static void test_rounding_mode_per_task(void **state) {
  (void)state;
  compute_refs();
  assert_true(ref_third[1] > ref_third[2]); /* the modes really differ */
  assert_int_equal(fegetround(), FE_TONEAREST);
  run_main(m_rounding, NULL);
  /* The thread that ran the loop is back in its own mode. */
  assert_int_equal(fegetround(), FE_TONEAREST);
}

/* The scheduler (the thread that runs the loop) keeps its mode whatever its
 * tasks do. */
static void *sets_upward(void *arg) {
  (void)arg;
  fesetround(FE_UPWARD);
  br_yield();
  return NULL;
}

static void test_loop_thread_mode_preserved(void **state) {
  (void)state;
  fesetround(FE_DOWNWARD);
  br_loop *L = NULL;
  (void)br_loop_new(&L, NULL);
  br_task *t;
  assert_int_equal(br_loop_spawn(L, &t, sets_upward, NULL, NULL), 0);
  assert_int_equal(br_loop_run(L), 0);
  int mode = fegetround();
  assert_int_equal(br_task_close(t), 0);
  assert_int_equal(br_loop_free(L), 0);
  fesetround(FE_TONEAREST);
  assert_int_equal(mode, FE_DOWNWARD);
}

#if defined(__x86_64__)
static uint32_t get_mxcsr(void) {
  uint32_t v;
  __asm__ __volatile__("stmxcsr %0" : "=m"(v));
  return v;
}
static void set_mxcsr(uint32_t v) { __asm__ __volatile__("ldmxcsr %0" : : "m"(v)); }
static uint16_t get_x87cw(void) {
  uint16_t v;
  __asm__ __volatile__("fnstcw %0" : "=m"(v));
  return v;
}
static void set_x87cw(uint16_t v) { __asm__ __volatile__("fldcw %0" : : "m"(v)); }

#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u
#define MXCSR_RC_MASK 0x6000u

typedef struct {
  uint32_t mxcsr;
  uint16_t x87;
} raw_fp;

static void *raw_fp_task(void *arg) {
  raw_fp *want = arg;
  set_mxcsr(want->mxcsr);
  set_x87cw(want->x87);
  for (int r = 0; r < 500; r++) {
    if (br_yield()) return br_fail(BR_EIO, "yield");
    uint32_t m = get_mxcsr() & ~0x3Fu; /* ignore sticky exception flags */
    if (m != (want->mxcsr & ~0x3Fu)) return br_fail(BR_EIO, "mxcsr %#x, want %#x", m, want->mxcsr);
    if (get_x87cw() != want->x87) return br_fail(BR_EIO, "x87 cw %#x, want %#x", get_x87cw(), want->x87);
  }
  set_mxcsr(0x1F80);
  set_x87cw(0x037F);
  return NULL;
}

static void *m_raw_fp(void *arg) {
  (void)arg;
  raw_fp w[4] = {
      {0x1F80 | MXCSR_FTZ | MXCSR_DAZ, 0x037F},          /* flush to zero */
      {0x1F80 | 0x4000, 0x077F},                         /* round down, x87 round down */
      {0x1F80, 0x007F},                                  /* x87 single precision */
      {0x1F80 & ~0x0200u, 0x037F},                       /* divide-by-zero unmasked */
  };
  br_task *t[8];
  for (int i = 0; i < 8; i++) {
    br_spawn_opts o = {.flags = (i / 4) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], raw_fp_task, &w[i % 4], &o));
  }
  for (int i = 0; i < 8; i++) {
    int rc = br_join(t[i], NULL);
    if (rc) T_STR(br_future_message(br_task_future(t[i])), "");
  }
  T_EQ(get_mxcsr() & ~0x3Fu, 0x1F80);
  T_EQ(get_x87cw(), 0x037F);
  return NULL;
}

static void test_mxcsr_and_x87_per_task(void **state) {
  (void)state;
  run_main(m_raw_fp, NULL);
}
#elif defined(__aarch64__)
static uint64_t get_fpcr(void) {
  uint64_t v;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
  return v;
}
static void set_fpcr(uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }

static void *raw_fp_task(void *arg) {
  uint64_t want = (uint64_t)PI(arg);
  set_fpcr(want);
  for (int r = 0; r < 500; r++) {
    if (br_yield()) return br_fail(BR_EIO, "yield");
    if (get_fpcr() != want) return br_fail(BR_EIO, "fpcr %#llx, want %#llx", (unsigned long long)get_fpcr(), (unsigned long long)want);
  }
  set_fpcr(0);
  return NULL;
}

static void *m_raw_fp(void *arg) {
  (void)arg;
  const uint64_t w[4] = {1u << 24 /* FZ */, 2u << 22 /* RM: toward -inf */, (1u << 24) | (3u << 22), 0};
  br_task *t[8];
  for (int i = 0; i < 8; i++) {
    br_spawn_opts o = {.flags = (i / 4) ? BR_SPAWN_COMPACT : 0};
    T_OK(br_spawn(&t[i], raw_fp_task, IP(w[i % 4]), &o));
  }
  for (int i = 0; i < 8; i++) {
    int rc = br_join(t[i], NULL);
    if (rc) T_STR(br_future_message(br_task_future(t[i])), "");
  }
  T_EQ(get_fpcr(), 0);
  return NULL;
}

static void test_mxcsr_and_x87_per_task(void **state) {
  (void)state;
  run_main(m_raw_fp, NULL);
}
#else
static void test_mxcsr_and_x87_per_task(void **state) {
  (void)state;
  skip();
}
#endif

/* --- stack alignment --------------------------------------------------------- */

__attribute__((noinline)) static int aligned_here(void) {
  _Alignas(16) volatile char v[16];
  v[0] = 1;
  return ((uintptr_t)v & 15) == 0;
}

static void *alignment_task(void *arg) {
  (void)arg;
  _Alignas(16) volatile char v[16];
  v[0] = 0;
  if (((uintptr_t)v & 15) != 0) return br_fail(BR_EIO, "entry frame misaligned");
  for (int i = 0; i < 10; i++) {
    if (!aligned_here()) return br_fail(BR_EIO, "nested frame misaligned");
    if (br_yield()) return br_fail(BR_EIO, "yield");
  }
  /* printf of doubles uses aligned SSE spills: would fault if misaligned. */
  char buf[64];
  snprintf(buf, sizeof buf, "%f %Lf", 1.5, (long double)2.5);
  return NULL;
}

static void *m_alignment(void *arg) {
  (void)arg;
  br_task *t[4];
  for (int i = 0; i < 4; i++) {
    br_spawn_opts o = {.flags = (i % 2) ? BR_SPAWN_COMPACT : 0, .stack_size = (i < 2) ? 0 : 20000};
    T_OK(br_spawn(&t[i], alignment_task, NULL, &o));
  }
  for (int i = 0; i < 4; i++) {
    int rc = br_join(t[i], NULL);
    if (rc) T_STR(br_future_message(br_task_future(t[i])), "");
  }
  return NULL;
}

static void test_stack_alignment(void **state) {
  (void)state;
  run_main(m_alignment, NULL);
}

/* --- tasks never migrate ------------------------------------------------------ */

typedef struct {
  br_future *wake[8];
  long moved;
  long rounds;
} migr_ctx;

static void *stays_put(void *arg) {
  br_future *f = arg;
  pthread_t me = pthread_self();
  int *e = &errno;
  for (int r = 0; r < 5; r++) {
    if (br_yield() || br_sleep_ms(1)) return br_fail(BR_EIO, "suspend");
    if (!pthread_equal(me, pthread_self()) || e != &errno) return br_fail(BR_EIO, "moved thread");
  }
  /* Woken by a completion on another thread: still resumes here. */
  if (br_await(f, NULL)) return br_fail(BR_EIO, "await");
  if (!pthread_equal(me, pthread_self()) || e != &errno) return br_fail(BR_EIO, "moved after a remote wake-up");
  return NULL;
}

typedef struct {
  br_future *f[8];
  int failures;
} loop_job;

static void *loop_job_main(void *arg) {
  loop_job *j = arg;
  br_task *t[8];
  for (int i = 0; i < 8; i++)
    if (br_spawn(&t[i], stays_put, j->f[i], &(br_spawn_opts){.flags = (i % 2) ? BR_SPAWN_COMPACT : 0}))
      return br_fail(BR_EIO, "spawn");
  for (int i = 0; i < 8; i++)
    if (br_join(t[i], NULL)) j->failures++;
  return NULL;
}

static void *loop_thread(void *arg) {
  return IP(br_run(NULL, loop_job_main, arg));
}

static void test_tasks_never_migrate(void **state) {
  (void)state;
  loop_job j[2];
  memset(j, 0, sizeof j);
  pthread_t th[2];
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < 8; i++) j[k].f[i] = tf_future();
    assert_int_equal(pthread_create(&th[k], NULL, loop_thread, &j[k]), 0);
  }
  /* Complete the futures from this (third) thread while both loops run. */
  struct timespec ts = {0, 30 * 1000000};
  nanosleep(&ts, NULL);
  for (int i = 0; i < 8; i++)
    for (int k = 0; k < 2; k++) br_future_set(j[k].f[i], NULL);
  for (int k = 0; k < 2; k++) {
    void *r;
    pthread_join(th[k], &r);
    assert_int_equal(PI(r), 0);
    assert_int_equal(j[k].failures, 0);
    for (int i = 0; i < 8; i++) br_future_unref(j[k].f[i]);
  }
}

/* --- many switches -------------------------------------------------------------- */

typedef struct {
  long n;
  long a, b;
} pp_ctx;

static void *pinger(void *arg) {
  pp_ctx *p = arg;
  for (long i = 0; i < p->n; i++) {
    if (p->a != p->b) return br_fail(BR_EIO, "out of step at %ld", i);
    p->a++;
    if (br_yield()) return br_fail(BR_EIO, "yield");
  }
  return NULL;
}

static void *ponger(void *arg) {
  pp_ctx *p = arg;
  for (long i = 0; i < p->n; i++) {
    p->b++;
    if (p->a != p->b) return br_fail(BR_EIO, "out of step at %ld", i);
    if (br_yield()) return br_fail(BR_EIO, "yield");
  }
  return NULL;
}

static void *m_pingpong(void *arg) {
  unsigned flags = (unsigned)PI(arg);
  pp_ctx p = {.n = br_test_scaled(1000000)};
  br_task *a, *b;
  int64_t t0 = br_now();
  T_OK(br_spawn(&a, pinger, &p, &(br_spawn_opts){.flags = flags}));
  T_OK(br_spawn(&b, ponger, &p, &(br_spawn_opts){.flags = flags}));
  T_OK(br_join(a, NULL));
  T_OK(br_join(b, NULL));
  T_EQ(p.a, p.n);
  T_EQ(p.b, p.n);
  double ns = (double)(br_now() - t0) / (2.0 * (double)p.n);
  fprintf(stderr, "  %s: %ld yields each, %.1f ns per switch (through the scheduler)\n",
          flags ? "compact" : "own stacks", p.n, ns);
  return NULL;
}

static void test_many_switches(void **state) {
  (void)state;
  run_main(m_pingpong, IP(0));
  run_main(m_pingpong, IP(BR_SPAWN_COMPACT));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_callee_saved_registers),
      cmocka_unit_test(test_rounding_mode_per_task),
      cmocka_unit_test(test_loop_thread_mode_preserved),
      cmocka_unit_test(test_mxcsr_and_x87_per_task),
      cmocka_unit_test(test_stack_alignment),
      cmocka_unit_test(test_tasks_never_migrate),
      cmocka_unit_test(test_many_switches),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
