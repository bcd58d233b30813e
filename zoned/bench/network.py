"""Network: TCP throughput and round-trip latency zone<->zone and host->zone on one zoned
bridge, against host loopback, measured side by side (netpaths). VM<->VM and zone<->VM
need servers inside the guest and are reported as not measured until the VM backend's
guest image has them."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from zoned.bench.backends import Context
from zoned.bench.netpaths import NetFailure, Paths


def measure(ctx: Context, active: list[str], quick: bool,
            progress: Callable[[str], None]) -> dict:
    res: dict = {"paths": {}, "not_measured": {}}
    if "zone" not in active:
        res["not_measured"]["zone"] = "the zone backend is not selected"
    if "vm" in active:
        res["not_measured"]["vm<->vm, zone<->vm"] = (
            "needs an iperf3 and round-trip server inside the guest; not built yet")
    else:
        res["not_measured"]["vm<->vm, zone<->vm"] = "the vm backend is unavailable"
    missing = [t for t in ("iperf3", "nsenter", "taskset") if not shutil.which(t)]
    if missing or "zone" not in active:
        if missing:
            res["not_measured"]["all"] = f"{', '.join(missing)} missing"
        return res
    seconds, repeat, rtts = (2, 2, 1500) if quick else (4, 3, 6000)
    res["method"] = {"iperf3_seconds": seconds, "iperf3_repeat": repeat, "rtts": rtts}
    root = f"/run/zoned-zbench-{ctx.token}-net"
    env = dict(os.environ)  # ZONED_SUBNET_POOL, where set, picks the subnet
    p = Paths(ctx.zoned, root, env, seconds=seconds, repeat=repeat, rtts=rtts)
    net = f"zb{ctx.token}"
    try:
        progress(f"network: bridge {net} and two zones")
        p.z("network", "create", net)
        a = p.container(f"zb-{ctx.token}-net-a", "--network", net)
        b = p.container(f"zb-{ctx.token}-net-b", "--network", net)
        paths = [("loopback", None, None, "127.0.0.1", 5201, 5301),
                 ("zone<->zone bridge", a, b, a["ip"], 5201, 5301),
                 ("host->zone bridge", a, None, a["ip"], 5201, 5301)]
        res["paths"] = p.measure(paths, progress)
        lo = res["paths"]["loopback"]["throughput"]["gbit_s"]["median"]
        for r in res["paths"].values():
            r["throughput"]["vs_loopback"] = r["throughput"]["gbit_s"]["median"] / lo
    except NetFailure as e:
        res["error"] = str(e)
        progress(f"network: FAILED: {e}")
    finally:
        res["leftovers"] = p.cleanup()
    return res
