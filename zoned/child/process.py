"""The container child in Python: everything between fork and exec, in order. (An init is
set up in C where it can be: zoned.child.initplan compiles these steps for csrc/setup.c.)
The parent (zoned.runtime) forks; the child joins or creates namespaces, builds its rootfs,
drops privileges, reports "ready" over a socketpair, waits to be started, and execs through
the C step that loads seccomp and calls execve with nothing in between. The child never
returns into the caller's code: every path ends in exec or os._exit.

Protocol (typed messages of zoned.child.sync over the socketpair):
  parent -> child  {"op": "cgroup"}         the child is in its cgroup (may come any time)
  child  -> parent {"op": "namespaces"}     only if asked: namespaces exist (network hook)
  parent -> child  {"op": "go"}             the hook is done
  child  -> parent {"op": "console"} + the pty master (SCM_RIGHTS), if process.terminal
  child  -> parent {"op": "ready"} | {"op": "error", "message": ...}
  parent -> child  {"op": "start"}          or, with the exec fifo (`zoned start` opens it):
  parent -> child  {"op": "ack"}            the state is written
  child  -> parent {"op": "detached"}       pdeathsig is off: the creator may exit
  child  -> parent {"op": "error", ...}     exec failed; EOF on exec success (CLOEXEC)
A container's init speaks its side from "ready" on as zoned-spawn's sealed copy (spawn.c
init_main; see zoned.child.initstub), unless initstub.fits says the Python path must do it.
exec's helper, after "start" (zoned.child.spawn; it never enters the container's pid namespace):
  child  -> parent {"op": "made", "pid": N}  the real process exists, waiting, outside the cgroup
  parent -> child  {"op": "go"}             it is in the container's cgroup now
  child  -> parent {"op": "spawned", "pid": N, "errno": E, "step": S}   E 0: it exec'd
"""
from __future__ import annotations

import _socket  # not socket.py: start-up time (zoned.child.sync says why)
import _thread
import errno
import fcntl
import gc
import os
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import struct

from zoned.child import caps, initstub  # caps: imported here, not after each fork
from zoned.child.spawn import release_exec, spawn_takes_creds
from zoned.child.sync import Channel, CommandError, Op, exit_code_for, send, send_error
from zoned.errors import ConfigError
from zoned.linux import syscalls as sc
from zoned.linux.files import proc_fd_dir, reopen_fd
from zoned.testhooks import mark

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

NS_FLAGS = {"ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "network": sc.CLONE_NEWNET,
            "mount": sc.CLONE_NEWNS, "cgroup": sc.CLONE_NEWCGROUP, "pid": sc.CLONE_NEWPID,
            "user": sc.CLONE_NEWUSER, "time": sc.CLONE_NEWTIME}
NS_PROC = {"ipc": "ipc", "uts": "uts", "network": "net", "mount": "mnt", "cgroup": "cgroup",
           "pid": "pid", "user": "user", "time": "time"}
# The order in which an exec'd process joins an existing container's namespaces.
JOIN_ORDER = ("user", "ipc", "uts", "network", "cgroup", "time", "mount")


class Plan:
    """Everything the child needs, computed by the parent before fork. (A plain class: a
    dataclass import costs ~5 ms of start-up.)"""

    __slots__ = ("cfg", "sock", "rootfs", "upper", "work", "stdio", "fifo_fd", "join_fds",
                 "bpf", "seccomp_flags", "hierarchies", "wait_namespaces", "keep_pdeathsig",
                 "preserve_fds", "no_pivot", "pidns_fd", "cgroup_path", "idmap_fds",
                 "caller_mntns", "spawn_fd", "rootless", "volatile", "late_process",
                 "skeleton", "stage_pid", "memory_cgroup_path", "init_plan",
                 "spawn_cgroups", "spawn_creds", "spawn_userns", "exec_pending")

    def __init__(self, cfg: dict, sock: _socket.socket, *,
                 rootfs: str | None = None,           # None: exec into an existing container
                 upper: str | None = None, work: str | None = None,
                 stdio: tuple[int, int, int] | None = None,   # fds to dup onto 0, 1, 2
                 fifo_fd: int | None = None,  # O_PATH fd of exec.fifo; None: wait for "start"
                 join_fds: dict[str, int] | None = None,      # namespace type -> fd
                 bpf: bytes = b"", seccomp_flags: int = 0, hierarchies: list | None = None,
                 wait_namespaces: bool = False, keep_pdeathsig: bool = False,
                 preserve_fds: int = 0, no_pivot: bool = False, pidns_fd: int | None = None,
                 cgroup_path: str | None = None, idmap_fds: dict[int, int] | None = None,
                 spawn_fd: int | None = None, volatile: bool = False,
                 late_process: bool = False, skeleton: dict[str, str] | None = None,
                 memory_cgroup_path: str | None = None,
                 spawn_cgroups: tuple[int, list[int]] | None = None,
                 spawn_creds: bool = False):
        self.cfg, self.sock, self.rootfs, self.upper, self.work = cfg, sock, rootfs, upper, work
        self.stdio, self.fifo_fd, self.join_fds = stdio, fifo_fd, join_fds or {}
        self.bpf, self.seccomp_flags, self.hierarchies = bpf, seccomp_flags, hierarchies or []
        self.wait_namespaces, self.keep_pdeathsig = wait_namespaces, keep_pdeathsig
        self.preserve_fds = preserve_fds  # fds 3..3+N-1 stay open into the process
        self.no_pivot = no_pivot
        self.pidns_fd = pidns_fd          # exec: the pid namespace the process is made in
        self.cgroup_path = cgroup_path    # for bind-mounting v1 cgroups in a user namespace
        # v1's memory hierarchy's cgroup where it is not cgroup_path: the shared one
        # (zoned.runtime.cgroup_paths), bound like the others
        self.memory_cgroup_path = memory_cgroup_path
        # mounts[i] -> its idmapped tree, made by zoned (runtime.handoff.idmapped_tree)
        self.idmap_fds = idmap_fds or {}
        # the creator's mount namespace: the child must never mount or pivot in it
        self.caller_mntns = os.stat("/proc/self/ns/mnt").st_ino
        # the sealed zoned-spawn copy (spawn_copy): exec's helper runs it at release, and a
        # container's init execs it before "ready" (zoned.child.initstub)
        self.spawn_fd = spawn_fd
        # exec: the container's cgroup2 dir (-1: none) and v1 `tasks` files, open, for the
        # process zoned-spawn makes to join itself (z_spawn_exec_joining); None: moved by pid
        self.spawn_cgroups = spawn_cgroups
        # exec: the process takes its filter, user and caps itself (spawn_takes_creds)
        self.spawn_creds = spawn_creds
        # exec (with spawn_creds): that process joins the user namespace (join_fds["user"])
        # once cloned into the cgroups; this helper stays in the host's (creds_in_spawn)
        self.spawn_userns = spawn_creds and "user" in self.join_fds
        self.rootless = os.geteuid() != 0  # an ordinary user's zone (zoned.rootless)
        self.volatile = volatile  # the overlay's upper goes with the zone: no sync at its end
        # start may bring the process's args, env and cwd (zoned.pool: a zone made ahead)
        self.late_process = late_process
        self.skeleton = skeleton or {}  # host dirs to bind (zoned.runtime.steps.make_skeleton)
        self.stage_pid = 0  # a sibling's user-namespace stage 1 (runtime.handoff.fork_userns)
        self.init_plan: bytes | None = None  # the C init's (zoned.child.initplan), if it fits
        # (ExecPending, was dumpable): the C init until its exec (initplan.fork, settle)
        self.exec_pending: tuple | None = None


FORKING = _thread.allocate_lock()  # held around a fork that toggles dumpable (initplan too)


def fork_nondumpable(child: Callable[[Plan], None], plan: Plan, *,
                     sibling: bool = False, cgroup_fd: int | None = None) -> int:
    """os.fork whose child is non-dumpable from its first instruction: its /proc/PID/exe (the
    host's python), mem and fds, and ptrace, then need CAP_SYS_PTRACE in the host's user
    namespace (a forked mm keeps the flag, and its user namespace: the host's). The flag is
    the whole process's, so the caller's is restored at once (the API runs inside users'
    programs); `child` never returns. sibling: clone it as our parent's child
    (CLONE_PARENT), for zoned.pool's maker, a single-threaded process; its parent, the
    caller of Pool.run, then gets the exit status. cgroup_fd: start it in that cgroup2
    cgroup (clone3, CLONE_INTO_CGROUP; a single-threaded caller, zoned.cgroups.join)."""
    with FORKING:  # two threads (zoned.pool's and the caller's) must not interleave here
        was = sc.dumpable()
        sc.set_dumpable(False)
        try:
            if sibling:
                pid = sc.clone_parent()
            elif cgroup_fd is not None:
                pid = sc.clone_into_cgroup(cgroup_fd)
            else:
                pid = os.fork()
            if pid == 0:
                # No cyclic GC in the child: it would finalize the caller's unreachable
                # objects (a file, socket or selector of the program embedding zoned) and
                # close their fd numbers, which the child has closed and reused by then.
                gc.disable()
                child(plan)
        finally:
            if was:
                sc.set_dumpable(True)
    return pid


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror
        if exc.filename:
            what += f": {exc.filename}"
        return what
    return str(exc) or type(exc).__name__


def run_child(plan: Plan) -> None:
    """Entry point in the forked child. Never returns."""
    code = 1
    try:
        _child(plan)
    except BaseException as exc:  # noqa: BLE001 - everything must be reported, then _exit
        message = describe(exc)
        if os.environ.get("ZONED_DEBUG"):
            import traceback

            message += "\n" + "".join(traceback.format_exception(exc))
        # only the command's own exec failure is 127/126; any other is zoned's (sync.py)
        err = (exc.errno or 0) if isinstance(exc, CommandError) else 0
        try:
            send_error(plan.sock, message, err)
        except BaseException:  # the creator has gone (after start): say it on stderr
            try:
                os.write(2, f"zoned: container init: {message}\n".encode())
            except OSError:
                pass
        code = exit_code_for(err)
    finally:
        os._exit(code)


def run_userns_stage(plan: Plan) -> None:
    """Stage 1 for a container with a user namespace. A pid namespace is owned by the user
    namespace its creator was in, and /proc can only be mounted by root of that owner; so
    this process enters the user namespace first (the parent writes its uid/gid maps),
    then makes the pid namespace and clones stage 2 with CLONE_PARENT: PID 1, a child of
    zoned's parent process, as without a user namespace. Stage 1 exits. Never returns."""
    code = 1
    try:
        caps.set_pdeathsig(_signal.SIGKILL)
        _reset_signals()
        chan = Channel(plan.sock)
        from zoned.child import security

        security.apply_oom_score_adj(plan.cfg["process"])  # (see initplan._oom_score_adj)
        if "user" in plan.join_fds:
            fd = plan.join_fds.pop("user")
            sc.setns(fd, sc.CLONE_NEWUSER)
            os.close(fd)
        else:
            rootless = os.geteuid() != 0  # (asked before: unmapped, it is the overflow id)
            sc.unshare(sc.CLONE_NEWUSER)
            if rootless:  # the parent, the same user and no root, may only write our
                sc.set_dumpable(True)  # maps if we are dumpable (reset below)
            send(plan.sock, Op.USERNS)
            msg = chan.recv()
            if msg.op is not Op.MAPPED:
                os._exit(1)
        try:  # root of the namespace, if the maps have a root
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            pass
        sc.set_dumpable(False)  # the credential changes reset it to fs.suid_dumpable
        ns = {n["type"]: n.get("path") for n in (plan.cfg.get("linux") or {}).get("namespaces", [])}
        if "pid" in ns:
            if ns["pid"]:
                fd = os.open(ns["pid"], os.O_RDONLY | os.O_CLOEXEC)
                sc.setns(fd, sc.CLONE_NEWPID)
                os.close(fd)
            else:
                sc.unshare(sc.CLONE_NEWPID)
        # The clone goes on once we have told zoned its pid and gone (EOF on the gate): an
        # error of the clone's must not reach zoned first, or zoned could not reap it.
        gate_r, gate_w = os.pipe()
        child = sc.clone_parent()
        if child == 0:
            os.close(gate_w)
            os.read(gate_r, 1)
            os.close(gate_r)
            run_child(plan)
        os.close(gate_r)
        send(plan.sock, Op.PID, pid=child)
        code = 0
    except BaseException as exc:  # noqa: BLE001
        try:
            send_error(plan.sock, describe(exc))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _reset_signals() -> None:
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM,
                _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGCHLD, _signal.SIGWINCH,
                _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def _close_fds_except(keep: set[int]) -> None:
    last = -1
    for fd in sorted(keep) + [1 << 30]:
        if fd > last + 1:
            sc.close_range(last + 1, min(fd - 1, 0xFFFFFFFF))
        last = fd


def _time_offsets(offsets: dict) -> None:
    """Clock offsets of the new time namespace: written before any process enters it (the
    init enters at execve)."""
    lines = [f"{clock} {int(o.get('secs', 0))} {int(o.get('nanosecs', 0))}\n"
             for clock, o in offsets.items() if clock in ("monotonic", "boottime")]
    from zoned.linux.files import write_procfs

    try:
        write_procfs("/proc/self/timens_offsets", "".join(lines))
    except OSError as e:  # (ERANGE: a clock would go below 0 or past the kernel's limit)
        raise ConfigError(f"invalid linux.timeOffsets {offsets}: {e.strerror}") from None


def _lo_up() -> None:
    """Bring up lo in a fresh network namespace (an ioctl: no netlink library needed)."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP) + b"\0" * 22)
    finally:
        s.close()


def lookup_path(cmd: str, env: list[str]) -> str:
    """Resolve argv[0] in the container's PATH, as execvp would (but before seccomp)."""
    # The messages are runc's: podman maps them to exit codes 127 and 126.
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise CommandError(2, f'exec: "{cmd}": stat {cmd}: no such file or directory')
        if not os.path.isfile(cmd) or not os.access(cmd, os.X_OK):
            raise CommandError(13, f'exec: "{cmd}": permission denied')
        return cmd
    path = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/bin:/bin")
    for d in path.split(":"):
        cand = os.path.join(d or ".", cmd)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise CommandError(2, f'exec: "{cmd}": executable file not found in $PATH')


def enter_cwd(cwd: str) -> None:
    """chdir to process.cwd, or raise cwd_error: the process may not start elsewhere."""
    try:
        os.chdir(cwd)
    except OSError as e:
        raise cwd_error(cwd, e) from None


def cwd_error(cwd: str, e: OSError) -> Exception:
    """process.cwd cannot be made or entered: the config's fault (exit 125, naming the
    field), not the command's (podman reads runc's "chdir to cwd ... no such file" as 127)."""
    why = {errno.ENOENT: "no such directory in the zone",
           errno.ENOTDIR: "not a directory in the zone"}.get(e.errno or 0, e.strerror)
    return ConfigError(f'invalid process.cwd "{cwd}": {why}')


def late_process(proc: dict, late: dict) -> dict:
    """The process of a zone made ahead (zoned.pool), as its start message gives it: args,
    env entries ("K=V", added to the config's or replacing the same key) and cwd."""
    proc = {**proc, "args": [str(a) for a in late.get("args") or proc["args"]]}
    if late.get("env"):
        env = {e.split("=", 1)[0]: e for e in proc.get("env") or []}
        env.update((str(e).split("=", 1)[0], str(e)) for e in late["env"])
        proc["env"] = list(env.values())
    if late.get("cwd"):
        proc["cwd"] = str(late["cwd"])
    return proc


def _late_process(proc: dict, late: dict) -> tuple[dict, list[str], str]:
    """In the init at start: late_process, then chdir and the path lookup, done with the
    container user's rights (it is that user already), inside the container's root."""
    proc = late_process(proc, late)
    if late.get("cwd"):
        enter_cwd(proc["cwd"])
    env = list(proc.get("env") or [])
    return proc, env, lookup_path(proc["args"][0], env)


def _console(plan: Plan, proc: dict) -> None:
    """A pty from the container's own devpts (so `tty` works inside), made our controlling
    terminal; the master goes to the parent, which proxies it or hands it to a console
    socket (runc's way)."""
    from zoned import console

    master, slave_path = console.open_pty()
    slave = console.open_slave(master)
    size = proc.get("consoleSize")
    if size:
        console.set_size(master, int(size.get("height", 24)), int(size.get("width", 80)))
    if plan.rootfs is not None:  # the container's init: its pty is also /dev/console
        console.bind_console(slave)
        console.make_controlling_tty(slave)
    else:  # exec: the process release_exec makes takes it as its terminal, in a session of its own
        for target in (0, 1, 2):
            os.dup2(slave, target)
        os.close(slave)
    send(plan.sock, Op.CONSOLE, [master], name=slave_path)
    os.close(master)


def _check_private_mounts(plan: Plan) -> None:
    """Defence in depth for create's check: rootfs set-up mounts and pivots, which outside
    a mount namespace of the container's own would wreck the caller's (the host's) root."""
    if os.stat("/proc/self/ns/mnt").st_ino == plan.caller_mntns:
        raise ConfigError("refusing to set up the rootfs in the caller's mount namespace: "
                          'linux.namespaces needs a new "mount" namespace')


def _child(plan: Plan) -> None:
    from zoned.child import security

    if plan.cfg["process"].get("terminal"):
        from zoned import console  # noqa: F401 - imported now: after pivot_root it is gone
    cfg_hooks = plan.cfg.get("hooks") or {}
    if cfg_hooks.get("createContainer") or cfg_hooks.get("startContainer"):
        from zoned.oci import hooks
    # If the parent died before this, the sync socket reads EOF below and we exit (getppid
    # cannot tell: PID 1 of a new pid namespace always sees 0).
    caps.set_pdeathsig(_signal.SIGKILL)
    _reset_signals()
    chan = Channel(plan.sock)
    if plan.stdio:
        for target, fd in enumerate(plan.stdio):
            if fd != target:
                os.dup2(fd, target)
    preserved = set(range(3, 3 + plan.preserve_fds))
    keep = {0, 1, 2, plan.sock.fileno(), *plan.join_fds.values(), *preserved,
            *plan.idmap_fds.values()}
    if plan.fifo_fd is not None:
        keep.add(plan.fifo_fd)
    for fd in (plan.pidns_fd, plan.spawn_fd):
        if fd is not None:
            keep.add(fd)
    if plan.spawn_cgroups is not None:
        keep.update(fd for fd in (plan.spawn_cgroups[0], *plan.spawn_cgroups[1]) if fd >= 0)
    _close_fds_except(keep)
    for fd in (0, 1, 2, *preserved):
        os.set_inheritable(fd, True)

    cfg, proc = plan.cfg, plan.cfg["process"]
    linux = cfg.get("linux") or {}
    new_ns = {n["type"] for n in linux.get("namespaces", []) if not n.get("path")}

    cgroup_joined = []

    def expect(op: Op) -> None:
        """Read until `op` arrives; a "cgroup" message may come first at any point."""
        while True:
            msg = chan.recv()
            if msg.op is Op.CGROUP:
                if msg.fds:  # our v1 cgroups' tasks files: we move ourselves in
                    from zoned.cgroups.join import join

                    join(msg.fds, msg.get("node"))
                cgroup_joined.append(msg.get("state") or {})
                if op is Op.CGROUP:
                    return
            elif msg.op is op:
                return
            else:
                os._exit(1)

    def joined_cgroup() -> None:
        """Wait until we are in the cgroup (we joined it when the parent said so, or it moved
        us: zoned.cgroups.join), then take a cgroup namespace rooted there. The wait comes
        as late as possible: the parent makes the cgroup meanwhile."""
        if not cgroup_joined:
            expect(Op.CGROUP)
        if "cgroup" in new_ns and plan.rootfs is not None:
            sc.unshare(sc.CLONE_NEWCGROUP)

    if plan.rootfs is None:  # exec: once in the zone's mounts, /proc/self is not ours (we
        security.apply_oom_score_adj(proc)  # stay outside its pid namespace); inherited
    for ns in JOIN_ORDER:
        if ns in plan.join_fds and not (ns == "user" and plan.spawn_userns):
            sc.setns(plan.join_fds[ns], NS_FLAGS[ns])
            os.close(plan.join_fds[ns])
    if "user" in plan.join_fds and not plan.spawn_userns:
        sc.set_dumpable(False)  # joining a user namespace is a credential change
    parent_pidfd = -1
    if plan.rootfs is None:
        # exec: joins existing namespaces only. Its pid namespace steers only the children
        # (see release_exec), so this process itself stays outside, invisible to the container.
        if plan.pidns_fd is not None:
            sc.setns(plan.pidns_fd, sc.CLONE_NEWPID)
            os.close(plan.pidns_fd)
        parent_pidfd = sc.pidfd_open(os.getppid())
        joined_cgroup()
    else:
        flags = 0
        for ns in new_ns - {"pid", "user", "cgroup"} - set(plan.join_fds):  # (joined: one
            flags |= NS_FLAGS[ns]  # made ahead, zoned.linux.netahead)
        if flags:
            sc.unshare(flags)
        mark("init-namespaces")
        _check_private_mounts(plan)
        if "time" in new_ns and linux.get("timeOffsets"):
            _time_offsets(linux.get("timeOffsets") or {})
        if "network" in new_ns and "network" not in plan.join_fds:  # (made ahead: up)
            _lo_up()
        if plan.wait_namespaces:
            if plan.rootless:  # pasta (zoned.rootless_net), run by the same user, joins
                sc.set_dumpable(True)  # our namespaces: only a dumpable process's are open
            send(plan.sock, Op.NAMESPACES)
            expect(Op.GO)
            if plan.rootless:
                sc.set_dumpable(False)
        if "uts" in new_ns or "uts" in plan.join_fds:
            if cfg.get("hostname"):
                sc.sethostname(cfg["hostname"])
            if cfg.get("domainname"):
                sc.setdomainname(cfg["domainname"])
        from zoned.child.rootfs import Rootfs

        fs = Rootfs(cfg, plan.rootfs, upper=plan.upper, work=plan.work,
                    cgroup_hierarchies=plan.hierarchies, cgroup_path=plan.cgroup_path,
                    memory_cgroup_path=plan.memory_cgroup_path,
                    idmap_fds=plan.idmap_fds, volatile=plan.volatile,
                    skeleton=plan.skeleton)
        fs.prepare(joined_cgroup)
        mark("init-mounts")
        if cfg_hooks.get("createContainer"):  # container namespaces, before pivot_root
            hooks.run(cfg_hooks, "createContainer", cgroup_joined[0])
        try:
            fs.make_cwd(proc.get("cwd") or "/")
        except OSError as e:
            raise cwd_error(proc.get("cwd") or "/", e) from None
        fs.pivot(plan.no_pivot)
        fs.finish()
        mark("init-root")
    enter_cwd(proc.get("cwd") or "/")

    if plan.rootfs is not None:
        os.setsid()  # session leader: a clean controlling tty, and what CRIU wants of init
    if proc.get("terminal"):
        _console(plan, proc)

    security.apply_personality(linux)
    security.apply_rlimits(proc)
    if plan.rootfs is not None and \
            not any(n.get("type") == "user" for n in linux.get("namespaces", [])):
        security.apply_oom_score_adj(proc)  # (exec's, and a user namespace's: before)
    env = list(proc.get("env") or [])
    path = "" if plan.late_process else lookup_path(proc["args"][0], env)  # (at start)
    bpf = plan.bpf
    creds = spawn_takes_creds(plan, proc)
    if creds is None:
        bpf = security.take_credentials(proc, bpf, plan.seccomp_flags)
    if plan.rootfs is not None and plan.spawn_fd is not None:  # see initstub.fits
        initstub.exec_stub(plan, path, env, bpf)  # returns only if it could not exec it
    try:  # (no procfs: a rootfs's own /proc/self/fd/N would be opened, as csrc/spawn.c says)
        fifo_dir = None if plan.fifo_fd is None else proc_fd_dir()
    except OSError:
        raise ConfigError("a created zone needs a procfs at /proc (its config mounts none)") \
            from None
    send(plan.sock, Op.READY)
    if plan.fifo_fd is not None:
        msg = chan.recv()  # the creator acknowledges; it exits once we answer
        if msg.op is not Op.ACK:
            os._exit(1)
        if not plan.keep_pdeathsig:
            caps.set_pdeathsig(0)
        send(plan.sock, Op.DETACHED)  # from here the creator may exit
        plan.sock.close()
        fd = reopen_fd(fifo_dir, plan.fifo_fd, os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, b"0")
        os.close(fd)
        os.close(plan.fifo_fd)
    else:
        msg = chan.recv()
        if msg.op is not Op.START:
            os._exit(1)
        if plan.late_process:
            proc, env, path = _late_process(proc, msg.get("process") or {})
        if plan.rootfs is None:
            release_exec(plan, path, env, bpf, parent_pidfd, creds)
        if not plan.keep_pdeathsig:
            caps.set_pdeathsig(0)
    if cfg_hooks.get("startContainer") and plan.rootfs is not None:
        hooks.run(cfg_hooks, "startContainer", {**cgroup_joined[0], "status": "running"})
    try:
        sc.execve_seccomp(path, proc["args"], env, bpf, plan.seccomp_flags)
    except OSError as e:  # the command's own failure: its errno decides 127/126
        raise CommandError(e.errno, e.strerror, e.filename) from None
