"""cgroups for containers: one interface, with a cgroup v1 implementation (also used on
hybrid hosts) and a cgroup v2 one, picked at run time from /proc/self/mountinfo.

Everything is done by reading and writing cgroupfs files directly (no subprocesses, no
systemd): this sits on the container start path, so it has to be cheap. Resources are the
OCI runtime-spec `linux.resources` object; the v1 and v2 translations follow runc/crun so a
spec behaves the same under zoned as under them.

One module per concern (crun's cgroup-*.c split):

    detection  which layout (v1, hybrid, v2) and where the hierarchies are mounted
    path       cgroupsPath: cleaning it, where a relative one goes
    base       the Cgroup interface: apply(resources), kill()
    driver     open_cgroup(path): the driver this host needs
    v1, v2     the two drivers (V1Cgroup also drives a hybrid host's cgroup2 half)
    resources  linux.resources values both drivers share (checks, v1<->v2 conversions)
    devices    device rules, and their v1 devices.allow/deny writes
    bpf        the v2 device allow-list: an eBPF program, assembled and attached
    stats      usage and limits in one shape for v1 and v2
    gc         leftover cgroups: list them, remove the empty ones
    fs         cgroupfs file access and CgroupError

Importing this package loads none of them: each public name below is imported from its
module on first use, so `zoned run` pays only for the modules its host needs (never bpf on
v1, never stats or gc).
"""

__all__ = [
    "CgroupError", "Hierarchy", "Cgroup", "open_cgroup", "V1Cgroup", "V2Cgroup", "detect", "hierarchies",
    "own_cgroup", "list_paths", "remove_if_empty", "remove_empty_ancestors", "remove_if_unused",
    "shares_to_weight", "blkio_to_io_weight",
    "swap_to_v2", "device_filter", "UNLIMITED", "V2_CONTROLLERS",
]

# Where each public name lives (a module of this package).
_HOME = {
    "CgroupError": "fs",
    "Hierarchy": "detection", "detect": "detection", "hierarchies": "detection",
    "own_cgroup": "path",
    "Cgroup": "base", "open_cgroup": "driver",
    "V1Cgroup": "v1",
    "V2Cgroup": "v2", "V2_CONTROLLERS": "v2",
    "shares_to_weight": "resources", "blkio_to_io_weight": "resources",
    "swap_to_v2": "resources",
    "device_filter": "bpf",
    "UNLIMITED": "stats",
    "list_paths": "gc", "remove_if_empty": "gc", "remove_empty_ancestors": "gc",
    "remove_if_unused": "gc",
}


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'zoned.cgroups' has no attribute {name!r}")
    value = getattr(__import__(f"zoned.cgroups.{home}", fromlist=[name]), name)
    globals()[name] = value  # next time a plain attribute: no __getattr__ call
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
