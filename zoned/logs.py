"""A detached zone's log: written by zoned-logger (csrc/logger.c), read by `zoned logs`.

The zone's stdout and stderr are the write end of a pipe; zoned-logger, a small static
process outside the zone's cgroup, appends what it reads to DATA/containers/ID/ctr.log and
rotates it to ctr.log.1 by size ($ZONED_LOG_SIZE_MAX, default 8m), so neither the log's
memory nor its growth are the zone's, and a chatty zone cannot fill the disk. Readers
here follow the log across a rotation.
"""
from __future__ import annotations

import os
import time

from zoned.errors import ZonedError

LOG_NAME = "ctr.log"
OLD_NAME = "ctr.log.1"
DEFAULT_SIZE_MAX = 8 << 20
LOGGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libexec", "zoned-logger")


def size_max() -> int:
    """Bytes per log file before it rotates: $ZONED_LOG_SIZE_MAX (e.g. 1m), else 8 MiB."""
    value = os.environ.get("ZONED_LOG_SIZE_MAX")
    if not value:
        return DEFAULT_SIZE_MAX
    from zoned.oci.values import parse_size

    return parse_size(value, "ZONED_LOG_SIZE_MAX")


class Logger:
    """A running zoned-logger: its pid (and start time), and the pipe's write end that
    becomes the zone's stdout and stderr (the caller closes it once the zone has it);
    err_write_fd: the stderr pipe's, when stderr has a log of its own (else -1)."""

    __slots__ = ("pid", "start", "write_fd", "pipe_ino", "err_write_fd")

    def __init__(self, pid: int, start: int | None, write_fd: int, pipe_ino: int,
                 err_write_fd: int = -1):
        self.pid, self.start, self.write_fd, self.pipe_ino = pid, start, write_fd, pipe_ino
        self.err_write_fd = err_write_fd

    def describe(self) -> dict:
        """What state.json records: who to wait for, and which pipe is the log's
        (checkpoint hands it to CRIU by its inode)."""
        return {"pid": self.pid, "start": self.start, "pipe": self.pipe_ino}


class Deferred:
    """The logger this process will become (zoned.cli.detach): spawn() then starts no
    process, keeps the pipe's read end, and become() execs zoned-logger -p here once the
    zone runs, so the logger is the zone init's parent and records its exit status."""

    armed = False
    read_fd = -1
    directory: str | None = None


def defer_next() -> None:
    """Make this process the next spawn()'s logger (see Deferred)."""
    Deferred.armed = True


TS_NAME = "ctr.ts"  # the log's times beside it (zoned.logtimes reads them)


def create_deferred_files() -> None:
    """The deferred logger's ctr.log and ctr.ts, made (empty) before it starts, which
    opens them O_APPEND: so once `zoned run -d` has returned, the zone's files are all
    there (`zoned logs` at once reads an empty log, not a missing one)."""
    if Deferred.directory is None:
        return
    for name in (LOG_NAME, TS_NAME):
        os.close(os.open(os.path.join(Deferred.directory, name),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640))


def become(state_dir: str, init_pid: int) -> None:
    """exec zoned-logger -p INIT STATEDIR DIR MAX with the deferred pipe as stdin; returns
    only if that is impossible (no deferred logger, or exec failed: ZonedError)."""
    if Deferred.read_fd < 0 or Deferred.directory is None:
        raise ZonedError("no deferred logger to become")
    os.dup2(Deferred.read_fd, 0)  # dup2 leaves fd 0 inheritable
    try:
        os.execv(LOGGER, [LOGGER, "-p", str(init_pid), state_dir, Deferred.directory,
                          str(size_max())])
    except OSError as e:
        raise ZonedError(f"cannot run {LOGGER}: {e.strerror}") from None


def become_tty(state_dir: str, init_pid: int, master: int, listener: int,
               directory: str, client: int | None = None) -> None:
    """exec zoned-logger -P: this process (the init's parent) logs the zone's pty master
    to DIRECTORY/ctr.log and serves `zoned attach` on the listening socket `listener`
    (STATEDIR/attach.sock), and `client` (connected already) first; returns only if the
    exec failed (ZonedError)."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)  # none is clobbered below
            for fd in (master, listener, client) if fd is not None]
    for target, fd in zip((0, 3, 4), high, strict=False):
        os.dup2(fd, target)  # inheritable
    try:
        os.execv(LOGGER, [LOGGER, "-P", str(init_pid), state_dir, directory,
                          str(size_max())])
    except OSError as e:
        raise ZonedError(f"cannot run {LOGGER}: {e.strerror}") from None


def _spawn_deferred(directory: str) -> Logger:
    from zoned.linux.proc import proc_start_time

    Deferred.armed = False
    r, w = os.pipe2(os.O_CLOEXEC)
    Deferred.read_fd, Deferred.directory = r, directory
    me = os.getpid()
    return Logger(me, proc_start_time(me), w, os.fstat(w).st_ino)


def spawn(directory: str, err_directory: str | None = None) -> Logger:
    """Start zoned-logger writing DIRECTORY/ctr.log; it runs until the pipe's last writer
    closes it. It stays in the cgroup of the calling zoned, not the zone's.
    err_directory: stderr gets a pipe of its own, logged to ERR_DIRECTORY/ctr.log by the
    same process, which logs a line written to stdout before one written to stderr first
    (Logger.err_write_fd)."""
    from zoned.linux.proc import proc_start_time, spawn_daemon

    if not os.access(LOGGER, os.X_OK):
        raise ZonedError(f"{LOGGER} is missing (run `make setup`)")
    if Deferred.armed and err_directory is None:
        return _spawn_deferred(directory)
    limit = size_max()
    r, w = os.pipe2(os.O_CLOEXEC)
    er, ew = os.pipe2(os.O_CLOEXEC) if err_directory else (-1, -1)
    argv = [LOGGER, directory, str(limit)]
    actions = [(os.POSIX_SPAWN_DUP2, r, 0)]
    if err_directory:
        argv.append(err_directory)
        actions.append((os.POSIX_SPAWN_DUP2, er, 3))
    try:
        pid = spawn_daemon(LOGGER, argv, actions, f"zoned-logger for {directory}")
        return Logger(pid, proc_start_time(pid), w, os.fstat(w).st_ino, ew)
    except BaseException:
        for fd in (w, ew):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (r, er):
            if fd >= 0:
                os.close(fd)


def discard_zone_data(data: str | None, logger: dict | None) -> None:
    """Remove a zone's data dir for good: its logger first (it has written everything and
    exited, see wait_logger), so nothing writes into the removed dir, then the dir."""
    from zoned.storage import remove_zone_dir

    wait_logger(logger)
    remove_zone_dir(data)


def wait_logger(info: dict | None, timeout: float = 2.0) -> None:
    """Wait until a zone's logger has written everything and exited (its zone is gone, so
    the pipe reaches EOF); SIGKILL it if it has not after `timeout` (some stranger still
    holds the pipe open). Removal waits here so no logger writes into a removed dir."""
    if not info or not info.get("pid"):
        return
    if info["pid"] == os.getpid():  # a deferred logger (this process) that never ran
        if Deferred.read_fd >= 0:
            os.close(Deferred.read_fd)
            Deferred.read_fd = -1
        return
    from zoned.linux.proc import signal_pid, wait_exit

    if not wait_exit(info["pid"], info.get("start"), timeout):
        signal_pid(info["pid"], info.get("start"), 9)
        wait_exit(info["pid"], info.get("start"), 1)


def recorded_exit(state_dir: str, pid: int) -> tuple[int, float] | None:
    """The exit of init `pid` that its parent logger (-p) recorded in STATEDIR/exit:
    (code, epoch); None if none was, or only an earlier init's (one a dump ended, before
    a failed migration put the zone back)."""
    try:
        with open(os.path.join(state_dir, "exit")) as f:
            code, when, who = f.read().split()
        return (int(code), float(when)) if int(who) == pid else None
    except (OSError, ValueError):
        return None


def logger_alive(info: dict | None) -> bool:
    if not info or not info.get("pid"):
        return False
    from zoned.linux.proc import proc_start_time

    return proc_start_time(info["pid"]) == info.get("start")


def _open_pair(log: str):
    """(older file or None, current file or None), opened so that no rotation came
    between the two opens."""
    old_path = os.path.join(os.path.dirname(log), OLD_NAME)
    for _ in range(100):
        cur = _open(log)
        old = _open(old_path)
        if cur is None or _ino(log) == os.fstat(cur.fileno()).st_ino:
            return old, cur
        for f in (cur, old):
            if f is not None:
                f.close()
    raise ZonedError(f"{log} rotates too fast to be read")


def _open(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _copy(f, out) -> int:
    """Copy the rest of `f` to `out`; a writer that wants to know where each chunk comes
    from (zoned.logtimes.TimedWriter: a line's time) has write_from(f, offset, chunk)."""
    n = 0
    write_from = getattr(out, "write_from", None)
    while True:
        offset = f.tell()
        chunk = f.read(65536)
        if not chunk:
            return n
        if write_from is not None:
            write_from(f, offset, chunk)
        else:
            out.write(chunk)
        n += len(chunk)


def read(log: str, out) -> None:
    """Write the whole log (ctr.log.1, then ctr.log) to the binary stream `out`."""
    old, cur = _open_pair(log)
    for f in (old, cur):
        if f is not None:
            with f:
                _copy(f, out)


def follow(log: str, out, finished, poll: float = 0.2) -> None:
    """Write the log, then what is appended to it, across rotations, until `finished()`
    says the writer is done (then drain what is left)."""
    old, cur = _open_pair(log)
    if old is not None:
        with old:
            _copy(old, out)
    while True:
        if cur is None:
            cur = _open(log)
            if cur is None:  # not written yet, or removed with its zone
                if finished():
                    return
                time.sleep(poll)
                continue
        _copy(cur, out)
        out.flush()
        done = finished()  # asked before the last look: nothing is written after it
        mine = os.fstat(cur.fileno()).st_ino
        if _ino(log) != mine:
            # Rotated: the logger never writes to a file once it is renamed, so what is
            # left in `cur` is final. If ctr.log.1 is not `cur` either, a whole file went
            # by between two looks: it comes first.
            _copy(cur, out)
            cur.close()
            missed, cur = _open_pair(log)
            if missed is not None:
                with missed:
                    if os.fstat(missed.fileno()).st_ino != mine:
                        _copy(missed, out)
            continue
        if done:
            _copy(cur, out)
            cur.close()
            out.flush()
            return
        time.sleep(poll)
