"""pytest fixtures for test harnesses that embed isolation (installed as a pytest11 plugin).

    def test_service(zone):
        c = zone(["sleep", "60"], memory="64m")     # started; removed after the test
        assert c.exec(["hostname"]).stdout.strip() == c.name
        vm = zone(["sleep", "60"], backend="vm")   # the same, as a QEMU micro-VM

`zoned_root` is a private state root per test, so tests never see each other's containers;
its data root (writable layers, logs) is derived from it (zoned.storage), so it is private
too, and removed with the test's last zone.
"""
from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture
def zoned_state_fs() -> str:
    """What the test's state root is: "disk" (a directory), or "tmpfs" (a tmpfs of its own,
    as /run is on systemd hosts). Parametrize it to run a test on both:
    pytest.mark.parametrize("zoned_state_fs", ["disk", "tmpfs"])."""
    return "disk"


@pytest.fixture
def zoned_root(monkeypatch, zoned_state_fs):
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="zoned-test-", dir=base)
    if zoned_state_fs == "tmpfs":
        import subprocess

        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "zoned-test", path],
                       check=True)
    # its own cgroup parent too, so tests (and anything else on the host) never meet
    parent = "/zoned/" + os.path.basename(path)
    monkeypatch.setenv("ZONED_CGROUP_PARENT", parent)
    yield path
    from zoned.gc import collect
    from zoned.runtime.lifecycle import Runtime

    rt = Runtime(path)
    for cid in rt.store.ids():
        try:
            rt.delete(cid, force=True)
        except Exception:  # noqa: BLE001 - teardown removes what it can, gc the rest
            pass
    if os.path.isdir(os.path.join(path, ".networks")):  # networks a failed test left
        from zoned.network import definitions as netconf

        for name in netconf.names(path):
            try:
                netconf.remove(path, name)
            except Exception:  # noqa: BLE001
                pass
    list(collect(rt))  # (also the data dirs of zones that are gone: zoned.storage)
    if zoned_state_fs == "tmpfs":
        import subprocess

        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
    try:
        os.rmdir(path)
    except OSError:
        pass
    from zoned.cgroups import remove_if_empty

    remove_if_empty(parent)


@pytest.fixture
def zone(zoned_root):
    """A factory: zone(args, **RunOptions fields) -> started zoned.Container (backend="vm":
    a VM)."""
    from zoned.api import Container

    made: list[Container] = []

    def make(args=None, **options):
        options.setdefault("root", zoned_root)
        c = Container(args or ["sleep", "3600"], **options).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.remove(force=True)
