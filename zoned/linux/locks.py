"""flock(2), the one way zoned processes exclude each other: container dirs, IPAM leases,
the nft registry, hosts files and the image store all lock a file through here.

flock rather than fcntl record locks: it belongs to the open file description, so a lock
survives fork into a helper and goes away with the last fd, also when a process is
SIGKILLed; it works across pid namespaces, unlike pid files. (A small class instead of
contextlib.contextmanager, which `zoned run`'s start path does not import.)
"""
from __future__ import annotations

import fcntl
import os


def acquire(path: str, *, shared: bool = False, blocking: bool = True, mode: int = 0o600,
            directory: bool = False) -> int:
    """Open `path` (created if missing, unless `directory`: then it must be a directory)
    and flock it; returns the fd, whose close releases the lock. Raises the open's OSError
    (FileNotFoundError: a missing parent directory), BlockingIOError when not `blocking`
    and another process holds the lock."""
    if directory:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fd, op if blocking else op | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_acquire(path: str, *, directory: bool = False) -> int | None:
    """An exclusive lock if nobody holds one (gc's way of asking "is its owner alive?"):
    the fd, or None if the lock is held or `path` cannot be opened."""
    try:
        return acquire(path, blocking=False, directory=directory)
    except OSError:
        return None


class FileLock:
    """`with FileLock(path) as fd:` holds acquire()'s lock for the block.

    make_parents: create the lock file's directory if it is missing. verify: after
    locking, check that `path` still names the file locked, and retry if not: for lock
    files that whoever removes the thing they guard unlinks (holding the lock)."""

    __slots__ = ("path", "shared", "blocking", "mode", "make_parents", "verify", "fd")

    def __init__(self, path: str, *, shared: bool = False, blocking: bool = True,
                 mode: int = 0o600, make_parents: bool = False, verify: bool = False):
        self.path, self.shared, self.blocking, self.mode = path, shared, blocking, mode
        self.make_parents, self.verify = make_parents, verify
        self.fd = -1

    def __enter__(self) -> int:
        while True:
            try:
                fd = acquire(self.path, shared=self.shared, blocking=self.blocking,
                             mode=self.mode)
            except FileNotFoundError:
                if not self.make_parents:
                    raise
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                continue
            if self.verify and not _still_names(self.path, fd):
                os.close(fd)
                continue
            self.fd = fd
            return fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _still_names(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
