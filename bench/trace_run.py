#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/trace_run.py — what tracing costs.

Runs bench_switch (channel ping-pong and bare yields) and bench_spawn_churn
in interleaved rounds, each in up to four configurations, all in the same run:

  base    the same benchmark built from a braid without the tracer
          (--baseline DIR: a build directory of that tree, or of an earlier
          commit to compare with; optional)
  off     this braid, tracing off (the default: one predictable branch per hook)
  on      BRAID_TRACE=FILE: every event kept, the JSON written at exit
  flight  BRAID_TRACE_FLIGHT=FILE: the flight recorder (its default 8 MiB), never written

The figure is the benchmark's own ns per operation (the time to write the
trace at exit is not in it). Reported: the median per configuration and the
ratios on/off, flight/off and off/base, with the load average before and
after. Writes bench/trace_results.json.

Usage: bench/trace_run.py [--build DIR] [--baseline DIR] [--rounds N] [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run(binary, args, env_extra):
    env = dict(os.environ)
    for k in ("BRAID_TRACE", "BRAID_TRACE_FLIGHT", "BRAID_DEBUG"):
        env.pop(k, None)
    env.update(env_extra)
    out = subprocess.run([binary] + args, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["ns_per_op"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--baseline", help="build directory of braid without the tracer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "trace_results.json"))
    a = ap.parse_args()
    n_switch = 100000 if a.quick else 500000
    n_spawn = 100000 if a.quick else 500000
    benches = [
        ("switch_chan", "bench_switch", ["-n", str(n_switch), "--mode", "chan"]),
        ("switch_yield", "bench_switch", ["-n", str(n_switch), "--mode", "yield"]),
        ("spawn_churn", "bench_spawn_churn", ["-n", str(n_spawn)]),
    ]
    tmp = tempfile.mkdtemp(prefix="braid-trace-bench-")
    trace = os.path.join(tmp, "t.json")
    # "on" keeps at most 32 MiB (older events are reused): the hot path is the
    # same as with an unbounded buffer, and the JSON written at exit stays small.
    configs = [("off", a.build, {}), ("on", a.build, {"BRAID_TRACE": trace, "BRAID_TRACE_BUFFER_MB": "32"}),
               ("flight", a.build, {"BRAID_TRACE_FLIGHT": trace})]
    if a.baseline:
        configs.insert(0, ("base", a.baseline, {}))
    load_before = loadavg()
    results = {name: {c[0]: [] for c in configs} for name, _, _ in benches}
    for r in range(a.rounds):
        for name, prog, args in benches:
            for cname, build, env in configs:
                binary = os.path.join(build, "bench", prog)
                ns = run(binary, args, env)
                # Remove the file at once: the kernel then drops its dirty pages
                # instead of writing them back (a whole-run trace of a switch
                # benchmark is ~100 MB) while the next configuration runs.
                if os.path.exists(trace):
                    os.unlink(trace)
                results[name][cname].append(ns)
                print(f"round {r + 1} {name:13s} {cname:7s} {ns:9.1f} ns/op", file=sys.stderr)
    if os.path.exists(trace):
        os.unlink(trace)
    os.rmdir(tmp)
    summary = {}
    for name in results:
        med = {c: statistics.median(v) for c, v in results[name].items()}
        s = {"median_ns_per_op": med, "rounds_ns_per_op": results[name]}
        s["on_over_off"] = med["on"] / med["off"]
        s["flight_over_off"] = med["flight"] / med["off"]
        if "base" in med:
            s["off_over_base"] = med["off"] / med["base"]
        summary[name] = s
    doc = {"what": "tracing cost: bench_switch and bench_spawn_churn, off vs on in the same run",
           "rounds": a.rounds, "n_switch": n_switch, "n_spawn": n_spawn,
           "load_before": load_before, "load_after": loadavg(), "cpus": os.cpu_count(),
           "results": summary}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    for name, s in summary.items():
        line = f"{name:13s} on/off {s['on_over_off']:.3f}  flight/off {s['flight_over_off']:.3f}"
        if "off_over_base" in s:
            line += f"  off/base {s['off_over_base']:.3f}"
        print(line)


if __name__ == "__main__":
    main()
