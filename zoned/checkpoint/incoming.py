"""A restore in two halves, so that a migration's destination makes everything that needs
no images while the source still runs, and the source's freeze covers only what must be
frozen: unpacking, `criu restore` and the commit.

  prepare()  before the freeze: the name, state dir, data dir, cgroup, config, the network
             (lease, rules, a new namespace with its veths addressed and routed), all from
             the checkpoint's metadata. With hold_links, each bridge link's host side stays
             down until open(): the zone's eth0 has no carrier, so not one frame of it (an
             IPv6 DAD or MLD report with the zone's MAC) reaches a switch while the source
             still runs the zone, and nothing reaches its sockets before the commit.
  restore()  the images are here: the upper dir moved in, the log and its logger, then
             `criu restore` (stopped, for a migration).
  discard()  undo whatever was made, at any point before the zone runs here.
zoned.checkpoint.restore.restore() (`zoned restore`) is prepare() and restore() in a row;
resume() there lets a stopped one run and opens its held links.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from contextlib import ExitStack

from zoned.checkpoint.archive import lower_of
from zoned.linux.files import rmtree


def _no_mark(step: str) -> None:
    pass


BEFORE_RESTORE = ".before-restore"  # a zone layer's upper dir, aside while a restore runs


def put_layer_back(upper: str) -> bool:
    """A zone layer's upper dir as it was before a restore that failed or was killed
    (upper + BEFORE_RESTORE, moved aside while it ran); True if one was put back. Called
    by the restore itself, and before a zone's next boot or restore."""
    aside = upper + BEFORE_RESTORE
    if not os.path.lexists(aside):
        return False
    if os.path.lexists(upper):
        rmtree(upper)  # the save's, moved in by the restore that did not finish
    os.rename(aside, upper)
    return True


class Incoming:
    """data_dir: a defined zone's layer (zoned.zones: `zoned restore FILE`), which the
    restored container writes to and which outlives it, as a boot's does (kept_data);
    else a data dir of its own is made."""

    def __init__(self, rt, meta: dict, directory: str, cid: str | None = None,
                 data_dir: str | None = None):
        self.rt, self.meta = rt, meta
        self.directory = os.path.abspath(directory)
        self.cid = cid or meta["id"]
        self.data_dir = data_dir
        self.d = self.data = self.cgroup = self.netsetup = self.logger = None
        self.state: dict | None = None
        self.cfg: dict | None = None
        self.nsfd = -1
        self.held: list[str] = []  # host sides of links kept down until resume()
        self.quarantined = False
        self._lock = ExitStack()

    def prepare(self, *, hold_links: bool = False, mark=_no_mark) -> None:
        """Everything that needs only the metadata. Raises (having undone it) on failure."""
        import copy

        from zoned.network import checkpoint_hooks as nethooks
        from zoned.runtime.cgroup_paths import default_cgroups_path
        from zoned.runtime.steps import initial_state, make_cgroup, refuse_in_use, \
            write_config
        from zoned.storage import keep_zone_dir, make_zone_dir

        rt, meta, cid = self.rt, self.meta, self.cid
        self.lower = lower_of(meta)
        cfg = self.cfg = copy.deepcopy(meta["config"])
        old_dir = meta["state_dir"]
        d = self.d = rt.store.reserve(cid)
        try:
            self._lock.enter_context(rt.store.lock(cid))  # held until restore() ends
            if self.data_dir:  # a zone's layer: kept, as a boot keeps it
                data = self.data = keep_zone_dir(self.data_dir)
            else:
                data = self.data = make_zone_dir(rt.store.data, cid)
            self.rootfs = os.path.join(d, "rootfs")
            self.upper, self.work = os.path.join(data, "upper"), os.path.join(data, "work")
            os.mkdir(self.rootfs, 0o755)
            if not (self.data_dir and os.path.isdir(self.work)):
                os.mkdir(self.work, 0o755)
            from zoned import logs

            self.log_path = os.path.join(data, logs.LOG_NAME) if meta.get("log") else None
            cfg.setdefault("annotations", {})["org.zoned.rootfs.lower"] = self.lower
            linux = cfg.setdefault("linux", {})
            explicit = linux.get("cgroupsPath")
            cg_path = explicit if explicit and cid == meta["id"] and \
                os.path.realpath(old_dir) == os.path.realpath(d) else \
                default_cgroups_path(cid, rt.store.root)
            linux["cgroupsPath"] = self.cg_path = cg_path
            # zoned's own files (hosts, resolv.conf, hostname) move to the new state dir;
            # networking writes them afresh below.
            owned = {e["destination"] for e in meta["mounts"]
                     if e["source"].startswith(old_dir + "/") and not e.get("skeleton")}
            cfg["mounts"] = [m for m in cfg.get("mounts") or []
                             if m.get("destination") not in owned]
            state = self.state = initial_state(
                cid, cfg, bundle=d, rootfs=self.rootfs, cgroup=cg_path, data=data,
                log=self.log_path, logger=None, autoremove=meta.get("autoremove", False),
                annotations=meta.get("annotations") or {}, restored_from=self.directory,
                **({"kept_data": True} if self.data_dir else {}))
            from zoned.linux.proc import proc_start_time

            # Whose it is: if this process dies, gc (or the next migration of the same
            # zone here, reclaim()) removes it.
            state["zoned"]["incoming"] = {"pid": os.getpid(),
                                          "start": proc_start_time(os.getpid())}
            rt.store.write_state(cid, state)  # from here gc knows what to remove
            if meta.get("network"):
                from zoned.network.attach import setup_for_restore

                self.netsetup = setup_for_restore(rt.store.root, cid, meta["network"],
                                                  meta.get("hostname") or cid)
                self.netsetup.prepare(d, cfg)
                state["zoned"]["network"] = self.netsetup.describe()
                rt.store.write_state(cid, state)
            self.nsfd = nethooks.new_netns()
            if self.netsetup is not None:
                links = self.netsetup.links
                self.held = [a.host_if for a in links if a.mode == "bridge"] \
                    if hold_links else []
                if len(self.held) < len(links):  # a routed link cannot wait down
                    nethooks.quarantine(self.nsfd, True)
                    self.quarantined = True
                self.netsetup.attach_ns(self.nsfd, loopback=True, hold=bool(self.held))
            else:
                nethooks.loopback_up(self.nsfd)
            write_config(d, cfg)
            from zoned.cgroups import open_cgroup

            opened = open_cgroup(cg_path)
            if cg_path == explicit:  # the checkpoint's: somebody else's if in use
                refuse_in_use(opened)
            self.cgroup = make_cgroup(opened, linux)
            mark("prepare (state, network, cgroup)")
        except BaseException:
            self.discard()
            raise

    def restore(self, *, lazy_socket: int | None = None, stopped: bool = False,
                consume: bool = False, mark=_no_mark) -> dict:
        """`criu restore` of the images now in the directory; the zone's state. With
        `stopped` its tasks wait for resume(). Raises (having undone everything) on
        failure."""
        from zoned import logs
        from zoned.checkpoint.criu import find_criu
        from zoned.checkpoint.criu_restore import run_restore
        from zoned.linux.proc import proc_start_time

        rt, meta, cid, state, directory = self.rt, self.meta, self.cid, self.state, \
            self.directory
        replaced = None  # a zone's layer's upper dir, put back if the restore fails
        moved_in = False
        try:
            _entry(directory, "upper", stat.S_ISDIR)  # not a link the archive planted
            if self.data_dir:
                put_layer_back(self.upper)  # (from a restore killed before this one)
            if self.data_dir and os.path.lexists(self.upper):  # the saved files win: the
                replaced = self.upper + BEFORE_RESTORE  # processes had them open
                os.rename(self.upper, replaced)
            moved_in = True
            if consume:
                os.rename(os.path.join(directory, "upper"), self.upper)
            else:
                subprocess.run(["cp", "-a", "--", os.path.join(directory, "upper"),
                                self.upper], check=True)
            log_path = self.log_path
            if log_path:
                for name in (logs.OLD_NAME, logs.LOG_NAME):
                    saved = os.path.join(directory, name)
                    if os.path.lexists(saved) and _entry(directory, name, stat.S_ISREG):
                        shutil.copy2(saved, os.path.join(self.data, name))
                if not os.path.exists(log_path):
                    open(log_path, "a").close()
                os.chmod(log_path, 0o640)  # criu checks the mode of an inherited file
                if any(fi.get("pipe") for fi in meta["files"]):
                    self.logger = logs.spawn(self.data)
                    state["zoned"]["logger"] = self.logger.describe()
            mark("upper dir and log")
            pid = run_restore(find_criu(), directory, self.d, meta, self.cfg,
                              lower=self.lower, upper=self.upper, work=self.work,
                              rootfs=self.rootfs, cgroup=self.cg_path, netns_fd=self.nsfd,
                              log_path=log_path,
                              log_fd=self.logger and self.logger.write_fd,
                              lazy_socket=lazy_socket, stopped=stopped, mark=mark)
            state.update(status="running", pid=pid)
            state["zoned"]["pid_start"] = proc_start_time(pid)
            if stopped:  # until resume(): gc removes it if this process dies first
                state["zoned"]["incoming"].update(held_links=self.held,
                                                  quarantined=self.quarantined)
            else:
                state["zoned"].pop("incoming", None)
            rt.store.write_state(cid, state)
            mark("state")
            if replaced is not None:
                rmtree(replaced)
                replaced = None
            if not stopped:
                self.open_network(state)
                from zoned.network.checkpoint_hooks import close_lingering

                close_lingering()
            return state
        except BaseException:
            _keep_log(os.path.join(self.d, "restore.log"), directory, f"restore-{cid}.log")
            self.discard()
            if replaced is not None:  # the zone's layer as it was
                put_layer_back(self.upper)
            elif self.data_dir and moved_in:  # (none before)
                rmtree(self.upper)
            raise
        finally:
            self._close_fds()
            self._lock.close()

    def open_network(self, state: dict, mark=_no_mark) -> None:
        """Let the network reach the restored zone, and tell the switches where it is."""
        if self.netsetup is None:
            return
        open_network(state, self.nsfd, self.held, self.quarantined, mark)

    def discard(self) -> None:
        """Undo everything made so far (the zone's tasks, if any, are killed by the
        caller's rt.delete once restore() has returned)."""
        from zoned.runtime.steps import abandon

        if self.d is None:
            return
        if self.logger is not None and self.logger.write_fd >= 0:
            os.close(self.logger.write_fd)
            self.logger.write_fd = -1
        self._close_fds()
        try:
            abandon(self.rt.store, self.cid, cgroup=self.cgroup, network=self.netsetup,
                    data=None if self.data_dir else self.data,  # (a zone's layer stays)
                    logger=self.logger.describe() if self.logger is not None else None)
        finally:
            self.d = None
            self._lock.close()

    def _close_fds(self) -> None:
        if self.logger is not None and self.logger.write_fd >= 0:
            os.close(self.logger.write_fd)  # the restored tasks have it now
            self.logger.write_fd = -1
        if self.nsfd >= 0:
            os.close(self.nsfd)
            self.nsfd = -1


def reclaim(rt, cid: str) -> bool:
    """Remove `cid` if an incoming migration whose receiving process died left it here
    (prepared or restored, never committed), as `zoned gc` would: else the next move of
    that zone to this host is refused for its name. True if it was removed."""
    from zoned.linux.proc import proc_start_time, signal_pid

    if not rt.store.exists(cid):
        return False
    fd = rt.store.try_lock(cid)
    if fd is None:
        return False  # a live session (or anyone else) holds it
    try:
        try:
            st = rt.store.read_state(cid)
        except OSError:
            return False
        owner = (st.get("zoned") or {}).get("incoming")
        if not owner or proc_start_time(owner["pid"]) == owner.get("start"):
            return False
        if st.get("pid"):
            signal_pid(st["pid"], st["zoned"].get("pid_start"), 9)
        rt.release(cid, st)
        return True
    finally:
        os.close(fd)


def open_network(state: dict, nsfd: int | None, held: list[str], quarantined: bool,
                 mark=_no_mark) -> None:
    """The held links' host sides up, the quarantine lifted, then gratuitous ARPs."""
    from zoned.network import checkpoint_hooks as nethooks

    own = nsfd is None
    if own:
        nsfd = os.open(f"/proc/{state['pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if held:
            nethooks.release_links(held)
        if quarantined:
            nethooks.quarantine(nsfd, False)
        mark("network open")
        nethooks.announce(state, nsfd)
        mark("ARP announce")
    finally:
        if own:
            os.close(nsfd)


def _entry(directory: str, name: str, is_kind) -> bool:
    """Whether `name` in the checkpoint directory is what zoned itself put there (is_kind:
    stat.S_ISDIR, S_ISREG); a symlink or anything else an archive or a peer planted in
    its place is refused."""
    from zoned.errors import ConfigError

    try:
        mode = os.lstat(os.path.join(directory, name)).st_mode
    except FileNotFoundError:
        raise ConfigError(f"the checkpoint has no {name}") from None
    if not is_kind(mode):
        raise ConfigError(f"the checkpoint's {name} is not a plain "
                          f"{'directory' if is_kind is stat.S_ISDIR else 'file'}")
    return True


def _keep_log(log: str, directory: str, name: str) -> None:
    """A copy of CRIU's restore log next to the images, for the user to read: made anew
    (O_EXCL, O_NOFOLLOW), never written through whatever the directory held there."""
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        src = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        dst = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                      os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        os.close(src)
        return
    try:
        while chunk := os.read(src, 1 << 16):
            os.write(dst, chunk)
    except OSError:
        pass
    finally:
        os.close(src)
        os.close(dst)

