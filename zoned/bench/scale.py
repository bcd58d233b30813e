"""What bench/density.py needs at 1,000-10,000 instances: the host limits that scale with
the number of instances (checked, raised for the run where a documented sysctl does it,
restored at the end, every step recorded), the start rate per tenth of the run, a reachability
sample (exec in, ping to), and the leftovers that only networked zones leave (veths,
bridges, nft elements, registry fragments).

Kept apart from zoned.bench.density (the `zoned bench` one) because nothing here is
needed below a few hundred instances.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import time

from zoned.bench.facts import read_int
from zoned.bench.leftovers import links_aliased
from zoned.bench.stats import summary

# Per idle instance: its init (the workload), zoned-logger (a detached zone's log writer),
# one spare for an exec or a half-started one. runc's has 1 (no logger).
PIDS_PER_INSTANCE = 3
PID_HEADROOM = 8192          # what the other users of the host need meanwhile
NEIGH_PER_INSTANCE = 1       # one ARP entry per zone the host talks to


class Sysctls:
    """Raise sysctls for the run and put every one back at the end (also on Ctrl-C: call
    restore() from a finally). Each step is recorded in `log` for the results."""

    def __init__(self) -> None:
        self.saved: dict[str, str] = {}
        self.log: list[dict] = []

    @staticmethod
    def path(key: str) -> str:
        return "/proc/sys/" + key.replace(".", "/")

    def get(self, key: str) -> str | None:
        try:
            with open(self.path(key)) as f:
                return f.read().strip()
        except OSError:
            return None

    def at_least(self, key: str, need: int, why: str) -> None:
        """Raise integer sysctl `key` to `need` if it is lower (recorded either way)."""
        have = self.get(key)
        entry = {"limit": key, "value": have, "needed": need, "why": why}
        if have is None:
            entry["action"] = "absent on this kernel"
        elif int(have.split()[0]) >= need:
            entry["action"] = "enough, left as is"
        else:
            try:
                with open(self.path(key), "w") as f:
                    f.write(str(need))
                self.saved.setdefault(key, have)
                entry["action"] = f"raised to {need} for the run (restored at the end)"
            except OSError as e:
                entry["action"] = f"could not raise: {e.strerror}"
        self.log.append(entry)

    def restore(self) -> None:
        for key, value in list(self.saved.items()):
            try:
                with open(self.path(key), "w") as f:
                    f.write(value)
                self.log.append({"limit": key, "action": f"restored to {value}"})
            except OSError as e:
                self.log.append({"limit": key, "action": f"restore FAILED: {e.strerror}"})
            del self.saved[key]


def raise_limits(sysctls: Sysctls, count: int, networked: bool) -> list[dict]:
    """Check (and raise where a sysctl does it) every host limit that grows with the
    number of instances; returns the notes on limits no sysctl is needed for."""
    procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
    sysctls.at_least("kernel.pid_max", min(4194304, procs + count * PIDS_PER_INSTANCE
                                           + PID_HEADROOM),
                     f"{PIDS_PER_INSTANCE} pids per instance (init, zoned-logger, a spare)")
    sysctls.at_least("kernel.threads-max", procs + count * PIDS_PER_INSTANCE + PID_HEADROOM,
                     "every process is a thread")
    notes = [
        {"limit": "fs.inotify.max_user_instances / max_user_watches",
         "value": [sysctls.get("fs.inotify.max_user_instances"),
                   sysctls.get("fs.inotify.max_user_watches")],
         "action": "not used: zoned and an idle zone hold no inotify instance"},
        {"limit": "fs.file-max / RLIMIT_NOFILE", "value": sysctls.get("fs.file-nr"),
         "action": "not hit: no zoned process stays per zone; each zoned-logger holds 3 fds"},
        {"limit": "fs.mount-max", "value": sysctls.get("fs.mount-max"),
         "action": "not hit: a zone's mounts live in its own mount namespace; the host's "
                   "mount table does not grow with zones"},
    ]
    if networked:
        # One neighbour entry per zone the host talks to; past gc_thresh3 the kernel logs
        # "neighbour table overflow" and drops. The sample pings only a few, but a user
        # reaching every zone needs them all.
        need = count * NEIGH_PER_INSTANCE + 256
        sysctls.at_least("net.ipv4.neigh.default.gc_thresh3", need,
                         "one ARP entry per zone the host reaches")
        sysctls.at_least("net.ipv4.neigh.default.gc_thresh2", need * 3 // 4,
                         "soft limit below gc_thresh3")
        notes.append({"limit": "net.netfilter.nf_conntrack_max",
                      "value": sysctls.get("net.netfilter.nf_conntrack_max"),
                      "action": "not hit: idle zones open no connections (the ping sample "
                                "makes a few short-lived entries)"})
        notes.append({"limit": "bridge ports (BR_MAX_PORTS = 1024 per Linux bridge)",
                      "action": "worked around: zoned spreads a network's zones over "
                                "extra bridges joined to the first by veth trunks "
                                "(zoned.network.spread)"})
    return notes


def decile_rates(stamps: list[tuple[float, float]]) -> list[dict]:
    """Start rate and latency per tenth of the run, from (start, end) times of each
    successful start in order: rate = starts in that tenth / the wall time it took."""
    n = len(stamps)
    out = []
    if n < 10:
        return out
    for d in range(10):
        part = stamps[d * n // 10:(d + 1) * n // 10]
        wall = part[-1][1] - part[0][0]
        lat = [(e - s) * 1000 for s, e in part]
        out.append({"decile": d + 1, "count": len(part),
                    "rate_per_s": len(part) / wall if wall > 0 else None,
                    "latency_ms": summary(lat)})
    return out


def sample(ids: list[str], k: int, seed: int = 18) -> list[str]:
    return random.Random(seed).sample(ids, min(k, len(ids)))


def timed(cmd: list[str], timeout: float = 60) -> tuple[bool, float, str]:
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        ok, err = p.returncode == 0, p.stderr.strip()[-300:]
    except subprocess.TimeoutExpired:
        ok, err = False, f"timeout after {timeout}s"
    return ok, (time.perf_counter() - t) * 1000, err


def reach(exec_cmd, ids: list[str], k: int, ips: dict[str, str] | None = None) -> dict:
    """exec `true` in a random sample of `ids` (exec_cmd(cid) gives the command line), and
    ping the sample's addresses from the host when `ips` knows them."""
    picked = sample(ids, k)
    res: dict = {"sampled": len(picked)}
    lat, failed = [], []
    for cid in picked:
        ok, ms, err = timed(exec_cmd(cid))
        lat.append(ms)
        if not ok:
            failed.append({"id": cid, "error": err})
    res["exec"] = {"ok": len(picked) - len(failed), "failed": failed[:10],
                   "latency_ms": summary(lat)}
    if ips:
        pl, pfail = [], []
        for cid in picked:
            ip = ips.get(cid)
            if not ip:
                pfail.append({"id": cid, "error": "no address in its state"})
                continue
            ok, ms, err = timed(["ping", "-c", "1", "-W", "2", ip], timeout=10)
            pl.append(ms)
            if not ok:
                pfail.append({"id": cid, "ip": ip, "error": err or "no reply"})
        res["ping"] = {"ok": len(picked) - len(pfail), "failed": pfail[:10],
                       "latency_ms": summary(pl)}
    return res


def zone_ip(state_path: str) -> str | None:
    """The first network address a zone's state.json records."""
    try:
        with open(state_path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    for a in ((st.get("zoned") or {}).get("network") or {}).get("networks") or []:
        if a.get("ip"):
            return a["ip"]
    return None


def network_leftovers(root: str) -> dict:
    """What networked zones of state root `root` may leave: host links carrying its alias,
    registry fragments naming it, and nft chains of its zones' guards."""
    real = os.path.realpath(root)
    links = links_aliased("@" + real)
    frags = []
    registry = os.environ.get("ZONED_NET_REGISTRY", "/run/zoned-net")
    try:
        for n in os.listdir(registry):
            if n.endswith(".json"):
                try:
                    with open(os.path.join(registry, n)) as f:
                        if json.load(f).get("root") == real:
                            frags.append(n)
                except (OSError, ValueError):
                    pass
    except FileNotFoundError:
        pass
    chains = 0
    for fam, table in (("bridge", "zoned"), ("inet", "zoned-guard")):
        p = subprocess.run(["nft", "list", "table", fam, table], capture_output=True,
                           text=True)
        if p.returncode == 0:
            # a chain per zone port, named after its (host-unique) host veth
            names = {ln.split()[1] for ln in p.stdout.splitlines()
                     if ln.strip().startswith("chain g-")}
            chains += sum(1 for n in names if n[2:] in links) if links else 0
    return {"links": links[:50], "link_count": len(links), "registry_fragments": frags,
            "guard_chains_of_leftover_links": chains}


def kernel_counts() -> dict:
    """Host-wide counts that grow per zone: links, neighbour entries, conntrack entries."""
    out = {"links": len(os.listdir("/sys/class/net"))}
    try:
        with open("/proc/net/arp") as f:
            out["arp_entries"] = sum(1 for _ in f) - 1
    except OSError:
        pass
    out["conntrack_count"] = read_int("/proc/sys/net/netfilter/nf_conntrack_count")
    return out


def host_guard(min_available_mib: int) -> str | None:
    """Why starting more instances would hurt the (shared) host, or None: MemAvailable
    below the floor, or fewer than 2,000 pids left."""
    from zoned.bench.facts import meminfo

    avail = meminfo()["MemAvailable"] // 1024
    if avail < min_available_mib:
        return f"MemAvailable {avail} MiB < {min_available_mib} MiB"
    pid_max = read_int("/proc/sys/kernel/pid_max") or 32768
    procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
    if procs > pid_max - 2000:
        return f"{procs} processes, pid_max {pid_max}"
    return None
