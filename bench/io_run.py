#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/io_run.py — the I/O benchmarks, braid and its peers side by side
in the same run (timing here is noisy: compare within a run, not across runs).

  http   HTTP/1.1 keep-alive "hello" under `wrk -t1 -c100 -dDs`: braid (one
         loop; epoll and io_uring), a libuv server of the same behaviour, Go
         net/http (GOMAXPROCS=1), asyncio, uvloop, nginx with one worker.
         The server is pinned to CPU 0 and wrk to CPU 1 (taskset), so req/s is
         the server's one-core capacity, not a share of two cores contended
         with wrk (--no-pin: both float; br_run_loops with 2 loops then runs
         too). Requests per second and the server's CPU time per request
         (user+sys of the server's whole process group, read from /proc
         around the wrk run).
  c10k   10,000 echo connections held open, each exchanging a 32-byte message
         once a second for 10 s (bench_c10k_client): server memory per
         connection (RSS growth over the idle server) and p50/p99 latency;
         braid (own stacks and compact tasks), Go, asyncio.
  files  10,000 small files read concurrently, one task each (bench_files):
         epoll (blocking pool) vs io_uring (the loop's ring).

Every program it runs comes from the build tree (--build-dir, default build/).
A peer that the tree lacks because its library was installed after the tree
was configured (libuv for bench_http_libuv) is built first: the tree is
configured again (CMake finds what it did not find before) and the target
built, so a run never silently drops a peer that is installed.

Usage (Debian's /usr/bin/python3 has uvloop; needs wrk, nginx, go, a built tree):
  /usr/bin/python3 bench/io_run.py                 # everything (~4 minutes)
  /usr/bin/python3 bench/io_run.py --quick         # 2 s runs, 2000 connections
  /usr/bin/python3 bench/io_run.py --only http --runs 5
Each round runs the servers in a shuffled order, each timed run waits (at most
--idle-wait s, default 10) for 80 % of the CPUs to be idle, and the idle
fraction and load average seen before it are recorded with it.
Writes bench/io_results.json (--out). Standard library only.
"""
import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from quiet import IDLE_WAIT, wait_idle  # bench/quiet.py

ROOT = Path(__file__).resolve().parent.parent
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            pids.append(int(d))
    return pids


def group_cpu(pgid):
    """user+sys seconds of every process in the group (threads included)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rfind(")") + 2:].split()
        total += int(f[11]) + int(f[12])  # utime, stime
    return total / TICK


def group_rss_kib(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


IDLE_WAIT[0] = 10.0  # seconds to wait for a quiet machine before a timed run (--idle-wait)


# CPU pinning (set by main): the server on SERVER_CPUS, the load generator on
# CLIENT_CPUS, through taskset. Empty lists: no pinning.
SERVER_CPUS = []
CLIENT_CPUS = []


def pinned(cmd, cpus):
    if not cpus:
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in cpus)] + cmd


def ensure_built(build, target, rel, why=""):
    """build/<rel>, building `target` (after configuring the tree again) if it
    is missing. None if it still cannot be built (e.g. its library is absent)."""
    exe = build / rel
    if exe.exists():
        return exe
    log(f"{rel} is not in {build}{why}: configuring the tree again and building {target}")
    r = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build)], capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run(["cmake", "--build", str(build), "--target", target, "-j2"],
                           capture_output=True, text=True)
    if r.returncode != 0 or not exe.exists():
        log(f"{target} could not be built: {(r.stdout + r.stderr).strip()[-400:]}")
        return None
    return exe


def have_pkg(name):
    return shutil.which("pkg-config") and subprocess.run(
        ["pkg-config", "--exists", name]).returncode == 0


class Server:
    def __init__(self, cmd, env=None, cwd=None):
        e = dict(os.environ)
        e.update(env or {})
        cmd = pinned(cmd, SERVER_CPUS)
        self.p = subprocess.Popen(cmd, env=e, cwd=cwd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


def wrk(port, duration):
    out = subprocess.run(pinned(["wrk", "-t1", "-c100", f"-d{duration}s", f"http://127.0.0.1:{port}/"],
                                CLIENT_CPUS),
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return rps, reqs, (errs.group(0) if errs else "")


def build_go(build_dir, name):
    go = shutil.which("go")
    if not go:
        return None
    out = build_dir / "bench-go" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOPROXY="off", GOFLAGS="", CGO_ENABLED="0", GO111MODULE="off")
    env.setdefault("GOCACHE", str(build_dir / "bench-go" / "cache"))
    r = subprocess.run([go, "build", "-o", str(out), str(ROOT / "bench" / name / "main.go")],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        log(f"go build {name} failed: {r.stderr.strip()}")
        return None
    return out


def nginx_server(port, tmp):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        return None
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
}}
""")
    return Server([nginx, "-c", str(conf), "-p", tmp])


def http_bench(args, build):
    hello = build / "examples" / "http_hello"
    libuv = build / "bench" / "bench_http_libuv"
    if not libuv.exists() and have_pkg("libuv"):
        libuv = ensure_built(build, "bench_http_libuv", "bench/bench_http_libuv",
                             " although libuv is installed") or libuv
    go = build_go(build, "http_go")
    peers = []
    for be in ("epoll", "io_uring"):
        # Pinned to one CPU, a second loop only takes turns with the first.
        for loops in ((1,) if SERVER_CPUS else (1, 2)):
            peers.append((f"braid-{be}-{loops}loop", lambda p, be=be, loops=loops: Server(
                [str(hello), "--port", str(p), "--loops", str(loops)], env={"BRAID_BACKEND": be})))
    # The ring's own socket receive and send against io_uring used for
    # readiness only (as epoll): what the former saves per request.
    peers.append(("braid-io_uring-readiness-1loop", lambda p: Server(
        [str(hello), "--port", str(p), "--loops", "1"],
        env={"BRAID_BACKEND": "io_uring", "BRAID_URING_SOCKETS": "0"})))
    if libuv.exists():
        peers.append(("libuv", lambda p: Server([str(libuv), str(p)])))
    if go:
        peers.append(("go", lambda p: Server([str(go), "-port", str(p)], env={"GOMAXPROCS": "1"})))
    peers.append(("asyncio", lambda p: Server([PY, str(ROOT / "bench/http_peers.py"), "http", str(p)])))
    peers.append(("uvloop", lambda p: Server([PY, str(ROOT / "bench/http_peers.py"), "http", str(p), "uvloop"])))
    tmp = tempfile.mkdtemp(prefix="braid-nginx-")
    peers.append(("nginx", lambda p: nginx_server(p, tmp)))
    results = {}
    for run in range(args.runs):
        # A shuffled order per round: a machine whose load drifts during the
        # round does not always favour whoever runs first.
        order = list(peers)
        random.Random(run).shuffle(order)
        for name, start in order:
            if args.filter and not re.search(args.filter, name):
                continue
            idle = wait_idle()
            load = os.getloadavg()[0]
            port = free_port()
            srv = start(port)
            if srv is None:
                continue
            try:
                if not wait_port(port, srv.p):
                    log(f"{name}: server did not start: {srv.p.stderr.read().decode()[-500:] if srv.p.poll() is not None else ''}")
                    continue
                wrk(port, 1)  # warm-up
                c0 = group_cpu(srv.p.pid)
                rps, reqs, errs = wrk(port, args.duration)
                cpu = group_cpu(srv.p.pid) - c0
            finally:
                srv.stop()
            r = results.setdefault(name, {"rps": [], "cpu_us_per_req": [], "server_busy": [],
                                          "notes": [], "idle_before": [], "loadavg_before": []})
            # The share of its core the server used: well under 1, the client
            # set the pace and req/s is the client's limit, not the server's.
            r["server_busy"].append(round(cpu / args.duration, 3))
            r["idle_before"].append(idle)
            r["loadavg_before"].append(round(load, 2))
            r["rps"].append(rps)
            r["cpu_us_per_req"].append(cpu / max(reqs, 1) * 1e6)
            if errs:
                r["notes"].append(errs)
            log(f"http run {run + 1}: {name:22s} {rps:10.0f} req/s  {cpu / max(reqs, 1) * 1e6:6.2f} us CPU/req"
                f"  (idle {idle:.2f} before, load {load:.2f}) {errs}")
    shutil.rmtree(tmp, ignore_errors=True)
    for r in results.values():
        r["rps_median"] = statistics.median(r["rps"])
        r["cpu_us_per_req_median"] = statistics.median(r["cpu_us_per_req"])
        r["server_busy_median"] = statistics.median(r["server_busy"])
    return results


def c10k_bench(args, build):
    echo = build / "examples" / "echo_server"
    client = build / "bench" / "bench_c10k_client"
    go = build_go(build, "c10k_go")
    servers = [
        ("braid", lambda p: Server([str(echo), "--port", str(p)])),
        ("braid-compact", lambda p: Server([str(echo), "--port", str(p)], env={"BRAID_COMPACT": "1"})),
    ]
    if go:
        servers.append(("go", lambda p: Server([str(go), "-port", str(p)], env={"GOMAXPROCS": "1"})))
    servers.append(("asyncio", lambda p: Server([PY, str(ROOT / "bench/http_peers.py"), "echo", str(p)])))
    servers.append(("uvloop", lambda p: Server([PY, str(ROOT / "bench/http_peers.py"), "echo", str(p), "uvloop"])))
    runs = {}
    for rnd in range(args.runs):
        # Rounds of every server, in a shuffled order per round (as http).
        order = list(servers)
        random.Random(1000 + rnd).shuffle(order)
        for name, start in order:
            if args.filter and not re.search(args.filter, name):
                continue
            rec = c10k_once(args, name, start, echo, client)
            if rec:
                rec["round"] = rnd
                runs.setdefault(name, []).append(rec)
    results = {}
    for name, rr in runs.items():
        # The medians under the keys a single run had; every run kept.
        results[name] = {k: statistics.median(r[k] for r in rr)
                         for k in ("bytes_per_conn", "p50_us", "p99_us", "max_us",
                                   "server_rss_idle_kib", "server_rss_loaded_kib")}
        results[name].update(connections=rr[0]["connections"], errors=sum(r["errors"] for r in rr),
                             rounds=len(rr), runs=rr)
    return results


def c10k_once(args, name, start, echo, client):
    idle = wait_idle()
    port = free_port()
    srv = start(port)
    try:
        if not wait_port(port, srv.p):
            log(f"c10k {name}: server did not start")
            return None
        time.sleep(0.3)
        base = group_rss_kib(srv.p.pid)
        cl = subprocess.Popen(pinned([str(client), str(port), str(args.conns), str(args.secs)],
                                     CLIENT_CPUS),
                              stdout=subprocess.PIPE, text=True)
        mid = None
        last = None
        for line in cl.stdout:
            line = line.strip()
            if line == "CONNECTED":
                time.sleep(1.5)
                mid = group_rss_kib(srv.p.pid)
            elif line.startswith("{"):
                last = json.loads(line)
        cl.wait()
        if not last or mid is None:
            log(f"c10k {name}: client failed")
            return None
        last["idle_before"] = idle
        last["loadavg_before"] = round(os.getloadavg()[0], 2)
        last["server_rss_idle_kib"] = base
        last["server_rss_loaded_kib"] = mid
        last["bytes_per_conn"] = (mid - base) * 1024 / args.conns
        log(f"c10k {name:14s} {last['bytes_per_conn']:8.0f} B/conn  p50 {last['p50_us']:8.1f} us"
            f"  p99 {last['p99_us']:8.1f} us  errors {last['errors']}  (idle {idle})")
        return last
    finally:
        srv.stop()


def files_bench(args, build):
    prog = build / "bench" / "bench_files"
    tmp = tempfile.mkdtemp(prefix="braid-files-")
    results = {}
    try:
        for be in ("epoll", "io_uring"):
            runs = []
            for _ in range(args.runs):
                out = subprocess.run([str(prog), tmp, str(args.files)], capture_output=True, text=True,
                                     env=dict(os.environ, BRAID_BACKEND=be), timeout=300)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results[be] = {
                "read_all_ms": statistics.median(r["read_all_ms"] for r in runs),
                "open_read_close_ms": statistics.median(r["open_read_close_ms"] for r in runs),
                "runs": runs,
            }
            log(f"files {be:8s} read_all {results[be]['read_all_ms']:8.1f} ms   "
                f"open+read+close {results[be]['open_read_close_ms']:8.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--only", default="http,c10k,files")
    ap.add_argument("--filter", default="", help="regex on server names")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--idle-wait", type=float, default=10.0,
                    help="seconds to wait (at most) for 80%% idle CPUs before each timed run")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the server to CPU 0 and the client to CPU 1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "io_results.json"))
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.conns, args.secs, args.files = 1, 2, 2000, 3, 2000
    build = Path(args.build_dir).resolve()
    IDLE_WAIT[0] = args.idle_wait
    only = args.only.split(",")
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin:
        if len(cpus) >= 2 and shutil.which("taskset"):
            SERVER_CPUS[:] = [cpus[0]]
            CLIENT_CPUS[:] = [cpus[1]]
        else:
            log("fewer than 2 CPUs or no taskset: server and client are not pinned")
    res = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "loadavg_before": os.getloadavg()},
           "settings": {k: getattr(args, k) for k in ("runs", "duration", "conns", "secs", "files")}}
    res["settings"]["server_cpus"] = SERVER_CPUS
    res["settings"]["client_cpus"] = CLIENT_CPUS
    try:
        res["machine"]["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                  capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    if "http" in only:
        h = res["http"] = http_bench(args, build)
        ratios = {}
        for b in [k for k in h if k.startswith("braid")]:
            for peer in ("libuv", "nginx", "go", "asyncio", "uvloop"):
                if peer in h:
                    ratios[f"{b}/{peer}"] = {
                        "rps": round(h[b]["rps_median"] / h[peer]["rps_median"], 3),
                        "cpu_per_req": round(h[b]["cpu_us_per_req_median"] / h[peer]["cpu_us_per_req_median"], 3)}
        res["http_ratios"] = ratios
        best = max((k for k in h if k.startswith("braid") and k.endswith("-1loop")),
                   key=lambda k: h[k]["rps_median"], default=None)
        targets = res["targets"] = {}
        if best:
            for peer, key, goal, le in (("nginx", "rps", 1.25, False), ("libuv", "rps", 1.15, False),
                                        ("uvloop", "rps", 1.15, False),
                                        ("nginx", "cpu_per_req", 0.8, True)):
                name = (f"one loop >= {goal}x {peer} req/s" if not le
                        else f"CPU/request <= {goal}x {peer}'s")
                if peer not in h:
                    targets[name] = {"braid": best, "ratio": None, "pass": False,
                                     "note": f"{peer} did not run"}
                    continue
                r = ratios[f"{best}/{peer}"][key]
                targets[name] = {"braid": best, "ratio": r, "pass": r <= goal if le else r >= goal}
                if key == "rps" and h[best]["server_busy_median"] < 0.9:
                    targets[name]["note"] = "client-bound: the server's core was not saturated"

        pin = (f"server on CPU {SERVER_CPUS[0]}, wrk on CPU {CLIENT_CPUS[0]}" if SERVER_CPUS
               else "not pinned")
        print("\nHTTP hello, wrk -t1 -c100 -d%ds (median of %d; %s)" % (args.duration, args.runs, pin))
        print(f"{'server':32s}{'req/s':>10s}{'CPU us/req':>12s}{'core busy':>11s}")
        for k, v in sorted(h.items(), key=lambda kv: -kv[1]["rps_median"]):
            print(f"{k:32s}{v['rps_median']:10.0f}{v['cpu_us_per_req_median']:12.2f}"
                  f"{v['server_busy_median']:11.2f}")
        if best and h[best]["server_busy_median"] < 0.9:
            print(f"note: {best} kept its core {h[best]['server_busy_median']:.0%} busy: wrk, on one core,"
                  " set the pace, so req/s ties; CPU/request is the servers' difference")
        for t, v in res.get("targets", {}).items():
            print(f"target: {t}: {v['braid']} ratio {v['ratio']} -> {'PASS' if v['pass'] else 'MISS'}"
                  + (f" ({v['note']})" if v.get("note") else ""))
    if "c10k" in only:
        res["c10k"] = c10k_bench(args, build)
        print(f"\nC10K: {args.conns} connections, 1 msg/s each for {args.secs} s (median of {args.runs})")
        print(f"{'server':16s}{'B/conn':>10s}{'p50 us':>10s}{'p99 us':>10s}{'errors':>8s}")
        for k, v in res["c10k"].items():
            print(f"{k:16s}{v['bytes_per_conn']:10.0f}{v['p50_us']:10.1f}{v['p99_us']:10.1f}{v['errors']:8d}")
        b = res["c10k"].get("braid")
        if b:
            t = res.setdefault("targets", {})
            t["C10K default mode <= 2048 B/conn"] = {"braid": "braid", "value": round(b["bytes_per_conn"]),
                                                     "pass": b["bytes_per_conn"] <= 2048}
            t["C10K default mode p99 <= 700 us"] = {"braid": "braid", "value": b["p99_us"],
                                                    "pass": b["p99_us"] <= 700}
            for k in ("C10K default mode <= 2048 B/conn", "C10K default mode p99 <= 700 us"):
                print(f"target: {k}: {t[k]['value']} -> {'PASS' if t[k]['pass'] else 'MISS'}")
    if "files" in only:
        f = res["files"] = files_bench(args, build)
        print(f"\nFiles: {args.files} small files, one task each (median of {args.runs}, ms)")
        for be, v in f.items():
            print(f"{be:10s} read_all {v['read_all_ms']:8.1f}   open+read+close {v['open_read_close_ms']:8.1f}")
        if "epoll" in f and "io_uring" in f:
            res["files_ratio_uring_over_epoll"] = {
                k: round(f["io_uring"][k] / f["epoll"][k], 3) for k in ("read_all_ms", "open_read_close_ms")}
    out = Path(args.out)
    if set(only) != {"http", "c10k", "files"} and out.exists():
        # A partial run replaces only its own parts of the results file.
        try:
            old = json.loads(out.read_text())
        except ValueError:
            old = {}
        kept = {k: v for k, v in old.items()
                if k != "targets" and (k not in res or k in ("machine", "settings"))}
        targets = {k: v for k, v in old.get("targets", {}).items()
                   if not (k.startswith("C10K") if "c10k" in only else not k.startswith("C10K"))}
        targets.update(res.get("targets", {}))
        for k in ("machine", "settings"):
            kept[k + "_" + "+".join(only)] = res.pop(k)
        res = {**kept, **res, "targets": targets}
    out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
