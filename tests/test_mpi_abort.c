/* SPDX-License-Identifier: MIT */
/* braid-mpi when a rank dies under a launcher that ends the whole run on a
 * death (Open MPI's mpirun without --enable-recovery, MPICH's mpiexec): a
 * job crashes its rank; the run must end by itself, promptly, with a
 * failing status and the cause named (the rank's own report and the
 * launcher's), never hang. Bound: 30 s (it takes ~2). */
#include "test_mpi_util.h"
#include "test_mpi_jobs.h"

#ifdef BRAID_HAVE_MPI

int main(int argc, char **argv) {
  if (!mt_in_run()) {
    char out[] = "/tmp/braid-test-mpi-abort-XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) return 77;
    close(fd);
    int64_t t0 = br_now();
    int st = mt_launch(argv, 3, false, 30, out);
    double s = (double)(br_now() - t0) / 1e9;
    FILE *f = fopen(out, "r");
    char line[512];
    bool named = false, sanitizer = false;
    while (f && fgets(line, sizeof line, f)) {
      fputs(line, stdout);
      if (strstr(line, "a job got signal 11")) named = true;
      sanitizer |= mt_sanitizer_line(line);
    }
    if (f) fclose(f);
    unlink(out);
    printf("run ended with status %d after %.1f s\n", st, s);
    if (st == 77) return 77;
    MT_CHECK(st != 0 && st != 124, "status %d", st);
    MT_CHECK(s < 30, "took %.1f s", s);
    MT_CHECK(named, "the dying rank did not say why");
    MT_CHECK(!sanitizer, "a sanitizer report in the run (above)");
    return mt_failures ? 1 : 0;
  }
  br_mpipool *p;
  int rc = br_mpipool_new(&p, &argc, &argv, NULL);
  if (rc < 0) return 1;
  if (rc == BR_MPIPOOL_SERVED) return br_mpi_finalize() < 0;
  br_future *f;
  br_mpipool_submit(p, &f, "crash", NULL, 0, NULL);
  rc = br_await(f, NULL);
  /* The launcher may end this rank before or after this line. */
  printf("rank 0: the crash came back as %s: %s\n", br_strerror(rc), br_future_message(f));
  fflush(stdout);
  br_future_unref(f);
  /* Keep going as a program would; the launcher ends the run. */
  for (int i = 0; i < 100; i++) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  br_mpipool_free(p);
  br_mpi_finalize();
  return 0;
}

#else
int main(void) {
  puts("braid-mpi not built (no MPI): skipped");
  return 77;
}
#endif
