"""runc's checkpoint and restore, as podman and containerd (and so Kubernetes) call them.

    checkpoint --image-path DIR [--work-path W] [--leave-running] ID
    restore --image-path DIR [--work-path W] --bundle B --detach [--pid-file F] ID

The checkpoint leaves CRIU's images in DIR, and zoned's metadata (zoned-checkpoint.json,
with what runc keeps in descriptors.json: the init's stdio). The engine keeps the rest: the
container's files (its rootfs diff) and its network. The restore brings the processes back
into the bundle the engine has made ready: its rootfs, its mounts' sources (matched by
destination), the network namespace its config names (or a new one with `lo` up), its
cgroupsPath, and the restoring process's own stdio in place of the pipes the processes
wrote to (conmon's and the shim's new ones). runc's libcontainer does the same
(Checkpoint/Restore in container_linux.go, with descriptors.json and criu-root).

`zoned checkpoint --dir` and `zoned restore --dir` (zoned.checkpoint.dump, .restore) are
the zone-level ones: there zoned itself carries the files and re-creates the network."""
from __future__ import annotations

import os

from zoned.errors import ConfigError


def checkpoint(rt, cid: str, image_path: str, *, work_path: str | None = None,
               leave_running: bool = False, tcp_established: bool = False,
               criu_flags: tuple[str, ...] = ()) -> None:
    """Dump `cid` into image_path; stopped and removed unless leave_running, as runc."""
    from zoned.checkpoint.archive import clean_dir
    from zoned.checkpoint.criu import find_criu
    from zoned.checkpoint.dump import Dump
    from zoned.checkpoint.private import check_dir_to_write
    from zoned.linux.proc import wait_exit

    criu = find_criu()
    image_path = os.path.abspath(image_path)
    check_dir_to_write(image_path, "--image-path")
    if work_path:
        work_path = os.path.abspath(work_path)
        check_dir_to_write(work_path, "--work-path")
    with rt.store.lock(cid):
        dump = Dump(rt, cid, oci=True).plan()
        clean_dir(image_path)
        if work_path:
            os.makedirs(work_path, mode=0o700, exist_ok=True)
        dump.run(image_path, leave_running=leave_running, tcp_established=tcp_established,
                 criu=criu, copy_files=False, work_dir=work_path, criu_flags=criu_flags)
    if not leave_running:
        wait_exit(dump.pid, dump.start, 10)
        rt.delete(cid, force=True)


def restore(rt, cid: str, image_path: str, cfg: dict, bundle: str, *,
            pid_file: str | None = None, tcp_established: bool = False,
            criu_flags: tuple[str, ...] = ()) -> int:
    """Restore the checkpoint in image_path as container `cid` of the bundle whose
    (loaded, checked) config is `cfg`; running when this returns. -> its pid."""
    from zoned.checkpoint.archive import read_meta
    from zoned.checkpoint.criu import find_criu
    from zoned.checkpoint.private import check_own
    from zoned.runtime.steps import name_problems

    image_path = os.path.abspath(image_path)
    check_own(image_path, "--image-path", directory=True)
    meta = read_meta(image_path)
    if not isinstance(meta.get("oci"), dict) or \
            not isinstance(meta["oci"].get("stdio"), list):
        raise ConfigError(f"--image-path {image_path}: a checkpoint `zoned checkpoint "
                          "--dir` made: restore it with `zoned restore --dir`")
    problems = name_problems(rt.store, cid)
    if problems:
        raise ConfigError(f"cannot restore {cid!r}: " + "; ".join(problems))
    _check_config(cfg)
    _check_against(meta, cfg, image_path)
    criu = find_criu()
    if tcp_established and not meta.get("tcp_established"):
        criu_flags += ("--tcp-established",)
    return _Restore(rt, cid, meta, cfg, bundle).run(criu, image_path, pid_file, criu_flags)


def _check_config(cfg: dict) -> None:
    """What the restore cannot honour, refused in one line before anything is made."""
    if (cfg.get("process") or {}).get("terminal"):
        raise ConfigError("process.terminal: a container with a terminal cannot be "
                          "restored (nor checkpointed)")
    if any((cfg.get("hooks") or {}).values()):
        raise ConfigError("hooks: a restore runs no hooks; give a config without them")
    ns = {n.get("type"): n.get("path") for n in (cfg.get("linux") or {}).get("namespaces")
          or []}
    if "user" in ns:
        raise ConfigError("linux.namespaces: a user namespace cannot be restored yet")
    if "pid" not in ns or ns["pid"] or "mount" not in ns or ns["mount"]:
        raise ConfigError("linux.namespaces: a restore needs new pid and mount namespaces")
    if "network" not in ns:
        raise ConfigError("linux.namespaces: the host's network cannot be restored into")


def _check_against(meta: dict, cfg: dict, image_path: str) -> None:
    """What the images may name on the host, the engine's config decides (its images may
    come from a registry: ctr container restore): each mount the restore binds is one of
    the config's, by destination, from the config's source (zoned's own restore falls back
    to the checkpoint's); and of the host's files, only /dev/null is opened for the
    processes (conmon's and the shim's stdin), as runc opens none."""
    where = f"--image-path {image_path}"
    dests = {os.path.normpath(m["destination"]) for m in cfg.get("mounts") or []}
    for e in meta["mounts"]:
        if not e.get("skeleton") and not e.get("cgroup") and \
                os.path.normpath(e["destination"]) not in dests:
            raise ConfigError(f"{where}: the checkpoint binds {e['destination']}, which "
                              "the bundle's config does not mount")
    for fi in meta["files"]:
        if fi.get("pipe") or fi.get("path") != "/dev/null":  # (a pipe: a zoned logger's)
            raise ConfigError(f"{where}: the checkpoint's processes had "
                              f"{fi.get('path') or fi.get('key')!r} of the host open: a "
                              "restore for an engine opens none but /dev/null")


class _Restore:
    """One restore, undone in full (cgroup, state dir) if any step fails."""

    def __init__(self, rt, cid: str, meta: dict, cfg: dict, bundle: str):
        self.rt, self.cid, self.meta, self.cfg, self.bundle = rt, cid, meta, cfg, bundle
        self.cgroup = None
        self.fds: list[int] = []

    def run(self, criu: str, image_path: str, pid_file: str | None,
            criu_flags: tuple[str, ...]) -> int:
        from zoned.checkpoint.criu_restore import run_restore
        from zoned.linux.proc import proc_start_time
        from zoned.runtime.cgroup_paths import default_cgroups_path, resolve_cgroups_path
        from zoned.runtime.handoff import write_pid_file
        from zoned.runtime.steps import abandon, initial_state, write_config

        rt, cid, cfg = self.rt, self.cid, self.cfg
        linux = cfg.setdefault("linux", {})
        cg_path = resolve_cgroups_path(linux.get("cgroupsPath")) or \
            default_cgroups_path(cid, rt.store.root)
        linux["cgroupsPath"] = cg_path
        root = os.path.join(self.bundle, cfg["root"]["path"])  # (as create reads it)
        if not os.path.isdir(root):
            raise ConfigError(f"root.path: rootfs {root!r} does not exist or is not a "
                              "directory")
        d = rt.store.reserve(cid)  # (raises, with nothing to undo, if the name is taken)
        try:
            with rt.store.lock(cid):
                state = initial_state(cid, cfg, bundle=self.bundle, rootfs=root,
                                      cgroup=cg_path, data=None, log=None, logger=None,
                                      autoremove=False, restored_from=image_path)
                rt.store.write_state(cid, state)  # from here gc knows what to remove
                write_config(d, cfg)
                self._cgroup(cg_path, linux)
                _mountpoints(root, cfg)
                netns = self._netns()
                inherit = self._stdio()
                mountpoint = os.path.join(d, "rootfs")
                os.mkdir(mountpoint, 0o755)
                pid = run_restore(criu, image_path, d, self.meta, cfg, bundle_root=root,
                                  rootfs=mountpoint, cgroup=cg_path, netns_fd=netns,
                                  log_path=None, inherit=inherit, criu_flags=criu_flags)
                state.update(status="running", pid=pid)
                state["zoned"]["pid_start"] = proc_start_time(pid)
                rt.store.write_state(cid, state)
                if pid_file:
                    write_pid_file(pid_file, pid)
                return pid
        except BaseException:  # (abandon kills what is in the cgroup: a restore that
            abandon(rt.store, cid, cgroup=self.cgroup)  # got as far as processes)
            raise
        finally:
            for fd in self.fds:
                os.close(fd)

    def _cgroup(self, cg_path: str, linux: dict) -> None:
        from zoned.cgroups import open_cgroup
        from zoned.runtime.steps import make_cgroup, refuse_in_use

        opened = open_cgroup(cg_path)
        refuse_in_use(opened)  # (someone else's: not killed or removed if we fail)
        self.cgroup = make_cgroup(opened, linux)

    def _netns(self) -> int:
        """The network namespace the config names (the engine's), or a new one."""
        from zoned.network import checkpoint_hooks as nethooks

        path = next(n.get("path") for n in self.cfg["linux"]["namespaces"]
                    if n.get("type") == "network")
        if path:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise ConfigError(f"linux.namespaces: network {path!r}: "
                                  f"{e.strerror}") from None
            self.fds.append(fd)
            return fd
        fd = nethooks.new_netns()
        self.fds.append(fd)
        nethooks.loopback_up(fd)
        return fd

    def _stdio(self) -> tuple[tuple[int, str], ...]:
        """Our stdin, stdout and stderr for the pipes the init had as its own (runc's
        descriptors.json): the engine gave this restore the container's new ones."""
        keys: dict[str, int] = {}  # (stdout and stderr are often one pipe: one key)
        for n, target in enumerate(self.meta["oci"]["stdio"][:3]):
            if isinstance(target, str) and target.startswith("pipe:[") and \
                    target not in keys:
                keys[target] = fd = os.dup(n)  # (0-2 are not criu's: run_criu gives it
                self.fds.append(fd)            # pipes of its own)
        return tuple((fd, key) for key, fd in keys.items())


def _mountpoints(root: str, cfg: dict) -> None:
    """runc's prepareCriuRestoreMounts: each mount's destination made in the rootfs where
    it is missing, as the runtime made it at create (a rootfs an engine rebuilt from an
    exported checkpoint has none of them: podman's /run/.containerenv), a file for a bind
    of a file, else a directory. Not for cgroup mounts (their mount points come with
    /sys's or a tmpfs's) nor below a tmpfs mount (CRIU restores what a tmpfs held).
    Inside the root only: zoned.child.inroot follows the rootfs's symlinks in the root."""
    from zoned.checkpoint.archive import is_bind
    from zoned.child import inroot

    mounts = cfg.get("mounts") or []
    tmpfs = [m["destination"].rstrip("/") + "/" for m in mounts if m.get("type") == "tmpfs"]
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in mounts:
            dest = m["destination"]
            if m.get("type") == "cgroup" or any(dest.startswith(t) for t in tmpfs):
                continue
            kind = "dir"
            if is_bind(m) and m.get("source") and not os.path.isdir(m["source"]):
                kind = "file"
            try:
                inroot.target(fd, dest, kind).close()
            except OSError as e:
                raise ConfigError(f"mounts: {dest}: cannot make its mount point in the "
                                  f"rootfs: {e.strerror}") from None
    finally:
        os.close(fd)
