#!/usr/bin/env python3
"""Start rate of N detached idle zones against runc's, interleaved start by start.

bench/density.py measures each engine in a phase of its own (all of zoned's starts, then
all of runc's), which its memory figures need. Its start rates, though, move with whatever
the host does meanwhile: three density runs within 25 minutes gave runc 22.7, 26.6 and
30.3 starts/s, and zoned's rate against runc's came out 0.85x to 1.11x for the same code.
Here the engines take turns: for i = 1..N each starts its i-th container, in a new random
order each time (fixed seed), so both see the same host, and the same number of containers
already running (the kernel's per-start costs grow with it: bench/README, finding 16). The
containers of every engine stay until the end: by round i the host runs i of each (2N at
the end with two engines, 3N with three), so the last tenth is slower than it would be
with N alone.

Engines: the zoned CLI (`zoned --root R run -d --name X [--memory-cgroup shared] -- sleep
100000`, as density.py's), runc (`runc run -d` on one shared read-only bundle, as
density.py's) and, with --other-zoned CLI, a second zoned CLI (another checkout: a before
and after). Reported per engine: the median, p95 and mean start latency, its rate (starts
per second of its own start time: 1000 / mean ms), the mean of the first and the last 10%
of starts and their ratio, the median of the per-round differences against runc (paired),
and the time to remove all. Everything is removed at the end and leftovers are checked.

Run as root:  .venv/bin/python bench/start_rate.py [--count 1000] [--other-zoned CLI]
Writes bench/results/start-rate-<N>.json (or --out).
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import density as D  # noqa: E402
from zoned.bench import scale  # noqa: E402

SEED = 16


def summary(ms: list[float], runc: list[float] | None) -> dict:
    """The figures of one engine's start latencies (ms, in start order)."""
    tenth = max(1, len(ms) // 10)
    first, last = statistics.fmean(ms[:tenth]), statistics.fmean(ms[-tenth:])
    mean = statistics.fmean(ms)
    out = {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
           "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 2),
           "mean_ms": round(mean, 2), "rate_per_s": round(1000 / mean, 2),
           "first_10pct_mean_ms": round(first, 2), "last_10pct_mean_ms": round(last, 2),
           "last_over_first": round(last / first, 3)}
    if runc is not None:
        n = min(len(ms), len(runc))
        out["paired_minus_runc_median_ms"] = round(
            statistics.median(a - b for a, b in zip(ms[:n], runc[:n], strict=True)), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Start N detached idle containers per engine, "
                                "the engines taking turns start by start (zoned CLI, runc, "
                                "optionally a second zoned CLI); latency and rate per engine.")
    p.add_argument("--count", type=int, default=1000, help="containers per engine (1000)")
    p.add_argument("--memory-cgroup", choices=("own", "shared"), default="shared",
                   help="zoned's --memory-cgroup (default shared, as the 1,000-zone runs)")
    p.add_argument("--other-zoned", help="a second zoned CLI in the same rounds (e.g. the "
                   "shim of another checkout, as startup.py --before-ref makes one)")
    p.add_argument("--other-label", default="zoned (other)", help="its label")
    p.add_argument("--zoned", default=C.DEFAULT_ZONED, help="zoned CLI (default: the venv's)")
    p.add_argument("--runc-bin", dest="runc_bin", default=shutil.which("runc") or "runc")
    p.add_argument("--out", help="JSON path (default bench/results/start-rate-<N>.json)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root")
    if a.count < 10:
        p.error("--count must be at least 10 (first and last 10%)")
    # what density.py's engines read of their options
    a.workload, a.network, a.subnet, a.zoned_rootfs, a.rm_batch = \
        ["sleep", "100000"], False, None, False, 50
    a.root_prefix = "/run/zoned-bench-rate-"

    def on_term(signum, frame):  # SIGTERM, SIGHUP unwind like Ctrl-C: through the clean-up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    env = C.environment(runc=a.runc_bin, zoned_cli=a.zoned)
    tok = os.urandom(2).hex()
    sysctls = scale.Sysctls()
    bundle = None
    engines: dict[str, D.Engine] = {}
    lat: dict[str, list[float]] = {}
    removal: dict[str, dict] = {}
    failure = None
    notes: list[dict] = []
    t0 = time.monotonic()
    try:
        notes = scale.raise_limits(sysctls, a.count * (3 if a.other_zoned else 2), False)
        bundle = C.make_bundle(a.workload, readonly=True, zoned_cli=a.zoned,
                               prefix="zoned-bench-rate-bundle-")
        engines["zoned"] = D.Zoned(a, tok, bundle)
        engines["runc"] = D.Runc(a, tok, bundle)
        if a.other_zoned:
            b = copy.copy(a)
            b.zoned = a.other_zoned
            other = D.Zoned(b, tok + "o", bundle)
            other.label = a.other_label
            engines["other"] = other
        lat = {k: [] for k in engines}
        rng = random.Random(SEED)
        for i in range(a.count):
            order = list(engines)
            rng.shuffle(order)
            for k in order:
                t = time.perf_counter()
                err = engines[k].start(i)
                lat[k].append((time.perf_counter() - t) * 1e3)
                if err:
                    failure = {"engine": k, "index": i, "error": err}
                    raise RuntimeError(f"{k} start {i}: {err}")
            if (i + 1) % (a.count // 10) == 0:
                print(f"  {i + 1}/{a.count}: " + ", ".join(
                    f"{k} {statistics.median(v[-50:]):.1f} ms" for k, v in lat.items()),
                    file=sys.stderr, flush=True)
        for k, eng in engines.items():
            t = time.perf_counter()
            _times, errors = eng.remove_all()
            removal[k] = {"s": round(time.perf_counter() - t, 2), "errors": errors}
    except RuntimeError as e:
        print(f"stopped: {e}", file=sys.stderr)
    finally:
        for eng in engines.values():
            eng.cleanup()
        if bundle is not None:
            shutil.rmtree(bundle, ignore_errors=True)
        sysctls.restore()
    left = {"cgroup_dirs": C.cgroup_dirs_named(f"bench-d{tok}"),
            "state_roots": [e.state_root() for e in engines.values()
                            if os.path.exists(e.state_root())]}
    results = {k: {"label": engines[k].label,
                   **summary(v, None if k == "runc" else lat.get("runc")),
                   "samples_ms": [round(x, 2) for x in v]}
               for k, v in lat.items() if v}
    for k, r in removal.items():
        results[k]["remove_s"], results[k]["remove_errors"] = r["s"], r["errors"]
    runc_rate = results.get("runc", {}).get("rate_per_s")
    targets = {}
    if runc_rate and "zoned" in results:
        z = results["zoned"]
        targets = {"rate_ge_runc": {"zoned": z["rate_per_s"], "runc": runc_rate,
                                    "met": z["rate_per_s"] >= runc_rate},
                   "no_slowdown_first_to_last_10pct": {"last_over_first": z["last_over_first"],
                                                       "met": z["last_over_first"] <= 1.0}}
    data = {"benchmark": "start_rate", "description": __doc__.split("\n\n")[1],
            "environment": env, "parameters": {**vars(a), "seed": SEED,
                                               "interleaved": "engines in a new random "
                                               "order for each index"},
            "limits": sysctls.log + notes,
            "results": results, "targets": targets, "failure": failure, "leftovers": left,
            "elapsed_s": round(time.monotonic() - t0, 1)}
    out = C.write_json(f"start-rate-{a.count}", data, a.out)
    print(f"\nstart rate: {a.count} detached `sleep 100000` per engine, interleaved "
          f"({env['date']}, kernel {env['kernel']}, cgroup {env['cgroup_mode']}, "
          f"{env['cpu_count']} CPUs)")
    cols = ("median_ms", "p95_ms", "mean_ms", "rate_per_s", "first_10pct_mean_ms",
            "last_10pct_mean_ms", "last_over_first", "paired_minus_runc_median_ms",
            "remove_s")
    print(f"{'engine':50s}" + "".join(f"{c[:18]:>19s}" for c in cols))
    for r in results.values():
        print(f"{r['label'][:50]:50s}" + "".join(f"{str(r.get(c, '-')):>19s}" for c in cols))
    for name, t in targets.items():
        print(f"target {name}: {'MET' if t['met'] else 'NOT MET'} ({t})")
    print("leftovers:", "none" if not any(left.values()) else left)
    print(f"JSON: {out}")
    return 1 if failure or any(left.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
