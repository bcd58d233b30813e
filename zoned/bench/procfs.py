"""What the host's /proc and cgroup files say about processes and memory: PSS, cgroup
directories and charges, CPU time, slab caches. Shared by density, idle and the scripts in
bench/ (density.py), which measured this way first."""
from __future__ import annotations

import os
import resource
from pathlib import Path

from zoned.bench.facts import meminfo, read_int

CGROUP_ROOT = "/sys/fs/cgroup"
KERNEL_KEYS = ["Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "Percpu"]
MEM_KEYS = KERNEL_KEYS + ["Shmem", "MemFree", "MemAvailable", "Cached", "AnonPages"]


def used_kib(m: dict) -> int:
    """Host memory in use: MemTotal - MemAvailable (what an instance more takes away)."""
    return m["MemTotal"] - m["MemAvailable"]


def sample_meminfo(n: int = 4, gap: float = 0.5) -> tuple[dict, int]:
    """The last of n meminfo samples and the spread (max-min) of "used" across them: the
    noise floor of every meminfo delta."""
    import time

    samples = []
    for i in range(n):
        if i:
            time.sleep(gap)
        samples.append(meminfo())
    used = [used_kib(s) for s in samples]
    return samples[-1], max(used) - min(used)


def cgroup_mounts() -> dict[str, str]:
    """controller (or name=..., or '' for cgroup2) -> mount point."""
    from zoned.cgroups import hierarchies

    out: dict[str, str] = {}
    for h in hierarchies():
        if h.fstype == "cgroup2":
            out.setdefault("", h.mountpoint)
        else:
            for key in list(h.controllers) + [o for o in h.options.split(",")
                                              if o.startswith("name=")]:
                out.setdefault(key, h.mountpoint)
    return out


def proc_cgroups(pid: int, mounts: dict[str, str]) -> dict[str, str]:
    """controller -> absolute cgroup directory of a process."""
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for ln in lines:
        _, ctrls, path = ln.split(":", 2)
        for c in (ctrls.split(",") if ctrls else [""]):
            if c in mounts:
                out[c] = mounts[c] + path
    return out


def memcg_bytes(pid: int, mounts: dict[str, str]) -> int | None:
    """The memory cgroup charge of the cgroup `pid` is in (v1 usage_in_bytes, v2
    memory.current); None when it is the root cgroup or unreadable (then a charge would
    be the whole host's)."""
    cg = proc_cgroups(pid, mounts)
    v1 = cg.get("memory")
    if v1 and v1.rstrip("/") != mounts.get("memory", "").rstrip("/"):
        return read_int(os.path.join(v1, "memory.usage_in_bytes"))
    v2 = cg.get("")
    if v2 and "memory" not in mounts and v2.rstrip("/") != mounts.get("", "").rstrip("/"):
        return read_int(os.path.join(v2, "memory.current"))
    return None


def memcg_kernel_bytes(pid: int, mounts: dict[str, str]) -> int | None:
    """Kernel memory charged to the memory cgroup of `pid` (v1 memory.kmem.usage_in_bytes;
    v2 memory.stat's kernel, or its slab + stacks + page tables + percpu): the instance's
    own slab, stacks and page tables, unlike meminfo's host-wide deltas, which carry every
    other process's churn. None in the root cgroup or where nothing is accounted."""
    cg = proc_cgroups(pid, mounts)
    v1 = cg.get("memory")
    if v1 and v1.rstrip("/") != mounts.get("memory", "").rstrip("/"):
        return read_int(os.path.join(v1, "memory.kmem.usage_in_bytes"))
    v2 = cg.get("")
    if v2 and "memory" not in mounts and v2.rstrip("/") != mounts.get("", "").rstrip("/"):
        stat: dict[str, int] = {}
        try:
            with open(os.path.join(v2, "memory.stat")) as f:
                for ln in f:
                    k, _, v = ln.partition(" ")
                    stat[k] = int(v)
        except (OSError, ValueError):
            return None
        if "kernel" in stat:
            return stat["kernel"]
        return sum(stat.get(k, 0) for k in ("slab", "kernel_stack", "pagetables", "percpu"))
    return None


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in KiB (Pss, Pss_Anon, Rss, ...); {} if the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                    out[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return out


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 on), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...) or None if it is gone."""
    f = stat_fields(pid)
    return f[0] if f else None


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads (QEMU's vCPU threads too), in s: the
    scheduler's nanosecond count (/proc/PID/task/*/schedstat), not utime+stime's 10 ms
    ticks, which would round an idle instance's cost to 0 or one tick."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def children(pid: int) -> list[int]:
    """Direct children of a process, from every thread's children file."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo += children(p)
    return out


def cgroup_procs(pid: int, mounts: dict[str, str]) -> list[int]:
    """Every process in the pids (or cgroup2) cgroup of `pid`: a container's processes,
    however they were forked. Where that cgroup is not the instance's own (the hierarchy's
    root, or the cgroup this benchmark runs in), the process tree of `pid` instead."""
    cg = proc_cgroups(pid, mounts)
    d = cg.get("pids") or cg.get("")
    mine = proc_cgroups(os.getpid(), mounts)
    shared = d in (mine.get("pids"), mine.get(""))  # e.g. a QEMU left in its caller's cgroup
    if d and not shared and d.rstrip("/") not in (mounts.get("pids", "").rstrip("/"),
                                                  mounts.get("", "").rstrip("/")):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            pass
    return tree(pid)


def slabinfo(active: bool = False) -> dict[str, int]:
    """slab cache -> KiB its slabs hold (num_objs * objsize), or with `active` the KiB of
    its allocated objects (active_objs * objsize: a new object that fits in a free slot of
    a slab already there counts too); root only."""
    out: dict[str, int] = {}
    try:
        with open("/proc/slabinfo") as f:
            for ln in f:
                if ln.startswith(("slabinfo", "#")):
                    continue
                parts = ln.split()
                out[parts[0]] = int(parts[1 if active else 2]) * int(parts[3]) // 1024
    except OSError:
        pass
    return out


def slab_top(before: dict[str, int], after: dict[str, int], n: int = 12) -> list[list]:
    """The caches that grew (or shrank) most: [name, delta KiB]."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return [[k, v] for k, v in sorted(d.items(), key=lambda kv: -abs(kv[1]))[:n] if v]


def new_memcg_cost(mounts: dict[str, str], count: int = 20) -> dict | None:
    """What one more memory cgroup costs the kernel now: `count` empty ones are made and
    removed, and the slab they took is measured. An empty memory cgroup's largest part is
    its shrinker slots: a 1 KiB kmalloc unit per 64 shrinker ids (mm/shrinker.c), sized for
    the highest id in use since boot; every superblock (a zone makes 7) holds one id. So
    this grows with the most superblocks ever alive at once, and never shrinks."""
    base = mounts.get("memory") or mounts.get("")
    if not base:
        return None
    probe = os.path.join(base, f"zoned-bench-memcg-probe-{os.getpid()}")
    before = slabinfo(active=True)
    made = []
    try:
        os.mkdir(probe)
        made.append(probe)
        for i in range(count):
            os.mkdir(os.path.join(probe, str(i)))
            made.append(os.path.join(probe, str(i)))
        after = slabinfo(active=True)
    except OSError:
        return None
    finally:
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
    per = {k: (after.get(k, 0) - before.get(k, 0)) / (count + 1) for k in after}
    return {"slab_kib_per_memcg": round(sum(per.values()), 1),
            "kmalloc_1k_kib_per_memcg": round(per.get("kmalloc-1k", 0), 1),
            "shrinker_ids_implied": int(per.get("kmalloc-1k", 0) * 64)}


def num_cgroups() -> dict[str, int]:
    """/proc/cgroups num_cgroups per controller: includes cgroups that were removed but
    are still pinned ("dying"), e.g. memory cgroups holding charged kernel memory."""
    out: dict[str, int] = {}
    try:
        with open("/proc/cgroups") as f:
            for ln in f:
                if not ln.startswith("#"):
                    parts = ln.split()
                    out[parts[0]] = int(parts[2])
    except OSError:
        pass
    return out


def limits_snapshot() -> dict:
    """The resources that usually run out first when starting many instances."""
    m = meminfo()
    snap = {
        "processes_on_host": sum(1 for p in os.listdir("/proc") if p.isdigit()),
        "pid_max": read_int("/proc/sys/kernel/pid_max"),
        "threads_max": read_int("/proc/sys/kernel/threads-max"),
        "mem_available_mib": m["MemAvailable"] // 1024,
        "file_nr": Path("/proc/sys/fs/file-nr").read_text().split(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "mount_max": read_int("/proc/sys/fs/mount-max"),
        "max_mnt_namespaces": read_int("/proc/sys/user/max_mnt_namespaces"),
    }
    snap["proc_cgroups"] = num_cgroups()
    return snap


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def python_zoned_processes(needle: str | None = None) -> list[dict]:
    """Processes whose executable is a python and whose cmdline mentions 'zoned' (and
    `needle`, when given). The calling process is never listed."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "python" not in os.path.basename(exe):
            continue
        cmd = proc_cmdline(pid)
        if "zoned" not in cmd or (needle and needle not in cmd):
            continue
        out.append({"pid": pid, "exe": exe, "cmdline": cmd[:200]})
    return out
