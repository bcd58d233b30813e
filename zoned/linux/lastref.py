"""The last reference to what a command removes, kept until the command has exited.

On a file system mounted with `discard` (ext4 on many cloud images, and this host's root),
the syscall that drops a removed inode's last reference (rmdir, unlink, a rename over a
file) frees its blocks and waits for the device to trim them: ~0.2 ms a removal here, and
2 ms or more behind other trims; a `zoned run --rm` made ten such waits (bench/README,
finding 20). A command that exits through zoned.linux.syscalls.exit_lending_memory can
leave that to the process that holds its memory after its exit: it keeps an O_PATH fd on
each inode it is about to remove (hold), the holder inherits those fds, and the inodes
are freed when the holder goes, after the command's parent has learnt of its exit.

What is kept is small and short-lived: an O_PATH fd holds no lock and no pipe end (nobody
waits on one), only directories and files of at most SMALL bytes on disk are kept (a
large file is freed at its removal, as before, so a command that goes on running pins
little), at most LIMIT of them, and a fork's child drops its copies at once (a logger or
monitor forked later must not keep them for its life). Off, hold() does nothing: only the
CLI turns it on (zoned.cli.console), as only its exit has the holder.
"""
from __future__ import annotations

import os
import stat

LIMIT = 64  # inodes kept at the most
SMALL = 8192  # bytes on disk of a file worth keeping (its block, not its data)

_fds: list[int] | None = None  # None: not deferring (hold does nothing)


def defer_until_exit() -> None:
    """From now on, hold() keeps what it is given until this process exits."""
    global _fds
    if _fds is None:
        _fds = []
        os.register_at_fork(after_in_child=_drop_in_child)


def hold(path: str) -> None:
    """Keep the inode at `path` (not followed if a symlink), which the caller is about to
    remove, if deferring and it is small. Never raises: a path that is gone or cannot be
    opened is removed as before."""
    if _fds is not None and len(_fds) < LIMIT:
        fd = pin(path)
        if fd >= 0:
            _fds.append(fd)


def pin(path: str) -> int:
    """An O_PATH fd on the inode at `path` (not followed) if it is a directory or a small
    file, else -1: while it is open, a removal or replacement of `path` does not free the
    inode, its close does (zoned.pool's makers free the state a run replaced so)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) or st.st_blocks * 512 <= SMALL:
            return fd
    except OSError:
        pass
    os.close(fd)
    return -1


def held() -> list[int]:
    """The fds kept so far (for the exit)."""
    return list(_fds or ())


def _drop_in_child() -> None:
    """A forked child closes its copies: the parent's stay, so nothing is freed here."""
    global _fds
    for fd in _fds or ():
        try:
            os.close(fd)
        except OSError:
            pass
    _fds = None
