#!/usr/bin/env python3
"""zoned.Pool: what a zone made ahead costs while it waits, and how fast runs go back to
back, with its init waiting as the C init (zoned-spawn's sealed copy: the usual) or as
the Python one (ZONED_INIT=python: what every pool did before session 24, and what a
rootless pool's zones still do).

Per round and init, in a fresh python (a worker: the pool's makers inherit its env):
  Pool(size=S) made; one run; then, once S zones wait, the PSS and private dirty memory
  of each waiting init (/proc/PID/smaps_rollup: the init is the caller's child); then N
  `pool.run(["true"])` back to back, timed (the makers make the next zones meanwhile, on
  the other CPU: so the rate is the makers' as much as the caller's). The inits alternate
  by round (the host's load drifts).

Reported per init: the median over rounds of the per-run median latency, runs per second,
and the waiting init's PSS and private dirty memory (KiB). Needs root. Writes
bench/results/pool.json (or --out); each round's state root is removed after it and
leftovers are checked.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

WORKER = r"""
import json, os, re, sys, time
import zoned
root, size, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def waiting(pool):  # our children but the makers: the inits waiting (cloned as ours)
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid():
                    continue
        except (OSError, ValueError, IndexError):
            continue
        if int(pid) not in pool.maker_pids:
            out.append(int(pid))
    return out

with zoned.Pool(root=root, size=size) as pool:
    assert pool.run(["true"]).returncode == 0
    deadline = time.monotonic() + 60
    while len(waiting(pool)) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # (their set-up done: "ready" sent)
    mem = []
    for pid in waiting(pool):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
        get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1))
        mem.append({"pss_kib": get("Pss"), "private_dirty_kib": get("Private_Dirty")})
    lat = []
    t0 = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        assert pool.run(["true"]).returncode == 0
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
print(json.dumps({"latency_ms": lat, "per_second": runs / total, "waiting": mem}))
"""


def one_round(init: str, size: int, runs: int) -> dict:
    root = tempfile.mkdtemp(prefix="zoned-bench-pool-", dir="/run")
    env = {k: v for k, v in os.environ.items() if k != "ZONED_INIT"}
    if init == "python":
        env["ZONED_INIT"] = "python"
    try:
        p = subprocess.run([sys.executable, "-c", WORKER, root, str(size), str(runs)],
                           capture_output=True, text=True, timeout=600, env=env,
                           cwd=str(C.REPO))
        if p.returncode != 0:
            raise SystemExit(f"pool round ({init}) failed:\n{p.stderr[-2000:]}")
        return json.loads(p.stdout.splitlines()[-1])
    finally:
        C.remove_root(root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds per init (alternating)")
    ap.add_argument("--runs", type=int, default=100, help="back-to-back runs per round")
    ap.add_argument("--size", type=int, default=2, help="the pool's size")
    ap.add_argument("--out", help="JSON path (default bench/results/pool.json)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    inits = ("c", "python")
    rounds: dict[str, list[dict]] = {i: [] for i in inits}
    for r in range(args.rounds):
        for init in inits if r % 2 == 0 else inits[::-1]:
            rounds[init].append(one_round(init, args.size, args.runs))
            print(f"  round {r + 1}/{args.rounds} {init}", file=sys.stderr)
    stats = {}
    for init, rs in rounds.items():
        waiting = [m for r in rs for m in r["waiting"]]
        stats[init] = {
            "run_latency_ms": C.summary([statistics.median(r["latency_ms"]) for r in rs]),
            "runs_per_second": C.summary([r["per_second"] for r in rs]),
            "waiting_init_pss_kib": C.summary([m["pss_kib"] for m in waiting]),
            "waiting_init_private_dirty_kib": C.summary([m["private_dirty_kib"]
                                                         for m in waiting]),
        }
    rows = [[init, f"{s['run_latency_ms']['median']:.2f}",
             f"{s['runs_per_second']['median']:.0f}",
             f"{s['waiting_init_pss_kib']['median']:.0f}",
             f"{s['waiting_init_private_dirty_kib']['median']:.0f}"]
            for init, s in stats.items()]
    print(C.table(rows, ["init", "run ms (median)", "runs/s", "waiting PSS KiB",
                         "private dirty KiB"]))
    leftovers = C.cgroup_dirs_named("zoned-bench-pool-", anywhere=True) + \
        C.mounts_containing("zoned-bench-pool-")
    print(f"leftovers: {leftovers or 'none'}")
    out = C.write_json("pool", {
        "benchmark": "pool", "description": __doc__, "environment": C.environment(),
        "parameters": vars(args), "stats": stats, "rounds": rounds,
        "leftovers": leftovers}, args.out)
    print(f"JSON: {out}")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
