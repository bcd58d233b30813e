"""Restoring a crafted checkpoint (found by session 20's audit): a checkpoint is trusted by
design as far as CRIU's images go (README: restore only archives you made), but what zoned
itself does with one must not reach the host, even when the restore fails:
- a cgroupsPath naming a cgroup in use: refused, its processes never killed;
- `upper` a symlink to a host directory: refused, never the zone's writable layer;
- restore-ID.log planted as a symlink: CRIU's log never written through it;
- META a FIFO, or metadata of the wrong shape: one line and exit 125, no hang, nothing left.
Every attack aims at canaries under tmp_path and a cgroup the test makes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import criu_or_skip, zone_state

CRIU = criu_or_skip()
META = "zoned-checkpoint.json"


@pytest.fixture
def checkpoint(cli, tmp_path) -> Path:
    """A stopped zone's checkpoint (a `sleep`), its name `crafted`."""
    cli("run", "-d", "--name", "crafted", "--", "sleep", "1000", check=True)
    images = tmp_path / "images"
    cli("checkpoint", "crafted", "--dir", str(images), check=True)
    cli("rm", "-f", "crafted", check=True)
    return images


def _edit(images: Path, tmp_path: Path, name: str, change) -> Path:
    crafted = tmp_path / name
    shutil.copytree(images, crafted, symlinks=True)
    meta = json.loads((crafted / META).read_text())
    change(crafted, meta)
    if (crafted / META).is_file() and not (crafted / META).is_symlink():
        (crafted / META).write_text(json.dumps(meta))
    return crafted


def _refused(cli, crafted: Path, *words: str):
    p = cli("restore", "--dir", str(crafted), timeout=60)
    assert p.returncode == 125, p
    assert "internal error" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    for w in words:
        assert w in p.stderr, p.stderr
    assert zone_state(cli.root) == []
    return p


def test_a_failed_restore_never_kills_a_cgroup_the_checkpoint_names(cli, checkpoint, tmp_path):
    """The metadata names a host cgroup with a process in it (the images are broken, so
    the restore fails): refused up front, the process alive, the cgroup kept."""
    victim_dir = Path("/sys/fs/cgroup/pids") / f"zoned-test-victim-{os.getpid()}"
    if not Path("/sys/fs/cgroup/pids/cgroup.procs").exists():
        pytest.skip("no v1 pids hierarchy here to make the victim's cgroup in")
    victim_dir.mkdir()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (victim_dir / "cgroup.procs").write_text(str(victim.pid))

        def change(d: Path, meta: dict) -> None:
            meta["config"]["linux"]["cgroupsPath"] = "/" + victim_dir.name
            (d / "pstree.img").write_bytes(b"garbage")

        crafted = _edit(checkpoint, tmp_path, "cg", change)
        _refused(cli, crafted, "in use")
        time.sleep(0.2)
        assert victim.poll() is None and victim_dir.exists()
    finally:
        victim.kill()
        victim.wait()
        for _ in range(50):
            try:
                victim_dir.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def test_an_upper_symlink_is_never_the_zones_layer(cli, checkpoint, tmp_path):
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "hostfile").write_text("host\n")

    def change(d: Path, meta: dict) -> None:
        shutil.rmtree(d / "upper")
        (d / "upper").symlink_to(host)

    _refused(cli, _edit(checkpoint, tmp_path, "up", change), "upper")
    assert sorted(os.listdir(host)) == ["hostfile"]


def test_a_failed_restore_writes_its_log_through_no_symlink(cli, checkpoint, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("host\n")

    def change(d: Path, meta: dict) -> None:
        (d / "pstree.img").write_bytes(b"garbage")
        (d / "restore-crafted.log").symlink_to(canary)

    crafted = _edit(checkpoint, tmp_path, "log", change)
    p = cli("restore", "--dir", str(crafted), timeout=60)
    assert p.returncode == 125
    assert canary.read_text() == "host\n"
    assert not (crafted / "restore-crafted.log").is_symlink()  # a log of its own instead
    assert zone_state(cli.root) == []


def test_meta_that_is_a_fifo_is_refused_without_waiting(cli, checkpoint, tmp_path):
    def change(d: Path, meta: dict) -> None:
        (d / META).unlink()
        os.mkfifo(d / META)

    _refused(cli, _edit(checkpoint, tmp_path, "fifo", change), "not a regular file")


@pytest.mark.parametrize("field,value,words", [
    (None, [1], ("JSON object",)),
    ("mounts", None, ("mounts must be a JSON array",)),
    ("config", [1], ("config must be a JSON object",)),
    ("files", None, ("files must be a JSON array",)),
    ("network", [1], ("network must be a JSON object",)),
    ("network", {"networks": [{"network": "../../x"}]}, ("network",)),
    ("image", "busybox", ("image must be a JSON object",)),
    ("id", "../x", ("invalid",)),
], ids=["a-list", "no-mounts", "config-a-list", "no-files", "network-a-list",
        "network-fields-missing", "image-a-string", "id-a-path"])
def test_metadata_of_the_wrong_shape_is_one_line(cli, checkpoint, tmp_path, field, value,
                                                 words):
    def change(d: Path, meta: dict) -> None:
        if field is None:
            (d / META).write_text(json.dumps(value))
            (d / META).chmod(0o644)
        elif value is None:
            meta.pop(field)
        else:
            meta[field] = value

    crafted = _edit(checkpoint, tmp_path, f"shape-{field}", change)
    if field is None:  # _edit wrote the dict back over it: write the list again
        (crafted / META).write_text(json.dumps(value))
    _refused(cli, crafted, *words)
