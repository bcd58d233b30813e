"""Shared test set-up: real containers as root, each test with its own state root."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ZONED = str(Path(sys.executable).parent / "zoned")
# What a state root keeps for all its zones (a rootless root's caches): not something a
# zone left behind.
ROOT_INFRASTRUCTURE = {".cache"}


def zone_state(root: str) -> list[str]:
    """The state root's entries, less its own infrastructure."""
    return sorted(n for n in os.listdir(root) if n not in ROOT_INFRASTRUCTURE) \
        if os.path.isdir(root) else []


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """Every test needs root unless its module says `pytestmark = pytest.mark.unprivileged`;
    as an ordinary user those are skipped (or deselected with -m "not root")."""
    skip = pytest.mark.skip(reason="zoned's tests create namespaces and cgroups: run them "
                            "as root")
    for item in items:
        if item.get_closest_marker("unprivileged") is None:
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox():
    """The default image, built if this machine does not have it yet."""
    from zoned.images.errors import ImageNotFound
    from zoned.images.store import ImageStore

    store = ImageStore()
    try:
        return store.get("busybox")
    except ImageNotFound:
        return store.build("busybox")


@pytest.fixture
def cli(zoned_root, busybox):
    """Run the real `zoned` command against this test's state root."""

    def run(*args, input=None, timeout=60, check=False, root=zoned_root, files=False):
        cmd = [ZONED, "--root", root, *args]
        if files:  # OCI create: the container inherits our stdio, so no pipes to wait on
            import tempfile

            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                p = subprocess.run(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   text=True, timeout=timeout)
                out.seek(0), err.seek(0)
                p.stdout, p.stderr = out.read(), err.read()
        else:
            p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                               timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"zoned {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        return p

    run.root = zoned_root
    return run


def criu_or_skip() -> str:
    """The criu zoned uses; skips the calling test module (at import) when there is none."""
    from zoned.checkpoint.criu import find_criu
    from zoned.errors import ZonedError

    try:
        return find_criu()
    except ZonedError as e:
        pytest.skip(f"no criu >= 4 (run `make criu`): {e}", allow_module_level=True)


def process_alive(pid: int) -> bool:
    """Alive: there, and not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def cgroups_of(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers ("" for cgroup2): path}."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        out[ctrls] = path
    return out


def settled_fds() -> list[str]:
    """This process's open fds once none comes or goes for 50 ms: an API operation hands
    what it removed to a thread that closes it (zoned.linux.lastref) after it returns;
    the network namespace zoned.run keeps for the next run (zoned.linux.netahead) is
    closed first."""
    import time

    from zoned.linux import netahead

    seen, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        netahead.drop()
        now = sorted(os.listdir("/proc/self/fd"))
        if now == seen:
            return now
        seen = now
        time.sleep(0.05)
    return seen


def zone_record(root: str, name: str) -> dict:
    """A defined zone's record under its monitor (ROOT/.zones/NAME/record.json); {} if it
    has none (yet, or any more)."""
    import json

    try:
        with open(os.path.join(root, ".zones", name, "record.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def undefine_zone(run, name: str) -> None:
    """A test's teardown of defined zone `name` (`run`: the CLI on its root): destroyed,
    its monitor and keeper killed if a failed test left them, undefined."""
    import signal

    run("destroy", name)
    monitor = zone_record(run.root, name).get("monitor") or {}
    for pid in (monitor.get("pid"), monitor.get("keeper")):
        if pid and pid > 1:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    run("undefine", name)


def argvs() -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every process whose command line can be read (kernel threads: an
    empty one)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if raw:
            out.append((int(pid), raw.rstrip(b"\0").split(b"\0")))
    return out


def children_of(parent: int) -> list[int]:
    """The processes whose parent is `parent` (zombies included: not reaped yet)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        out.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return out


def open_files_under(pid: int, prefixes: tuple[str, ...]) -> list[str]:
    """What process pid has open (the targets of its fds) under any of `prefixes`."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefixes):
            out.append(target)
    return out


def _empty_skeleton(path: Path, data: str) -> bool:
    """A data root's own empty dirs (containers/, ...), which stay for the next zone
    (zoned.storage): no zone's leftover."""
    from zoned import storage

    return str(path.parent) == data and path.name in (
        storage.CONTAINERS, storage.MIGRATIONS, storage.VOLUMES) and path.is_dir() \
        and not any(path.iterdir())


def host_snapshot(root: str) -> dict:
    """What a container could leave on the host: cgroup dirs, mounts, state dirs, data dirs
    (writable layers, logs: zoned.storage)."""
    from zoned.runtime import cgroup_parent
    from zoned.storage import data_root

    cgroups = []
    for base in Path("/sys/fs/cgroup").iterdir():
        z = base / cgroup_parent().lstrip("/")  # this test's own (see the zoned_root fixture)
        if z.is_dir():
            cgroups += [str(p) for p in z.iterdir() if p.is_dir()]
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if root in line]
    state = zone_state(root)
    data = data_root(root)
    data_dirs = sorted(str(p) for p in Path(data).rglob("*") if not _empty_skeleton(p, data)) \
        if os.path.isdir(data) else []
    return {"cgroups": sorted(cgroups), "mounts": mounts, "state": state, "data": data_dirs}
