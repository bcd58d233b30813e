"""Migration: the same workload moved by each backend's own mechanism, by memory size:
CRIU (`zoned migrate`, stop-and-copy and --live post-copy) for zones, QEMU live migration
for VMs. The zone part is migrate_twohost's measurement (two netns "hosts" of this
machine, a TCP client counting over one connection, a ping, memory verified after the
move). VMs (`zoned migrate` of a VM is QEMU's migration): not measured yet, because the
workload comes in through a -v volume, which a VM cannot migrate with; reported so."""
from __future__ import annotations

import shutil
from collections.abc import Callable

from zoned.bench.backends import Context

SIZES_QUICK = [16, 64]
SIZES_FULL = [16, 128, 512]
MODES = ["stop-and-copy", "live"]


def measure(ctx: Context, active: list[str], quick: bool,
            progress: Callable[[str], None]) -> dict:
    from zoned.bench import migrate_twohost as M

    sizes = SIZES_QUICK if quick else SIZES_FULL
    res: dict = {"description": "zones: zoned migrate A->B over zoned:// between two netns "
                 "hosts of this machine (wire = veth); memtouch SIZE MiB, a TCP counter "
                 "client, ping -i 0.01",
                 "sizes_mib": sizes, "modes": MODES, "backends": {}, "not_measured": {}}
    if "vm" in active:
        res["not_measured"]["vm"] = ("not written yet: the bench's workload (memtouch) comes "
                                     "in through a -v volume, which a VM cannot migrate with; "
                                     "VMs need a workload and counter server from the image")
    else:
        res["not_measured"]["vm"] = "the vm backend is unavailable"
    if "zone" not in active:
        res["not_measured"]["zone"] = "the zone backend is not selected"
        return res
    missing = [t for t in ("nft", "gcc", "ping", "nsenter", "criu") if not shutil.which(t)]
    if missing:
        res["not_measured"]["zone"] = f"{', '.join(missing)} missing"
        return res
    try:
        volume = M.load_twohost().memtouch_volume()
    except Exception as e:  # noqa: BLE001 - no harness, no migration figures: say why
        res["not_measured"]["zone"] = f"two-host harness unavailable: {e}"
        return res
    progress(f"migrate: zone, sizes {sizes} MiB, {'/'.join(MODES)}")
    out = M.run_migrations(sizes, MODES, 1, True, volume, progress, ctx.zoned)
    res["backends"]["zone"] = {
        "results": M.aggregate(out["runs"], sizes),
        "runs": out["runs"],
        "leftovers": {"ok": not out["leftovers"], "found": out["leftovers"]},
        "elapsed_s": out["elapsed_s"],
    }
    return res
