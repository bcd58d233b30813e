"""Both cgroup drivers against a temp dir laid out like cgroupfs, as an ordinary user (no
root, no real cgroups), so the v1 and the v2 driver are exercised on any host: youki's
set_fixture, applied to zoned.cgroups.

What the kernel does on a real cgroupfs, the fixture does by hand: mkdir of a cgroup makes
its interface files (here they exist beforehand), a file holds the last value written (here
the recorder truncates before each write), and cgroup.subtree_control lists the enabled
controllers (here the recorder keeps that list). The recorder also logs every write in
order, which is how the ordering rules (devices deny-then-allow, memory before/after
memsw) are checked. The same drivers against the real kernel: tests/test_cgroups.py.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoned.cgroups import fs
from zoned.cgroups.bpf import device_filter, insn
from zoned.cgroups.detection import Hierarchy
from zoned.cgroups.fs import CgroupError
from zoned.cgroups.stats import UNLIMITED
from zoned.cgroups.v1 import V1Cgroup
from zoned.cgroups.v2 import V2Cgroup

pytestmark = pytest.mark.unprivileged

MiB = 1 << 20
PATH = "/zoned/ctr"
V1_MAX = "9223372036854771712"  # v1's "no limit", as the kernel prints it


def set_fixture(d: Path, name: str, content: str = "") -> Path:
    """One cgroup file with its initial content (youki's set_fixture)."""
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(content)
    return p


class CgroupFS:
    """A temp dir standing in for /sys/fs/cgroup, plus the log of every write the drivers
    make: (path relative to the root, value), in order."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.writes: list[tuple[str, str]] = []
        real = fs.write_file

        def write_file(path: str, value: str, *more: str) -> None:
            for one in (value, *more):  # (a write(2) each, through one open)
                write_one(path, one)

        def write_one(path: str, value: str) -> None:
            old = Path(path).read_text() if os.path.isfile(path) else ""
            if old:
                os.truncate(path, 0)  # cgroupfs: a file holds the last value written
            real(path, value)
            self.writes.append((os.path.relpath(path, root), value))
            if os.path.basename(path) == "cgroup.subtree_control":
                # the kernel's side: "+a -b" edits the set of enabled controllers
                on = [c for c in old.split() if "-" + c not in value.split()]
                on += [w[1:] for w in value.split() if w[0] == "+" and w[1:] not in on]
                Path(path).write_text(" ".join(on))

        # every module of the package that writes files, whichever name it imported
        for name, mod in list(sys.modules.items()):
            if name.startswith("zoned.cgroups.") and getattr(mod, "write_file", None) is real:
                monkeypatch.setattr(mod, "write_file", write_file)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def written(self, prefix: str = "") -> list[tuple[str, str]]:
        return [(p, v) for p, v in self.writes if p.startswith(prefix)]


# -- cgroup v1 (and hybrid) ---------------------------------------------------------------

V1_LAYOUT = {  # mount dir -> (controllers, the container cgroup's files with their content)
    "cpu,cpuacct": (("cpu", "cpuacct"), {
        "cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
        "cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 5000\n",
        "cpuacct.usage": "123456789", "cpuacct.usage_user": "100000000",
        "cpuacct.usage_sys": "23456789"}),
    "cpuset": (("cpuset",), {"cpuset.cpus": "", "cpuset.mems": ""}),
    "memory": (("memory",), {
        "memory.limit_in_bytes": V1_MAX, "memory.memsw.limit_in_bytes": V1_MAX,
        "memory.soft_limit_in_bytes": V1_MAX, "memory.swappiness": "60",
        "memory.use_hierarchy": "1", "memory.usage_in_bytes": str(3 * MiB),
        "memory.memsw.usage_in_bytes": str(4 * MiB), "memory.max_usage_in_bytes": str(5 * MiB),
        "memory.failcnt": "0", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"
        "oom_kill 1\n", "memory.stat": "cache 4096\nrss 8192\n"}),
    "pids": (("pids",), {"pids.max": "max", "pids.current": "3"}),
    "devices": (("devices",), {"devices.allow": "", "devices.deny": "",
                               "devices.list": "a *:* rwm"}),
    "freezer": (("freezer",), {"freezer.state": "THAWED"}),
    "blkio": (("blkio",), {"blkio.weight": "", "blkio.throttle.read_bps_device": ""}),
}


def make_v1(tmp: Path, *, omit: tuple[str, ...] = (), cgroup2: tuple[str, ...] | None = None,
            ) -> list[Hierarchy]:
    """The v1 hierarchies of V1_LAYOUT (less `omit`) under tmp, each with the root cgroup,
    /zoned and /zoned/ctr; with `cgroup2` controllers, also a cgroup2 mount (a hybrid host).
    The root and /zoned cpusets have cpus 0-3 and mems 0."""
    hs = []
    for mnt, (ctrls, files) in V1_LAYOUT.items():
        if mnt in omit:
            continue
        base = tmp / mnt
        for d in (base, base / "zoned", base / "zoned" / "ctr"):
            set_fixture(d, "cgroup.procs")
        if mnt == "cpuset":
            for d in (base, base / "zoned"):
                set_fixture(d, "cpuset.cpus", "0-3\n")
                set_fixture(d, "cpuset.mems", "0\n")
        for name, content in files.items():
            set_fixture(base / "zoned" / "ctr", name, content)
        hs.append(Hierarchy(str(base), "cgroup", ",".join(ctrls), ctrls))
    if cgroup2 is not None:
        u = tmp / "unified"
        for d in (u, u / "zoned"):
            set_fixture(d, "cgroup.controllers", " ".join(cgroup2))
            set_fixture(d, "cgroup.subtree_control")
        set_fixture(u / "zoned" / "ctr", "cgroup.procs")
        set_fixture(u / "zoned" / "ctr", "hugetlb.2MB.max", "max")
        hs.append(Hierarchy(str(u), "cgroup2", "", cgroup2))
    return hs


@pytest.fixture
def v1(tmp_path, monkeypatch):
    hs = make_v1(tmp_path)
    return V1Cgroup(PATH, hs), CgroupFS(tmp_path, monkeypatch)


def test_v1_create_gives_an_empty_cpuset_its_parents_cpus_and_mems(v1):
    cg, cgfs = v1
    cg.create()
    assert cgfs.read("cpuset/zoned/ctr/cpuset.cpus") == "0-3"
    assert cgfs.read("cpuset/zoned/ctr/cpuset.mems") == "0"
    assert cgfs.writes == [("cpuset/zoned/ctr/cpuset.cpus", "0-3"),
                           ("cpuset/zoned/ctr/cpuset.mems", "0")]


def test_v1_limits_cpu_quota_pids_go_to_each_controllers_hierarchy(v1):
    cg, cgfs = v1
    cg.apply({"pids": {"limit": 100},
              "memory": {"limit": 64 * MiB, "reservation": 32 * MiB},
              "cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0-1",
                      "mems": "0"}})
    # runc's order: cpu (cpuset too), memory, pids; the period before and after the quota
    # (a new period the old quota doesn't fit is refused until the quota is set)
    assert cgfs.writes == [
        ("cpuset/zoned/ctr/cpuset.cpus", "0-1"),
        ("cpuset/zoned/ctr/cpuset.mems", "0"),
        ("cpu,cpuacct/zoned/ctr/cpu.shares", "512"),
        ("cpu,cpuacct/zoned/ctr/cpu.cfs_period_us", "200000"),
        ("cpu,cpuacct/zoned/ctr/cpu.cfs_quota_us", "50000"),
        ("cpu,cpuacct/zoned/ctr/cpu.cfs_period_us", "200000"),
        ("memory/zoned/ctr/memory.limit_in_bytes", str(64 * MiB)),
        ("memory/zoned/ctr/memory.soft_limit_in_bytes", str(32 * MiB)),
        ("pids/zoned/ctr/pids.max", "100"),
    ]
    cg.apply({"pids": {"limit": 0}, "cpu": {"quota": -1}})
    assert cgfs.read("pids/zoned/ctr/pids.max") == "max"  # 0 and -1: no limit
    assert cgfs.read("cpu,cpuacct/zoned/ctr/cpu.cfs_quota_us") == "-1"


def test_v1_memory_and_swap_are_written_so_memsw_never_drops_below_the_limit(v1):
    cg, cgfs = v1
    limit, memsw = "memory/zoned/ctr/memory.limit_in_bytes", \
        "memory/zoned/ctr/memory.memsw.limit_in_bytes"
    # from unlimited down: the limit first, then memory+swap
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}})
    assert cgfs.written("memory/") == [(limit, str(64 * MiB)), (memsw, str(128 * MiB))]
    # up again, past the current limit: memory+swap first
    cgfs.writes.clear()
    cg.apply({"memory": {"limit": 256 * MiB, "swap": 512 * MiB}})
    assert cgfs.written("memory/") == [(memsw, str(512 * MiB)), (limit, str(256 * MiB))]
    # swap -1 (unlimited) is always safe first
    cgfs.writes.clear()
    cg.apply({"memory": {"limit": 32 * MiB, "swap": -1}})
    assert cgfs.written("memory/") == [(memsw, "-1"), (limit, str(32 * MiB))]
    assert cgfs.read(limit) == str(32 * MiB) and cgfs.read(memsw) == "-1"


def test_v1_swap_without_swap_accounting(v1, tmp_path):
    cg, cgfs = v1
    (tmp_path / "memory/zoned/ctr/memory.memsw.limit_in_bytes").unlink()
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})  # "no swap": limit only
    assert cgfs.writes == [("memory/zoned/ctr/memory.limit_in_bytes", str(64 * MiB))]
    cgfs.writes.clear()
    with pytest.raises(CgroupError, match="memory.swap: swap accounting is not enabled") as e:
        cg.apply({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}})
    assert (e.value.errno, e.value.field) == (errno.EOPNOTSUPP, "memory.swap")
    assert cgfs.writes == []


def test_v1_device_rules_become_deny_then_allow_writes_in_order(v1):
    cg, cgfs = v1
    cg.apply({"devices": [
        {"allow": False, "access": "rwm"},                                   # deny all
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "access": "rw"},         # any minor
        {"allow": True, "type": "a", "major": 10, "minor": 200, "access": "mr"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
    ]})
    allow, deny = "devices/zoned/ctr/devices.allow", "devices/zoned/ctr/devices.deny"
    assert cgfs.writes == [
        (deny, "a"),            # the spec's own deny-all (no second one in front of it)
        (allow, "c 1:3 rwm"),
        (allow, "c 136:* rw"),
        (allow, "b 10:200 rm"),  # type "a" with numbers: both block and char
        (allow, "c 10:200 rm"),
        (deny, "c 1:3 w"),
    ]
    cgfs.writes.clear()
    cg.apply({"devices": [{"allow": True, "type": "c", "major": 5, "minor": 1}]})
    assert cgfs.writes == [(deny, "a"), (allow, "c 5:1 rwm")]  # deny-all comes first anyway


def test_v1_a_bad_device_rule_is_refused_before_any_write(v1):
    cg, cgfs = v1
    rules = [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "access": "rx"}]
    with pytest.raises(CgroupError, match=r"devices\[1\]\.access") as e:
        cg.apply({"devices": rules})
    assert (e.value.errno, e.value.field) == (errno.EINVAL, "devices[1]")
    assert cgfs.writes == []


def test_v1_a_controller_that_is_not_mounted_names_the_field(tmp_path, monkeypatch):
    cg = V1Cgroup(PATH, make_v1(tmp_path, omit=("pids",)))
    cgfs = CgroupFS(tmp_path, monkeypatch)
    with pytest.raises(CgroupError, match="pids.limit: the pids controller is not mounted") as e:
        cg.apply({"pids": {"limit": 10}})
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(CgroupError, match="memory.limit: expected an integer"):
        cg.apply({"memory": {"limit": "64m"}})
    assert cgfs.writes == []


def test_v1_add_puts_the_process_in_every_hierarchy_and_the_cgroup2_twin(tmp_path, monkeypatch):
    cg = V1Cgroup(PATH, make_v1(tmp_path, cgroup2=("memory", "hugetlb")))
    cgfs = CgroupFS(tmp_path, monkeypatch)
    cg.add(4242)
    assert sorted(p for p, v in cgfs.writes if v == "4242") == sorted(
        [f"{m}/zoned/ctr/cgroup.procs" for m in V1_LAYOUT] + ["unified/zoned/ctr/cgroup.procs"])
    assert cg.pids() == [4242]


def test_hybrid_hugetlb_goes_to_cgroup2_with_the_controller_delegated(tmp_path, monkeypatch):
    cg = V1Cgroup(PATH, make_v1(tmp_path, cgroup2=("memory", "hugetlb")))
    cgfs = CgroupFS(tmp_path, monkeypatch)
    cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MiB}]})
    assert cgfs.writes == [
        ("unified/cgroup.subtree_control", "+hugetlb"),
        ("unified/zoned/cgroup.subtree_control", "+hugetlb"),
        ("unified/zoned/ctr/hugetlb.2MB.max", str(8 * MiB)),
    ]
    with pytest.raises(CgroupError, match=r"hugepageLimits\[0\]\.pageSize: invalid"):
        cg.apply({"hugepageLimits": [{"pageSize": "../2MB", "limit": 1}]})


def test_v1_freeze_and_thaw(v1):
    cg, cgfs = v1
    assert not cg.frozen()
    cg.freeze(timeout=1.0)
    assert cgfs.read("freezer/zoned/ctr/freezer.state") == "FROZEN" and cg.frozen()
    cg.thaw()
    assert cgfs.read("freezer/zoned/ctr/freezer.state") == "THAWED" and not cg.frozen()


def test_v1_stats(v1):
    cg, _ = v1
    st = cg.stats()
    assert st["memory"]["usage"] == 3 * MiB and st["memory"]["peak"] == 5 * MiB
    assert st["memory"]["limit"] == UNLIMITED  # v1's huge "no limit"
    assert st["memory"]["swap_usage"] == 1 * MiB  # memsw - usage
    assert st["memory"]["oom_kills"] == 1 and st["memory"]["stat"]["rss"] == 8192
    assert st["cpu"]["usage_ns"] == 123456789 and st["cpu"]["user_ns"] == 100000000
    assert (st["cpu"]["nr_periods"], st["cpu"]["throttled_periods"]) == (7, 2)
    assert st["pids"] == {"current": 3, "limit": UNLIMITED, "peak": None}
    assert st["frozen"] is False


# -- cgroup v2 ----------------------------------------------------------------------------

V2_FILES = {
    "cgroup.procs": "", "cgroup.freeze": "0", "cgroup.events": "populated 1\nfrozen 0\n",
    "memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.high": "max",
    "memory.current": str(3 * MiB), "memory.peak": str(5 * MiB),
    "memory.swap.current": str(MiB), "memory.events": "low 0\nhigh 0\nmax 4\noom 2\n"
    "oom_kill 1\n", "memory.stat": "anon 8192\nfile 4096\n",
    "cpu.max": "max 100000", "cpu.weight": "100", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\n"
    "nr_throttled 3\nthrottled_usec 20\n",
    "cpuset.cpus": "", "cpuset.mems": "",
    "pids.max": "max", "pids.current": "2", "pids.peak": "5",
    "io.weight": "default 100", "io.max": "",
}


@pytest.fixture
def v2(tmp_path, monkeypatch):
    """A cgroup2 mount offering cpuset cpu io memory pids (no hugetlb, rdma, misc), with
    /zoned/ctr's files in place."""
    offered = "cpuset cpu io memory pids"
    for d in (tmp_path, tmp_path / "zoned"):
        set_fixture(d, "cgroup.controllers", offered)
        set_fixture(d, "cgroup.subtree_control")
    for name, content in V2_FILES.items():
        set_fixture(tmp_path / "zoned" / "ctr", name, content)
    h = Hierarchy(str(tmp_path), "cgroup2", "", tuple(offered.split()))
    return V2Cgroup(PATH, h), CgroupFS(tmp_path, monkeypatch)


def test_v2_create_delegates_the_offered_controllers_down_the_path(v2):
    cg, cgfs = v2
    cg.create()
    want = "+cpuset +cpu +io +memory +pids"  # V2_CONTROLLERS' order, only those offered
    assert cgfs.writes == [("cgroup.subtree_control", want),
                           ("zoned/cgroup.subtree_control", want)]
    cgfs.writes.clear()
    cg.create()  # already enabled: nothing to write
    assert cgfs.writes == []


def test_v2_limits_cpu_quota_pids(v2):
    cg, cgfs = v2
    cg.apply({"pids": {"limit": 100}, "memory": {"limit": 64 * MiB, "reservation": 16 * MiB},
              "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1",
                      "burst": 1000, "idle": 0}})
    assert cgfs.writes == [
        ("zoned/ctr/cpuset.cpus", "0-1"),
        ("zoned/ctr/cpu.weight", "39"),           # shares 1024 -> weight, runc's formula
        ("zoned/ctr/cpu.max", "50000 200000"),
        ("zoned/ctr/cpu.max.burst", "1000"),
        ("zoned/ctr/cpu.idle", "0"),
        ("zoned/ctr/memory.max", str(64 * MiB)),
        ("zoned/ctr/memory.low", str(16 * MiB)),
        ("zoned/ctr/pids.max", "100"),
    ]
    cg.apply({"cpu": {"period": 50000}, "pids": {"limit": -1}, "memory": {"limit": -1}})
    assert cgfs.read("zoned/ctr/cpu.max") == "50000 50000"  # the quota is kept
    assert cgfs.read("zoned/ctr/pids.max") == "max"
    assert cgfs.read("zoned/ctr/memory.max") == "max"
    assert cgfs.read("zoned/ctr/memory.swap.max") == "max"  # unlimited memory: swap too
    cg.apply({"cpu": {"quota": -1}})
    assert cgfs.read("zoned/ctr/cpu.max") == "max"


def test_v2_swap_is_memory_plus_swap_in_the_spec_and_swap_alone_in_v2(v2):
    cg, cgfs = v2
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 96 * MiB}})
    assert cgfs.writes == [("zoned/ctr/memory.swap.max", str(32 * MiB)),
                           ("zoned/ctr/memory.max", str(64 * MiB))]
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})
    assert cgfs.read("zoned/ctr/memory.swap.max") == "0"
    cg.apply({"memory": {"limit": 64 * MiB, "swap": -1}})
    assert cgfs.read("zoned/ctr/memory.swap.max") == "max"


def test_v2_swap_below_the_limit_is_refused_before_any_write(v2):
    cg, cgfs = v2
    with pytest.raises(CgroupError, match="memory.swap: .* is below memory.limit") as e:
        cg.apply({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}})
    assert (e.value.errno, e.value.field) == (errno.EINVAL, "memory.swap")
    with pytest.raises(CgroupError, match="memory.swap: a swap limit needs a memory limit"):
        cg.apply({"memory": {"swap": 32 * MiB}})
    assert cgfs.writes == []


def test_v2_swap_without_swap_accounting(v2, tmp_path):
    cg, cgfs = v2
    (tmp_path / "zoned/ctr/memory.swap.max").unlink()
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})  # no swap: fine
    assert cgfs.writes == [("zoned/ctr/memory.max", str(64 * MiB))]
    with pytest.raises(CgroupError, match="swap accounting is not available") as e:
        cg.apply({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}})
    assert e.value.errno == errno.EOPNOTSUPP


@pytest.mark.parametrize("memory, field", [
    ({"swappiness": 10}, "memory.swappiness"),
    ({"disableOOMKiller": True}, "memory.disableOOMKiller"),
    ({"kernelTCP": MiB}, "memory.kernelTCP"),
])
def test_v2_refuses_what_v2_cannot_enforce(v2, memory, field):
    cg, cgfs = v2
    with pytest.raises(CgroupError, match=f"{field}: not supported on cgroup v2") as e:
        cg.apply({"memory": memory})
    assert (e.value.errno, e.value.field) == (errno.EOPNOTSUPP, field)
    assert cgfs.writes == []


def test_v2_unified_keys_are_written_as_is_and_checked_as_file_names(v2):
    cg, cgfs = v2
    cg.apply({"unified": {"memory.high": 48 * MiB}})
    assert cgfs.writes == [("zoned/ctr/memory.high", str(48 * MiB))]
    for key in ("../memory.high", "memory", ".hidden"):
        with pytest.raises(CgroupError, match="not a cgroup file name"):
            cg.apply({"unified": {key: "1"}})
    with pytest.raises(CgroupError, match="controller 'hugetlb' not enabled") as e:
        cg.apply({"unified": {"hugetlb.2MB.max": "1"}})
    assert e.value.errno == errno.ENOENT


def test_v2_writes_to_a_cgroup_that_does_not_exist_say_so(tmp_path, monkeypatch):
    h = Hierarchy(str(tmp_path), "cgroup2", "", ("pids",))
    cg = V2Cgroup("/zoned/missing", h)
    with pytest.raises(CgroupError, match="pids.limit: cgroup .*/zoned/missing does not "
                       r"exist \(create\(\) it first\)") as e:
        cg.apply({"pids": {"limit": 5}})
    assert e.value.errno == errno.ENOENT and not cg.exists()


def test_v2_stats_and_frozen(v2, tmp_path):
    cg, _ = v2
    st = cg.stats()
    assert st["memory"]["usage"] == 3 * MiB and st["memory"]["limit"] == UNLIMITED
    assert st["memory"]["swap_usage"] == MiB
    assert (st["memory"]["oom_kills"], st["memory"]["oom_events"]) == (1, 2)
    assert st["cpu"]["usage_ns"] == 1500 * 1000 and st["cpu"]["throttled_ns"] == 20 * 1000
    assert st["pids"] == {"current": 2, "limit": UNLIMITED, "peak": 5}
    assert st["frozen"] is False
    set_fixture(tmp_path / "zoned" / "ctr", "cgroup.events", "populated 1\nfrozen 1\n")
    assert cg.frozen()


# -- the shared memory cgroup (zoned.runtime.cgroup_paths) --------------------------------

SHARED_PATH = "/zoned/@shared-memory/ctr"


def test_v1_shared_memory_is_joined_but_never_read_killed_or_removed(tmp_path, monkeypatch):
    """Its memory cgroup is the parent, which other zones share: add() moves into it; what
    pids(), kill() and removal act on (directories()) never includes it."""
    hs = make_v1(tmp_path)
    for mnt in V1_LAYOUT:
        own = "" if mnt == "memory" else "ctr"
        set_fixture(tmp_path / mnt / "zoned" / "@shared-memory" / own, "cgroup.procs")
    cg = V1Cgroup(SHARED_PATH, hs, shared_memory=True)
    cgfs = CgroupFS(tmp_path, monkeypatch)
    cg.add(4242)
    assert sorted(p for p, v in cgfs.writes if v == "4242") == sorted(
        [f"{m}/zoned/@shared-memory/ctr/cgroup.procs" for m in V1_LAYOUT if m != "memory"]
        + ["memory/zoned/@shared-memory/cgroup.procs"])
    (tmp_path / "memory/zoned/@shared-memory/cgroup.procs").write_text("777\n4242\n")
    assert cg.pids() == [4242]  # 777, another zone's, is not ours to signal
    assert not [d for d in cg.directories() if "/memory/" in d]
    assert cg.stats()["memory"]["usage"] is None  # not the group's figure


def test_v1_shared_memory_needs_memory_in_a_hierarchy_of_its_own(tmp_path):
    hs = [Hierarchy(str(tmp_path / "cpu,memory"), "cgroup", "cpu,memory", ("cpu", "memory"))]
    with pytest.raises(CgroupError, match="memory in a v1 hierarchy of its own"):
        V1Cgroup(SHARED_PATH, hs, shared_memory=True)


def test_v2_shared_memory_node_delegates_every_controller_but_memory(tmp_path, monkeypatch):
    offered = "cpuset cpu io memory pids"
    for d in (tmp_path, tmp_path / "zoned", tmp_path / "zoned" / "@shared-memory"):
        set_fixture(d, "cgroup.controllers", offered)
        set_fixture(d, "cgroup.subtree_control")
    h = Hierarchy(str(tmp_path), "cgroup2", "", tuple(offered.split()))
    cg = V2Cgroup(SHARED_PATH, h, shared_memory=True)
    cgfs = CgroupFS(tmp_path, monkeypatch)
    cg.create()
    want = "+cpuset +cpu +io +memory +pids"
    assert cgfs.writes == [("cgroup.subtree_control", want),
                           ("zoned/cgroup.subtree_control", want),
                           ("zoned/@shared-memory/cgroup.subtree_control",
                            "+cpuset +cpu +io +pids")]


def test_the_memory_cgroup_annotation_is_checked_and_names_the_field(monkeypatch):
    from zoned.errors import ConfigError
    from zoned.runtime.cgroup_paths import (ANN_MEMORY_CGROUP, shared_memory_path,
                                            shares_memory_cgroup)

    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def cfg(value, **linux):
        return {"annotations": {ANN_MEMORY_CGROUP: value}, "linux": linux}

    assert not shares_memory_cgroup({}) and not shares_memory_cgroup(cfg("own"))
    assert shares_memory_cgroup(cfg("shared", resources={"memory": {"limit": None}}))
    for bad, field in [(cfg("half"), f"annotations.{ANN_MEMORY_CGROUP} 'half'"),
                       (cfg("shared", resources={"memory": {"reservation": 1}}),
                        "linux.resources.memory.reservation"),
                       (cfg("shared", cgroupsPath="/x/y"), "linux.cgroupsPath"),
                       ({**cfg("shared"), "process": {"capabilities": {
                           "effective": ["CAP_CHOWN"], "bounding": ["CAP_SYS_ADMIN"]}}},
                        "process.capabilities.bounding: CAP_SYS_ADMIN")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            shares_memory_cgroup(bad)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="shared needs root"):
        shares_memory_cgroup(cfg("shared"))
    assert shared_memory_path("/zoned/x") == "/zoned/@shared-memory/x"


# -- the rest of the package ---------------------------------------------------------------

def test_device_filter_is_pure():
    """The v2 device program is assembled without the kernel: deny-all ends in r0 = 0."""
    deny_all = device_filter([])
    assert deny_all[-16:] == insn(0xB7, 0, imm=0) + insn(0x95)
    allow_all = device_filter([{"allow": True, "access": "rwm"}])
    assert allow_all[-16:] == insn(0xB7, 0, imm=1) + insn(0x95)
    with pytest.raises(CgroupError, match=r"devices\[0\]\.type"):
        device_filter([{"allow": True, "type": "x"}])


def test_importing_the_package_loads_nothing_and_run_never_loads_bpf_stats_gc():
    """`import zoned.cgroups` is free; what `zoned run` uses (Cgroup, hierarchies) loads
    the drivers only."""
    code = ("import sys, zoned.cgroups as c\n"
            "mods = lambda: sorted(m[14:] for m in sys.modules if m.startswith('zoned.cgroups.'))\n"
            "print(mods())\n"
            "c.Cgroup, c.hierarchies, c.CgroupError\n"
            "print(mods())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "[]"
    loaded = set(eval(out[1]))
    assert {"base", "detection", "fs"} <= loaded
    assert not loaded & {"bpf", "stats", "gc", "devices", "v1", "v2"}


class _RacedCgroup:
    """A cgroup whose first create()s meet a parent removed meanwhile, as the kernel
    reports it: ENOENT for a mkdir below it, ENODEV for a file written after its rmdir."""

    def __init__(self, errors: list[int]):
        self.errors, self.created, self.applied, self.discarded = list(errors), 0, None, 0

    def create(self) -> None:
        if self.errors:
            err = self.errors.pop(0)
            raise CgroupError(f"create: {os.strerror(err)}", err)
        self.created += 1

    def apply(self, resources) -> None:
        self.applied = resources


@pytest.mark.parametrize("errors, made", [([errno.ENOENT], True), ([errno.ENODEV], True),
                                          ([errno.ENODEV, errno.ENOENT], True),
                                          ([errno.ENODEV] * 3, False),
                                          ([errno.EACCES], False)])
def test_make_cgroup_retries_where_a_parent_was_removed_meanwhile(monkeypatch, errors, made):
    """Two zoned processes: one removes an empty parent (gc, a test root's teardown)
    while the other creates a cgroup below it. make_cgroup tries again for that (up to
    3 times), and for nothing else."""
    from zoned.runtime import steps

    cg = _RacedCgroup(errors)
    monkeypatch.setattr(steps, "discard_cgroup", lambda c: setattr(c, "discarded", 1))
    if made:
        assert steps.make_cgroup(cg, {}) is cg
        assert cg.created == 1 and cg.applied is not None and not cg.discarded
    else:
        with pytest.raises(CgroupError) as e:
            steps.make_cgroup(cg, {})
        assert e.value.errno == errors[-1] and cg.discarded and not cg.created
