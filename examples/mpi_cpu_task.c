/* SPDX-License-Identifier: MIT */
// mpi_cpu_task — "CPU-bound: number crunching (use multiprocessing)", across
// the ranks of an MPI run instead of the worker processes of one machine:
//
//   from multiprocessing import Pool
//
//   def cpu_task(n):
//       return sum(i**2 for i in range(n))
//
//   with Pool(4) as p:
//       results = p.map(cpu_task, [10**6] * 4)
//
// Run it with `mpirun -np 5 ./mpi_cpu_task` (rank 0 drives, 4 ranks
// compute; add hosts with --hostfile, docs/mpi.md). Started without mpirun it
// runs the same map on a local process pool of 4 workers and says so.
// link: braid_mpi
// expect: ^\[333332833333500000, 333332833333500000, 333332833333500000, 333332833333500000\]$
// expect: ^4 jobs in [0-9.]+ ms on 4 (MPI ranks|local worker processes)$
#include <stdio.h>
#include <string.h>

#include <braid.h>
#include <braid/mpi.h>

static int cpu_task(const void *in, size_t len, br_bytes *out) {
  int64_t n;
  if (len != sizeof n) {
    br_fail(BR_EINVAL, "cpu_task wants an int64, got %zu bytes", len);
    return BR_EINVAL;
  }
  memcpy(&n, in, sizeof n);
  // volatile: keep the compiler from turning the loop into the closed form,
  // so this stays the CPU-bound work the article means.
  volatile int64_t sum = 0;
  for (int64_t i = 0; i < n; i++) sum += i * i;
  int64_t s = sum;
  return br_bytes_set(out, &s, sizeof s);
}
BR_JOB(cpu_task, cpu_task);

int main(int argc, char **argv) {
  br_mpipool *p;
  br_mpipool_opts opts = {.fallback_workers = 4}; // Pool(4) when there is one rank
  int rc = br_mpipool_new(&p, &argc, &argv, &opts);
  if (rc < 0) {
    fprintf(stderr, "pool: %s\n", br_strerror(rc));
    return 1;
  }
  if (rc == BR_MPIPOOL_SERVED) return br_mpi_finalize() < 0; // a worker rank is done

  int64_t t0 = br_now();
  const int64_t args[4] = {1000000, 1000000, 1000000, 1000000}; // [10**6] * 4
  int64_t results[4];
  rc = br_mpipool_map_fixed(p, results, sizeof *results, NULL, "cpu_task", args, sizeof *args, 4,
                            NULL);
  int64_t t1 = br_now();
  int workers = br_mpipool_size(p);
  int local = br_mpipool_is_local(p);
  br_mpipool_free(p);
  br_mpi_finalize();
  if (rc < 0) {
    fprintf(stderr, "map: %s\n", br_strerror(rc));
    return 1;
  }
  printf("[%lld, %lld, %lld, %lld]\n", (long long)results[0], (long long)results[1],
         (long long)results[2], (long long)results[3]);
  printf("4 jobs in %.1f ms on %d %s\n", (double)(t1 - t0) / 1e6, workers,
         local ? "local worker processes" : "MPI ranks");
  return 0;
}
