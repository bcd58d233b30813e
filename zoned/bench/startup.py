"""Start-up: boot-to-command latency per backend, side by side in interleaved rounds.

Two figures per backend: `/bin/true` run to completion (create, start, wait, remove: the
whole command as a user types it) and the time until the first line of `echo ready`
arrives on the caller's stdout. One warm-up of each is not recorded (a backend whose
warm-up fails is reported with its error and left out). Then rounds: each round runs every
backend once, the starting backend rotated each round, so drift on the host (page cache,
other load) hits all of them alike. Slow backends (VMs under TCG) may be given fewer rounds
(`caps`): they then take part in the first rounds only."""
from __future__ import annotations

from collections.abc import Callable

from zoned.bench.backends import Backend
from zoned.bench.runcmd import BenchFailure
from zoned.bench.stats import summary

METRICS = ("true", "first_output")


def measure(backends: list[Backend], rounds: int, caps: dict[str, int] | None = None,
            progress: Callable[[str], None] = lambda s: None) -> dict:
    caps = caps or {}
    samples = {b.name: {m: [] for m in METRICS} for b in backends}
    failures: dict[str, list[str]] = {b.name: [] for b in backends}
    disabled: dict[str, str] = {}
    for b in backends:
        try:
            b.run_true()
            b.first_output()
        except BenchFailure as e:
            disabled[b.name] = str(e)
            progress(f"startup: {b.name} warm-up FAILED: {e}")
    active = [b for b in backends if b.name not in disabled]
    for r in range(rounds):
        k = r % len(active) if active else 0
        for b in active[k:] + active[:k]:
            if r >= caps.get(b.name, rounds):
                continue
            for m, fn in (("true", b.run_true), ("first_output", b.first_output)):
                try:
                    samples[b.name][m].append(fn() * 1000)
                except BenchFailure as e:
                    failures[b.name].append(str(e))
        progress(f"startup: round {r + 1}/{rounds}")
    return {
        "description": "ms; true = `run /bin/true` to completion incl. removal; "
                       "first_output = until the first line of `echo ready` arrives",
        "rounds": rounds,
        "rounds_per_backend": {b.name: min(rounds, caps.get(b.name, rounds)) for b in active},
        "warmup_runs": 1,
        "samples_ms": samples,
        "stats_ms": {name: {m: summary(xs) for m, xs in per.items()}
                     for name, per in samples.items()},
        "failures": {k: v[:20] for k, v in failures.items() if v},
        "disabled": disabled,
    }
