"""exec's release, in its helper (zoned.child.process, outside the container's pid
namespace, set up for it): the real process made inside by the sealed zoned-spawn copy,
which it joins the container's cgroups itself where it can (z_spawn_exec_joining)."""
from __future__ import annotations

import os
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import struct

from zoned.child import initstub
from zoned.child.sync import Channel, Op, send
from zoned.linux import syscalls as sc
from zoned.linux.files import seal_filled

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.child.process import Plan


def spawn_copy() -> int | None:
    """A sealed, execute-only memfd copy of zoned-spawn (csrc/spawn.c), for an exec helper to
    run at release: the process it makes inside the container then has that copy as its exe
    until it execs, never a host binary, and memory of the host's user namespace. None if
    zoned-spawn was not built (then the helper clones itself, see release_exec)."""
    src = os.path.join(os.path.dirname(os.path.dirname(__file__)), "libexec", "zoned-spawn")
    try:
        with open(src, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    MFD_EXEC = 0x10  # executable even where vm.memfd_noexec defaults to no
    try:
        fd = os.memfd_create("zoned-spawn", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | MFD_EXEC)
    except OSError:  # a kernel before 6.3 knows no MFD_EXEC
        fd = os.memfd_create("zoned-spawn", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    return seal_filled(fd, data, 0o111)  # unreadable to the container's user: would_dump()


def spawn_takes_creds(plan: Plan, proc: dict) -> list | None:
    """The fields for zoned-spawn's CREDS (security.creds_fields) where exec's process takes
    its seccomp filter, user and capabilities itself (plan.spawn_creds, decided by
    zoned.runtime.exec_process.creds_in_spawn); None: this helper takes them, as before."""
    if not plan.spawn_creds:
        return None
    from zoned.child.security import creds_fields

    return creds_fields(proc)


def release_exec(plan: Plan, path: str, env: list[str], bpf: bytes, parent_pidfd: int,
                 creds: list | None = None) -> None:
    """exec's release: make the real process in the container's pid namespace (the C step
    z_spawn_exec runs pdeathsig, setsid/tty, the NNP seccomp filter and execve there, nothing
    else), tell zoned {"op": "made", "pid"}, let it go once zoned has moved it into the
    cgroup, and tell zoned {"op": "spawned", "pid", "errno", "step"}. This process was never in
    the container's pid namespace. It execs the sealed zoned-spawn copy to do it, so that the
    new process is never python before its execve; without that copy (not built, or execveat
    denied) it clones itself: the new process is then python, non-dumpable, for the
    microseconds until its execve. creds (spawn_takes_creds): the filter and the user and
    capabilities, which this process has not taken, for that process to take. Never
    returns."""
    proc = plan.cfg["process"]
    pdeathsig = _signal.SIGKILL if plan.keep_pdeathsig else 0
    tty = 0 if proc.get("terminal") else -1
    if plan.spawn_fd is not None:
        bpf_fd = -1
        if bpf:
            bpf_fd = initstub.program_fd(bpf)
            os.set_inheritable(bpf_fd, True)
        joins = "-"
        if plan.spawn_cgroups is not None:
            cg2, tasks = plan.spawn_cgroups
            joins = ",".join(str(fd) for fd in (cg2, *tasks))
            for fd in (cg2, *tasks):
                if fd >= 0:
                    os.set_inheritable(fd, True)
        userns = plan.join_fds["user"] if plan.spawn_userns else -1
        for fd in (plan.sock.fileno(), parent_pidfd, userns):
            if fd >= 0:
                os.set_inheritable(fd, True)
        argv = ["zoned-spawn", str(plan.sock.fileno()), str(pdeathsig), str(parent_pidfd),
                str(tty), str(plan.seccomp_flags), str(bpf_fd), joins,
                "-" if creds is None else ";".join(map(str, creds)),
                "-" if userns < 0 else str(userns), path, *proc["args"]]
        try:
            sc.execveat(plan.spawn_fd, argv, env)
        except OSError:  # e.g. a seccomp profile that denies execveat: clone ourselves
            if bpf_fd >= 0:
                os.close(bpf_fd)
            for fd in (plan.sock.fileno(), parent_pidfd):
                os.set_inheritable(fd, False)  # never into the container's process
            if plan.spawn_cgroups is not None:  # (zoned moves it by pid then)
                cg2, tasks = plan.spawn_cgroups
                for fd in (cg2, *tasks):
                    if fd >= 0:
                        os.close(fd)
    if plan.spawn_userns:  # (not joined by zoned-spawn's process: here, as without it)
        sc.setns(plan.join_fds["user"], sc.CLONE_NEWUSER)
        os.close(plan.join_fds["user"])
    if creds is not None:  # (not taken by zoned-spawn's process: here, as without it)
        from zoned.child.security import take_credentials

        bpf = take_credentials(proc, bpf, plan.seccomp_flags)
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()  # CLOEXEC: EOF once the child has exec'd
    pid = sc.spawn_exec(path, proc["args"], env, go_fd=go_r, err_fd=err_w, bpf=bpf,
                        seccomp_flags=plan.seccomp_flags, pdeathsig=pdeathsig,
                        parent_pidfd=parent_pidfd, tty_fd=tty)
    os.close(go_r)
    os.close(err_w)
    send(plan.sock, Op.MADE, pid=pid)
    if not Channel(plan.sock).recv():  # zoned has moved it into the cgroup (or is gone)
        os._exit(1)
    os.write(go_w, b"g")
    os.close(go_w)
    report = b""
    while len(report) < 8:
        chunk = os.read(err_r, 8 - len(report))
        if not chunk:
            break
        report += chunk
    err, step = struct.unpack("ii", report) if len(report) == 8 else (0, 0)
    send(plan.sock, Op.SPAWNED, pid=pid, errno=err, step=step)
    os._exit(0)
