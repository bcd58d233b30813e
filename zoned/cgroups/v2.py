"""The cgroup v2 driver (crun's cgroup-v2.c): one unified hierarchy, controllers delegated
down through cgroup.subtree_control, cgroup.freeze and cgroup.kill, and the device
allow-list as an eBPF program (zoned.cgroups.bpf) since v2 has no devices files. The v1
driver uses it too, for the cgroup2 half of a hybrid host.
"""
from __future__ import annotations

import errno
import os
import time

from zoned.cgroups.base import Cgroup
from zoned.cgroups.detection import Hierarchy, v2_hierarchy
from zoned.cgroups.fs import (CgroupError, logger, make_dir, parse_int, parse_keyed,
                              procs_below, read_if_exists, remove_tree, wait_until,
                              write_field, write_file)
from zoned.cgroups.path import clean_path
from zoned.cgroups.resources import (BLOCKIO_KEYS, CPU_KEYS, NETWORK_KEYS, PIDS_KEYS,
                                     blkio_to_io_weight, check_int, check_keys, devno,
                                     get_int, memory_fields, page_size, shares_to_weight,
                                     swap_to_v2, v2_limit, write_rdma)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable

# v2 controllers create() enables in the parents, when the hierarchy offers them.
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


class V2Cgroup(Cgroup):
    """A cgroup in the unified (v2) hierarchy. Also used for the cgroup2 half of a hybrid
    host (then with `controllers=()`: processes are tracked there, limits live in v1)."""

    def __init__(self, path: str, hierarchy: Hierarchy | None = None,
                 controllers: Iterable[str] | None = None, *, shared_memory: bool = False):
        """shared_memory: the parent of `path` delegates every controller but memory, so
        the zones below it share its memory cgroup (zoned.runtime.cgroup_paths)."""
        self.path = clean_path(path)
        self.shared_memory = shared_memory
        self.hierarchy = hierarchy or v2_hierarchy()
        self.root = self.hierarchy.mountpoint
        self.dir = self.root + self.path
        self.controllers = tuple(V2_CONTROLLERS if controllers is None else controllers)

    def file(self, name: str) -> str:
        """The path of one of this cgroup's files."""
        return os.path.join(self.dir, name)

    # -- lifecycle --
    def load_modules(self) -> None:
        if self.controllers:  # (not a hybrid host's cgroup2 twin: it only tracks)
            from zoned.cgroups import bpf  # noqa: F401 - _apply_devices's

    def create(self) -> None:
        """mkdir -p, enabling our controllers in each parent's cgroup.subtree_control on
        the way down (a child only gets the controllers its parent delegates)."""
        self.create_below("")

    def create_below(self, base: str) -> None:
        """create(), from `base` (a cgroup that exists, e.g. a delegated subtree's top:
        nothing above it is ours to write) down."""
        if not self.controllers:  # (a hybrid host's twin: one mkdir where parents exist)
            try:
                os.mkdir(self.dir)
                return
            except FileExistsError:
                return
            except OSError:
                pass
        cur = self.root + base
        comps = self.path[len(base):].strip("/").split("/")
        for i, comp in enumerate(comps):
            if self.controllers:
                self._delegate(cur, [c for c in self.controllers if c != "memory"]
                               if self.shared_memory and i == len(comps) - 1
                               else self.controllers)
            cur = os.path.join(cur, comp)
            make_dir(cur)

    @staticmethod
    def _delegate(d: str, want: Iterable[str]) -> None:
        """Enable the controllers of `want` that `d` offers in d's cgroup.subtree_control
        (a refusal is logged: the limit that needs it fails later, naming its field)."""
        avail = set((read_if_exists(os.path.join(d, "cgroup.controllers")) or "").split())
        enabled = set((read_if_exists(os.path.join(d, "cgroup.subtree_control")) or "").split())
        missing = [c for c in want if c in avail and c not in enabled]
        if not missing:
            return
        f = os.path.join(d, "cgroup.subtree_control")
        try:
            write_file(f, " ".join("+" + c for c in missing))
            return
        except OSError:
            pass
        for c in missing:  # one at a time, so one refusal doesn't cost the others
            try:
                write_file(f, "+" + c)
            except OSError as e:
                hint = (" (processes in a non-root parent: the 'no internal processes' rule)"
                        if e.errno == errno.EBUSY else "")
                logger().warning("cgroups: cannot enable %s in %s: %s%s", c, f,
                                 os.strerror(e.errno or 0), hint)

    def ensure_controller(self, ctrl: str) -> None:
        """Enable one controller down to this cgroup (hybrid hosts use this lazily)."""
        cur = self.root
        for comp in self.path.strip("/").split("/"):
            self._delegate(cur, (ctrl,))
            cur = os.path.join(cur, comp)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def cgroup2_dir(self) -> str | None:
        return self.dir

    def make_cgroup2(self) -> None:
        self.create()

    def add(self, pid: int) -> None:
        write_field("add", self.file("cgroup.procs"), str(int(pid)))

    def pids(self) -> list[int]:
        return sorted(procs_below(self.dir))

    def directories(self) -> list[str]:
        return [self.dir]

    def destroy(self, timeout: float = 5.0) -> None:
        remove_tree(self.dir, time.monotonic() + timeout)

    # -- freezer --
    def freezer_dir(self) -> str | None:
        return self.dir

    def _events(self) -> dict[str, int]:
        return parse_keyed(read_if_exists(self.file("cgroup.events")))

    def freeze(self, timeout: float = 5.0) -> None:
        write_field("freeze", self.file("cgroup.freeze"), "1")
        if not wait_until(lambda: self._events().get("frozen") == 1, timeout):
            write_field("thaw", self.file("cgroup.freeze"), "0")
            raise CgroupError(f"freeze: cgroup {self.path} not frozen after {timeout:g}s "
                              f"({self.file('cgroup.events')})", errno.ETIMEDOUT)

    def thaw(self) -> None:
        write_field("thaw", self.file("cgroup.freeze"), "0")
        wait_until(lambda: self._events().get("frozen", 0) == 0, 1.0)

    def frozen(self) -> bool:
        return self._events().get("frozen") == 1

    def fast_kill(self) -> bool:
        """cgroup.kill (Linux 5.14+): the kernel kills the whole subtree, races and all."""
        try:
            write_file(self.file("cgroup.kill"), "1")
            return True
        except OSError:
            return False

    # -- stats --
    def stats(self) -> dict:
        """Usage and limits (zoned.cgroups.stats says which files, in which units)."""
        if not self.exists():
            raise CgroupError(f"stats: cgroup {self.dir} does not exist", errno.ENOENT)
        from zoned.cgroups.stats import v2_stats

        out = v2_stats(lambda name: read_if_exists(self.file(name)))
        out["frozen"] = self.frozen()
        return out

    # -- resources --
    def _apply_memory(self, m: dict) -> None:
        limit, swap, reservation = memory_fields(m)
        if m.get("disableOOMKiller"):
            raise CgroupError("memory.disableOOMKiller: not supported on cgroup v2 (there is "
                              "no memory.oom_control)", errno.EOPNOTSUPP,
                              field="memory.disableOOMKiller")
        if m.get("swappiness") is not None:
            raise CgroupError("memory.swappiness: not supported on cgroup v2 (there is no "
                              "per-cgroup memory.swappiness)", errno.EOPNOTSUPP,
                              field="memory.swappiness")
        if m.get("kernelTCP") is not None:
            raise CgroupError("memory.kernelTCP: not supported on cgroup v2 (kernel memory "
                              "is part of memory.max)", errno.EOPNOTSUPP,
                              field="memory.kernelTCP")
        if m.get("useHierarchy") is False:
            raise CgroupError("memory.useHierarchy: cgroup v2 is always hierarchical",
                              errno.EOPNOTSUPP, field="memory.useHierarchy")
        if m.get("kernel") is not None:
            logger().warning("cgroups: memory.kernel is deprecated and ignored")
        if m.get("checkBeforeUpdate") and limit is not None and limit >= 0:
            usage = parse_int(read_if_exists(self.file("memory.current")))
            if usage is not None and limit < usage:
                raise CgroupError(f"memory.limit: {limit} is below current usage {usage} "
                                  "(checkBeforeUpdate)", errno.EBUSY, field="memory.limit")
        swap_max = swap_to_v2(swap, limit)
        if swap_max is not None:
            f = self.file("memory.swap.max")
            if os.path.exists(f):
                write_field("memory.swap", f, v2_limit(swap_max))
            elif not (swap_max == -1 or (swap_max == 0 and swap == limit)):
                raise CgroupError(f"memory.swap: swap accounting is not available ({f} is "
                                  "missing); only swap == limit or -1 can be honoured",
                                  errno.EOPNOTSUPP, field="memory.swap", path=f)
        if limit is not None:
            write_field("memory.limit", self.file("memory.max"), v2_limit(limit))
        if reservation is not None:
            write_field("memory.reservation", self.file("memory.low"), v2_limit(reservation))

    def _apply_cpu(self, c: dict) -> None:
        check_keys("cpu", c, CPU_KEYS)
        if c.get("cpus"):
            write_field("cpu.cpus", self.file("cpuset.cpus"), str(c["cpus"]))
        if c.get("mems"):
            write_field("cpu.mems", self.file("cpuset.mems"), str(c["mems"]))
        for k in ("realtimeRuntime", "realtimePeriod"):
            if c.get(k):
                raise CgroupError(f"cpu.{k}: not supported on cgroup v2 (no real-time group "
                                  "scheduling)", errno.EOPNOTSUPP, field=f"cpu.{k}")
        shares = get_int(c, "shares", "cpu.shares")
        if shares:
            write_field("cpu.shares", self.file("cpu.weight"), str(shares_to_weight(shares)))
        quota = get_int(c, "quota", "cpu.quota")
        period = get_int(c, "period", "cpu.period")
        if quota or period:
            f = self.file("cpu.max")
            if quota:
                q = "max" if quota < 0 else str(quota)
            else:  # only the period changes: keep the current quota
                q = ((read_if_exists(f) or "max").split() or ["max"])[0]
            write_field("cpu.quota", f, f"{q} {period}" if period else q)
        burst = get_int(c, "burst", "cpu.burst")
        if burst is not None:
            write_field("cpu.burst", self.file("cpu.max.burst"), str(burst))
        idle = get_int(c, "idle", "cpu.idle")
        if idle is not None:
            write_field("cpu.idle", self.file("cpu.idle"), str(idle))

    def _apply_pids(self, p: dict) -> None:
        check_keys("pids", p, PIDS_KEYS)
        limit = get_int(p, "limit", "pids.limit")
        if limit is not None:
            write_field("pids.limit", self.file("pids.max"),
                        "max" if limit <= 0 else str(limit))

    def _apply_blockio(self, b: dict) -> None:
        check_keys("blockIO", b, BLOCKIO_KEYS)
        bfq = self.file("io.bfq.weight")
        has_bfq = os.path.exists(bfq)
        if b.get("leafWeight"):
            raise CgroupError("blockIO.leafWeight: not supported on cgroup v2",
                              errno.EOPNOTSUPP, field="blockIO.leafWeight")
        w = get_int(b, "weight", "blockIO.weight")
        if w:
            if has_bfq:
                write_field("blockIO.weight", bfq, str(w))
            else:
                write_field("blockIO.weight", self.file("io.weight"),
                            str(blkio_to_io_weight(w)))
        for i, d in enumerate(b.get("weightDevice") or []):
            field = f"blockIO.weightDevice[{i}]"
            if d.get("leafWeight"):
                raise CgroupError(f"{field}.leafWeight: not supported on cgroup v2",
                                  errno.EOPNOTSUPP, field=field)
            dw = get_int(d, "weight", field + ".weight")
            if dw:
                if has_bfq:
                    write_field(field, bfq, f"{devno(d, field)} {dw}")
                else:
                    write_field(field, self.file("io.weight"),
                                f"{devno(d, field)} {blkio_to_io_weight(dw)}")
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for i, d in enumerate(b.get(key) or []):
                field = f"blockIO.{key}[{i}]"
                rate = check_int(field + ".rate", d.get("rate"))
                write_field(field, self.file("io.max"),
                            f"{devno(d, field)} {name}={rate if rate > 0 else 'max'}")

    def _apply_hugepagelimits(self, limits: list) -> None:
        for i, h in enumerate(limits):
            field = f"hugepageLimits[{i}]"
            size = page_size(field + ".pageSize", h.get("pageSize"))
            limit = check_int(field + ".limit", h.get("limit"))
            write_field(field, self.file(f"hugetlb.{size}.max"), v2_limit(limit))
            rsvd = self.file(f"hugetlb.{size}.rsvd.max")
            if os.path.exists(rsvd):
                write_field(field, rsvd, v2_limit(limit))

    def _apply_network(self, n: dict) -> None:
        check_keys("network", n, NETWORK_KEYS)
        if n.get("classID") or n.get("priorities"):
            raise CgroupError("network: net_cls/net_prio are not supported on cgroup v2 "
                              "(use eBPF/tc instead)", errno.EOPNOTSUPP, field="network")

    def _apply_rdma(self, r: dict) -> None:
        write_rdma(r, self.file("rdma.max"))

    def _apply_unified(self, u: dict) -> None:
        if not isinstance(u, dict):
            raise CgroupError(f"unified: expected an object, got {u!r}", errno.EINVAL,
                              field="unified")
        for key, value in u.items():
            field = f"unified[{key!r}]"
            if "/" in key or key.startswith(".") or "." not in key:
                raise CgroupError(f"{field}: not a cgroup file name", errno.EINVAL,
                                  field=field)
            f = self.file(key)
            if not os.path.exists(f):
                ctrl = key.split(".")[0]
                raise CgroupError(f"{field}: {f} does not exist (controller {ctrl!r} not "
                                  "enabled for this cgroup)", errno.ENOENT, field=field,
                                  path=f)
            write_field(field, f, str(value))

    def _apply_devices(self, rules: list) -> None:
        """v2 has no devices files: the allow-list is an eBPF program attached to the
        cgroup (BPF_PROG_TYPE_CGROUP_DEVICE), replacing the one we attached before."""
        from zoned.cgroups.bpf import attach_device_filter, device_filter

        attach_device_filter(self.dir, device_filter(rules))
