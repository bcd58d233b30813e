"""flock(2), the one way zoned processes exclude each other: container dirs, IPAM leases,
the nft registry, hosts files and the image store all lock a file through here.

flock rather than fcntl record locks: it belongs to the open file description, so a lock
survives fork into a helper and goes away with the last fd, also when a process is
SIGKILLed; it works across pid namespaces, unlike pid files. (A small class instead of
contextlib.contextmanager, which `zoned run`'s start path does not import.)

That survival is for the helpers the holding thread forks itself. A fork by another thread
of the process (an API caller's: multiprocessing's workers, a harness's os.fork()) made
while one thread's operation holds a zone's lock would keep that lock for the child's life
(the lock is the open file description's, which the child shares), and every later
operation on the zone would wait for it. So each lock acquire() takes is recorded with its
thread and file (_held), and a forked child closes its copies of the locks other threads
held (_drop_others_in_child), each checked to be still that file: an fd closed since and
its number reused for another file is left alone.
"""
from __future__ import annotations

import _thread
import fcntl
import os

_held: dict[int, tuple[int, int, int]] = {}  # fd -> (thread, st_dev, st_ino) of its lock
_held_lock = _thread.allocate_lock()  # _held between threads; a fork takes it first
_hooked = False


def acquire(path: str, *, shared: bool = False, blocking: bool = True,
            mode: int = 0o600) -> int:
    """Open `path` (a file, created if missing) and flock it; returns the fd, whose close
    releases the lock. Raises the open's OSError (FileNotFoundError: a missing parent
    directory; ELOOP: a symlink), BlockingIOError when not `blocking` and another process
    holds the lock.

    flock needs only an fd, a read-only one too: whoever can open a lock file can hold
    it for ever. So a lock file of ours is never more open than `mode` (0600: only its
    owner), also one an older zoned made with a wider mode. (No directories: anyone who
    may list one can open and flock it.)"""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o7777 & ~mode and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fd, op if blocking else op | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    _record(fd, st)
    return fd


def _record(fd: int, st: os.stat_result) -> None:
    """fd holds a lock of this thread's (see the module's docstring); the entries of fds
    closed since are dropped on the way."""
    global _hooked
    with _held_lock:
        if not _hooked:
            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                                after_in_child=_drop_others_in_child)
            _hooked = True
        for old, (_, dev, ino) in list(_held.items()):
            if not _still(old, dev, ino):
                del _held[old]
        _held[fd] = (_thread.get_ident(), st.st_dev, st.st_ino)


def _before_fork() -> None:
    _held_lock.acquire()


def _after_fork() -> None:
    _held_lock.release()


def _still(fd: int, dev: int, ino: int) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _drop_others_in_child() -> None:
    """A forked child: close the locks other threads of the parent's held (the forking
    thread's own stay: its helpers may rely on them)."""
    global _held_lock
    _held_lock = _thread.allocate_lock()  # (the parent's was taken for the fork)
    me = _thread.get_ident()  # (the forking thread's, in the child too)
    for fd, (owner, dev, ino) in list(_held.items()):
        if owner != me and _still(fd, dev, ino):
            os.close(fd)
        if owner != me:
            del _held[fd]


def try_acquire(path: str) -> int | None:
    """An exclusive lock if nobody holds one (gc's way of asking "is its owner alive?"):
    the fd, or None if the lock is held or `path` cannot be opened."""
    try:
        return acquire(path, blocking=False)
    except OSError:
        return None


def wait_shared(fd: int, timeout: float) -> bool:
    """Wait up to `timeout` s for a shared lock on fd (another process's exclusive one
    ends): how a reader waits for a writer that holds its file locked until it is done
    (zoned-vmlog, zoned-vmwrap). False if it still is held then. Polls: a blocking
    flock could not be given up."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)


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
