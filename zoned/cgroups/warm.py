"""Keeping the kernel's cgroup migration lock warm around a burst of task moves.

Moving a task between cgroups (a write to cgroup.procs or tasks, v1 or v2) takes the
global cgroup_threadgroup_rwsem for writing. That per-CPU rwsem's first writer after a
quiet spell waits for an RCU grace period (rcu_sync): 7-20 ms on this nested VM, where
every further writer within the next grace period passes at once (~0.03 ms). A `criu
restore` moves its tasks into their cgroups once, inside a live migration's frozen window,
so it paid that wait there (11-21 ms of ~105).

Warm() has a thread write this process's own pid into the cgroup it is already in (no
move at all, but a writer of that lock) every few ms: the grace period is waited for
before the frozen window's moves, which then find the lock warm. The kernel's own answer
is the `favordynmods` cgroup mount option (kernel >= 6.0), which makes every fork and exit
on the host pay instead: a choice for the host's owner, not for zoned.
"""
from __future__ import annotations

import os
import threading


def own_procs_file() -> str | None:
    """cgroup.procs of the cgroup this process is in: cgroup2's if mounted, else the first
    v1 hierarchy's; None if none can be found."""
    from zoned.cgroups.detection import mounts

    try:
        with open("/proc/self/cgroup") as f:
            lines = [ln.split(":", 2) for ln in f.read().splitlines() if ln.count(":") >= 2]
    except OSError:
        return None
    hierarchies = mounts()
    for want_v2 in (True, False):
        for _, ctrls, path in lines:
            if (ctrls == "") != want_v2:
                continue
            for h in hierarchies:
                if want_v2 and h.fstype == "cgroup2" or \
                        not want_v2 and h.fstype == "cgroup" and \
                        set(h.options.split(",")) == set(ctrls.split(",")):
                    procs = os.path.join(h.mountpoint, path.lstrip("/"), "cgroup.procs")
                    return procs if os.path.exists(procs) else None
    return None


class Warm:
    """`with Warm():` keeps the cgroup migration lock warm while the block runs (best
    effort: where the write fails, the thread just stops)."""

    def __init__(self, period: float = 0.002):
        self.period = period
        self.writes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Warm":
        procs = own_procs_file()
        if procs is not None:
            self._thread = threading.Thread(target=self._run, args=(procs,), daemon=True,
                                            name="zoned-cgroup-warm")
            self._thread.start()
        return self

    def _run(self, procs: str) -> None:
        pid = str(os.getpid()).encode()
        try:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            while not self._stop.is_set():
                os.write(fd, pid)
                self.writes += 1
                self._stop.wait(self.period)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __exit__(self, *exc) -> None:
        # Not joined: a write still waiting for its grace period would hold the caller
        # (the frozen window) up; the thread ends by itself after it.
        self._stop.set()
