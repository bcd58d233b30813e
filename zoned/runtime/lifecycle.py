"""Runtime: one state root's containers through the OCI lifecycle (create -> start -> kill
-> delete, plus state, exec, pause, update). Everything a container owns is created and
removed here; the steps it shares with checkpoint restore are zoned.runtime.steps, exec's
set-up in a running zone is zoned.runtime.exec_process."""
from __future__ import annotations

import os
import select
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import time

from zoned.errors import ConfigError, InvalidState, NotFound, ZonedError
from zoned.oci.status import Status
from zoned.linux import lastref, netahead
from zoned.linux.proc import kill_and_reap, proc_start_time, signal_pid, wait_exit
from zoned.runtime.cgroup_paths import default_cgroups_path, resolve_cgroups_path, \
    shared_memory_path, shares_memory_cgroup
from zoned.runtime.steps import abandon, enter_cgroup, initial_state, host_root, \
    make_cgroup, make_fifo, make_skeleton, namespace_hook, oci_state, open_namespaces, \
    record_resources, refuse_in_use, refuse_vm, start_logger, write_config
from zoned.runtime.removal import release
from zoned.runtime.store import Store
from zoned.testhooks import hit, mark, pause
from zoned.volumes import ANN_ANONYMOUS, ANN_VOLUMES, make_for as make_volumes, \
    remove_anonymous

# create and exec import the fork's machinery (zoned.child, cffi) and the spec's checks:
# `state`, `start` and `delete` (podman's, thrice a container) ran ~3 ms slower with them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

    from zoned.runtime.handoff import Started


class Runtime:
    """One state root's containers."""

    def __init__(self, root: str | os.PathLike | None = None, data: str | None = None):
        self.store = Store(root, data)

    # -- queries -----------------------------------------------------------------------
    def state(self, cid: str) -> dict:
        """runtime-spec state JSON (plus runc's and zoned's extra fields), status live."""
        st = self.store.read_state(cid)
        st["status"] = self.live_status(cid, st)
        if st["status"] is Status.STOPPED:
            pid, st["pid"] = st.get("pid") or 0, 0
            if "exit_code" not in st and st.get("zoned", {}).get("vm"):
                from zoned.backends.vm import exit_code

                st["exit_code"] = exit_code(st)  # what the guest reported
            elif "exit_code" not in st:  # what its parent, the logger, recorded (-d)
                from zoned.logs import recorded_exit

                found = recorded_exit(self.store.dir(cid), pid)
                if found:
                    st["exit_code"], st["finished"] = found
        return st

    def live_status(self, cid: str, st: dict, *, paused: bool = True) -> Status:
        """The status now. paused=False: paused reads as running (no freezer read, no
        cgroup driver loaded: `kill` treats both alike)."""
        status = st.get("status", Status.CREATING)
        if status == Status.CREATING:
            return Status.CREATING
        pid = st.get("pid") or 0
        if not pid or proc_start_time(pid) != st.get("zoned", {}).get("pid_start"):
            return Status.STOPPED
        if status == Status.CREATED:
            return Status.CREATED
        if not paused:
            return Status.RUNNING
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

        return open_cgroup(st["zoned"]["cgroup"], st["zoned"].get("shared_memory", False))

    # -- create ------------------------------------------------------------------------
    def create(self, cid: str, cfg: dict, *, bundle: str | None = None,
               stdio: tuple[int, int, int] | None = None, use_fifo: bool = True, keep_pdeathsig: bool = False,
               on_namespaces: Callable[[int], None] | None = None,
               log: bool = False, autoremove: bool = False,
               pid_file: str | None = None, network=None, preserve_fds: int = 0,
               no_pivot: bool = False, data_dir: str | None = None,
               split_stderr: bool = False, late_process: bool = False,
               sibling: bool = False, start: bool = False,
               on_start: Callable[[int], None] | None = None,
               netns_fd: int | None = None) -> Started:
        """Set the container up to the point of exec and leave its init waiting.

        use_fifo: init waits on exec.fifo for `start` from any process (runc's way); else the
        returned Started holds the channel and `release()` starts it (one process: `run`).
        network: an object with prepare(state_dir, cfg) (before fork: leases, /etc files,
        mounts), attach(pid) (the container's namespaces exist; it waits), describe() (what
        state.json records) and release() (on failure); zoned.network.attach provides it.
        On any failure everything created so far is removed and the error re-raised.
        data_dir: a data dir the caller owns (a defined zone's, zoned.zones): its upper/
        and log are used as they are and outlive the container (kept_data in state.json).
        split_stderr (with log): stderr goes to a second pipe of the same logger, logged
        to DATA/stderr/ctr.log (state: log_stderr), so a harness can tell the streams
        apart; a line written to stdout before one to stderr is logged first.
        late_process (with use_fifo=False): start(process=) gives the init its args, env
        and cwd (zoned.pool); its init then waits as python, not as zoned-spawn's copy.
        sibling: the init is our parent's child, not ours (zoned.pool's maker); so is a
        user namespace's stage 1, which our parent reaps (Started.to_reap, or the
        exception's sibling_pids).
        start: start it too, under this lock (Runtime.run; use_fifo=False, no hooks);
        on_start(pid) is called just before (a foreground run passes signals on from then).
        netns_fd: a fresh network namespace (zoned.linux.netahead; the caller's fd) that
        the init joins for the new one its config asks for.
        """
        mark("create")
        from zoned.child.process import Plan
        from zoned.child.sync import Channel, Op, pair as sync_pair
        from zoned.oci import spec as specmod
        from zoned.runtime.handoff import Started, check_preserved_fds, fork_init, \
            fork_userns, handshake, idmapped_tree, write_pid_file

        specmod.check_id(cid)
        specmod.validate(cfg)  # every config check, before anything is created
        check_preserved_fds(preserve_fds)
        linux = cfg.setdefault("linux", {})
        shared_memory = shares_memory_cgroup(cfg)
        cg_path = resolve_cgroups_path(linux.get("cgroupsPath")) or \
            default_cgroups_path(cid, self.store.root)
        if shared_memory:
            cg_path = shared_memory_path(cg_path)
        if linux.get("cgroupsPath"):  # resolved once: restore and migrate reuse it as is
            linux["cgroupsPath"] = cg_path
        d = self.store.reserve(cid)
        from zoned.linux.locks import acquire

        lock = acquire(os.path.join(d, "lock"))
        cgroup = plan = master = None
        pid = 0
        log_fds: list[int] = []
        log_path = logger = data = err_log = None
        spawn_fd = None
        join_fds: dict[str, int] = {}
        idmap_fds: dict[int, int] = {}
        try:
            # The volumes it mounts, after every check (a refused run makes none).
            if (cfg.get("annotations") or {}).get(ANN_VOLUMES):
                make_volumes(cfg, self.store.data)
            lower = (cfg.get("annotations") or {}).get(specmod.ANN_LOWER)
            if data_dir:  # zoned.zones: kept across restarts (only the logger is undone)
                from zoned.storage import keep_zone_dir

                data = keep_zone_dir(data_dir)
            elif lower or log:  # the writable layer and the log go to the data root (disk)
                from zoned.storage import make_zone_dir

                data = make_zone_dir(self.store.data, cid)
            root_id = host_root(linux)
            if root_id is not None:  # its root traverses both to mount its rootfs
                from zoned.storage import share_with_zone_root

                for p in (d, data) if data else (d,):
                    share_with_zone_root(p, root_id)
            if log:  # a detached container's output goes to zoned-logger (zoned.logs)
                logger, log_path, err_log, log_fds, stdio = start_logger(data, split_stderr)
            if lower:
                rootfs = os.path.join(d, "rootfs")  # a mount point: runtime state
                upper, work = os.path.join(data, "upper"), os.path.join(data, "work")
                for p in (rootfs, upper, work):
                    if not (data_dir and p != rootfs and os.path.isdir(p)):
                        os.mkdir(p, 0o755)
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
            state = initial_state(
                cid, cfg, bundle=os.path.abspath(bundle) if bundle else d, rootfs=rootfs,
                cgroup=cg_path, data=data, log=log_path,
                logger=logger.describe() if logger is not None else None,
                autoremove=autoremove, **({"kept_data": True} if data_dir else {}),
                **({"shared_memory": True} if shared_memory else {}))
            if err_log:
                state["zoned"]["log_stderr"] = err_log
            if network is not None:
                from zoned.cgroups import prime

                prime.wait()  # set-up beyond ours (netlink, nft): no thread of ours runs
                network.prepare(d, cfg)
                state["zoned"]["network"] = network.describe()
            on_namespaces = namespace_hook(cfg, state, network, on_namespaces)
            # config.json: read by nothing before the zone is created (ps goes without) but
            # a hook (from the bundle): else written after the fork, while the init works.
            late_config = not cfg.get("hooks")
            if not late_config:
                write_config(d, cfg)
            self.store.write_state(cid, state)

            bpf, seccomp_flags = b"", 0
            if linux.get("seccomp"):
                from zoned.child import seccomp

                bpf = seccomp.compile_bpf(linux["seccomp"])
                seccomp_flags = seccomp.filter_flags(linux["seccomp"])

            from zoned.cgroups import hierarchies

            fifo_fd = make_fifo(d) if use_fifo else None

            namespaces = {n["type"]: n.get("path") for n in linux.get("namespaces", [])}
            for i, m in enumerate(cfg.get("mounts") or []):
                if m.get("uidMappings") or m.get("gidMappings"):
                    tree = idmapped_tree(i, m)
                    if tree is not None:
                        idmap_fds[i] = tree
            join_fds = open_namespaces(namespaces)
            if netns_fd is not None and netahead.fits(cfg):  # (the API asked the same)
                join_fds["network"] = os.dup(netns_fd)  # (its own: closed after the fork)
            from zoned.child import initplan
            from zoned.child.initstub import fits
            from zoned.child.spawn import spawn_copy

            if late_process and use_fifo:
                raise ConfigError("late_process needs the caller to start the zone")
            if start and (use_fifo or late_process or cfg.get("hooks")):
                raise ValueError("start=True: not with the fifo, a late process or hooks")
            hier = hierarchies()
            skeleton = make_skeleton(d, cfg, hier)
            parent_sock, child_sock = sync_pair()
            chan = Channel(parent_sock)
            plan = Plan(cfg, child_sock, rootfs=rootfs, upper=upper, work=work,
                        stdio=stdio, fifo_fd=fifo_fd, join_fds=join_fds,
                        bpf=bpf, seccomp_flags=seccomp_flags, hierarchies=hier,
                        wait_namespaces=on_namespaces is not None,
                        keep_pdeathsig=keep_pdeathsig, preserve_fds=preserve_fds,
                        no_pivot=no_pivot, cgroup_path=cg_path, idmap_fds=idmap_fds,
                        volatile=bool(autoremove and lower and not data_dir),
                        late_process=late_process, skeleton=skeleton,
                        memory_cgroup_path=os.path.dirname(cg_path) if shared_memory else None)
            plan.init_plan = initplan.compile_init(plan)  # None: the init is python
            if plan.init_plan is None:
                # Its mount code, loaded here: after the fork a forked child copies each page
                # it writes (refcounts), and its import cost the init ~1 ms more than this.
                from zoned.child.rootfs import Rootfs  # noqa: F401
            # The init waits for start as this sealed copy (the C init is it from its exec
            # on); not if started at once: its record says "creating" until it has exec'd
            # the zone's process (none joins it, below); unless its pid namespace is
            # another's, whose processes see it from its start.
            c_init = plan.init_plan is not None
            if (c_init or (not late_process and fits(cfg))) and \
                    (not start or (c_init and namespaces.get("pid"))):
                spawn_fd = plan.spawn_fd = spawn_copy()
            if c_init and late_process:  # its process comes as a plan (Runtime.start)
                state["zoned"]["late_plan"] = True
            from zoned.cgroups import join as cgjoin
            from zoned.cgroups import open_cgroup

            # Nothing made yet; opened here, so that a failure from now on removes it.
            opened = open_cgroup(cg_path, shared_memory)
            if linux.get("cgroupsPath"):  # the config's: somebody else's if in use
                refuse_in_use(opened)
            cgroup = opened
            cgroup.load_modules()  # make_cgroup's, after the fork: loaded now (see above)
            self_join, born_fd = cgjoin.prepare(cgroup, sibling=sibling, c_init=c_init)
            mark("fork")
            try:
                if "user" in namespaces:
                    pid = fork_userns(plan, chan, linux, sibling, born_fd)
                else:
                    pid = fork_init(plan, namespaces, sibling, born_fd)
            finally:
                if born_fd is not None:
                    os.close(born_fd)
            child_sock.close()
            if spawn_fd is not None:
                os.close(spawn_fd)
                spawn_fd = None
            for fd in [*join_fds.values(), *idmap_fds.values()]:
                os.close(fd)
            join_fds, idmap_fds = {}, {}
            if fifo_fd is not None:
                os.close(fifo_fd)
            # Made after the fork: the init sets up its namespaces and mounts meanwhile
            # (it waits for Op.CGROUP before anything that needs its cgroup). Then the
            # init joins the v1 ones itself (zoned.cgroups.join), or is moved by pid here.
            make_cgroup(cgroup, linux)
            initplan.settle(plan)  # the init has exec'd meanwhile (initplan.fork)
            state["pid"] = pid
            enter_cgroup(chan, cgroup, pid, self_join,  # (the state: for those hooks only)
                         oci_state(state) if initplan.hooks_in_init(cfg) else None)
            mark("cgroup")
            if late_config:
                write_config(d, cfg)
            pause("ZONED_TEST_PAUSE_CREATE")
            # The next state is written while the init sets up, and renamed once it is true;
            # after the namespace hook where one runs (a network's attach adds to it).
            state["status"] = Status.RUNNING if start else Status.CREATED
            state["zoned"]["pid_start"] = proc_start_time(pid)
            next_state = self.store.prepare_state(cid, state) if on_namespaces is None \
                else None
            master = handshake(chan, on_namespaces, pid, "container init exited during set-up")
            mark("ready")
            if next_state is None:
                next_state = self.store.prepare_state(cid, state)
            started = Started(pid, chan, master,
                              to_reap=(plan.stage_pid,) if plan.stage_pid else ())
            if start:  # exec and friends refuse a "creating" zone: none joins it while
                hit("run:ready")  # its PID 1 is still a copy of this python
                if on_start is not None:
                    on_start(pid)
                started.release()
            self.store.commit_state(cid, next_state)
            if pid_file:
                write_pid_file(pid_file, pid)
            if use_fifo:
                chan.send(Op.ACK)
                if chan.recv().op is not Op.DETACHED:  # pdeathsig is off now
                    raise ZonedError("container init exited during set-up")
                parent_sock.close()
                return Started(pid, None, master)
            return started
        except BaseException as exc:
            if plan is not None:
                initplan.settle(plan)
            if pid:
                kill_and_reap(pid)
            if master is not None:
                os.close(master)
            if sibling:  # our parent's children: it reaps them (zoned.pool)
                exc.sibling_pids = [p for p in (pid, plan and plan.stage_pid) if p]
            if cfg.get("hooks"):  # only a config with hooks fails in one (lazy: start-up)
                from zoned.oci import hooks

                if isinstance(exc, hooks.HookError):  # the spec: stop, then poststop hooks
                    hooks.run(cfg.get("hooks"), "poststop",
                              {**oci_state(state), "status": Status.STOPPED})
            for fd in log_fds:
                os.close(fd)
            log_fds = []
            if data_dir and logger is not None:
                from zoned.logs import wait_logger

                wait_logger(logger.describe())
            abandon(self.store, cid, cgroup=cgroup, network=network,
                    data=None if data_dir else data,
                    logger=logger.describe() if logger is not None else None)
            if (cfg.get("annotations") or {}).get(ANN_ANONYMOUS):
                remove_anonymous(cfg["annotations"], self.store.data)
            raise
        finally:
            for fd in [*log_fds, *join_fds.values(), *idmap_fds.values()]:
                os.close(fd)
            if spawn_fd is not None:
                os.close(spawn_fd)
            os.close(lock)

    def run(self, cid: str, cfg: dict, **options) -> Started:
        """create() and start() for a caller that holds the init (use_fifo=False), as
        `runc run`: without hooks in one step, so the state is written once ("running"),
        not twice, and the lock taken once. On failure nothing of it stays."""
        if not cfg.get("hooks"):
            return self.create(cid, cfg, use_fifo=False, start=True, **options)
        started = self.create(cid, cfg, use_fifo=False, **options)
        try:
            if options.get("on_start"):
                options["on_start"](started.pid)
            self.start(cid, started)
        except BaseException:
            self.delete(cid, force=True)
            raise
        return started

    # -- start / kill / delete ---------------------------------------------------------
    def start(self, cid: str, started: Started | None = None,
              process: dict | None = None) -> None:
        """Release a created container's init to exec its process. process: {"args",
        "env" (entries added), "cwd"} for an init created with late_process (recorded in
        config.json; zoned.child.process.late_process)."""
        if (self.store.read_state(cid).get("zoned") or {}).get("vm"):
            from zoned.backends.vm import VmBackend

            return VmBackend(self).start(cid)
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            status = self.live_status(cid, st)
            if not status.can_start():
                raise InvalidState(f"cannot start container {cid!r}: it is {status}, "
                                   "not created")
            if started is not None and started.chan is not None:
                late_plan = None
                if process or st["zoned"].get("late_plan"):
                    from zoned.child.process import late_process

                    cfg = self.store.read_config(cid)
                    cfg["process"] = late_process(cfg["process"], process or {})
                    write_config(self.store.dir(cid), cfg)
                    if st["zoned"].get("late_plan"):  # a C init's (initplan.compile_late)
                        from zoned.child.initplan import compile_late

                        late_plan = compile_late(cfg["process"], process or {})
                st["status"] = Status.RUNNING
                self.store.write_state(cid, st)
                started.release(process, late_plan)
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

    def kill(self, cid: str, sig: int = _signal.SIGTERM, *, all: bool = False) -> None:
        st = self.store.read_state(cid)
        if st.get("zoned", {}).get("vm"):  # the guest's process, through the VM's agent
            from zoned.backends.vm import VmBackend

            return VmBackend(self).kill(cid, sig)
        status = self.live_status(cid, st, paused=all)  # (--all: the cgroup's anyway)
        if all and status is not Status.CREATING:
            # Also once the init has gone, as runc: what a container without a pid
            # namespace of its own started outlives its init, in its cgroup, and
            # containerd's shim sends `kill --all` for that after the init's exit.
            self.cgroup(st).kill(sig)
            return
        if not status.can_kill():  # ("container not running": containerd's shim takes
            raise InvalidState(     # it for "process already finished", as runc's)
                f"cannot kill container {cid!r}: it is {status} (container not running)")
        signal_pid(st["pid"], st["zoned"]["pid_start"], sig)

    def wait(self, cid: str, timeout: float | None = None) -> bool:
        """Wait until the container's init has exited; True if it did."""
        st = self.store.read_state(cid)
        return wait_exit(st.get("pid") or 0, st.get("zoned", {}).get("pid_start"), timeout)

    def record_exit(self, cid: str, code: int) -> None:
        """Keep the exit code of a container whose init we reaped (a foreground `run`):
        `ps` shows it as "exited (N)"."""
        with self.store.lock(cid):
            self.store.write_state(cid, {**self.store.read_state(cid), "exit_code": code,
                                         "finished": time.time()})  # ps: "5 seconds ago"

    def stop(self, cid: str, timeout: float = 10.0) -> None:
        """SIGTERM (or the image's StopSignal), then SIGKILL after `timeout` seconds
        (docker/podman stop)."""
        st = self.store.read_state(cid)
        if st.get("zoned", {}).get("vm"):
            from zoned.backends.vm import VmBackend

            return VmBackend(self).stop(cid, timeout)
        status = self.live_status(cid, st)
        if not status.is_active():
            return
        pid, start = st["pid"], st["zoned"]["pid_start"]
        if status is Status.PAUSED:
            self.cgroup(st).thaw()
        from zoned.oci.spec import stop_signal

        signal_pid(pid, start, stop_signal(self.config(cid)))
        if not wait_exit(pid, start, timeout):
            signal_pid(pid, start, _signal.SIGKILL)
            wait_exit(pid, start, 10)

    def delete(self, cid: str, *, force: bool = False) -> None:
        """Remove a stopped container (or any, with force) and everything it owns.

        A recorded, resumable operation: the `removing` mark goes down first, then each
        step is idempotent (kill, cgroup, network, state dir), so a removal killed at any
        point is finished by `zoned gc` or by another delete. Nothing here needs a free
        block: it works on a full disk."""
        keeping = lastref.begin()  # what it removes: freed off the caller's path
        try:
            self._delete(cid, force)
        finally:
            if keeping:
                lastref.end()

    def _delete(self, cid: str, force: bool) -> None:
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            status = self.live_status(cid, st)
            if not status.can_delete() and not force:
                raise InvalidState(f"cannot delete container {cid!r}: it is {status} "
                                   "(stop it first or use --force)")
            self.store.mark_removing(cid)
            hit("rm:marked")
            if status.is_active():
                if status is Status.PAUSED:
                    self.cgroup(st).thaw()
                signal_pid(st["pid"], st["zoned"]["pid_start"], _signal.SIGKILL)
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
        """Remove what the container owns (zoned.runtime.removal.release). Idempotent;
        also used by gc."""
        release(self.store, cid, st)

    def update(self, cid: str, resources: dict) -> None:
        """Change a running container's limits (runc update) and record them in its
        config. Only the given controllers are written: re-writing the device list of a
        running container would deny every device for a moment."""
        from zoned.oci import schema

        schema.check(resources, schema.RESOURCES, "linux.resources", source="update")
        with self.store.lock(cid):
            st = self.store.read_state(cid)
            refuse_vm(st, "update", "its RAM and vCPUs are fixed at boot")
            if not self.live_status(cid, st).is_active():
                raise InvalidState(f"cannot update container {cid!r}: it is not running")
            self.cgroup(st).apply(resources)
            record_resources(self.store.dir(cid), self.config(cid), resources)

    # -- pause / resume ----------------------------------------------------------------
    def pause(self, cid: str) -> None:
        st = self.store.read_state(cid)
        if not self.live_status(cid, st).can_pause():
            raise InvalidState(f"cannot pause container {cid!r}: it is not running")
        self.cgroup(st).freeze()

    def resume(self, cid: str) -> None:
        st = self.store.read_state(cid)
        if not self.live_status(cid, st).can_resume():
            raise InvalidState(f"cannot resume container {cid!r}: it is not paused")
        self.cgroup(st).thaw()

    # -- exec --------------------------------------------------------------------------
    def exec(self, cid: str, process: dict, *, stdio: tuple[int, int, int] | None = None,
             pid_file: str | None = None, preserve_fds: int = 0,
             detach: bool = False) -> Started:
        """Start `process` (an OCI process object) inside a running container: the same
        namespaces, cgroup, capabilities and seccomp as its init. Returns with the process
        waiting; `release()` lets it exec (so the caller can set up before)."""
        from zoned.runtime.exec_process import exec_in

        return exec_in(self, cid, process, stdio=stdio, pid_file=pid_file,
                       preserve_fds=preserve_fds, detach=detach)
