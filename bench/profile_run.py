#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/profile_run.py — what measuring costs, and what measuring buys.

1. The profiler's own cost: `braid profile --json -- bench_profile_tree -t 100`
   (100 threads computing and sleeping in turns for 5 s) at the default
   sampling interval and at 10 ms. Reported: the profiler's CPU time as a
   share of one core (profiler_cpu_s / wall_s), and the tree's wall time
   under the profiler against the same tree run bare, in the same run.
2. The auto executor against each executor picked by hand (bench_auto): per
   workload the median over interleaved rounds, auto's time over the best
   and over the worst hand-picked executor.

Writes bench/profile_results.json, with the load average before and after
each part (timing here is only worth reading on a quiet machine). --part
profiler|auto re-measures one part and keeps the other from the file.
Usage: bench/profile_run.py [--build DIR] [--rounds N] [--quick]
[--part all|profiler|auto]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def profile_tree(braid, tree, threads, seconds, interval):
    args = [braid, "profile", "--json"]
    if interval:
        args += ["--interval", str(interval)]
    args += ["--", tree, "-t", str(threads), "-s", str(seconds)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bare_tree(tree, threads, seconds):
    t0 = time.monotonic()
    subprocess.run([tree, "-t", str(threads), "-s", str(seconds)], check=True)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=("all", "profiler", "auto"), default="all")
    a = ap.parse_args()
    braid = os.path.join(a.build, "tools", "braid", "braid")
    tree = os.path.join(a.build, "bench", "bench_profile_tree")
    auto = os.path.join(a.build, "bench", "bench_auto")
    for p in (braid, tree, auto):
        if not os.access(p, os.X_OK):
            sys.exit(f"profile_run: {p} is missing: build first (make build)")
    rounds = 1 if a.quick else a.rounds
    seconds = 2 if a.quick else 5
    out_path = os.path.join(HERE, "profile_results.json")
    res = {}
    if a.part != "all" and os.path.exists(out_path):
        with open(out_path) as f:
            res = json.load(f)
    res.pop("load_before", None)
    res.pop("load_after", None)
    if a.part in ("all", "profiler"):
        res["profiler"] = []
        res["profiler_load"] = {"before": loadavg()}
    if a.part in ("all", "auto"):
        res["auto"] = {}
        res["auto_load"] = {"before": None}

    # 1. Profiler overhead, interleaved with bare runs of the same tree.
    for interval in ((None, 10) if a.part in ("all", "profiler") else ()):
        cores, ratio = [], []
        for _ in range(rounds):
            bare = bare_tree(tree, 100, seconds)
            r = profile_tree(braid, tree, 100, seconds, interval)
            cores.append(r["profiler_cpu_s"] / r["wall_s"])
            ratio.append(r["wall_s"] / bare)
        row = {"interval_ms": interval or 100, "threads": 100,
               "profiler_core_share_median": statistics.median(cores),
               "profiler_core_share_max": max(cores),
               "wall_under_profiler_over_bare_median": statistics.median(ratio)}
        res["profiler"].append(row)
        print(f"profiler, 100 threads, interval {row['interval_ms']} ms: "
              f"{100 * row['profiler_core_share_median']:.2f} % of a core "
              f"(max {100 * row['profiler_core_share_max']:.2f} %), "
              f"tree wall x{row['wall_under_profiler_over_bare_median']:.3f}")

    if a.part in ("all", "profiler"):
        res["profiler_load"]["after"] = loadavg()

    # 2. Auto against the hand-picked executors.
    times = {}
    if a.part in ("all", "auto"):
        res["auto_load"]["before"] = loadavg()
    for _ in (range(rounds) if a.part in ("all", "auto") else ()):
        out = subprocess.run([auto], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            times.setdefault(kv["workload"], {}).setdefault(kv["executor"], []).append(
                float(kv["seconds"]))
    for w, ex in times.items():
        med = {e: statistics.median(v) for e, v in ex.items()}
        picked = {e: s for e, s in med.items() if e != "auto"}
        best = min(picked, key=picked.get)
        worst = max(picked, key=picked.get)
        row = {"median_s": med, "best": best, "worst": worst,
               "auto_over_best": med["auto"] / med[best],
               "auto_over_worst": med["auto"] / med[worst]}
        res["auto"][w] = row
        print(f"auto, {w}: {med['auto']:.4f} s; best {best} {med[best]:.4f} s "
              f"(auto x{row['auto_over_best']:.2f}), worst {worst} {med[worst]:.4f} s "
              f"(auto x{row['auto_over_worst']:.2f})")
    if a.part in ("all", "auto"):
        res["auto_load"]["after"] = loadavg()
    if not a.quick:
        with open(out_path, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    for part in ("profiler", "auto"):
        ld = res.get(part + "_load")
        if ld:
            print(f"{part}: load average {ld['before']:.2f} before, {ld['after']:.2f} after")


if __name__ == "__main__":
    main()
