"""Fault points for tests and bench/faults.py: stop or kill zoned at a named moment, so a
test can interrupt an operation exactly between two of its steps (kill -9 in the middle of
a removal) and check that `zoned gc` finishes it.

ZONED_TEST_FAULT="POINT[#N][=ACTION],..." where ACTION is `kill` (SIGKILL to this process,
the default) or a number of seconds to pause, and #N picks the Nth time this process passes
POINT (default: the first). Outside tests the variable is unset: one dict lookup per point.

Points: rm:marked rm:killed rm:cgroup rm:network rm:trash (Runtime.delete, in order),
write:tmp (state.write_json_atomic, the temp file written but not yet renamed),
exec:made (Started.release: the exec'd process exists, waiting for "go"),
run:ready (Runtime.run: the init is ready, its process not yet exec'd),
migrate:scratch (a migration's source: its scratch dir made, nothing frozen yet),
vmsave:marked vmsave:streaming vmsave:complete (a VM's save, zoned.backends.vm_save: its
mark written; each MiB of the stream written; the file complete, not yet renamed),
vmrestore:streaming (a VM's restore: each MiB of the stream fed to QEMU).

ZONED_TRACE_START=1: the steps of a start write "zoned-trace STEP MS" (CLOCK_MONOTONIC) to
stderr (mark), from the CLI, its worker and a zone's init up to its exec;
bench/start_timeline.py reads them. Unset: one bool test per step.
"""
from __future__ import annotations

import os

_passes: dict[str, int] = {}
_TRACE = os.environ.get("ZONED_TRACE_START") == "1"


def tracing() -> bool:
    """Whether the steps of a start are traced (ZONED_TRACE_START=1): the C init's plan
    then has its marks (zoned.child.initplan)."""
    return _TRACE


def mark(step: str) -> None:
    """A step of a start, for bench/start_timeline.py (ZONED_TRACE_START=1)."""
    if _TRACE:
        import time

        os.write(2, b"zoned-trace %s %.3f\n" % (step.encode(), time.monotonic() * 1e3))


def hit(point: str) -> None:
    spec = os.environ.get("ZONED_TEST_FAULT")
    if not spec:
        return
    count = _passes[point] = _passes.get(point, 0) + 1
    for item in spec.split(","):
        name, _, action = item.partition("=")
        name, _, nth = name.strip().partition("#")
        if name != point or count != int(nth or 1):
            continue
        action = action.strip() or "kill"
        if action == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        else:
            import time

            time.sleep(float(action))


def fill_disk(path: str) -> None:
    """Append to file `path` until its file system has no block left (ENOSPC): the
    disk-full case of the fault tests and bench/faults.py."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 512, b"\0"):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


def pause(var: str) -> None:
    """Tests widen a window with a pause (ZONED_TEST_PAUSE_...=seconds) to stop zoned
    inside it."""
    seconds = os.environ.get(var)
    if seconds:
        import time

        time.sleep(float(seconds))
