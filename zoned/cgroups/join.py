"""A zone's init joins its cgroups with no RCU grace period (bench/README, finding 12).

A move by a write of the pid to cgroup.procs takes cgroup_threadgroup_rwsem for writing:
the first writer after a quiet spell waits for an RCU grace period (8-30 ms here), holding
cgroup_mutex, so that every cgroup mkdir on the host waits as well. Two ways in take no
such lock: clone3(CLONE_INTO_CGROUP) starts a process in a cgroup2 cgroup, and a single
thread that writes "0" to a v1 hierarchy's `tasks` file moves itself. So, where it can:
- the creator makes the cgroup2 cgroup (a v2 host's, or a hybrid host's twin) before the
  fork and clones the init into it, from a single-threaded process only (the interpreter
  is not told about such a fork); with a user namespace, it clones the init's stage 1
  into it, and the init, stage 1's child, is born there;
- after the fork it makes the v1 cgroups and sends the init their `tasks` files, opened
  by root on the host (so the init's mount or user namespace changes nothing);
- the init writes "0" to each, first thing when they arrive, and closes them.
The shared memory cgroup (zoned.runtime.cgroup_paths) may be removed by another zone's
removal until the init is in it: the init gets its parent directory and makes it again.
Elsewhere (another thread runs, zoned.pool's maker, a rootless creator, no clone3 that
reaches the kernel) the creator moves the init by pid; zoned.cgroups.prime pays the grace
period ahead where the creator started it (prime_for_create, the pool's keeper).
"""
from __future__ import annotations

import errno
import os

NODE_TRIES = 3  # the shared memory cgroup made again at most this often by one init


def single_threaded(besides_closer: bool = False) -> bool:
    """Whether this process has one thread (/proc/self/task links 2 + one per thread);
    besides_closer: or one more, zoned.linux.lastref's closer (an API caller's, after its
    first run), where the fork is the C init's (z_fork_exec_start: its child runs no python,
    so another thread holding the GIL at the clone cannot hang it)."""
    try:
        threads = os.stat("/proc/self/task").st_nlink - 2
    except OSError:
        return False
    if threads == 2 and besides_closer:
        from zoned.linux import lastref

        return lastref.closer_running()
    return threads == 1


_clone_works: list[bool] = []  # the probe's answer, once a process


def clone_into_cgroup_works() -> bool:
    """CLONE_INTO_CGROUP came with Linux 5.7 (older kernels refuse the flag with the
    probe's EINVAL, hence the version), and clone3 must not be denied (a seccomp filter,
    as when zoned runs in a container)."""
    if not _clone_works:
        try:
            major, minor = (int(x) for x in os.uname().release.split(".")[:2])
        except ValueError:
            major = minor = 0
        from zoned.linux import syscalls as sc

        _clone_works.append((major, minor) >= (5, 7) and sc.clone_into_cgroup_reaches_kernel())
    return _clone_works[0]


def prime_for_create() -> None:
    """zoned.cgroups.prime's primer, for a create: only when another thread runs in this
    process, or clone3 does not reach the kernel. Otherwise the creator clones the init
    into its cgroup2 cgroup and the init joins its v1 cgroups itself: no move pays a grace
    period there, and a primer would only hold cgroup_mutex through its own, which the
    zone's mkdirs then wait for (bench/README, finding 12). Here, not in prime.py: the
    usual answer, no primer, loads none of it."""
    if not (single_threaded(besides_closer=True) and clone_into_cgroup_works()):
        from zoned.cgroups import prime

        prime.prime()


def prepare(cgroup, *, sibling: bool = False,
            c_init: bool = False) -> tuple[bool, int | None]:
    """Before the fork: (whether the init joins its cgroups itself, the fd of the cgroup2
    cgroup, made here, to clone it into; None on a pure v1 host, or where the init is
    moved by pid). c_init: the init is the C one (single_threaded's besides_closer). The
    caller closes the fd after the fork."""
    if sibling or os.geteuid() != 0 or cgroup is None:
        return False, None
    if cgroup.cgroup2_dir() is None:
        return True, None  # pure v1: any fork, then `tasks`
    if not (single_threaded(besides_closer=c_init) and clone_into_cgroup_works()):
        return False, None
    from zoned.cgroups.fs import make_despite_removals

    make_despite_removals(cgroup.make_cgroup2)
    d = cgroup.cgroup2_dir()  # (None if a hybrid host refused the twin: v1 only)
    return True, (os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if d else None)


def handles(cgroup) -> tuple[list[int], dict]:
    """After the fork, the cgroups made: the fds and the fields of the message that tells
    the init to join them (see join)."""
    files, node = cgroup.join_files()
    fds: list[int] = []
    fields = {}
    try:
        for f in files:
            fds.append(os.open(f, os.O_WRONLY | os.O_CLOEXEC))
        if node:
            fds.append(os.open(os.path.dirname(node),
                               os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            fields["node"] = os.path.basename(node)
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds, fields


def join(fds: list[int], node: str | None = None) -> None:
    """In the init: write "0" to each `tasks` file open at fds (with `node`, the last fd is
    the shared memory cgroup's parent directory, and node its name), which moves this
    process, and close them all."""
    try:
        for fd in fds[:-1] if node else fds:
            os.write(fd, b"0")
        if node:
            _join_node(fds[-1], node)
    finally:
        for fd in fds:
            os.close(fd)


def _join_node(parent_fd: int, node: str) -> None:
    for attempt in range(NODE_TRIES):
        last = attempt == NODE_TRIES - 1
        try:
            fd = os.open(node + "/tasks", os.O_WRONLY | os.O_CLOEXEC, dir_fd=parent_fd)
        except FileNotFoundError:
            if last:
                raise
            try:  # another zone's removal took it, as it was empty: make it again
                os.mkdir(node, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass
            continue
        try:
            os.write(fd, b"0")
            return
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.ENOENT) or last:
                raise  # (ENODEV: removed between our open and write)
        finally:
            os.close(fd)
