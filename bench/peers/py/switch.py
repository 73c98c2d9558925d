# SPDX-License-Identifier: MIT
"""switch: the asyncio / uvloop peer of bench/switch.c.

--mode chan   ping-pong between two coroutines over two asyncio.Queue(maxsize=1),
              -n round trips (2n hops; one hop = one switch)
--mode yield  two coroutines each awaiting asyncio.sleep(0) n times (2n yields)

--uvloop runs it on uvloop instead of the default asyncio loop.
Prints one JSON line with ns per switch.
"""
import argparse
import asyncio
import json
import sys
import time


async def pinger(n, ping, pong):
    for i in range(n):
        await ping.put(i)
        await pong.get()


async def ponger(n, ping, pong):
    for _ in range(n):
        v = await ping.get()
        await pong.put(v)


async def yielder(n):
    for _ in range(n):
        await asyncio.sleep(0)


async def amain(mode, n):
    t0 = time.perf_counter()
    if mode == "chan":
        ping, pong = asyncio.Queue(maxsize=1), asyncio.Queue(maxsize=1)
        await asyncio.gather(pinger(n, ping, pong), ponger(n, ping, pong))
    else:
        await asyncio.gather(yielder(n), yielder(n))
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
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--mode", choices=["chan", "yield"], default="chan")
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    el = asyncio.run(amain(a.mode, a.n))
    ops = 2 * a.n
    print(json.dumps({"bench": "switch", "impl": "uvloop" if a.uvloop else "asyncio",
                      "mode": a.mode, "n": a.n, "ops": ops, "vmhwm_kib": vmhwm_kib(), "elapsed_s": el,
                      "ns_per_op": el * 1e9 / ops}))


if __name__ == "__main__":
    sys.exit(main())
