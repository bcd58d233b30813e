"""Measurements of the VM backend, for bench/ and the zone-vs-VM comparison.

boot_latency: from launch() to the first byte of the command's output (what a user waits
for), and to QEMU's exit. idle_memory: an idle VM's QEMU RSS/PSS split into guest RAM
touched, the guest kernel's mapping (host page cache: shared by all VMs) and the rest (TCG's
translation buffer, QEMU itself), plus CPU use while idle.
Run: python -m zoned.vm.bench [--image busybox] [--runs 5] [--memory 128] [--tb-size 32]
"""
from __future__ import annotations

import os
import select
import statistics
import tempfile
import time
from typing import Any

from zoned.vm import machine
from zoned.vm.config import MachineSpec


def boot_latency(runs: int = 5, **spec: Any) -> dict[str, float]:
    """Median seconds from launch() to the command's output and to QEMU's exit."""
    first, done = [], []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="zoned-vm-bench.")
        r, w = os.pipe()
        try:
            t0 = time.monotonic()
            p = machine.launch(MachineSpec(argv=["echo", "hi"], **spec), d, stdio=(None, w, None))
            os.close(w)
            w = -1
            if not select.select([r], [], [], 120)[0] or os.read(r, 10) != b"hi\n":
                raise RuntimeError(f"no output from the VM: {machine.read_ctl(d)}")
            first.append(time.monotonic() - t0)
            p.wait(120)
            done.append(time.monotonic() - t0)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
            machine.destroy(d)
    return {"to_output_s": statistics.median(first), "to_exit_s": statistics.median(done),
            "runs": runs}


def qemu_memory(pid: int, memory_mib: int, vmlinux: str) -> dict[str, int]:
    """RSS and PSS of a QEMU in MiB, with the guest RAM and kernel-image mappings apart."""
    out = {"rss": 0, "pss": 0, "guest_ram_rss": 0, "kernel_image_rss": 0}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's header line
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                path = fields[5] if len(fields) > 5 else ""
                kind = ("guest_ram_rss" if not path and hi - lo == memory_mib << 20 else
                        "kernel_image_rss" if path == vmlinux else None)
            elif fields[0] in ("Rss:", "Pss:"):
                kib = int(fields[1])
                out[fields[0][:-1].lower()] += kib
                if kind and fields[0] == "Rss:":
                    out[kind] += kib
    return {k: v >> 10 for k, v in out.items()}


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])


def idle_memory(settle: float = 10.0, sample: float = 5.0, **spec: Any) -> dict[str, Any]:
    """An idle VM (sleep) after settle seconds: QEMU memory (MiB) and CPU % while idle."""
    from zoned.vm.assets import kernel

    s = MachineSpec(argv=["sleep", "3600"], **spec)
    d = tempfile.mkdtemp(prefix="zoned-vm-bench.")
    try:
        p = machine.launch(s, d)
        machine.wait_ready(d, 120, p)
        time.sleep(settle)
        mem = qemu_memory(p.pid, s.memory_mib, kernel().vmlinux)
        t0, c0 = time.monotonic(), _cpu_ticks(p.pid)
        time.sleep(sample)
        cpu = (_cpu_ticks(p.pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        mem["other_rss"] = mem["rss"] - mem["guest_ram_rss"] - mem["kernel_image_rss"]
        return {**mem, "idle_cpu_percent": round(cpu * 100, 1), "memory_mib": s.memory_mib,
                "tb_size_mib": s.tb_size_mib}
    finally:
        machine.destroy(d)


def main() -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default="busybox")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", type=int, default=128)
    ap.add_argument("--tb-size", type=int, default=32)
    ap.add_argument("--accel", default="auto")
    a = ap.parse_args()
    spec = {"image": a.image, "memory_mib": a.memory, "tb_size_mib": a.tb_size,
            "accel": a.accel}
    print(json.dumps({"boot": boot_latency(a.runs, **spec), "idle": idle_memory(**spec)},
                     indent=1))


if __name__ == "__main__":
    main()
