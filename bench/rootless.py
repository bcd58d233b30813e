#!/usr/bin/env python3
"""A rootless `zoned run` beside root's, in one run: what an ordinary user pays for zones.

What is timed, interleaved round by round (each round in a new random order):
  root            `zoned --root R run --rm -- true` as root (a private state root)
  rootless        the same command as an ordinary user made for this run (useradd, with a
                  subordinate uid/gid range: newuidmap/newgidmap map its zones), its own
                  image store and runtime dir, no cgroup delegated (as on this hybrid host)
  rootless-single the same as a second user without a subordinate range (its zones map
                  only its own ids, written by zoned itself)
  setpriv-floor   `setpriv --reuid U -- true`: what the switch to the user costs each
                  rootless command here (the launcher, not zoned)
Each user builds the busybox image first (`zoned image build busybox`, not timed), and
each variant runs 3 times before the timed rounds. Reported: median, p95, min and the
ratio to root's median; bench/results/rootless.json (or --out). The users, their homes,
ranges and state are removed at the end, and what a user's state dir still holds is
reported as leftovers. Needs root, useradd and (for the range) uidmap.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from zoned.bench.users import TempUser  # noqa: E402

NOTES = {
    "root": "zoned run --rm -- true as root (private state root)",
    "rootless": "the same as a user with a subordinate range (newuidmap/newgidmap)",
    "rootless-single": "the same as a user without one (its own ids only)",
    "setpriv-floor": "setpriv --reuid U -- true: the switch to the user, not zoned",
}


def _leftovers(user: TempUser, zoned: str) -> list[str]:
    """What the user's state still holds after its `zoned gc` (its dot files aside)."""
    user.run(zoned, "gc")
    p = user.run("sh", "-c", "ls -A /tmp/zoned-$(id -u) ~/.local/share/zoned/containers "
                             "2>/dev/null")
    return [n for n in p.stdout.split() if n and not n.startswith(".") and not n.endswith(":")]


def _timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, cwd="/", env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--zoned", default=C.DEFAULT_ZONED)
    ap.add_argument("--out", help="JSON (default bench/results/rootless.json)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/rootless.py needs root (it makes the users)")
    if not os.access("/usr/bin/newuidmap", os.X_OK):
        sys.exit("newuidmap is missing (apt-get install uidmap: make setup does)")
    root = tempfile.mkdtemp(prefix="zoned-bench-rootless-", dir="/run")
    users = {"rootless": TempUser(True, "zbr"), "rootless-single": TempUser(False, "zbr")}
    samples: dict[str, list[float]] = {v: [] for v in NOTES}
    leftovers: dict[str, list[str]] = {}
    try:
        for u in users.values():
            p = u.run(a.zoned, "image", "build", "busybox")
            if p.returncode != 0:
                sys.exit(f"image build as {u.name}: {p.stderr.strip()[-300:]}")
        fns = {"root": lambda: _timed([a.zoned, "--root", root, "run", "--rm", "--", "true"]),
               "setpriv-floor": lambda: _timed(users["rootless"].argv("true"),
                                               users["rootless"].env())}
        for name, u in users.items():
            fns[name] = lambda u=u: _timed(u.argv(a.zoned, "run", "--rm", "--", "true"),
                                           u.env())
        for v in NOTES:  # warm-up
            for _ in range(3):
                fns[v]()
        order = random.Random(29)
        for _ in range(a.runs):
            for v in order.sample(list(NOTES), len(NOTES)):
                samples[v].append(fns[v]())
    finally:
        for name, u in users.items():
            leftovers[name] = _leftovers(u, a.zoned)
            u.remove()
        subprocess.run([a.zoned, "--root", root, "gc"], capture_output=True)
        leftovers["root"] = C.state_entries(root)
        C.remove_root(root)
    stats = {v: C.summary([s * 1000 for s in samples[v]]) for v in NOTES}
    base = stats["root"]["median"]
    rows = [[v, f"{s['median']:.1f}", f"{s['p95']:.1f}", f"{s['min']:.1f}",
             f"{s['median'] / base:.2f}x", NOTES[v]] for v, s in stats.items()]
    print(f"rootless: `zoned run --rm -- true`, {a.runs} interleaved rounds")
    print(C.table(rows, ["variant", "median ms", "p95 ms", "min ms", "vs root", "notes"]))
    clean = not any(leftovers.values())
    print("leftovers: none" if clean else f"leftovers: {leftovers}")
    out = C.write_json("rootless", {
        "benchmark": "rootless", "environment": C.environment(zoned_cli=a.zoned),
        "parameters": {"runs": a.runs}, "notes": NOTES, "stats_ms": stats,
        "samples_ms": {v: [s * 1000 for s in samples[v]] for v in NOTES},
        "leftovers": leftovers}, a.out)
    print(f"JSON: {out}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
