"""Processes by pid, safe against pid reuse: a pid alone may name a stranger by the time it is
used, so every helper here checks the process's start time (from /proc/PID/stat) against
the one recorded when zoned started it, and signals or waits through a pidfd opened before
that check (a pidfd keeps naming the process it was opened on). reap and kill_and_reap take
only our own children, whose pid no other process can get before we have reaped them.
"""
from __future__ import annotations

import os


def status_caps(pid: int | str, field: str) -> int:
    """A capability mask of /proc/PID/status (`field`: CapInh, CapPrm, CapEff, CapBnd or
    CapAmb; pid "self" for ours). OSError if the process is gone, ValueError if the field
    is missing."""
    key = field.encode() + b":"
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1], 16)
    raise ValueError(f"/proc/{pid}/status has no {field}")


def proc_start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot): tells a live pid from a reused one.
    None if there is no such process, or it is a zombie (it has stopped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # comm may hold spaces and parens
    if fields[0] == b"Z" or fields[0] == b"X":
        return None
    return int(fields[19])


def signal_pid(pid: int, start: int | None, sig: int) -> None:
    """Signal a container process through a pidfd, after checking it is still the same
    process (pid reuse), so a stale state can never hit a stranger."""
    import _signal  # (the stdlib's pidfd calls: no C extension to load for a `kill`)
    import os

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if proc_start_time(pid) != start:
            return
        try:
            _signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
    finally:
        os.close(fd)


def wait_exit(pid: int, start: int | None, timeout: float | None) -> bool:
    """Wait for a process (ours or not) to exit; False if it has not after `timeout`. Does
    not reap: an API caller that forked the container collects the exit status itself."""
    if not pid:
        return True
    import os
    import select

    from zoned.linux import syscalls as sc

    try:
        fd = sc.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if proc_start_time(pid) != start:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
    finally:
        os.close(fd)


def reap(pid: int) -> None:
    """Collect the exit status if the process is our child (API users fork containers)."""
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_and_reap(pid: int) -> None:
    """SIGKILL our child `pid` and collect it (a half-made container's init)."""
    import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
    import os

    try:
        os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def spawn_daemon(exe: str, argv: list[str], actions: list, what: str) -> int:
    """posix_spawn one of zoned's helpers that daemonize themselves (zoned-logger,
    zoned-vmlog: the first process prints the worker's pid on its stdout and exits, so
    the worker is nobody's zombie) with `actions` (POSIX_SPAWN_DUP2 of its pipes);
    returns the worker's pid. ZonedError("WHAT did not start") if it did not."""
    from zoned.errors import ZonedError
    from zoned.linux.files import read_to_eof

    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    try:
        starter = os.posix_spawn(exe, argv, {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, pid_w, 1), *actions])
        os.close(pid_w)
        pid_w = -1
        out = read_to_eof(pid_r, 64)
        _, status = os.waitpid(starter, 0)
        if status != 0 or not out.strip().isdigit():
            raise ZonedError(f"{what} did not start")
        return int(out)
    finally:
        for fd in (pid_r, pid_w):
            if fd >= 0:
                os.close(fd)
