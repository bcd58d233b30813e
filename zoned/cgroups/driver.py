"""Which driver runs this host's cgroups. A module of its own so that base, which the drivers
subclass, imports neither of them (no import cycle)."""
from __future__ import annotations

from zoned.cgroups.base import Cgroup
from zoned.cgroups.detection import detect


def driver_module() -> str:
    """The module of open_cgroup's implementation for this host (for a preload)."""
    import os

    if os.geteuid() != 0:
        return "zoned.rootless_cgroup"
    return "zoned.cgroups.v2" if detect() == "v2" else "zoned.cgroups.v1"


def open_cgroup(path: str, shared_memory: bool = False) -> Cgroup:
    """The implementation for this host: V2Cgroup on v2, V1Cgroup on v1 and hybrid. A v2 host
    never loads the v1 driver. Rootless: below the v2 subtree the host delegates to the
    user, else a NullCgroup, nothing to limit (zoned.rootless_cgroup). shared_memory: the
    zone's memory cgroup is the parent of `path`, shared (zoned.runtime.cgroup_paths)."""
    import os

    if os.geteuid() != 0:
        from zoned.rootless_cgroup import rootless_cgroup

        return rootless_cgroup(path)
    if detect() == "v2":
        from zoned.cgroups.v2 import V2Cgroup

        return V2Cgroup(path, shared_memory=shared_memory)
    from zoned.cgroups.v1 import V1Cgroup

    return V1Cgroup(path, shared_memory=shared_memory)
