#!/usr/bin/env python3
"""Host memory cost of zone monitoring (zoned-monitor, csrc/monitor.c), per zone, at N
zones (default 100 and 1,000).

Each zone started from a zone file has one zoned-monitor: two halves (the monitor, a child
subreaper that is the parent of the zone's init, and its keeper, which takes over if the
monitor is SIGKILLed), both static C idling in poll(). What one costs the host does not
depend on the zone, so the zones here are stand-ins: the boot worker the monitor runs is
a small Python stub that forks `sleep 100000` (the "init"), reports its pid on fd 3 as
`zoned zone-boot` does, and exits; the hook is /bin/true. That lets 1,000 monitors run on a
small host. With --real N, N real busybox zones are started from zone files instead
(`zoned start`), and their monitors and log writers are measured the same way.

Measured, for N monitors:
  pss        the sum of PSS (/proc/PID/smaps_rollup) of both halves of every monitor / N:
             their own pages, with the static binary's text shared among all of them;
  uss        Private_Clean + Private_Dirty of both halves / N (what killing one frees);
  kernel     the /proc/meminfo deltas (Slab, KernelStack, PageTables) of starting N
             monitors with their stand-in inits, minus those of starting N bare `sleep`s
             (the inits alone), / N: the task structs, stacks, page tables, sockets and
             signalfds of the two monitor processes. meminfo is host-wide, so other work on
             the host moves it: the baseline's spread is reported as noise.
  total      pss + kernel: the host overhead per idle zone that monitoring adds (the
             issue's target: < 1 MiB per idle zone including the monitor).

Run as root with the venv's Python:  .venv/bin/python bench/monitor.py [--counts 100,1000]
Writes bench/results/monitor.json. Everything started is killed and removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoned.linux.files import read_to_eof

REPO = Path(__file__).resolve().parent.parent
MONITOR = REPO / "zoned" / "libexec" / "zoned-monitor"
STUB = ("import os,socket\n"
        "p=os.fork()\n"
        "if p==0:\n"
        "    os.execv('/bin/sleep',['sleep','100000'])\n"
        "socket.socket(fileno=3).send(b'ok %d' % p)\n")
KERNEL_KEYS = ("Slab", "KernelStack", "PageTables")


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def kernel_kib() -> int:
    m = meminfo()
    return sum(m[k] for k in KERNEL_KEYS)


def smaps(pid: int) -> tuple[int, int]:
    """(PSS, USS) in KiB."""
    pss = uss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "Pss":
                pss = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                uss += int(rest.split()[0])
    except OSError:
        pass
    return pss, uss


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def settle_kernel(samples: int = 5) -> tuple[float, float]:
    """Mean and spread of the kernel figure over a few samples."""
    vals = []
    for _ in range(samples):
        vals.append(kernel_kib())
        time.sleep(0.2)
    return sum(vals) / len(vals), max(vals) - min(vals)


def start_sleeps(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["sleep", "100000"]) for _ in range(n)]


def start_monitors(n: int, work: Path) -> list[int]:
    """N monitors with stand-in zones; the keepers' pids (each the monitor's parent)."""
    keepers = []
    for i in range(n):
        d = work / f"z{i}"
        d.mkdir()
        r, w = os.pipe()
        argv = [str(MONITOR), str(d), str(w), sys.executable, "-S", "-c", STUB, "--",
                "/bin/true"]
        proc = subprocess.Popen(argv, pass_fds=(w,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        os.close(w)
        report = read_to_eof(r, 100)
        os.close(r)
        if not report.startswith(b"ok "):
            raise SystemExit(f"monitor {i} did not boot its stand-in: {report!r}")
        keepers.append(proc.pid)
    return keepers


def kill_tree(keepers: list[int]) -> None:
    for k in keepers:
        for m in children(k):
            for c in children(m):
                try:
                    os.kill(c, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.kill(m, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for k in keepers:
        try:
            os.waitpid(k, 0)
        except ChildProcessError:
            pass


def measure_stub(n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="zmg-bench-monitor-"))
    sleeps: list[subprocess.Popen] = []
    keepers: list[int] = []
    try:
        base, noise = settle_kernel()
        sleeps = start_sleeps(n)
        with_sleeps, _ = settle_kernel()
        for p in sleeps:
            p.kill()
            p.wait()
        sleeps = []
        base2, noise2 = settle_kernel()
        t0 = time.monotonic()
        keepers = start_monitors(n, work)
        start_s = time.monotonic() - t0
        time.sleep(1)
        with_monitors, _ = settle_kernel()
        pss = uss = 0
        procs = 0
        for k in keepers:
            for pid in (k, *children(k)):
                a, b = smaps(pid)
                pss, uss, procs = pss + a, uss + b, procs + 1
        kernel = ((with_monitors - base2) - (with_sleeps - base)) / n
        return {"zones": n, "monitor_processes": procs, "start_s": round(start_s, 2),
                "pss_kib": round(pss / n, 1), "uss_kib": round(uss / n, 1),
                "kernel_kib": round(kernel, 1),
                "total_kib": round(pss / n + max(kernel, 0), 1),
                "noise_kib_per_zone": round(max(noise, noise2) / n, 2)}
    finally:
        for p in sleeps:
            p.kill()
            p.wait()
        kill_tree(keepers)
        shutil.rmtree(work, ignore_errors=True)


def measure_real(n: int) -> dict:
    """N real busybox zones from zone files: PSS of their monitors and log writers."""
    zoned = str(Path(sys.executable).parent / "zoned")
    root = tempfile.mkdtemp(prefix="zoned-bench-monitor-", dir="/run")
    zdir = Path(tempfile.mkdtemp(prefix="zmg-bench-zones-"))
    env = {**os.environ, "ZONED_ZONE_DIR": str(zdir)}
    names = [f"zmgb{i:04d}" for i in range(n)]
    try:
        for name in names:
            (zdir / f"{name}.yaml").write_text(f"name: {name}\nimage: busybox\n"
                                               "command: sleep 100000\nmemory: 16\n")
            subprocess.run([zoned, "--root", root, "start", name], env=env, check=True,
                           capture_output=True)
        time.sleep(1)
        rows = json.loads(subprocess.run([zoned, "--root", root, "list", "--format",
                                          "json"], env=env, check=True,
                                         capture_output=True).stdout)
        mon = logger = 0
        for r in rows:
            rec = json.loads((Path(root) / ".zones" / r["name"] / "record.json").read_text())
            for pid in (rec["monitor"]["pid"], rec["monitor"]["keeper"]):
                mon += smaps(pid)[0]
            st = json.loads((Path(root) / r["name"] / "state.json").read_text())
            logger += smaps(st["zoned"]["logger"]["pid"])[0]
        return {"zones": n, "monitor_pss_kib": round(mon / n, 1),
                "logger_pss_kib": round(logger / n, 1)}
    finally:
        subprocess.run([zoned, "--root", root, "shutdown", "--all", "-t", "1"], env=env,
                       capture_output=True)
        for name in names:
            subprocess.run([zoned, "--root", root, "undefine", name], env=env,
                           capture_output=True)
        subprocess.run([zoned, "--root", root, "gc"], capture_output=True)
        shutil.rmtree(zdir, ignore_errors=True)
        try:
            os.rmdir(root)
        except OSError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="100,1000", help="zone counts (stand-in zones)")
    ap.add_argument("--real", type=int, default=0, help="also N real zones (zoned start)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "monitor.json"))
    args = ap.parse_args()
    if not MONITOR.exists():
        raise SystemExit(f"{MONITOR} is missing: make setup")
    results = {"stand_in": [], "real": None}
    print(f"{'zones':>6} {'PSS KiB':>9} {'USS KiB':>9} {'kernel KiB':>11} {'total KiB':>10}"
          f" {'noise KiB':>10} {'start s':>8}")
    for n in (int(c) for c in args.counts.split(",")):
        r = measure_stub(n)
        results["stand_in"].append(r)
        print(f"{n:>6} {r['pss_kib']:>9} {r['uss_kib']:>9} {r['kernel_kib']:>11} "
              f"{r['total_kib']:>10} {r['noise_kib_per_zone']:>10} {r['start_s']:>8}")
    if args.real:
        results["real"] = measure_real(args.real)
        print("real zones:", results["real"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
