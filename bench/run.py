#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""braid foundation benchmarks: braid against Go and asyncio/uvloop.

Runs every workload for braid and for its peers in the same run, interleaved
(run 1 of every implementation, then run 2, ...) so that the machine's drift
hits all of them alike, takes the median of --runs runs per figure, prints a
table with ratios and the targets, and writes bench/results.json.

Each benchmark program prints one JSON line with its own timing (elapsed_s,
ns_per_op) and its peak RSS (VmHWM); this script adds ru_maxrss from os.wait4
(see run_program for why it is not the primary figure) and the process's wall
time. Ratios are braid / peer for every
figure, so below 1.0x means braid is faster or smaller.

It builds nothing but the Go peers (`go build` into <build>/bench-go/); the
braid programs must already be built (cmake --build build) as
<build>/bench/bench_<name>. Standard library only.

    /usr/bin/python3 bench/run.py                 # everything, ~8 minutes
    /usr/bin/python3 bench/run.py --quick         # small sizes, one run: smoke test
    /usr/bin/python3 bench/run.py --only switch   # one workload (or group), repeatable
    /usr/bin/python3 bench/run.py --no-slow       # skip asyncio/uvloop at 1,000,000 tasks
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quiet import IDLE_WAIT, wait_idle  # noqa: E402  (bench/quiet.py)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# --------------------------------------------------------------------------
# What to run.
#
# A group is one workload at one size. Its runners are braid variants (rows
# judged against the peers) and peers. Sizes differ between implementations
# where the per-operation cost differs by orders of magnitude (a switch in
# asyncio costs ~100x one in braid): every figure is per operation and every
# run lasts at least ~0.3 s. Workloads whose point is the number of live tasks
# (spawn_live, sleepers) use the same n everywhere.

SWITCH_PEERS = ["go", "go-1p", "asyncio", "uvloop"]
PEERS = ["go", "asyncio", "uvloop"]
# Live-task workloads: Go holds its goroutines at a start gate so that all n
# are alive at once, as braid's tasks are (see bench/peers/go/spawn_live);
# "go-nogate" is the plain Go program, where they are not.
LIVE_PEERS = ["go", "go-nogate", "asyncio", "uvloop"]


def G(**kw):
    kw.setdefault("metrics", [("ns_per_op", "ns/op")])
    kw.setdefault("slow", [])
    kw.setdefault("peer_args", [])
    return kw


GROUPS = [
    G(name="switch_chan", bench="switch",
      title="ping-pong between two tasks over an unbuffered channel (one hop = one switch)",
      metrics=[("ns_per_op", "ns/switch")],
      braid=[("braid", ["--mode", "chan"]),
             ("braid acct=off", ["--mode", "chan", "--acct", "off"]),
             ("braid compact", ["--mode", "chan", "--compact"])],
      peers=SWITCH_PEERS, peer_args=["chan"],
      n={"braid": 10_000_000, "go": 2_000_000, "py": 200_000},
      quick_n={"braid": 200_000, "go": 100_000, "py": 10_000}),
    G(name="ctx_switch", bench="ctx_switch",
      title="the bare context switch (br__ctx_switch between two stacks; boost.context's jump is ~5.8 ns)",
      metrics=[("ns_per_op", "ns/switch")],
      braid=[("braid", []), ("braid, different call sites", ["--asym"])],
      peers=[],
      n={"braid": 20_000_000},
      quick_n={"braid": 1_000_000}),
    G(name="switch_yield", bench="switch",
      title="bare switch: two tasks yielding to each other (br_yield / Gosched / sleep(0))",
      metrics=[("ns_per_op", "ns/switch")],
      braid=[("braid", ["--mode", "yield"]),
             ("braid acct=off", ["--mode", "yield", "--acct", "off"]),
             ("braid compact", ["--mode", "yield", "--compact"])],
      peers=SWITCH_PEERS, peer_args=["yield"],
      n={"braid": 25_000_000, "go": 3_000_000, "py": 300_000},
      quick_n={"braid": 500_000, "go": 200_000, "py": 20_000}),
    G(name="spawn_churn", bench="spawn_churn",
      title="tasks spawned and joined in waves of 1,000",
      metrics=[("ns_per_op", "ns/task")],
      braid=[("braid", []), ("braid compact", ["--compact"])],
      peers=PEERS,
      n={"braid": 4_000_000, "go": 4_000_000, "py": 1_000_000},
      quick_n={"braid": 100_000, "go": 100_000, "py": 20_000}),
    G(name="spawn_live", bench="spawn_live",
      title="tasks all alive at once, each yields once, then all joined",
      metrics=[("ns_per_op", "ns/task"), ("rss_mib", "MiB")],
      braid=[("braid", []), ("braid compact", ["--compact"])],
      peers=LIVE_PEERS, slow=["asyncio", "uvloop"],
      n={"braid": 1_000_000, "go": 1_000_000, "py": 1_000_000},
      quick_n={"braid": 100_000, "go": 100_000, "py": 100_000}),
    G(name="sleepers_100k", bench="sleepers",
      title="100,000 tasks each sleeping 1 s",
      metrics=[("elapsed_s", "s"), ("rss_mib", "MiB")],
      braid=[("braid", []), ("braid compact", ["--compact"])],
      peers=LIVE_PEERS, extra=["--ms", "1000"], quick_extra=["--ms", "200"],
      n={"braid": 100_000, "go": 100_000, "py": 100_000},
      quick_n={"braid": 10_000, "go": 10_000, "py": 10_000}),
    G(name="sleepers_1m", bench="sleepers",
      title="1,000,000 tasks each sleeping 1 s",
      metrics=[("elapsed_s", "s"), ("rss_mib", "MiB")],
      braid=[("braid", []), ("braid compact", ["--compact"])],
      peers=LIVE_PEERS, slow=["asyncio", "uvloop"],
      extra=["--ms", "1000"], quick_extra=["--ms", "200"],
      n={"braid": 1_000_000, "go": 1_000_000, "py": 1_000_000},
      quick_n={"braid": 100_000, "go": 100_000, "py": 100_000}),
]

GO_PROGRAMS = ["switch", "spawn_churn", "spawn_live", "sleepers"]

PEER_LABEL = {"go": "go", "go-1p": "go GOMAXPROCS=1", "go-nogate": "go no gate",
              "asyncio": "asyncio", "uvloop": "uvloop"}


# --------------------------------------------------------------------------
# Running one program.

class RunError(Exception):
    pass


def child_env(extra=None):
    """The environment of every benchmark process: the caller's, minus
    anything that would change braid's or Go's defaults behind our back."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BRAID_") and k not in ("GOMAXPROCS", "GOGC", "GODEBUG",
                                                         "PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    env.update(extra or {})
    return env


def loadavg1():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_program(cmd, env, timeout):
    """Run cmd and return its JSON line plus rss_kib / rss_mib (peak RSS),
    ru_maxrss_kib (from os.wait4) and proc_s (the process's wall time).
    It first waits (at most --idle-wait s) for 80 % of the CPUs to be idle
    and records the idle fraction it saw (idle_before)."""
    idle = wait_idle() if IDLE_WAIT[0] > 0 else None
    load1 = loadavg1()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        proc_s = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    tail = stderr.strip()[-1500:]
    if timed_out.is_set():
        raise RunError(f"timed out after {timeout:.0f} s\n{tail}")
    if p.returncode != 0:
        how = (f"killed by signal {-p.returncode} ({signal.Signals(-p.returncode).name})"
               if p.returncode < 0 else f"exit status {p.returncode}")
        raise RunError(f"{how}\n{tail}")
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    try:
        rec = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RunError(f"no JSON line on stdout: {stdout[-500:]!r}\n{tail}")
    # Peak RSS: the program's own VmHWM (peak since exec) when it reports one.
    # wait4's ru_maxrss is kept for reference but is no good alone: Linux
    # carries the pre-exec peak across execve, so it never reads below the RSS
    # of this Python process that forked the child (~10-15 MiB).
    rec["ru_maxrss_kib"] = ru.ru_maxrss
    hwm = rec.get("vmhwm_kib", -1)
    rec["rss_kib"] = hwm if isinstance(hwm, int) and hwm > 0 else ru.ru_maxrss
    rec["rss_mib"] = rec["rss_kib"] / 1024.0
    rec["proc_s"] = proc_s
    # CPU time of the process: on a loaded machine the wall-clock figures of
    # a single-threaded program inflate, its CPU time much less.
    rec["cpu_s"] = ru.ru_utime + ru.ru_stime
    if rec.get("ops"):
        rec["cpu_ns_per_op"] = rec["cpu_s"] * 1e9 / rec["ops"]
    rec["loadavg_before"] = load1
    rec["idle_before"] = idle
    if stderr.strip():
        rec["stderr"] = tail
    return rec


# --------------------------------------------------------------------------
# Environment checks and the Go build.

def go_build(build_dir, log):
    go = shutil.which("go")
    if not go:
        log("go not found: the Go peers are skipped")
        return None
    outdir = build_dir / "bench-go"
    outdir.mkdir(parents=True, exist_ok=True)
    env = child_env({"GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0"})
    if "GOCACHE" not in os.environ and not os.access(os.path.expanduser("~"), os.W_OK):
        env["GOCACHE"] = str(outdir / "cache")
    exes = {}
    for name in GO_PROGRAMS:
        src = BENCH / "peers" / "go" / name / "main.go"
        exe = outdir / name
        r = subprocess.run([go, "build", "-o", str(exe), str(src)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            log(f"go build {src.relative_to(ROOT)} failed:\n{r.stderr.strip()}")
            continue
        exes[name] = exe
    return exes


def has_uvloop(python):
    r = subprocess.run([python, "-c", "import uvloop"], capture_output=True)
    return r.returncode == 0


def read_first(path, default=""):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def cmd_out(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(build_dir, python):
    cpu = ""
    for ln in read_first("/proc/cpuinfo").splitlines():
        if ln.startswith("model name"):
            cpu = ln.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for ln in read_first("/proc/meminfo").splitlines():
        if ln.startswith("MemTotal:"):
            mem_kib = int(ln.split()[1])
    cache = {}
    for ln in read_first(build_dir / "CMakeCache.txt").splitlines():
        for key in ("CMAKE_BUILD_TYPE", "BRAID_SWITCH", "BRAID_SANITIZE", "CMAKE_C_COMPILER"):
            if ln.startswith(key + ":"):
                cache[key] = ln.split("=", 1)[1]
    u = platform.uname()
    head = cmd_out(["git", "rev-parse", "HEAD"])
    dirty = bool(cmd_out(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "hostname": u.node,
        "kernel": f"{u.system} {u.release}",
        "arch": u.machine,
        "cpu_model": cpu,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total_mib": mem_kib // 1024,
        "os": read_first("/etc/debian_version") and "Debian " + read_first("/etc/debian_version"),
        "vm_max_map_count": read_first("/proc/sys/vm/max_map_count"),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg_at_start": read_first("/proc/loadavg"),
        "go": cmd_out(["go", "version"]),
        "python": cmd_out([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "uvloop": cmd_out([python, "-c", "import uvloop; print(uvloop.__version__)"]),
        "braid_commit": head + ("-dirty" if dirty else ""),
        "braid_build": cache,
    }


# --------------------------------------------------------------------------
# Planning: which runners each group has.

def plan(args, build_dir, go_exes, python, uvloop_ok, log):
    groups = []
    for g in GROUPS:
        if args.only and not any(o in (g["name"], g["bench"]) for o in args.only):
            continue
        sizes = g["quick_n"] if args.quick else g["n"]
        extra = g.get("quick_extra" if args.quick else "extra", [])
        runners = []
        exe = build_dir / "bench" / f"bench_{g['bench']}"
        for label, bargs in g["braid"]:
            runners.append({"label": label, "kind": "braid",
                            "cmd": [str(exe), "-n", str(sizes["braid"])] + bargs + extra,
                            "env": child_env()})
        peers = [] if args.no_peers else g["peers"]
        for peer in peers:
            if args.peers and peer not in args.peers and peer.split("-")[0] not in args.peers:
                continue
            slow = peer in g["slow"] and not args.quick
            if peer in g["slow"] and (args.no_slow or args.quick):
                log(f"[{g['name']}] {peer} skipped (slow; --no-slow)" if not args.quick else
                    f"[{g['name']}] {peer} skipped in --quick (slow)")
                continue
            if peer.startswith("go"):
                if not go_exes or g["bench"] not in go_exes:
                    continue
                cmd = [str(go_exes[g["bench"]]), "-n", str(sizes["go"])]
                if g["peer_args"]:
                    cmd += ["-mode", g["peer_args"][0]]
                cmd += [a.replace("--", "-", 1) if a.startswith("--") else a for a in extra]
                if peer == "go-nogate":
                    cmd.append("-gate=false")
                env = child_env({"GOMAXPROCS": "1"} if peer == "go-1p" else None)
            else:
                if peer == "uvloop" and not uvloop_ok:
                    continue
                cmd = [python, str(BENCH / "peers" / "py" / f"{g['bench']}.py"),
                       "-n", str(sizes["py"])]
                if g["peer_args"]:
                    cmd += ["--mode", g["peer_args"][0]]
                cmd += extra
                if peer == "uvloop":
                    cmd.append("--uvloop")
                env = child_env()
            runners.append({"label": PEER_LABEL[peer], "kind": "peer", "peer": peer,
                            "cmd": cmd, "env": env, "slow": slow})
        groups.append({**g, "runners": runners})
    return groups


# --------------------------------------------------------------------------
# Formatting.

def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r):
    if r is None:
        return "-"
    if r < 0.01:
        return f"{r:.4f}x"
    if r < 0.1:
        return f"{r:.3f}x"
    return f"{r:.2f}x"


def table(rows, header, left=1):
    """Columns before `left` are left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  " + "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                                for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header)] + [line(r) for r in rows])


# --------------------------------------------------------------------------
# The foundation targets.

SWITCH_FLOOR_NS = 5.8


def med(results, group, label, metric):
    g = results.get(group)
    if not g:
        return None
    r = g["runners"].get(label)
    if not r or not r.get("median"):
        return None
    return r["median"].get(metric)


def evaluate_targets(results):
    T = []

    def cpu_note(group, label):
        c = med(results, group, label, "cpu_ns_per_op")
        return f"CPU time: {fmt(c)} ns" if c is not None else ""
    for gname, labels in (("switch_yield", ["braid"]), ("switch_chan", ["braid"]),
                          ("spawn_churn", ["braid"]), ("spawn_live", ["braid", "braid compact"]),
                          ("sleepers_100k", ["braid", "braid compact"]),
                          ("sleepers_1m", ["braid", "braid compact"])):
        for label in labels:
            r = results.get(gname, {}).get("runners", {}).get(label)
            if r is not None and not r.get("median"):
                T.append({"target": f"{gname}, {label}", "value": "failed", "goal": "",
                          "verdict": "FAILED", "detail": (r.get("error") or "").splitlines()[0]})

    def add(name, value, goal, ok, detail=""):
        T.append({"target": name, "value": value, "goal": goal,
                  "verdict": "n/a" if ok is None else ("PASS" if ok else "MISS"),
                  "detail": detail})

    v = med(results, "ctx_switch", "braid", "ns_per_op")
    if v is not None:
        limit = 1.25 * SWITCH_FLOOR_NS
        asym = med(results, "ctx_switch", "braid, different call sites", "ns_per_op")
        y = med(results, "switch_yield", "braid", "ns_per_op")
        add("bare switch (br__ctx_switch)", f"{fmt(v)} ns",
            f"<= {limit:.2f} ns (1.25 x ~{SWITCH_FLOOR_NS} ns floor)", v <= limit,
            (f"from different call sites: {fmt(asym)} ns" if asym is not None else "") +
            (f"; task-to-task br_yield: {fmt(y)} ns" if y is not None else ""))
    v = med(results, "switch_chan", "braid", "ns_per_op")
    if v is not None:
        add("ping-pong (br_chan cap 0)", f"{fmt(v)} ns/switch", "< 30 ns", v < 30,
            cpu_note("switch_chan", "braid"))
    v = med(results, "spawn_churn", "braid", "ns_per_op")
    if v is not None:
        add("spawn churn", f"{fmt(v)} ns/task", "< 100 ns/task", v < 100,
            cpu_note("spawn_churn", "braid"))
    def vs_plain(ok):
        return "PASS" if ok else "MISS"

    go = med(results, "spawn_live", "go", "ns_per_op")
    go_plain = med(results, "spawn_live", "go no gate", "ns_per_op")
    for label in ("braid", "braid compact"):
        v = med(results, "spawn_live", label, "ns_per_op")
        if v is not None:
            add(f"spawn_live, {label}", f"{fmt(v)} ns/task",
                f"<= go ({fmt(go)} ns/task)" if go else "<= go (not measured)",
                None if go is None else v <= go,
                "" if go_plain is None else
                f"vs go no gate ({fmt(go_plain)}): {vs_plain(v <= go_plain)}")
    for group, wall_goal, need in (("sleepers_100k", 1.15, "each"), ("sleepers_1m", 2.5, "any")):
        go_rss = med(results, group, "go", "rss_mib")
        plain_rss = med(results, group, "go no gate", "rss_mib")
        oks, plain_oks = [], []
        for label in ("braid", "braid compact"):
            wall = med(results, group, label, "elapsed_s")
            rss = med(results, group, label, "rss_mib")
            if wall is None:
                continue
            ok = None if go_rss is None else (wall < wall_goal and rss < go_rss)
            oks.append(ok)
            detail = ""
            if plain_rss is not None:
                plain_oks.append(wall < wall_goal and rss < plain_rss)
                detail = f"vs go no gate ({fmt(plain_rss)} MiB): {vs_plain(plain_oks[-1])}"
            add(f"{group}, {label}", f"{wall:.3f} s, {fmt(rss)} MiB",
                f"< {wall_goal} s and RSS < go ({fmt(go_rss)} MiB)", ok, detail)
        if need == "any" and oks and None not in oks:
            add(f"{group}, at least one mode", "", "one mode meets both", any(oks),
                f"vs go no gate: {vs_plain(any(plain_oks))}" if plain_oks else "")
    return T


def evaluate_default_targets(results):
    """The default mode's targets (a user who sets no flag): each judged
    against the gated Go of the same run, with how far off it is."""
    T = []

    def add(name, value, goal, ok, far=""):
        T.append({"target": name, "value": value, "goal": goal,
                  "verdict": "n/a" if ok is None else ("PASS" if ok else "MISS"), "detail": far})

    def off(v, goal, lower=True):
        """How far v is from goal: value / goal (lower is better when lower)."""
        if v is None or not goal:
            return ""
        return f"{v / goal:.2f}x the goal"

    for group, label, goal, name in (("switch_yield", "braid", 15.0, "bare br_yield switch"),
                                      ("switch_chan", "braid", 30.0, "ping-pong"),
                                      ("spawn_churn", "braid", 100.0, "spawn+join churn")):
        v = med(results, group, label, "ns_per_op")
        if v is not None:
            le = group == "switch_yield"
            ok = v <= goal if le else v < goal
            add(f"{name}, default", f"{fmt(v)} ns", f"{'<=' if le else '<'} {goal:.0f} ns", ok,
                off(v, goal))
    v = med(results, "spawn_live", "braid", "ns_per_op")
    go = med(results, "spawn_live", "go", "ns_per_op")
    if v is not None:
        add("spawn_live 1M, default", f"{fmt(v)} ns/task", f"<= go ({fmt(go)} ns/task)",
            None if go is None else v <= go, f"{v / go:.2f}x go" if go else "")
    for group, wall_goal in (("sleepers_100k", 1.15), ("sleepers_1m", None)):
        wall = med(results, group, "braid", "elapsed_s")
        rss = med(results, group, "braid", "rss_mib")
        gwall = med(results, group, "go", "elapsed_s")
        grss = med(results, group, "go", "rss_mib")
        if wall is None or gwall is None:
            continue
        wgoal = wall_goal if wall_goal else gwall
        add(f"{group} time, default", f"{wall:.3f} s",
            f"< {wall_goal} s" if wall_goal else f"< go ({gwall:.3f} s)", wall < wgoal,
            f"{wall / wgoal:.2f}x the goal; {wall / gwall:.2f}x go")
        add(f"{group} RSS, default", f"{fmt(rss)} MiB", f"< go ({fmt(grss)} MiB)", rss < grss,
            f"{rss / grss:.2f}x go")
    return T


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="braid foundation benchmarks against Go and asyncio/uvloop",
        epilog="Groups: " + ", ".join(g["name"] for g in GROUPS))
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one run, no slow peers, no targets: a smoke test")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this workload (switch, spawn_churn, spawn_live, sleepers) "
                         "or group (switch_chan, sleepers_1m, ...); repeatable or comma-separated")
    ap.add_argument("--no-slow", action="store_true",
                    help="skip asyncio/uvloop at 1,000,000 tasks (~15-30 s per run)")
    ap.add_argument("--no-peers", action="store_true", help="run braid only")
    ap.add_argument("--peers", default="", help="comma-separated subset of go,asyncio,uvloop")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per figure, median reported (default 3; --quick: 1)")
    ap.add_argument("--build-dir", default=str(ROOT / "build"),
                    help="CMake build tree holding bench/bench_* (default: build)")
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="interpreter for the asyncio/uvloop peers")
    ap.add_argument("--out", default=None,
                    help="results file (default bench/results.json; --quick: "
                         "<build>/bench/results-quick.json; --only: <build>/bench/results-partial.json)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per process")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--idle-wait", type=float, default=10.0,
                    help="seconds to wait (at most) for 80%% idle CPUs before each run; 0: never")
    args = ap.parse_args()
    args.only = [o for item in args.only for o in item.split(",") if o]
    args.peers = [p for p in args.peers.split(",") if p]
    known = {g["name"] for g in GROUPS} | {g["bench"] for g in GROUPS}
    for o in args.only:
        if o not in known:
            ap.error(f"--only {o}: unknown; choose from {', '.join(sorted(known))}")
    runs = args.runs or (1 if args.quick else 3)
    IDLE_WAIT[0] = 0.0 if args.quick else args.idle_wait
    build_dir = Path(args.build_dir).resolve()
    # Only a full run replaces bench/results.json; partial ones go to the build tree.
    out_path = Path(args.out) if args.out else (
        build_dir / "bench" / "results-quick.json" if args.quick else
        build_dir / "bench" / "results-partial.json" if args.only else BENCH / "results.json")

    def log(msg):
        print(msg, flush=True)

    selected = [g for g in GROUPS if not args.only or any(o in (g["name"], g["bench"]) for o in args.only)]
    missing = sorted({g["bench"] for g in selected
                      if not (build_dir / "bench" / f"bench_{g['bench']}").exists()})
    if missing:
        print("run.py: braid benchmark programs not built: " +
              ", ".join(f"{build_dir}/bench/bench_{m}" for m in missing) +
              "\n  build them first: cmake -S . -B build && cmake --build build", file=sys.stderr)
        return 2

    go_exes = None
    if not args.no_peers and (not args.peers or "go" in args.peers):
        go_exes = go_build(build_dir, log)
    uvloop_ok = has_uvloop(args.python)
    if not uvloop_ok and not args.no_peers:
        log(f"uvloop not importable by {args.python}: the uvloop peer is skipped")

    groups = plan(args, build_dir, go_exes, args.python, uvloop_ok, log)
    info = machine_info(build_dir, args.python)
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"braid benchmarks  {started:%Y-%m-%d %H:%M:%S} UTC  {info['cpu_model']}, "
        f"{info['cpus_usable']} cpus, {info['kernel']}  runs={runs}"
        f"{'  (quick)' if args.quick else ''}")

    ncpu = info["cpus_usable"] or 1
    load = loadavg1()
    if load is not None and load > 0.5 * ncpu:
        log(f"warning: load average {load:.2f} on {ncpu} cpus: other work is running, "
            "wall-clock figures will be inflated (ratios within this run still hold "
            "roughly; the JSON has each run's cpu_s and load)")

    failures = []
    results = {}
    for g in groups:
        log(f"\n[{g['name']}] {g['title']}")
        recs = {r["label"]: [] for r in g["runners"]}
        errors = {}
        for i in range(runs):
            for r in g["runners"]:
                if r["label"] in errors:
                    continue
                try:
                    rec = run_program(r["cmd"], r["env"], args.timeout)
                except RunError as e:
                    errors[r["label"]] = str(e)
                    failures.append(f"{g['name']} / {r['label']}: {e}")
                    log(f"  {r['label']:<18} run {i + 1}/{runs}: FAILED: {e}")
                    continue
                note = ""
                if "peak_alive" in rec and rec["peak_alive"] != rec["n"]:
                    note = f"  CHECK FAILED: peak_alive {rec['peak_alive']} != n {rec['n']}"
                    failures.append(f"{g['name']} / {r['label']}: {note.strip()}")
                if not args.quick and rec["elapsed_s"] < 0.3:
                    note += "  (under 0.3 s: raise n)"
                if rec["proc_s"] > rec["elapsed_s"] * 1.5 + 0.5:
                    note += f"  (process took {rec['proc_s']:.2f} s)"
                recs[r["label"]].append(rec)
                vals = "  ".join(f"{fmt(rec[m])} {u}" for m, u in g["metrics"])
                if ("rss_mib", "MiB") not in g["metrics"]:
                    vals += f"  {fmt(rec['rss_mib'])} MiB"
                log(f"  {r['label']:<18} run {i + 1}/{runs}: {vals}  "
                    f"({rec['elapsed_s']:.2f} s){note}")
        gres = {"bench": g["bench"], "title": g["title"],
                "metrics": {m: u for m, u in g["metrics"]}, "runners": {}, "ratios": {}}
        for r in g["runners"]:
            rr = recs[r["label"]]
            entry = {"kind": r["kind"], "cmd": [os.path.relpath(c, ROOT) if c.startswith(str(ROOT))
                                               else c for c in r["cmd"]],
                     "env": {k: r["env"][k] for k in ("GOMAXPROCS",) if k in r["env"]},
                     "runs": rr, "error": errors.get(r["label"])}
            if rr:
                keys = [m for m, _ in g["metrics"]] + ["elapsed_s", "rss_mib", "proc_s", "cpu_s",
                                                       "cpu_ns_per_op"]
                entry["median"] = {k: statistics.median(x[k] for x in rr)
                                   for k in dict.fromkeys(keys) if all(k in x for x in rr)}
                entry["n"] = rr[0].get("n")
            gres["runners"][r["label"]] = entry
        for b in (r for r in g["runners"] if r["kind"] == "braid"):
            bm = gres["runners"][b["label"]].get("median")
            if not bm:
                continue
            for p in (r for r in g["runners"] if r["kind"] == "peer"):
                pm = gres["runners"][p["label"]].get("median")
                if pm:
                    gres["ratios"].setdefault(b["label"], {})[p["label"]] = {
                        m: (bm[m] / pm[m] if pm[m] else None) for m, _ in g["metrics"]}
        results[g["name"]] = gres

    # ---- the table
    print("\n" + "=" * 78)
    print(f"Results: median of {runs} run(s); ratio = braid / impl (below 1.0x: braid "
          "faster or smaller)")
    print("CPU columns: user+sys time of the whole process (per op), for reading figures taken on "
          "a busy machine;\nmulti-threaded peers (Go) can use more CPU than wall time.")
    for g in groups:
        gres = results[g["name"]]
        braid_labels = [r["label"] for r in g["runners"] if r["kind"] == "braid"]
        cols = [f"{m_u}" for _, m_u in g["metrics"]]
        if ("rss_mib", "MiB") not in g["metrics"]:
            cols.append("peak RSS MiB")
        cpu_key, cpu_col = (("cpu_s", "CPU s") if g["metrics"][0][0] == "elapsed_s"
                            else ("cpu_ns_per_op", f"CPU {g['metrics'][0][1]}"))
        cols.append(cpu_col)
        header = ["impl"] + cols + [f"{b} / impl" for b in braid_labels]
        rows = []
        for r in g["runners"]:
            e = gres["runners"][r["label"]]
            md = e.get("median")
            if not md:
                rows.append([r["label"], "FAILED"] + [""] * (len(header) - 2))
                continue
            row = [r["label"] + (f" (n={e['n']:,})" if e.get("n") else "")]
            row += [fmt(md[m]) for m, _ in g["metrics"]]
            if ("rss_mib", "MiB") not in g["metrics"]:
                row.append(fmt(md["rss_mib"]))
            row.append(fmt(md.get(cpu_key)))
            for b in braid_labels:
                rat = gres["ratios"].get(b, {}).get(r["label"])
                row.append(" / ".join(fmt_ratio(rat[m]) for m, _ in g["metrics"]) if rat else "")
            rows.append(row)
        print(f"\n{g['name']}: {g['title']}  [{', '.join(u for _, u in g['metrics'])}]")
        print(table(rows, header))

    targets = [] if args.quick else evaluate_targets(results)
    default_targets = [] if args.quick else evaluate_default_targets(results)
    if default_targets:
        print("\nDefault-mode targets (no flag set; against go in this run)")
        print(table([[t["target"], t["value"], t["goal"], t["verdict"], t["detail"]]
                     for t in default_targets], ["target", "measured", "goal", "", ""], left=5))
    if targets:
        print("\nFoundation targets")
        print(table([[t["target"], t["value"], t["goal"], t["verdict"], t["detail"]]
                     for t in targets], ["target", "measured", "goal", "", ""], left=5))
    loads = [rec.get("loadavg_before") for g in results.values() for r in g["runners"].values()
             for rec in r["runs"] if rec.get("loadavg_before") is not None]
    if loads and max(loads) > 0.5 * ncpu:
        print(f"\nnote: load average reached {max(loads):.2f} on {ncpu} cpus during the run: "
              "figures are noisy")
    if failures:
        print("\nFailures:")
        for f in failures:
            print("  " + f.splitlines()[0])

    doc = {
        "schema": 1,
        "date": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "machine": info,
        "options": {"quick": args.quick, "runs": runs, "only": args.only, "no_slow": args.no_slow,
                    "python": args.python},
        "ratio_definition": "braid median / peer median, per metric (below 1: braid better)",
        "groups": results,
        "targets": targets,
        "default_targets": default_targets,
        "failures": failures,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {os.path.relpath(out_path)}")
    if failures:
        return 1
    if args.strict and any(t["verdict"] == "MISS" for t in targets + default_targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
