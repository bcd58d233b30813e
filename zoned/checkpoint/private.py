"""Where a user-named checkpoint may be: somewhere nobody else can write or swap.

A checkpoint holds the zone's memory and env (secrets), and what restore makes of it is
decided by its contents: its config may bind the host's root into the zone, and CRIU runs
the dump's action script as root. A checkpoint directory or archive that another user can
write, or reach through a directory they can write (a symlink of theirs, a directory of
theirs renamed in), is theirs. So a checkpoint's path, and every directory above it, must
be owned by root or by us, and writable by no one else, unless sticky (/tmp): as
OpenSSH's StrictModes checks a key's path. podman's checkpoints are root's alone too
(0600 archives, 0700 storage).
"""
from __future__ import annotations

import os
import stat

from zoned.errors import ConfigError


def _owners() -> tuple[int, ...]:
    return (0, os.geteuid())


def _check_dir(d: str, path: str, what: str) -> None:
    """One directory on the way: root's or ours, and writable by no one else (root's
    group aside), unless sticky (then no one else can move our entries)."""
    st = os.stat(d)
    if st.st_uid not in _owners():
        raise ConfigError(f"{what} {path}: {d} belongs to uid {st.st_uid}, who could "
                          "swap the checkpoint: use a directory of root's or yours")
    writable = st.st_mode & 0o002 or st.st_mode & 0o020 and st.st_gid not in _owners() \
        or _acl_lets_others_write(d)
    if writable and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(f"{what} {path}: {d} is writable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}), who could swap the "
                          "checkpoint: use a directory only root or you can write")


def _acl_lets_others_write(d: str) -> bool:
    """Whether `d`'s POSIX ACL gives write to a named user or group other than root and
    us (the mode's group bits are then the ACL's mask, not a group's: setfacl -m u:X:rwx
    passed the mode check). Entries: u16 tag, u16 perm, u32 id after a u32 version."""
    import struct

    try:
        acl = os.getxattr(d, "system.posix_acl_access")
    except OSError:  # none (ENODATA), or no ACLs on this file system
        return False
    entries = [struct.unpack_from("=HHI", acl, off) for off in range(4, len(acl) - 7, 8)]
    mask = next((perm for tag, perm, _ in entries if tag == 0x10), 0o7)
    return any(tag in (0x02, 0x08) and perm & mask & 0o2 and ident not in _owners()
               for tag, perm, ident in entries)


def _symlinks(path: str) -> list[tuple[str, int, str]]:
    """Each symlink met resolving `path` (as the kernel would, component by component):
    (the link, its owner, the directory holding it). What does not exist yet ends it."""
    found: list[tuple[str, int, str]] = []
    todo = [c for c in os.path.abspath(path).split("/") if c]
    cur = "/"
    while todo:
        comp = todo.pop(0)
        if comp == ".":
            continue
        if comp == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, comp)
        try:
            st = os.lstat(nxt)
        except (FileNotFoundError, NotADirectoryError):
            break
        if not stat.S_ISLNK(st.st_mode):
            cur = nxt
            continue
        found.append((nxt, st.st_uid, cur))
        if len(found) > 40:
            raise ConfigError(f"{path}: too many levels of symbolic links")
        target = os.readlink(nxt)
        todo[:0] = [c for c in target.split("/") if c]
        if target.startswith("/"):
            cur = "/"
    return found


def check_parents(path: str, what: str) -> None:
    """Every directory above `path` (symlinks resolved) passes _check_dir, and so does
    every symlink on the way and the directory holding it: a link another user owns,
    or could replace, leads wherever they choose by the time the checkpoint is used."""
    for link, uid, holder in _symlinks(path):
        if uid not in _owners():
            raise ConfigError(f"{what} {path}: {link} is a symlink of uid {uid}, who could "
                              "point it elsewhere: give a path of root's or yours")
        _check_dir(holder, path, what)
    d = os.path.dirname(os.path.realpath(os.path.abspath(path)))
    while True:
        _check_dir(d, path, what)
        if d == "/":
            return
        d = os.path.dirname(d)


def check_own(path: str, what: str, *, directory: bool) -> None:
    """`path` itself: not a symlink, a directory (or a regular file), root's or ours, and
    writable by no one else; and check_parents."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such {'directory' if directory else 'file'}") \
            from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{what} {path}: a symlink; give the path it leads to")
    if directory and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path}: not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path}: not a regular file")
    if st.st_uid not in _owners():
        raise ConfigError(f"{what} {path}: belongs to uid {st.st_uid}; a checkpoint must "
                          "be root's or yours")
    if st.st_mode & 0o022:
        raise ConfigError(f"{what} {path}: writable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}); a checkpoint must not be")
    check_parents(path, what)


def check_dir_to_write(path: str, what: str) -> None:
    """A directory a checkpoint is written into (`--dir`, runc's `--image-path`): if it
    exists, check_own; if not (it is made 0700), check_parents."""
    if os.path.lexists(path):
        check_own(path, what, directory=True)
    else:
        check_parents(path, what)
