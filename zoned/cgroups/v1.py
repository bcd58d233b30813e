"""The cgroup v1 driver (crun's cgroup-v1.c), also used on hybrid hosts: the container's
cgroupsPath in every v1 hierarchy (name=systemd too), each controller's files in its own
hierarchy, and on a hybrid host the same path in the cgroup2 hierarchy as well, where the
container's processes are tracked and v2-only controllers (hugetlb, rdma, unified keys)
are used when v1 lacks them.
"""
from __future__ import annotations

import errno
import os
import time

from zoned.cgroups.base import Cgroup
from zoned.cgroups.detection import Hierarchy
from zoned.cgroups.detection import mounts as all_mounts
from zoned.cgroups.fs import (CgroupError, logger, make_dir, procs_below, read_file,
                              read_if_exists, parse_int, remove_tree, wait_until,
                              write_field, write_file)
from zoned.cgroups.path import clean_path
from zoned.cgroups.resources import (BLOCKIO_KEYS, CPU_KEYS, NETWORK_KEYS, PIDS_KEYS,
                                     check_int, check_keys, devno, get_int, memory_fields,
                                     page_size, write_rdma)
from zoned.cgroups.v2 import V2Cgroup


class V1Cgroup(Cgroup):
    """The same path in every v1 hierarchy; on a hybrid host also in the cgroup2 one, so the
    container's processes are tracked there too (as runc does)."""

    def __init__(self, path: str, mounts: list[Hierarchy] | None = None, *,
                 shared_memory: bool = False):
        """shared_memory: the memory hierarchy's cgroup is the parent of `path`, which the
        zones below that parent share (zoned.runtime.cgroup_paths): not one of self.dirs,
        so nothing here reads, kills or removes what else is in it; add() moves into it."""
        self.path = clean_path(path)
        hs = list(all_mounts()) if mounts is None else mounts
        self.dirs: list[str] = []
        self._by_ctrl: dict[str, str] = {}
        self.unified: V2Cgroup | None = None
        self.shared_memory = shared_memory
        self.shared_memory_dir: str | None = None
        for h in hs:
            if h.fstype == "cgroup":
                if shared_memory and "memory" in h.controllers:
                    if len(h.controllers) > 1:
                        raise CgroupError(
                            f"a shared memory cgroup needs memory in a v1 hierarchy of its "
                            f"own; {h.mountpoint} has {','.join(h.controllers)}",
                            errno.EOPNOTSUPP)
                    self.shared_memory_dir = h.mountpoint + os.path.dirname(self.path)
                    continue
                d = h.mountpoint + self.path
                self.dirs.append(d)
                for c in h.controllers:
                    self._by_ctrl[c] = d
            elif self.unified is None:
                self.unified = V2Cgroup(self.path, h, controllers=())
        if not self.dirs:
            raise CgroupError("no cgroup v1 hierarchy is mounted", errno.ENOENT)

    def file(self, name: str, field: str) -> str:
        """The path of the file `name` in its controller's hierarchy; CgroupError naming
        the spec `field` when that controller is not mounted."""
        ctrl = name.split(".")[0]
        d = self._by_ctrl.get(ctrl)
        if d is None:
            raise CgroupError(f"{field}: the {ctrl} controller is not mounted (no v1 "
                              f"hierarchy for {name})", errno.EOPNOTSUPP, field=field)
        return os.path.join(d, name)

    def file_if_mounted(self, name: str) -> str | None:
        """The file's path if its controller is mounted (for stats), else None."""
        d = self._by_ctrl.get(name.split(".")[0])
        return os.path.join(d, name) if d else None

    def _unified_for(self, ctrl: str) -> V2Cgroup | None:
        """On hybrid hosts a controller absent from v1 may be in the cgroup2 hierarchy
        (hugetlb often is): use it there, enabling it down to our cgroup on first use."""
        u = self.unified
        if ctrl in self._by_ctrl or u is None or ctrl not in u.hierarchy.controllers:
            return None
        u.ensure_controller(ctrl)
        return u

    # -- lifecycle --
    def load_modules(self) -> None:
        from zoned.cgroups import devices  # noqa: F401 - _apply_devices's

    def create(self) -> None:
        cpuset = self._by_ctrl.get("cpuset")
        memory = self._by_ctrl.get("memory")
        for d in self.dirs:
            if not self._make_leaf(d, d == cpuset, d == memory):
                self._make_path(d, d == cpuset, d == memory)
        if self.shared_memory_dir is not None:
            self._make_shared_memory()
        self.make_cgroup2()

    def _make_leaf(self, d: str, cpuset: bool, memory: bool) -> bool:
        """The usual case, the container's own cgroup made below parents that exist: one
        mkdir, not one per level (each level's mkdir and cpuset reads cost a path walk in
        cgroupfs, on every start). False where the rest of the path must be looked at: a
        parent missing (ENOENT), the cgroup there already, its cpuset left empty."""
        try:
            os.mkdir(d)
        except OSError:
            return False
        if cpuset:
            return all((read_if_exists(os.path.join(d, name)) or "").strip()
                       for name in ("cpuset.cpus", "cpuset.mems"))
        if memory:
            self._memory_hierarchy(d)
        return True

    def _make_path(self, d: str, cpuset: bool, memory: bool) -> None:
        """mkdir -p of the path in the hierarchy `d` is in, each level's cpuset filled and
        memory made hierarchical (the cgroups zoned makes above a container's included)."""
        comps = self.path.strip("/").split("/")
        cur = d[: len(d) - len(self.path)]
        for i, comp in enumerate(comps):
            parent, cur = cur, os.path.join(cur, comp)
            new = make_dir(cur)
            if cpuset:
                self._cpuset_inherit(parent, cur, new and i < len(comps) - 1)
            elif memory and new:
                self._memory_hierarchy(cur)

    def make_cgroup2(self) -> None:
        """The hybrid host's cgroup2 twin (create() makes it too)."""
        if self.unified is not None:
            try:
                self.unified.create()
            except CgroupError as e:  # tracking in cgroup2 is a nicety on hybrid hosts
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                logger().warning("cgroups: not tracking %s in cgroup2: %s", self.path, e)
                self.unified = None

    def cgroup2_dir(self) -> str | None:
        return self.unified.dir if self.unified is not None else None

    def join_files(self) -> tuple[list[str], str | None]:
        return [os.path.join(d, "tasks") for d in self.dirs], self.shared_memory_dir

    @staticmethod
    def _cpuset_inherit(parent: str, cur: str, made_above: bool) -> None:
        """A new v1 cpuset starts with empty cpus/mems and then refuses tasks (ENOSPC):
        copy the parent's, as runc does, unless the kernel copied them at mkdir. It does
        below a cpuset whose cgroup.clone_children is 1 (LXC's way), and zoned sets that
        flag on each cpuset it makes above a container's (made_above): a cpuset.cpus write
        rebuilds the scheduler domains' attributes, walking every cpuset on the host
        (measured: 0.9 ms a zone at 3,000 cpusets, 2.6 ms at 10,000), where the copy at
        mkdir walks none (0.15 and 0.37 ms for the mkdir). A cgroup zoned did not make
        keeps its flag."""
        for name in ("cpuset.cpus", "cpuset.mems"):
            f = os.path.join(cur, name)
            if (read_if_exists(f) or "").strip():
                continue
            write_field("create", f, (read_file(os.path.join(parent, name)).strip() or "\n"))
        if made_above:
            try:
                write_file(os.path.join(cur, "cgroup.clone_children"), "1")
            except OSError as e:  # the copies below are then written, as before
                logger().warning("cgroups: cannot set %s/cgroup.clone_children: %s", cur,
                                 os.strerror(e.errno or 0))

    @staticmethod
    def _memory_hierarchy(d: str) -> None:
        """Old kernels (< 5.x) default memory.use_hierarchy to 0 at the root, so a limit on
        /zoned wouldn't cover its children; newer ones are always hierarchical and the file
        reads 1. Best effort: it can only be changed while the cgroup has no children."""
        f = os.path.join(d, "memory.use_hierarchy")
        if (read_if_exists(f) or "1").strip() == "0":
            try:
                write_file(f, "1")
            except OSError as e:
                logger().warning("cgroups: cannot set %s: %s", f, os.strerror(e.errno or 0))

    def _make_shared_memory(self) -> None:
        """mkdir -p of the shared memory cgroup (another zone's removal may rmdir it
        whenever no process is in it)."""
        d = self.shared_memory_dir
        mnt = d[: len(d) - len(os.path.dirname(self.path))]
        cur = mnt
        for comp in os.path.dirname(self.path).strip("/").split("/"):
            cur = os.path.join(cur, comp)
            if make_dir(cur):
                self._memory_hierarchy(cur)

    def exists(self) -> bool:
        return (any(os.path.isdir(d) for d in self.dirs)
                or (self.unified is not None and self.unified.exists()))

    def add(self, pid: int) -> None:
        v = str(int(pid))
        for d in self.dirs:
            write_field("add", os.path.join(d, "cgroup.procs"), v)
        if self.shared_memory_dir is not None:
            procs = os.path.join(self.shared_memory_dir, "cgroup.procs")
            try:
                write_file(procs, v)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENODEV):  # removed since create(), when
                    self._make_shared_memory()  # it was empty: make it again
                write_field("add", procs, v)  # (or the error, naming the file)
        if self.unified is not None and self.unified.exists():
            self.unified.add(pid)

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            out |= procs_below(d)
        if self.unified is not None:
            out |= procs_below(self.unified.dir)
        return sorted(out)

    def directories(self) -> list[str]:
        """The cgroup2 twin first: it holds every process, so a busy cgroup stops the
        removal there before any v1 directory goes."""
        return ([self.unified.dir] if self.unified is not None else []) + self.dirs

    def destroy(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            remove_tree(d, deadline)
        if self.unified is not None:
            remove_tree(self.unified.dir, deadline)

    def fast_kill(self) -> bool:
        # hybrid: our processes are in the cgroup2 twin too, and cgroup.kill works there
        return self.unified is not None and self.unified.exists() and self.unified.fast_kill()

    # -- freezer --
    def _freezer(self) -> str | None:
        return self.file_if_mounted("freezer.state")

    def freezer_dir(self) -> str | None:
        f = self._freezer()
        return os.path.dirname(f) if f else None

    def freeze(self, timeout: float = 5.0) -> None:
        f = self._freezer()
        if f is None:
            if self.unified is not None:
                return self.unified.freeze(timeout)
            raise CgroupError("freeze: the freezer controller is not mounted", errno.EOPNOTSUPP)
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            # runc's recipe: keep asking; thaw now and then so tasks stuck mid-fork/vfork
            # get a chance to reach the refrigerator.
            if i % 50 == 49:
                write_field("freeze", f, "THAWED")
                time.sleep(0.01)
            write_field("freeze", f, "FROZEN")
            state = wait_until(lambda: read_file(f).strip() == "FROZEN",
                               0.0 if i % 25 != 24 else 0.01)
            if state:
                return
            i += 1
            if time.monotonic() >= deadline:
                write_field("thaw", f, "THAWED")
                raise CgroupError(f"freeze: cgroup {self.path} still FREEZING after "
                                  f"{timeout:g}s ({f})", errno.ETIMEDOUT, path=f)
            time.sleep(min(0.0002 * (i + 1), 0.01))

    def thaw(self) -> None:
        f = self._freezer()
        if f is None:
            if self.unified is not None:
                return self.unified.thaw()
            raise CgroupError("thaw: the freezer controller is not mounted", errno.EOPNOTSUPP)
        write_field("thaw", f, "THAWED")

    def frozen(self) -> bool:
        f = self._freezer()
        if f is None:
            return self.unified.frozen() if self.unified is not None else False
        return (read_if_exists(f) or "").strip() == "FROZEN"

    # -- stats --
    def stats(self) -> dict:
        """Usage and limits (zoned.cgroups.stats says which files, in which units)."""
        if not self.exists():
            raise CgroupError(f"stats: cgroup {self.path} does not exist", errno.ENOENT)
        from zoned.cgroups.stats import v1_stats

        def read(name: str) -> str | None:
            p = self.file_if_mounted(name)
            return read_if_exists(p) if p else None

        out = v1_stats(read)
        out["frozen"] = self.frozen()
        return out

    # -- resources --
    def _apply_memory(self, m: dict) -> None:
        limit, swap, reservation = memory_fields(m)
        lim_f = self.file("memory.limit_in_bytes", "memory.limit")
        if m.get("checkBeforeUpdate") and limit is not None and limit >= 0:
            usage = parse_int(read_if_exists(self.file("memory.usage_in_bytes", "memory.limit")))
            if usage is not None and limit < usage:
                raise CgroupError(f"memory.limit: {limit} is below current usage {usage} "
                                  "(checkBeforeUpdate)", errno.EBUSY, field="memory.limit",
                                  path=lim_f)
        if m.get("useHierarchy") is not None:
            write_field("memory.useHierarchy",
                        self.file("memory.use_hierarchy", "memory.useHierarchy"),
                        "1" if m["useHierarchy"] else "0")
        sw_f = self.file("memory.memsw.limit_in_bytes", "memory.swap")
        if swap is not None and swap != 0 and not os.path.exists(sw_f):
            if not (swap == -1 or swap == limit):
                raise CgroupError(f"memory.swap: swap accounting is not enabled ({sw_f} is "
                                  "missing); only swap == limit or -1 can be honoured",
                                  errno.EOPNOTSUPP, field="memory.swap", path=sw_f)
            swap = None
        if swap == 0:
            swap = None  # runc: 0 means "not set"
        if limit is not None and swap is not None:
            # memsw must stay >= limit at every step: order the writes like runc does
            cur = parse_int(read_if_exists(lim_f))
            if swap == -1 or (cur is not None and cur < swap):
                write_field("memory.swap", sw_f, str(swap))
                write_field("memory.limit", lim_f, str(limit))
            else:
                write_field("memory.limit", lim_f, str(limit))
                write_field("memory.swap", sw_f, str(swap))
        elif limit is not None:
            write_field("memory.limit", lim_f, str(limit))
        elif swap is not None:
            write_field("memory.swap", sw_f, str(swap))
        if reservation is not None:
            write_field("memory.reservation",
                        self.file("memory.soft_limit_in_bytes", "memory.reservation"),
                        str(reservation))
        if m.get("kernel") is not None:
            logger().warning("cgroups: memory.kernel is deprecated and ignored")
        if m.get("kernelTCP") is not None:
            write_field("memory.kernelTCP",
                        self.file("memory.kmem.tcp.limit_in_bytes", "memory.kernelTCP"),
                        str(check_int("memory.kernelTCP", m["kernelTCP"])))
        sw = m.get("swappiness")
        if sw is not None:
            sw = check_int("memory.swappiness", sw)
            if not 0 <= sw <= 100:
                raise CgroupError(f"memory.swappiness: {sw} is outside 0..100", errno.EINVAL,
                                  field="memory.swappiness")
            write_field("memory.swappiness", self.file("memory.swappiness", "memory.swappiness"),
                        str(sw))
        if m.get("disableOOMKiller"):
            write_field("memory.disableOOMKiller",
                        self.file("memory.oom_control", "memory.disableOOMKiller"), "1")

    def _apply_cpu(self, c: dict) -> None:
        check_keys("cpu", c, CPU_KEYS)
        if c.get("cpus"):
            write_field("cpu.cpus", self.file("cpuset.cpus", "cpu.cpus"), str(c["cpus"]))
        if c.get("mems"):
            write_field("cpu.mems", self.file("cpuset.mems", "cpu.mems"), str(c["mems"]))
        shares = get_int(c, "shares", "cpu.shares")
        if shares:
            write_field("cpu.shares", self.file("cpu.shares", "cpu.shares"), str(shares))
        quota = get_int(c, "quota", "cpu.quota")
        period = get_int(c, "period", "cpu.period")
        if period:
            pf = self.file("cpu.cfs_period_us", "cpu.period")
            try:
                write_field("cpu.period", pf, str(period))
            except CgroupError:
                if not quota:
                    raise
                # the current quota doesn't fit the new period: quota first, then period
                write_field("cpu.quota", self.file("cpu.cfs_quota_us", "cpu.quota"), str(quota))
        if quota:
            write_field("cpu.quota", self.file("cpu.cfs_quota_us", "cpu.quota"), str(quota))
            if period:
                write_field("cpu.period", self.file("cpu.cfs_period_us", "cpu.period"), str(period))
        burst = get_int(c, "burst", "cpu.burst")
        if burst is not None:
            write_field("cpu.burst", self.file("cpu.cfs_burst_us", "cpu.burst"), str(burst))
        rt_period = get_int(c, "realtimePeriod", "cpu.realtimePeriod")
        if rt_period:
            write_field("cpu.realtimePeriod", self.file("cpu.rt_period_us", "cpu.realtimePeriod"),
                        str(rt_period))
        rt_runtime = get_int(c, "realtimeRuntime", "cpu.realtimeRuntime")
        if rt_runtime:
            write_field("cpu.realtimeRuntime",
                        self.file("cpu.rt_runtime_us", "cpu.realtimeRuntime"), str(rt_runtime))
        idle = get_int(c, "idle", "cpu.idle")
        if idle is not None:
            write_field("cpu.idle", self.file("cpu.idle", "cpu.idle"), str(idle))

    def _apply_pids(self, p: dict) -> None:
        check_keys("pids", p, PIDS_KEYS)
        limit = get_int(p, "limit", "pids.limit")
        if limit is not None:
            write_field("pids.limit", self.file("pids.max", "pids.limit"),
                        "max" if limit <= 0 else str(limit))

    def _blkio(self, names: tuple[str, ...], field: str) -> str:
        for n in names:
            f = self.file(n, field)
            if os.path.exists(f):
                return f
        raise CgroupError(f"{field}: none of {', '.join(names)} exists (no CFQ/BFQ "
                          "scheduler with weights)", errno.EOPNOTSUPP, field=field)

    def _apply_blockio(self, b: dict) -> None:
        check_keys("blockIO", b, BLOCKIO_KEYS)
        w = get_int(b, "weight", "blockIO.weight")
        if w:
            write_field("blockIO.weight",
                        self._blkio(("blkio.weight", "blkio.bfq.weight"), "blockIO.weight"),
                        str(w))
        lw = get_int(b, "leafWeight", "blockIO.leafWeight")
        if lw:
            write_field("blockIO.leafWeight", self.file("blkio.leaf_weight", "blockIO.leafWeight"),
                        str(lw))
        for i, d in enumerate(b.get("weightDevice") or []):
            field = f"blockIO.weightDevice[{i}]"
            dw = get_int(d, "weight", field + ".weight")
            if dw:
                f = self._blkio(("blkio.weight_device", "blkio.bfq.weight_device"), field)
                write_field(field, f, f"{devno(d, field)} {dw}")
            dlw = get_int(d, "leafWeight", field + ".leafWeight")
            if dlw:
                write_field(field, self.file("blkio.leaf_weight_device", field),
                            f"{devno(d, field)} {dlw}")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for i, d in enumerate(b.get(key) or []):
                field = f"blockIO.{key}[{i}]"
                rate = check_int(field + ".rate", d.get("rate"))
                write_field(field, self.file("blkio.throttle." + name, field),
                            f"{devno(d, field)} {rate}")

    def _apply_hugepagelimits(self, limits: list) -> None:
        u = self._unified_for("hugetlb")
        if u is not None:
            return u.apply({"hugepageLimits": limits})
        for i, h in enumerate(limits):
            field = f"hugepageLimits[{i}]"
            size = page_size(field + ".pageSize", h.get("pageSize"))
            limit = check_int(field + ".limit", h.get("limit"))
            write_field(field, self.file(f"hugetlb.{size}.limit_in_bytes", field), str(limit))
            rsvd = self.file(f"hugetlb.{size}.rsvd.limit_in_bytes", field)
            if os.path.exists(rsvd):
                write_field(field, rsvd, str(limit))

    def _apply_network(self, n: dict) -> None:
        check_keys("network", n, NETWORK_KEYS)
        cid = get_int(n, "classID", "network.classID")
        if cid is not None:
            write_field("network.classID", self.file("net_cls.classid", "network.classID"),
                        str(cid))
        for i, p in enumerate(n.get("priorities") or []):
            field = f"network.priorities[{i}]"
            write_field(field, self.file("net_prio.ifpriomap", field),
                        f"{p.get('name')} {check_int(field + '.priority', p.get('priority'))}")

    def _apply_rdma(self, r: dict) -> None:
        u = self._unified_for("rdma")
        if u is not None:
            return u.apply({"rdma": r})
        write_rdma(r, self.file("rdma.max", "rdma"))

    def _apply_unified(self, u: dict) -> None:
        if not u:
            return
        if self.unified is None:
            raise CgroupError("unified: cgroup v2 resources need a cgroup v2 hierarchy "
                              "(this host is cgroup v1 only)", errno.EOPNOTSUPP,
                              field="unified")
        for key in u:  # hybrid: v2 keys apply to the cgroup2 twin, controller enabled lazily
            ctrl = str(key).split(".")[0]
            if ctrl in self.unified.hierarchy.controllers:
                self.unified.ensure_controller(ctrl)
        self.unified.apply({"unified": u})

    def _apply_devices(self, rules: list) -> None:
        """The rules as devices.deny/devices.allow writes, in order (devices says how)."""
        from zoned.cgroups.devices import v1_device_writes

        allow_f = self.file("devices.allow", "devices")
        deny_f = self.file("devices.deny", "devices")
        runs: list[tuple[bool, list[str]]] = []  # consecutive writes to one file, in order
        for allow, entry in v1_device_writes(rules):
            if runs and runs[-1][0] == allow:
                runs[-1][1].append(entry)
            else:
                runs.append((allow, [entry]))
        for allow, entries in runs:
            write_field("devices", allow_f if allow else deny_f, *entries)
