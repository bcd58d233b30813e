"""runc's checkpoint and restore (checkpoint --image-path, restore --image-path --bundle
--detach), the interface podman and containerd call (tests/test_oci_clients.py runs them
for real): a bundle container's processes come back into the bundle, writing to the
restoring process's stdio as the engine hands it new pipes; a paused container can be
dumped, as containerd pauses a task for its checkpoint. Checked from the host: the
counter's file on a bind mount, the pipes, the cgroups and state left."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from conftest import ZONED, criu_or_skip, host_snapshot
from oci_helpers import wait_for

CRIU = criu_or_skip()

# The shell's counter is in its memory; each value goes to the host's /out/seq and to
# stdout. A restart would begin at 1 again.
LOOP = "i=0; while :; do i=$((i+1)); echo $i >> /out/seq; echo tick $i; sleep 0.05; done"

pytestmark = pytest.mark.parametrize("zoned_state_fs", ["disk", "tmpfs"])


@pytest.fixture
def bundle(tmp_path, busybox):
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox.rootfs, b / "rootfs", symlinks=True)
    subprocess.run([ZONED, "spec", "--bundle", str(b)], check=True)
    out = tmp_path / "out"
    out.mkdir()
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["sh", "-c", LOOP])
    cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                          "options": ["rbind", "rw"]})
    (b / "config.json").write_text(json.dumps(cfg))
    return SimpleNamespace(path=b, out=out, cfg=cfg)


def _with_pipe(cli, *args) -> tuple[subprocess.CompletedProcess, int]:
    """`zoned ARGS` with a new pipe as its stdout and stderr (as conmon and the shim give
    them): -> (the result, the pipe's read end)."""
    r, w = os.pipe()
    try:
        p = subprocess.run([ZONED, "--root", cli.root, *args], stdin=subprocess.DEVNULL,
                           stdout=w, stderr=w, timeout=120)
    finally:
        os.close(w)
    os.set_blocking(r, False)
    return p, r


def _read(fd: int) -> str:
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def _seq(b) -> list[int]:
    f = b.out / "seq"
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def _started_and_checkpointed(cli, bundle, cid: str, img) -> int:
    """A container of the bundle started, then checkpointed into img (and so removed):
    -> the read end of the pipe it wrote to."""
    p, out = _with_pipe(cli, "create", "--bundle", str(bundle.path), cid)
    assert p.returncode == 0, _read(out)
    cli("start", cid, check=True)
    cli("checkpoint", "--image-path", str(img), cid, check=True)
    return out


def _state(cli, cid) -> dict:
    return json.loads(cli("state", cid, check=True).stdout)


def test_checkpoint_image_path_and_restore_into_the_bundle(cli, bundle, tmp_path):
    before = host_snapshot(cli.root)
    p, out1 = _with_pipe(cli, "create", "--bundle", str(bundle.path), "c1")
    assert p.returncode == 0, _read(out1)
    cli("start", "c1", check=True)
    assert wait_for(lambda: len(_seq(bundle)) >= 10, timeout=15)
    img, work = tmp_path / "img", tmp_path / "work"

    p = cli("checkpoint", "--image-path", str(img), "--work-path", str(work), "c1")
    assert p.returncode == 0, p.stderr
    assert cli("state", "c1").returncode == 125  # stopped by the dump and removed (runc)
    at_dump = _seq(bundle)
    assert "tick" in _read(out1)
    time.sleep(0.3)
    assert _seq(bundle) == at_dump  # nothing runs any more
    assert (work / "dump.log").exists() and (img / "inventory.img").exists()
    stdio = json.loads((img / "zoned-checkpoint.json").read_text())["oci"]["stdio"]
    assert stdio[1].startswith("pipe:["), stdio  # runc's descriptors.json, kept

    pidfile = tmp_path / "restored.pid"
    p, out2 = _with_pipe(cli, "restore", "--image-path", str(img), "--work-path", str(work),
                         "--bundle", str(bundle.path), "--detach", "--pid-file", str(pidfile),
                         "c1")
    assert p.returncode == 0, _read(out2)
    st = _state(cli, "c1")
    assert st["status"] == "running" and st["pid"] == int(pidfile.read_text())
    assert st["bundle"] == str(bundle.path)
    assert wait_for(lambda: len(_seq(bundle)) >= len(at_dump) + 10, timeout=15)
    seq = _seq(bundle)
    assert seq == list(range(1, len(seq) + 1)), seq  # went on: no restart, no gap
    # Its stdout is the pipe the restore was given (the engine's new one), and the shell
    # goes on printing from its own counter.
    ticks = wait_for(lambda: [ln for ln in _read(out2).splitlines() if ln.startswith("tick")])
    assert ticks, "no output on the restore's pipe"
    assert int(ticks[0].split()[1]) in (at_dump[-1], at_dump[-1] + 1), (ticks, at_dump[-1])
    paths = [ln.split(":", 2)[2] for ln in open(f"/proc/{st['pid']}/cgroup").read().split()]
    assert paths and all(p.endswith("/c1") for p in paths), paths
    assert cli("exec", "c1", "--", "cat", "/proc/1/cmdline", check=True).stdout \
        .startswith("sh")  # exec joins the restored namespaces
    cli("delete", "--force", "c1", check=True)
    for fd in (out1, out2):
        os.close(fd)
    assert host_snapshot(cli.root) == before


def test_a_paused_container_is_dumped_left_running_and_restored_under_a_new_name(
        cli, bundle, tmp_path):
    """containerd's checkpoint pauses the task, dumps it with --leave-running and resumes
    it: CRIU freezes with the cgroup's freezer (runc's --freeze-cgroup) and finds it
    frozen already."""
    p, out = _with_pipe(cli, "create", "--bundle", str(bundle.path), "p1")
    assert p.returncode == 0, _read(out)
    cli("start", "p1", check=True)
    assert wait_for(lambda: len(_seq(bundle)) >= 5, timeout=15)
    cli("pause", "p1", check=True)
    img = tmp_path / "img"
    p = cli("checkpoint", "--image-path", str(img), "--leave-running", "p1")
    assert p.returncode == 0, p.stderr
    assert _state(cli, "p1")["status"] == "paused"  # left as it was
    at_dump = _seq(bundle)
    cli("resume", "p1", check=True)
    assert wait_for(lambda: len(_seq(bundle)) >= len(at_dump) + 5, timeout=15)
    cli("delete", "--force", "p1", check=True)
    (bundle.out / "seq").write_text("".join(f"{i}\n" for i in at_dump))
    # (an engine's config may name hook kinds with no hook: nothing to refuse)
    (bundle.path / "config.json").write_text(json.dumps(dict(bundle.cfg,
                                                             hooks={"prestart": []})))

    p, out2 = _with_pipe(cli, "restore", "--image-path", str(img), "--bundle", str(bundle.path),
                         "--detach", "p2")
    assert p.returncode == 0, _read(out2)
    assert _state(cli, "p2")["status"] == "running"  # restored running, as runc's
    assert wait_for(lambda: len(_seq(bundle)) >= len(at_dump) + 5, timeout=15)
    seq = _seq(bundle)
    assert seq == list(range(1, len(seq) + 1)), seq
    cli("delete", "--force", "p2", check=True)
    for fd in (out, out2):
        os.close(fd)


def test_refusals_leave_nothing(cli, bundle, tmp_path, monkeypatch):
    before = host_snapshot(cli.root)
    p, out = _with_pipe(cli, "create", "--bundle", str(bundle.path), "r1")
    assert p.returncode == 0, _read(out)
    cli("start", "r1", check=True)
    img = tmp_path / "img"
    p = cli("checkpoint", "--image-path", str(img), "--dir", str(tmp_path / "d"), "r1")
    assert p.returncode == 125 and "one or the other" in p.stderr
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # (not sticky: anyone could swap the images)
    p = cli("checkpoint", "--image-path", str(shared / "img"), "r1")
    assert p.returncode == 125 and "writable by others" in p.stderr
    assert _state(cli, "r1")["status"] == "running"  # a refused checkpoint changes nothing
    cli("checkpoint", "--image-path", str(img), "r1", check=True)

    base = ["restore", "--image-path", str(img)]
    for args, why in ((["--bundle", str(bundle.path), "--detach"], "the container's ID"),
                      (["--detach", "r1"], "--bundle"),
                      (["--bundle", str(bundle.path), "r1"], "--detach")):
        p = cli(*base, *args)
        assert p.returncode == 125 and why in p.stderr, (args, p.stderr)
    cfg = dict(bundle.cfg, process=dict(bundle.cfg["process"], terminal=True))
    (bundle.path / "config.json").write_text(json.dumps(cfg))
    p = cli(*base, "--bundle", str(bundle.path), "--detach", "--console-socket", "/x", "r1")
    assert p.returncode == 125 and "terminal" in p.stderr
    (bundle.path / "config.json").write_text(json.dumps(bundle.cfg))
    # A criu that fails the restore: the cgroup and state it made are gone again.
    fake = tmp_path / "criu"
    fake.write_text(f'#!/bin/sh\n[ "$1" = restore ] && exit 1\nexec {CRIU} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("ZONED_CRIU", str(fake))
    p = cli(*base, "--bundle", str(bundle.path), "--detach", "r1")
    assert p.returncode == 125 and "restore of 'r1'" in p.stderr, p.stderr
    monkeypatch.delenv("ZONED_CRIU")
    assert host_snapshot(cli.root) == before
    # A checkpoint of zoned's own (--dir) is not one for the engine's restore.
    cli("run", "-d", "--name", "z1", "--", "sleep", "100", check=True)
    cli("checkpoint", "z1", "--dir", str(tmp_path / "zd"), check=True)
    p = cli("restore", "--image-path", str(tmp_path / "zd"), "--bundle", str(bundle.path),
            "--detach", "z2")
    assert p.returncode == 125 and "zoned restore --dir" in p.stderr
    os.close(out)


def test_mount_points_are_made_inside_the_rootfs(cli, bundle, tmp_path):
    """A restore makes the mount points a rootfs lacks (an engine's rootfs rebuilt from an
    exported checkpoint has none of those the runtime made at create), as runc does; a
    symlink the container left in its rootfs must not take them onto the host."""
    marker = tmp_path / "marker"
    marker.write_text("m\n")
    cfg = dict(bundle.cfg, mounts=bundle.cfg["mounts"] + [
        {"destination": "/run/x/marker", "type": "bind", "source": str(marker),
         "options": ["bind", "ro"]}])
    (bundle.path / "config.json").write_text(json.dumps(cfg))
    img = tmp_path / "img"
    out = _started_and_checkpointed(cli, bundle, "m1", img)
    before = host_snapshot(cli.root)
    rootfs = bundle.path / "rootfs"
    shutil.rmtree(rootfs / "run")
    escape = f"/tmp/zoned-escape-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink("/../../../../../.." + escape, rootfs / "run")
    p, out2 = _with_pipe(cli, "restore", "--image-path", str(img), "--bundle",
                         str(bundle.path), "--detach", "m1")
    assert not os.path.lexists(escape), "a mount point was made on the host"
    assert (rootfs / escape.lstrip("/") / "x" / "marker").is_file()  # in the rootfs
    if p.returncode == 0:
        cli("delete", "--force", "m1", check=True)
    assert host_snapshot(cli.root) == before
    for fd in (out, out2):
        os.close(fd)


def test_a_crafted_checkpoint_opens_no_host_file_and_binds_only_the_configs(
        cli, bundle, tmp_path):
    """An engine's images may come from elsewhere (ctr container restore of an image from
    a registry): zoned's metadata in them must not make the restore open a host file for
    the processes (root opens it, the container gets the fd) or bind a host path the
    bundle's config does not mount. runc opens none and binds the config's mounts only."""
    img = tmp_path / "img"
    out = _started_and_checkpointed(cli, bundle, "h1", img)
    before = host_snapshot(cli.root)
    meta_path = img / "zoned-checkpoint.json"
    meta = json.loads(meta_path.read_text())
    restore = ["restore", "--image-path", str(img), "--bundle", str(bundle.path),
               "--detach", "h1"]
    for crafted, named in (
            ({"files": meta["files"] + [{"key": "file[1:2]", "path": "/etc/shadow",
                                         "flags": os.O_RDWR, "log": False}]},
             "/etc/shadow"),
            ({"mounts": meta["mounts"] + [{"key": "zoned-m99", "destination": "/hostroot",
                                           "source": "/"}]}, "/hostroot")):
        meta_path.write_text(json.dumps(dict(meta, **crafted)))
        p = cli(*restore)
        assert p.returncode == 125 and named in p.stderr, p.stderr
        assert host_snapshot(cli.root) == before
    meta_path.write_text(json.dumps(meta))
    p, out2 = _with_pipe(cli, *restore)
    assert p.returncode == 0, _read(out2)  # as made: restored
    cli("delete", "--force", "h1", check=True)
    for fd in (out, out2):
        os.close(fd)


def test_a_restore_killed_half_way_is_finished_by_gc(cli, bundle, tmp_path, monkeypatch):
    """SIGKILL to `zoned restore --image-path` while criu runs: the state dir and cgroup it
    had made stay, marked as being created; `zoned gc` removes them, and the name can be
    restored into again."""
    import signal

    img = tmp_path / "img"
    out = _started_and_checkpointed(cli, bundle, "k1", img)
    before = host_snapshot(cli.root)
    started = tmp_path / "criu-started"
    fake = tmp_path / "criu"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = restore ]; then echo $$ > {started}.tmp; '
                    f'mv {started}.tmp {started}; exec sleep 60; fi\nexec {CRIU} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("ZONED_CRIU", str(fake))
    p = subprocess.Popen([ZONED, "--root", cli.root, "restore", "--image-path", str(img),
                          "--bundle", str(bundle.path), "--detach", "k1"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(started.exists, timeout=30), "criu restore never started"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if started.exists():  # the fake criu (a session of its own: not killed with zoned)
            os.kill(int(started.read_text()), signal.SIGKILL)
    monkeypatch.delenv("ZONED_CRIU")
    assert host_snapshot(cli.root) != before  # left: what the restore had made
    gc = cli("gc", check=True)
    assert "k1" in gc.stdout, gc.stdout
    assert host_snapshot(cli.root) == before
    p, out2 = _with_pipe(cli, "restore", "--image-path", str(img), "--bundle",
                         str(bundle.path), "--detach", "k1")
    assert p.returncode == 0, _read(out2)
    cli("delete", "--force", "k1", check=True)
    for fd in (out, out2):
        os.close(fd)


def test_restore_into_the_network_namespace_the_config_names(cli, bundle, tmp_path):
    """An engine gives its container a network namespace by path (podman's netavark or
    CNI, a pod's sandbox): the checkpoint takes it as external, and the restore puts the
    processes into the one the restore's config names: here another one, made anew."""
    from pyroute2 import netns

    names = [f"zoned-t-ck{os.getpid()}-{n}" for n in (1, 2)]
    for name in names:
        netns.create(name)
    try:
        def with_netns(name):
            namespaces = [dict(n, path=f"/run/netns/{name}") if n["type"] == "network"
                          else n for n in bundle.cfg["linux"]["namespaces"]]
            cfg = dict(bundle.cfg, linux=dict(bundle.cfg["linux"], namespaces=namespaces))
            (bundle.path / "config.json").write_text(json.dumps(cfg))

        with_netns(names[0])
        img = tmp_path / "img"
        out = _started_and_checkpointed(cli, bundle, "n1", img)
        with_netns(names[1])
        p, out2 = _with_pipe(cli, "restore", "--image-path", str(img), "--bundle",
                             str(bundle.path), "--detach", "n1")
        assert p.returncode == 0, _read(out2)
        pid = _state(cli, "n1")["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == \
            os.stat(f"/run/netns/{names[1]}").st_ino
        cli("delete", "--force", "n1", check=True)
        for fd in (out, out2):
            os.close(fd)
    finally:
        for name in names:
            netns.remove(name)
