"""Pay the kernel's cgroup-move grace period in the background, before the move is needed.

Moving a process into a cgroup (a write to cgroup.procs) takes cgroup_threadgroup_rwsem
for writing, and the first writer after a quiet spell waits for a full RCU grace period
(rcu_sync_enter: 8-30 ms on a busy 2-CPU host; then later writers pass at once, until one
more grace period after the last one is done). Every start pays it when zoned moves the
container's init into its cgroups, serially, after the fork.

prime() starts a thread that moves this process into the cgroup it is already in: a move
that changes nothing, but whose wait for the grace period then overlaps zoned's own
work (imports, config, the overlay, the fork and the init's own set-up), and which then
keeps the way open with such a move every 2 ms, so that the real move finds it open.
The thread finds the path in Python, then loops in C without the GIL (csrc/primer.c):
a loop in Python took the GIL back at each wake-up, which cost the busy main thread ~2 ms
of every start. wait() stops and joins the thread, once the init is in its cgroup. (The
kernel holds cgroup_mutex through that wait: making the container's cgroup waits for it
too, so the runtime makes it after the fork.) The init may be forked while the thread
runs: it is then blocked in a write or a poll, holding no lock the child needs, and the
child forgets it (register_at_fork). `zoned run`, `zoned create` and the API's run() and
Container.start() prime when another thread runs (join.prime_for_create: a single-threaded
creator's init joins its cgroups with no move that waits, zoned.cgroups.join; there the
thread lives some 20 ms, during the start, and does nothing but those writes: a fork of
the user's meanwhile forgets it), and so does a migration's destination from the images'
arrival until `criu restore`, which moves the tasks into their cgroups inside the frozen
window, has returned (11-21 ms of it before).
Best effort: any error (no cgroupfs, read-only, not ours to write) just leaves the real
move to pay as before.

Where the write goes: our own cgroup, from /proc/self/cgroup, in a hierarchy whose mount
shows that cgroup (mountinfo's root field is a prefix of it), so the path cannot point at
any other cgroup: a mount of a subtree elsewhere, or a cgroup namespace, is mapped right or
skipped, never guessed.
"""
from __future__ import annotations

import _thread
import os
import time

KEEP_OPEN_EVERY = 0.002  # s between no-op moves that keep the way open (a grace period
# here is 8-30 ms; the way closes one grace period after the last move)
KEEP_OPEN_FOR = 2.0      # s: a primer nobody joins (an error before the fork) stops then
KEEPER_FOR = 0.1         # s: how long a keeper keeps the way open after each word

_state = {"thread": None, "path": None}
_LOCK = _thread.allocate_lock()  # prime() and wait() of several threads (zoned.api used
# from threads): one at a time, so that one primer runs and is stopped once


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


def _move_self(path: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def _primer(stop_fd: int, done) -> None:
    """The thread: the first move waits for the grace period; then a no-op move every
    KEEP_OPEN_EVERY keeps the way open (each one passes at once) until wait() says the
    fork is next (a byte on stop_fd). The loop is C's, called without the GIL."""
    try:
        path = _state["path"]
        if path is None:
            path = _state["path"] = own_procs_file() or ""
        if path:
            from zoned._native import lib

            lib.z_primer_loop(path.encode(), int(KEEP_OPEN_EVERY * 1000),
                              int(KEEP_OPEN_FOR * 1000), stop_fd)
    finally:
        done.release()


def prime() -> None:
    """Start the primer, unless one runs: for a command that will move a container's
    init some 10-30 ms from now (`zoned run`, `zoned create`, zoned.api)."""
    if os.geteuid() != 0:
        return  # rootless: our cgroup is seldom ours to write, and zoned makes none
    with _LOCK:
        _start()


def _start() -> None:
    if _state["thread"] is not None or _state["path"] == "":
        return  # one runs, or no hierarchy shows our cgroup

    # Imported here, so that the thread imports nothing: a fork while it held a module's
    # import lock would leave that lock held in the child.
    from zoned._native import lib  # noqa: F401
    from zoned.linux import mountinfo  # noqa: F401
    if not _state.get("forget"):
        os.register_at_fork(after_in_child=_forget)
        _state["forget"] = True
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    done = _thread.allocate_lock()
    done.acquire()
    _state["thread"] = (stop_r, stop_w, done)
    try:
        _thread.start_new_thread(_primer, (stop_r, done))
    except RuntimeError:
        _state["thread"] = None
        os.close(stop_r)
        os.close(stop_w)


def _forget() -> None:
    """In a forked child: the thread is not there (and its lock is never released; the
    pipe's fds are close-on-exec, and a zone's init closes every fd it does not keep), and
    _LOCK may have been held by another thread of the parent."""
    global _LOCK
    _state["thread"] = None
    _LOCK = _thread.allocate_lock()


def wait() -> None:
    """Stop and join the primer, if one runs: once the container's init is in its cgroup,
    and before a fork whose child runs on in Python (idmap_userns, network set-up)."""
    with _LOCK:
        thread, _state["thread"] = _state["thread"], None
        if thread is not None:
            stop_r, stop_w, done = thread
            os.write(stop_w, b"x")
            done.acquire()
            os.close(stop_r)
            os.close(stop_w)


def keeper() -> tuple[int, int] | None:
    """A child process that keeps the way open when told to: for zoned.pool's maker, which
    makes zones one after another and must stay single-threaded (it clones inits with
    CLONE_PARENT, so no thread of ours may hold the GIL then). Each byte written to the
    returned fd opens the way (a no-op move, which waits for the grace period off the
    maker's path) and keeps it open for KEEPER_FOR seconds, so the moves of the zones made
    meanwhile do not wait. (write end, pid), or None where no hierarchy shows our cgroup
    or we are not root. It exits when the write end is closed, or with its parent."""
    if os.geteuid() != 0:
        return None
    path = own_procs_file()
    if not path:
        return None
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            from zoned.child import caps

            caps.set_pdeathsig(9)
            _keep(r, path)
        finally:
            os._exit(0)
    os.close(r)
    return w, pid


def _keep(r: int, path: str) -> None:
    import select

    until = 0.0
    while True:
        now = time.monotonic()
        wait = KEEP_OPEN_EVERY if now < until else None
        if select.select([r], [], [], wait)[0]:
            if not os.read(r, 64):
                return  # the maker has gone
            until = time.monotonic() + KEEPER_FOR
        if time.monotonic() < until and not _move_self(path):
            until = 0.0  # not ours to write: the moves pay as before
