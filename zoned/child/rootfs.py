"""The container's filesystem view, built inside its new mount namespace (in the child):
overlay or bind root, the config's mounts, a minimal /dev, pivot_root, masked and read-only
paths. Mounting inside the container's own namespace means none of it is visible on the host
and all of it disappears with the container, even if zoned is killed."""
from __future__ import annotations

import os
import stat

from zoned.child import inroot
from zoned.linux import syscalls as sc
from zoned.errors import ConfigError
from zoned.oci.spec import DEFAULT_DEVICES
from zoned.child.inroot import secure_join  # noqa: F401 - the path-string form, for callers

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

# What may be mounted inside /proc (runc's checkProcMount): files lxcfs emulates.
PROC_MOUNTABLE = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat",
                  "/proc/swaps", "/proc/uptime", "/proc/loadavg", "/proc/slabinfo",
                  "/proc/net/dev", "/proc/sys/kernel/ns_last_pid")

# OCI/fstab mount option -> (clear, flag); as runc's parseMountOptions.
MOUNT_FLAGS = {
    "async": (True, sc.MS_SYNCHRONOUS), "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND), "defaults": (False, 0), "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME), "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC), "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME), "noexec": (False, sc.MS_NOEXEC),
    "nomand": (True, sc.MS_MANDLOCK), "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME), "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME), "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY), "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID), "sync": (False, sc.MS_SYNCHRONOUS),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Options with no mount(2) flag that zoned handles itself.
_IGNORED = {"idmap", "ridmap", "tmpcopyup"}

# A masked directory's bind: read-only, and nothing in it could run or be a device.
MASK_ATTRS = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | \
    sc.MOUNT_ATTR_NOEXEC
DEV_SYMLINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
                ("pts/ptmx", "/dev/ptmx")]


def parse_options(options: list[str]) -> tuple[int, int, str]:
    """-> (flags, propagation flags, data string)."""
    flags, prop, data = 0, 0, []
    for opt in options or []:
        if opt in MOUNT_FLAGS:
            clear, f = MOUNT_FLAGS[opt]
            flags = flags & ~f if clear else flags | f
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        elif opt in _IGNORED:
            continue
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def device_mode(d: dict) -> int:
    """A linux.devices entry's mknod mode (its type and permission bits), as both inits make
    the node (this module's Rootfs, the C init's plan)."""
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
            "p": stat.S_IFIFO}.get(d.get("type"))
    if kind is None:
        raise ConfigError(f"device {d.get('path')}: unknown type {d.get('type')!r}")
    return kind | (int(d.get("fileMode", 0o666)) & 0o7777)


class MountSpec:
    """A config mount as both inits take it (this module's Rootfs, and the C init's plan:
    zoned.child.initplan). A bind's source is looked at here, on the host: a missing one is
    the config's fault. (A plain class: a dataclass import costs start-up time.)"""

    __slots__ = ("dest", "kind", "flags", "prop", "data", "bind", "source", "like_file")

    def __init__(self, m: dict):
        self.dest = m["destination"]
        options = m.get("options") or []
        self.kind = m.get("type") or ("bind" if "bind" in options or "rbind" in options
                                      else None)
        self.flags, self.prop, self.data = parse_options(options)
        self.bind = self.kind == "bind" or bool(self.flags & sc.MS_BIND)
        self.source = m.get("source") or ""  # a bind's; other mounts take kind without one
        self.like_file = False
        if self.bind:
            try:
                st = os.stat(self.source)
            except FileNotFoundError:
                raise ConfigError(f"mount source {self.source!r} for {self.dest} does not "
                                  "exist") from None
            self.like_file = not stat.S_ISDIR(st.st_mode)


class Rootfs:
    """Builds the mount tree under `path` and pivots into it. Runs in the container child."""

    def __init__(self, cfg: dict, path: str, *, upper: str | None = None,
                 work: str | None = None, cgroup_hierarchies: list | None = None,
                 cgroup_path: str | None = None, idmap_fds: dict[int, int] | None = None,
                 volatile: bool = False, skeleton: dict[str, str] | None = None,
                 memory_cgroup_path: str | None = None):
        self.cfg = cfg
        self.volatile = volatile
        self.path = path
        self.upper, self.work = upper, work
        self.hierarchies = cgroup_hierarchies or []
        self.linux = cfg.get("linux") or {}
        self.cgroup_path = cgroup_path
        self.memory_cgroup_path = memory_cgroup_path or cgroup_path  # v1: shared or not
        self.idmap_fds = idmap_fds or {}
        # Host dirs bound in place of a tmpfs each (zoned.runtime.steps.make_skeleton):
        # "empty" for the masked directories, "cgroup" for v1's /sys/fs/cgroup. Where the
        # namespace's root cannot reach them (a zone's own skeleton, in a state root only
        # root may enter, seen from a user namespace mapped to another uid), each is a
        # tmpfs, as before.
        self.skeleton = skeleton or {}
        self.empty_tree: int | None = None
        # In a user namespace device nodes cannot be made and v1 cgroupfs cannot be
        # mounted: both are bind-mounted from the host instead (as runc does).
        types = {n.get("type") for n in self.linux.get("namespaces", [])}
        self.userns = "user" in types
        self.cgroupns = "cgroup" in types

    # -- before pivot_root -------------------------------------------------------------
    def prepare(self, cgroup_ready: Callable[[], None] = lambda: None) -> None:
        """Mount everything under the new root. `cgroup_ready` is called once, before the
        first cgroup filesystem is mounted (or at the end): the caller joins its cgroup
        and cgroup namespace there, as late as the mount order allows."""
        # Nothing mounted from here on may propagate back to the host.
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        lower = (self.cfg.get("annotations") or {}).get("org.zoned.rootfs.lower")
        if lower:
            # volatile (a zone removed when it exits, its upper with it): the kernel skips
            # syncing the upper's file system when the last process leaves, which the
            # zone's exit (and `zoned run --rm`) would wait for; fsync inside is a no-op.
            sc.mount("overlay", self.path, "overlay", 0,
                     f"lowerdir={lower},upperdir={self.upper},workdir={self.work}"
                     + (",volatile" if self.volatile else ""))
        else:
            try:
                sc.mount(self.path, self.path, None, sc.MS_BIND | sc.MS_REC)
            except OSError as e:  # (EACCES: the user namespace's root cannot reach it)
                hint = " (can the user namespace's root reach it?)" if self.userns else ""
                raise ConfigError(f'invalid root.path "{self.path}": {e.strerror}{hint}') \
                    from None
        # Every path below is resolved from this fd, inside the root (zoned.child.inroot).
        self.root_fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        waiting = True
        for i, m in enumerate(self.cfg.get("mounts") or []):
            if waiting and m.get("type") == "cgroup":
                cgroup_ready()
                waiting = False
            try:
                self.mount(m, self.idmap_fds.get(i))
            except OSError as e:  # the config's fault, not the command's (no 127/126)
                raise ConfigError(f'invalid mounts[{i}] ({m.get("type") or "bind"} on '
                                  f'"{m["destination"]}"): {oserror_text(e)}') from None
        self.make_devices()
        if waiting:
            cgroup_ready()
        if self.skeleton.get("empty"):
            # Cloned now, attached after pivot_root (mask_paths): the host path is gone then.
            try:
                self.empty_tree = sc.open_tree(self.skeleton["empty"])
            except PermissionError:  # the namespace's root cannot reach it
                return
            sc.mount_setattr("", attr_set=MASK_ATTRS, dirfd=self.empty_tree,
                             flags=sc.AT_EMPTY_PATH | sc.AT_RECURSIVE)

    def mount(self, m: dict, idmap_fd: int | None = None) -> None:
        spec = MountSpec(m)
        dest, kind, flags, prop, data = spec.dest, spec.kind, spec.flags, spec.prop, spec.data
        bind, src, like_file = spec.bind, spec.source, spec.like_file
        names = inroot.resolve(self.root_fd, dest)
        if not names:
            raise ConfigError(f"mount destination {dest!r} is the container's root")
        check_proc_mount(m, "/" + "/".join(names), kind, bind)
        with inroot.target(self.root_fd, dest, "file" if like_file else "dir", names) as t:
            if kind == "cgroup":
                return self.mount_cgroups(t, flags)
            if bind:
                if idmap_fd is not None:  # the idmapped tree zoned made (handoff.idmapped_tree)
                    sc.move_mount_to_fd(idmap_fd, t.fd)
                else:
                    t.mount(src, None, sc.MS_BIND | (flags & sc.MS_REC))
                t.reopen()
                rest = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
                if rest:
                    t.mount(None, None, sc.MS_BIND | sc.MS_REMOUNT | rest)
            else:
                try:
                    t.mount(m.get("source") or kind, kind, flags, data or None)
                    t.reopen()
                except PermissionError:
                    if kind != "sysfs":
                        raise
                    # sysfs of a shared (host) network namespace: bind the host's instead.
                    t.mount("/sys", None, sc.MS_BIND | sc.MS_REC)
                    t.reopen()
                    t.mount(None, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
            if prop:
                t.mount(None, None, prop)

    def mount_cgroups(self, t: inroot.Target, flags: int) -> None:
        """The host's cgroup hierarchies, seen from the container's cgroup namespace."""
        flags &= ~sc.MS_RDONLY  # made read-only after the sub-mounts exist
        hier = self.hierarchies
        if len(hier) == 1 and hier[0].fstype == "cgroup2":
            # Without a cgroup namespace a fresh cgroupfs mount would show the host's root
            # cgroup: bind the container's own cgroup instead (podman asks for this).
            if self.cgroup_path and not self.cgroupns:
                t.mount(hier[0].mountpoint + self.cgroup_path, None, sc.MS_BIND | sc.MS_REC)
                t.reopen()
                t.mount(None, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | flags)
                return
            t.mount("cgroup", "cgroup2", flags | sc.MS_RDONLY)
            return
        skeleton = self.skeleton.get("cgroup")
        if skeleton:  # a directory per hierarchy, the zone's own: no tmpfs superblock
            try:
                t.mount(skeleton, None, sc.MS_BIND)
            except PermissionError:  # the namespace's root cannot reach it
                skeleton = None
        if not skeleton:
            t.mount("tmpfs", "tmpfs", flags, "mode=755")
        t.reopen()  # the sub-directories are made in it (tmpfs) or found there, by fd
        for h in hier:
            with inroot.target(t.fd, os.path.basename(h.mountpoint), "dir") as sub:
                # The zone's own cgroup, bound: what a fresh mount in its cgroup namespace
                # shows, but a fresh v1 mount walks every cgroup of the host's default
                # hierarchy (cgroup1_get_tree drains offline ones): 4-11 ms each with 5,000
                # zones, against 0.07 ms for a bind. (And a user namespace may not mount v1.)
                own = self.memory_cgroup_path if "memory" in h.controllers else \
                    self.cgroup_path
                if own:
                    try:
                        sub.mount(h.mountpoint + own, None, sc.MS_BIND | sc.MS_REC)
                    except FileNotFoundError:  # no cgroup of its own in this hierarchy
                        if not self.cgroupns:
                            raise
                    else:
                        sub.reopen()
                        sub.mount(None, None,
                                  sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | flags)
                        continue
                sub.mount("cgroup", h.fstype, flags | sc.MS_RDONLY, h.options or None)
        # A bind's flags are its mount's alone; without MS_BIND this remount would apply
        # to the file system under the skeleton: the host's.
        t.mount(None, None, sc.MS_REMOUNT | sc.MS_RDONLY | flags |
                (sc.MS_BIND if skeleton else 0))

    def make_devices(self) -> None:
        """runc's default nodes, the config's linux.devices, the /dev symlinks. Each is made
        in place of what is there (never through a symlink), its directory resolved inside
        the root."""
        for path, major, minor in DEFAULT_DEVICES:
            if self.userns:
                self._bind_device(path, path)
            else:
                inroot.replace_node(self.root_fd, path, stat.S_IFCHR | 0o666,
                                    os.makedev(major, minor))
        for i, d in enumerate(self.linux.get("devices") or []):
            mode = device_mode(d)
            try:
                self._make_device(d, mode)
            except OSError as e:  # the config's fault, not the command's (no 127/126)
                raise ConfigError(f'invalid linux.devices[{i}].path "{d["path"]}": '
                                  f"{oserror_text(e)}") from None
        dev = inroot.open_dir(self.root_fd, inroot.resolve(self.root_fd, "/dev"))
        try:
            for src, link in DEV_SYMLINKS:
                try:
                    os.symlink(src, link[5:], dir_fd=dev)
                except FileExistsError:
                    pass
        finally:
            os.close(dev)

    def _make_device(self, d: dict, mode: int) -> None:
        if self.userns:
            self._bind_device(d["path"], d["path"])
            return
        inroot.replace_node(self.root_fd, d["path"], mode,
                            os.makedev(int(d.get("major", 0)), int(d.get("minor", 0))),
                            int(d.get("uid", 0)), int(d.get("gid", 0)))

    def make_cwd(self, cwd: str) -> None:
        """The process's working directory, made inside the root if missing."""
        inroot.target(self.root_fd, cwd, "dir").close()

    def _bind_device(self, host_path: str, path: str) -> None:
        with inroot.file_target(self.root_fd, path) as t:
            t.mount(host_path, None, sc.MS_BIND)

    # -- pivot and after ---------------------------------------------------------------
    def pivot(self, no_pivot: bool = False) -> None:
        """pivot_root(".", ".") then detach the old root stacked underneath (runc's way).
        no_pivot (runc --no-pivot, for a rootfs on a ramfs): move the root mount over /
        and chroot, which leaves the old root reachable to CAP_SYS_CHROOT holders."""
        os.chdir(self.path)
        if no_pivot:
            sc.mount(self.path, "/", None, sc.MS_MOVE)
            os.chroot(".")
        else:
            sc.pivot_root(".", ".")
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
            sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        prop = self.linux.get("rootfsPropagation")
        if prop:
            if prop not in PROPAGATION:
                raise ConfigError(f"invalid rootfsPropagation {prop!r}")
            sc.mount(None, "/", None, PROPAGATION[prop])

    def finish(self) -> None:
        """Sysctls, masked and read-only paths, read-only root: after pivot_root."""
        from zoned.linux.files import write_procfs

        for key, value in (self.linux.get("sysctl") or {}).items():
            try:
                write_procfs("/proc/sys/" + key.replace(".", "/"), str(value))
            except OSError as e:
                raise ConfigError(f"sysctl {key}={value}: {e.strerror}") from None
        masked_dir = None
        for i, p in enumerate(self.linux.get("maskedPaths") or []):
            try:
                masked_dir = mask_path(p, self.empty_tree, masked_dir) or masked_dir
            except OSError as e:
                raise ConfigError(f'invalid linux.maskedPaths[{i}] "{p}": {oserror_text(e)}') from None
        if self.empty_tree is not None:
            os.close(self.empty_tree)  # attached above, or (no directory masked) freed
            self.empty_tree = None
        for i, p in enumerate(self.linux.get("readonlyPaths") or []):
            try:
                readonly_path(p)
            except OSError as e:
                raise ConfigError(f'invalid linux.readonlyPaths[{i}] "{p}": {oserror_text(e)}') \
                    from None
        if (self.cfg.get("root") or {}).get("readonly"):
            sc.mount_setattr("/", attr_set=sc.MOUNT_ATTR_RDONLY, flags=0)


def oserror_text(e: OSError) -> str:
    """An OSError of the set-up as the end of a one-line message."""
    return f"{e.strerror}: {e.filename}" if e.filename else str(e.strerror or e)


def check_proc_mount(m: dict, dest: str, kind: str | None, bind: bool) -> None:
    """runc's checkProcMount: nothing may hide the container's procfs. `dest` is the
    destination resolved inside the root. /proc itself takes only a procfs; inside it only
    the files lxcfs emulates may be covered."""
    if dest != "/proc" and not dest.startswith("/proc/"):
        return
    what = f"mount {m.get('source') or kind!r} on {m['destination']!r}"
    if dest == "/proc":
        if kind == "proc" or (bind and is_procfs(m.get("source") or "")):
            return
        raise ConfigError(f"{what}: /proc cannot be mounted over because it is not of type "
                          "proc")
    if dest not in PROC_MOUNTABLE:
        raise ConfigError(f"{what}: {dest} cannot be mounted because it is inside /proc")


def is_procfs(path: str) -> bool:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return sc.fstatfs_type(fd) == sc.PROC_SUPER_MAGIC
    finally:
        os.close(fd)


def mask_path(path: str, empty_tree: int | None = None,
              masked_dir: str | None = None) -> str | None:
    """Hide `path`: a file under /dev/null, a directory under an empty read-only one. That
    is a bind of `masked_dir` (a directory masked before), else `empty_tree` (a detached
    read-only clone of the zone's empty skeleton dir), else a read-only tmpfs (runc's way).
    -> the directory masked, or None."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISDIR(st.st_mode):
        sc.mount("/dev/null", path, None, sc.MS_BIND)
        return None
    if masked_dir is not None:
        sc.mount(masked_dir, path, None, sc.MS_BIND)
        sc.mount_setattr(path, attr_set=MASK_ATTRS, flags=0)
    elif empty_tree is not None:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            sc.move_mount_to_fd(empty_tree, fd)
        finally:
            os.close(fd)
    else:
        sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
    return path


def readonly_path(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except FileNotFoundError:
        return
    sc.mount_setattr(path, attr_set=sc.MOUNT_ATTR_RDONLY)
