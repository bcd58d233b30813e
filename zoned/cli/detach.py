"""A detached zone whose exit code is kept, with no process added for it.

Only a process's parent learns its exit status, and `zoned run -d` exits at once. So the
CLI forks a worker that creates and starts the zone (the init is the worker's child) and
then execs zoned-logger -p in place (zoned.logs.become): the zone's one extra process,
its log writer, is also its init's parent, reaps it and writes STATEDIR/exit. The CLI
process waits only for the worker's "ok" (or its exit, with the error it printed) and
returns, as before.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

OK = b"ok\n"


def start_reaped(start: Callable[[], tuple[str, int]]) -> int:
    """Run `start()` (create and start a zone with log=True; returns its state dir and init
    pid) in a worker that then becomes the zone's logger. 0 once the zone runs, else the
    worker's exit code (it has printed its error)."""
    import signal

    r, w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    worker = os.fork()
    if worker == 0:  # pragma: no cover - the worker, measured through the CLI tests
        os.close(r)
        _work(start, w)  # returns only by an exception: the CLI prints it and exits
        raise AssertionError("unreachable")
    os.close(w)
    # The terminal's Ctrl-C reaches the worker too (same process group), which undoes a
    # half-made zone; this process only waits for its word.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def forward(signum, frame):
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    olds = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        from zoned.linux.files import read_to_eof

        said = read_to_eof(r, 16)
    finally:
        os.close(r)
        signal.signal(signal.SIGINT, old)
        for s, h in olds.items():
            signal.signal(s, h)
    if said == OK:
        return 0
    _, status = os.waitpid(worker, 0)
    from zoned.api import status_code

    return status_code(status) or 125


def _work(start: Callable[[], tuple[str, int]], report: int) -> None:
    from zoned import logs
    from zoned.cli.common import interruptible

    interruptible()
    logs.defer_next()
    state_dir, pid = start()
    import signal

    for s in (signal.SIGINT, signal.SIGHUP):  # as the logger's own: the zone runs now
        signal.signal(s, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # `$(zoned run -d ...)` sees EOF once the CLI has exited
    os.dup2(null, 2)
    os.close(null)
    os.write(report, OK)
    logs.become(state_dir, pid)
