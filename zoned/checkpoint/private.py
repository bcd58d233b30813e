"""Where a user-named checkpoint may be: somewhere nobody else can write or swap.

A checkpoint holds the zone's memory and env (secrets), and what restore makes of it is
decided by its contents: its config may bind the host's root into the zone, and CRIU runs
the dump's action script as root. A checkpoint directory or archive that another user can
write, or reach through a directory they can write (a symlink of theirs, a directory of
theirs renamed in), is theirs. So a checkpoint's path, and every directory above it, must
be owned by root or by us, and writable by no one else, unless sticky (/tmp): as
OpenSSH's StrictModes checks a key's path. podman's checkpoints are root's alone too
(0600 archives, 0700 storage).
"""
from __future__ import annotations

import os
import stat

from zoned.errors import ConfigError


def _owners() -> tuple[int, ...]:
    return (0, os.geteuid())


def check_parents(path: str, what: str) -> None:
    """Every directory above `path` (symlinks resolved) is root's or ours, and no one
    else can write it, unless it is sticky (then no one else can move our entries)."""
    d = os.path.dirname(os.path.realpath(os.path.abspath(path)))
    while True:
        st = os.stat(d)
        if st.st_uid not in _owners():
            raise ConfigError(f"{what} {path}: {d} belongs to uid {st.st_uid}, who could "
                              "swap the checkpoint: use a directory of root's or yours")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise ConfigError(f"{what} {path}: {d} is writable by others "
                              f"(mode {stat.S_IMODE(st.st_mode):o}), who could swap the "
                              "checkpoint: use a directory only root or you can write")
        if d == "/":
            return
        d = os.path.dirname(d)


def check_own(path: str, what: str, *, directory: bool) -> None:
    """`path` itself: not a symlink, a directory (or a regular file), root's or ours, and
    writable by no one else; and check_parents."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such {'directory' if directory else 'file'}") \
            from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{what} {path}: a symlink; give the path it leads to")
    if directory and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path}: not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path}: not a regular file")
    if st.st_uid not in _owners():
        raise ConfigError(f"{what} {path}: belongs to uid {st.st_uid}; a checkpoint must "
                          "be root's or yours")
    if st.st_mode & 0o022:
        raise ConfigError(f"{what} {path}: writable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}); a checkpoint must not be")
    check_parents(path, what)
