# SPDX-License-Identifier: MIT
"""sleepers: the asyncio / uvloop peer of bench/sleepers.c: -n tasks each
await asyncio.sleep(--ms / 1000), all alive at once, then all are gathered.
Prints the wall time; run.py reads the peak RSS. --uvloop runs it on uvloop."""
import argparse
import asyncio
import json
import sys
import time


async def sleeper(s):
    await asyncio.sleep(s)


async def amain(n, s):
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(sleeper(s)) for _ in range(n)]
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def vmhwm_kib():
    """Peak RSS since exec (VmHWM); run.py prefers it to wait4's ru_maxrss,
    which also counts the forking parent's memory."""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--ms", type=int, default=1000)
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    el = asyncio.run(amain(a.n, a.ms / 1000.0))
    print(json.dumps({"bench": "sleepers", "impl": "uvloop" if a.uvloop else "asyncio",
                      "n": a.n, "ms": a.ms, "ops": a.n, "vmhwm_kib": vmhwm_kib(), "elapsed_s": el,
                      "ns_per_op": el * 1e9 / a.n}))


if __name__ == "__main__":
    sys.exit(main())
