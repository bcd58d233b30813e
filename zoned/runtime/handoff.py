"""The parent's side of a forked child's set-up: forking it into the right pid and user
namespaces, following its sync messages to "ready" (zoned.child.sync), and the Started
handle that lets it exec."""
from __future__ import annotations

import os
import time

from zoned.child.process import Plan, fork_nondumpable, run_child
from zoned.child.sync import Channel, Message, Op
from zoned.errors import ConfigError
from zoned.linux import syscalls as sc
from zoned.linux.proc import kill_and_reap
from zoned.testhooks import hit

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable


class pid_namespace_for_children:  # noqa: N801 - used as contextlib's would be
    """`with pid_namespace_for_children(fd):` makes the next fork land in a new (or the
    given) pid namespace, then undoes it.

    unshare(CLONE_NEWPID)/setns only change where *children* go, per thread, so the caller
    stays where it is and the forked child is PID 1 (or a member) and still our direct child.
    (A class, not contextlib's decorator: contextlib imports functools and collections.)
    """

    def __init__(self, join_fd: int | None = None):
        self.join_fd = join_fd
        self.own = -1

    def __enter__(self) -> None:
        self.own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if self.join_fd is None:
                sc.unshare(sc.CLONE_NEWPID)
            else:
                sc.setns(self.join_fd, sc.CLONE_NEWPID)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        sc.setns(self.own, sc.CLONE_NEWPID)
        os.close(self.own)


class Started:
    """A process zoned forked and still holds the sync channel of (creator or exec).
    `master` is the pty master when process.terminal is set: the caller proxies it or
    passes it on (console socket), and closes it.

    For exec, `pid` is first the helper's, which waits outside the container's pid
    namespace; release() makes the real process there (zoned's child too) and `pid` becomes
    its pid, written to `pid_file` if one was asked for."""

    __slots__ = ("pid", "chan", "master", "spawns", "pid_file", "command", "to_reap")

    def __init__(self, pid: int, chan: Channel | None, master: int | None = None, *,
                 spawns=None, pid_file: str | None = None, command: str = "",
                 to_reap: tuple[int, ...] = ()):
        self.pid, self.chan, self.master = pid, chan, master
        self.spawns = spawns  # exec: the container's Cgroup, which the process goes into
        self.pid_file, self.command = pid_file, command
        # a sibling init's user-namespace stage: our parent's child, exited, for it to reap
        self.to_reap = to_reap

    def release(self, process: dict | None = None, late_plan: bytes | None = None) -> None:
        """Let the process exec and report whether exec worked. process: its args (env,
        cwd), for an init made with late_process (zoned.pool); late_plan: the same as a
        plan, for such a C init (zoned.child.initplan.compile_late)."""
        if self.chan is None:
            return
        if late_plan is not None:
            from zoned.child.initplan import seal

            fd = seal(late_plan)
            try:
                self.chan.send(Op.START, [fd])
            finally:
                os.close(fd)
        elif process:
            self.chan.send(Op.START, process=process)
        else:
            self.chan.send(Op.START)
        msg = self.chan.recv()  # EOF: the sync socket was closed by a successful exec
        if msg.op is Op.MADE and self.spawns is not None:
            if not msg.get("joined"):  # (zoned-spawn's process joins them itself)
                from zoned.cgroups import prime

                try:
                    self.spawns.add(int(msg.get("pid")))  # a move: allowed at pids.max
                except BaseException:
                    kill_and_reap(int(msg.get("pid")))
                    kill_and_reap(self.pid)
                    raise
                finally:
                    prime.wait()  # (exec_in's primer, if any: the move is done)
            hit("exec:made")
            self.chan.send(Op.GO)
            msg = self.chan.recv()
        self.chan.sock.close()
        self.chan = None
        if self.spawns is not None:
            self._spawned(msg)
        elif msg.op is Op.ERROR:
            raise msg.error("exec failed")

    def _spawned(self, msg: Message) -> None:
        """The exec helper's last word (zoned.child.spawn.release_exec): the real process's pid, or why it
        failed."""
        helper, pid = self.pid, int(msg.get("pid") or 0)
        try:
            os.waitpid(helper, 0)  # it exits once it has told us
        except ChildProcessError:
            pass
        if msg.op is not Op.SPAWNED:
            raise msg.error("exec failed")
        err, step = msg.errno, int(msg.get("step") or 0)
        if err or not pid:
            if pid:  # it was made but did not exec: reap it
                kill_and_reap(pid)
            if step == sc.SPAWN_STEP_EXEC:
                message = f"{os.strerror(err)}: {self.command}"
            elif msg.get("message"):  # its user or capabilities: the config's (exit 125)
                message, err = msg.get("message"), 0
            else:  # not the command's fault: no 126/127
                message, err = f"{sc.SPAWN_STEPS.get(step, 'clone')}: {os.strerror(err)}", 0
            raise Message(Op.ERROR, {"message": message, "errno": err}, []).error("exec failed")
        self.pid = pid
        if self.pid_file:
            write_pid_file(self.pid_file, pid)


def check_preserved_fds(n: int) -> None:
    """--preserve-fds N passes the caller's fds 3..N+2: they must be open, or zoned's own
    fds (its lock, its sync socket) would take those numbers and leak into the container."""
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError(f"--preserve-fds {n}: fd {fd} is not open") from None


def write_maps(pid: int, linux: dict) -> None:
    """uid_map/gid_map of a child's new user namespace, each in one write as the kernel
    wants. Rootless: through newuidmap/newgidmap (zoned.rootless)."""
    if os.geteuid() != 0:
        from zoned.rootless import write_maps as rootless_maps

        return rootless_maps(pid, linux)
    for name, key in (("uid_map", "uidMappings"), ("gid_map", "gidMappings")):
        maps = linux.get(key) or []
        if not maps:
            raise ConfigError(f"a user namespace needs linux.{key}")
        text = "".join(f"{int(m['containerID'])} {int(m['hostID'])} {int(m['size'])}\n"
                       for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise ConfigError(f"linux.{key}: writing {name} failed: {e.strerror}") from None


def idmapped_tree(i: int, mount: dict) -> int | None:
    """config mounts[i], an idmapped bind (uidMappings/gidMappings), made here as a
    detached tree: the source cloned (open_tree; recursively for rbind) and given the
    mapping (mount_setattr MOUNT_ATTR_IDMAP; recursively for "ridmap"). The init attaches
    it (move_mount). Made by the host's root, as runc makes them: a zone's init inside a
    user namespace may not idmap a host file system (EPERM). None for a mapping on a mount
    that is no bind (nothing to map: as before)."""
    from zoned.child.rootfs import MountSpec, oserror_text

    spec = MountSpec(mount)
    if not spec.bind:
        return None
    userns = idmap_userns(mount)
    tree = -1
    try:
        tree = sc.open_tree(spec.source, sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC |
                            (sc.AT_RECURSIVE if spec.flags & sc.MS_REC else 0))
        sc.mount_setattr("", attr_set=sc.MOUNT_ATTR_IDMAP, dirfd=tree,
                         flags=sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if "ridmap" in
                                                   (mount.get("options") or []) else 0),
                         userns_fd=userns)
    except OSError as e:
        if tree >= 0:
            os.close(tree)
        raise ConfigError(f'invalid mounts[{i}] ({mount.get("type") or "bind"} on '
                          f'"{spec.dest}"): {oserror_text(e)}') from None
    finally:
        os.close(userns)
    return tree


def idmap_userns(mount: dict) -> int:
    """An fd of a user namespace holding an idmapped mount's uid/gid maps: a short-lived
    process makes the namespace, we map it and keep only the namespace."""
    from zoned.cgroups import prime

    prime.wait()  # no fork while its thread is inside a write
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - tiny helper process
        try:
            os.close(w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.read(r, 1)  # wait until the parent has what it needs
        finally:
            os._exit(0)
    os.close(r)
    try:
        for _ in range(2000):  # the namespace exists once /proc says so
            if os.readlink(f"/proc/{child}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.0005)
        write_maps(child, {"uidMappings": mount.get("uidMappings"),
                            "gidMappings": mount.get("gidMappings")})
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.waitpid(child, 0)


def fork_userns(plan: Plan, chan: Channel, linux: dict, sibling: bool = False,
                cgroup_fd: int | None = None) -> int:
    """Fork stage 1 (see process.run_userns_stage), map its user namespace and return the
    pid of stage 2, the container's init. sibling: stage 1 is our parent's child, so
    stage 2 is too (CLONE_PARENT from there); our parent reaps both (plan.stage_pid).
    cgroup_fd: stage 1 starts in that cgroup2 cgroup, so stage 2, its child, does too
    (zoned.cgroups.join: then the init joins its v1 cgroups itself)."""
    if plan.init_plan is not None:  # the C init: the plan's first op is the stage
        from zoned.child import initplan

        stage1 = initplan.fork(plan, plan.init_plan, sibling=sibling, cgroup_fd=cgroup_fd)
    else:
        from zoned.child.process import run_userns_stage

        stage1 = fork_nondumpable(run_userns_stage, plan, sibling=sibling,
                                  cgroup_fd=cgroup_fd)
    plan.stage_pid = stage1 if sibling else 0
    try:
        while True:
            msg = chan.recv()
            if msg.op is Op.USERNS:
                write_maps(stage1, linux)
                chan.send(Op.MAPPED)
            elif msg.op is Op.PID:
                return int(msg.get("pid"))
            else:
                raise msg.error("user namespace set-up failed")
    except BaseException:
        kill_and_reap(stage1)
        raise
    finally:
        try:
            os.waitpid(stage1, 0)
        except ChildProcessError:
            pass  # a sibling: our parent reaps it


def handshake(chan: Channel, on_namespaces: Callable[[int], None] | None, pid: int,
               default_error: str) -> int | None:
    """Follow the child to "ready": run the namespace hook, take the pty master."""
    master = None
    try:
        while True:
            msg = chan.recv()
            if msg.op is Op.NAMESPACES and on_namespaces is not None:
                on_namespaces(pid)
                chan.send(Op.GO)
            elif msg.op is Op.CONSOLE and msg.fds:
                master = msg.fds[0]
            elif msg.op is Op.READY:
                return master
            else:
                raise msg.error(default_error)
    except BaseException:
        if master is not None:
            os.close(master)
        raise


def write_pid_file(path: str, pid: int) -> None:
    """--pid-file: written to a temp file made anew (O_EXCL, O_NOFOLLOW: a symlink or a
    FIFO planted at its name is refused, never written through or waited on), then
    renamed over `path`, as runc writes it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except FileExistsError:
        raise ConfigError(f"--pid-file {path!r}: {tmp} exists (not zoned's to replace)") \
            from None
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fork_init(plan: Plan, namespaces: dict, sibling: bool = False,
              cgroup_fd: int | None = None) -> int:
    """Fork a container's init: PID 1 of a new pid namespace, or a member of the one the
    config names. It runs plan.init_plan in C (zoned.child.initplan) where there is one,
    else zoned.child.process.run_child (see fork_nondumpable)."""
    if "pid" in namespaces:
        join_fd, pid = None, 0
        if namespaces["pid"]:
            join_fd = os.open(namespaces["pid"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            with pid_namespace_for_children(join_fd):
                pid = _fork_init(plan, sibling, cgroup_fd)
        finally:
            if join_fd is not None and pid:
                os.close(join_fd)
        return pid
    return _fork_init(plan, sibling, cgroup_fd)


def _fork_init(plan: Plan, sibling: bool, cgroup_fd: int | None) -> int:
    if plan.init_plan is not None:
        from zoned.child import initplan

        return initplan.fork(plan, plan.init_plan, sibling=sibling, cgroup_fd=cgroup_fd)
    return fork_nondumpable(run_child, plan, sibling=sibling, cgroup_fd=cgroup_fd)
