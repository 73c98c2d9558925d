# SPDX-License-Identifier: MIT
"""spawn_live: the asyncio / uvloop peer of bench/spawn_live.c: -n tasks
alive at once, each awaits asyncio.sleep(0) once, then all are gathered.
Prints ns per task. --uvloop runs it on uvloop."""
import argparse
import asyncio
import json
import sys
import time


async def once():
    await asyncio.sleep(0)


async def amain(n):
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(once()) for _ in range(n)]
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
    ap.add_argument("-n", type=int, default=1000000)
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    el = asyncio.run(amain(a.n))
    print(json.dumps({"bench": "spawn_live", "impl": "uvloop" if a.uvloop else "asyncio",
                      "n": a.n, "ops": a.n, "vmhwm_kib": vmhwm_kib(), "elapsed_s": el,
                      "ns_per_op": el * 1e9 / a.n}))


if __name__ == "__main__":
    sys.exit(main())
