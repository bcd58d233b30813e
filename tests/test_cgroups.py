"""zoned.cgroups against the host's real cgroups (root, no mocks). Every cgroup lives under
/zoned-test/<random> and is removed in teardown."""
from __future__ import annotations

import errno
import os
import signal
import time
import traceback
import uuid

import pytest

from zoned import cgroups
from zoned.cgroups import bpf, detection, devices
from zoned.cgroups import Cgroup, CgroupError, Hierarchy, V1Cgroup, V2Cgroup, open_cgroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root and real cgroups")

PARENT = "/zoned-test"
MiB = 1 << 20
NO_V2 = "cgroup v2 controllers not available here"


def _unified() -> Hierarchy | None:
    return next((h for h in cgroups.hierarchies() if h.fstype == "cgroup2"), None)


def _all_dirs(path: str) -> list[str]:
    return [h.mountpoint + path for h in cgroups.hierarchies()]


def _v2_has(*ctrls: str) -> bool:
    return cgroups.detect() == "v2" and set(ctrls) <= set(_unified().controllers)


@pytest.fixture(scope="session", autouse=True)
def _remove_parent():
    yield
    for d in _all_dirs(PARENT):  # only our own, now-empty parent; never recursive
        try:
            os.rmdir(d)
        except OSError:
            pass


class Children:
    """Forked test processes, each told to go only once it is in its cgroup; reaped and
    killed in teardown whatever happened."""

    def __init__(self):
        self.pids: list[int] = []

    def spawn(self, cg: Cgroup | None, fn) -> int:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.close(w)
                os.read(r, 1)
                code = fn() or 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(r)
        self.pids.append(pid)
        if cg is not None:
            cg.add(pid)
        os.write(w, b"x")
        os.close(w)
        return pid

    def wait(self, pid: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            p, status = os.waitpid(pid, os.WNOHANG)
            if p:
                self.pids.remove(pid)
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"child {pid} did not exit in {timeout}s")
            time.sleep(0.01)

    def cleanup(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except ProcessLookupError:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass


@pytest.fixture
def kids():
    k = Children()
    yield k
    k.cleanup()


def _cleanup(cg: Cgroup) -> None:
    try:
        cg.thaw()
    except CgroupError:
        pass
    try:
        cg.kill(timeout=5)
    except CgroupError:
        pass
    cg.destroy()


@pytest.fixture
def cg():
    c = open_cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}")
    c.create()
    yield c
    _cleanup(c)
    assert not c.exists()


@pytest.fixture
def v2cg():
    """A V2Cgroup on this host's cgroup2 mount with no controllers: exercises the v2 code
    that needs none (create/add/pids/freeze/kill/devices/destroy)."""
    u = _unified()
    if u is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    c = V2Cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}", u, controllers=())
    c.create()
    yield c
    _cleanup(c)
    assert not c.exists()


def _busy():
    while True:
        pass


def _cpu_ns(cg: Cgroup) -> int:
    return cg.stats()["cpu"]["usage_ns"]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# -- detection ----------------------------------------------------------------------------

def test_detect_matches_this_host():
    text = _read("/proc/self/mountinfo")
    v1_memory = any(" - cgroup " in ln and ",memory" in ln for ln in text.splitlines())
    v2 = any(" - cgroup2 " in ln for ln in text.splitlines())
    expected = ("hybrid" if v2 else "v1") if v1_memory else "v2"
    assert cgroups.detect() == expected
    if os.path.isdir("/sys/fs/cgroup/memory") and os.path.isdir("/sys/fs/cgroup/unified"):
        assert cgroups.detect() == "hybrid"  # this CI host
    assert cgroups.detect() is cgroups.detect()  # cached


def test_hierarchies_list_controllers():
    hs = cgroups.hierarchies()
    assert all(isinstance(h, Hierarchy) for h in hs)
    assert all(h.fstype in ("cgroup", "cgroup2") for h in hs)
    if cgroups.detect() == "v2":
        assert len(hs) == 1 and hs[0].fstype == "cgroup2" and hs[0].options == ""
        return
    ctrls = {c for h in hs if h.fstype == "cgroup" for c in h.controllers}
    assert {"memory", "pids", "cpu", "cpuacct", "freezer", "devices"} <= ctrls
    mem = next(h for h in hs if "memory" in h.controllers)
    assert mem.options.split(",") == list(mem.controllers) and os.path.isdir(mem.mountpoint)
    named = [h for h in hs if h.options.startswith("name=")]
    assert all(h.controllers == () for h in named)
    if cgroups.detect() == "hybrid":
        u = _unified()
        assert u.options == "" and os.path.exists(os.path.join(u.mountpoint, "cgroup.procs"))


MI_V2 = """\
25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
MI_V1 = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
33 30 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/net_cls,net_prio rw shared:17 - cgroup cgroup rw,net_cls,net_prio
90 80 0:31 /docker/abc /var/lib/x/rootfs/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
MI_HYBRID = MI_V1 + """\
32 30 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
"""
MI_V2_PLUS_NET_CLS = MI_V2 + """\
40 25 0:40 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls
41 1 0:41 / /mnt/a\\040b rw - cgroup2 cgroup2 rw
"""
SUBSYS = {"cpu", "cpuacct", "memory", "net_cls", "net_prio", "pids"}


def test_parse_mountinfo_and_classify():
    v2 = detection.parse_mountinfo(MI_V2, SUBSYS)
    assert [(h.mountpoint, h.fstype, h.options) for h in v2] == [
        ("/sys/fs/cgroup", "cgroup2", "")]
    assert detection.classify(v2) == "v2"
    v1 = detection.parse_mountinfo(MI_V1, SUBSYS)
    assert [(h.mountpoint, h.options, h.controllers) for h in v1] == [
        ("/sys/fs/cgroup/systemd", "name=systemd", ()),
        ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/memory", "memory", ("memory",)),  # the bind mount is not listed
        ("/sys/fs/cgroup/net_cls,net_prio", "net_cls,net_prio", ("net_cls", "net_prio")),
    ]
    assert detection.classify(v1) == "v1"
    assert detection.classify(detection.parse_mountinfo(MI_HYBRID, SUBSYS)) == "hybrid"
    mixed = detection.parse_mountinfo(MI_V2_PLUS_NET_CLS, SUBSYS)
    assert detection.classify(mixed) == "v2"  # a stray net_cls v1 mount doesn't make it v1
    assert mixed[-1].mountpoint == "/mnt/a b"
    with pytest.raises(CgroupError, match="no cgroup file system"):
        detection.classify([])


def test_paths_are_confined():
    assert open_cgroup("zoned-test/a/../b").path == "/zoned-test/b"
    assert open_cgroup("/../../x").path == "/x"
    with pytest.raises(CgroupError, match="root cgroup"):
        open_cgroup("/")


# -- conversions --------------------------------------------------------------------------

def test_conversions_follow_runc():
    assert cgroups.shares_to_weight(1024) == 39
    assert cgroups.shares_to_weight(2) == 1
    assert cgroups.shares_to_weight(262144) == 10000
    assert cgroups.blkio_to_io_weight(10) == 1
    assert cgroups.blkio_to_io_weight(500) == 4950
    assert cgroups.blkio_to_io_weight(1000) == 10000
    assert cgroups.swap_to_v2(None, None) is None
    assert cgroups.swap_to_v2(None, -1) == -1
    assert cgroups.swap_to_v2(-1, 64 * MiB) == -1
    assert cgroups.swap_to_v2(96 * MiB, 64 * MiB) == 32 * MiB
    assert cgroups.swap_to_v2(64 * MiB, 64 * MiB) == 0
    with pytest.raises(CgroupError, match="memory.swap"):
        cgroups.swap_to_v2(32 * MiB, 64 * MiB)
    with pytest.raises(CgroupError, match="needs a memory limit"):
        cgroups.swap_to_v2(32 * MiB, None)


def test_v1_device_writes():
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "wr"},
             {"allow": True, "type": "a", "access": "m"}]
    assert devices.v1_device_writes(rules) == [
        (False, "a"), (True, "c 1:3 rwm"), (True, "c 136:* rw"),
        (True, "b *:* m"), (True, "c *:* m")]
    assert devices.v1_device_writes([])[0] == (False, "a")
    with pytest.raises(CgroupError, match=r"devices\[0\].access"):
        devices.v1_device_writes([{"allow": True, "access": "rx"}])


def test_device_filter_program_shape():
    deny_all = cgroups.device_filter([])
    assert len(deny_all) % 8 == 0 and len(deny_all) // 8 == 8  # 6 loads + return 0
    allow_all = cgroups.device_filter([{"allow": False, "access": "rwm"},
                                       {"allow": True, "access": "rwm"}])
    assert len(allow_all) // 8 == 8  # 6 loads + return 1: the deny before it is dead code
    assert allow_all[-16:-8] == bpf.insn(0xB7, 0, imm=1)


# -- lifecycle ----------------------------------------------------------------------------

def test_create_apply_destroy_leaves_nothing():
    path = f"{PARENT}/{uuid.uuid4().hex[:12]}"
    c = open_cgroup(path)
    assert not c.exists()
    c.create()
    c.create()  # idempotent
    assert c.exists()
    assert all(os.path.isdir(d) for d in _all_dirs(path))
    c.apply({"memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 64 * MiB},
             "pids": {"limit": 50},
             "cpu": {"shares": 512, "quota": 50000, "period": 100000}})
    st = c.stats()
    assert st["memory"]["limit"] == 64 * MiB
    assert st["pids"]["limit"] == 50 and st["pids"]["current"] == 0
    assert st["frozen"] is False
    assert path in cgroups.list_paths(PARENT)
    c.destroy()
    assert not c.exists()
    assert not any(os.path.exists(d) for d in _all_dirs(path))
    assert path not in cgroups.list_paths(PARENT)
    c.destroy()  # idempotent: missing is fine


@pytest.mark.skipif(cgroups.detect() == "v2", reason="v1 file layout")
def test_v1_files_written(cg):
    cg.apply({"memory": {"limit": 64 * MiB, "swap": 96 * MiB, "reservation": 16 * MiB,
                         "swappiness": 10},
              "cpu": {"shares": 512, "quota": 20000, "period": 50000, "burst": 1000,
                      "cpus": "0", "mems": "0"},
              "pids": {"limit": -1}})
    d = lambda ctrl, f: _read(os.path.join(cg._by_ctrl[ctrl], f))  # noqa: E731
    assert d("memory", "memory.limit_in_bytes") == str(64 * MiB)
    assert d("memory", "memory.soft_limit_in_bytes") == str(16 * MiB)
    if os.path.exists(os.path.join(cg._by_ctrl["memory"], "memory.memsw.limit_in_bytes")):
        assert d("memory", "memory.memsw.limit_in_bytes") == str(96 * MiB)
    assert d("cpu", "cpu.shares") == "512"
    assert d("cpu", "cpu.cfs_quota_us") == "20000"
    assert d("cpu", "cpu.cfs_period_us") == "50000"
    assert d("cpuset", "cpuset.cpus") == "0"
    assert d("pids", "pids.max") == "max"
    # lowering memory below memsw and then raising both keeps memsw >= limit at each step
    cg.apply({"memory": {"limit": 256 * MiB, "swap": 512 * MiB}})
    assert d("memory", "memory.limit_in_bytes") == str(256 * MiB)
    cg.apply({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    assert d("memory", "memory.limit_in_bytes") == str(32 * MiB)
    cg.apply({"memory": {"limit": -1, "swap": -1}})
    assert cg.stats()["memory"]["limit"] == -1


@pytest.mark.skipif(cgroups.detect() == "v2", reason="v1 cpuset semantics")
def test_v1_cpuset_inherited_so_add_works(cg, kids):
    """A fresh v1 cpuset has empty cpus/mems and refuses tasks unless create() fills them."""
    d = cg._by_ctrl["cpuset"]
    assert _read(os.path.join(d, "cpuset.cpus")) != ""
    assert _read(os.path.join(d, "cpuset.mems")) != ""
    pid = kids.spawn(cg, lambda: 0)
    assert os.WEXITSTATUS(kids.wait(pid)) == 0


@pytest.mark.skipif(cgroups.detect() == "v2", reason="v1 cpuset semantics")
def test_v1_cpusets_zoned_makes_above_a_container_copy_to_their_children(kids, monkeypatch):
    """The cpusets create() makes above the container's get cgroup.clone_children=1, so the
    kernel fills a new child's cpus/mems at mkdir: no cpuset.cpus write for the second
    container below them (each such write walks every cpuset on the host), and no mkdir
    but its own cgroup's. A parent that was there before keeps its flag, and its children
    are written as before."""
    from zoned.cgroups import fs, v1

    writes = []
    real = fs.write_file
    for mod in (fs, v1):  # write_field's and the driver's own
        monkeypatch.setattr(mod, "write_file", lambda p, v: (writes.append(p), real(p, v)))
    top = f"{PARENT}/{uuid.uuid4().hex[:12]}"
    made = [open_cgroup(f"{top}/mid/{n}") for n in ("a", "b")]
    cpuset = next(h.mountpoint for h in cgroups.hierarchies() if "cpuset" in h.controllers)
    try:
        made[0].create()
        for d in (top, f"{top}/mid"):
            assert _read(f"{cpuset}{d}/cgroup.clone_children") == "1"
        writes.clear()
        mkdirs = []
        real_mkdir = os.mkdir
        monkeypatch.setattr(os, "mkdir", lambda p, *a: (mkdirs.append(p), real_mkdir(p, *a)))
        made[1].create()
        monkeypatch.setattr(os, "mkdir", real_mkdir)
        assert not [p for p in writes if "/cpuset." in p]
        # below parents that exist: the container's cgroup alone, one mkdir a hierarchy
        assert sorted(mkdirs) == sorted([*made[1].dirs, *filter(None, [made[1].cgroup2_dir()])])
        b = f"{cpuset}{top}/mid/b"
        assert _read(f"{b}/cpuset.cpus") == _read(f"{cpuset}{top}/mid/cpuset.cpus") != ""
        assert _read(f"{b}/cpuset.mems") != ""
        pid = kids.spawn(made[1], lambda: 0)  # a task is taken: the cpuset is usable
        assert os.WEXITSTATUS(kids.wait(pid)) == 0
        # a parent made by someone else: untouched, and its new child still gets cpus
        other = open_cgroup(f"{top}/mid/a/inner")
        writes.clear()
        other.create()
        assert _read(f"{cpuset}{top}/mid/a/cgroup.clone_children") == "1"  # inherited
        assert _read(f"{cpuset}{top}/mid/a/inner/cpuset.cpus") != ""
        other.destroy()
        foreign = f"{cpuset}{top}/foreign"
        os.mkdir(foreign)
        for f in ("cpuset.cpus", "cpuset.mems"):
            with open(f"{foreign}/{f}", "w") as fh:
                fh.write(_read(f"{cpuset}{top}/{f}"))
        with open(f"{foreign}/cgroup.clone_children", "w") as fh:
            fh.write("0")
        below = open_cgroup(f"{top}/foreign/c")
        writes.clear()
        below.create()
        assert _read(f"{foreign}/cgroup.clone_children") == "0"
        assert [p for p in writes if p.endswith("/cpuset.cpus")] == [f"{foreign}/c/cpuset.cpus"]
        below.destroy()
    finally:
        for c in made:
            _cleanup(c)
        for d in (f"{top}/foreign", f"{top}/mid", top):
            for h in cgroups.hierarchies():
                try:
                    os.rmdir(h.mountpoint + d)
                except OSError:
                    pass


def test_add_pids_and_stats(cg, kids):
    def touch_8mib_and_wait():
        b = bytearray(8 * MiB)
        b[::4096] = b"\x01" * (8 * MiB // 4096)
        signal.pause()

    pid = kids.spawn(cg, touch_8mib_and_wait)
    assert cg.pids() == [pid]
    assert os.getpid() not in cg.pids()
    deadline = time.monotonic() + 5
    while (cg.stats()["memory"]["usage"] or 0) < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    st = cg.stats()
    assert st["pids"]["current"] == 1
    if st["memory"]["usage"] is not None:  # None: no memory controller (v2 without it)
        assert st["memory"]["usage"] >= 8 * MiB
        assert st["memory"]["peak"] >= st["memory"]["usage"]
    assert {"usage", "peak", "limit", "oom_kills"} <= set(st["memory"])
    assert {"usage_ns", "throttled_periods"} <= set(st["cpu"])
    cg.kill()
    assert cg.pids() == []
    assert os.WTERMSIG(kids.wait(pid)) == signal.SIGKILL


def _hog():
    chunks = []
    for _ in range(200):
        b = bytearray(MiB)
        b[::4096] = b"\x01" * (MiB // 4096)  # touch every page
        chunks.append(b)
    return 0


def test_memory_limit_oom_kills_child_not_us(cg, kids):
    if cgroups.detect() == "v2" and not _v2_has("memory"):
        pytest.skip(NO_V2)
    cg.apply({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    pid = kids.spawn(cg, _hog)
    status = kids.wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    st = cg.stats()["memory"]
    assert st["oom_kills"] >= 1
    assert st["peak"] <= 32 * MiB and st["limit"] == 32 * MiB


def _forker():
    n = 0
    try:
        for _ in range(30):
            if os.fork() == 0:
                try:
                    signal.pause()
                finally:
                    os._exit(0)
            n += 1
    except OSError as e:
        return 100 + n if e.errno == errno.EAGAIN else 1
    return 2


def test_pids_limit_makes_fork_fail_with_eagain(cg, kids):
    if cgroups.detect() == "v2" and not _v2_has("pids"):
        pytest.skip(NO_V2)
    cg.apply({"pids": {"limit": 10}})
    pid = kids.spawn(cg, _forker)
    # the child itself is one of the 10 tasks: 9 forks succeed, the 10th gets EAGAIN
    assert os.WEXITSTATUS(kids.wait(pid)) == 100 + 9
    assert cg.stats()["pids"]["limit"] == 10
    cg.kill()  # its 9 children, orphaned and paused
    assert cg.pids() == []


def test_cpu_quota_throttles(cg, kids):
    if cgroups.detect() == "v2" and not _v2_has("cpu"):
        pytest.skip(NO_V2)
    cg.apply({"cpu": {"quota": 20000, "period": 100000}})  # 0.2 CPU
    kids.spawn(cg, _busy)
    t0 = time.monotonic()
    before = _cpu_ns(cg)
    time.sleep(1.0)
    used = _cpu_ns(cg) - before
    wall = time.monotonic() - t0
    assert used < 0.5e9 * wall, f"{used / 1e9:.3f}s CPU in {wall:.3f}s"
    assert used > 0.05e9
    assert cg.stats()["cpu"]["throttled_periods"] > 0


def _freeze_thaw(c: Cgroup, kids: Children) -> None:
    pid = kids.spawn(c, _busy)
    stat = f"/proc/{pid}/stat"

    def ticks() -> int:
        f = _read(stat).rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime

    time.sleep(0.1)
    c.freeze()
    assert c.frozen()
    t1 = ticks()
    time.sleep(0.3)
    assert ticks() - t1 <= 1  # not running
    assert c.stats()["frozen"] is True
    c.thaw()
    assert not c.frozen()
    t2 = ticks()
    time.sleep(0.3)
    assert ticks() - t2 >= 5  # running again (busy loop: ~30 ticks)
    c.freeze()
    c.kill()  # a frozen cgroup can still be killed
    assert c.pids() == []
    assert not c.frozen()


def test_freeze_thaw(cg, kids):
    _freeze_thaw(cg, kids)


def test_kill_empties_cgroup_with_forking_processes(cg, kids):
    def tree():
        for _ in range(3):
            if os.fork() == 0:
                try:
                    while True:  # keep forking short-lived children
                        p = os.fork()
                        if p == 0:
                            os._exit(0)
                        os.waitpid(p, 0)
                finally:
                    os._exit(0)
        signal.pause()

    pid = kids.spawn(cg, tree)
    deadline = time.monotonic() + 30  # a loaded host forks slowly
    while len(cg.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cg.pids()) >= 4
    cg.kill()
    assert cg.pids() == []
    assert os.WTERMSIG(kids.wait(pid)) == signal.SIGKILL
    cg.kill()  # empty: nothing to do


def test_kill_with_other_signal_is_sent_once(cg, kids):
    pid = kids.spawn(cg, lambda: signal.pause())
    cg.kill(signal.SIGTERM)
    assert os.WTERMSIG(kids.wait(pid)) == signal.SIGTERM


def test_destroy_busy_times_out_then_works(kids):
    c = open_cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}")
    c.create()
    try:
        kids.spawn(c, lambda: signal.pause())
        t0 = time.monotonic()
        with pytest.raises(CgroupError, match="destroy: rmdir .*busy"):
            c.destroy(timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 2
        assert c.exists()
        c.kill()
        c.destroy()
        assert not c.exists()
        c.destroy()
    finally:
        _cleanup(c)


def test_destroy_removes_sub_cgroups():
    path = f"{PARENT}/{uuid.uuid4().hex[:12]}"
    c = open_cgroup(path)
    c.create()
    open_cgroup(path + "/inner/deeper").create()  # what a container in a cgroupns may do
    c.destroy()
    assert not any(os.path.exists(d) for d in _all_dirs(path))


def test_list_paths_and_remove_if_empty(kids):
    a, b = (f"{PARENT}/{uuid.uuid4().hex[:12]}" for _ in range(2))
    ca, cb = open_cgroup(a), open_cgroup(b)
    try:
        ca.create()
        cb.create()
        kids.spawn(cb, lambda: signal.pause())
        assert {a, b} <= set(cgroups.list_paths(PARENT))
        assert cgroups.remove_if_empty(a) is True
        assert cgroups.remove_if_empty(a) is True  # already gone
        assert cgroups.remove_if_empty(b) is False  # busy
        assert cb.exists() and not ca.exists()
        cb.kill()
        assert cgroups.remove_if_empty(b) is True
        assert not ({a, b} & set(cgroups.list_paths(PARENT)))
    finally:
        _cleanup(ca)
        _cleanup(cb)


def test_devices_allow_list(cg, kids):
    if cgroups.detect() == "v2":
        pytest.skip("covered by test_v2_devices_bpf")
    cg.apply({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3,
                           "access": "rwm"}]})
    assert _read(os.path.join(cg._by_ctrl["devices"], "devices.list")) == "c 1:3 rwm"

    def probe():
        os.close(os.open("/dev/null", os.O_RDWR))
        try:
            os.close(os.open("/dev/zero", os.O_RDONLY))
        except PermissionError:
            return 0
        return 1

    assert os.WEXITSTATUS(kids.wait(kids.spawn(cg, probe))) == 0
    os.close(os.open("/dev/zero", os.O_RDONLY))  # we, outside the cgroup, still can


# -- errors -------------------------------------------------------------------------------

def test_bad_values_raise_clear_errors(cg):
    with pytest.raises(CgroupError, match=r"^memory.limit: expected an integer, got 'lots'$"):
        cg.apply({"memory": {"limit": "lots"}})
    with pytest.raises(CgroupError, match=r"hugepageLimits\[0\].pageSize: invalid pageSize"):
        cg.apply({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]})
    with pytest.raises(CgroupError, match=r"^devices\[1\].type"):
        cg.apply({"devices": [{"allow": False}, {"allow": True, "type": "x"}]})
    e = None
    try:
        cg.apply({"pids": {"limit": 10}, "cpu": {"cpus": "9999"}})
    except CgroupError as err:
        e = err
    assert e is not None and isinstance(e, OSError)
    assert str(e).startswith("cpu.cpus: writing '9999' to ") and "cpuset.cpus" in str(e)
    assert "\n" not in str(e) and e.field == "cpu.cpus" and e.errno in (errno.EINVAL, errno.ERANGE)
    cg.apply({"bogus": 1, "memory": {"bogus": 2}})  # unknown fields: logged, not fatal


@pytest.mark.skipif(cgroups.detect() == "v2", reason="v1/hybrid only")
def test_unsupported_on_v1_raise():
    v1_only = [h for h in cgroups.hierarchies() if h.fstype == "cgroup"]
    c = V1Cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}", v1_only)  # as on a pure-v1 host
    with pytest.raises(CgroupError, match=r"^unified: .*cgroup v1 only"):
        c.apply({"unified": {"memory.high": "1G"}})
    c.apply({"unified": {}})  # empty is fine
    ctrls = {x for h in v1_only for x in h.controllers}
    if "net_cls" not in ctrls:
        with pytest.raises(CgroupError, match=r"^network.classID: the net_cls controller is "
                                              r"not mounted"):
            c.apply({"network": {"classID": 0x100001}})
    if "rdma" not in ctrls and "rdma" not in (_unified() or Hierarchy("", "", "", ())).controllers:
        with pytest.raises(CgroupError, match=r"^rdma: the rdma controller is not mounted"):
            c.apply({"rdma": {"mlx5_0": {"hcaHandles": 1}}})
    assert not c.exists()  # raising before anything was created


@pytest.mark.skipif(cgroups.detect() != "hybrid", reason="hybrid only")
def test_hybrid_unified_twin_and_unified_keys(cg, kids):
    u = cg.unified
    assert u is not None and os.path.isdir(u.dir)
    pid = kids.spawn(cg, lambda: signal.pause())
    assert _read(os.path.join(u.dir, "cgroup.procs")) == str(pid)  # tracked in v2 too
    with pytest.raises(CgroupError, match=r"^unified\['memory.high'\]: .*memory.high does "
                                          r"not exist \(controller 'memory' not enabled"):
        cg.apply({"unified": {"memory.high": "64M"}})
    cg.kill()
    assert os.WTERMSIG(kids.wait(pid)) == signal.SIGKILL


@pytest.mark.skipif(cgroups.detect() != "hybrid", reason="hybrid only")
def test_hybrid_hugetlb_through_cgroup2(cg):
    """hugetlb is often not mounted as v1 on hybrid hosts but available in cgroup2."""
    u = cg.unified
    if "hugetlb" in cg._by_ctrl or "hugetlb" not in u.hierarchy.controllers:
        pytest.skip("hugetlb is not a cgroup2-only controller here")
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages")
    root = os.path.join(u.root, "cgroup.subtree_control")
    before = _read(root).split()
    try:
        cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]})
        assert _read(os.path.join(u.dir, "hugetlb.2MB.max")) == str(4 * MiB)
    finally:
        _cleanup(cg)
        parent = u.root + PARENT
        try:
            os.rmdir(parent)  # our parent has hugetlb enabled; drop it before the root
        except OSError:
            pass
        if "hugetlb" not in before and not os.path.isdir(parent):
            with open(root, "w") as f:  # leave the host as we found it
                f.write("-hugetlb")


# -- cgroup v2 ----------------------------------------------------------------------------

def test_v2_lifecycle_without_controllers(v2cg, kids):
    c = v2cg
    assert c.exists() and os.path.isdir(c.dir)
    pid = kids.spawn(c, lambda: signal.pause())
    assert c.pids() == [pid]
    st = c.stats()
    assert st["cpu"]["usage_ns"] is not None  # cpu.stat's basics need no controller
    assert st["memory"]["usage"] is None or cgroups.detect() == "v2"
    c.kill()  # cgroup.kill
    assert c.pids() == []
    assert os.WTERMSIG(kids.wait(pid)) == signal.SIGKILL
    c.destroy()
    assert not c.exists()
    c.destroy()


def test_v2_freeze_thaw(v2cg, kids):
    if not os.path.exists(os.path.join(v2cg.dir, "cgroup.freeze")):
        pytest.skip("kernel without cgroup.freeze")
    _freeze_thaw(v2cg, kids)


def test_v2_devices_bpf(v2cg, kids):
    """The v2 device allow-list is an eBPF program; it works on any cgroup2 directory."""
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]
    v2cg.apply({"devices": rules})
    v2cg.apply({"devices": rules})  # re-apply replaces, doesn't stack

    def probe():
        out = 0
        for bit, (path, flags) in enumerate((("/dev/null", os.O_RDWR),
                                             ("/dev/zero", os.O_RDONLY),
                                             ("/dev/zero", os.O_RDWR),
                                             ("/dev/full", os.O_RDONLY))):
            try:
                os.close(os.open(path, flags))
                out |= 1 << bit
            except PermissionError:
                pass
        return out

    assert os.WEXITSTATUS(kids.wait(kids.spawn(v2cg, probe))) == 0b0011
    dfd = os.open(v2cg.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids, _ = bpf.query_device_progs(dfd)
    finally:
        os.close(dfd)
    assert len(ids) == 1
    v2cg.apply({"devices": [{"allow": True, "access": "rwm"}]})  # allow all again
    assert os.WEXITSTATUS(kids.wait(kids.spawn(v2cg, probe))) == 0b1111


def test_v2_limits_without_controllers_raise(v2cg):
    if "memory" in v2cg.hierarchy.controllers:
        pytest.skip("this cgroup2 hierarchy has a memory controller")
    with pytest.raises(CgroupError, match=r"^memory.limit: .*memory.max does not exist "
                                          r"\(controller not available"):
        v2cg.apply({"memory": {"limit": 32 * MiB}})
    with pytest.raises(CgroupError, match=r"^memory.disableOOMKiller: not supported on "
                                          r"cgroup v2"):
        v2cg.apply({"memory": {"disableOOMKiller": True}})
    with pytest.raises(CgroupError, match=r"^cpu.realtimeRuntime: not supported"):
        v2cg.apply({"cpu": {"realtimeRuntime": 1000}})
    with pytest.raises(CgroupError, match=r"^network: "):
        v2cg.apply({"network": {"classID": 1}})


@pytest.mark.skipif(not _v2_has("memory", "cpu", "pids"), reason=NO_V2)
def test_v2_files_written():
    c = open_cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}")
    assert isinstance(c, V2Cgroup)
    c.create()
    try:
        parent = os.path.dirname(c.dir)
        assert {"memory", "cpu", "pids"} <= set(_read(parent + "/cgroup.subtree_control")
                                                .split())
        c.apply({"memory": {"limit": 64 * MiB, "reservation": 16 * MiB, "swap": 96 * MiB},
                 "cpu": {"shares": 1024, "quota": 20000, "period": 50000},
                 "pids": {"limit": 10}})
        assert _read(c.dir + "/memory.max") == str(64 * MiB)
        assert _read(c.dir + "/memory.low") == str(16 * MiB)
        if os.path.exists(c.dir + "/memory.swap.max"):
            assert _read(c.dir + "/memory.swap.max") == str(32 * MiB)
        assert _read(c.dir + "/cpu.weight") == "39"
        assert _read(c.dir + "/cpu.max") == "20000 50000"
        c.apply({"cpu": {"period": 100000}})
        assert _read(c.dir + "/cpu.max") == "20000 100000"  # quota kept
        c.apply({"memory": {"limit": -1}, "pids": {"limit": -1}})
        assert _read(c.dir + "/memory.max") == "max" and _read(c.dir + "/pids.max") == "max"
        c.apply({"unified": {"memory.high": str(48 * MiB)}})
        assert _read(c.dir + "/memory.high") == str(48 * MiB)
    finally:
        _cleanup(c)


# -- speed --------------------------------------------------------------------------------

def test_start_path_round_trips(kids):
    """create + apply(memory, pids, cpu, devices) + add + destroy, as a container start does,
    many times in a row: each time the process is in the cgroup and nothing is left. (Its
    speed is bench/'s to measure, not a timed assert's.)"""
    res = {"memory": {"limit": 64 * MiB, "swap": 64 * MiB}, "pids": {"limit": 100},
           "cpu": {"shares": 512, "quota": 50000, "period": 100000},
           "devices": [{"allow": False, "access": "rwm"}] + [
               {"allow": True, "type": "c", "major": 1, "minor": m, "access": "rwm"}
               for m in (3, 5, 7, 8, 9)]}
    if cgroups.detect() == "v2" and not _v2_has("memory", "cpu", "pids"):
        res = {"devices": res["devices"]}
    for _ in range(20):
        pid = kids.spawn(None, lambda: signal.pause())
        c = open_cgroup(f"{PARENT}/{uuid.uuid4().hex[:12]}")
        c.create()
        c.apply(res)
        c.add(pid)
        assert c.pids() == [pid]
        os.kill(pid, signal.SIGKILL)
        kids.wait(pid)
        c.destroy()
        assert not c.exists()
