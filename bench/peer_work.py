# SPDX-License-Identifier: MIT
"""The Python peers' work in the process-pool benchmarks (bench/procpool_run.py,
bench/mpi_run.py): the same jobs as bench/bench_jobs.h. Module-level functions,
so that multiprocessing and mpi4py pickle them by name."""
import time


def noop(x):
    return x


def burn(ms):
    """Spend ms milliseconds of this thread's CPU time."""
    end = time.thread_time() + ms / 1000.0
    x = 1
    while time.thread_time() < end:
        for _ in range(100):
            x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF
    return ms
