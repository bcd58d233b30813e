#!/usr/bin/env python3
"""What keeping a detached zone's exit code costs: `zoned run -d` wall time and the host
memory of the zone's one extra process (zoned-logger), for two zoned CLIs side by side
(default: /work/main's, whose logger is no parent and keeps no code, and this
checkout's, whose logger is the init's parent), interleaved run by run.

Per run and CLI: `run -d --name X busybox sleep 1000` (timed), the PSS and private dirty
pages of X's logger (/proc/PID/smaps_rollup), `kill X` + `wait X` (the code it prints), `rm X`.

Run as root:  .venv/bin/python bench/detached.py [--runs 20] [--other /work/main/.venv/bin/zoned]
Writes bench/results/detached.json. Each CLI uses a state root of its own, removed after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, Private_Dirty) of a process in KiB. The dirty pages are what each zone's
    logger costs on its own; its clean pages are the static binary's text, shared by
    every logger (how much of it is resident depends on the page cache's folios: a
    freshly built binary maps whole)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return fields["Pss"], fields.get("Private_Dirty", 0)


def one(zoned: str, root: str, name: str) -> dict:
    cmd = [zoned, "--root", root]
    t = time.perf_counter()
    p = subprocess.run([*cmd, "run", "-d", "--name", name, "busybox", "sleep", "1000"],
                       capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{zoned}: run -d failed: {p.stderr.strip()}")
    st = json.loads(subprocess.run([*cmd, "inspect", "--raw", name], capture_output=True,
                                   text=True).stdout)["state"]
    pss, dirty = rollup(st["zoned"]["logger"]["pid"])
    subprocess.run([*cmd, "kill", name], capture_output=True)
    code = subprocess.run([*cmd, "wait", name], capture_output=True, text=True).stdout.strip()
    subprocess.run([*cmd, "rm", "-f", name], capture_output=True)
    return {"run_d_ms": took * 1000, "logger_pss_kib": pss, "logger_dirty_kib": dirty,
            "wait": code}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--other", default="/work/main/.venv/bin/zoned",
                    help="the CLI to compare with (default: main's)")
    ap.add_argument("--out", default=str(C.RESULTS / "detached.json"))
    a = ap.parse_args()
    clis = {"before (--other)": a.other, "after (this checkout)": C.DEFAULT_ZONED}
    roots = {label: f"/run/zoned-bench-det-{i}-{os.getpid()}" for i, label in enumerate(clis)}
    samples: dict[str, list[dict]] = {label: [] for label in clis}
    load = os.getloadavg()
    try:
        for i in range(a.runs):
            for label, zoned in (clis.items() if i % 2 == 0 else reversed(clis.items())):
                samples[label].append(one(zoned, roots[label], f"bdet{i}"))
    finally:
        for label, root in roots.items():
            subprocess.run([clis[label], "--root", root, "rm", "-af"], capture_output=True)
            subprocess.run([clis[label], "--root", root, "gc"], capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
    result = {"runs": a.runs, "loadavg_before": load, "loadavg_after": os.getloadavg(),
              "clis": clis, "results": {}}
    rows = []
    for label, ss in samples.items():
        r = {k: C.summary([s[k] for s in ss]) for k in ("run_d_ms", "logger_pss_kib",
                                                       "logger_dirty_kib")}
        r["wait_prints"] = sorted({s["wait"] for s in ss})
        result["results"][label] = r
        rows.append([label, f"{r['run_d_ms']['median']:.1f}", f"{r['run_d_ms']['p95']:.1f}",
                     f"{r['logger_pss_kib']['median']:.0f}",
                     f"{r['logger_dirty_kib']['median']:.0f}", ",".join(r["wait_prints"])])
    print(C.table(rows, ["CLI", "run -d median ms", "p95 ms", "logger PSS KiB",
                         "logger dirty KiB", "wait prints"]))
    print(f"load average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}")
    C.write_json("detached", result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
