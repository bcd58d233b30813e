"""`zoned gc` collects the image store's garbage too: an import killed with SIGKILL left
its .build-NAME-* dir (hundreds of MB) for good, since only the next import, rm or prune
looked. A build in progress (its <dir>.lock flock'ed by the builder) is never taken."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from archives import entry, layer

ZONED = str(Path(sys.executable).parent / "zoned")


def gc(tmp_path: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZONED_IMAGES=str(store))
    return subprocess.run([ZONED, "--root", str(tmp_path / "root"), "gc", *extra],
                          capture_output=True, text=True, timeout=120, env=env)


def test_gc_removes_a_killed_import_but_not_a_live_build(tmp_path):
    store = tmp_path / "store"
    tar = tmp_path / "big.tar"
    tar.write_bytes(layer([entry(f"f{i}", data=os.urandom(1 << 20)) for i in range(64)]))
    p = subprocess.Popen([ZONED, "--images", str(store), "image", "import", str(tar),
                          "--name", "big"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            n.startswith(".build-") for n in (os.listdir(store) if store.exists() else [])):
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    builds = [n for n in os.listdir(store) if n.startswith(".build-")
              and not n.endswith(".lock")]
    assert builds, "the import finished before it could be killed"
    live = store / ".build-live-x1"  # a build in progress: its builder holds the flock
    (live / "rootfs").mkdir(parents=True)  # (on <dir>.lock: images.store_write.hold)
    fd = os.open(f"{live}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        dry = gc(tmp_path, store, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"directory {store / builds[0]}: interrupted image build" in dry.stdout
        assert (store / builds[0]).exists()
        done = gc(tmp_path, store)
        assert done.returncode == 0, done.stderr
        assert f"directory {store / builds[0]}: interrupted image build" in done.stdout
        assert sorted(n for n in os.listdir(store) if n != ".lock") == [
            ".build-live-x1", ".build-live-x1.lock"]
        assert (live / "rootfs").is_dir()
    finally:
        os.close(fd)


def test_import_that_replaces_an_image_says_so(tmp_path):
    """Without --name, an import takes the archive's tag (as podman re-tags): replacing an
    image of that name is said, not silent."""
    store = tmp_path / "store"
    tar = tmp_path / "same.tar"
    tar.write_bytes(layer([entry("etc", "dir"), entry("etc/x", data=b"x")]))

    def run() -> str:
        p = subprocess.run([ZONED, "--images", str(store), "image", "import", str(tar)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stderr

    assert "replaced" not in run()
    assert "replaced the image same of " in run()
    assert sorted(n for n in os.listdir(store) if n != ".lock") == ["same"]
