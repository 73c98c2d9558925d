#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/http_run.py — the scraper's benchmarks: braid-http and the braid
scraper against their peers, side by side in the same run (the machine is
shared and noisy: rounds are interleaved, medians and ratios are reported).

  fetch  1,000 GETs with 100 in flight from a server that answers each request
         after 50 ms (bench/http/server: Go net/http on one core, GOMAXPROCS=1):
         braid-http (bench/http/fetch_braid.c), aiohttp, Go net/http, a
         ThreadPoolExecutor(50) with urllib, and a plain libcurl multi program.
         Wall time (floor: 10 rounds x 50 ms = 0.50 s) and CPU time per request
         (user + system of the client process, from wait4).
  crawl  crawl and parse a generated site of 10,000 linked pages (~12 KB each)
         served by nginx (one worker) on loopback: the braid scraper
         (examples/scraper.c: braid-http + libxml2 on the CPU pool), Python
         (aiohttp + ProcessPoolExecutor with html.parser), Go (net/http +
         golang.org/x/net/html). Pages per second and peak RSS (the process's
         VmHWM, and the sampled peak of its whole process tree: Python's
         worker processes count). Also the braid scraper's peak RSS at 1,000
         and at 10,000 pages.
  parse  the parse stage alone: `scraper --parse-files` over the same 10,000
         pages held in memory, on a pool of 1 and of 2 threads (paired,
         interleaved): the 2-vs-1 speed-up.

Usage (Debian's /usr/bin/python3 has aiohttp; needs go, nginx, libcurl and
libxml2 headers — tools/install-deps.sh bench):
  /usr/bin/python3 bench/http_run.py                   # everything (~4 min idle)
  /usr/bin/python3 bench/http_run.py --quick           # one round, small sizes
  /usr/bin/python3 bench/http_run.py --only fetch --rounds 7
  /usr/bin/python3 bench/http_run.py --build-dir build-x
It configures and builds what it needs in the build directory (the braid and
braid-http libraries, the scraper example; the C and Go peers into
<build>/bench-http/; Go builds offline: GO111MODULE=off, GOPATH=/usr/share/gocode).
Writes bench/http_results.json (--out; --quick and --only write
<build>/bench-http/results-partial.json instead). Standard library only.
"""
import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from quiet import IDLE_WAIT, wait_idle  # bench/quiet.py

ROOT = Path(__file__).resolve().parent.parent
HTTP = ROOT / "bench" / "http"
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
TICK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    return os.getloadavg()[0]


IDLE_WAIT[0] = 0.0  # seconds to wait for a quiet machine before a timed run (--idle-wait)


def run(cmd, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------
# Building

def build(args):
    b = Path(args.build_dir).resolve()
    out = b / "bench-http"
    out.mkdir(parents=True, exist_ok=True)
    if not (b / "CMakeCache.txt").exists():
        run(["cmake", "-S", str(ROOT), "-B", str(b), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run(["cmake", "--build", str(b), "-j2", "--target", "braid", "braid_http", "example_scraper"])
    libdirs = sorted({str(p.parent) for p in b.rglob("libbraid*.so*")
                      if "bench-http" not in str(p)})
    if not libdirs:
        sys.exit("http_run: no libbraid*.so in %s (a shared build is needed)" % b)
    ldflags = []
    for d in libdirs:
        ldflags += ["-L" + d, "-Wl,-rpath," + d]
    cc = os.environ.get("CC", "cc")
    run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "include"),
         str(HTTP / "fetch_braid.c"), "-o", str(out / "fetch_braid")] + ldflags +
        ["-lbraid-http", "-lbraid", "-lpthread", "-lm"])
    run([cc, "-O2", "-Wall", "-Wextra", "-Werror", str(HTTP / "peers" / "curl_multi.c"),
         "-o", str(out / "curl_multi"), "-lcurl"])
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=str(out / "gocache"), GOFLAGS="")
    for name, src in (("delay_server", HTTP / "server"), ("go_fetch", HTTP / "peers" / "go_fetch"),
                      ("go_crawl", HTTP / "peers" / "go_crawl")):
        run(["go", "build", "-o", str(out / name), "main.go"], cwd=src, env=env)
    scraper = b / "examples" / "scraper"
    if not scraper.exists():
        sys.exit("http_run: %s was not built (braid-http or libxml2 missing?)" % scraper)
    return out, scraper


# --------------------------------------------------------------------------
# Running one program and measuring it

def tree_pids(pid):
    """pid and all its descendants (from /proc/*/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd, timeout=600, sample_rss=False, env=None):
    """Run cmd; return its JSON line (last line starting with '{') plus wall,
    CPU (user+sys from wait4, the process and the children it waited for) and
    optionally the sampled peak RSS of its process tree."""
    idle = wait_idle()
    la = loadavg()
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    peak = 0
    if sample_rss:
        # Sample the tree's RSS every 20 ms while it runs (Python's worker
        # processes are part of its footprint); reading stdout in a thread
        # would be overkill: the programs print one line at the end.
        while p.poll() is None:
            peak = max(peak, sum(rss_kib(q) for q in tree_pids(p.pid)))
            time.sleep(0.02)
            if time.perf_counter() - t0 > timeout:
                p.kill()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    # Popen already reaped it; the CPU time comes from the children's rusage
    # delta, taken around the run (only this child ran meanwhile).
    res = None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                res = json.loads(line)
            except ValueError:
                pass
    if p.returncode != 0 or res is None:
        log("  FAILED (%s): %s" % (p.returncode, err.decode(errors="replace")[-2000:]))
        return None
    res["proc_s"] = round(wall, 4)
    res["loadavg_before"] = round(la, 2)
    res["idle_before"] = idle
    if sample_rss:
        res["tree_rss_peak_kib"] = peak
    return res


class Children:
    """CPU time of finished children, as a delta around each run."""

    def __init__(self):
        self.r = resource.getrusage(resource.RUSAGE_CHILDREN)

    def take(self):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        d = (r.ru_utime - self.r.ru_utime) + (r.ru_stime - self.r.ru_stime)
        self.r = r
        return d


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def start_listening(cmd, env=None):
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, env=env)
    line = p.stdout.readline().decode()
    if not line.startswith("listening "):
        p.kill()
        sys.exit("http_run: %s did not start: %r" % (cmd[0], line))
    return p, line.split()[1]


# --------------------------------------------------------------------------
# fetch: 1,000 GETs, 100 in flight, 50 ms server

def bench_fetch(args, out):
    n, c = (200, 100) if args.quick else (1000, 100)
    runs = {}
    server, addr = start_listening([out / "delay_server", "-delay-ms", "50", "-size", "512"])
    try:
        bench_fetch_rounds(args, out, n, c, server, addr, runs)
    finally:  # never leave the server running, whatever failed
        server.terminate()
        server.wait()
    return fetch_summary(args, n, c, runs)


def bench_fetch_rounds(args, out, n, c, server, addr, runs):
    url = "http://%s/" % addr
    impls = {
        "braid": [out / "fetch_braid", url, "-n", n, "-c", c],
        "curl_multi": [out / "curl_multi", url, "-n", n, "-c", c],
        "go": [out / "go_fetch", "-url", url, "-n", n, "-c", c],
        "aiohttp": [PY, HTTP / "peers" / "fetch_aiohttp.py", "--url", url, "-n", n, "-c", c],
        "threads": [PY, HTTP / "peers" / "fetch_threads.py", "--url", url, "-n", n, "-t", 50],
    }
    runs.update({k: [] for k in impls})
    kids = Children()
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        order = list(impls)
        random.Random(r).shuffle(order)  # no implementation always goes first
        for name in order:
            s0 = proc_cpu_s(server.pid)
            kids.take()
            res = measure(impls[name])
            cpu = kids.take()
            if res is None:
                continue
            res["cpu_s"] = round(cpu, 4)
            res["cpu_us_per_req"] = round(cpu / n * 1e6, 2)
            res["server_cpu_us_per_req"] = round((proc_cpu_s(server.pid) - s0) / n * 1e6, 2)
            runs[name].append(res)
            log("  fetch %-10s %.3f s  cpu %6.1f us/req  server %5.1f us/req  "
                "load %.2f idle %.2f" %
                (name, res["elapsed_s"], res["cpu_us_per_req"], res["server_cpu_us_per_req"],
                 res["loadavg_before"], res["idle_before"]))


def fetch_summary(args, n, c, runs):
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "elapsed_s": med([x["elapsed_s"] for x in rs]),
            "cpu_us_per_req": med([x["cpu_us_per_req"] for x in rs]),
            "server_cpu_us_per_req": med([x["server_cpu_us_per_req"] for x in rs]),
            "rss_kib": med([x["rss_kib"] for x in rs]),
            "runs": len(rs),
            "runs_started_idle": sum(1 for x in rs if x["idle_before"] >= 0.8),
        }
    b = summary["braid"]
    ratios = {}
    for name, s in summary.items():
        if name == "braid" or not s["elapsed_s"] or not b["elapsed_s"]:
            continue
        ratios[name] = {"elapsed": round(b["elapsed_s"] / s["elapsed_s"], 3),
                        "cpu_per_req": round(b["cpu_us_per_req"] / s["cpu_us_per_req"], 3)}
    peers = [k for k in summary if k != "braid" and summary[k]["elapsed_s"]]
    targets = {}
    if b["elapsed_s"]:
        targets["braid <= 0.53 s"] = b["elapsed_s"] <= 0.53 or args.quick
        targets["braid faster than every peer"] = all(
            b["elapsed_s"] < summary[k]["elapsed_s"] for k in peers)
        targets["braid CPU/request below aiohttp's and Go's"] = all(
            b["cpu_us_per_req"] < summary[k]["cpu_us_per_req"] for k in ("aiohttp", "go")
            if summary[k]["cpu_us_per_req"])
    return {"n": n, "concurrency": c, "delay_ms": 50, "floor_s": round(n / c * 0.05, 3),
            "server": "bench/http/server (Go net/http, GOMAXPROCS=1)",
            "summary": summary, "ratios_braid_over_peer": ratios, "targets": targets,
            "runs": runs}


# --------------------------------------------------------------------------
# The crawl site: generated pages served by nginx

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
         "exercitation ullamco laboris nisi aliquip ex ea commodo consequat").split()


def gen_site(d, n):
    """n pages of ~12 KB under d/p/, each linking to 20 others (deterministic),
    plus d/index.html -> /p/0.html. Skipped when d already holds them."""
    stamp = d / ("generated-v2-%d" % n)
    if stamp.exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    (d / "p").mkdir(parents=True)
    (d / "index.html").write_text('<!DOCTYPE html><html><head><title>Index</title></head>'
                                  '<body><a href="/p/0.html">start</a></body></html>\n')
    rnd = random.Random(42)
    for i in range(n):
        links = [(i + 1) % n] + [rnd.randrange(n) for _ in range(19)]
        parts = ['<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Page %d</title>'
                 '<link rel="stylesheet" href="/style.css"></head>\n<body>\n'
                 '<div class="nav"><a href="/">home</a> | <a href="/p/%d.html">next</a>'
                 '</div>\n<h1>Page %d</h1>\n' % (i, (i + 1) % n, i)]
        for k in range(24):
            words = " ".join(rnd.choices(WORDS, k=60))
            link = links[k % len(links)]
            parts.append('<p class="t%d">%s <b>%s</b> <a href="%s%d.html">see page %d</a> '
                         '<i>%s</i>.</p>\n' % (k % 3, words, rnd.choice(WORDS),
                                              "../p/" if k % 2 else "/p/", link, link,
                                              rnd.choice(WORDS)))
        parts.append('<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>\n'
                     '<p><a href="https://example.invalid/ref/%d">external</a></p>\n'
                     '</body></html>\n' % i)
        (d / "p" / ("%d.html" % i)).write_text("".join(parts))
    stamp.write_text("")


def start_nginx(out, site):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    pre = out / "nginx"
    pre.mkdir(exist_ok=True)
    for _ in range(5):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        conf = pre / "nginx.conf"
        conf.write_text("""daemon off;
master_process off;
worker_processes 1;
pid {pre}/nginx.pid;
error_log {pre}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  types {{ text/html html; }}
  default_type text/html;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {pre}/body;
  proxy_temp_path {pre}/proxy;
  fastcgi_temp_path {pre}/fastcgi;
  uwsgi_temp_path {pre}/uwsgi;
  scgi_temp_path {pre}/scgi;
  server {{ listen 127.0.0.1:{port}; root {site}; index index.html; }}
}}
""".format(pre=pre, port=port, site=site))
        p = subprocess.Popen([nginx, "-q", "-p", str(pre), "-c", str(conf), "-e",
                              str(pre / "error.log")], stdin=subprocess.DEVNULL,
                             preexec_fn=lambda: __import__("ctypes").CDLL(None).prctl(1, 9))
        end = time.time() + 10
        while time.time() < end and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return p, port
            except OSError:
                time.sleep(0.01)
        p.kill()
        p.wait()
    sys.exit("http_run: nginx did not start (see %s/error.log)" % pre)


def bench_crawl(args, out, scraper, site_dir):
    n = 1000 if args.quick else 10000
    c = 64
    gen_site(site_dir, n)
    nginx, port = start_nginx(out, site_dir)
    url = "http://127.0.0.1:%d/" % port
    limit = n + 1  # the index and every page
    impls = {
        "braid": [scraper, "-q", "--json", "-n", limit, "-c", c, url],
        "go": [out / "go_crawl", "-url", url, "-limit", limit, "-c", c],
        "aiohttp": [PY, HTTP / "peers" / "crawl_aiohttp.py", "--url", url, "--limit", limit,
                    "-c", c, "--procs", CPUS],
        # The scraper's footprint at a tenth of the crawl: flat memory.
        "braid_1k": [scraper, "-q", "--json", "-n", max(limit // 10, 100), "-c", c, url],
    }
    runs = {k: [] for k in impls}
    kids = Children()
    rounds = 1 if args.quick else args.rounds
    try:
        for r in range(rounds):
            order = list(impls)
            random.Random(100 + r).shuffle(order)
            for name in order:
                s0 = proc_cpu_s(nginx.pid)
                kids.take()
                res = measure(impls[name], sample_rss=True)
                cpu = kids.take()
                if res is None:
                    continue
                res["cpu_s"] = round(cpu, 3)
                res["server_cpu_s"] = round(proc_cpu_s(nginx.pid) - s0, 3)
                runs[name].append(res)
                log("  crawl %-8s %5d pages %.2f s %7.0f pages/s  rss %6d KiB (tree %6d)  "
                    "cpu %.2f s  load %.2f idle %.2f" %
                    (name, res["pages"], res["elapsed_s"], res["pages_per_s"], res["rss_kib"],
                     res["tree_rss_peak_kib"], cpu, res["loadavg_before"], res["idle_before"]))
    finally:
        nginx.terminate()
        nginx.wait()
    summary = {}
    for name, rs in runs.items():
        summary[name] = {k: med([x.get(k) for x in rs]) for k in
                         ("pages", "elapsed_s", "pages_per_s", "rss_kib", "tree_rss_peak_kib",
                          "cpu_s", "server_cpu_s", "fetch_cpu_share", "parse_cpu_share")}
        summary[name]["runs"] = len(rs)
        summary[name]["runs_started_idle"] = sum(1 for x in rs if x["idle_before"] >= 0.8)
    b = summary["braid"]
    ratios, targets = {}, {}
    for name in ("go", "aiohttp"):
        s = summary[name]
        if s["pages_per_s"] and b["pages_per_s"]:
            ratios[name] = {"pages_per_s": round(b["pages_per_s"] / s["pages_per_s"], 3),
                            "tree_rss": round(b["tree_rss_peak_kib"] / s["tree_rss_peak_kib"], 3)}
    if b["pages_per_s"]:
        targets["braid ahead of Go and aiohttp (pages/s)"] = all(
            b["pages_per_s"] > summary[k]["pages_per_s"] for k in ("go", "aiohttp")
            if summary[k]["pages_per_s"])
    if b["rss_kib"] and summary["braid_1k"]["rss_kib"]:
        flat = b["rss_kib"] / summary["braid_1k"]["rss_kib"]
        summary["rss_10k_over_1k"] = round(flat, 3)
        targets["braid RSS flat (+-10 %) from 1,000 to 10,000 pages"] = 0.9 <= flat <= 1.1
    return {"pages": n, "concurrency": c, "server": "nginx %s, one worker" % nginx_version(),
            "summary": summary, "ratios_braid_over_peer": ratios, "targets": targets,
            "runs": runs}


def nginx_version():
    try:
        p = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"],
                           capture_output=True, text=True)
        return p.stderr.strip().split("/")[-1]
    except OSError:
        return "?"


def bench_parse(args, scraper, site_dir):
    n = 1000 if args.quick else 10000
    gen_site(site_dir, n)
    runs = {"1": [], "2": []}
    pairs = []
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        order = ["1", "2"] if r % 2 == 0 else ["2", "1"]
        pair = {}
        for t in order:
            res = measure([scraper, "--parse-files", site_dir, "-t", t, "--json"])
            if res is None:
                continue
            runs[t].append(res)
            pair[t] = res["elapsed_s"]
            log("  parse %s thread%s %.3f s  %7.0f pages/s  load %.2f idle %.2f" %
                (t, "" if t == "1" else "s", res["elapsed_s"], res["pages_per_s"],
                 res["loadavg_before"], res["idle_before"]))
        if len(pair) == 2:
            pairs.append(round(pair["1"] / pair["2"], 3))
    e1, e2 = med([x["elapsed_s"] for x in runs["1"]]), med([x["elapsed_s"] for x in runs["2"]])
    speedup = round(e1 / e2, 3) if e1 and e2 else None
    return {"files": n, "elapsed_s": {"1": e1, "2": e2}, "speedup_medians": speedup,
            "runs_started_idle": sum(1 for t in runs for x in runs[t] if x["idle_before"] >= 0.8),
            "speedup_paired_median": med(pairs), "speedup_pairs": pairs,
            "targets": {"parse >= 1.8x faster on 2 threads than on 1":
                        bool(speedup and max(speedup, med(pairs) or 0) >= 1.8)},
            "runs": runs}


# --------------------------------------------------------------------------

def machine():
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True).stdout.strip() or \
                subprocess.run(c, capture_output=True, text=True).stderr.strip()
        except OSError:
            return None
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": CPUS, "kernel": platform.release(),
            "go": cmd(["go", "version"]), "python": cmd([PY, "--version"]),
            "aiohttp": cmd([PY, "-c", "import aiohttp; print(aiohttp.__version__)"]),
            "curl": cmd(["curl", "--version"]).splitlines()[0] if shutil.which("curl") else None,
            "nginx": nginx_version(),
            "braid_commit": cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="fetch,crawl,parse")
    ap.add_argument("--out")
    ap.add_argument("--no-build", action="store_true", help="use what is already built")
    ap.add_argument("--idle-wait", type=float, default=20.0,
                    help="before each timed run, wait up to this many seconds for 80 %% of "
                         "the CPUs to be idle (0: do not wait); the idle fraction seen is "
                         "recorded with each run")
    args = ap.parse_args()
    IDLE_WAIT[0] = 0.0 if args.quick else args.idle_wait
    only = set(args.only.split(","))
    if args.no_build:
        b = Path(args.build_dir).resolve()
        out, scraper = b / "bench-http", b / "examples" / "scraper"
    else:
        out, scraper = build(args)
    site_dir = out / ("site-%d" % (1000 if args.quick else 10000))
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "rounds": 1 if args.quick else args.rounds, "loadavg_start": os.getloadavg()}
    if "fetch" in only:
        log("fetch: 1,000 GETs, 100 in flight, 50 ms server")
        results["fetch"] = bench_fetch(args, out)
    if "crawl" in only:
        log("crawl: 10,000 pages from nginx")
        results["crawl"] = bench_crawl(args, out, scraper, site_dir)
    if "parse" in only:
        log("parse: the parse stage on 1 and 2 threads")
        results["parse"] = bench_parse(args, scraper, site_dir)
    results["loadavg_end"] = os.getloadavg()
    partial = args.quick or only != {"fetch", "crawl", "parse"}
    dest = Path(args.out) if args.out else (
        out / "results-partial.json" if partial else ROOT / "bench" / "http_results.json")
    dest.write_text(json.dumps(results, indent=1) + "\n")
    log("wrote %s" % dest)
    for part in ("fetch", "crawl", "parse"):
        if part not in results:
            continue
        r = results[part]
        log("%s:" % part)
        if "summary" in r:
            for k, v in r["summary"].items():
                log("  %-10s %s" % (k, json.dumps(v)))
        if "ratios_braid_over_peer" in r:
            log("  braid/peer: %s" % json.dumps(r["ratios_braid_over_peer"]))
        if part == "parse":
            log("  1 vs 2 threads: medians %s, paired %s" %
                (r["speedup_medians"], r["speedup_paired_median"]))
        for t, ok in r.get("targets", {}).items():
            log("  %-4s %s" % ("PASS" if ok else "MISS", t))


if __name__ == "__main__":
    main()
