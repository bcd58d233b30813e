#!/usr/bin/env python3
"""Network paths: TCP throughput and round-trip latency, side by side in one run.

Paths (each measured the same way, server and client in the network namespaces named):
  loopback           host -> host over 127.0.0.1: the reference
  bridge c->c        container -> container on one NAT network (veth, bridge, veth)
  bridge host->c     host -> container's address (bridge + veth)
  routed c->c        container -> container on a routed network (veth, host routing,
                     proxy ARP, veth)
  routed host->c     host -> container's address (a /32 route through its veth)
  nat published      host -> 127.0.0.1:PORT, DNAT'ed to the container (nftables,
                     route_localnet and masquerade on the way)
  bridge c->c mtu    the bridge path again on a network made with --mtu 65520 (unless
                     --no-mtu-variant)
  ... (nf off)       with --bridge-nf-off, on a host whose br_netfilter is on: loopback and
                     bridge c->c again with net.bridge.bridge-nf-call-iptables=0 for a moment

How (zoned/bench/netpaths.py, shared with `zoned bench network`). Containers are busybox `sleep`s that hold a network namespace; the measuring programs
are host binaries run inside a container's namespace with `nsenter --net=/proc/PID/ns/net`
(only the network namespace: the path measured is exactly the container's). Throughput:
iperf3 (Debian's), one TCP stream for --seconds, --repeat times, median of the receiver's
rate. Round trip: a Python client sends 1 byte and waits for the 1-byte answer over one TCP
connection (TCP_NODELAY), --rtts times in all; median and p95 in microseconds. Client and
server of the round trip are pinned to CPU 0 (on different CPUs the numbers swing 10x with
the idle states of a VM's vCPUs); the Python overhead is the same on every path, so compare
the columns, not the absolute numbers. The paths are measured round-robin, the starting
path rotated every round, so other load on the host touches all of them alike.

Also measured: the time networking adds to a container's start-up, `zoned run --rm --network
N -- true` against `--network none` (and with -p), --runs each, round-robin.

Everything lives under a private state root (/run/zoned-bench-net-*), networks zbn-* with
subnets zoned picks from 10.213.240.0/20; removed at the end, leftovers checked. Results:
bench/results/network.json (or --out). Needs root, iperf3 and nsenter.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from zoned.bench.netpaths import Paths  # noqa: E402

class Bench(Paths):
    """The paths' containers, servers and clients (zoned.bench.netpaths), plus the time
    networking adds to a container's start-up."""

    def __init__(self, args):
        root = tempfile.mkdtemp(prefix="zoned-bench-net-", dir="/run")
        super().__init__(args.zoned, root, dict(os.environ, ZONED_SUBNET_POOL="10.213.240.0/20"),
                         seconds=args.seconds, repeat=args.repeat, rtts=args.rtts)
        self.args = args

    def attach_time(self, net: str) -> dict:
        variants = {"none": ["--network", "none"], net: ["--network", net],
                    f"{net} -p": ["--network", net, "-p", "18999:80"]}
        times = {k: [] for k in variants}
        for a in variants.values():  # warm-up
            self.z("run", "--rm", *a, "--", "true")
        keys = list(variants)
        for i in range(self.args.runs):
            for k in keys[i % len(keys):] + keys[:i % len(keys)]:
                t = time.perf_counter()
                self.z("run", "--rm", *variants[k], "--", "true")
                times[k].append((time.perf_counter() - t) * 1000)
        out = {k: C.summary(v) for k, v in times.items()}
        base = out["none"]["median"]
        for k in out:
            out[k]["added_ms"] = out[k]["median"] - base
        return out

    def procs_reset(self) -> None:
        """Stop the servers (a new measure() starts its own)."""
        self.stop_servers()

    def cleanup(self) -> dict:
        leftovers = super().cleanup()
        veths = subprocess.run(["ip", "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True).stdout
        leftovers["veths"] = [ln.split(":")[1].strip() for ln in veths.splitlines()
                              if ": zv" in ln]
        leftovers["nft_tables"] = subprocess.run(["nft", "list", "tables"],
                                                 capture_output=True, text=True).stdout.split()
        return leftovers


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoned", default=C.DEFAULT_ZONED)
    ap.add_argument("--seconds", type=int, default=4, help="iperf3 run length")
    ap.add_argument("--repeat", type=int, default=3, help="iperf3 runs per path")
    ap.add_argument("--rtts", type=int, default=5000, help="round trips per path")
    ap.add_argument("--runs", type=int, default=15, help="start-up runs per variant")
    ap.add_argument("--no-mtu-variant", dest="mtu_variant", action="store_false")
    ap.add_argument("--bridge-nf-off", action="store_true",
                    help="if the host has br_netfilter on (bridge-nf-call-iptables=1), also "
                         "measure loopback and bridge c->c with it off for a moment (a "
                         "host-wide setting: it is put back right after)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    for tool in ("iperf3", "nsenter", "nft"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make setup installs it)")
    b = Bench(args)
    results: dict = {}
    try:
        b.z("network", "create", "zbn-nat")
        b.z("network", "create", "zbn-routed", "--mode", "routed")
        a1 = b.container("bn-a1", "--network", "zbn-nat")
        a2 = b.container("bn-a2", "--network", "zbn-nat")
        r1 = b.container("bn-r1", "--network", "zbn-routed")
        r2 = b.container("bn-r2", "--network", "zbn-routed")
        p1 = b.container("bn-p1", "--network", "zbn-nat", "-p", "15201:5201", "-p",
                         "15301:5301")
        paths = [  # label, server, client, address, iperf3 port, round-trip port
            ("loopback", None, None, "127.0.0.1", 5201, 5301),
            ("bridge c->c", a1, a2, a1["ip"], 5201, 5301),
            ("bridge host->c", a1, None, a1["ip"], 5201, 5301),
            ("routed c->c", r1, r2, r1["ip"], 5201, 5301),
            ("routed host->c", r1, None, r1["ip"], 5201, 5301),
            ("nat published", p1, None, "127.0.0.1", 15201, 15301),
        ]
        if args.mtu_variant:
            b.z("network", "create", "zbn-jumbo", "--mtu", "65520")
            j1 = b.container("bn-j1", "--network", "zbn-jumbo")
            j2 = b.container("bn-j2", "--network", "zbn-jumbo")
            paths.append(("bridge c->c mtu 65520", j1, j2, j1["ip"], 5201, 5301))
        results = b.measure(paths)
        nf = _read("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if args.bridge_nf_off and nf == "1":
            # The host's br_netfilter (not zoned's: zoned needs none) sends every bridged
            # IPv4 frame through netfilter. Measure the bridge once more without it,
            # briefly, and put the host setting back.
            try:
                _write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0")
                b.procs_reset()
                extra = b.measure([("loopback (nf off)", None, None, "127.0.0.1", 5201, 5301),
                                   ("bridge c->c (nf off)", a1, a2, a1["ip"], 5201, 5301)])
            finally:
                _write("/proc/sys/net/bridge/bridge-nf-call-iptables", nf)
            results.update(extra)
        print("  attach time ...", file=sys.stderr, flush=True)
        attach = b.attach_time("zbn-nat")
    finally:
        leftovers = b.cleanup()
    lo = results["loopback"]["throughput"]["gbit_s"]["median"]
    rows = []
    for label, r in results.items():
        g = r["throughput"]["gbit_s"]["median"]
        ref = lo
        if label.endswith("(nf off)"):
            ref = results["loopback (nf off)"]["throughput"]["gbit_s"]["median"]
        r["throughput"]["vs_loopback"] = g / ref
        rows.append([label, f"{g:.2f}", f"{100 * g / ref:.0f}%",
                     f"{r['rtt']['us']['median']:.1f}", f"{r['rtt']['us']['p95']:.1f}"])
    print(C.table(rows, ["path", "Gbit/s", "vs lo", "RTT median us", "RTT p95 us"]))
    print()
    print(C.table([[k, f"{v['median']:.1f}", f"{v['p95']:.1f}", f"{v['added_ms']:+.1f}"]
                   for k, v in attach.items()],
                  ["zoned run --rm ... true", "median ms", "p95 ms", "added ms"]))
    bridge = results["bridge c->c"]["throughput"]["vs_loopback"]
    target = {"bridge_vs_loopback": bridge, "target": 0.8, "met": bridge >= 0.8}
    print(f"\nbridge c->c throughput = {100 * bridge:.0f}% of loopback (target >= 80%: "
          f"{'met' if target['met'] else 'NOT met'})")
    print(f"leftovers: {leftovers}")
    out = C.write_json("network", {
        "environment": C.environment(zoned_cli=args.zoned),
        "method": {"seconds": args.seconds, "repeat": args.repeat, "rtts": args.rtts,
                   "runs": args.runs, "iperf3": C.first_line(["iperf3", "--version"])},
        "bridge_nf_call_iptables": _read("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "paths": results, "attach_ms": attach, "target": target, "leftovers": leftovers,
    }, args.out)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
