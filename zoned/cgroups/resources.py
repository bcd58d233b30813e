"""The OCI `linux.resources` values both drivers share: checking a field's type, the
unit conversions between v1 and v2 (the formulas runc and crun use, so a spec gives the
same limits under any of them), and the writes that are spelled the same on v1 and v2.
Every error names the spec field.
"""
from __future__ import annotations

import errno

from zoned.cgroups.fs import CgroupError, logger, write_field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable

# runc's order: cpu first (it carries cpuset.cpus/mems), devices before limits
GROUPS = ("cpu", "devices", "memory", "pids", "blockIO", "hugepageLimits", "network", "rdma",
          "unified")

MEMORY_KEYS = ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
               "disableOOMKiller", "useHierarchy", "checkBeforeUpdate")
CPU_KEYS = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "cpus",
            "mems", "idle")
PIDS_KEYS = ("limit",)
BLOCKIO_KEYS = ("weight", "leafWeight", "weightDevice", "throttleReadBpsDevice",
                "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice")
NETWORK_KEYS = ("classID", "priorities")


def check_int(field: str, v: object) -> int:
    """`v` if it is an integer (JSON's true/false are not), else CgroupError naming field."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise CgroupError(f"{field}: expected an integer, got {v!r}", errno.EINVAL, field=field)
    return v


def get_int(obj: dict, key: str, field: str) -> int | None:
    """obj[key] checked as an integer; None when absent or null (leave the limit alone)."""
    v = obj.get(key)
    return None if v is None else check_int(field, v)


def check_keys(group: str, obj: object, known: Iterable[str]) -> dict:
    """`obj` if it is an object; its unknown keys are logged, not refused (a newer spec
    may carry fields this version does not know)."""
    if not isinstance(obj, dict):
        raise CgroupError(f"{group}: expected an object, got {obj!r}", errno.EINVAL,
                          field=group)
    for k in obj:
        if k not in known:
            logger().warning("cgroups: ignoring unknown field linux.resources.%s.%s", group, k)
    return obj


def v2_limit(v: int) -> str:
    """A byte/count limit where -1 means unlimited, spelled as v2 files take it."""
    return "max" if v < 0 else str(v)


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the formula runc and crun use, so a
    spec gives the same relative weights under any of them."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc does."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_to_v2(swap: int | None, limit: int | None) -> int | None:
    """The spec's memory.swap is memory+swap (v1's memsw); v2's memory.swap.max is swap
    alone. Returns the memory.swap.max value (-1 for "max"), or None to leave it alone.
    Same rules as runc's ConvertMemorySwapToCgroupV2Value."""
    if limit == -1 and swap in (None, 0):
        return -1  # "memory unlimited" means swap too, as on v1
    if swap is None or swap == 0:
        return None
    if swap == -1:
        return -1
    if limit is None or limit <= 0:
        raise CgroupError("memory.swap: a swap limit needs a memory limit too "
                          "(memory.swap.max = swap - limit)", errno.EINVAL,
                          field="memory.swap")
    if swap < limit:
        raise CgroupError(f"memory.swap: {swap} is below memory.limit {limit} (the spec's "
                          "swap is memory+swap)", errno.EINVAL, field="memory.swap")
    return swap - limit


def memory_fields(m: dict) -> tuple[int | None, int | None, int | None]:
    """Check linux.resources.memory and return its (limit, swap, reservation)."""
    check_keys("memory", m, MEMORY_KEYS)
    return (get_int(m, "limit", "memory.limit"), get_int(m, "swap", "memory.swap"),
            get_int(m, "reservation", "memory.reservation"))


def page_size(field: str, v: object) -> str:
    """A hugepageLimits pageSize ("2MB", "1GB"): it becomes part of a file name, so only
    that shape is let through."""
    import re

    if not isinstance(v, str) or not re.match(r"^[0-9]+[KMGT]B$", v):
        raise CgroupError(f"{field}: invalid pageSize {v!r} (expected e.g. '2MB', '1GB')",
                          errno.EINVAL, field=field)
    return v


def devno(d: dict, field: str) -> str:
    """A blockIO device entry's "major:minor"."""
    major = check_int(field + ".major", d.get("major"))
    return f"{major}:{check_int(field + '.minor', d.get('minor'))}"


def write_rdma(r: object, path: str) -> None:
    """linux.resources.rdma into an rdma.max file (the same format on v1 and v2)."""
    if not isinstance(r, dict):
        raise CgroupError(f"rdma: expected an object, got {r!r}", errno.EINVAL, field="rdma")
    for dev, lim in r.items():
        field = f"rdma[{dev!r}]"
        parts = []
        for key, name in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")):
            v = (lim or {}).get(key)
            if v is not None:
                parts.append(f"{name}={check_int(field + '.' + key, v)}")
        if parts:
            write_field(field, path, f"{dev} {' '.join(parts)}")
