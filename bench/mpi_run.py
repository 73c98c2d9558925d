#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""braid-mpi benchmarks, side by side with mpi4py.futures and with braid's
local process pool, in the same run.

Every program runs under Open MPI's mpirun on this machine (--oversubscribe,
shared memory without single-copy: what a container allows), with R ranks:
rank 0 drives, R-1 ranks serve. braid-mpi is bench/mpi/mpi_bench.c, built
here against a build directory's shared libbraid-mpi and libbraid. Its
peers, as a user would write them with Debian's python3-mpi4py:

  comm   mpi4py.futures.MPICommExecutor(MPI.COMM_WORLD, root=0) under
         `mpirun -np R python3 mpi_run.py --peer ...` (the same pattern:
         the ranks mpirun started, rank 0 drives)
  pool   mpi4py.futures.MPIPoolExecutor() under
         `mpirun -np R python3 -m mpi4py.futures mpi_run.py --peer ...`
         (mpi4py's own runner: its workers are the other ranks)

Both hand a worker one task at a time and wait for its result before the
next (mpi4py/futures/_lib.py: client_exec), with a 1 ms sleep back-off on
both sides; map(chunksize=c) sends c items as one task. braid-mpi keeps up
to `depth` units queued per rank and sizes map chunks itself.

Measurements (all timed inside rank 0, after a warm-up that every worker
served; mpirun's start and pool creation are not counted):

  cpu       64 jobs of 10 ms of CPU each (thread CPU clock) at -np 2 and
            -np 3 (1 and 2 workers): wall time and efficiency
            n * 10 ms / (workers * wall). braid-mpi's map against braid's
            local process pool with the same number of workers (no mpirun;
            target: ratio >= 0.95) and against mpi4py's executor.map.
  overhead  N empty jobs each submitted on its own (one future each), then
            all awaited, at -np 3: us per job, braid vs mpi4py's submit.
  map       a map of N empty items at -np 3: us per item, braid's automatic
            chunks vs mpi4py's map with chunksize=1 (its default) and with
            multiprocessing's rule ceil(n / (4 * workers)).

Rounds are interleaved (round 1 of everything, then round 2, ...); the
table shows medians over --runs rounds and the ratios of the medians.
Writes bench/mpi_results.json.

    /usr/bin/python3 bench/mpi_run.py                      # ~2 minutes
    /usr/bin/python3 bench/mpi_run.py --quick              # smoke test
    /usr/bin/python3 bench/mpi_run.py --build build-mpi    # another build dir
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
MPIRUN = "mpirun"
MPI_FLAGS = ["--oversubscribe", "--mca", "btl", "self,vader",
             "--mca", "btl_vader_single_copy_mechanism", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

# --------------------------------------------------------------------------
# The mpi4py peers (rank 0 of an mpirun; the other ranks serve).


def peer_body(ex, kind, mode, n, ms, chunk):
    from mpi4py import MPI
    workers = MPI.COMM_WORLD.Get_size() - 1
    list(ex.map(noop, range(64 * workers)))  # warm: every worker up
    out = {"mode": mode, "pool": "mpi4py-" + kind, "workers": workers, "n": n}
    if mode == "cpu":
        t0 = time.perf_counter()
        r = list(ex.map(burn, [ms] * n))
        wall = time.perf_counter() - t0
        assert r == [ms] * n
        out.update(ms=ms, wall_ms=wall * 1e3, efficiency=n * ms / 1e3 / (workers * wall))
    elif mode == "overhead":
        t0 = time.perf_counter()
        fs = [ex.submit(noop, i) for i in range(n)]
        r = [f.result() for f in fs]
        dt = time.perf_counter() - t0
        assert r == list(range(n))
        out["us_per_job"] = dt * 1e6 / n
    elif mode == "map":
        if chunk == 0:
            chunk = -(-n // (4 * workers))
        t0 = time.perf_counter()
        r = list(ex.map(noop, range(n), chunksize=chunk))
        dt = time.perf_counter() - t0
        assert r == list(range(n))
        out.update(chunksize=chunk, us_per_item=dt * 1e6 / n)
    print(json.dumps(out), flush=True)


def peer(kind, mode, n, ms, chunk):
    from mpi4py import MPI
    if kind == "comm":
        from mpi4py.futures import MPICommExecutor
        with MPICommExecutor(MPI.COMM_WORLD, root=0) as ex:
            if ex is not None:
                peer_body(ex, kind, mode, n, ms, chunk)
    else:  # under python3 -m mpi4py.futures: this is rank 0
        from mpi4py.futures import MPIPoolExecutor
        with MPIPoolExecutor() as ex:
            peer_body(ex, kind, mode, n, ms, chunk)


# --------------------------------------------------------------------------
# Building and running


def build(build_dir):
    b = Path(build_dir).resolve()
    if not (b / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(b), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                       check=True)
    subprocess.run(["cmake", "--build", str(b), "-j2", "--target", "braid", "braid_mpi"], check=True)
    libdirs = sorted({str(p.parent) for p in b.rglob("libbraid*.so") if "bench-mpi" not in str(p)})
    if not any(Path(d, "libbraid-mpi.so").exists() for d in libdirs):
        sys.exit("mpi_run: no libbraid-mpi.so in %s (is an MPI installed? tools/install-deps.sh bench)"
                 % b)
    out = b / "bench-mpi"
    out.mkdir(exist_ok=True)
    exe = out / "mpi_bench"
    ld = []
    for d in libdirs:
        ld += ["-L" + d, "-Wl,-rpath," + d]
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "include"),
                    str(ROOT / "bench" / "mpi" / "mpi_bench.c"), "-o", str(exe)] + ld +
                   ["-lbraid-mpi", "-lbraid", "-lpthread"], check=True)
    return exe


def run_json(cmd, timeout=900):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=ENV)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode,
                                                   (p.stdout + p.stderr)[-2000:]))
    return json.loads(lines[-1])


def mpirun(np_):
    return [MPIRUN] + MPI_FLAGS + ["-np", str(np_)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"), help="build directory (default: build)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, one run")
    ap.add_argument("--json", default=str(ROOT / "bench" / "mpi_results.json"))
    ap.add_argument("--peer", nargs=5, metavar=("KIND", "MODE", "N", "MS", "CHUNK"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        peer(a.peer[0], a.peer[1], int(a.peer[2]), int(a.peer[3]), int(a.peer[4]))
        return 0

    exe = build(a.build)
    q = a.quick
    runs = 1 if q else a.runs
    me = str(Path(__file__).resolve())
    ncpu = "16" if q else "64"
    nover = "2000" if q else "20000"
    nmap_braid = "100000" if q else "1000000"
    nmap_py1 = "2000" if q else "20000"
    nmap_pyc = "100000" if q else "1000000"

    def py(kind, np_, mode, n, ms="0", chunk="0"):
        pre = [PY, "-m", "mpi4py.futures"] if kind == "pool" else [PY]
        return mpirun(np_) + pre + [me, "--peer", kind, mode, n, ms, chunk]

    jobs = {}
    for np_ in (2, 3):
        w = np_ - 1
        jobs["cpu.np%d.braid" % np_] = (mpirun(np_) + [exe, "cpu", ncpu, "10"], "wall_ms")
        jobs["cpu.np%d.local" % np_] = ([exe, "cpu", ncpu, "10", "local", str(w)], "wall_ms")
        jobs["cpu.np%d.mpi4py-comm" % np_] = (py("comm", np_, "cpu", ncpu, "10"), "wall_ms")
        jobs["cpu.np%d.mpi4py-pool" % np_] = (py("pool", np_, "cpu", ncpu, "10"), "wall_ms")
    jobs["overhead.np3.braid"] = (mpirun(3) + [exe, "overhead", nover], "us_per_job")
    jobs["overhead.np3.mpi4py-comm"] = (py("comm", 3, "overhead", nover), "us_per_job")
    jobs["overhead.np3.mpi4py-pool"] = (py("pool", 3, "overhead", nover), "us_per_job")
    jobs["map.np3.braid"] = (mpirun(3) + [exe, "map", nmap_braid], "us_per_item")
    jobs["map.np3.mpi4py-comm.chunk1"] = (py("comm", 3, "map", nmap_py1, "0", "1"), "us_per_item")
    jobs["map.np3.mpi4py-comm.chunked"] = (py("comm", 3, "map", nmap_pyc, "0", "0"), "us_per_item")

    raw = {k: [] for k in jobs}
    load_before = os.getloadavg()
    t_start = time.time()
    for r in range(runs):
        for name, (cmd, metric) in jobs.items():
            res = run_json(cmd)
            if res.get("failed"):
                raise RuntimeError("%s: %s jobs failed" % (name, res["failed"]))
            raw[name].append(res)
            print("run %d/%d %-30s %s = %.4g" % (r + 1, runs, name, metric, res[metric]),
                  file=sys.stderr)
    load_after = os.getloadavg()

    def med(name, key):
        return statistics.median(x[key] for x in raw[name])

    results = {"cpu": {}, "overhead": {}, "map": {}}
    for np_ in (2, 3):
        k = "np%d" % np_
        b = med("cpu.%s.braid" % k, "wall_ms")
        loc = med("cpu.%s.local" % k, "wall_ms")
        c = med("cpu.%s.mpi4py-comm" % k, "wall_ms")
        p = med("cpu.%s.mpi4py-pool" % k, "wall_ms")
        results["cpu"][k] = {
            "workers": np_ - 1, "jobs": int(ncpu), "job_ms": 10,
            "wall_ms": {"braid-mpi": b, "braid-local-procpool": loc, "mpi4py-comm": c, "mpi4py-pool": p},
            "efficiency": {"braid-mpi": med("cpu.%s.braid" % k, "efficiency"),
                           "braid-local-procpool": med("cpu.%s.local" % k, "efficiency"),
                           "mpi4py-comm": med("cpu.%s.mpi4py-comm" % k, "efficiency"),
                           "mpi4py-pool": med("cpu.%s.mpi4py-pool" % k, "efficiency")},
            "ratio_vs_local_procpool": loc / b,
            "ratio_vs_mpi4py_comm": c / b,
            "ratio_vs_mpi4py_pool": p / b,
        }
    ob = med("overhead.np3.braid", "us_per_job")
    oc = med("overhead.np3.mpi4py-comm", "us_per_job")
    op = med("overhead.np3.mpi4py-pool", "us_per_job")
    results["overhead"] = {"workers": 2, "jobs": int(nover),
                           "us_per_job": {"braid-mpi": ob, "mpi4py-comm": oc, "mpi4py-pool": op},
                           "mpi4py_comm_over_braid": oc / ob, "mpi4py_pool_over_braid": op / ob}
    mb = med("map.np3.braid", "us_per_item")
    m1 = med("map.np3.mpi4py-comm.chunk1", "us_per_item")
    mc = med("map.np3.mpi4py-comm.chunked", "us_per_item")
    results["map"] = {"workers": 2,
                      "items": {"braid-mpi": int(nmap_braid), "mpi4py-comm.chunk1": int(nmap_py1),
                                "mpi4py-comm.chunked": int(nmap_pyc)},
                      "mpi4py_chunksize": raw["map.np3.mpi4py-comm.chunked"][0]["chunksize"],
                      "us_per_item": {"braid-mpi": mb, "mpi4py-comm.chunk1": m1,
                                      "mpi4py-comm.chunked": mc},
                      "mpi4py_chunk1_over_braid": m1 / mb, "mpi4py_chunked_over_braid": mc / mb}

    print("\nbraid-mpi vs braid's local process pool and mpi4py.futures (Open MPI, %d round(s), "
          "load %.2f -> %.2f)" % (runs, load_before[0], load_after[0]))
    for k, v in results["cpu"].items():
        e = v["efficiency"]
        print("cpu %s (%d workers, %d x 10 ms): braid-mpi %.0f ms (eff %.3f), local procpool %.0f ms "
              "(eff %.3f) -> ratio %.3f (target >= 0.95); mpi4py comm %.0f ms (eff %.3f) -> %.2fx, "
              "pool %.0f ms -> %.2fx"
              % (k, v["workers"], v["jobs"], v["wall_ms"]["braid-mpi"], e["braid-mpi"],
                 v["wall_ms"]["braid-local-procpool"], e["braid-local-procpool"],
                 v["ratio_vs_local_procpool"], v["wall_ms"]["mpi4py-comm"], e["mpi4py-comm"],
                 v["ratio_vs_mpi4py_comm"], v["wall_ms"]["mpi4py-pool"], v["ratio_vs_mpi4py_pool"]))
    o = results["overhead"]
    print("overhead (empty jobs, 2 workers): braid-mpi %.1f us/job, mpi4py comm %.1f (%.1fx), "
          "pool %.1f (%.1fx)" % (ob, oc, o["mpi4py_comm_over_braid"], op, o["mpi4py_pool_over_braid"]))
    m = results["map"]
    print("map (empty items, 2 workers): braid-mpi %.3f us/item, mpi4py chunksize=1 %.1f (%.0fx), "
          "chunksize=%d %.3f (%.1fx)" % (mb, m1, m["mpi4py_chunk1_over_braid"], m["mpi4py_chunksize"],
                                          mc, m["mpi4py_chunked_over_braid"]))

    if not q:
        import mpi4py
        doc = {
            "what": "bench/mpi_run.py: braid-mpi (bench/mpi/mpi_bench.c) beside braid's local process "
                    "pool and mpi4py.futures (MPICommExecutor and MPIPoolExecutor), same run, "
                    "interleaved rounds, medians; ratios > 1 mean braid-mpi is faster, "
                    "ratio_vs_local_procpool is the efficiency of the MPI run against the local pool",
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "python": platform.python_version(), "mpi4py": mpi4py.__version__,
                        "mpi": subprocess.run([MPIRUN, "--version"], capture_output=True,
                                              text=True).stdout.splitlines()[0]},
            "runs": runs, "seconds": round(time.time() - t_start, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "results": results,
            "raw": raw,
        }
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
