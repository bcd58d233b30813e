"""Finding and removing leftover cgroups (`zoned gc`, test teardown): the cgroups under a
parent in any hierarchy, and removing one only while no process is in it.
"""
from __future__ import annotations

import os
import posixpath

from zoned.cgroups.driver import open_cgroup
from zoned.cgroups.detection import mounts
from zoned.cgroups.fs import CgroupError, logger


def list_paths(parent: str = "/zoned") -> list[str]:
    """The cgroupsPaths of the cgroups directly under `parent`, in any hierarchy (a
    leftover may survive in only some of them)."""
    p = posixpath.normpath("/" + parent.lstrip("/"))
    out: set[str] = set()
    for h in mounts():
        d = h.mountpoint + ("" if p == "/" else p)
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        out.add(posixpath.join(p, e.name))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return sorted(out)


def remove_if_empty(path: str) -> bool:
    """Remove the cgroup (and empty sub-cgroups) if no process is in it. True when nothing
    of it is left. The caller makes sure no container is being started in it right now."""
    cg = open_cgroup(path)
    if not cg.exists():
        return True
    if cg.pids():
        return False
    try:
        cg.destroy(timeout=0.0)
    except CgroupError as e:
        logger().info("cgroups: %s not removed: %s", path, e)
        return False
    return not cg.exists()


def remove_empty_ancestors(path: str) -> list[str]:
    """rmdir each ancestor of cgroup `path` that zoned made and that is empty, nearest
    first, in every hierarchy: one whose first component is "zoned" or "zoned-*" (a
    parent such as /zoned/zoned-test-x, made with its /zoned). Never recursive, so a
    cgroup that has any child (another root's parent, a create's new directory) stays;
    a create racing with an rmdir here retries (zoned.runtime.steps.make_cgroup). Those
    removed, in order."""
    removed = []
    parts = posixpath.normpath("/" + path.lstrip("/")).strip("/").split("/")
    if not parts[0] or not (parts[0] == "zoned" or parts[0].startswith("zoned-")):
        return removed
    for depth in range(len(parts) - 1, 0, -1):
        ancestor = "/" + "/".join(parts[:depth])
        if not remove_if_unused(ancestor):
            break
        removed.append(ancestor)
    return removed


def remove_if_unused(path: str) -> bool:
    """rmdir cgroup `path` in every hierarchy where nothing is in it (no process, no
    child); never recursive. True if it is gone from all of them."""
    import errno

    gone = True
    for h in mounts():
        try:
            os.rmdir(h.mountpoint + path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
                raise
            gone = False
    return gone
