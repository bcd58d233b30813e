"""A process started inside a running container (Runtime.exec): `zoned exec`, the API's
Container.exec, podman's exec."""
from __future__ import annotations

import os

from zoned.errors import InvalidState
from zoned.linux.proc import kill_and_reap, proc_start_time
from zoned.runtime.cgroup_paths import check_shared_capabilities
from zoned.runtime.steps import refuse_vm
from zoned.testhooks import pause

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.runtime.handoff import Started
    from zoned.runtime.lifecycle import Runtime


def exec_in(rt: Runtime, cid: str, process: dict, *,
            stdio: tuple[int, int, int] | None = None, pid_file: str | None = None,
            preserve_fds: int = 0, detach: bool = False) -> Started:
    """Runtime.exec: the process set up in `cid`'s namespaces and waiting for release()."""
    from zoned.child.process import NS_PROC, Plan, fork_nondumpable, run_child
    from zoned.child.spawn import spawn_copy
    from zoned.child.sync import Channel, Op, pair as sync_pair
    from zoned.oci import schema
    from zoned.oci.spec import validate_process
    from zoned.runtime.handoff import Started, check_preserved_fds, handshake

    check_preserved_fds(preserve_fds)
    schema.check(process, schema.CONFIG["process!"], "process")
    validate_process(process)
    st = rt.store.read_state(cid)
    refuse_vm(st, "exec in", "zoned.backends.vm.VmBackend.exec runs commands in it")
    if st["zoned"].get("shared_memory"):
        check_shared_capabilities(process, "exec: process")
    check_can_exec(rt, cid, st)
    cfg = rt.config(cid)
    linux = cfg.get("linux") or {}
    pid, start = st["pid"], st["zoned"]["pid_start"]
    join_fds: dict[str, int] = {}
    pidns = spawn_fd = parent_sock = joins = None
    child = 0
    try:  # every fd opened here is closed on the way out, whatever fails
        cgroup = rt.cgroup(st)
        joins = _self_join(cgroup)
        if joins is None:
            # release() moves the process into the container's cgroups by pid: the first
            # such move after a quiet spell waits for an RCU grace period, paid here while
            # the set-up runs (zoned.cgroups.prime), not all after it (runc's pays it all).
            from zoned.cgroups import prime

            prime.prime()
        try:
            for t in [n["type"] for n in linux.get("namespaces", [])]:
                fd = os.open(f"/proc/{pid}/ns/{NS_PROC[t]}", os.O_RDONLY | os.O_CLOEXEC)
                if t == "pid":
                    pidns = fd
                else:
                    join_fds[t] = fd
        except FileNotFoundError:
            raise InvalidState(f"cannot exec in container {cid!r}: it has stopped") from None
        if proc_start_time(pid) != start:
            raise InvalidState(f"cannot exec in container {cid!r}: it has stopped")
        bpf, seccomp_flags = b"", 0
        if linux.get("seccomp"):
            from zoned.child import seccomp

            bpf = seccomp.compile_bpf(linux["seccomp"])
            seccomp_flags = seccomp.filter_flags(linux["seccomp"])
        exec_cfg = dict(cfg)
        exec_cfg["process"] = process
        spawn_fd = spawn_copy()
        parent_sock, child_sock = sync_pair()
        # The helper is forked here, outside the container's pid namespace, and sets up
        # there; at release it makes the real process inside (zoned.child.spawn.release_exec).
        plan = Plan(exec_cfg, child_sock, rootfs=None, stdio=stdio, preserve_fds=preserve_fds,
                    join_fds=join_fds, bpf=bpf, seccomp_flags=seccomp_flags,
                    keep_pdeathsig=not detach,  # a detached process outlives `zoned exec`
                    pidns_fd=pidns, spawn_fd=spawn_fd, spawn_cgroups=joins,
                    spawn_creds=creds_in_spawn(process, linux.get("seccomp"), joins,
                                               join_fds, spawn_fd, cgroup))
        try:
            child = fork_nondumpable(run_child, plan)
        finally:
            child_sock.close()
        # The helper stays in our cgroup: release() moves the process it makes.
        chan = Channel(parent_sock)
        try:
            chan.send(Op.CGROUP)
        except BrokenPipeError:
            pass  # the helper failed early: handshake reads why
        master = handshake(chan, None, child, "exec set-up failed")
        pause("ZONED_TEST_PAUSE_EXEC")
        return Started(child, chan, master, spawns=cgroup, pid_file=pid_file,
                       command=process["args"][0])
    except BaseException:
        if joins is None:
            from zoned.cgroups import prime

            prime.wait()
        if child:
            kill_and_reap(child)
        if parent_sock is not None:
            parent_sock.close()
        raise
    finally:
        for fd in join_fds.values():
            os.close(fd)
        for fd in (pidns, spawn_fd):
            if fd is not None:
                os.close(fd)
        if joins is not None:
            for fd in (joins[0], *joins[1]):
                if fd >= 0:
                    os.close(fd)


def _self_join(cgroup) -> tuple[int, list[int]] | None:
    """The container's cgroup2 directory (-1 if none) and v1 `tasks` files, open, for the
    exec'd process to join itself as zoned-spawn makes it (z_spawn_exec_joining): no move
    by pid, so no RCU grace period to wait for (8-30 ms after a quiet spell here). None
    where it is moved by pid as before: rootless, a zone in a shared memory cgroup (its
    memory cgroup is another's node), or a file that will not open."""
    from zoned.cgroups.join import handles

    if os.geteuid() != 0:
        return None
    files, node = cgroup.join_files()
    d = cgroup.cgroup2_dir()
    if node is not None or not (files or d):
        return None
    try:
        cg2 = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if d else -1
    except OSError:
        return None
    try:
        fds, _ = handles(cgroup)  # (the init's own: each `tasks` file, open to write)
    except OSError:
        if cg2 >= 0:
            os.close(cg2)
        return None
    return cg2, fds


def creds_in_spawn(process: dict, profile: dict | None, joins, join_fds: dict,
                   spawn_fd: int | None, cgroup) -> bool:
    """Whether the process takes its seccomp filter, user and capabilities itself, once
    made in the zone (zoned.child.spawn.spawn_takes_creds), rather than the helper before
    it is made. Only where that helper would load a filter before the process is made
    (one without no_new_privs needs CAP_SYS_ADMIN: loaded before the capabilities go, as
    runc does), that filter may deny clone3, and a cgroup2 cgroup is there to clone it
    into: Docker's and containerd's default profiles, so Kubernetes' RuntimeDefault,
    answer clone3 with ENOSYS, and the process was then moved by pid, with the kernel's
    grace period (Debian 12's podman profile allows clone3: nothing to gain there).
    Until it takes them, the process is in the zone's pid namespace with the helper's
    capabilities (runc's init is, until its finalizeNamespace): non-dumpable, so only a
    process holding CAP_SYS_PTRACE in the host's user namespace could attach to it and use
    them. So not where the zone has such a process, or where this one may hold
    CAP_SYS_PTRACE: its bounding set bounds what it and whatever it runs can ever hold.
    It needs zoned-spawn's sealed copy (spawn_fd) to make the process.
    In a zone with a user namespace, always (but with a terminal, whose pty the helper
    makes as the namespace's root): the helper then stays in the host's user namespace
    and the process joins the zone's once cloned into its cgroups, which the kernel
    refuses from inside (EACCES: it was moved by pid, with the grace period, as runc's is).
    No process of the zone can hold CAP_SYS_PTRACE in the host's user namespace there."""
    if joins is None or joins[0] < 0 or spawn_fd is None:
        return False
    if "user" in join_fds:
        return not process.get("terminal")
    if not profile or process.get("noNewPrivileges"):
        return False
    from zoned.child.initstub import allows

    if allows(profile, "clone3"):
        return False
    from zoned.child.security import cap_number

    ptrace = cap_number("CAP_SYS_PTRACE")
    caps = (process.get("capabilities") or {}).get("bounding") or []
    if any(cap_number(c) == ptrace for c in caps):
        return False
    d = cgroup.cgroup2_dir()
    if d is None:
        return False
    from zoned.cgroups.fs import procs_below
    from zoned.linux.proc import status_caps

    for pid in procs_below(d):
        try:
            bounding = status_caps(pid, "CapBnd")
        except (OSError, ValueError):  # gone meanwhile
            continue
        if bounding >> ptrace & 1:
            return False
    return True


def check_can_exec(rt: Runtime, cid: str, st: dict) -> None:
    status = rt.live_status(cid, st)
    if not status.can_exec():
        raise InvalidState(f"cannot exec in container {cid!r}: it is {status}")


def exec_root(rt: Runtime, cid: str) -> str | None:
    """Where an exec's --user NAME is looked up: the running zone's root as its init sees it
    (/proc/PID/root; its passwd and group are read inside it, zoned.oci.values._read);
    None for a VM (names are the guest's). A zone that cannot exec is refused here."""
    st = rt.store.read_state(cid)
    if (st.get("zoned") or {}).get("vm"):
        return None
    check_can_exec(rt, cid, st)
    return f"/proc/{st['pid']}/root"

