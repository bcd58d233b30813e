#!/usr/bin/env python3
"""zoned migrate between two netns "hosts": frozen time, total time, pings lost, TCP kept,
memory intact, stop-and-copy vs live. What is measured and how: the docstring of
zoned/bench/migrate_twohost.py, where the measuring code lives (`zoned bench migrate` runs
it too); this script is its command line, table, JSON and plot."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoned.bench import common as C  # noqa: E402
from zoned.bench.migrate_twohost import (CLIENT_INTERVAL, MODES, PING_INTERVAL,  # noqa: E402
                                         PING_INTERVAL_SLOW, TARGETS_FROZEN_MS, aggregate,
                                         host_facts, load_twohost, run_migrations, targets)
from zoned.bench.plots import twohost_plot as plot  # noqa: E402
from zoned.bench.report import table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="zoned migrate between two netns 'hosts': frozen time, total time, "
                    "pings lost (10 ms and 100 ms interval), TCP connection kept, memory "
                    "intact, and where the frozen time goes step by step on each side; "
                    "stop-and-copy vs live; optionally side by side with another zoned "
                    "(--before), interleaved round by round.",
        epilog="Results: a table on stdout, JSON in bench/results/migrate.json, a plot in "
               "bench/results/migrate.png (needs matplotlib: python3-matplotlib).")
    p.add_argument("--sizes", default="10,100,1024",
                   help="memory sizes in MiB, comma-separated (default 10,100,1024)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--rounds", type=int, default=1, help="runs per size and mode (median)")
    p.add_argument("--before", metavar="ZONED",
                   help="also measure this zoned CLI (another tree's .venv/bin/zoned), "
                        "alternating with this tree's round by round")
    p.add_argument("--no-pin-bridge-mac", dest="pin_bridge_mac", action="store_false",
                   help="leave the hosts' zoned bridges' MACs unpinned (see pin_bridge_macs: "
                        "then a container coming or going on B can stall A's connect to B "
                        "for ~7 s or make it time out)")
    p.add_argument("--out", help="JSON path (default bench/results/migrate.json)")
    p.add_argument("--plot", default=str(C.RESULTS / "migrate.png"),
                   help="PNG path (default bench/results/migrate.png; '' for none)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces, containers, CRIU)")
    try:
        sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes {a.sizes!r}: expected MiB numbers like 10,100,1024")
    if not sizes or min(sizes) < 1 or a.rounds < 1:
        p.error("--sizes must be >= 1 MiB and --rounds >= 1")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: a subset of {','.join(MODES)}")
    if a.before and not os.access(a.before, os.X_OK):
        p.error(f"--before {a.before}: not an executable")
    for tool in ("nft", "gcc", "ping", "nsenter"):
        if not shutil.which(tool):
            p.error(f"{tool} is not installed")

    from zoned.images.errors import ImageNotFound
    from zoned.images.store import ImageStore

    store = ImageStore()
    try:
        store.get("busybox")
    except ImageNotFound:
        store.build("busybox")
    env = host_facts()
    if a.before:
        env["before_zoned"] = a.before
        from zoned.bench.facts import cli_tree_head

        env["before_git_head"] = cli_tree_head(a.before)
    volume = load_twohost().memtouch_volume()  # builds memtouch (cached) before the clock starts

    variants = [("after", None)] + ([("before", a.before)] if a.before else [])
    runs: dict[str, list] = {v: [] for v, _ in variants}
    extra: dict[str, dict] = {}
    leftovers: list[str] = []
    elapsed = 0.0
    for rnd in range(a.rounds):
        order = variants if rnd % 2 == 0 else variants[::-1]  # interleaved
        for label, cli in order:
            print(f"round {rnd + 1}/{a.rounds}: {label}", file=sys.stderr)
            res = run_migrations(sizes, modes, 1, a.pin_bridge_mac, volume,
                                 lambda msg: print(msg, file=sys.stderr), cli)
            for r in res["runs"]:
                r["round"] = rnd
            runs[label] += res["runs"]
            leftovers += res["leftovers"]
            elapsed += res["elapsed_s"]
            extra[label] = {k: res[k] for k in ("bridge_mac_pinned", "relocation_port")}
            extra[label]["server_log"] = res["server_log"][-5000:]

    agg = {label: [x for x in aggregate(runs[label], sizes) if x["mode"] in modes]
           for label in runs}
    tg = targets(agg["after"], runs["after"])
    result = {
        "benchmark": "migrate",
        "description": "zoned migrate of a memtouch container between two netns 'hosts' "
                       "(tests/twohost.py) over zoned:// (TLS), by memory size and mode"
                       + ("; this tree ('after') and --before's zoned, interleaved"
                          if a.before else ""),
        "environment": env,
        "parameters": {"sizes_mib": sizes, "modes": modes, "rounds": a.rounds,
                       "transport": "zoned:// (relocation-server on B, TLS 1.3)",
                       "relocation_port": extra["after"]["relocation_port"],
                       "bridge_mac_pinned": extra["after"]["bridge_mac_pinned"] or False,
                       "workload": "tests/progs/memtouch.c SIZE 5000 (no dirtying)",
                       "ping_interval_s": PING_INTERVAL,
                       "ping_interval_slow_s": PING_INTERVAL_SLOW,
                       "client_interval_s": CLIENT_INTERVAL, "statistic": "median over rounds "
                       "that migrated; booleans over all rounds",
                       "frozen_ms": "from zoned's network lock (a bridged zone: its links "
                                    "held down just before CRIU starts) or else CRIU's "
                                    "seizing the tasks (its dump.log) to the destination's "
                                    "commit answer; frozen_from_dump_start_ms counts from "
                                    "the dump command's start, as before issue 18 (CRIU's "
                                    "start-up, the zone still running, included)"},
        "targets_frozen_ms_live": {str(k): v for k, v in TARGETS_FROZEN_MS.items()},
        "results": agg["after"],
        "targets": tg,
        "runs": runs["after"],
        "relocation_server_log": extra["after"]["server_log"],
        "leftovers": leftovers,
        "elapsed_s": round(elapsed, 1),
    }
    if a.before:
        result["results_before"] = agg["before"]
        result["targets_before"] = targets(agg["before"], runs["before"])
        result["runs_before"] = runs["before"]
    out = C.write_json("migrate", result, a.out)
    plotted = plot(out, a.plot) if a.plot else "no plot (--plot '')"

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(f"\nmigrate: A -> B over zoned://, {a.rounds} round(s), median "
          f"({env['date']}, kernel {env['kernel']}, {env['cpu_count']} CPUs, {env.get('criu')},"
          f" load {env.get('loadavg_1_5_15')}, one VM: both hosts share it, the wire is a veth "
          "pair)")
    rows = []
    for x in agg["after"]:
        b = next((y for y in agg.get("before", []) if (y["size_mib"], y["mode"])
                  == (x["size_mib"], x["mode"])), None)
        for label, y in (("before", b), ("after", x)) if b else (("", x),):
            # Before issue 18 zoned measured frozen time from the dump's start only.
            seized, started = (None, y["frozen_ms"]) if label == "before" else \
                (y["frozen_ms"], y.get("frozen_from_dump_start_ms"))
            rows.append([y["size_mib"], y["mode"], label, f(seized, ".0f"),
                         f(started, ".0f"), f(y["total_s"], ".2f"),
                         f(y["moved_mib"], ".1f"), f(y["pings_lost"], ".0f"),
                         f(y.get("pings_lost_100ms"), ".0f"),
                         f(y["longest_client_gap_ms"], ".0f"), y["tcp_kept"], y["memory_ok"],
                         "" if not y["errors"] else
                         f"{len(y['errors'])} failed: {y['errors'][0][:90]}"])
    print(table(rows, ["size MiB", "mode", "zoned", "frozen ms", "frozen from dump start ms",
                       "total s", "MiB moved", "lost @10ms", "lost @100ms",
                       "longest client gap ms", "TCP kept", "memory ok", "errors"]))
    print("\n(frozen: from zoned's network lock, or else CRIU's seizing the tasks, to the "
          "destination's commit answer; 'from dump start' adds CRIU's start-up, the zone "
          "still running: the only measure the older zoned of the 'before' rows reports)")
    for x in agg["after"]:
        tl = x.get("timeline_ms") or {}
        if not tl:
            continue
        print(f"\nwhere the time goes, {x['size_mib']} MiB {x['mode']} (ms, median):")
        for side, label in (("destination_before", "destination, before the freeze"),
                            ("source", "source, from the dump command's start"),
                            ("destination", "destination, in the freeze"),
                            ("destination_commit", "destination, at the commit")):
            steps_ = tl.get(side) or {}
            if steps_:
                print(f"  {label}: " + ", ".join(f"{k} {f(v, '.0f')}"
                                                  for k, v in steps_.items()))
    for k, t in tg.items():
        if "target_ms" in t:
            val = "-" if t["frozen_ms"] is None else f"{t['frozen_ms']:.0f} ms"
            verdict = "NOT MEASURED" if t["met"] is None else "MET" if t["met"] else "NOT MET"
            print(f"target {k}: {val} vs < {t['target_ms']:.0f} ms -> {verdict}")
        elif "pings_lost_100ms" in t:
            print(f"target {k}: {f(t['pings_lost_100ms'], '.0f')} lost -> "
                  f"{'MET' if t['met'] else 'NOT MET'}")
        else:
            print(f"target {k}: connections lost {t['lost_by_mode']} in {t['runs']} runs -> "
                  f"{'MET' if t['met'] else 'NOT MET'}")
    print("leftovers: none (netns, links, cgroups, mounts, dirs, processes)" if not leftovers
          else f"LEFTOVERS: {leftovers}")
    print(f"plot: {plotted}")
    print(f"JSON: {out}")
    return 0 if not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
