"""Which cgroup layout this host has (v1, hybrid or v2) and where its hierarchies are
mounted, read once from /proc/self/mountinfo. On `zoned run`'s start path: no regex, no
subprocess, one read of mountinfo per process.
"""
from __future__ import annotations

import errno
import os

from zoned.cgroups.fs import CgroupError, read_if_exists
from zoned.linux import mountinfo
from zoned.linux.once import once

# v1 controllers v2 also has (or implies): when one of them is mounted as v1 the host is
# v1/hybrid. net_cls, net_prio and perf_event alone don't make a host "v1".
V1_ONLY_HARMLESS = frozenset({"net_cls", "net_prio", "perf_event"})


class Hierarchy(tuple):
    """One mounted cgroup hierarchy. `options` is the mount data that recreates it (the v1
    controllers and name=, "" for cgroup2), so the runtime can mount the same hierarchy
    inside a container's cgroup namespace. fstype: "cgroup" (v1) or "cgroup2"; options:
    "memory", "cpu,cpuacct", "name=systemd", ""; controllers: v1 from the options, v2 the
    root's cgroup.controllers. (A tuple with names, as a namedtuple, which would import
    collections on the start path.)"""

    __slots__ = ()

    def __new__(cls, mountpoint: str, fstype: str, options: str, controllers: tuple):
        return tuple.__new__(cls, (mountpoint, fstype, options, controllers))

    mountpoint = property(lambda self: self[0])
    fstype = property(lambda self: self[1])
    options = property(lambda self: self[2])
    controllers = property(lambda self: self[3])

    def __repr__(self) -> str:
        return "Hierarchy(mountpoint=%r, fstype=%r, options=%r, controllers=%r)" % self


def v1_subsystems() -> set[str]:
    """The v1 controller names this kernel knows (/proc/cgroups), to tell controllers from
    other mount options."""
    text = read_if_exists("/proc/cgroups") or ""
    names = {ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    return names or {"cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer",
                     "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}


def parse_mountinfo(text: str | bytes, subsystems: set[str] | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies in a mountinfo text, one per superblock: a hierarchy bind-
    mounted elsewhere too (e.g. into a container rootfs) is listed once, preferring a mount
    of its root and the first one seen."""
    subsystems = subsystems if subsystems is not None else v1_subsystems()
    chosen: dict[str, tuple[bool, Hierarchy]] = {}
    order: list[str] = []
    for m in mountinfo.parse(text):
        fstype = m.fstype
        if fstype not in ("cgroup", "cgroup2"):
            continue
        devno, root, mnt, sopts = f"{m.major}:{m.minor}", m.root, m.mount_point, m.super_options
        if fstype == "cgroup":
            keep = [o for o in sopts if o in subsystems or o.startswith("name=")]
            ctrls = tuple(o for o in keep if not o.startswith("name="))
            h = Hierarchy(mnt, fstype, ",".join(keep), ctrls)
        else:
            ctrls = tuple((read_if_exists(os.path.join(mnt, "cgroup.controllers")) or "")
                          .split())
            h = Hierarchy(mnt, fstype, "", ctrls)
        key = f"{fstype}:{devno}"
        if key not in chosen:
            order.append(key)
            chosen[key] = (root == "/", h)
        elif root == "/" and not chosen[key][0]:
            chosen[key] = (True, h)
    return [chosen[k][1] for k in order]


def classify(hs: list[Hierarchy]) -> str:
    """"v1", "hybrid" or "v2" for a list of mounted hierarchies."""
    has_v2 = any(h.fstype == "cgroup2" for h in hs)
    has_v1 = any(h.fstype == "cgroup" and set(h.controllers) - V1_ONLY_HARMLESS for h in hs)
    if has_v1:
        return "hybrid" if has_v2 else "v1"
    if has_v2:
        return "v2"
    raise CgroupError("no cgroup file system is mounted (nothing in /proc/self/mountinfo)",
                      errno.ENOENT)


@once
def mounts() -> tuple[Hierarchy, ...]:
    """Every cgroup hierarchy this process sees, v1 and v2, in mountinfo order; read once."""
    with open("/proc/self/mountinfo", "rb") as f:
        return tuple(parse_mountinfo(f.read()))


@once
def detect() -> str:
    """"v1", "hybrid" (v1 controllers plus a cgroup2 mount) or "v2"; read once."""
    return classify(list(mounts()))


def hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies this process sees, in mountinfo order. On v2 that is the one
    cgroup2 mount; on v1/hybrid the v1 ones (name=systemd too) and the cgroup2 one if any."""
    hs = list(mounts())
    if detect() == "v2":
        return [h for h in hs if h.fstype == "cgroup2"][:1]
    return hs


def v2_hierarchy() -> Hierarchy:
    """The cgroup2 mount (on a hybrid host: the one next to the v1 hierarchies)."""
    for h in mounts():
        if h.fstype == "cgroup2":
            return h
    raise CgroupError("no cgroup2 hierarchy is mounted", errno.ENOENT)
