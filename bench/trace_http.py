#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/trace_http.py — what tracing costs an HTTP client.

bench/http/fetch_braid.c (braid-http: 1,000 GETs, 100 in flight) against
bench/http/server (Go net/http, GOMAXPROCS=1, each answer after 50 ms), run
in interleaved rounds with tracing off, with BRAID_TRACE_FLIGHT (the flight
recorder) and with BRAID_TRACE (the whole run). Reported: the median wall
time and the client's CPU time per request (user + system, from wait4), and
their ratios to off. Writes bench/trace_http_results.json.

Usage: bench/trace_http.py [--build DIR] [--rounds N] [-n N] [-c N]
It compiles fetch_braid and the server into DIR/bench-trace-http/ (needs a
shared build with braid-http, and go; GO111MODULE=off, offline).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def build(b):
    out = os.path.join(b, "bench-trace-http")
    os.makedirs(out, exist_ok=True)
    libs = [os.path.join(b, "src"), os.path.join(b, "src", "http")]
    flags = []
    for d in libs:
        flags += ["-L" + d, "-Wl,-rpath," + d]
    subprocess.run(["cc", "-O2", "-I", os.path.join(ROOT, "include"),
                    os.path.join(HERE, "http", "fetch_braid.c"), "-o", os.path.join(out, "fetch_braid")]
                   + flags + ["-lbraid-http", "-lbraid", "-lpthread", "-lm"], check=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.path.join(out, "gocache"), GOFLAGS="")
    subprocess.run(["go", "build", "-o", os.path.join(out, "delay_server"), "main.go"],
                   cwd=os.path.join(HERE, "http", "server"), env=env, check=True)
    return out


def measure(cmd, env):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode()
    p.stderr.close()
    if status != 0:
        sys.exit("trace_http: %s failed (%d): %s" % (cmd[0], status, err))
    return wall, ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-c", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(HERE, "trace_http_results.json"))
    a = ap.parse_args()
    out = build(os.path.abspath(a.build))
    server = subprocess.Popen([os.path.join(out, "delay_server"), "-delay-ms", "50", "-size", "512"],
                              stdout=subprocess.PIPE, env=dict(os.environ, GOMAXPROCS="1"))
    try:
        line = server.stdout.readline().decode()
        if not line.startswith("listening "):
            sys.exit("trace_http: the server did not start: %r" % line)
        url = "http://%s/" % line.split()[1]
        tmp = tempfile.mkdtemp(prefix="braid-trace-http-")
        trace = os.path.join(tmp, "t.json")
        base = {k: v for k, v in os.environ.items() if not k.startswith("BRAID_TRACE")}
        configs = [("off", base), ("flight", dict(base, BRAID_TRACE_FLIGHT=trace)),
                   ("on", dict(base, BRAID_TRACE=trace))]
        cmd = [os.path.join(out, "fetch_braid"), url, "-n", str(a.n), "-c", str(a.c)]
        load_before = loadavg()
        res = {c: {"wall_s": [], "cpu_us_per_req": []} for c, _ in configs}
        for r in range(a.rounds):
            for name, env in configs:
                wall, cpu = measure(cmd, env)
                res[name]["wall_s"].append(round(wall, 4))
                res[name]["cpu_us_per_req"].append(round(cpu / a.n * 1e6, 2))
                print("round %d %-6s wall %.3f s  cpu %6.1f us/req" % (r + 1, name, wall, cpu / a.n * 1e6),
                      file=sys.stderr)
        if os.path.exists(trace):
            os.unlink(trace)
        os.rmdir(tmp)
    finally:
        server.terminate()
        server.wait()
    med = {c: {k: statistics.median(v) for k, v in d.items()} for c, d in res.items()}
    summary = {"median": med}
    for c in ("flight", "on"):
        summary[c + "_over_off"] = {k: med[c][k] / med["off"][k] for k in med[c]}
    doc = {"what": "tracing cost on braid-http's fetch benchmark (1 process, 50 ms server)",
           "n": a.n, "concurrency": a.c, "rounds": a.rounds, "load_before": load_before,
           "load_after": loadavg(), "rounds_data": res, "results": summary}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    for c in ("flight", "on"):
        r = summary[c + "_over_off"]
        print("%-6s/off  wall %.3f  cpu per request %.3f" % (c, r["wall_s"], r["cpu_us_per_req"]))


if __name__ == "__main__":
    main()
