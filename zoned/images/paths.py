"""The image store's paths as strings, spelled and tested as pathlib would (zoned.images.store
and store_write): `zoned run` looks an image up without importing pathlib (~3 ms)."""
from __future__ import annotations

import errno
import os
import stat


def norm(p: str) -> str:
    """p spelled as str(pathlib.Path(p)) spells it (no empty or '.' components, no trailing
    '/', '..' kept), so the paths handed out -- e.g. overlay lowerdirs -- stay as they were."""
    if "//" not in p and "/." not in p and not p.startswith(".") and not (len(p) > 1 and p.endswith("/")):
        return p or "."
    lead = "//" if p[:2] == "//" and p[:3] != "///" else "/" if p[:1] == "/" else ""
    return lead + "/".join(c for c in p.split("/") if c and c != ".") or "."


def join_path(d: str, name: str) -> str:
    """pathlib's ``Path(d) / name`` for a normalized d and a single component name."""
    if d == ".":
        return name
    return d + name if d.endswith("/") else d + "/" + name


_IGNORED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _mode_of(path: str) -> int:
    """st_mode, or 0 where pathlib's is_dir()/is_file() would answer False; other errors
    (e.g. EACCES) propagate as they do from pathlib."""
    try:
        return os.stat(path).st_mode
    except OSError as e:
        if e.errno not in _IGNORED_ERRNOS:
            raise
        return 0
    except ValueError:
        return 0


def is_dir(path: str) -> bool:
    return stat.S_ISDIR(_mode_of(path))


def is_file(path: str) -> bool:
    return stat.S_ISREG(_mode_of(path))
