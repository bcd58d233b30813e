"""The last reference to what zoned removes, dropped off the caller's path.

On a file system mounted with `discard` (ext4 on many cloud images, and this host's root),
the syscall that drops a removed inode's last reference (rmdir, unlink, a rename over a
file) frees its blocks and waits for the device to trim them: ~0.2 ms a removal here, and
2 ms or more behind other trims; a `zoned run --rm` made ten such waits (bench/README,
finding 20). Instead, zoned keeps an O_PATH fd on each inode it is about to remove
(hold), and another process drops the last reference:
- the CLI (defer_until_exit, zoned.cli.console) keeps them until its exit: the process
  that holds its memory after the exit (zoned.linux.syscalls.exit_lending_memory)
  inherits them, so they are freed after the parent has learnt of the exit; a command
  that makes no such process hands them to zoned-release at its exit (release);
- an operation of the API (begin ... end: zoned.run, Runtime.delete) hands what it kept
  to a thread of this process's that closes them (one, started at the first end(): it
  waits in close(2), without the GIL, while the caller goes on), ~10 us where starting a
  process to drop them (zoned-release, which the CLI's exit still uses: see release) took
  ~0.3 ms of each zoned.run. The same thread runs other work off the caller's path that
  lets the GIL go (aside: zoned.linux.netahead). A process that clones python children
  with the GIL let go (zoned.pool's makers: clone3 through cffi) must have no other
  thread, which could hold the GIL at the clone and leave the child waiting for it for
  ever: single_threaded_only() makes its end() use zoned-release.

What is kept is small and short-lived: an O_PATH fd holds no lock and no pipe end (nobody
waits on one), only directories and files of at most SMALL bytes on disk are kept (a
large file is freed at its removal, as before, so a command that goes on running pins
little), at most LIMIT of them, and a fork's child drops its copies at once (a logger or
monitor forked later must not keep them for its life). Outside those, hold() does nothing.
"""
from __future__ import annotations

import _thread
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported on the start path
    from typing import Callable

LIMIT = 64  # inodes kept at the most
SMALL = 8192  # bytes on disk of a file worth keeping (its block, not its data)
RELEASER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "libexec", "zoned-release")

_fds: list[int] | None = None  # None: not keeping (hold does nothing)
_until_exit = False
_lock = _thread.allocate_lock()  # _fds and _closing between threads (API callers)
_busy = _thread.allocate_lock()  # held by the closer while it closes a batch (no fork then)
_hooked = False
_closing: list[int] = []  # end()'s fds, for the closer thread (under _lock)
_jobs: list[Callable[[], None]] = []  # aside()'s, for the closer thread (under _lock)
_closer_wake: _thread.LockType | None = None  # released when _closing has fds; None: no
# closer thread runs in this process (yet, or since a fork)
_no_threads = False  # single_threaded_only(): end() uses zoned-release


def defer_until_exit() -> None:
    """From now on, hold() keeps what it is given until this process exits."""
    global _until_exit
    if begin():
        _until_exit = True


def begin() -> bool:
    """Keep what is removed from now on, for end(). False where something keeps already
    (the CLI until its exit, an operation this one is part of): then do not call end()."""
    global _fds, _hooked
    with _lock:
        if _fds is not None:
            return False
        _fds = []
        if not _hooked:
            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                                after_in_child=_drop_in_child)
            _hooked = True
        return True


def single_threaded_only() -> None:
    """This process starts no closer thread: its end() hands what it kept to zoned-release
    (a process that clones python children through cffi, see the module's docstring)."""
    global _no_threads
    _no_threads = True


def end() -> None:
    """Hand what the operation kept to the closer thread (after a begin() that returned
    True); to zoned-release after single_threaded_only()."""
    global _fds
    with _lock:
        fds, _fds = _fds or [], None
        if not fds or _no_threads:
            wake = None
        else:
            _closing.extend(fds)
            wake = _closer_started()
    if wake is None:
        release(fds)
        return
    _wake(wake)


def aside(job: Callable[[], None]) -> bool:
    """Have the closer thread run job() (best effort: an exception is dropped), before the
    closes it has, through a fork (_busy): work off the caller's path that lets the GIL go
    (zoned.linux.netahead). False where no closer thread may run (single_threaded_only)."""
    with _lock:
        if _no_threads:
            return False
        _jobs.append(job)
        wake = _closer_started()
    _wake(wake)
    return True


def _closer_started() -> _thread.LockType:
    """The closer thread's wake-up lock, the thread started first if none runs (under
    _lock)."""
    global _closer_wake
    if _closer_wake is None:
        _closer_wake = _thread.allocate_lock()
        _closer_wake.acquire()
        _thread.start_new_thread(_closer, (_closer_wake,))
    return _closer_wake


def _wake(wake: _thread.LockType) -> None:
    try:
        wake.release()
    except RuntimeError:
        pass  # released already: the closer has yet to take what is there


def closer_running() -> bool:
    """Whether this process has the closer thread: between two end()s it waits on a lock,
    inside one it runs a few lines of python and close(2); it holds no lock of libc's at
    a fork, but may hold the GIL (zoned.cgroups.join.single_threaded counts it where a
    python child is cloned)."""
    return _closer_wake is not None


def _closer(wake: _thread.LockType) -> None:
    """The closer thread: drops the last references end() hands it, all that are there in
    one call to C (z_close_fds) that lets the GIL go once: closed one by one in python,
    each close's return took the GIL back from the busy caller (~0.2 ms of each
    zoned.run). It holds _busy through the batch, which a fork takes first (_before_fork):
    a fork waits for the batch, so the child's copies are all still in _closing, and it
    closes them (_drop_in_child). hold() and end() take only _lock: never that wait.
    The jobs aside() queued run first, under _busy too: the caller's next run wants what
    they make, while a close may wait behind the disk's trims."""
    from zoned._native import ffi, lib

    while True:
        wake.acquire()
        while True:
            with _busy:
                with _lock:
                    n = len(_closing)
                    jobs = _jobs[:]
                    del _jobs[:]
                    if not n and not jobs:
                        break
                    batch = ffi.new("int[]", _closing[:n])
                for job in jobs:
                    try:
                        job()
                    except Exception:  # noqa: BLE001 - best effort (aside)
                        pass
                lib.z_close_fds(batch, n)
                with _lock:
                    del _closing[:n]  # (end() appends: the batch is the first n)


def _before_fork() -> None:
    _busy.acquire()  # (the closer's batch, if one is being closed, waited for)
    _lock.acquire()


def _after_fork() -> None:
    _lock.release()
    _busy.release()


def release(fds: list[int]) -> None:
    """Drop `fds` (held O_PATH fds, closed here) in a process of zoned-release's: it forks
    and exits, its child exits and drops them. Where it cannot run, they are closed here."""
    if not fds:
        return
    fds = sorted(fds)
    pid = 0
    try:  # dup2 onto itself: the child's copy without O_CLOEXEC, no window for others
        pid = os.posix_spawn(RELEASER, ["zoned-release", *map(str, fds)], {},
                             file_actions=[(os.POSIX_SPAWN_DUP2, fd, fd) for fd in fds])
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    if pid:
        try:
            os.waitpid(pid, 0)  # it exits after its fork, not after the frees
        except ChildProcessError:
            pass  # (a SIGCHLD handler of the caller's reaped it)


def hold(path: str, dir_fd: int | None = None) -> None:
    """Keep the inode at `path` (relative to dir_fd; not followed if a symlink), which the
    caller is about to remove, if deferring and it is small. Never raises: a path that is
    gone or cannot be opened is removed as before."""
    fds = _fds  # (another thread's end() may set it to None meanwhile)
    if fds is None or len(fds) >= LIMIT:
        return
    with _lock:  # opened and kept at once: a fork (_before_fork) sees it kept, or not open
        if _fds is not None:
            fd = pin(path, dir_fd)
            if fd >= 0:
                _fds.append(fd)


def pin(path: str, dir_fd: int | None = None) -> int:
    """An O_PATH fd on the inode at `path` (relative to dir_fd; not followed) if it is a
    directory or a small file, else -1: while it is open, a removal or replacement of
    `path` does not free the inode, its close does (zoned.pool's makers free the state a
    run replaced so)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
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
    return list(_fds or ()) if _until_exit else []


def _drop_in_child() -> None:
    """A forked child closes its copies: the parent's stay, so nothing is freed here."""
    global _fds, _until_exit, _lock, _busy, _closer_wake
    _lock = _thread.allocate_lock()  # (held by another thread of the parent's, maybe)
    _busy = _thread.allocate_lock()
    for fd in [*(_fds or ()), *_closing]:
        try:
            os.close(fd)
        except OSError:
            pass
    _fds, _until_exit, _closer_wake = None, False, None
    del _closing[:]
    del _jobs[:]
