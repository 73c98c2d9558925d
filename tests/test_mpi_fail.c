/* SPDX-License-Identifier: MIT */
/* braid-mpi when ranks die, on 4 ranks started with --enable-recovery (so
 * Open MPI lets the run go on): a job that crashes its rank, a rank killed
 * from outside, a job that ignores its timeout (its rank ends itself). Each
 * is a BR_EWORKERDIED / BR_ETIMEDOUT on the affected futures naming the
 * rank, the other ranks take over the rest, and once no rank is left jobs
 * fail at once; the run then ends cleanly. Bound: 60 s (it takes ~5).
 * MPICH's launcher ends the whole run when a rank dies: skipped there
 * (test_mpi_abort covers that). */
#include "test_mpi_util.h"
#include "test_mpi_jobs.h"

#if defined(BRAID_HAVE_MPI) && !defined(BRAID_MPI_MPICH)

#define NP 4

static br_mpipool *P;

static bool gone(int pid) {
  if (kill(pid, 0) != 0) return true;
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return true;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *rp = strrchr(buf, ')');
  return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static void wait_alive(int n) {
  br_mpipool_stats st;
  for (int i = 0; i < 500; i++) {
    br_mpipool_get_stats(P, &st);
    if (st.alive == n) return;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static int rank_of_pid(int pid) {
  for (int r = 1; r < NP; r++) {
    int rp = 0;
    if (br_mpipool_rank_info(P, r, &rp, NULL, 0) == 0 && rp == pid) return r;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (!mt_in_run()) {
    char out[] = "/tmp/braid-test-mpi-fail-XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) return 77;
    close(fd);
    int64_t t0 = br_now();
    int st = mt_launch(argv, NP, true, 60, out);
    double s = (double)(br_now() - t0) / 1e9;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "cat %s", out);
    fflush(stdout);
    if (system(cmd) != 0) return 1;
    FILE *f = fopen(out, "r");
    char line[512];
    bool ok = false, failed = false;
    while (f && fgets(line, sizeof line, f)) {
      if (strcmp(line, "rank 0: ok\n") == 0) ok = true;
      if (strstr(line, "check failed")) failed = true;
      if (mt_sanitizer_line(line)) {
        fprintf(stderr, "a sanitizer report in the run: %s", line);
        failed = true;
      }
    }
    if (f) fclose(f);
    unlink(out);
    printf("run ended with status %d after %.1f s\n", st, s);
    if (st == 77 || st == 124) return st == 77 ? 77 : 1;
    return ok && !failed ? 0 : 1;
  }

  br_mpipool_opts o = {.kill_after_ms = 300};
  int rc = br_mpipool_new(&P, &argc, &argv, &o);
  if (rc < 0) return 1;
  if (rc == BR_MPIPOOL_SERVED) return br_mpi_finalize() < 0;
  wait_alive(NP - 1);
  int pids[NP] = {0};
  for (int r = 1; r < NP; r++) br_mpipool_rank_info(P, r, &pids[r], NULL, 0);

  /* 1. A job that crashes its rank. */
  br_future *f;
  int64_t t0 = br_now();
  MT_CHECK(br_mpipool_submit(P, &f, "crash", NULL, 0, NULL) == 0, "submit crash");
  rc = br_await(f, NULL);
  printf("crash: %s (%s) after %.0f ms\n", br_strerror(rc), br_future_message(f),
         mt_ms(t0, br_now()));
  MT_CHECK(rc == BR_EWORKERDIED, "crash: %d", rc);
  MT_CHECK(strstr(br_future_message(f), "signal 11") && strstr(br_future_message(f), "rank "),
           "message: %s", br_future_message(f));
  MT_CHECK(mt_ms(t0, br_now()) < 2000, "slow");
  br_future_unref(f);

  /* The others go on. */
  int64_t in[40], sq[40];
  for (int i = 0; i < 40; i++) in[i] = i;
  MT_CHECK(br_mpipool_map_fixed(P, sq, 8, NULL, "square", in, 8, 40, NULL) == 0 && sq[39] == 1521,
           "map after a crash");

  /* 2. A rank killed from outside while it runs a job. */
  int victim = 0;
  for (int r = 1; r < NP; r++)
    if (!gone(pids[r])) victim = pids[r];
  br_future *naps[2];
  int64_t ms = 1500;
  for (int i = 0; i < 2; i++) br_mpipool_submit(P, &naps[i], "nap", &ms, 8, NULL);
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  int vr = rank_of_pid(victim);
  t0 = br_now();
  kill(victim, SIGKILL);
  int first = br_wait(naps, 2, BR_WAIT_FIRST, BR_NEVER);
  double found = mt_ms(t0, br_now());
  MT_CHECK(first >= 0 && br_future_error(naps[first]) == BR_EWORKERDIED, "first done: %d",
           first >= 0 ? br_future_error(naps[first]) : first);
  MT_CHECK(found < 1000, "found after %.0f ms", found);
  int died = 0, fine = 0;
  for (int i = 0; i < 2; i++) {
    void *v = NULL;
    rc = br_await(naps[i], &v);
    br_bytes_free(v);
    if (rc == BR_EWORKERDIED) {
      died++;
      char want[32];
      snprintf(want, sizeof want, "rank %d ", vr);
      printf("killed rank: %s, %.0f ms after the kill\n", br_future_message(naps[i]), found);
      MT_CHECK(strstr(br_future_message(naps[i]), want), "names rank %d: %s", vr,
               br_future_message(naps[i]));
    } else if (rc == 0) {
      fine++;
    }
    br_future_unref(naps[i]);
  }
  MT_CHECK(died == 1 && fine == 1, "died %d fine %d", died, fine);

  /* 3. A job that ignores its timeout: BR_ETIMEDOUT at 200 ms, then its rank
   * (the last one) ends itself after kill_after_ms; later jobs fail at once. */
  br_procpool_submit_opts so = {.timeout_ms = 200};
  t0 = br_now();
  MT_CHECK(br_mpipool_submit(P, &f, "hang", NULL, 0, &so) == 0, "submit hang");
  rc = br_await(f, NULL);
  printf("hang: %s after %.0f ms\n", br_future_message(f), mt_ms(t0, br_now()));
  MT_CHECK(rc == BR_ETIMEDOUT, "hang: %d", rc);
  br_future_unref(f);
  wait_alive(0);
  br_mpipool_stats st;
  br_mpipool_get_stats(P, &st);
  printf("after: %d alive, %llu rank deaths, %llu timeouts (%.0f ms after the hang began)\n",
         st.alive, (unsigned long long)st.rank_deaths, (unsigned long long)st.timeouts,
         mt_ms(t0, br_now()));
  MT_CHECK(st.alive == 0 && st.rank_deaths == 3, "alive %d deaths %llu", st.alive,
           (unsigned long long)st.rank_deaths);
  MT_CHECK(br_mpipool_submit(P, &f, "echo", "x", 1, NULL) == 0, "submit with no rank");
  rc = br_await(f, NULL);
  MT_CHECK(rc == BR_EWORKERDIED && strstr(br_future_message(f), "no worker rank left"), "%d %s",
           rc, br_future_message(f));
  br_future_unref(f);

  t0 = br_now();
  MT_CHECK(br_mpipool_free(P) == 0, "free");
  printf("shutdown with every worker rank dead: %.0f ms\n", mt_ms(t0, br_now()));
  /* Printed before MPI_Finalize, which Open MPI may not finish now that
   * ranks died (br_mpi_finalize then bounds it and exits). */
  printf("rank 0: %s\n", mt_failures ? "FAILED" : "ok");
  fflush(stdout);
  br_mpi_finalize();
  return mt_failures ? 1 : 0;
}

#else
int main(void) {
  puts("needs braid-mpi on Open MPI (--enable-recovery): skipped");
  return 77;
}
#endif
