"""Bad input fails with one clear line and leaves nothing; killed zoned processes leave
only what `zoned gc` removes; repeated and concurrent use does not leak or corrupt."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ZONED, host_snapshot, zone_state


@pytest.mark.parametrize("args, message", [
    (["run", "--image", "nope", "--", "true"], "image 'nope' not found"),
    (["run", "--bogus-flag", "--", "true"], "unrecognized arguments: --bogus-flag"),
    (["run", "--memory", "lots", "--", "true"], "invalid --memory 'lots'"),
    (["run", "--cpus", "-1", "--", "true"], "invalid --cpus"),
    (["run", "--", "no-such-command"], "executable file not found in $PATH"),
    (["run", "--", "/bin/nope"], "stat /bin/nope: no such file or directory"),
    (["run", "--name", "bad/name", "--", "true"], "invalid container name"),
    (["run", "-v", "/no/such/dir:/x", "--", "true"], "volume source '/no/such/dir'"),
    (["run", "-u", "nosuchuser", "--", "true"], "unknown user 'nosuchuser'"),
    (["run", "-w", "relative", "--", "true"], "invalid working directory"),
    (["rm", "ghost"], "container 'ghost' does not exist"),
    (["exec", "ghost", "--", "true"], "container 'ghost' does not exist"),
    (["kill", "ghost", "NOSUCHSIG"], "unknown signal"),
])
def test_bad_input_one_line_nothing_left(cli, zoned_root, args, message):
    before = host_snapshot(zoned_root)
    p = cli(*args)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoned: "), p.stderr
    assert message in lines[0], lines[0]
    assert host_snapshot(zoned_root) == before


def test_rootfs_without_sh(cli, zoned_root, tmp_path):
    (tmp_path / "empty").mkdir()
    before = host_snapshot(zoned_root)
    p = cli("run", "--rootfs", str(tmp_path / "empty"), "--", "sh")
    assert p.returncode == 127 and "exec: \"sh\": executable file not found" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = cli("run", "--rootfs", str(tmp_path / "missing"), "--", "sh")
    assert p.returncode == 125 and "does not exist" in p.stderr
    assert host_snapshot(zoned_root) == before


def test_exec_failure_exit_codes(cli):
    """As docker/podman: 127 for a missing command, 126 for one that cannot be run."""
    p = cli("run", "--rm", "--", "no-such-command")
    assert p.returncode == 127
    p = cli("run", "--rm", "--", "/etc/passwd")
    assert p.returncode == 126 and 'exec: "/etc/passwd": permission denied' in p.stderr
    assert cli("ps", "-a", "-q").stdout == ""


def test_name_in_use(cli, zoned_root):
    cli("run", "-d", "--name", "dup", "--", "sleep", "1000", check=True)
    before = host_snapshot(zoned_root)
    p = cli("run", "-d", "--name", "dup", "--", "sleep", "1000")
    assert p.returncode != 0 and p.stderr.strip() == "zoned: container name 'dup' is already in use"
    assert host_snapshot(zoned_root) == before
    assert json.loads(cli("state", "dup").stdout)["status"] == "running"  # untouched


def test_malformed_oci_config(cli, zoned_root, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    p = cli("create", "--bundle", str(tmp_path), "c", files=True)
    assert p.returncode == 125 and "not valid JSON" in p.stderr
    (tmp_path / "config.json").write_text(json.dumps({"ociVersion": "1.2.0"}))
    p = cli("create", "--bundle", str(tmp_path), "c", files=True)
    assert p.returncode == 125 and "missing required field 'root'" in p.stderr
    assert zone_state(zoned_root) == []


def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_signal_mid_create(cli, zoned_root, sig):
    """zoned stopped while the container is being set up: a clean exit removes everything
    itself; after SIGKILL, `zoned gc` removes what is left."""
    before = host_snapshot(zoned_root)
    # A pause injected after the container's init is forked and in its cgroup, before it
    # is ready: zoned is stopped while it owns a process, a cgroup and a state dir.
    env = dict(os.environ, ZONED_TEST_PAUSE_CREATE="0.5")
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--name", "mid", "--", "sleep",
                          "1000"], env=env, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: os.path.exists(os.path.join(zoned_root, "mid", "config.json")))
    p.send_signal(sig)
    p.wait(timeout=10)
    if sig != signal.SIGKILL:
        assert "interrupted" in p.stderr.read()
        assert _wait_for(lambda: host_snapshot(zoned_root) == before, 30), \
            (before, host_snapshot(zoned_root))
    else:
        assert host_snapshot(zoned_root) != before  # leftovers: state dir, cgroup
        out = cli("gc").stdout
        assert "mid" in out
    assert host_snapshot(zoned_root) == before
    assert not [line for line in open("/proc/self/mountinfo") if "mid" in line]


def test_gc_removes_exited_rm_containers(cli, zoned_root):
    cli("run", "-d", "--rm", "--name", "short", "--", "true", check=True)
    assert _wait_for(lambda: json.loads(cli("state", "short").stdout)["status"] == "stopped")
    assert "short" in cli("gc").stdout
    assert cli("state", "short").returncode != 0


def test_100_sequential_run_rm_cycles_leave_nothing(cli, zoned_root, busybox):
    import zoned

    before = host_snapshot(zoned_root)
    for i in range(100):
        r = zoned.run(["true"], root=zoned_root, name=f"cycle-{i}")
        assert r.returncode == 0
    after = host_snapshot(zoned_root)
    assert after == before
    # the CLI path too, including detached containers and rm
    for i in range(10):
        cli("run", "-d", "--name", f"d{i}", "--", "sleep", "100", check=True)
        cli("rm", "-f", f"d{i}", check=True)
    assert host_snapshot(zoned_root) == before
    assert not os.path.exists(os.path.join(zoned_root, "d0"))


def test_20_concurrent_runs(cli, zoned_root):
    before = host_snapshot(zoned_root)

    def one(i):
        return cli("run", "--rm", "--name", f"c{i}", "--", "sh", "-c", f"echo {i}")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results]
    assert sorted(int(r.stdout) for r in results) == list(range(20))
    assert host_snapshot(zoned_root) == before


def test_concurrent_same_name_only_one_wins(cli, zoned_root):
    def one(_):
        return cli("run", "-d", "--name", "same", "--", "sleep", "100")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert sorted(r.returncode for r in results) == [0] + [125] * 7
    assert json.loads(cli("ps", "-a", "--format", "json").stdout)[0]["status"] == "running"


def test_gc_of_one_root_leaves_other_roots_alone(cli, zoned_root, tmp_path, monkeypatch):
    """Each state root has its own cgroup parent, so gc of one root can never remove the
    (briefly empty) cgroup of a container another root is creating."""
    from zoned.runtime import cgroup_parent

    monkeypatch.delenv("ZONED_CGROUP_PARENT")
    other = str(tmp_path / "other-root")
    assert cgroup_parent(zoned_root) != cgroup_parent(other) != "/zoned"
    cli("run", "-d", "--name", "keep", "--", "sleep", "100", check=True)
    cg = json.loads(cli("inspect", "keep").stdout)["cgroup"]
    assert cg.startswith(cgroup_parent(zoned_root) + "/")
    # an empty cgroup of root A, as between cgroup create and add during a create
    from zoned.cgroups import open_cgroup

    empty = open_cgroup(cgroup_parent(zoned_root) + "/being-created")
    empty.create()
    try:
        out = cli("gc", root=other).stdout
        assert "being-created" not in out and empty.exists()
    finally:
        empty.destroy()
    cli("rm", "-f", "keep", check=True)
    cli("gc", check=True)
    assert not open_cgroup(cgroup_parent(zoned_root)).exists()
    os.rmdir(other) if os.path.isdir(other) else None


def test_gc_removes_the_empty_parents_of_roots_that_are_gone(cli, tmp_path, monkeypatch):
    """A removal leaves its state root's cgroup parent for that root's gc; a root deleted
    after its last zone never gets one. `zoned gc` of any root removes such a parent, in
    every hierarchy. A parent in which another root's create has made a directory (in one
    hierarchy) stays, with that directory."""
    from zoned.cgroups import list_paths
    from zoned.cgroups.detection import mounts
    from zoned.runtime import cgroup_parent

    def exists(path: str) -> bool:
        return any(os.path.isdir(h.mountpoint + path) for h in mounts())

    monkeypatch.delenv("ZONED_CGROUP_PARENT")
    gone_root = str(tmp_path / "deleted-root")
    cli("run", "--rm", "--", "true", root=gone_root, check=True)
    gone = cgroup_parent(gone_root)
    assert exists(gone) and list_paths(gone) == []  # left for a gc that never comes
    shutil.rmtree(gone_root)
    busy = f"/zoned-gcb-{os.getpid()}"  # another root's, its create under way
    made = [h.mountpoint + busy for h in mounts()]
    for d in made:
        os.mkdir(d)
    os.mkdir(made[0] + "/z-being-created")
    try:
        out = cli("gc", check=True).stdout
        assert f"cgroup {gone}: empty parent of another state root" in out
        assert not exists(gone)
        assert all(os.path.isdir(d) for d in made) and os.path.isdir(made[0] + "/z-being-created")
        assert busy not in out
    finally:
        os.rmdir(made[0] + "/z-being-created")
        for d in made:
            os.rmdir(d)


def test_gc_of_any_root_removes_a_gone_nested_roots_parent_below_zoned(cli):
    """A run of the test suite killed before its teardowns left /zoned/zoned-test-* (a
    nested root's parent, $ZONED_CGROUP_PARENT) in every hierarchy, its root gone. The
    default root's gc took it for a gone container's cgroup; the gc of any other root (this
    test's, whose parent is its own /zoned/zoned-test-*) left it. Now any root's gc removes
    it; one with a cgroup below it stays."""
    from zoned.cgroups.detection import mounts

    gone, busy = (f"/zoned/zoned-gcn-{os.getpid()}-{n}" for n in ("gone", "busy"))
    made = [h.mountpoint + p for h in mounts() for p in (gone, busy)]
    for d in made:
        os.makedirs(d)
    os.mkdir(mounts()[0].mountpoint + busy + "/z")
    try:
        out = cli("gc", check=True).stdout
        assert f"cgroup {gone}: empty, of no root" in out, out
        assert not any(os.path.isdir(h.mountpoint + gone) for h in mounts())
        assert os.path.isdir(mounts()[0].mountpoint + busy + "/z") and busy not in out
    finally:
        os.rmdir(mounts()[0].mountpoint + busy + "/z")
        for d in made:
            if os.path.isdir(d):
                os.rmdir(d)


def test_gc_removes_the_empty_parents_zoned_made_above_a_roots_parent(cli, monkeypatch):
    """A state root whose cgroup parent is nested ($ZONED_CGROUP_PARENT=/zoned-x/inner, as
    the pytest plugin's /zoned/zoned-test-*): once its zones are gone, `zoned gc` removes
    the parent and then the empty /zoned-x above it, in every hierarchy. A zoned ancestor
    with another child stays, and an ancestor zoned did not name is never touched."""
    from zoned.cgroups import list_paths, remove_if_empty
    from zoned.cgroups.detection import mounts

    top = f"/zoned-gct-{os.getpid()}"

    def exists(path: str) -> bool:
        return any(os.path.isdir(h.mountpoint + path) for h in mounts())

    monkeypatch.setenv("ZONED_CGROUP_PARENT", f"{top}/inner")
    cli("run", "--rm", "--", "true", check=True)  # made top/inner/<id>, then removed it
    assert exists(f"{top}/inner") and list_paths(f"{top}/inner") == []
    sibling = mounts()[0].mountpoint + f"{top}/other"  # another root's, in one hierarchy
    os.mkdir(sibling)
    try:
        out = cli("gc", check=True).stdout
        assert f"cgroup {top}/inner: empty state-root parent" in out
        assert not exists(f"{top}/inner") and exists(top)  # kept: it has a child
    finally:
        os.rmdir(sibling)
    cli("run", "--rm", "--", "true", check=True)
    out = cli("gc", check=True).stdout
    assert f"cgroup {top}: empty parent of state-root parents" in out
    assert not exists(top)

    plain = f"/gct-not-zoned-{os.getpid()}"  # not a name zoned gives: left as it is
    monkeypatch.setenv("ZONED_CGROUP_PARENT", f"{plain}/inner")
    try:
        cli("run", "--rm", "--", "true", check=True)
        cli("gc", check=True)
        assert not exists(f"{plain}/inner") and exists(plain)
    finally:
        remove_if_empty(plain)
    assert not exists(plain)
