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
                                         TARGETS_FROZEN_MS, aggregate, host_facts,
                                         load_twohost, run_migrations, targets)
from zoned.bench.plots import twohost_plot as plot  # noqa: E402
from zoned.bench.report import table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="zoned migrate between two netns 'hosts': frozen time, total time, "
                    "pings lost, TCP connection kept, memory intact; stop-and-copy vs live.",
        epilog="Results: a table on stdout, JSON in bench/results/migrate.json, a plot in "
               "bench/results/migrate.png (needs matplotlib: python3-matplotlib).")
    p.add_argument("--sizes", default="10,100,1024",
                   help="memory sizes in MiB, comma-separated (default 10,100,1024)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--rounds", type=int, default=1, help="runs per size and mode (median)")
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
    volume = load_twohost().memtouch_volume()  # builds memtouch (cached) before the clock starts

    res = run_migrations(sizes, modes, a.rounds, a.pin_bridge_mac, volume,
                         lambda msg: print(msg, file=sys.stderr))
    runs, pinned, server_log = res["runs"], res["bridge_mac_pinned"], res["server_log"]
    relocation_port, leftovers, elapsed = res["relocation_port"], res["leftovers"], res["elapsed_s"]

    agg = aggregate(runs, sizes)
    agg = [x for x in agg if x["mode"] in modes]
    tg = targets(agg, runs)
    result = {
        "benchmark": "migrate",
        "description": "zoned migrate of a memtouch container between two netns 'hosts' "
                       "(tests/twohost.py) over zoned:// (TLS), by memory size and mode",
        "environment": env,
        "parameters": {"sizes_mib": sizes, "modes": modes, "rounds": a.rounds,
                       "transport": "zoned:// (relocation-server on B, TLS 1.3)",
                       "relocation_port": relocation_port,
                       "bridge_mac_pinned": pinned or False, "workload":
                       "tests/progs/memtouch.c SIZE 5000 (no dirtying)",
                       "ping_interval_s": PING_INTERVAL,
                       "client_interval_s": CLIENT_INTERVAL, "statistic": "median over rounds "
                       "that migrated; booleans over all rounds"},
        "targets_frozen_ms_live": {str(k): v for k, v in TARGETS_FROZEN_MS.items()},
        "results": agg,
        "targets": tg,
        "runs": runs,
        "relocation_server_log": server_log[-5000:],
        "leftovers": leftovers,
        "elapsed_s": round(elapsed, 1),
    }
    out = C.write_json("migrate", result, a.out)
    plotted = plot(out, a.plot) if a.plot else "no plot (--plot '')"

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = [[x["size_mib"], x["mode"], f(x["frozen_ms"], ".0f"), f(x["total_s"], ".2f"),
             f(x["moved_mib"], ".1f"), f(x["pings_lost"], ".0f"),
             f(x["longest_client_gap_ms"], ".0f"), x["tcp_kept"], x["memory_ok"],
             "" if not x["errors"] else f"{len(x['errors'])} failed: {x['errors'][0][:90]}"]
            for x in agg]
    print(f"\nmigrate: A -> B over zoned://, {a.rounds} round(s), median "
          f"({env['date']}, kernel {env['kernel']}, {env['cpu_count']} CPUs, {env.get('criu')},"
          f" one VM: both hosts share it, the wire is a veth pair)")
    print(table(rows, ["size MiB", "mode", "frozen ms", "total s", "MiB moved",
                         "pings lost", "longest client gap ms", "TCP kept", "memory ok",
                         "errors"]))
    prow = []
    for x in agg:
        ph = x["phases_s"]
        if ph:
            prow.append([x["size_mib"], x["mode"]] + [f(ph.get(k), ".2f") for k in (
                "connect", "check destination", "freeze+dump", "send images",
                "restore+commit", "post-copy", "release source")])
    if prow:
        print("\nwhere the time goes (s, from the migrate command's progress lines):")
        print(table(prow, ["size MiB", "mode", "connect", "check", "freeze+dump",
                             "send images", "restore+commit", "post-copy", "release"],
                      left_last=False))
    for k, t in tg.items():
        if "target_ms" in t:
            val = "-" if t["frozen_ms"] is None else f"{t['frozen_ms']:.0f} ms"
            verdict = "NOT MEASURED" if t["met"] is None else "MET" if t["met"] else "NOT MET"
            print(f"target {k}: {val} vs < {t['target_ms']:.0f} ms -> {verdict}")
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
