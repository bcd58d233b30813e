"""Network: TCP throughput and round-trip latency zone<->zone and host->zone on one zoned
bridge, against host loopback, measured side by side (netpaths: iperf3 and a Python echo).
With the vm backend, a second table measures zone->zone, host->zone, zone->VM and host->VM
by one method a guest can serve too (busybox nc sink and echo, Python clients). VM->VM
needs a measuring client in the guest: not measured."""
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
        res["not_measured"]["vm->vm"] = "needs a measuring client inside the guest"
    else:
        res["not_measured"]["zone->vm, host->vm"] = "the vm backend is unavailable"
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
        if "vm" in active:
            progress("network: a zone and a VM serving busybox nc")
            nz = p.nc_container(f"zb-{ctx.token}-net-nz", "--network", net)
            nv = p.nc_container(f"zb-{ctx.token}-net-nv", "--network", net, "--backend",
                                "vm")
            res["nc_method"] = ("server: busybox nc (a sink; an echo through cat), the same "
                                "in the zone and the VM; client: Python, one TCP stream / "
                                "1-byte round trips")
            res["nc_paths"] = p.measure_nc([("zone->zone", b, nz["ip"]),
                                            ("host->zone", None, nz["ip"]),
                                            ("zone->vm", b, nv["ip"]),
                                            ("host->vm", None, nv["ip"])], progress)
    except NetFailure as e:
        res["error"] = str(e)
        progress(f"network: FAILED: {e}")
    finally:
        res["leftovers"] = p.cleanup()
    return res
