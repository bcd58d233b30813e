"""Pay the kernel's cgroup-move grace period in the background, before the move is needed.

Moving a process into a cgroup (a write to cgroup.procs) takes cgroup_threadgroup_rwsem
for writing, and the first writer after a quiet spell waits for a full RCU grace period
(rcu_sync_enter: 8-30 ms on a busy 2-CPU host; then later writers pass at once, until one
more grace period after the last one is done). Every start pays it when zoned moves the
container's init into its cgroups, serially, after the fork.

prime() starts a thread that moves this process into the cgroup it is already in: a move
that changes nothing, but whose wait for the grace period then overlaps zoned's own
work (imports, config, the overlay, the fork), so that the real move finds the way open.
wait() joins the thread; the runtime calls it before it forks (no fork while a thread of
ours is inside a write). Best effort: any error (no cgroupfs, read-only, not ours to write)
just leaves the real move to pay as before.

Where the write goes: our own cgroup, from /proc/self/cgroup, in a hierarchy whose mount
shows that cgroup (mountinfo's root field is a prefix of it), so the path cannot point at
any other cgroup: a mount of a subtree elsewhere, or a cgroup namespace, is mapped right or
skipped, never guessed.
"""
from __future__ import annotations

import os
import time

_state = {"lock": None, "done": 0.0, "took": 0.0, "path": None}


def own_procs_file() -> str | None:
    """cgroup.procs of the cgroup this process is in, in one hierarchy (the v2 one if
    mounted, else the first v1 one), or None if no mount shows it."""
    from zoned.linux import mountinfo

    try:
        with open("/proc/self/cgroup", "rb") as f:
            lines = f.read().decode(errors="surrogateescape").splitlines()
        with open("/proc/self/mountinfo", "rb") as f:
            mounts = mountinfo.parse(f.read())
    except OSError:
        return None
    own: dict[str, str] = {}  # "" (v2) or a v1 hierarchy's controllers/name= -> our path
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    candidates = []
    for m in mounts:
        if m.fstype == "cgroup2":
            key = ""
        elif m.fstype == "cgroup":
            key = ",".join(o for o in m.super_options
                           if o not in ("rw", "ro") and "=" not in o or o.startswith("name="))
        else:
            continue
        path = own.get(key)
        if path is None or not path.startswith("/"):
            continue
        root = m.root.rstrip("/")
        if path != root and not path.startswith(root + "/"):
            continue  # this mount does not show our cgroup
        rel = path[len(root):].lstrip("/")
        candidates.append((key != "", os.path.join(m.mount_point, rel, "cgroup.procs")))
    return min(candidates)[1] if candidates else None


def _move_self(lock) -> None:
    start = time.monotonic()
    try:
        path = _state["path"]
        if path is None:
            path = _state["path"] = own_procs_file() or ""
        if not path:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    finally:
        _state["done"] = time.monotonic()
        _state["took"] = _state["done"] - start
        lock.release()


def prime() -> None:
    """Start the no-op move in the background, unless one runs. For a command that will
    move a container's init some 10-30 ms from now (`zoned run`, `zoned create`)."""
    if os.geteuid() != 0:
        return  # rootless: our cgroup is seldom ours to write, and zoned makes none
    if _state["lock"] is not None or _state["path"] == "":
        return  # no hierarchy shows our cgroup
    import _thread

    lock = _thread.allocate_lock()
    lock.acquire()
    _state["lock"] = lock
    try:
        _thread.start_new_thread(_move_self, (lock,))
    except RuntimeError:
        _state["lock"] = None


def renew() -> None:
    """Keep the way open a while longer, if an earlier prime opened it and it is still
    open: a write now passes at once and holds it open for one more grace period. Not
    otherwise: a new prime would make the fork wait for the grace period (wait()), which
    the container's own set-up after the fork would have overlapped."""
    took, done = _state["took"], _state["done"]
    if _state["lock"] is None and done and time.monotonic() - done < 0.8 * took:
        prime()


def wait() -> None:
    """Join the primer, if one runs: called before every fork of the runtime's."""
    lock = _state["lock"]
    if lock is not None:
        lock.acquire()
        lock.release()
        _state["lock"] = None
