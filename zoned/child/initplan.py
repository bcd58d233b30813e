"""A container init set up in C: the plan that csrc/setup.c runs (`zoned-spawn setup`).

zoned.child.process._child is the init in Python: forked from zoned, it copies each page
of the interpreter it writes, and runs ~4 ms to "ready" where its system calls take ~2
(bench/README, finding 21). Here the same steps are compiled, in the parent, into a plan:
every decision that needs no look inside the rootfs (options parsed, capabilities as
numbers, bind sources checked, messages worded) is made once in Python; the forked child
execs zoned-spawn at once and runs the plan's ops (csrc/initplan.h), making the decisions
that do need the rootfs (every path inside it: csrc/inroot.c) in C.

compile_init says None where the Python init must do it (fits): ZONED_INIT=python (tests
run both), or no zoned-spawn built. A user namespace is the plan's first op
(Z_PLAN_USERNS: the two-stage clone of process.run_userns_stage, in C), and its device
nodes are bound from the host; a rootless zone's too. The hooks the init runs
(createContainer, startContainer) are Z_PLAN_HOOKS ops (csrc/setuphooks.c), with the
state zoned sends with "cgroup". tests/test_init_c.py keeps the two inits equal. A zone
made ahead (zoned.pool: late_process) waits with its credentials applied and gets its
process with "start", as a plan of its own (compile_late: cwd, lookup, args and env).
"""
from __future__ import annotations

import os
import stat
import struct

from zoned.child.process import FORKING, JOIN_ORDER, NS_FLAGS, Plan
from zoned.errors import ConfigError
from zoned.linux import syscalls as sc
from zoned.linux.files import seal_filled
from zoned._native import lib

SPAWN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "libexec", "zoned-spawn")
_HEADER = b"ZPL" + bytes([lib.Z_PLAN_VERSION])
_RECORD = struct.Struct("=III").pack


class PlanWriter:
    """The plan's bytes (csrc/initplan.h): records of (u32 op, u32 nargs, u32 length, the
    arguments as text, each NUL-terminated: paths may hold any byte, surrogateescape);
    a program (seccomp's) is a record of its own, its bytes as they are."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = [_HEADER]

    def op(self, code: int, *args: str | int) -> None:
        body = "\0".join(map(str, args)).encode("utf-8", "surrogateescape") + b"\0" \
            if args else b""
        if body.count(b"\0") != len(args):  # (the Python init: "embedded null byte")
            bad = next(a for a in args if "\0" in str(a))
            raise ConfigError(f"invalid value {bad!r} in the config: a NUL character")
        self.parts.append(_RECORD(code, len(args), len(body)))
        self.parts.append(body)

    def program(self, program: bytes) -> None:
        self.parts.append(_RECORD(lib.Z_PLAN_PROGRAM, 0, len(program)))
        self.parts.append(program)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def hooks_in_init(cfg: dict) -> bool:
    """Whether the config has hooks the init runs (createContainer, startContainer): in
    Python, with the zone's state, which zoned then sends it."""
    hooks = cfg.get("hooks") or {}
    return bool(hooks.get("createContainer") or hooks.get("startContainer"))


def fits(plan: Plan) -> bool:
    """Whether the C init can set this container up (see the module's docstring)."""
    return (plan.rootfs is not None and os.environ.get("ZONED_INIT") != "python"
            and os.access(SPAWN, os.X_OK))


def compile_init(plan: Plan) -> bytes | None:
    """The plan of process._child's steps for this container's init, or None (fits).
    Raises ConfigError for what the Python init would have refused in the child and can
    be told here (a bind source that does not exist)."""
    if not fits(plan):
        return None
    from zoned.testhooks import tracing

    w = PlanWriter()
    cfg, proc = plan.cfg, plan.cfg["process"]
    linux = cfg.get("linux") or {}
    trace = (lambda step: w.op(lib.Z_PLAN_TRACE, step)) if tracing() else (lambda step: None)
    if plan.stdio:
        w.op(lib.Z_PLAN_STDIO, *plan.stdio)
    w.op(lib.Z_PLAN_KEEP, 3 + plan.preserve_fds, *_own_fds(plan))  # (and 0-2, the
    # preserved ones and the sync socket)
    namespaces = {n["type"]: n.get("path") for n in linux.get("namespaces", [])}
    if "user" in namespaces:  # first (then the pid namespace, owned by it, and the clone)
        _oom_score_adj(w, proc)  # (as the host's root: inside, /proc/self is not ours)
        pidns = "" if "pid" not in namespaces else namespaces["pid"] or "-"
        w.op(lib.Z_PLAN_USERNS, plan.join_fds.get("user", -1), pidns, int(plan.rootless))
    for ns in JOIN_ORDER:
        if ns in plan.join_fds and ns != "user":
            w.op(lib.Z_PLAN_SETNS, plan.join_fds[ns], NS_FLAGS[ns])
    new_ns = {n["type"] for n in linux.get("namespaces", []) if not n.get("path")}
    flags = 0
    for ns in new_ns - {"pid", "user", "cgroup"} - set(plan.join_fds):  # (one made ahead
        flags |= NS_FLAGS[ns]  # is joined: zoned.linux.netahead)
    if flags:
        w.op(lib.Z_PLAN_UNSHARE, flags)
    trace("init-namespaces")
    w.op(lib.Z_PLAN_CHECK_MNTNS, plan.caller_mntns)
    offsets = linux.get("timeOffsets")
    if "time" in new_ns and offsets:
        lines = "".join(f"{clock} {int(o.get('secs', 0))} {int(o.get('nanosecs', 0))}\n"
                        for clock, o in offsets.items() if clock in ("monotonic", "boottime"))
        w.op(lib.Z_PLAN_WRITE, "/proc/self/timens_offsets", lines,
             f"invalid linux.timeOffsets {offsets}")
    if "network" in new_ns and "network" not in plan.join_fds:  # (one made ahead: its
        w.op(lib.Z_PLAN_LO_UP)  # lo is up, zoned.linux.netahead)
    if plan.wait_namespaces:
        w.op(lib.Z_PLAN_NAMESPACES, int(plan.rootless))
    if "uts" in new_ns or "uts" in plan.join_fds:
        if cfg.get("hostname"):
            w.op(lib.Z_PLAN_HOSTNAME, cfg["hostname"])
        if cfg.get("domainname"):
            w.op(lib.Z_PLAN_DOMAINNAME, cfg["domainname"])
    cgroupns = "cgroup" in new_ns
    _rootfs(w, plan, cgroupns, "user" in namespaces)
    trace("init-mounts")
    hooks = cfg.get("hooks") or {}
    for kind in ("createContainer", "startContainer"):  # (startContainer's: run once
        if hooks.get(kind):                             # started, setup.c keeps it)
            _hooks(w, kind, hooks[kind])
    cwd = proc.get("cwd") or "/"
    w.op(lib.Z_PLAN_MAKE_CWD, cwd)
    _pivot_and_finish(w, plan, linux)
    trace("init-root")
    w.op(lib.Z_PLAN_CHDIR, cwd)
    w.op(lib.Z_PLAN_SETSID)
    if proc.get("terminal"):
        size = proc.get("consoleSize")
        rows, cols = (int(size.get("height", 24)), int(size.get("width", 80))) if size \
            else (-1, -1)
        if max(rows, cols) > 0xFFFF:
            raise ConfigError(f"invalid process.consoleSize {rows}x{cols}: at most 65535")
        w.op(lib.Z_PLAN_CONSOLE, rows, cols)
    _process(w, plan, proc, linux, "user" in namespaces)
    return w.bytes()


def _rootfs(w: PlanWriter, plan: Plan, cgroupns: bool, userns: bool) -> None:
    """Rootfs.prepare's steps: the root mounted, the config's mounts, the devices."""
    from zoned.child.rootfs import device_mode, oserror_text
    from zoned.oci.spec import ANN_LOWER, DEFAULT_DEVICES

    cfg, path = plan.cfg, plan.rootfs
    w.op(lib.Z_PLAN_MOUNT, "", "/", "", sc.MS_SLAVE | sc.MS_REC, "", "", "")
    lower = (cfg.get("annotations") or {}).get(ANN_LOWER)
    if lower:
        w.op(lib.Z_PLAN_MOUNT, "overlay", path, "overlay", 0,
             f"lowerdir={lower},upperdir={plan.upper},workdir={plan.work}"
             + (",volatile" if plan.volatile else ""), "", "")
    else:
        w.op(lib.Z_PLAN_MOUNT, path, path, "", sc.MS_BIND | sc.MS_REC, "",
             f'invalid root.path "{path}"', "")
    w.op(lib.Z_PLAN_ROOT, path)
    waiting = True
    for i, m in enumerate(cfg.get("mounts") or []):
        if waiting and m.get("type") == "cgroup":
            w.op(lib.Z_PLAN_CGROUP_WAIT, int(cgroupns))
            waiting = False
        try:
            _mount(w, plan, m, i, cgroupns)
        except OSError as e:  # (a bind source the parent could not stat)
            raise ConfigError(f'invalid mounts[{i}] ({m.get("type") or "bind"} on '
                              f'"{m["destination"]}"): {oserror_text(e)}') from None
    for dev, major, minor in DEFAULT_DEVICES:
        if userns:
            _bind_device(w, dev, "")
        else:
            w.op(lib.Z_PLAN_MKNOD, dev, stat.S_IFCHR | 0o666, major, minor, 0, 0, "")
    for i, d in enumerate((cfg.get("linux") or {}).get("devices") or []):
        context = f'invalid linux.devices[{i}].path "{d["path"]}"'
        if userns:
            _bind_device(w, d["path"], context)
        else:
            w.op(lib.Z_PLAN_MKNOD, d["path"], device_mode(d), int(d.get("major", 0)),
                 int(d.get("minor", 0)), int(d.get("uid", 0)), int(d.get("gid", 0)), context)
    w.op(lib.Z_PLAN_DEV_SYMLINKS)
    if waiting:
        w.op(lib.Z_PLAN_CGROUP_WAIT, int(cgroupns))
    if plan.skeleton.get("empty"):
        w.op(lib.Z_PLAN_EMPTY_TREE, plan.skeleton["empty"])


def _hooks(w: PlanWriter, kind: str, hooks: list[dict]) -> None:
    """hooks.run's, as one op: KIND COUNT, then each hook's PATH TIMEOUT NARGS ARGS...
    NENV ENV... (its env as run_one gives it to execve: entries with "=", a later one of
    the same name winning)."""
    fields: list = [kind, len(hooks)]
    for h in hooks:
        args = [str(a) for a in h.get("args") or [h["path"]]]
        env = dict(str(e).split("=", 1) for e in h.get("env") or [] if "=" in str(e))
        fields += [h["path"], int(h.get("timeout") or 0), len(args), *args, len(env),
                   *(f"{k}={v}" for k, v in env.items())]
    w.op(lib.Z_PLAN_HOOKS, *fields)


def _bind_device(w: PlanWriter, path: str, context: str) -> None:
    """Rootfs._bind_device: in a user namespace no device node can be made, so the host's
    at the same path is bound onto a file there (as runc does), a symlink in its place
    replaced, never followed (unlike a config mount's destination)."""
    w.op(lib.Z_PLAN_BIND_DEVICE, path, context)


def _mount(w: PlanWriter, plan: Plan, m: dict, i: int, cgroupns: bool) -> None:
    """Rootfs.mount, as one op: the bind source looked at here (it is the host's)."""
    from zoned.child.rootfs import MountSpec, is_procfs

    spec = MountSpec(m)
    dest, kind = spec.dest, spec.kind
    source = spec.source if spec.bind else spec.source or kind or ""
    proc_ok = kind == "proc" or (spec.bind and is_procfs(source))
    context = f'invalid mounts[{i}] ({m.get("type") or "bind"} on "{dest}")'
    proc_msg = f"mount {m.get('source') or kind!r} on {dest!r}"
    root_msg = f"mount destination {dest!r} is the container's root"
    if kind == "cgroup":
        w.op(lib.Z_PLAN_MOUNT_CGROUPS, dest, spec.flags, proc_msg, context, root_msg,
             *_cgroup_args(plan, cgroupns))
        return
    w.op(lib.Z_PLAN_MOUNT_ENTRY, dest, kind or "", int(spec.bind), spec.flags, spec.prop,
         spec.data, source, int(spec.like_file), int(proc_ok), proc_msg, context, root_msg,
         plan.idmap_fds.get(i, -1), int("ridmap" in (m.get("options") or [])))


def _cgroup_args(plan: Plan, cgroupns: bool) -> list:
    """Rootfs.mount_cgroups' choices: MODE and what it binds or mounts (setup.c)."""
    hier = plan.hierarchies
    if len(hier) == 1 and hier[0].fstype == "cgroup2":
        own = plan.cgroup_path and not cgroupns
        return ["2", hier[0].mountpoint + plan.cgroup_path if own else ""]
    args: list = ["1", plan.skeleton.get("cgroup") or "", len(hier)]
    memory = plan.memory_cgroup_path or plan.cgroup_path
    for h in hier:
        own = memory if "memory" in h.controllers else plan.cgroup_path
        args += [os.path.basename(h.mountpoint), h.mountpoint + own if own else "", h.fstype,
                 h.options or "", int(cgroupns)]
    return args


def _pivot_and_finish(w: PlanWriter, plan: Plan, linux: dict) -> None:
    """Rootfs.pivot and Rootfs.finish."""
    from zoned.child.rootfs import PROPAGATION

    prop = linux.get("rootfsPropagation")
    if prop and prop not in PROPAGATION:
        raise ConfigError(f"invalid rootfsPropagation {prop!r}")
    w.op(lib.Z_PLAN_PIVOT, plan.rootfs, int(plan.no_pivot), PROPAGATION[prop] if prop else 0)
    for key, value in (linux.get("sysctl") or {}).items():
        w.op(lib.Z_PLAN_WRITE, "/proc/sys/" + key.replace(".", "/"), str(value),
             f"sysctl {key}={value}")
    for i, p in enumerate(linux.get("maskedPaths") or []):
        w.op(lib.Z_PLAN_MASK, p, f'invalid linux.maskedPaths[{i}] "{p}"')
    w.op(lib.Z_PLAN_MASKS_DONE)
    for i, p in enumerate(linux.get("readonlyPaths") or []):
        w.op(lib.Z_PLAN_READONLY, p, f'invalid linux.readonlyPaths[{i}] "{p}"')
    if (plan.cfg.get("root") or {}).get("readonly"):
        w.op(lib.Z_PLAN_ROOT_READONLY)


def _process(w: PlanWriter, plan: Plan, proc: dict, linux: dict, userns: bool) -> None:
    """The process's attributes, credentials and exec (process._child's last steps)."""
    from zoned.child import security

    pers = linux.get("personality")
    if pers:
        w.op(lib.Z_PLAN_PERSONALITY, security.PERSONALITY[pers["domain"]])
    for i, rl in enumerate(proc.get("rlimits") or []):
        w.op(lib.Z_PLAN_RLIMIT, security.RLIMITS[rl["type"]], int(rl["soft"]), int(rl["hard"]),
             f"invalid process.rlimits[{i}] ({rl['type']} {rl['soft']}:{rl['hard']})")
    if not userns:
        _oom_score_adj(w, proc)  # (else before the user namespace)
    env = [str(e) for e in proc.get("env") or []]
    args = [str(a) for a in proc["args"]]
    if not plan.late_process:  # (else at start: compile_late)
        w.op(lib.Z_PLAN_LOOKUP, args[0], _path_of(env))
    bpf = plan.bpf
    if bpf:
        w.program(bpf)
    late_filter = bool(bpf) and bool(proc.get("noNewPrivileges"))
    if bpf and not late_filter:  # a filter from a CAP_SYS_ADMIN caller only: before the
        w.op(lib.Z_PLAN_SECCOMP_NOW, plan.seccomp_flags)  # capabilities go (as runc)
    w.op(lib.Z_PLAN_CREDS, *security.creds_fields(proc))
    if plan.late_process:
        w.op(lib.Z_PLAN_LATE)
    w.op(lib.Z_PLAN_EXEC, -1 if plan.fifo_fd is None else plan.fifo_fd,
         int(plan.keep_pdeathsig), plan.seccomp_flags, int(late_filter), len(args), *args, *env)


def _oom_score_adj(w: PlanWriter, proc: dict) -> None:
    """security.apply_oom_score_adj; inherited by the clone and across exec. Before a user
    namespace (as runc's nsexec): in it, an undumpable process's /proc/self files are the
    host root's, so even a raise is refused, and a lowering needs the host's
    CAP_SYS_RESOURCE."""
    if "oomScoreAdj" in proc:
        w.op(lib.Z_PLAN_WRITE, "/proc/self/oom_score_adj", str(int(proc["oomScoreAdj"])),
             f"invalid process.oomScoreAdj {proc['oomScoreAdj']}")


def _path_of(env: list[str]) -> str:
    """The PATH a command is looked up in: the process's, or the OCI runtimes' default."""
    return next((e[5:] for e in env if e.startswith("PATH=")), "/usr/bin:/bin")


def compile_late(proc: dict, given: dict) -> bytes:
    """The plan a zone made ahead starts with (its init compiled with late_process): `proc`
    the process as process.late_process made it from the config's and `given` (the start's
    args, env, cwd): the cwd entered if given, the command looked up, its args and env."""
    w = PlanWriter()
    if given.get("cwd"):
        w.op(lib.Z_PLAN_CHDIR, proc["cwd"])
    env = [str(e) for e in proc.get("env") or []]
    args = [str(a) for a in proc["args"]]
    w.op(lib.Z_PLAN_LOOKUP, args[0], _path_of(env))
    w.op(lib.Z_PLAN_ARGV, len(args), *args, *env)
    return w.bytes()


def seal(init_plan: bytes) -> int:
    """A plan in a sealed memfd (CLOEXEC), to pass on: the caller closes it."""
    return seal_filled(os.memfd_create("zoned-init-plan", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING),
                       init_plan)


def _own_fds(plan: Plan) -> list[int]:
    """The fds the init uses itself and keeps until its exec (never the zone's process's):
    namespaces to join, idmaps, exec.fifo."""
    return [*plan.join_fds.values(), *plan.idmap_fds.values(),
            *(() if plan.fifo_fd is None else (plan.fifo_fd,))]


def fork(plan: Plan, init_plan: bytes, *, sibling: bool = False,
         cgroup_fd: int | None = None) -> int:
    """Start the init: a child that execs `zoned-spawn setup` at once (its sealed copy,
    plan.spawn_fd, where one was made: a created zone waits for start as it, and so does
    one joining another's pid namespace; else the host's file, while the zone's record
    says "creating", which nothing may join). The plan goes in a sealed memfd. Returns
    the init's pid. The child shares our memory until its exec, and we do not wait for
    that here (csrc/forkexec.c): the caller calls settle(plan) after work of its own, and
    on every path; until then this process is undumpable and holds FORKING."""
    fd = seal(init_plan)
    try:
        sock = plan.sock.fileno()
        keep = {sock, fd, *_own_fds(plan), *range(3, 3 + plan.preserve_fds),
                *(plan.stdio or ())}
        flags = (lib.CLONE_PARENT if sibling else 0) | \
            (lib.CLONE_INTO_CGROUP if cgroup_fd is not None else 0)
        argv = ["zoned-spawn", "setup", str(sock), str(fd)]
        FORKING.acquire()  # (the flag is the process's: one thread at a time toggles it)
        was = sc.dumpable()
        sc.set_dumpable(False)  # the child shares our memory until its exec
        try:
            pid, pending = sc.fork_exec(
                plan.spawn_fd if plan.spawn_fd is not None else SPAWN, argv, sorted(keep),
                flags=flags, cgroup_fd=-1 if cgroup_fd is None else cgroup_fd, sock=sock)
        except BaseException:
            _undo_forking(was)
            raise
        plan.exec_pending = (pending, was)
        return pid
    finally:
        os.close(fd)


def settle(plan: Plan) -> None:
    """After fork(): wait until the init no longer shares our memory (it has exec'd or
    died: at once, as a rule, by now), then be dumpable again as before and let FORKING
    go. Idempotent; nothing where fork() left nothing pending."""
    if plan.exec_pending is None:
        return
    (pending, was), plan.exec_pending = plan.exec_pending, None
    try:
        pending.finish()
    finally:
        _undo_forking(was)


def _undo_forking(was_dumpable: bool) -> None:
    try:
        if was_dumpable:
            sc.set_dumpable(True)
    finally:
        FORKING.release()
