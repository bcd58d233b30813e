"""What a benchmark may leave behind, found on the host: state dirs, cgroup dirs named
after its instances, mounts, zoned veths, processes. Checked after every run (and on
failure or Ctrl-C), so a number never hides a leak."""
from __future__ import annotations

import os

from zoned.bench.procfs import CGROUP_ROOT, proc_state


def cgroup_dirs_named(prefix: str, max_depth: int = 4, *, anywhere: bool = False) -> list[str]:
    """Every cgroup directory (any hierarchy, up to max_depth below the mount) whose name
    starts with `prefix` (with `anywhere`, contains it: the tests look for an ID that
    engines wrap, as in podman's libpod-ID or containerd's ID.scope)."""
    found: list[str] = []

    def walk(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if (prefix in e.name) if anywhere else e.name.startswith(prefix):
                found.append(e.path)
            elif depth < max_depth:
                walk(e.path, depth + 1)

    walk(CGROUP_ROOT, 0)
    return sorted(found)


def mounts_containing(needle: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.strip() for ln in f if needle in ln]


def state_entries(root: str) -> list[str]:
    """Entries of a state root other than zoned's own dot files (locks, networks)."""
    try:
        return sorted(e for e in os.listdir(root) if not e.startswith("."))
    except FileNotFoundError:
        return []


def links_aliased(needle: str) -> list[str]:
    """Network interfaces whose alias names `needle`: zoned names its veths
    "zoned:CID@ROOT" and bridges "zoned-net:NAME@ROOT" (zoned.network.definitions)."""
    out = []
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return out
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/ifalias") as f:
                if needle in f.read():
                    out.append(name)
        except OSError:
            pass
    return sorted(out)


def alive(pids: list[int]) -> list[int]:
    """The pids still running (zombies waiting for their reaper do not count)."""
    return [p for p in pids if proc_state(p) not in (None, "Z", "X")]


def rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def remove_zones(zoned_cli: list[str], root: str) -> None:
    """`rm -f` every zone left in state root `root` (a failed run's), with `zoned_cli` (the
    command, without --root)."""
    import subprocess

    for cid in state_entries(root):
        subprocess.run([*zoned_cli, "--root", root, "rm", "-f", cid], capture_output=True)


def remove_root(root: str) -> None:
    """Remove an emptied state root, its cgroup parent (/zoned-<hash>) and its data root
    (zoned.storage), if empty."""
    from zoned.cgroups import remove_if_empty
    from zoned.runtime.cgroup_paths import cgroup_parent
    from zoned.storage import data_root, prune

    data = data_root(root)
    rmdir_quiet(root)
    remove_if_empty(cgroup_parent(root))
    prune(data)
