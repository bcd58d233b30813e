"""The container lifecycle of the OCI runtime spec: create -> start -> kill -> delete, plus
state, exec and pause. Everything a container owns (state dir, cgroup, overlay dirs, its
processes) is created here and removed here; `zoned.gc` runs the same removal against
leftovers. No process stays behind per container: state lives in the store.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import time
from contextlib import contextmanager

from zoned.linux import syscalls as sc
from zoned.errors import ConfigError, InvalidState, NotFound, ZonedError
from zoned.oci import spec as specmod
from zoned.oci.status import Status
from zoned.child.process import NS_PROC, Plan, fork_nondumpable, run_child
from zoned.child.sync import Channel, Message, Op, pair as sync_pair
from zoned.linux.proc import proc_start_time, signal_pid, wait_exit
from zoned.state import Store
from zoned.testhooks import hit, pause

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

def cgroup_parent(root: str | None = None) -> str:
    """Where a state root's containers without a cgroupsPath go: /zoned for the default
    root, /zoned-<hash of the root> for any other, or $ZONED_CGROUP_PARENT (podman's
    --cgroup-parent). One parent per root is what lets `gc` of one root remove leftover
    cgroups without ever touching another root's containers."""
    env = os.environ.get("ZONED_CGROUP_PARENT")
    if env:
        return "/" + env.strip("/")
    from zoned.state import DEFAULT_ROOT, default_root

    root = os.path.realpath(root or default_root())
    if root == DEFAULT_ROOT:
        return "/zoned"
    from zoned.digest import sha256

    return "/zoned-" + sha256(root.encode()).hexdigest()[:10]


def systemd_cgroups_path(path: str, cid: str) -> str:
    """runc --systemd-cgroup's "slice:prefix:name" as the cgroupfs path systemd would use
    ("machine.slice:libpod:ID" -> /machine.slice/libpod-ID.scope). zoned does not talk to
    systemd; it places the cgroup where systemd would, so the tree looks the same."""
    from zoned.errors import ConfigError

    parts = (path or f"system.slice:zoned:{cid}").split(":")
    if len(parts) != 3:
        raise ConfigError(f"cgroupsPath {path!r}: expected slice:prefix:name with "
                          "--systemd-cgroup")
    slice_, prefix, name = parts
    slice_ = slice_ or "system.slice"
    out = ""
    if slice_ != "-.slice":
        if not slice_.endswith(".slice"):
            raise ConfigError(f"cgroupsPath {path!r}: {slice_!r} is not a .slice")
        words = slice_[:-len(".slice")].split("-")
        out = "".join("/" + "-".join(words[:i + 1]) + ".slice" for i in range(len(words)))
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else \
        f"{name}.scope"
    return f"{out}/{unit}"


def default_cgroups_path(cid: str, root: str | None = None) -> str:
    return f"{cgroup_parent(root)}/{cid}"


def resolve_cgroups_path(path: str | None) -> str | None:
    """linux.cgroupsPath as an absolute cgroup path. A relative one (the spec allows it: "a
    runtime-determined location") goes where runc's cgroupfs driver puts it: below the
    cgroup zoned itself runs in (on cgroup v2, its parent: runc's fs2, since a cgroup with
    processes in it cannot have controllers enabled for children). ".." never climbs
    above that base (runc's CleanPath)."""
    if not path:
        return None
    import posixpath

    if path.startswith("/"):
        resolved = posixpath.normpath("/" + path.lstrip("/"))  # as zoned.cgroups cleans it
    else:
        from zoned.cgroups import own_cgroup

        inner = posixpath.normpath("/" + path)
        resolved = posixpath.normpath(own_cgroup().rstrip("/") + inner)
    if resolved == "/":
        raise ConfigError(f"config.json: linux.cgroupsPath {path!r}: names the root cgroup")
    return resolved


@contextmanager
def pid_namespace_for_children(join_fd: int | None = None):
    """Make the next fork land in a new (or the given) pid namespace, then undo it.

    unshare(CLONE_NEWPID)/setns only change where *children* go, per thread, so the caller
    stays where it is and the forked child is PID 1 (or a member) and still our direct child.
    """
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if join_fd is None:
            sc.unshare(sc.CLONE_NEWPID)
        else:
            sc.setns(join_fd, sc.CLONE_NEWPID)
        yield
    finally:
        sc.setns(own, sc.CLONE_NEWPID)
        os.close(own)


class Started:
    """A process zoned forked and still holds the sync channel of (creator or exec).
    `master` is the pty master when process.terminal is set: the caller proxies it or
    passes it on (console socket), and closes it.

    For exec, `pid` is first the helper's, which waits outside the container's pid
    namespace; release() makes the real process there (zoned's child too) and `pid` becomes
    its pid, written to `pid_file` if one was asked for."""

    __slots__ = ("pid", "chan", "master", "spawns", "pid_file", "command")

    def __init__(self, pid: int, chan: Channel | None, master: int | None = None, *,
                 spawns=None, pid_file: str | None = None, command: str = ""):
        self.pid, self.chan, self.master = pid, chan, master
        self.spawns = spawns  # exec: the container's Cgroup, which the process goes into
        self.pid_file, self.command = pid_file, command

    def release(self) -> None:
        """Let the process exec and report whether exec worked."""
        if self.chan is None:
            return
        self.chan.send(Op.START)
        msg = self.chan.recv()  # EOF: the sync socket was closed by a successful exec
        if msg.op is Op.MADE and self.spawns is not None:
            try:
                self.spawns.add(int(msg.get("pid")))  # a move: allowed even at pids.max
            except BaseException:
                _kill_and_reap(int(msg.get("pid")))
                _kill_and_reap(self.pid)
                raise
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
        """The exec helper's last word (process._spawn): the real process's pid, or why it
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
                _kill_and_reap(pid)
            if step == sc.SPAWN_STEP_EXEC:
                message = f"{os.strerror(err)}: {self.command}"
            else:  # not the command's fault: no 126/127
                message, err = f"{sc.SPAWN_STEPS.get(step, 'clone')}: {os.strerror(err)}", 0
            raise Message(Op.ERROR, {"message": message, "errno": err}, []).error("exec failed")
        self.pid = pid
        if self.pid_file:
            _write_pid_file(self.pid_file, pid)


class Runtime:
    """One state root's containers."""

    def __init__(self, root: str | os.PathLike | None = None, data: str | None = None):
        self.store = Store(root, data)

    # -- queries -----------------------------------------------------------------------
    def state(self, cid: str) -> dict:
        """runtime-spec state JSON (plus runc's and zoned's extra fields), status live."""
        st = self.store.read_state(cid)
        st["status"] = self._status(cid, st)
        if st["status"] is Status.STOPPED:
            st["pid"] = 0
        return st

    def _status(self, cid: str, st: dict) -> Status:
        status = st.get("status", Status.CREATING)
        if status == Status.CREATING:
            return Status.CREATING
        pid = st.get("pid") or 0
        if not pid or proc_start_time(pid) != st.get("zoned", {}).get("pid_start"):
            return Status.STOPPED
        if status == Status.CREATED:
            return Status.CREATED
        try:
            if self.cgroup(st).frozen():
                return Status.PAUSED
        except (OSError, AttributeError):
            pass
        return Status.RUNNING

    def list(self) -> list[dict]:
        out = []
        for cid in self.store.ids():
            try:
                out.append(self.state(cid))
            except NotFound:
                pass
        return out

    def config(self, cid: str) -> dict:
        try:
            return self.store.read_config(cid)
        except FileNotFoundError:
            raise NotFound(f"container {cid!r} does not exist") from None

    @staticmethod
    def cgroup(st: dict):
        from zoned.cgroups import open_cgroup

        return open_cgroup(st["zoned"]["cgroup"])

    # -- create ------------------------------------------------------------------------
    def create(self, cid: str, cfg: dict, *, bundle: str | None = None,
               stdio: tuple[int, int, int] | None = None, use_fifo: bool = True, keep_pdeathsig: bool = False,
               on_namespaces: Callable[[int], None] | None = None,
               log: bool = False, autoremove: bool = False,
               pid_file: str | None = None, network=None, preserve_fds: int = 0,
               no_pivot: bool = False) -> Started:
        """Set the container up to the point of exec and leave its init waiting.

        use_fifo: init waits on exec.fifo for `start` from any process (runc's way); else the
        returned Started holds the channel and `release()` starts it (one process: `run`).
        network: an object with prepare(state_dir, cfg) (before fork: leases, /etc files,
        mounts), attach(pid) (the container's namespaces exist; it waits), describe() (what
        state.json records) and release() (on failure); zoned.network.attach provides it.
        On any failure everything created so far is removed and the error re-raised.
        """
        specmod.check_id(cid)
        specmod.validate(cfg)  # every config check, before anything is created
        check_preserved_fds(preserve_fds)
        from zoned.oci import hooks

        linux = cfg.setdefault("linux", {})
        cg_path = resolve_cgroups_path(linux.get("cgroupsPath")) or \
            default_cgroups_path(cid, self.store.root)
        if linux.get("cgroupsPath"):  # resolved once: restore and migrate reuse it as is
            linux["cgroupsPath"] = cg_path
        d = self.store.reserve(cid)
        from zoned.linux.locks import acquire

        lock = acquire(os.path.join(d, "lock"))
        cgroup = None
        pid = 0
        log_fds: list[int] = []
        log_path = logger = data = None
        spawn_fd = None
        try:
            lower = (cfg.get("annotations") or {}).get(specmod.ANN_LOWER)
            if lower or log:  # the writable layer and the log go to the data root (disk)
                from zoned.storage import make_zone_dir

                data = make_zone_dir(self.store.data, cid)
            if log:  # a detached container's output goes to zoned-logger (zoned.logs)
                from zoned import logs

                logger = logs.spawn(data)
                log_path = os.path.join(data, logs.LOG_NAME)
                null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                log_fds = [logger.write_fd, null]
                stdio = (null, logger.write_fd, logger.write_fd)
            if lower:
                rootfs = os.path.join(d, "rootfs")  # a mount point: runtime state
                upper, work = os.path.join(data, "upper"), os.path.join(data, "work")
                for p in (rootfs, upper, work):
                    os.mkdir(p, 0o755)
                root_id = _host_root(linux)
                if root_id is not None:  # the container's root must own its upper layer
                    for p in (upper, work):
                        os.chown(p, *root_id)
                if not os.path.isdir(lower):
                    raise ConfigError(f"image rootfs {lower!r} is missing")
            else:
                root = cfg["root"]["path"]
                rootfs = os.path.join(bundle or os.getcwd(), root)
                upper = work = None
                if not os.path.isdir(rootfs):
                    raise ConfigError(f"rootfs {rootfs!r} does not exist or is not a directory")
            state = {
                "ociVersion": cfg.get("ociVersion", specmod.OCI_VERSION),
                "id": cid, "status": Status.CREATING, "pid": 0,
                "bundle": os.path.abspath(bundle) if bundle else d,
                "rootfs": rootfs,
                "created": utc_now(),
                "owner": "",
                "annotations": cfg.get("annotations") or {},
                "zoned": {"cgroup": cg_path, "log": log_path, "autoremove": autoremove,
                          "data": data,
                          "logger": logger.describe() if logger is not None else None,
                          # which hook kinds exist: start and delete read config.json
                          # (tens of KiB with seccomp) only when they have hooks to run
                          "hooks": hook_kinds(cfg)},
            }
            if network is not None:
                network.prepare(d, cfg)
                state["zoned"]["network"] = network.describe()
            on_namespaces = _namespace_hook(cfg, state, network, on_namespaces)
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(json.dumps(cfg, separators=(",", ":")))
            self.store.write_state(cid, state)

            bpf, seccomp_flags = b"", 0
            if linux.get("seccomp"):
                from zoned.child import seccomp

                bpf = seccomp.compile_bpf(linux["seccomp"])
                seccomp_flags = seccomp.filter_flags(linux["seccomp"])

            from zoned.cgroups import hierarchies, open_cgroup

            cgroup = open_cgroup(cg_path)
            for attempt in range(3):  # `zoned gc` may remove an empty parent meanwhile
                try:
                    cgroup.create()
                    break
                except OSError as e:
                    if e.errno != errno.ENOENT or attempt == 2:
                        raise
            cgroup.apply(container_resources(linux.get("resources") or {},
                                             linux.get("devices")))

            fifo_fd = None
            if use_fifo:
                fifo = os.path.join(d, "exec.fifo")
                os.mkfifo(fifo, 0o622)
                os.chmod(fifo, 0o622)  # not the umask's: the container's user opens it
                fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)

            namespaces = {n["type"]: n.get("path") for n in linux.get("namespaces", [])}
            idmap_fds = {i: idmap_userns(m) for i, m in enumerate(cfg.get("mounts") or [])
                         if m.get("uidMappings") or m.get("gidMappings")}
            join_fds = {}
            for t, p in namespaces.items():
                if p and t != "pid":
                    try:
                        join_fds[t] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                    except OSError as e:
                        raise ConfigError(f"namespace {t} path {p!r}: {e.strerror}") from None
            from zoned.child.initstub import fits
            from zoned.child.process import spawn_copy

            if fits(cfg):  # the init waits for start as this sealed copy
                spawn_fd = spawn_copy()
            parent_sock, child_sock = sync_pair()
            chan = Channel(parent_sock)
            plan = Plan(cfg, child_sock, rootfs=rootfs, upper=upper, work=work,
                        stdio=stdio, fifo_fd=fifo_fd, join_fds=join_fds,
                        bpf=bpf, seccomp_flags=seccomp_flags, hierarchies=hierarchies(),
                        wait_namespaces=on_namespaces is not None,
                        keep_pdeathsig=keep_pdeathsig, preserve_fds=preserve_fds,
                        no_pivot=no_pivot, cgroup_path=cg_path, idmap_fds=idmap_fds,
                        spawn_fd=spawn_fd)
            if "user" in namespaces:
                pid = _fork_userns(plan, chan, linux, child_sock)
            else:
                pid = self._fork(plan, namespaces)
            child_sock.close()
            if spawn_fd is not None:
                os.close(spawn_fd)
                spawn_fd = None
            for fd in [*join_fds.values(), *idmap_fds.values()]:
                os.close(fd)
            if fifo_fd is not None:
                os.close(fifo_fd)
            cgroup.add(pid)
            state["pid"] = pid
            try:
                chan.send(Op.CGROUP, state=oci_state(state))
            except BrokenPipeError:
                pass  # the init failed early: _handshake reads why
            pause("ZONED_TEST_PAUSE_CREATE")
            master = _handshake(chan, on_namespaces, pid, "container init exited during set-up")
            state["status"] = Status.CREATED
            state["pid"] = pid
            state["zoned"]["pid_start"] = proc_start_time(pid)
            self.store.write_state(cid, state)
            if pid_file:
                _write_pid_file(pid_file, pid)
            if use_fifo:
                chan.send(Op.ACK)
                if chan.recv().op is not Op.DETACHED:  # pdeathsig is off now
                    raise ZonedError("container init exited during set-up")
                parent_sock.close()
                return Started(pid, None, master)
            return Started(pid, chan, master)
        except BaseException as exc:
            if pid:
                _kill_and_reap(pid)
            if isinstance(exc, hooks.HookError):  # the spec: stop, then run poststop hooks
                hooks.run(cfg.get("hooks"), "poststop",
                          {**oci_state(state), "status": Status.STOPPED})
            if cgroup is not None:
                discard_cgroup(cgroup)
            if network is not None:
                network.release()
            for fd in log_fds:
                os.close(fd)
            log_fds = []
            if data is not None:
                from zoned.logs import discard_zone_data

                discard_zone_data(data, logger.describe() if logger is not None else None)
            self.store.remove(cid)
            raise
        finally:
            for fd in log_fds:
                os.close(fd)
            if spawn_fd is not None:
                os.close(spawn_fd)
            os.close(lock)

    @staticmethod
    def _fork(plan: Plan, namespaces: dict) -> int:
        if "pid" in namespaces:
            join_fd, pid = None, 0
            if namespaces["pid"]:
                join_fd = os.open(namespaces["pid"], os.O_RDONLY | os.O_CLOEXEC)
            try:
                with pid_namespace_for_children(join_fd):
                    pid = fork_nondumpable(run_child, plan)
            finally:
                if join_fd is not None and pid:
                    os.close(join_fd)
            return pid
        return fork_nondumpable(run_child, plan)

    # -- start / kill / delete ---------------------------------------------------------
    def start(self, cid: str, started: Started | None = None) -> None:
        """Release a created container's init to exec its process."""
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            status = self._status(cid, st)
            if not status.can_start():
                raise InvalidState(f"cannot start container {cid!r}: it is {status}, "
                                   "not created")
            if started is not None and started.chan is not None:
                st["status"] = Status.RUNNING
                self.store.write_state(cid, st)
                started.release()
                self._poststart(cid, st)
                return
            fifo = os.path.join(self.store.dir(cid), "exec.fifo")
            fd = os.open(fifo, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLHUP)
                deadline = time.monotonic() + 10
                data = b""
                while not data:
                    if not poller.poll(100):
                        if proc_start_time(st["pid"]) is None:
                            raise ZonedError(f"container {cid!r} init exited before start")
                        if time.monotonic() > deadline:
                            raise ZonedError(f"container {cid!r} did not start in time")
                        continue
                    data = os.read(fd, 1)
                    if not data and proc_start_time(st["pid"]) is None:
                        raise ZonedError(f"container {cid!r} init exited before start")
            finally:
                os.close(fd)
            os.unlink(fifo)
            st["status"] = Status.RUNNING
            self.store.write_state(cid, st)
            self._poststart(cid, st)

    def _poststart(self, cid: str, st: dict) -> None:
        if "poststart" in st["zoned"].get("hooks", ()):
            from zoned.oci import hooks

            hooks.run(self.config(cid).get("hooks"), "poststart", oci_state(st))

    def kill(self, cid: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        st = self.store.read_state(cid)
        status = self._status(cid, st)
        if not status.can_kill():
            raise InvalidState(f"cannot kill container {cid!r}: it is {status}")
        if all:
            self.cgroup(st).kill(sig)
            return
        signal_pid(st["pid"], st["zoned"]["pid_start"], sig)

    def wait(self, cid: str, timeout: float | None = None) -> bool:
        """Wait until the container's init has exited; True if it did."""
        st = self.store.read_state(cid)
        return wait_exit(st.get("pid") or 0, st.get("zoned", {}).get("pid_start"), timeout)

    def record_exit(self, cid: str, code: int) -> None:
        """Keep the exit code of a container whose init we reaped (a foreground `run`):
        `ps` shows it as "exited (N)"."""
        with self.store.lock(cid):
            self.store.write_state(cid, {**self.store.read_state(cid), "exit_code": code})

    def stop(self, cid: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (docker/podman stop)."""
        st = self.store.read_state(cid)
        status = self._status(cid, st)
        if not status.is_active():
            return
        pid, start = st["pid"], st["zoned"]["pid_start"]
        if status is Status.PAUSED:
            self.cgroup(st).thaw()
        signal_pid(pid, start, signal.SIGTERM)
        if not wait_exit(pid, start, timeout):
            signal_pid(pid, start, signal.SIGKILL)
            wait_exit(pid, start, 10)

    def delete(self, cid: str, *, force: bool = False) -> None:
        """Remove a stopped container (or any, with force) and everything it owns.

        A recorded, resumable operation: the `removing` mark goes down first, then each
        step is idempotent (kill, cgroup, network, state dir), so a removal killed at any
        point is finished by `zoned gc` or by another delete. Nothing here needs a free
        block: it works on a full disk."""
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            status = self._status(cid, st)
            if not status.can_delete() and not force:
                raise InvalidState(f"cannot delete container {cid!r}: it is {status} "
                                   "(stop it first or use --force)")
            self.store.mark_removing(cid)
            hit("rm:marked")
            if status.is_active():
                if status is Status.PAUSED:
                    self.cgroup(st).thaw()
                signal_pid(st["pid"], st["zoned"]["pid_start"], signal.SIGKILL)
                wait_exit(st["pid"], st["zoned"]["pid_start"], 10)
            hit("rm:killed")
            cfg_hooks = None
            if "poststop" in (st.get("zoned") or {}).get("hooks", ()):
                try:
                    cfg_hooks = self.store.read_config(cid).get("hooks")
                except (OSError, ValueError):
                    pass
            self.release(cid, st)
            if cfg_hooks and cfg_hooks.get("poststop"):
                from zoned.oci import hooks

                hooks.run(cfg_hooks, "poststop", {**oci_state(st), "status": Status.STOPPED})

    def release(self, cid: str, st: dict) -> None:
        """Remove what the container owns, in an order that a retry (or gc) can pick up
        anywhere: processes and cgroup, network, then the state dir (the record that the
        rest may still exist) last. Idempotent; also used by gc."""
        pid = st.get("pid") or 0
        if pid:
            _reap(pid)
        # a container killed before state.json was written still has its default cgroup
        cg = (st.get("zoned") or {}).get("cgroup") or default_cgroups_path(cid, self.store.root)
        from zoned.cgroups import open_cgroup

        cgroup = open_cgroup(cg)
        if cgroup.exists():
            cgroup.kill()
            cgroup.destroy()
        hit("rm:cgroup")
        if (st.get("zoned") or {}).get("network"):
            from zoned.network.release import release as release_network

            release_network(self.store.root, cid, st["zoned"]["network"])
        hit("rm:network")
        # The data dir goes before the state dir: a removal killed in between leaves a
        # stopped zone that `rm` finishes, never an orphan data dir (gc removes those too).
        z = st.get("zoned") or {}
        data = z["data"] if "data" in z else self.store.data_dir(cid)
        if data:
            from zoned.logs import discard_zone_data

            discard_zone_data(data, z.get("logger"))
        self.store.remove(cid)

    def update(self, cid: str, resources: dict) -> None:
        """Change a running container's limits (runc update) and record them in its
        config. Only the given controllers are written: re-writing the device list of a
        running container would deny every device for a moment."""
        from zoned.oci import schema

        schema.check(resources, schema.RESOURCES, "linux.resources", source="update")
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            if not self._status(cid, st).is_active():
                raise InvalidState(f"cannot update container {cid!r}: it is not running")
            self.cgroup(st).apply(resources)
            cfg = self.config(cid)
            current = cfg.setdefault("linux", {}).setdefault("resources", {})
            for key, value in resources.items():
                if isinstance(value, dict) and isinstance(current.get(key), dict):
                    current[key].update(value)
                else:
                    current[key] = value
            from zoned.state import write_json_atomic

            write_json_atomic(os.path.join(self.store.dir(cid), "config.json"), cfg)

    # -- pause / resume ----------------------------------------------------------------
    def pause(self, cid: str) -> None:
        st = self.store.read_state(cid)
        if not self._status(cid, st).can_pause():
            raise InvalidState(f"cannot pause container {cid!r}: it is not running")
        self.cgroup(st).freeze()

    def resume(self, cid: str) -> None:
        st = self.store.read_state(cid)
        if not self._status(cid, st).can_resume():
            raise InvalidState(f"cannot resume container {cid!r}: it is not paused")
        self.cgroup(st).thaw()

    # -- exec --------------------------------------------------------------------------
    def exec(self, cid: str, process: dict, *, stdio: tuple[int, int, int] | None = None,
             pid_file: str | None = None, preserve_fds: int = 0,
             detach: bool = False) -> Started:
        """Start `process` (an OCI process object) inside a running container: the same
        namespaces, cgroup, capabilities and seccomp as its init. Returns with the process
        waiting; `release()` lets it exec (so the caller can set up before)."""
        check_preserved_fds(preserve_fds)
        from zoned.oci import schema

        schema.check(process, schema.CONFIG["process!"], "process")
        specmod.validate_process(process)
        st = self.store.read_state(cid)
        status = self._status(cid, st)
        if not status.can_exec():
            raise InvalidState(f"cannot exec in container {cid!r}: it is {status}")
        cfg = self.config(cid)
        linux = cfg.get("linux") or {}
        pid, start = st["pid"], st["zoned"]["pid_start"]
        join_fds: dict[str, int] = {}
        pidns = None
        try:
            types = [n["type"] for n in linux.get("namespaces", [])]
            for t in types:
                fd = os.open(f"/proc/{pid}/ns/{NS_PROC[t]}", os.O_RDONLY | os.O_CLOEXEC)
                if t == "pid":
                    pidns = fd
                else:
                    join_fds[t] = fd
            if proc_start_time(pid) != start:
                raise InvalidState(f"cannot exec in container {cid!r}: it has stopped")
        except FileNotFoundError:
            for fd in join_fds.values():
                os.close(fd)
            raise InvalidState(f"cannot exec in container {cid!r}: it has stopped") from None
        bpf, seccomp_flags = b"", 0
        if linux.get("seccomp"):
            from zoned.child import seccomp

            bpf = seccomp.compile_bpf(linux["seccomp"])
            seccomp_flags = seccomp.filter_flags(linux["seccomp"])
        exec_cfg = dict(cfg)
        exec_cfg["process"] = process
        from zoned.child.process import spawn_copy

        spawn_fd = spawn_copy()
        parent_sock, child_sock = sync_pair()
        # The helper is forked here, outside the container's pid namespace, and sets up
        # there; at release it makes the real process inside (process._spawn).
        plan = Plan(exec_cfg, child_sock, rootfs=None, stdio=stdio, preserve_fds=preserve_fds,
                    join_fds=join_fds, bpf=bpf, seccomp_flags=seccomp_flags,
                    keep_pdeathsig=not detach,  # a detached process outlives `zoned exec`
                    pidns_fd=pidns, spawn_fd=spawn_fd)
        child = 0
        try:
            child = fork_nondumpable(run_child, plan)
            child_sock.close()
            # The helper stays in our cgroup: release() moves the process it makes.
            chan = Channel(parent_sock)
            try:
                chan.send(Op.CGROUP)
            except BrokenPipeError:
                pass  # the helper failed early: _handshake reads why
            master = _handshake(chan, None, child, "exec set-up failed")
            pause("ZONED_TEST_PAUSE_EXEC")
            return Started(child, chan, master, spawns=self.cgroup(st), pid_file=pid_file,
                           command=process["args"][0])
        except BaseException:
            if child:
                _kill_and_reap(child)
            raise
        finally:
            for fd in join_fds.values():
                os.close(fd)
            for fd in (pidns, spawn_fd):
                if fd is not None:
                    os.close(fd)


def hook_kinds(cfg: dict) -> list[str]:
    """The hook kinds a config has, recorded in state.json."""
    return sorted(k for k, v in (cfg.get("hooks") or {}).items() if v)


def discard_cgroup(cgroup) -> None:
    """Undo a cgroup made for a create or restore that failed: kill what is in it, remove
    it, and let the original error through."""
    try:
        cgroup.kill()
        cgroup.destroy()
    except OSError:
        pass


def check_preserved_fds(n: int) -> None:
    """--preserve-fds N passes the caller's fds 3..N+2: they must be open, or zoned's own
    fds (its lock, its sync socket) would take those numbers and leak into the container."""
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError(f"--preserve-fds {n}: fd {fd} is not open") from None


def _host_root(linux: dict) -> tuple[int, int] | None:
    """The host uid/gid that root of the container's user namespace maps to, if any."""
    if not any(n.get("type") == "user" for n in linux.get("namespaces", [])):
        return None

    def host_of(maps):
        for m in maps or []:
            if int(m["containerID"]) <= 0 < int(m["containerID"]) + int(m["size"]):
                return int(m["hostID"]) - int(m["containerID"])
        return None
    uid, gid = host_of(linux.get("uidMappings")), host_of(linux.get("gidMappings"))
    return (uid, gid) if uid is not None and gid is not None else None


def _write_maps(pid: int, linux: dict) -> None:
    """uid_map/gid_map of a child's new user namespace, each in one write as the kernel
    wants."""
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


def idmap_userns(mount: dict) -> int:
    """An fd of a user namespace holding an idmapped mount's uid/gid maps: a short-lived
    process makes the namespace, we map it and keep only the namespace."""
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
        _write_maps(child, {"uidMappings": mount.get("uidMappings"),
                            "gidMappings": mount.get("gidMappings")})
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.waitpid(child, 0)


def _fork_userns(plan: Plan, chan: Channel, linux: dict, child_sock) -> int:
    """Fork stage 1 (see process.run_userns_stage), map its user namespace and return the
    pid of stage 2, the container's init."""
    from zoned.child.process import run_userns_stage

    stage1 = fork_nondumpable(run_userns_stage, plan)
    try:
        while True:
            msg = chan.recv()
            if msg.op is Op.USERNS:
                _write_maps(stage1, linux)
                chan.send(Op.MAPPED)
            elif msg.op is Op.PID:
                return int(msg.get("pid"))
            else:
                raise msg.error("user namespace set-up failed")
    except BaseException:
        _kill_and_reap(stage1)
        raise
    finally:
        try:
            os.waitpid(stage1, 0)
        except ChildProcessError:
            pass


def oci_state(st: dict) -> dict:
    """The runtime-spec state (what hooks get on stdin and `state` prints)."""
    out = {k: st[k] for k in ("ociVersion", "id", "status", "pid", "bundle") if k in st}
    out["annotations"] = st.get("annotations") or {}
    return out


def _namespace_hook(cfg: dict, state: dict, network, extra):
    """What the parent runs while the init waits with its namespaces made: the network
    attachment, then the prestart and createRuntime hooks (runtime namespace)."""
    cfg_hooks = cfg.get("hooks") or {}
    wanted = [k for k in ("prestart", "createRuntime") if cfg_hooks.get(k)]
    if network is None and not wanted and extra is None:
        return None

    def run(pid: int) -> None:
        if network is not None:
            network.attach(pid)
        if extra is not None:
            extra(pid)
        if wanted:
            from zoned.oci import hooks

            st = {**oci_state(state), "status": Status.CREATING, "pid": pid}
            for kind in wanted:
                hooks.run(cfg_hooks, kind, st)
    return run


def _handshake(chan: Channel, on_namespaces: Callable[[int], None] | None, pid: int,
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


def container_resources(resources: dict, devices: list | None = None) -> dict:
    """The config's resources with runc's default device allow-list appended (as runc does:
    the config's own rules, usually "deny all", come first). The rules apply before fork,
    so the init makes its linux.devices nodes under them: each node's mknod is allowed
    (only "m": using it still takes a rule of the config's, as with runc)."""
    from zoned.child.rootfs import DEFAULT_DEVICES

    defaults = [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
                for _path, major, minor in DEFAULT_DEVICES]
    defaults += [
        {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},   # /dev/ptmx
        {"allow": True, "type": "c", "major": 136, "access": "rwm"},             # /dev/pts/*
        {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},   # console
    ]
    defaults += [{"allow": True, "type": "b" if d.get("type") == "b" else "c",
                  "major": d.get("major", 0), "minor": d.get("minor", 0), "access": "m"}
                 for d in devices or []
                 if isinstance(d, dict) and d.get("type") in ("b", "c", "u")]
    res = dict(resources)
    res["devices"] = list(resources.get("devices") or []) + defaults
    return res


def utc_now() -> str:
    """RFC 3339 UTC time with microseconds, as runc's `created` (no datetime import)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (API users fork containers)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
