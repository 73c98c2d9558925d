# SPDX-License-Identifier: MIT
"""Waiting for a quiet moment on a shared machine, for the benchmark drivers
(bench/io_run.py, bench/http_run.py): how idle the CPUs are, and a bounded
wait for them to be idle before a timed run."""
import time

IDLE_WAIT = [0.0]  # seconds wait_idle may wait; each driver sets it from --idle-wait


def cpu_idle(interval=0.3):
    """Fraction of all CPUs idle over the next interval seconds (/proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = snap()
    time.sleep(interval)
    i1, t1 = snap()
    return (i1 - i0) / max(t1 - t0, 1)


def wait_idle(want=0.8):
    """Wait up to IDLE_WAIT[0] seconds until at least `want` of the CPUs are
    idle; return the idle fraction seen last."""
    end = time.time() + IDLE_WAIT[0]
    idle = cpu_idle()
    while idle < want and time.time() < end:
        idle = cpu_idle(0.5)
    return round(idle, 3)
