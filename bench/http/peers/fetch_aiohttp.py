#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""fetch_aiohttp: the asyncio peer of the fetch benchmark (bench/http_run.py):
n GETs of one URL through one aiohttp.ClientSession, at most c in flight
(c worker coroutines; the connector keeps up to c keep-alive connections).

  /usr/bin/python3 fetch_aiohttp.py --url http://127.0.0.1:PORT/ -n 1000 -c 100

Prints one JSON line: elapsed_s, n, ok, bytes, rss_kib (VmHWM). Needs Debian's
python3-aiohttp."""
import argparse
import asyncio
import json
import sys
import time

import aiohttp


def vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def run(url, n, c):
    counter = iter(range(n))
    ok = 0
    nbytes = 0

    async def worker(session):
        nonlocal ok, nbytes
        for _ in counter:
            async with session.get(url) as resp:
                body = await resp.read()
                nbytes += len(body)
                if resp.status == 200:
                    ok += 1

    conn = aiohttp.TCPConnector(limit=c, limit_per_host=c)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(c)))
        elapsed = time.perf_counter() - start
    return elapsed, ok, nbytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-c", type=int, default=100)
    a = ap.parse_args()
    elapsed, ok, nbytes = asyncio.run(run(a.url, a.n, a.c))
    print(json.dumps({"impl": "aiohttp", "elapsed_s": round(elapsed, 6), "n": a.n, "ok": ok,
                      "bytes": nbytes, "rss_kib": vmhwm()}), flush=True)
    sys.exit(0 if ok == a.n else 1)


if __name__ == "__main__":
    main()
