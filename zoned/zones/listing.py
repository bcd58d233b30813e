"""`zoned list` (xm list's columns) and `zoned dominfo` (virsh dominfo's lines): the
figures come from the zone's cgroup (memory.current, CPU time), the state from its
container, the last exit and restarts from its record."""
from __future__ import annotations

import math
import os
import time

from zoned.errors import NotFound
from zoned.zones import record
from zoned.zones.zonefile import Zone

MIB = 1 << 20
# xm's state letters: r running, b blocked, p paused, s shut down, c crashed, d dying
LETTERS = {"running": "r", "paused": "p", "shutoff": "s", "crashed": "c", "creating": "d",
           "created": "b"}


def vcpus_of(cfg: dict) -> int:
    """The zone's vCPUs: its CPU quota rounded up, else its cpuset's size, else the host's."""
    cpu = ((cfg.get("linux") or {}).get("resources") or {}).get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota and period and quota > 0:
        return max(1, math.ceil(quota / period))
    if cpu.get("cpus"):
        return cpuset_count(str(cpu["cpus"]))
    return os.cpu_count() or 1


def cpuset_count(cpus: str) -> int:
    """How many CPUs a cpuset list names ("0-1,3" -> 3)."""
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            n += (int(hi) - int(lo) + 1) if hi.isdigit() else 1
    return max(1, n)


def ago(seconds: float) -> str:
    """podman's "5 seconds ago" wording."""
    s = int(max(0, seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{s} second{'s' if s != 1 else ''}"


def info(rt, zone: Zone) -> dict:
    """One zone's figures: name, id (the init's pid, or None), mem_mib, vcpus, state,
    time_s (CPU seconds), status (podman's wording), and the record's fields."""
    name = zone.name
    rec = record.read(rt.store.root, name)
    out = {"name": name, "uuid": zone.get("uuid"), "id": None, "mem_mib": 0.0,
           "maxmem_mib": None, "vcpus": None, "state": "shutoff", "time_s": 0.0,
           "autostart": bool(zone.get("autostart")), "backend": zone.get("backend", "zone"),
           "restarts": rec.get("restarts", 0), "last_exit": rec.get("last_exit"),
           "zone_file": zone.path, "monitor": None, "status": "Defined"}
    if record.monitor_alive(rt.store.root, name):
        out["monitor"] = (rec.get("monitor") or {}).get("pid") or "?"
    try:
        st = rt.state(name)
        cfg = rt.config(name)
    except NotFound:
        st = cfg = None
    if cfg is not None:
        out["vcpus"] = vcpus_of(cfg)
    last = rec.get("last_exit")
    if st is not None and st["status"] != "stopped":
        out["state"] = str(st["status"])
        out["id"] = st.get("pid")
        try:
            stats = rt.cgroup(st).stats()
            usage = (stats.get("memory") or {}).get("usage") or 0
            limit = (stats.get("memory") or {}).get("limit")
            out["mem_mib"] = round(usage / MIB, 1)
            out["maxmem_mib"] = round(limit / MIB) if limit and limit > 0 else None
            out["time_s"] = round(((stats.get("cpu") or {}).get("usage_ns") or 0) / 1e9, 1)
        except (OSError, KeyError, AttributeError):
            pass
        started = (rec.get("booted") or 0)
        out["status"] = f"Up {ago(time.time() - started)}" if started else "Up"
    elif last:
        out["state"] = "crashed" if last.get("event") == "crash" and \
            not last.get("requested") else "shutoff"
        out["status"] = f"Exited ({last['code']}) {ago(time.time() - last['time'])} ago"
        if out["monitor"] and rec.get("action") == "restart":
            out["status"] += ", restarting"
    elif st is not None:  # stopped: the hook is at work, or the record went with a reboot
        code = st.get("exit_code")
        seen = record.exit_file(rt.store.root, name)  # the monitor writes it first
        if code is None and seen:
            code = seen[0]
        out["status"] = f"Exited ({code})" if code is not None else "Exited"
        if code is not None:
            from zoned.zones.policy import event_of

            out["state"] = "crashed" if event_of(int(code)) == "crash" else "shutoff"
        if seen:
            out["status"] += f" {ago(time.time() - seen[1])} ago"
    if out["vcpus"] is None:
        from zoned.zones.convert import run_options

        opts = run_options(zone)
        out["vcpus"] = max(1, math.ceil(float(opts.cpus))) if opts.cpus else \
            (os.cpu_count() or 1)
    return out


def table(rows: list[dict]) -> list[tuple[str, ...]]:
    out = [("Name", "ID", "Mem(MiB)", "VCPUs", "State", "Time(s)", "Status")]
    for r in rows:
        letters = "------"
        letter = LETTERS.get(r["state"], "-")
        index = "rbpscd".find(letter)
        if index >= 0:
            letters = letters[:index] + letter + letters[index + 1:]
        out.append((r["name"], str(r["id"] or "-"), f"{r['mem_mib']:.1f}", str(r["vcpus"]),
                    letters, f"{r['time_s']:.1f}", r["status"]))
    return out


def dominfo_lines(r: dict) -> list[tuple[str, str]]:
    last = r.get("last_exit")
    return [
        ("Id", str(r["id"] or "-")), ("Name", r["name"]), ("UUID", r["uuid"] or "-"),
        ("Backend", r["backend"]), ("State", r["state"]), ("Status", r["status"]),
        ("CPU(s)", str(r["vcpus"])), ("CPU time", f"{r['time_s']:.1f}s"),
        ("Max memory", f"{r['maxmem_mib']} MiB" if r["maxmem_mib"] else "unlimited"),
        ("Used memory", f"{r['mem_mib']:.1f} MiB"),
        ("Autostart", "enable" if r["autostart"] else "disable"),
        ("Restarts", str(r["restarts"])),
        ("Last exit", f"{last['code']} ({last['event']})" if last else "-"),
        ("Monitor", str(r["monitor"] or "-")), ("Zone file", r["zone_file"]),
    ]
