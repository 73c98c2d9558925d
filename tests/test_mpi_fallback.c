/* SPDX-License-Identifier: MIT */
/* braid-mpi without mpirun: the same program falls back to a local process
 * pool (2 workers here), says so through braid's log, and submit, map with
 * per-item messages and imap work as on ranks. Bound: 60 s (takes < 1). */
#include "test_mpi_util.h"
#include "test_mpi_jobs.h"

#ifdef BRAID_HAVE_MPI

static char logged[2048];
static void hook(br_log_level lv, const char *msg, void *ud) {
  (void)lv;
  (void)ud;
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "%s\n", msg);
}

static int64_t items[20];
static int producer(void *ud, size_t i, br_buf *item) {
  (void)ud;
  if (i >= 20) return 0;
  items[i] = (int64_t)i;
  *item = (br_buf){&items[i], sizeof items[i]};
  return 1;
}

int main(int argc, char **argv) {
  /* Make sure no launcher variables leak in (ctest may run under one). */
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("PMI_RANK");
  unsetenv("PMI_SIZE");
  unsetenv("PMIX_RANK");
  br_set_log(hook, NULL);
  br_mpipool *p;
  br_mpipool_opts o = {.fallback_workers = 2};
  int64_t t0 = br_now();
  int rc = br_mpipool_new(&p, &argc, &argv, &o);
  MT_CHECK(rc == 0, "new: %s", br_strerror(rc));
  if (rc != 0) return 1;
  MT_CHECK(br_mpipool_is_local(p) == 1 && br_mpipool_size(p) == 2, "local %d size %d",
           br_mpipool_is_local(p), br_mpipool_size(p));
  MT_CHECK(br_mpi_size() == 1 && br_mpi_rank() == 0, "size %d", br_mpi_size());
  MT_CHECK(strstr(logged, "single rank") && strstr(logged, "local process pool of 2 workers"),
           "log: %s", logged);
  printf("log: %s", logged);

  br_future *f;
  MT_CHECK(br_mpipool_submit(p, &f, "echo", "abc", 3, NULL) == 0, "submit");
  void *v = NULL;
  MT_CHECK(br_await(f, &v) == 0 && v && ((br_bytes *)v)->len == 3, "echo");
  br_bytes_free(v); /* a submitted job's value is the caller's */
  br_future_unref(f);

  int64_t in[10];
  br_buf bufs[10];
  br_result out[10];
  for (int i = 0; i < 10; i++) {
    in[i] = i;
    bufs[i] = (br_buf){&in[i], 8};
  }
  rc = br_mpipool_map(p, out, "odd_fails", bufs, 10, NULL);
  MT_CHECK(rc == BR_ERANGE, "map rc %d", rc);
  MT_CHECK(out[3].err == BR_ERANGE && out[3].msg && strcmp(out[3].msg, "odd input 3") == 0,
           "message: %s", out[3].msg ? out[3].msg : "(none)");
  MT_CHECK(out[4].err == 0 && out[4].value, "even item");
  br_results_free(out, 10);

  br_mpipool_iter *it;
  MT_CHECK(br_mpipool_imap(p, &it, "square", producer, NULL, NULL) == 0, "imap");
  br_result r;
  size_t idx, n = 0;
  while (br_mpipool_iter_next(it, &r, &idx) == 0) {
    MT_CHECK(idx == n && r.err == 0, "item %zu", idx);
    n++;
    br_results_free(&r, 1);
  }
  MT_CHECK(n == 20, "%zu items", n);
  br_mpipool_iter_free(it);
  MT_CHECK(br_mpipool_free(p) == 0, "free");
  MT_CHECK(br_mpi_finalize() == 0, "finalize");
  printf("fallback run: %.0f ms; %s\n", mt_ms(t0, br_now()), mt_failures ? "FAILED" : "ok");
  return mt_failures ? 1 : 0;
}

#else
int main(void) {
  puts("braid-mpi not built (no MPI): skipped");
  return 77;
}
#endif
