"""Migration: the same workload moved by each backend's own mechanism, by memory size:
CRIU (`zoned migrate`, stop-and-copy and --live post-copy) for zones, QEMU live migration
for VMs. The zone part is migrate_twohost's measurement (two netns "hosts" of this
machine, a TCP client counting over one connection, a ping, memory verified after the
move). VMs (`zoned migrate` of a VM is QEMU's migration: precopy with --live): the same
sizes in guest RAM (random bytes in its tmpfs layer, checked by md5 after the move), a TCP
counter from busybox nc in the guest, the same ping."""
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
    res: dict = {"description": "zoned migrate A->B over zoned:// between two netns hosts "
                 "of this machine (wire = veth), a TCP counter client, ping -i 0.01; zones: "
                 "memtouch SIZE MiB (CRIU); VMs: SIZE MiB of random bytes in guest RAM, "
                 "md5-checked after the move (QEMU's migration, precopy when live)",
                 "sizes_mib": sizes, "modes": MODES, "backends": {}, "not_measured": {}}
    if "vm" not in active:
        res["not_measured"]["vm"] = "the vm backend is unavailable or not selected"
    if "zone" not in active:
        res["not_measured"]["zone"] = "the zone backend is not selected"
    kinds = [k for k in ("zone", "vm") if k in active]
    if not kinds:
        return res
    missing = [t for t in ("nft", "gcc", "ping", "nsenter", "criu") if not shutil.which(t)]
    if missing:
        for k in kinds:
            res["not_measured"][k] = f"{', '.join(missing)} missing"
        return res
    try:
        volume = M.load_twohost().memtouch_volume()
    except Exception as e:  # noqa: BLE001 - no harness, no migration figures: say why
        for k in kinds:
            res["not_measured"][k] = f"two-host harness unavailable: {e}"
        return res
    for kind in kinds:
        progress(f"migrate: {kind}, sizes {sizes} MiB, {'/'.join(MODES)}")
        out = M.run_migrations(sizes, MODES, 1, True, volume, progress, ctx.zoned, kind)
        res["backends"][kind] = {
            "results": M.aggregate(out["runs"], sizes),
            "runs": out["runs"],
            "leftovers": {"ok": not out["leftovers"], "found": out["leftovers"]},
            "elapsed_s": out["elapsed_s"],
        }
    return res
