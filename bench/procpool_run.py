#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""braid process-pool benchmarks, side by side with Python.

Sets bench_procpool (bench/procpool.c) beside /usr/bin/python3's
multiprocessing.Pool.map (default chunksize and chunksize=1) and
concurrent.futures.ProcessPoolExecutor.map, in the same run, interleaved
(run 1 of everything, then run 2, ...), and takes the median of --runs runs:

  overhead  per-job cost of a trivial job, unbatched: braid submits every
            job on its own (one future each); Pool.map(chunksize=1) and
            ProcessPoolExecutor.map hand each item over on its own too
  map       per-item cost of a batched map of a trivial function: braid
            map_fixed with automatic chunks vs Pool.map's default chunks
  startup   create a pool, run one job, shut it down (braid: median of 30;
            Python: `with Pool() as p: p.map(noop, [1])`, median of 10),
            after a first one in the same process, reported on its own
            (braid's starts the process's fork server, Python's is its
            first Pool)
  cpu       64 jobs of 10 ms of CPU each (thread CPU clock) on a pool of
            one worker per CPU: speed-up over running them one after another

Every Python peer runs in a fresh interpreter (`procpool_run.py --peer ...`)
with the platform's default start method and Pool() / ProcessPoolExecutor()
sized to os.cpu_count(), as a user would write it. braid's pool has one
worker per usable CPU (BR_CPUS).

Prints a table with the targets and writes bench/procpool_results.json.
The braid program must be built: <build>/bench/bench_procpool.

    /usr/bin/python3 bench/procpool_run.py                  # ~1 minute
    /usr/bin/python3 bench/procpool_run.py --quick          # smoke test
    /usr/bin/python3 bench/procpool_run.py --build /tmp/b   # another build dir

--against OTHER_EXE compares this build's bench_procpool with another one
(e.g. built from an earlier commit) instead of with Python: per-job overhead
and create + job + shutdown, the two programs alternating within each run
(--runs rounds, default 3), medians and the median of the per-round ratios
(this / other; below 1 means this build is faster). Nothing is written.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peer_work import burn, noop  # bench/peer_work.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
PY = "/usr/bin/python3"

# --------------------------------------------------------------------------
# The Python peers (run with --peer in a fresh interpreter).


def peer(mode, n, ms):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import Pool

    out = {"mode": mode, "n": n}
    if mode in ("pool_chunk1", "pool_default"):
        with Pool() as p:
            p.map(noop, range(1000))  # warm: every worker up
            t0 = time.perf_counter()
            if mode == "pool_chunk1":
                r = p.map(noop, range(n), chunksize=1)
            else:
                r = p.map(noop, range(n))
            dt = time.perf_counter() - t0
        assert r == list(range(n))
        out["us_per_item"] = dt * 1e6 / n
    elif mode == "executor":
        with ProcessPoolExecutor() as ex:
            list(ex.map(noop, range(200)))
            t0 = time.perf_counter()
            r = list(ex.map(noop, range(n)))
            dt = time.perf_counter() - t0
        assert r == list(range(n))
        out["us_per_item"] = dt * 1e6 / n
    elif mode == "startup":
        times = []
        for _ in range(n + 1):
            t0 = time.perf_counter()
            with Pool() as p:
                p.map(noop, [1])
            times.append((time.perf_counter() - t0) * 1e3)
        out["first_ms"] = times.pop(0)
        times.sort()
        out["ms_median"] = times[len(times) // 2]
        out["ms_min"] = times[0]
    elif mode == "cpu":
        t0 = time.perf_counter()
        for _ in range(n):
            burn(ms)
        seq = time.perf_counter() - t0
        with Pool() as p:
            p.map(noop, range(100))
            t0 = time.perf_counter()
            p.map(burn, [ms] * n)
            par = time.perf_counter() - t0
        out.update(sequential_ms=seq * 1e3, parallel_ms=par * 1e3, speedup=seq / par)
    out["workers"] = os.cpu_count()
    print(json.dumps(out))


# --------------------------------------------------------------------------
# Driving.


def run_json(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def against(exe, other, runs, quick):
    """This build vs another bench_procpool, alternating (ABBA within a round,
    so neither always runs first on a warm or cold machine)."""
    if not other.exists():
        print(f"{other} not found", file=sys.stderr)
        return 2
    tests = {
        "overhead": (["overhead", "20000" if quick else "300000"], "us_per_job"),
        "startup": (["startup", "10" if quick else "30"], "ms_median"),
    }
    res = {(w, t): [] for w in ("this", "other") for t in tests}
    load_before = os.getloadavg()
    for r in range(runs):
        for t, (args, metric) in tests.items():
            order = ("this", "other", "other", "this") if r % 2 == 0 else ("other", "this", "this", "other")
            vals = {"this": [], "other": []}
            for w in order:
                v = run_json([str(exe if w == "this" else other)] + args)[metric]
                vals[w].append(v)
                print(f"run {r + 1}/{runs} {t:9} {w:5} {metric} = {v:.4g}", file=sys.stderr)
            for w in vals:
                res[(w, t)].append(statistics.mean(vals[w]))
    load_after = os.getloadavg()
    print(f"\n{exe} (this) vs {other} (other), {runs} round(s) of 2+2 alternating runs, "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    for t, (_, metric) in tests.items():
        ratios = [x / y for x, y in zip(res[("this", t)], res[("other", t)])]
        print(f"{t:9} {metric:11} this {statistics.median(res[('this', t)]):8.4g}  "
              f"other {statistics.median(res[('other', t)]):8.4g}  "
              f"this/other {statistics.median(ratios):.3f} (per round: "
              + ", ".join(f"{x:.3f}" for x in ratios) + ")")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"), help="build directory (default: build)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, one run")
    ap.add_argument("--json", default=str(ROOT / "bench" / "procpool_results.json"))
    ap.add_argument("--against", metavar="OTHER_EXE",
                    help="compare with another bench_procpool instead of Python")
    ap.add_argument("--peer", nargs=3, metavar=("MODE", "N", "MS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        peer(a.peer[0], int(a.peer[1]), int(a.peer[2]))
        return 0

    exe = Path(a.build) / "bench" / "bench_procpool"
    if not exe.exists():
        print(f"{exe} not found: build first (cmake --build {a.build})", file=sys.stderr)
        return 2
    q = a.quick
    runs = 1 if q else a.runs
    if a.against:
        return against(exe, Path(a.against), runs, q)
    me = str(Path(__file__).resolve())
    # name -> (command, metric)
    jobs = {
        "braid.overhead": ([str(exe), "overhead", "20000" if q else "300000"], "us_per_job"),
        "py.pool_chunk1": ([PY, me, "--peer", "pool_chunk1", "2000" if q else "20000", "0"], "us_per_item"),
        "py.executor": ([PY, me, "--peer", "executor", "500" if q else "5000", "0"], "us_per_item"),
        "braid.map": ([str(exe), "map", "200000" if q else "3000000"], "us_per_item"),
        "py.pool_default": ([PY, me, "--peer", "pool_default", "100000" if q else "1000000", "0"], "us_per_item"),
        "braid.startup": ([str(exe), "startup", "10" if q else "30"], "ms_median"),
        "py.startup": ([PY, me, "--peer", "startup", "5" if q else "10", "0"], "ms_median"),
        "braid.cpu": ([str(exe), "cpu", "16" if q else "64", "10"], "speedup"),
        "py.cpu": ([PY, me, "--peer", "cpu", "16" if q else "64", "10"], "speedup"),
    }
    raw = {k: [] for k in jobs}
    load_before = os.getloadavg()
    for r in range(runs):
        for name, (cmd, metric) in jobs.items():
            res = run_json(cmd)
            raw[name].append(res)
            print(f"run {r + 1}/{runs} {name:18} {metric} = {res[metric]:.4g}", file=sys.stderr)

    def med(name, key=None):
        key = key or jobs[name][1]
        return statistics.median(x[key] for x in raw[name])

    b_over, b_map = med("braid.overhead"), med("braid.map")
    p1, pex, pdef = med("py.pool_chunk1"), med("py.executor"), med("py.pool_default")
    b_start, p_start = med("braid.startup"), med("py.startup")
    b_first, p_first = med("braid.startup", "first_ms"), med("py.startup", "first_ms")
    b_cpu, p_cpu = med("braid.cpu"), med("py.cpu")
    rows = [
        # figure, braid, peer name, peer value, ratio text, target text, pass
        ("per-job overhead, unbatched (us/job)", b_over, "Pool.map chunksize=1", p1,
         p1 / b_over, ">= 9x lower", p1 / b_over >= 9),
        ("per-job overhead, unbatched (us/job)", b_over, "ProcessPoolExecutor.map", pex,
         pex / b_over, ">= 50x lower", pex / b_over >= 50),
        ("batched map (us/item)", b_map, "Pool.map default chunks", pdef,
         pdef / b_map, "no slower (>= 1x)", b_map <= pdef),
        ("create + one job + shut down (ms)", b_start, "with Pool(): map(f, [1])", p_start,
         p_start / b_start, "< 1 ms", b_start < 1.0),
        ("64 x 10 ms CPU jobs: speed-up", b_cpu, "Pool.map", p_cpu,
         b_cpu / p_cpu, ">= 1.95x", b_cpu >= 1.95),
    ]
    load_after = os.getloadavg()
    print()
    print(f"process pool, {os.cpu_count()} CPUs, {runs} run(s), medians; "
          f"ratio = how many times better braid is")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          + ("  (busy machine: absolute figures and speed-ups suffer; compare ratios)"
             if max(load_before[0], load_after[0]) > 1.5 else ""))
    w = max(len(r[0]) for r in rows)
    print(f"{'figure':{w}}  {'braid':>10}  {'peer':26} {'peer value':>10}  {'ratio':>8}  target")
    for fig, b, pn, pv, ratio, tgt, ok in rows:
        print(f"{fig:{w}}  {b:10.4g}  {pn:26} {pv:10.4g}  {ratio:7.1f}x  {tgt} {'PASS' if ok else 'FAIL'}")
    bs = raw["braid.startup"][-1]
    print(f"braid start-up detail (last run, medians): create {bs['create_ms']:.3f} ms, "
          f"first job {bs['job_ms']:.3f} ms, shutdown {bs['shutdown_ms']:.3f} ms")
    print(f"first pool of a process (braid: starts the fork server): braid {b_first:.3f} ms, "
          f"Python {p_first:.3f} ms ({p_first / b_first:.1f}x)")
    if "first_create_ms" in bs:
        print(f"braid first pool detail (last run): create {bs['first_create_ms']:.3f} ms (the exec), "
              f"first job {bs['first_job_ms']:.3f} ms (the server's start-up, a worker's fork), "
              f"shutdown {bs['first_shutdown_ms']:.3f} ms")

    out = {
        "benchmark": "procpool",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before[0], "loadavg_after": load_after[0],
                    "python": subprocess.run([PY, "--version"], capture_output=True, text=True).stdout.strip()},
        "runs": runs,
        "quick": q,
        "medians": {
            "braid_overhead_us_per_job": b_over,
            "py_pool_chunksize1_us_per_item": p1,
            "py_executor_us_per_item": pex,
            "braid_map_us_per_item": b_map,
            "py_pool_default_us_per_item": pdef,
            "braid_startup_ms": b_start,
            "py_startup_ms": p_start,
            "braid_first_pool_ms": b_first,
            "py_first_pool_ms": p_first,
            "braid_cpu_speedup": b_cpu,
            "py_cpu_speedup": p_cpu,
        },
        "targets": [
            {"figure": f, "braid": b, "peer": pn, "peer_value": pv, "ratio": ratio, "target": t, "pass": ok}
            for f, b, pn, pv, ratio, t, ok in rows
        ],
        "raw": raw,
    }
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
