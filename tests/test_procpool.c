/* SPDX-License-Identifier: MIT */
/* test_procpool — the process pool's API: submit, map, map_fixed, imap,
 * imap_unordered, initializer, cancellation, bad input, awaiting from a task,
 * large payloads, descriptor hygiene. Crash, timeout and stress tests are in
 * test_procpool_crash.c and test_procpool_stress.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_procpool_jobs.h"
#include "test_util.h"

static int square_fn(const void *in, size_t len, br_bytes *out) {
  if (len != 8) {
    br_fail(BR_EINVAL, "square wants 8 bytes, got %zu", len);
    return BR_EINVAL;
  }
  int64_t x;
  memcpy(&x, in, 8);
  x *= x;
  return br_bytes_set(out, &x, 8);
}
BR_JOB(square, square_fn);

/* Echo the input reversed (variable sizes, empty input). */
static int rev_fn(const void *in, size_t len, br_bytes *out) {
  char *p = br_bytes_resize(out, len);
  if (len && !p) return BR_ENOMEM;
  for (size_t i = 0; i < len; i++) p[i] = ((const char *)in)[len - 1 - i];
  return 0;
}
BR_JOB(rev, rev_fn);

/* Sum of the bytes of a large input, as uint64. */
static int sum_fn(const void *in, size_t len, br_bytes *out) {
  uint64_t s = 0;
  for (size_t i = 0; i < len; i++) s += ((const unsigned char *)in)[i];
  return br_bytes_set(out, &s, sizeof s);
}
BR_JOB(sum, sum_fn);

static br_procpool *new_pool(int n, const br_procpool_opts *o) {
  br_procpool *p = NULL;
  int r = br_procpool_new(&p, n, o);
  if (r == BR_ENOSYS && br_test_emulated()) br_test_skip("no exec of /proc/self/exe under qemu");
  assert_int_equal(r, 0);
  assert_non_null(p);
  return p;
}

static void test_registry(void **state) {
  (void)state;
  assert_non_null(br_job_find("square"));
  assert_null(br_job_find("no-such-job"));
  size_t n = br_job_count();
  assert_true(n >= 5);
  for (size_t i = 1; i < n; i++)
    assert_true(strcmp(br_job_at(i - 1)->name, br_job_at(i)->name) < 0);
  assert_null(br_job_at(n));
  assert_false(br_job_in_worker());
}

static void test_submit_and_await(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  assert_int_equal(br_procpool_size(p), 2);
  br_future *f[20];
  for (int64_t i = 0; i < 20; i++) assert_int_equal(br_procpool_submit(p, &f[i], "square", &i, 8, NULL), 0);
  for (int64_t i = 0; i < 20; i++) {
    void *v;
    assert_int_equal(br_await(f[i], &v), 0);
    br_bytes *b = v;
    assert_int_equal(b->len, 8);
    int64_t x;
    memcpy(&x, b->data, 8);
    assert_int_equal(x, i * i);
    br_bytes_free(b);
    br_future_unref(f[i]);
  }
  /* A job's own error and message. */
  br_future *e;
  assert_int_equal(br_procpool_submit(p, &e, "square", "abc", 3, NULL), 0);
  assert_int_equal(br_await(e, NULL), BR_EINVAL);
  assert_string_equal(br_future_message(e), "square wants 8 bytes, got 3");
  br_future_unref(e);
  br_procpool_free(p);
}

static void test_map_fixed_and_generic(void **state) {
  (void)state;
  br_procpool *p = new_pool(3, NULL);
  int64_t in[1000], out[1000];
  for (int i = 0; i < 1000; i++) in[i] = i - 500;
  size_t chunks[] = {0, 1, 7, 1000, 5000};
  for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
    br_procpool_map_opts mo = {.chunksize = chunks[c]};
    memset(out, 0, sizeof out);
    assert_int_equal(br_procpool_map_fixed(p, out, 8, NULL, "square", in, 8, 1000, &mo), 0);
    for (int i = 0; i < 1000; i++) assert_int_equal(out[i], in[i] * in[i]);
  }
  /* Item errors: a 4-byte item fails with the job's code; others succeed. */
  int32_t small[4] = {1, 2, 3, 4};
  int errs[4];
  int64_t o4[4];
  assert_int_equal(br_procpool_map_fixed(p, o4, 8, errs, "square", small, 4, 4, NULL), BR_EINVAL);
  for (int i = 0; i < 4; i++) assert_int_equal(errs[i], BR_EINVAL);
  /* Result of the wrong size: BR_ERANGE. */
  assert_int_equal(br_procpool_map_fixed(p, o4, 4, errs, "square", in, 8, 4, NULL), BR_ERANGE);
  /* Empty map. */
  assert_int_equal(br_procpool_map_fixed(p, NULL, 8, NULL, "square", NULL, 8, 0, NULL), 0);

  /* Generic map with variable sizes, including empty items. */
  enum { N = 300 };
  char *bufs[N];
  br_buf items[N];
  for (int i = 0; i < N; i++) {
    bufs[i] = malloc((size_t)i + 1);
    for (int k = 0; k < i; k++) bufs[i][k] = (char)('a' + (k % 26));
    items[i] = (br_buf){bufs[i], (size_t)i};
  }
  br_result res[N];
  /* A chunk size past the items (SIZE_MAX: "all in one") is one chunk of
   * all of them, not an allocation of SIZE_MAX slots. */
  br_procpool_map_opts all = {.chunksize = SIZE_MAX};
  assert_int_equal(br_procpool_map(p, res, "rev", items, N, &all), 0);
  for (int i = 0; i < N; i++) assert_int_equal(((br_bytes *)res[i].value)->len, (size_t)i);
  br_results_free(res, N);
  br_procpool_map_opts mo = {.chunksize = 16};
  assert_int_equal(br_procpool_map(p, res, "rev", items, N, &mo), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(res[i].err, 0);
    br_bytes *b = res[i].value;
    assert_non_null(b);
    assert_int_equal(b->len, (size_t)i);
    for (int k = 0; k < i; k++) assert_int_equal(((char *)b->data)[k], bufs[i][i - 1 - k]);
    free(bufs[i]);
  }
  /* One call releases the values and the messages (ASan checks it). */
  br_results_free(res, N);
  for (int i = 0; i < N; i++) assert_null(res[i].value);
  br_procpool_free(p);
}

/* Python's Pool.map over range(10), as in the seeds. */
static void test_map_seed_example(void **state) {
  (void)state;
  br_procpool *p = new_pool(4, NULL);
  int64_t in[10], out[10];
  for (int i = 0; i < 10; i++) in[i] = i;
  assert_int_equal(br_procpool_map_fixed(p, out, 8, NULL, "square", in, 8, 10, NULL), 0);
  char buf[128];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "[");
  for (int i = 0; i < 10; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%lld", i ? ", " : "", (long long)out[i]);
  snprintf(buf + n, sizeof buf - n, "]");
  assert_string_equal(buf, "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]");
  br_procpool_free(p);
}

typedef struct gen {
  size_t n, pulled, consumed, max_ahead;
  int64_t v;
} gen;

static int gen_next(void *ud, size_t index, br_buf *item) {
  gen *g = ud;
  if (index >= g->n) return 0;
  assert_int_equal(index, g->pulled);
  g->pulled++;
  if (g->pulled - g->consumed > g->max_ahead) g->max_ahead = g->pulled - g->consumed;
  g->v = (int64_t)index;
  *item = (br_buf){&g->v, sizeof g->v};
  return 1;
}

static void test_imap_ordered_and_unordered(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  for (int ordered = 0; ordered < 2; ordered++) {
    gen g = {.n = 2000};
    br_procpool_imap_opts io = {.chunksize = 3, .window = 30};
    br_procpool_iter *it;
    int r = ordered ? br_procpool_imap(p, &it, "square", gen_next, &g, &io)
                    : br_procpool_imap_unordered(p, &it, "square", gen_next, &g, &io);
    assert_int_equal(r, 0);
    static bool seen[2000];
    memset(seen, 0, sizeof seen);
    size_t count = 0, idx;
    br_result res;
    while ((r = br_procpool_iter_next(it, &res, &idx)) == 0) {
      assert_int_equal(res.err, 0);
      if (ordered) assert_int_equal(idx, count);
      assert_true(idx < 2000);
      assert_false(seen[idx]);
      seen[idx] = true;
      int64_t x;
      memcpy(&x, ((br_bytes *)res.value)->data, 8);
      assert_int_equal(x, (int64_t)idx * (int64_t)idx);
      br_results_free(&res, 1);
      count++;
      g.consumed++;
    }
    assert_int_equal(r, BR_ECLOSED);
    assert_int_equal(count, 2000);
    assert_true(g.max_ahead <= 30 + 3); /* bounded memory */
    assert_int_equal(br_procpool_iter_next(it, &res, &idx), BR_ECLOSED);
    br_procpool_iter_free(it);
  }
  /* Freeing an iterator early cancels what has not run. */
  gen g = {.n = 100000};
  br_procpool_iter *it;
  assert_int_equal(br_procpool_imap(p, &it, "square", gen_next, &g, NULL), 0);
  br_result res;
  assert_int_equal(br_procpool_iter_next(it, &res, NULL), 0);
  br_results_free(&res, 1);
  br_procpool_iter_free(it);
  assert_true(g.pulled < 1000);
  br_procpool_free(p);
}

static void test_bad_input(void **state) {
  (void)state;
  br_procpool *p = (br_procpool *)1;
  assert_int_equal(br_procpool_new(&p, -1, NULL), BR_EINVAL);
  assert_null(p); /* left NULL on failure */
  assert_int_equal(br_procpool_new(&p, -5, NULL), BR_EINVAL);
  assert_int_equal(br_procpool_new(&p, 100000, NULL), BR_EINVAL);
  assert_int_equal(br_procpool_new(&p, BR_PROCPOOL_MAX_WORKERS + 1, NULL), BR_EINVAL);
  assert_int_equal(br_procpool_new(NULL, 2, NULL), BR_EINVAL);
  br_procpool_opts o = {.initializer = "no-such-init"};
  assert_int_equal(br_procpool_new(&p, 2, &o), BR_ENOJOB);
  assert_null(p);

  br_procpool_opts lim = {.max_payload = 1024};
  p = new_pool(1, &lim);
  br_future *f = (br_future *)1;
  int64_t x = 3;
  assert_int_equal(br_procpool_submit(p, &f, "nope", &x, 8, NULL), BR_ENOJOB);
  assert_null(f);
  assert_int_equal(br_procpool_submit(p, &f, NULL, &x, 8, NULL), BR_EINVAL);
  assert_int_equal(br_procpool_submit(p, &f, "square", NULL, 8, NULL), BR_EINVAL);
  char big[2048] = {0};
  assert_int_equal(br_procpool_submit(p, &f, "rev", big, sizeof big, NULL), BR_E2BIG);
  br_buf items[1] = {{big, sizeof big}};
  br_result res[1];
  assert_int_equal(br_procpool_map(p, res, "rev", items, 1, NULL), BR_E2BIG);
  assert_int_equal(br_procpool_map(p, res, "nope", items, 1, NULL), BR_ENOJOB);
  /* A result over the limit fails the job, not the pool. */
  tjob j = tj(1, A_BIG, 1);
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  assert_int_equal(br_await(f, NULL), BR_E2BIG);
  assert_non_null(strstr(br_future_message(f), "over the pool's limit"));
  br_future_unref(f);
  assert_int_equal(br_procpool_submit(p, &f, "square", &x, 8, NULL), 0);
  void *v = NULL;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(tresult(v), 9);
  br_future_unref(f);
  assert_int_equal(br_procpool_shutdown(p, (br_shutdown_mode)7), BR_EINVAL);
  assert_int_equal(br_procpool_shutdown(NULL, BR_SHUTDOWN_DRAIN), BR_EINVAL);
  br_procpool_stats st;
  assert_int_equal(br_procpool_get_stats(NULL, &st), BR_EINVAL);
  assert_int_equal(br_procpool_get_stats(p, NULL), BR_EINVAL);
  assert_int_equal(br_procpool_get_stats(p, &st), 0);
  assert_int_equal(st.workers, 1);
  assert_int_equal(br_procpool_shutdown(p, BR_SHUTDOWN_DRAIN), 0);
  assert_int_equal(br_procpool_submit(p, &f, "square", &x, 8, NULL), BR_ESHUTDOWN);
  assert_int_equal(br_procpool_shutdown(p, BR_SHUTDOWN_CANCEL), 0);
  assert_int_equal(br_procpool_free(p), 0);
  assert_int_equal(br_procpool_free(NULL), 0);
}

/* BR_CPUS (0): one worker per usable CPU. */
static void test_cpus(void **state) {
  (void)state;
  br_procpool *p = new_pool(BR_CPUS, NULL);
  assert_int_equal(br_procpool_size(p), br_cpu_count());
  int64_t in[64], out[64];
  for (int i = 0; i < 64; i++) in[i] = i;
  assert_int_equal(br_procpool_map_fixed(p, out, 8, NULL, "square", in, 8, 64, NULL), 0);
  for (int i = 0; i < 64; i++) assert_int_equal(out[i], (int64_t)i * i);
  assert_int_equal(br_procpool_free(p), 0);
}

/* br_fail inside a job: code and message reach the future, through a plain
 * submit and through both maps. */
static void test_fail_in_job(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  static const struct {
    uint32_t action;
    int code;
    const char *msg;
  } cases[] = {
      {A_FAIL, BR_ERANGE, "job 7 refuses"},                        /* br_fail + return code */
      {A_FAILONLY, BR_ERANGE, "job 7 refuses through br_fail"},    /* br_fail, return 0 */
      {A_FAILCODE, BR_EIO, "job 7: message from br_fail"},         /* returned code wins */
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    tjob j = tj(7, cases[k].action, 0);
    br_future *f;
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
    void *v = (void *)1;
    assert_int_equal(br_await(f, &v), cases[k].code);
    assert_string_equal(br_future_message(f), cases[k].msg);
    br_future_unref(f);
    /* The next job on the same worker starts clean: no stale message. */
    tjob ok = tj(8, A_OK, 0);
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &ok, sizeof ok, NULL), 0);
    assert_int_equal(br_await(f, &v), 0);
    assert_int_equal(tresult(v), 8);
    br_future_unref(f);
  }
  /* A negative return without br_fail: the code's own text. */
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", "x", 1, NULL), 0);
  assert_int_equal(br_await(f, NULL), BR_EINVAL);
  assert_string_equal(br_future_message(f), "tjob: 1 bytes");
  br_future_unref(f);

  /* In a map: each item keeps its own code and message. */
  enum { N = 12 };
  tjob items[N];
  br_buf bufs[N];
  for (uint32_t i = 0; i < N; i++) {
    items[i] = tj(i, i % 3 == 1 ? A_FAILONLY : i % 3 == 2 ? A_FAILCODE : A_OK, 0);
    bufs[i] = (br_buf){&items[i], sizeof items[i]};
  }
  br_result res[N];
  br_procpool_map_opts mo = {.chunksize = 4}; /* failures share chunks with successes */
  assert_int_equal(br_procpool_map(p, res, "tjob", bufs, N, &mo), BR_ERANGE);
  for (uint32_t i = 0; i < N; i++) {
    char want[64];
    if (i % 3 == 0) {
      assert_int_equal(res[i].err, 0);
      assert_null(res[i].msg);
      assert_int_equal(((br_bytes *)res[i].value)->len, 8);
    } else if (i % 3 == 1) {
      assert_int_equal(res[i].err, BR_ERANGE);
      snprintf(want, sizeof want, "job %u refuses through br_fail", i);
      assert_string_equal(res[i].msg, want);
      assert_null(res[i].value);
    } else {
      assert_int_equal(res[i].err, BR_EIO);
      snprintf(want, sizeof want, "job %u: message from br_fail", i);
      assert_string_equal(res[i].msg, want);
    }
  }
  br_results_free(res, N);
  uint64_t out[N];
  int errs[N];
  assert_int_equal(br_procpool_map_fixed(p, out, 8, errs, "tjob", items, sizeof *items, N, &mo),
                   BR_ERANGE);
  for (uint32_t i = 0; i < N; i++) {
    assert_int_equal(errs[i], i % 3 == 0 ? 0 : i % 3 == 1 ? BR_ERANGE : BR_EIO);
    if (i % 3 == 0) assert_int_equal(out[i], i);
  }
  assert_int_equal(br_procpool_free(p), 0);
}

/* br_results_free releases map and iterator results: values and messages
 * (ASan/LSan fail the test on a leak or a double free), and clears them. */
static void test_results_free(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  enum { N = 64 };
  int64_t xs[N];
  br_buf items[N];
  for (int i = 0; i < N; i++) {
    xs[i] = i;
    /* every 5th item has the wrong size: an error with a message */
    items[i] = (br_buf){&xs[i], i % 5 == 4 ? 4 : 8};
  }
  br_result res[N];
  assert_int_equal(br_procpool_map(p, res, "square", items, N, NULL), BR_EINVAL);
  for (int i = 0; i < N; i++) {
    if (i % 5 == 4) {
      assert_int_equal(res[i].err, BR_EINVAL);
      assert_string_equal(res[i].msg, "square wants 8 bytes, got 4");
    } else {
      assert_int_equal(res[i].err, 0);
      int64_t x;
      memcpy(&x, ((br_bytes *)res[i].value)->data, 8);
      assert_int_equal(x, (int64_t)i * i);
    }
  }
  /* A value the caller keeps: take it out first, then it is the caller's. */
  br_bytes *kept = res[0].value;
  res[0].value = NULL;
  br_results_free(res, N);
  for (int i = 0; i < N; i++) {
    assert_null(res[i].value);
    assert_null(res[i].msg);
  }
  assert_int_equal(kept->len, 8);
  br_bytes_free(kept);
  assert_int_equal(br_procpool_free(p), 0);
}

/* Both shutdown modes: DRAIN finishes what was queued, CANCEL kills what
 * runs and cancels what waits; neither accepts new work. */
static void test_shutdown_modes(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  enum { N = 40 };
  for (int mode = BR_SHUTDOWN_DRAIN; mode <= BR_SHUTDOWN_CANCEL; mode++) {
    br_procpool *p = new_pool(2, &o);
    uint32_t base = (uint32_t)mode * 1000;
    br_future *f[N];
    for (uint32_t i = 0; i < N; i++) {
      /* DRAIN: short sleeps that must all finish; CANCEL: two jobs that
       * would hang forever, then quick ones that may or may not start. */
      tjob j = mode == BR_SHUTDOWN_DRAIN ? tj(base + i, A_SLEEP, 5)
                                         : tj(base + i, i < 2 ? A_HANG : A_SLEEP, 5);
      assert_int_equal(br_procpool_submit(p, &f[i], "tjob", &j, sizeof j, NULL), 0);
    }
    if (mode == BR_SHUTDOWN_CANCEL) {
      /* Wait until both hanging jobs run: they can only end by being killed. */
      while (atomic_load(&t.c[base]) == 0 || atomic_load(&t.c[base + 1]) == 0) sched_yield();
    }
    assert_int_equal(br_procpool_shutdown(p, (br_shutdown_mode)mode), 0);
    br_future *late;
    tjob j = tj(base + 999, A_OK, 0);
    assert_int_equal(br_procpool_submit(p, &late, "tjob", &j, sizeof j, NULL), BR_ESHUTDOWN);
    for (uint32_t i = 0; i < N; i++) {
      assert_true(br_future_done(f[i])); /* shutdown returns after every future */
      void *v = NULL;
      int r = br_await(f[i], &v);
      if (mode == BR_SHUTDOWN_DRAIN) {
        assert_int_equal(r, 0);
        assert_int_equal(tresult(v), base + i);
      } else if (i < 2) {
        assert_int_equal(r, BR_ECANCELED);
        assert_non_null(strstr(br_future_message(f[i]), "BR_SHUTDOWN_CANCEL"));
      } else if (r == 0) {
        assert_int_equal(tresult(v), base + i); /* finished before the shutdown */
      } else {
        assert_int_equal(r, BR_ECANCELED);
      }
      br_future_unref(f[i]);
    }
    assert_int_equal(br_procpool_free(p), 0);
    for (uint32_t i = 0; i < N; i++) {
      if (mode == BR_SHUTDOWN_DRAIN) assert_int_equal(t.c[base + i], 1);
      else assert_true(t.c[base + i] <= 1);
    }
  }
  tcounter_close(&t);
}

/* A running job sees br_cancelled() once its future is cancelled. */
static void test_cancelled_in_job(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(1, &o);
  tjob j = tj(5, A_CANCELWAIT, 20000);
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  while (atomic_load(&t.c[5]) == 0) sched_yield(); /* it runs */
  assert_int_equal(br_future_cancel(f), 0);
  assert_int_equal(br_await(f, NULL), BR_ECANCELED);
  br_future_unref(f);
  /* The worker is free again as soon as the job noticed. */
  tjob ok = tj(6, A_OK, 0);
  void *v;
  int64_t t0 = br_now();
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &ok, sizeof ok, NULL), 0);
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(tresult(v), 6);
  assert_true(br_now() - t0 < (int64_t)10 * 1000000000); /* not the 20 s the job allows */
  br_future_unref(f);
  assert_int_equal(br_procpool_free(p), 0);
  tcounter_close(&t);
}

/* br_procpool_free from a callback of one of the pool's futures (the pool's
 * own thread) refuses with BR_EDEADLK instead of waiting for itself. */
typedef struct cb_arg {
  br_procpool *p;
  _Atomic int free_rc, shutdown_rc, called;
} cb_arg;

static void on_done(void *arg) {
  cb_arg *a = arg;
  atomic_store(&a->free_rc, br_procpool_free(a->p));
  atomic_store(&a->shutdown_rc, br_procpool_shutdown(a->p, BR_SHUTDOWN_DRAIN));
  atomic_store(&a->called, 1);
}

static void test_free_from_callback(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  cb_arg a = {.p = new_pool(1, &o)};
  br_future *f;
  /* The job waits for our flag, so the callback is registered while f is
   * pending and runs where f completes: on the pool's manager thread. */
  tjob j = tj(1, A_WAITFLAG, 100);
  assert_int_equal(br_procpool_submit(a.p, &f, "tjob", &j, sizeof j, NULL), 0);
  assert_int_equal(br_future_on_done(f, on_done, &a), 0);
  atomic_store(&t.c[100], 1);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  br_bytes_free(v);
  while (!atomic_load(&a.called)) sched_yield();
  assert_int_equal(atomic_load(&a.free_rc), BR_EDEADLK);
  assert_int_equal(atomic_load(&a.shutdown_rc), BR_EDEADLK);
  br_future_unref(f);
  assert_int_equal(br_procpool_free(a.p), 0);
  tcounter_close(&t);
}

static void test_initializer(void **state) {
  (void)state;
  br_procpool_opts o = {.initializer = "tinit", .init_arg = "none", .init_arg_len = 4};
  br_procpool *p = new_pool(2, &o);
  tjob j = tj(0, A_INITVAL, 0);
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(tresult(v), 4242);
  br_future_unref(f);
  br_procpool_free(p);

  /* A failing initializer breaks the pool with its message. It fails once
   * the job is submitted (t.c[0]): workers may start faster than a submit. */
  tcounter t;
  tcounter_open(&t);
  char arg[80];
  snprintf(arg, sizeof arg, "fail:%s", t.path);
  br_procpool_opts bad = {.initializer = "tinit", .init_arg = arg, .init_arg_len = strlen(arg)};
  p = new_pool(2, &bad);
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  atomic_store(&t.c[0], 1);
  assert_int_equal(br_await(f, NULL), BR_EFAILED);
  assert_non_null(strstr(br_future_message(f), "initializer refused"));
  br_future_unref(f);
  int r = br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL);
  assert_int_equal(r, BR_EFAILED);
  br_procpool_free(p);

  /* Workers that die before they are ready are not replaced for ever: the
   * pool gives up with a message naming the cause. */
  atomic_store(&t.c[0], 0);
  snprintf(arg, sizeof arg, "exit:%s", t.path);
  br_procpool_opts dies = {.initializer = "tinit", .init_arg = arg, .init_arg_len = strlen(arg)};
  p = new_pool(2, &dies);
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  atomic_store(&t.c[0], 1);
  assert_int_equal(br_await(f, NULL), BR_EFAILED);
  const char *m = br_future_message(f);
  if (!strstr(m, "before it was ready") || !strstr(m, "exited with status 7"))
    fail_msg("message: %s", m);
  br_future_unref(f);
  br_procpool_stats st;
  br_procpool_get_stats(p, &st);
  assert_true(st.worker_deaths >= 5);
  assert_true(st.worker_deaths <= 2 * 5); /* the other slot may be one death short */
  br_procpool_free(p);
  tcounter_close(&t);
}

static void test_cancel_pending(void **state) {
  (void)state;
  tcounter t;
  tcounter_open(&t);
  br_procpool_opts o = topts(&t);
  br_procpool *p = new_pool(1, &o);
  br_future *busy, *f[50];
  tjob j = tj(0, A_SLEEP, 300);
  assert_int_equal(br_procpool_submit(p, &busy, "tjob", &j, sizeof j, NULL), 0);
  for (uint32_t i = 0; i < 50; i++) {
    j = tj(1 + i, A_OK, 0);
    assert_int_equal(br_procpool_submit(p, &f[i], "tjob", &j, sizeof j, NULL), 0);
  }
  for (int i = 0; i < 50; i += 2) assert_int_equal(br_future_cancel(f[i]), 0);
  for (int i = 0; i < 50; i++) {
    void *v = NULL;
    int r = br_await(f[i], &v);
    if (i % 2 == 0) {
      assert_int_equal(r, BR_ECANCELED);
    } else {
      assert_int_equal(r, 0);
      assert_int_equal(tresult(v), 1 + (uint64_t)i);
    }
    br_future_unref(f[i]);
  }
  void *v;
  assert_int_equal(br_await(busy, &v), 0);
  br_bytes_free(v);
  br_future_unref(busy);
  br_procpool_free(p);
  for (uint32_t i = 0; i < 50; i++) assert_int_equal(t.c[1 + i], i % 2 == 0 ? 0 : 1);
  tcounter_close(&t);
}

static void test_large_payloads(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  size_t n = (size_t)8 << 20;
  unsigned char *big = malloc(n);
  uint64_t want = 0;
  for (size_t i = 0; i < n; i++) big[i] = (unsigned char)(i * 13), want += big[i];
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "sum", big, n, NULL), 0);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  assert_int_equal(tresult(v), want);
  br_future_unref(f);
  /* Sizes around the inline limit. */
  size_t sizes[] = {0, 1, 32767, 32768, 32769, 65536, 300000};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    assert_int_equal(br_procpool_submit(p, &f, "rev", big, sizes[k], NULL), 0);
    assert_int_equal(br_await(f, &v), 0);
    br_bytes *b = v;
    assert_int_equal(b->len, sizes[k]);
    for (size_t i = 0; i < sizes[k]; i++)
      if (((unsigned char *)b->data)[i] != big[sizes[k] - 1 - i]) fail();
    br_bytes_free(b);
    br_future_unref(f);
  }
  free(big);
  br_procpool_free(p);
}

/* Awaiting from a task suspends only that task: a ticker keeps running. */
static int ticks;
static void *ticker(void *arg) {
  (void)arg;
  for (;;) {
    if (br_sleep_ms(2) < 0) return NULL;
    ticks++;
  }
}

static void *task_main(void *arg) {
  br_procpool *p = arg;
  br_task *t;
  assert_int_equal(br_spawn(&t, ticker, NULL, NULL), 0);
  tjob j = tj(0, A_SLEEP, 200);
  br_future *f;
  assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
  void *v;
  assert_int_equal(br_await(f, &v), 0);
  br_bytes_free(v);
  br_future_unref(f);
  int64_t in[100], out[100];
  for (int i = 0; i < 100; i++) in[i] = i;
  assert_int_equal(br_procpool_map_fixed(p, out, 8, NULL, "square", in, 8, 100, NULL), 0);
  assert_int_equal(out[99], 99 * 99);
  br_task_close(t);
  return NULL;
}

static void test_await_from_task(void **state) {
  (void)state;
  br_procpool *p = new_pool(2, NULL);
  ticks = 0;
  assert_int_equal(br_run(NULL, task_main, p), 0);
  assert_true(ticks >= 20); /* 200 ms of a 2 ms ticker, with slack */
  br_procpool_free(p);
}

static void test_no_fd_leak(void **state) {
  (void)state;
  int before = br_test_count_fds();
  for (int k = 0; k < 3; k++) {
    br_procpool *p = new_pool(2, NULL);
    br_future *f;
    tjob j = tj(0, A_BIG, 2); /* a memfd result */
    assert_int_equal(br_procpool_submit(p, &f, "tjob", &j, sizeof j, NULL), 0);
    void *v;
    assert_int_equal(br_await(f, &v), 0);
    br_bytes_free(v);
    br_future_unref(f);
    br_procpool_free(p);
  }
  assert_int_equal(br_test_count_fds(), before);
}

int main(void) {
  /* qemu-user can neither exec this foreign-architecture program (no
   * binfmt_misc) nor, on our CI machines, create threads reliably. */
  if (br_test_emulated()) br_test_skip("the process pool cannot run under qemu-user");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_submit_and_await),
      cmocka_unit_test(test_map_fixed_and_generic),
      cmocka_unit_test(test_map_seed_example),
      cmocka_unit_test(test_imap_ordered_and_unordered),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_cpus),
      cmocka_unit_test(test_fail_in_job),
      cmocka_unit_test(test_results_free),
      cmocka_unit_test(test_shutdown_modes),
      cmocka_unit_test(test_cancelled_in_job),
      cmocka_unit_test(test_free_from_callback),
      cmocka_unit_test(test_initializer),
      cmocka_unit_test(test_cancel_pending),
      cmocka_unit_test(test_large_payloads),
      cmocka_unit_test(test_await_from_task),
      cmocka_unit_test(test_no_fd_leak),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
