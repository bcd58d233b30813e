"""Zones in the shared memory cgroup (`zoned run --memory-cgroup shared`,
zoned.runtime.cgroup_paths) on the host's real cgroups, checked from the host: the zones of a
state root share one memory cgroup and have every other controller of their own; removing
one never touches another; the last one takes the shared cgroup along; bad configs are
refused with one line and leave nothing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import cgroups_of, host_snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root and real cgroups")

SHARED = ("--memory-cgroup", "shared")


def _pid(cli, name: str) -> int:
    return json.loads(cli("state", name, check=True).stdout)["pid"]


def _memory_key(cgroups: dict[str, str]) -> str:
    """The /proc/PID/cgroup key whose hierarchy holds memory: v1's "memory", else ""."""
    return next((k for k in cgroups if "memory" in k.split(",")), "")


def _mounts() -> list[Path]:
    """Each cgroup hierarchy's mount point."""
    from zoned.cgroups import hierarchies

    return [Path(h.mountpoint) for h in hierarchies()]


def _v1_memory() -> Path | None:
    """v1's memory hierarchy, if this host has one."""
    from zoned.cgroups import hierarchies

    return next((Path(h.mountpoint) for h in hierarchies()
                 if h.fstype == "cgroup" and "memory" in h.controllers), None)


def _node_gone(node: str) -> bool:
    return not any((m / node.lstrip("/")).exists() for m in _mounts())


def test_shared_zones_have_one_memory_cgroup_and_the_other_controllers_each_their_own(cli):
    from zoned.runtime import cgroup_parent

    parent = cgroup_parent()
    node = f"{parent}/@shared-memory"
    for name in ("a", "b"):
        cli("run", "-d", "--name", name, *SHARED, "busybox", "sleep", "300", check=True)
    own = cli("run", "-d", "--name", "c", "busybox", "sleep", "300", check=True)
    assert own.returncode == 0
    a, b, c = (cgroups_of(_pid(cli, n)) for n in ("a", "b", "c"))
    mem = _memory_key(a)
    if mem:  # v1 (or hybrid): the memory hierarchy's cgroup is the node itself
        assert a[mem] == b[mem] == node
        assert c[mem] == f"{parent}/c"  # the default stays a memory cgroup per zone
    for key in a:
        if key != mem:
            assert (a[key], b[key]) == (f"{node}/a", f"{node}/b"), key
    if not mem:  # v2: the node delegates every controller but memory to its zones
        v2 = _mounts()[0] / node.lstrip("/")
        assert "memory" not in (v2 / "cgroup.subtree_control").read_text().split()
        assert not (v2 / "a" / "memory.current").exists()
        assert (v2 / "memory.current").exists()
    v1 = _v1_memory()
    if v1:  # the shared memory cgroup holds both zones' processes, charged there
        procs = {int(p) for p in (v1 / node.lstrip("/") / "cgroup.procs").read_text().split()}
        assert {_pid(cli, "a"), _pid(cli, "b")} <= procs
    (row,) = json.loads(cli("stats", "--no-stream", "--format", "json", "a",
                            check=True).stdout)
    assert row["memory"]["usage"] is None  # no memory figure of its own (not the group's)
    assert row["pids"]["current"] == 1 and row["pids"]["limit"] == 2048
    up = cli("update", "--memory", "64m", "a")  # live: still no limit of its own
    assert up.returncode == 125 and "shared memory cgroup" in up.stderr
    assert cli("update", "--pids-limit", "100", "a").returncode == 0  # its own pids cgroup

    # removing a leaves b running, in the node, reachable
    b_pid = _pid(cli, "b")
    cli("rm", "-f", "a", check=True)
    assert Path(f"/proc/{b_pid}").exists() and cgroups_of(b_pid) == b
    assert cli("exec", "b", "true").returncode == 0
    if v1:
        assert b_pid in [int(p) for p in
                         (v1 / node.lstrip("/") / "cgroup.procs").read_text().split()]

    # the last shared zone removes the node; the zone with its own memory cgroup is untouched
    cli("rm", "-f", "b", check=True)
    assert _node_gone(node)
    assert cli("exec", "c", "true").returncode == 0
    cli("rm", "-f", "c", check=True)


@pytest.mark.parametrize("flags", [[], list(SHARED)])
def test_a_zone_binds_its_cgroups_and_mounts_no_cgroupfs(cli, flags):
    """Its memory hierarchy (the shared cgroup, or its own) is bound like the others: a
    fresh v1 cgroupfs mount walks every cgroup of the host (cgroup1_get_tree drains the
    offline ones), 4-11 ms each at 5,000 zones. Seen by strace: no mount of type cgroup."""
    import shutil
    import subprocess

    from tests.conftest import ZONED

    if not shutil.which("strace"):
        pytest.skip("no strace (the Makefile installs it)")
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=mount", "-o", "/dev/stderr",
                        ZONED, "--root", cli.root, "run", "--rm", *flags, "busybox", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    mounts = [ln for ln in p.stderr.splitlines() if "mount(" in ln]
    v1 = _v1_memory()
    if v1:
        assert any("MS_BIND" in ln and f'"{v1}/' in ln for ln in mounts), mounts
    assert not [ln for ln in mounts if ', "cgroup", ' in ln], mounts


def test_an_exec_joins_the_shared_memory_cgroup(cli):
    """An exec'd process is in the init's cgroups, the shared memory one included (seen
    from inside: the zone's cgroup namespace shows both the same way)."""
    cli("run", "-d", "--name", "z", *SHARED, "busybox", "sleep", "300", check=True)
    try:
        p = cli("exec", "z", "sh", "-c", "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup",
                check=True)
        mine, init = p.stdout.split("--\n")
        assert mine.strip() == init.strip() and ("memory" in mine or "0::" in mine)
    finally:
        cli("rm", "-f", "z", check=True)


def test_parallel_starts_and_removals_race_for_the_shared_cgroup_and_all_succeed(cli):
    """Removing the last zone in it rmdirs the shared cgroup, which another zoned process
    may just be joining (v1: between its create() and its add(), nothing of it is in the
    memory hierarchy yet): that one makes it again. Four loops of run --rm, 8 each."""
    from concurrent.futures import ThreadPoolExecutor

    before = host_snapshot(cli.root)

    def loop(k: int) -> list[int]:
        return [cli("run", "--rm", "--name", f"p{k}-{i}", *SHARED, "busybox", "true").returncode
                for i in range(8)]

    with ThreadPoolExecutor(4) as pool:
        codes = [c for cs in pool.map(loop, range(4)) for c in cs]
    assert codes == [0] * 32
    assert host_snapshot(cli.root) == before


@pytest.mark.parametrize("extra, field", [
    (["-m", "64m"], "linux.resources.memory.limit"),
    (["--memory-swap", "128m", "-m", "64m"], "linux.resources.memory."),
])
def test_a_memory_limit_in_the_shared_memory_cgroup_is_refused_leaving_nothing(
        cli, extra, field):
    before = host_snapshot(cli.root)
    p = cli("run", "--rm", *SHARED, *extra, "busybox", "true")
    assert p.returncode == 125
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "shared memory cgroup" in lines[0]
    assert host_snapshot(cli.root) == before


def test_a_bad_memory_cgroup_annotation_is_refused_leaving_nothing(cli, tmp_path):
    """Through the API (an annotation, as podman would pass it): one error naming it."""
    import zoned
    from zoned.errors import ConfigError

    before = host_snapshot(cli.root)
    with pytest.raises(ConfigError, match=r"annotations\.org\.zoned\.memory-cgroup 'half'"):
        zoned.run(["true"], image="busybox", root=cli.root,
                  annotations={"org.zoned.memory-cgroup": "half"})
    assert host_snapshot(cli.root) == before


@pytest.mark.parametrize("flags", [["--cap-add", "SYS_ADMIN"], ["--privileged"]])
def test_a_shared_zone_never_holds_cap_sys_admin(cli, flags):
    """With it, a zone could remount its cgroupfs writable, where (v1) the root of its
    memory hierarchy is the cgroup every shared zone is in, and limit them all."""
    before = host_snapshot(cli.root)
    p = cli("run", "--rm", *SHARED, *flags, "busybox", "true")
    assert p.returncode == 125 and "CAP_SYS_ADMIN" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert host_snapshot(cli.root) == before


def test_a_shared_zone_cannot_limit_the_memory_of_the_others(cli):
    """From inside: the memory files of its cgroup view are read-only (v1) or not there
    (v2), a remount is refused, exec cannot add CAP_SYS_ADMIN; from the host: the shared
    cgroup has no limit afterwards."""
    from zoned.runtime import cgroup_parent

    node = f"{cgroup_parent()}/@shared-memory".lstrip("/")
    cli("run", "-d", "--name", "victim", *SHARED, "busybox", "sleep", "300", check=True)
    cli("run", "-d", "--name", "attacker", *SHARED, "busybox", "sleep", "300", check=True)
    try:
        p = cli("exec", "attacker", "sh", "-c",
                "for f in /sys/fs/cgroup/memory/memory.limit_in_bytes "
                "/sys/fs/cgroup/memory.max; do echo 4096 > $f && echo WROTE $f; done; "
                "mount -o remount,rw /sys/fs/cgroup/memory && echo REMOUNTED; "
                "mount -t cgroup -o memory none /mnt && echo MOUNTED; true")
        assert p.returncode == 0
        assert "WROTE" not in p.stdout and "REMOUNTED" not in p.stdout
        assert "MOUNTED" not in p.stdout
        e = cli("exec", "-c", "CAP_SYS_ADMIN", "attacker", "true")
        assert e.returncode == 125 and "CAP_SYS_ADMIN" in e.stderr
        v1 = Path("/sys/fs/cgroup/memory") / node / "memory.limit_in_bytes"
        v2 = Path("/sys/fs/cgroup") / node / "memory.max"
        limit = (v1 if v1.exists() else v2).read_text().strip()
        assert limit == "max" or int(limit) > 1 << 50
        assert cli("exec", "victim", "true").returncode == 0
    finally:
        cli("rm", "-f", "victim", "attacker", check=True)


def test_checkpoint_of_a_shared_zone_is_refused(cli):
    cli("run", "-d", "--name", "s", *SHARED, "busybox", "sleep", "300", check=True)
    try:
        p = cli("checkpoint", "s", "--dir", "/tmp/never-written")
        assert p.returncode == 125 and "shared memory cgroup" in p.stderr
        assert cli("exec", "s", "true").returncode == 0  # still running
    finally:
        cli("rm", "-f", "s", check=True)


def test_gc_removes_a_half_made_shared_zone_and_the_node(cli):
    """A create killed after making its cgroups but before state.json: gc finds the zone's
    cgroup below the node and removes both."""
    from zoned.runtime import cgroup_parent

    node = f"{cgroup_parent()}/@shared-memory"
    v1 = _v1_memory()
    for m in _mounts():  # as create() leaves them: v1's memory has the node alone
        (m / node.lstrip("/") / ("" if m == v1 else "ghost")).mkdir(parents=True,
                                                                     exist_ok=True)
    out = cli("gc", check=True).stdout
    assert f"{node}/ghost" in out
    assert _node_gone(node)
