#!/usr/bin/env python3
"""Do VMs end when their process does? N micro-VMs, P at a time, each with a busy NIC at
its end: does QEMU exit once the guest has reported its exit, and how soon.

Each VM (zoned.vm.machine, TCG or KVM as `auto` picks) has a virtio-net NIC on a host tap
of its own and runs `ping -c 1 HOST; echo hello | nc -l -p 7777`: the host connects, reads
the line and closes, so the guest exits while its NIC has just been busy -- the case where
Debian 6.1's device shutdown could spin in virtio-net's NAPI for good (bench/README
finding 17). Per VM: seconds to "ready", whether the exchange worked, ms from the guest's
"exit N" line in its ctl file to QEMU gone, and, for a VM still running --hang-after
seconds after that line (or not "ready" 120 s after its start), what it got to: ctl,
console tail, QMP run state, the vCPU's RIP and each virtio device's status (DRIVER_OK
still set: the guest did not reset it). Such a VM is killed.

--vminit PATH boots another zoned-vminit (an older build) for an A/B of the exit path.

Run as root:  .venv/bin/python bench/vm_exits.py [--count 300] [--parallel 3]
Writes bench/results/vm-exits.json (or --out). Taps are zvmx<K>, addresses come from
$ZONED_SUBNET_POOL's (default 10.181.0.0/16) .240-.247 /24s; everything made is removed.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from zoned.errors import ZonedError  # noqa: E402
from zoned.vm import assets, machine  # noqa: E402
from zoned.vm.config import MachineSpec, Nic  # noqa: E402

TAP_PREFIX = "zvmx"
ALIAS = "zoned-bench-vm-exits"


def subnet_prefix() -> str:
    pool = os.environ.get("ZONED_SUBNET_POOL", "10.181.0.0/16")
    return ".".join(pool.split("/")[0].split(".")[:2])


def evidence(vmdir: str) -> dict:
    """What a VM that did not end got to: ctl, console tail, QMP state, virtio statuses."""
    from zoned.vm.qmp import QMP

    out: dict = {"ctl": machine.read_ctl(vmdir)}
    try:
        with open(machine.VMPaths(vmdir).console, errors="replace") as f:
            out["console"] = f.read()[-1500:]
    except OSError as e:
        out["console"] = f"({e.strerror})"
    try:
        with QMP(vmdir, timeout=5) as q:
            out["run_state"] = q.execute("query-status")["status"]
            regs = q.execute("human-monitor-command", **{"command-line": "info registers"})
            out["rip"] = [w for w in regs.split() if w.startswith("RIP=")]
            out["devices"] = {
                d["name"]: q.execute("x-query-virtio-status", path=d["path"])["status"]["statuses"]
                for d in q.execute("x-query-virtio")}
    except Exception as e:  # noqa: BLE001 (evidence is best effort: QEMU may be gone)
        out["qmp_error"] = str(e)
    return out


def one_vm(slot: int, hang_after: float) -> dict:
    """Boots one VM on tap zvmx<slot>, talks to it, waits for QEMU; always cleans up."""
    from zoned.network.netlink import Netlink
    from pyroute2 import IPRoute

    tap, prefix = f"{TAP_PREFIX}{slot}", subnet_prefix()
    host_ip, guest_ip = f"{prefix}.{240 + slot}.1", f"{prefix}.{240 + slot}.2"
    vmdir = tempfile.mkdtemp(prefix="zoned-bench-vmx.")
    rec: dict = {"slot": slot}
    p = None
    with Netlink() as nl:
        idx = nl.create_tap(tap, alias=ALIAS)
    try:
        with IPRoute() as ipr:
            ipr.link("set", index=idx, state="up")
            ipr.addr("add", index=idx, address=host_ip, prefixlen=24)
        spec = MachineSpec(image="busybox", argv=[
            "sh", "-c", f"ping -c 1 -W 10 {host_ip} >/dev/null || exit 9; "
            "echo hello-from-vm | nc -l -p 7777"],
            nics=[Nic(tap, f"52:54:00:12:35:{slot:02x}", guest_ip, 24, host_ip)])
        t0 = time.monotonic()
        p = machine.launch(spec, vmdir)
        try:
            machine.wait_ready(vmdir, 120, p)
        except ZonedError as e:  # a boot that never reached the guest init's "ready"
            rec.update(outcome="not ready", error=str(e), evidence=evidence(vmdir))
            return rec
        rec["ready_s"] = time.monotonic() - t0
        got, deadline = b"", time.monotonic() + 60
        while not got and time.monotonic() < deadline and p.poll() is None:
            try:
                with socket.create_connection((guest_ip, 7777), timeout=5) as c:
                    got = c.recv(100)
            except OSError:
                time.sleep(0.1)
        rec["exchange_ok"] = got == b"hello-from-vm\n"
        exited_at = None
        deadline = time.monotonic() + 60
        while exited_at is None and time.monotonic() < deadline and p.poll() is None:
            if machine.exit_status(vmdir) is not None:
                exited_at = time.monotonic()
            else:
                time.sleep(0.005)
        if exited_at is None and p.poll() is None:
            rec["outcome"] = "no exit line"
            rec["evidence"] = evidence(vmdir)
            return rec
        try:
            p.wait(hang_after)
            rec["outcome"] = "ended"
            rec["exit_to_gone_ms"] = (time.monotonic() - exited_at) * 1e3 if exited_at else None
            rec["guest_status"] = machine.exit_status(vmdir)
        except subprocess.TimeoutExpired:
            rec["outcome"] = "hung"
            rec["evidence"] = evidence(vmdir)
        return rec
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        machine.destroy(vmdir)
        with Netlink() as nl:
            nl.delete_link(tap, ALIAS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300, help="VMs in all (default 300)")
    ap.add_argument("--parallel", type=int, default=3, help="VMs at a time, 1-8 (default 3)")
    ap.add_argument("--hang-after", type=float, default=30.0,
                    help="seconds after the guest's exit line that count as a hang (30)")
    ap.add_argument("--vminit", help="boot this zoned-vminit instead of the checkout's")
    ap.add_argument("--out", help="JSON path (default bench/results/vm-exits.json)")
    a = ap.parse_args(argv)
    if a.count < 1:
        print("vm_exits: --count must be at least 1", file=sys.stderr)
        return 125
    if not 1 <= a.parallel <= 8:
        print("vm_exits: --parallel must be 1-8", file=sys.stderr)
        return 125
    if a.vminit:
        if not os.access(a.vminit, os.X_OK):
            print(f"vm_exits: --vminit {a.vminit!r} is not an executable", file=sys.stderr)
            return 125
        assets.VMINIT = os.path.abspath(a.vminit)  # the initrd base is keyed by its hash

    def on_term(signum, frame):  # SIGTERM, SIGHUP unwind like Ctrl-C: through the clean-up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    records: list[dict] = []
    lock = threading.Lock()
    todo = iter(range(a.count))
    stop = threading.Event()

    def worker(slot: int) -> None:
        while not stop.is_set():
            with lock:
                if next(todo, None) is None:
                    return
            try:
                rec = one_vm(slot, a.hang_after)
            except Exception as e:  # noqa: BLE001 (a failed boot is a result, not the end)
                rec = {"slot": slot, "outcome": "error", "error": str(e)}
            with lock:
                records.append(rec)
                n = len(records)
            if rec["outcome"] != "ended" or n % 20 == 0:
                not_ended = sum(r["outcome"] != "ended" for r in records)
                print(f"vm_exits: {n}/{a.count} done, {not_ended} not ended"
                      + (f" (this one: {rec['outcome']})" if rec["outcome"] != "ended" else ""),
                      file=sys.stderr, flush=True)

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(a.parallel)]
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        print("vm_exits: interrupted; waiting for the VMs in flight to be removed",
              file=sys.stderr, flush=True)
        for t in threads:
            t.join()
    ended = [r for r in records if r["outcome"] == "ended"]
    res = {
        "environment": C.environment(),
        "parameters": {"count": a.count, "parallel": a.parallel, "hang_after_s": a.hang_after,
                       "vminit": assets.VMINIT, "accel": accel_used()},
        "wall_s": time.monotonic() - started,
        "vms": len(records),
        "outcomes": {k: sum(r["outcome"] == k for r in records)
                     for k in ("ended", "hung", "not ready", "no exit line", "error")},
        "exchange_failed": sum(1 for r in records if r.get("exchange_ok") is False),
        "ready_s": C.summary([r["ready_s"] for r in records if "ready_s" in r]),
        "exit_to_gone_ms": C.summary([r["exit_to_gone_ms"] for r in ended
                                      if r.get("exit_to_gone_ms") is not None]),
        "not_ended": [r for r in records if r["outcome"] != "ended"],
    }
    out = C.write_json("vm-exits", res, a.out)
    o = res["outcomes"]
    print(C.table([[len(records), o["ended"], o["hung"], o["not ready"], o["no exit line"],
                    o["error"],
                    f"{res['ready_s'].get('median', 0):.2f}",
                    f"{res['exit_to_gone_ms'].get('median', 0):.1f}",
                    f"{res['exit_to_gone_ms'].get('p95', 0):.1f}"]],
                  ["VMs", "ended", "hung", "not ready", "no exit line", "error",
                   "ready s (median)",
                   "exit->gone ms (median)", "p95"], left_last=False))
    print(f"vm_exits: wrote {out}")
    left = [n for n in os.listdir("/sys/class/net") if n.startswith(TAP_PREFIX)]
    if left:
        print(f"vm_exits: taps left: {left}", file=sys.stderr)
        return 1
    return 0 if len(records) == a.count else 130


def accel_used() -> str:
    from zoned.vm import accel

    return accel.choose("auto", assets.kernel()).accel


if __name__ == "__main__":
    sys.exit(main())
