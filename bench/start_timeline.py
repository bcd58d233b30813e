#!/usr/bin/env python3
"""Where a `zoned run --rm -- /bin/true` spends its time: a timeline of its steps.

Runs the CLI N times with ZONED_TRACE_START=1, under which each step of a start writes
"zoned-trace STEP MS" (CLOCK_MONOTONIC) to stderr (zoned.testhooks.mark): the CLI process,
and the zone's init up to its exec (the init-* steps; a foreground run's stderr is the
CLI's). This script takes its own clock reading just before it spawns the CLI and just
after the CLI has exited, so the interpreter's start and the process's end are steps too.
Reported: each step's median time since the spawn, and each phase (step to next step) as
the median of its per-run durations. With --runc, `runc run` of an OCI bundle of the same
image is timed in the same rounds (interleaved), for scale. With --before-ref REF, zoned as
of git REF runs in the same rounds too (a worktree, as bench/startup.py --before-ref makes
it), and each phase is shown before and after: what a change did, step by step (a REF
older than the marks shows its whole run only).

The init's steps run in parallel with the CLI's from the fork on: the CLI makes the
cgroups (step "cgroup") while the init makes its namespaces and mounts, and the init waits
for "cgroup" inside its "init-mounts" phase. The phases are listed in time order; the
init's are marked as such.

Needs root. Writes bench/results/start-timeline.json (or --out); everything runs under a
private state root that is removed at the end, and leftovers are checked.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

STEPS = [  # (step, who, what happens in the phase that ends at this step)
    ("main", "cli", "interpreter start (python -S, the shim) up to zoned.cli.main()"),
    ("imported", "cli", "argument parsing, the cgroup primer's start, `run`'s imports"),
    ("configured", "cli", "the config: image, OCI spec, default seccomp profile"),
    ("create", "cli", "the runtime object (state root)"),
    ("fork", "cli", "validation, state dir and lock, overlay dirs, config.json and "
                    "state.json, seccomp BPF (cached), zoned-spawn's sealed copy"),
    ("init-namespaces", "init", "fork; the init's mount, UTS, IPC and net namespaces"),
    ("cgroup", "cli", "cgroups made and limited, the init moved in"),
    ("init-mounts", "init", "overlay, /proc, /dev, /sys, waiting for the cgroup, cgroup "
                            "binds"),
    ("init-root", "init", "pivot_root, masked and read-only paths"),
    ("ready", "cli", "the init says ready (before the start was folded into create: "
                     "as zoned-spawn's sealed copy, which it exec'd first)"),
    ("created", "cli", "state.json: created (before the start was folded into create)"),
    ("started", "cli", "state.json: running; the init loads seccomp and execs /bin/true"),
    ("exited", "cli", "/bin/true runs, exits and is reaped"),
    ("removed", "cli", "removal: cgroups, overlay dirs, state dir"),
    ("exit", "cli", "flush"),
    ("end", "cli", "process exit (the kernel's teardown), seen by waitpid"),
]
PREVIOUS = {"cgroup": "fork", "init-mounts": "init-namespaces", "init-root": "init-mounts",
            "ready": "init-root"}


def run_traced(zoned: str, root: str, name: str) -> dict[str, float]:
    """One traced run: step -> ms since the spawn."""
    env = dict(os.environ, ZONED_TRACE_START="1")
    t0 = time.monotonic()
    p = subprocess.run([zoned, "--root", root, "run", "--rm", "--name", name, "--",
                        "/bin/true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env)
    t1 = time.monotonic()
    if p.returncode != 0:
        raise RuntimeError(f"zoned run failed ({p.returncode}): {p.stderr[-500:]}")
    steps = {"spawn": 0.0, "end": (t1 - t0) * 1000}
    for line in p.stderr.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "zoned-trace":
            steps[parts[1]] = float(parts[2]) - t0 * 1000
    return steps


def run_runc(runc: list[str], bundle: Path, name: str) -> float:
    t0 = time.monotonic()
    p = subprocess.run(runc + ["run", "--bundle", str(bundle), name], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t1 = time.monotonic()
    subprocess.run(runc + ["delete", "-f", name], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"runc run failed ({p.returncode}): {p.stderr[-500:]}")
    return (t1 - t0) * 1000


def phases(runs: list[dict[str, float]]) -> list[dict]:
    out = []
    order = ["spawn"] + [s for s, _, _ in STEPS]
    for i, (step, who, what) in enumerate(STEPS):
        # A step a version lacks (before-ref: "created", folded into "started" since)
        # merges into the next: its phase runs from the last step that version marks.
        prev = PREVIOUS.get(step) or next(
            (s for s in reversed(order[:i + 1]) if any(s in r for r in runs)), "spawn")
        durations = [r[step] - r[prev] for r in runs if step in r and prev in r]
        at = [r[step] for r in runs if step in r]
        if not durations:
            continue
        out.append({"step": step, "who": who, "from": prev, "what": what,
                    "at_ms": round(statistics.median(at), 2),
                    "phase_ms": round(statistics.median(durations), 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Timeline of `zoned run --rm -- /bin/true`: the "
                                "median time of each step since the CLI's spawn.")
    p.add_argument("--runs", type=int, default=30, help="traced runs (default 30)")
    p.add_argument("--zoned", default=C.DEFAULT_ZONED, help="zoned CLI (default: the venv's)")
    p.add_argument("--runc", nargs="?", const=shutil.which("runc") or "runc", default=None,
                   help="also time `runc run` in the same rounds (default binary: runc)")
    p.add_argument("--before-ref", metavar="REF",
                   help="also trace zoned as of git REF in the same rounds, phase by phase")
    p.add_argument("--out", help="JSON path (default bench/results/start-timeline.json)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (containers with cgroups and namespaces)")
    if a.runs < 1:
        p.error("--runs must be at least 1")
    tok = os.urandom(2).hex()
    root, rroot = f"/run/zoned-bench-timeline-{tok}", f"/run/runc-bench-timeline-{tok}"
    prefix = f"bench-t{tok}-"
    runc = [a.runc, "--root", rroot] if a.runc else None
    bundle = before = None
    runs: list[dict[str, float]] = []
    runs_before: list[dict[str, float]] = []
    runc_ms: list[float] = []
    try:
        if a.before_ref:
            from startup import BeforeTree

            before = BeforeTree(a.before_ref, str(Path(a.zoned).parent / "python"))
            run_traced(str(before.cli), root, f"{prefix}bwarm")
        if runc:
            bundle = C.make_bundle(["/bin/true"], readonly=False, zoned_cli=a.zoned,
                                   spec_from="zoned", runc=a.runc,
                                   prefix="zoned-bench-timeline-bundle-")
            run_runc(runc, bundle, f"{prefix}warm")
        run_traced(a.zoned, root, f"{prefix}warm")  # warm-up, not recorded
        kinds = ["zoned", "runc", "before"]
        for i in range(a.runs):  # interleaved, the first one rotated each round
            for which in kinds[i % 3:] + kinds[:i % 3]:
                if which == "zoned":
                    runs.append(run_traced(a.zoned, root, f"{prefix}{i}"))
                elif which == "runc" and runc:
                    runc_ms.append(run_runc(runc, bundle, f"{prefix}r{i}"))
                elif which == "before" and before is not None:
                    runs_before.append(run_traced(str(before.cli), root, f"{prefix}b{i}"))
    finally:
        C.remove_zones([a.zoned], root)
        if bundle is not None:
            shutil.rmtree(bundle, ignore_errors=True)
        if before is not None:
            before.close()
        time.sleep(0.2)
        left = {"zoned_state": [e for e in C.state_entries(root) if not e.startswith(".")],
                "cgroup_dirs": C.cgroup_dirs_named(prefix),
                "mounts": C.mounts_containing(root) + C.mounts_containing(rroot)}
        C.remove_root(root)
        C.rmdir_quiet(rroot)
    table = phases(runs)
    total = statistics.median(r["end"] for r in runs)
    was = {ph["step"]: ph for ph in phases(runs_before)} if runs_before else {}
    result = {"benchmark": "start-timeline",
              "description": "zoned run --rm -- /bin/true: median ms of each step since the "
                             "CLI's spawn, and of each phase",
              "environment": C.environment(runc=a.runc, zoned_cli=a.zoned),
              "parameters": {"runs": a.runs, "runc": bool(runc)},
              "phases": table, "total_ms": round(total, 2),
              "runc_ms": round(statistics.median(runc_ms), 2) if runc_ms else None,
              "before": {"ref": a.before_ref, "phases": list(was.values()),
                         "total_ms": round(statistics.median(r["end"] for r in runs_before),
                                           2)} if runs_before else None,
              "samples": [{k: round(v, 3) for k, v in r.items()} for r in runs],
              "leftovers": left}
    out = C.write_json("start-timeline", result, a.out)
    rows = [[ph["step"], ph["who"], f"{ph['at_ms']:.1f}", f"{ph['phase_ms']:.1f}"]
            + ([f"{was[ph['step']]['phase_ms']:.1f}" if ph["step"] in was else "-"]
               if runs_before else [])
            + [f"{ph['from']}: {ph['what']}"] for ph in table]
    print(f"\nzoned run --rm -- /bin/true, {a.runs} runs: median {total:.1f} ms"
          + (f"; runc run in the same rounds: {result['runc_ms']:.1f} ms" if runc_ms else "")
          + (f"; {a.before_ref}: {result['before']['total_ms']:.1f} ms" if runs_before else ""))
    print(C.table(rows, ["step", "in", "at ms", "phase ms"]
                  + ([f"{a.before_ref} phase ms"] if runs_before else [])
                  + ["phase: from, what"]))
    ok = not any(left.values())
    print("leftovers: none" if ok else f"LEFTOVERS: {left}")
    print(f"JSON: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
