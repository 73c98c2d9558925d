#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Before and after, in one run: the same braid benchmark programs from two
build trees (or two copies of bench/), run alternately round by round, each
run after waiting for idle CPUs (bench/quiet.py); medians and after/before
ratios. For checking that a change to the runtime leaves the hot path alone.

    /usr/bin/python3 bench/ab_run.py --before /tmp/old --after build-x/bench
    /usr/bin/python3 bench/ab_run.py --before A --after B --rounds 7 --only switch_yield

--before-env / --after-env set variables for one side (BRAID_* are
otherwise cleared), e.g. the same build with BRAID_STACK_PROVISION=0 on one.
--before / --after are directories holding bench_switch, bench_spawn_churn,
bench_sleepers, bench_spawn_live. Writes --out (JSON: every run, medians,
ratios) when given.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet import IDLE_WAIT, wait_idle  # noqa: E402

WORKLOADS = {
    "switch_yield": (["bench_switch", "-n", "25000000", "--mode", "yield"], "ns_per_op"),
    "switch_chan": (["bench_switch", "-n", "10000000", "--mode", "chan"], "ns_per_op"),
    "spawn_churn": (["bench_spawn_churn", "-n", "4000000"], "ns_per_op"),
    "sleepers_100k": (["bench_sleepers", "-n", "100000", "--ms", "1000"], "elapsed_s"),
    "spawn_live": (["bench_spawn_live", "-n", "1000000"], "ns_per_op"),
    "sleepers_1m": (["bench_sleepers", "-n", "1000000", "--ms", "1000"], "elapsed_s"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="switch_yield,switch_chan,spawn_churn")
    ap.add_argument("--idle-wait", type=float, default=10.0)
    ap.add_argument("--before-env", default="", help="VAR=value,... for the before side")
    ap.add_argument("--after-env", default="", help="VAR=value,... for the after side")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    IDLE_WAIT[0] = args.idle_wait
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAID_")}
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in WORKLOADS:
            ap.error(f"unknown workload {n}: {', '.join(WORKLOADS)}")
    runs = {n: {"before": [], "after": []} for n in names}
    for rnd in range(args.rounds):
        for n in names:
            cmd, key = WORKLOADS[n]
            # Alternate which side goes first, so drift favours neither.
            for side in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                d = Path(getattr(args, side))
                senv = dict(env, **dict(kv.split("=", 1) for kv in
                                        getattr(args, side + "_env").split(",") if kv))
                idle = wait_idle()
                out = subprocess.run([str(d / cmd[0])] + cmd[1:], capture_output=True, text=True,
                                     env=senv, timeout=600)
                if out.returncode != 0:
                    print(f"{n} {side}: exit {out.returncode}\n{out.stderr[-800:]}", file=sys.stderr)
                    return 1
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rec["idle_before"] = idle
                runs[n][side].append(rec)
                print(f"  round {rnd + 1} {n:14s} {side:6s} {rec[key]:.3f}  (idle {idle})", flush=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "before": args.before, "after": args.after,
           "before_env": args.before_env, "after_env": args.after_env,
           "rounds": args.rounds, "loadavg_end": os.getloadavg(), "workloads": {}}
    print(f"\n{'workload':16s}{'before':>12s}{'after':>12s}{'after/before':>14s}")
    for n in names:
        key = WORKLOADS[n][1]
        b = statistics.median(r[key] for r in runs[n]["before"])
        a = statistics.median(r[key] for r in runs[n]["after"])
        res["workloads"][n] = {"metric": key, "before": b, "after": a, "ratio": a / b, "runs": runs[n]}
        print(f"{n:16s}{b:12.3f}{a:12.3f}{a / b:14.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
