"""The cgroup yard zoned hands CRIU (`--cgroup-yard`): this host's cgroup hierarchies,
each bound where CRIU looks for it, in the private mount namespace of one criu.

With --manage-cgroups and no yard, every `criu dump` and `criu restore` mounts each
hierarchy afresh. A fresh cgroup2 mount is the kernel's slowest mount: 14-20 ms here,
inside a live migration's frozen window twice (its dump and its restore). A bind of the
mount the host already has is the same superblock and root, and costs ~0.1 ms.

  plan()          (name CRIU looks for, this host's mount) per line of /proc/self/cgroup
  args(plan)      the criu flags for it ([] without a plan: CRIU mounts its own)

zoned-criuexec (csrc/criuexec.c) mounts it for criu: a tmpfs at YARD holding the binds.
"""
from __future__ import annotations

import functools
import os

YARD = "/run/zoned/.cache/criu-yard"  # a mount point only: the yard lives in criu's ns


def names(line: str) -> tuple[str, frozenset] | None:
    """(the yard dir CRIU opens, the hierarchy's controller set) for a /proc/PID/cgroup
    line, as CRIU names it on dump and on restore: "unified" for cgroup2, the comma-joined
    controllers, "systemd" for name=systemd. None for a form the two name differently (a
    name= hierarchy with controllers): CRIU then mounts its own."""
    parts = line.strip().split(":", 2)
    if len(parts) != 3:
        return None
    ctrls = parts[1]
    if ctrls == "":
        return "unified", frozenset()
    items = ctrls.split(",")
    named = [i for i in items if i.startswith("name=")]
    if named and len(items) > 1:
        return None
    dir_name = items[0][len("name="):] if named else ctrls
    if not dir_name or "/" in dir_name or dir_name in (".", ".."):
        return None
    return dir_name, frozenset(items)


def plan_for(cgroup_lines: list[str], hierarchies) -> tuple[tuple[str, str], ...]:
    """The yard for these /proc/self/cgroup lines and mounted hierarchies
    (zoned.cgroups.detection.Hierarchy): (dir name, mount point) each; () if a line's
    hierarchy is not mounted here or is named in a way the yard cannot hold."""
    by_set = {}
    for h in hierarchies:
        key = frozenset() if h.fstype == "cgroup2" else frozenset(h.options.split(","))
        by_set.setdefault(key, h.mountpoint)
    out = []
    for line in cgroup_lines:
        if not line.strip():
            continue
        named = names(line)
        if named is None or named[1] not in by_set:
            return ()
        out.append((named[0], by_set[named[1]]))
    if len({n for n, _ in out}) != len(out):
        return ()
    return tuple(out)


@functools.lru_cache(maxsize=None)
def plan() -> tuple[tuple[str, str], ...]:
    """This host's yard (see plan_for); () if it cannot be had. Read once per process."""
    from zoned.cgroups.detection import mounts

    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        yard = plan_for(lines, mounts())
        if yard:
            os.makedirs(YARD, mode=0o700, exist_ok=True)
        return yard
    except OSError:
        return ()


def args(yard: tuple) -> list[str]:
    return ["--cgroup-yard", YARD] if yard else []
