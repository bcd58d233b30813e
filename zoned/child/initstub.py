"""A created zone's init waits for `start` as zoned-spawn's sealed memfd copy, not as python.

Where the init is set up in Python (zoned.child.process._child; else it is that copy from
its first instruction: zoned.child.initplan), its last step execs the copy
zoned.child.spawn.spawn_copy made, which speaks the init's side of the sync protocol from "ready" on
and execs the container's process (csrc/spawn.c, init_main). So a process holding
CAP_SYS_PTRACE in the host's user namespace that opens /proc/1/exe of a created zone finds
a sealed memfd nothing can write to, never the host's python (CVE-2019-5736 class), as
with runc, whose init is its own sealed copy.

A zone created and started in one step (Runtime.run) needs no copy: its record says
"creating" until its init has exec'd the zone's process, and exec refuses such a zone, so
nothing joins it while its PID 1 is python; the init execs that process directly.
"""
from __future__ import annotations

import os

from zoned.linux import syscalls as sc
from zoned.linux.files import seal_filled

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.child.process import Plan


def _effective_caps() -> list[int]:
    from zoned.linux.proc import status_caps

    mask = status_caps("self", "CapEff")
    return [cap for cap in range(64) if mask >> cap & 1]


def _set_effective(caps: list[int], on: bool) -> None:
    from zoned.child import caps as capsets

    if caps:
        effective, permitted, inheritable = capsets.get_caps()
        bits = capsets.mask(caps)
        effective = effective | bits if on else effective & ~bits
        capsets.set_caps(effective, permitted, inheritable)


def fits(cfg: dict) -> bool:
    """Whether a container's init should wait for start as zoned-spawn (exec_stub)
    rather than as python. Not with startContainer hooks: the init runs them, in Python,
    between start and exec. Not when a seccomp filter loaded before that exec (the case
    without no_new_privs) may deny execveat: a filter that kills would kill the init; one
    that returns an error leaves the Python path, but costs a copy for nothing."""
    if (cfg.get("hooks") or {}).get("startContainer"):
        return False
    profile = (cfg.get("linux") or {}).get("seccomp")
    if not profile or cfg["process"].get("noNewPrivileges"):
        return True
    return allows(profile, "execveat")


def allows(profile: dict, syscall: str) -> bool:
    """Whether an OCI seccomp profile surely lets `syscall` through: a rule that names it
    allows (or logs) it without conditions on its arguments, or no rule names it and the
    default action allows it."""
    allowing = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    rules = [r for r in profile.get("syscalls") or [] if syscall in (r.get("names") or [])]
    if any(r.get("action") in allowing and not r.get("args") for r in rules):
        return True
    return not rules and profile.get("defaultAction") in allowing


def program_fd(bpf: bytes) -> int:
    """The seccomp program for zoned-spawn, which reads its fd from the start to EOF: a
    sealed memfd (close-on-exec; the caller passes it on). Not a pipe: a process with
    neither CAP_SYS_ADMIN nor CAP_SYS_RESOURCE (the init, once it holds the zone's
    capabilities) gets pipes of two pages once its user holds more pipe pages than
    fs.pipe-user-pages-soft, as the log pipes of ~1,000 detached zones do; then writing a
    program of over 8 KiB (the default profile's is 9.6) into one blocked for good."""
    return seal_filled(os.memfd_create("zoned-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING),
                       bpf)


def exec_stub(plan: Plan, path: str, env: list[str], bpf: bytes) -> None:
    """A container init's last step in Python: exec the sealed zoned-spawn copy, which sends
    "ready", waits for the start signal and execs `path` (spawn.c, init_main). A created
    zone's PID 1 is then that copy, never the host's python: a process holding
    CAP_SYS_PTRACE in the host's user namespace (`exec --cap SYS_PTRACE`) may open its
    /proc/1/exe, but finds a sealed memfd that nothing can write to.

    The effective capabilities go for this exec: with none, the container's user cannot read
    the execute-only copy, so the kernel keeps the new image non-dumpable from its first
    instruction, with its memory in the host's user namespace (fs/exec.c would_dump). Else
    container root (CAP_DAC_OVERRIDE) would exec a dumpable image and could attach to it
    before its first prctl. The exec computes the effective set afresh, exactly as the
    target's exec will. Returns only if the copy could not be run (e.g. a seccomp profile
    denying execveat): then the Python path goes on, as before."""
    proc = plan.cfg["process"]
    bpf_fd = program_fd(bpf) if bpf else -1
    passed = [fd for fd in (plan.sock.fileno(), plan.fifo_fd, bpf_fd)
              if fd is not None and fd >= 0]
    for fd in passed:
        os.set_inheritable(fd, True)
    fifo_fd = -1 if plan.fifo_fd is None else plan.fifo_fd
    argv = ["zoned-spawn", "init", str(plan.sock.fileno()), str(fifo_fd),
            str(int(plan.keep_pdeathsig)), str(plan.seccomp_flags), str(bpf_fd), path,
            *proc["args"]]
    effective = _effective_caps()
    _set_effective(effective, False)
    try:
        sc.execveat(plan.spawn_fd, argv, env)
    except OSError:
        pass
    _set_effective(effective, True)
    for fd in passed:
        os.set_inheritable(fd, False)
    if bpf_fd >= 0:
        os.close(bpf_fd)
