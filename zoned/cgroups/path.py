"""cgroupsPath handling: the one path a container's cgroup has in every hierarchy, and
where a relative cgroupsPath goes (below zoned's own cgroup, as runc's cgroupfs driver).
"""
from __future__ import annotations

import errno
import posixpath

from zoned.cgroups.detection import detect
from zoned.cgroups.fs import CgroupError


def clean_path(path: str) -> str:
    """A cgroupsPath as an absolute, normalised path relative to each hierarchy's root. A
    ".." can't climb above the root, and the root itself is refused: zoned never manages
    (and so never destroys) the root cgroup."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise CgroupError(f"cgroupsPath {path!r}: invalid", errno.EINVAL)
    p = posixpath.normpath("/" + path.lstrip("/"))
    if p == "/":
        raise CgroupError("cgroupsPath '/': refusing to manage the root cgroup", errno.EINVAL)
    return p


def own_cgroup(text: str | None = None, mode: str | None = None) -> str:
    """Where a relative cgroupsPath goes: below the cgroup this process is in, as runc's
    cgroupfs driver does. On v2 that is the parent of our cgroup (runc's fs2: the cgroup
    we are in has processes, so it cannot delegate controllers to children). On v1 runc
    uses each controller's own cgroup; zoned keeps one path for every hierarchy, so it
    takes the deepest cgroup the v1 controllers agree on (the same path when they all
    agree, as they do for a root shell). `text` is a /proc/PID/cgroup, `mode` detect()'s
    answer: ours by default."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    unified, v1 = None, []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        elif parts[1]:
            v1.append(parts[2])
    if (mode or detect()) == "v2" or not v1:
        return posixpath.dirname(unified or "/")
    common = posixpath.commonpath(v1) if all(p.startswith("/") for p in v1) else "/"
    return common or "/"

