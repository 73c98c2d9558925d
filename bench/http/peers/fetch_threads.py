#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""fetch_threads: the thread-pool peer of the fetch benchmark (bench/http_run.py):
n GETs of one URL with urllib.request on a ThreadPoolExecutor of t threads (the
seeds' "threading for I/O-bound work"). urllib opens a connection per request.

  /usr/bin/python3 fetch_threads.py --url http://127.0.0.1:PORT/ -n 1000 -t 50

Prints one JSON line: elapsed_s, n, ok, bytes, rss_kib (VmHWM)."""
import argparse
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, len(resp.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-t", type=int, default=50)
    a = ap.parse_args()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=a.t) as ex:
        results = list(ex.map(fetch, [a.url] * a.n))
    elapsed = time.perf_counter() - start
    ok = sum(1 for s, _ in results if s == 200)
    print(json.dumps({"impl": "threads", "elapsed_s": round(elapsed, 6), "n": a.n, "ok": ok,
                      "bytes": sum(b for _, b in results), "rss_kib": vmhwm()}), flush=True)
    sys.exit(0 if ok == a.n else 1)


if __name__ == "__main__":
    main()
