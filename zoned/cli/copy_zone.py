"""`zoned cp`'s zone side: a forked child of the CLI that enters a zone's files as root and
is then made unable to do anything but copy (zoned.cli.copy's docstring says why).

Everything the child uses is imported with this module, in the CLI before the fork: nothing
can be imported once the child is in the zone. enter() runs in the child."""
from __future__ import annotations

import os
import sys
import tarfile

import zoned.child.caps  # noqa: F401 - apply_user_and_caps imports it when it runs
import zoned.images.unpack  # noqa: F401 - the copy into a zone unpacks with it
from zoned.child import inroot
from zoned.child.rootfs import parse_options
from zoned.child.security import apply_user_and_caps, setgroups_denied
from zoned.errors import InvalidState
from zoned.linux import syscalls as sc
from zoned.linux.proc import proc_start_time
from zoned.oci.spec import ANN_LOWER

# What a copy needs: owners, modes and times of any file, reading and writing any file.
# Not CAP_SYS_CHROOT, CAP_SYS_ADMIN (mounts, fsopen of a procfs that would show the host's
# processes), CAP_SYS_PTRACE, CAP_MKNOD (a copy makes no device node) or any other.
FILE_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
             "CAP_FSETID"]


def stopped_zone_userns(rt, st: dict) -> int | None:
    """(In the CLI, before the fork) for a stopped rootless zone: an fd of a user namespace
    mapped as the zone's was (its config's uid/gid maps, through newuidmap as at its
    start), where this user is the zone's root and may mount its overlay; else None."""
    if st["status"] != "stopped" or os.geteuid() == 0:
        return None
    linux = rt.config(st["id"]).get("linux") or {}
    if not linux.get("uidMappings") or not linux.get("gidMappings"):
        raise InvalidState(f"cannot cp with {st['id']!r}: its config has no user namespace "
                           "maps")
    from zoned.runtime.handoff import idmap_userns

    return idmap_userns(linux)


def enter(rt, st: dict, userns: int | None = None) -> None:
    """(In the child) chroot into the zone's root, then confine this process: no name
    lookups, no imports, the capabilities of FILE_CAPS only and no_new_privs. userns: a
    stopped rootless zone's (stopped_zone_userns), joined first."""
    tarfile.pwd = tarfile.grp = None  # tarfile then records numeric owners only (no NSS)
    rootless = os.geteuid() != 0
    groups_denied = None  # (a running zone's root has a /proc that tells)
    if st["status"] == "stopped":
        if userns is not None:  # its root, with the capabilities a mount needs there
            sc.setns(userns, sc.CLONE_NEWUSER)
            os.close(userns)
            groups_denied = setgroups_denied()  # now: the stopped root has no /proc
        fd = _stopped_root(rt, st)
    else:
        fd = _running_root(st, join_userns=rootless)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)
    os.chroot(".")
    os.chdir("/")
    _no_imports()
    apply_user_and_caps({"user": {"uid": 0, "gid": 0}, "noNewPrivileges": True,
                         "capabilities": {k: FILE_CAPS for k in
                                          ("bounding", "effective", "permitted")}},
                        groups_denied)


def _running_root(st: dict, join_userns: bool) -> int:
    """An fd of the running zone's root (its init's, with the zone's mounts), opened
    before the init's start time is checked: a pid reused meanwhile is refused.
    join_userns (rootless): this process joins the zone's user namespace too, where it
    is the zone's root and has the capabilities a copy needs over the zone's files."""
    pid = st["pid"]
    fds = []
    try:
        for path in (f"/proc/{pid}/root",) + ((f"/proc/{pid}/ns/user",) if join_userns
                                              else ()):
            fds.append(os.open(path, (os.O_PATH | os.O_DIRECTORY if path.endswith("root")
                                      else os.O_RDONLY) | os.O_CLOEXEC))
    except OSError:
        pass
    if len(fds) != 1 + join_userns or \
            proc_start_time(pid) != (st.get("zoned") or {}).get("pid_start"):
        for fd in fds:
            os.close(fd)
        raise InvalidState(f"container {st['id']!r} stopped meanwhile")
    if join_userns:
        try:
            sc.setns(fds[1], sc.CLONE_NEWUSER)
        finally:
            os.close(fds[1])
    return fds[0]


def _stopped_root(rt, st: dict) -> int:
    """An fd of the stopped zone's root, assembled in a mount namespace of our own: its
    overlay (read-only for a --read-only zone) and its volumes, each bound where the
    zone's own path leads inside the root, and read-only where configured."""
    cfg = rt.config(st["id"])
    readonly = sc.MS_RDONLY if (cfg.get("root") or {}).get("readonly") else 0
    lower = (cfg.get("annotations") or {}).get(ANN_LOWER)
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if lower:
        data = st["zoned"]["data"]
        root = os.path.join(rt.store.dir(st["id"]), "rootfs")
        os.makedirs(root, exist_ok=True)
        sc.mount("overlay", root, "overlay", readonly,
                 f"lowerdir={lower},upperdir={data}/upper,workdir={data}/work")
    else:
        root = st.get("rootfs") or cfg["root"]["path"]
        if readonly:
            sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, root, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.get("mounts") or []:  # -v and --mount binds: cp reaches volumes too
            if m.get("type") == "bind" and os.path.isdir(m.get("source", "")):
                _bind(root_fd, m)
    except BaseException:
        os.close(root_fd)
        raise
    return root_fd


def _bind(root_fd: int, m: dict) -> None:
    """The volume onto an existing directory at its destination inside the root (none
    there: not bound, as the zone would have had it)."""
    flags = parse_options(m.get("options") or [])[0]
    try:
        names = inroot.resolve(root_fd, m["destination"])
        if not names:
            return
        t = inroot.target(root_fd, m["destination"], None, names)
    except (FileNotFoundError, NotADirectoryError):
        return
    with t:
        if not os.path.isdir(t.proc):
            return
        t.mount(m["source"], None, sc.MS_BIND | sc.MS_REC)
        if flags & sc.MS_RDONLY:
            t.reopen()
            t.mount(None, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)


def _no_imports() -> None:
    """From here on an import fails rather than load a module: the path finders would
    read the zone's files (its /usr/lib/python3.11, or a zoned source the pack does not
    vouch for)."""
    import _frozen_importlib as bootstrap

    sys.meta_path[:] = [bootstrap.BuiltinImporter, bootstrap.FrozenImporter]
    sys.path_importer_cache.clear()
    sys.path[:] = []
