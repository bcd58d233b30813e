"""Paths inside a container's rootfs, resolved as if the rootfs were / and held open as fds.

A rootfs is untrusted: an image (or a bundle, or a shared volume) may hold symlinks such as
/etc/hostname -> /n/../../../tmp/x or /dev/fuse -> /etc/passwd. zoned creates, replaces
and mounts onto paths in it as root, before pivot_root, so a path string joined onto the
rootfs and handed to open/mkdir/mknod/mount would follow those links onto the host. Here:

- resolve() walks a path component by component from an fd of the root, with O_NOFOLLOW
  and readlinkat, so symlinks are followed inside the root and `..` stops at it. Components
  that do not exist yet act as plain directories (filepath-securejoin's rule, as runc).
- target() then opens each component of that canonical path with openat2
  (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), creating missing ones one
  at a time: a symlink swapped in after resolve() makes it fail rather than be followed.
- The result is a Target: an O_PATH fd plus its parent's fd and name. Mounts go through
  /proc/self/fd/N (no path re-walk), and a mount's new root is reopened by name from the
  parent's fd.
"""
from __future__ import annotations

import errno
import os
import stat

from zoned.linux import syscalls as sc

_MAX_SYMLINKS = 40  # the kernel's limit (MAXSYMLINKS)
_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_STEP = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def resolve(root_fd: int, path: str) -> list[str]:
    """The components of `path` inside the root `root_fd`, every symlink in the existing
    part followed inside the root (an absolute target restarts at the root, `..` never goes
    above it). Past the first missing component the rest is lexical: names are kept, `..`
    drops the previous one. The returned names contain no `.`, `..` or empty names."""
    todo = split(path)
    done: list[str] = []
    fds = [root_fd]  # fds[i]: O_PATH fd of done[:i], while that part exists
    hops = 0
    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                    if len(fds) > len(done) + 1:
                        os.close(fds.pop())
                continue
            if len(fds) <= len(done):  # below a missing component: lexical
                done.append(part)
                continue
            try:
                fd = os.open(part, _NOFOLLOW, dir_fd=fds[-1])
            except FileNotFoundError:
                done.append(part)
                continue
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                try:
                    target = os.readlink(part, dir_fd=fds[-1])
                finally:
                    os.close(fd)
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                    done = []
                todo = split(target) + todo
                continue
            done.append(part)
            fds.append(fd)
    finally:
        for fd in fds[1:]:
            os.close(fd)
    return done


def secure_join(root: str, path: str) -> str:
    """`root`/`path` with symlinks resolved as if `root` were / (see resolve()). For code
    that needs a path string; anything that writes into a rootfs should use target()."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.path.join(root, *resolve(fd, path))
    finally:
        os.close(fd)


def _step(dir_fd: int, name: str, flags: int = 0) -> int:
    """Open one component beneath `dir_fd`, never through a symlink."""
    return sc.openat2(dir_fd, name, _NOFOLLOW | flags, 0, _STEP)


class Target:
    """A path in the rootfs, held open: `fd` (O_PATH) and, except for the root itself, the
    fd of its parent directory and its name there."""

    def __init__(self, fd: int, parent: int | None, name: str | None, path: str):
        self.fd, self.parent, self.name, self.path = fd, parent, name, path

    @property
    def proc(self) -> str:
        """A path that is this very file (for mount(2) and friends): no re-walk."""
        return f"/proc/self/fd/{self.fd}"

    def mount(self, source: str | None, fstype: str | None = None, flags: int = 0,
              data: str | None = None) -> None:
        """mount(2) onto this very file; errors name its path inside the root."""
        try:
            sc.mount(source, self.proc, fstype, flags, data)
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from None

    def reopen(self) -> None:
        """After a mount onto this target, point at the new mount's root (the old fd still
        names the directory underneath)."""
        if self.parent is None:
            raise OSError(errno.EINVAL, "cannot reopen the root", self.path)
        fd = _step(self.parent, self.name)
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        for fd in (self.fd, self.parent):
            if fd is not None:
                os.close(fd)
        self.fd = self.parent = None

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dir(root_fd: int, names: list[str], create: bool = True) -> int:
    """An O_PATH fd of the directory root/names..., made (0755) where missing."""
    fd = os.dup(root_fd)
    try:
        for name in names:
            try:
                nxt = _step(fd, name, os.O_DIRECTORY)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = _step(fd, name, os.O_DIRECTORY)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def target(root_fd: int, path: str, kind: str | None = "dir",
           names: list[str] | None = None) -> Target:
    """Open `path` inside the root, following its symlinks inside the root. Missing parent
    directories are made; a missing last component is made as `kind` ("dir" or "file"), or
    FileNotFoundError if kind is None. `names`: resolve(root_fd, path), if already known."""
    if names is None:
        names = resolve(root_fd, path)
    shown = "/" + "/".join(names)
    if not names:
        return Target(sc.openat2(root_fd, ".", os.O_PATH | os.O_CLOEXEC, 0, _STEP), None,
                      None, shown)
    parent = open_dir(root_fd, names[:-1], create=kind is not None)
    try:
        return Target(_open_last(parent, names[-1], kind), parent, names[-1], shown)
    except BaseException:
        os.close(parent)
        raise


def _open_last(parent: int, name: str, kind: str | None) -> int:
    try:
        return _not_symlink(_step(parent, name), name)
    except FileNotFoundError:
        if kind is None:
            raise
    try:
        if kind == "dir":
            os.mkdir(name, 0o755, dir_fd=parent)
        else:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o644, dir_fd=parent))
    except FileExistsError:
        pass  # made meanwhile: opened below, and refused there if it is a symlink
    return _not_symlink(_step(parent, name), name)


def _not_symlink(fd: int, name: str) -> int:
    """resolve() followed every symlink: one here now was swapped in since. Refuse it."""
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ELOOP, "became a symbolic link while zoned resolved it", name)
    return fd


def leaf(root_fd: int, path: str) -> tuple[int, str]:
    """(fd of the parent directory, last name) for making a new file at `path` in place of
    whatever is there: the parent is resolved inside the root (and made), the last component
    is not followed, so an existing symlink there is replaced, not written through."""
    parts = split(path)
    if not parts or parts[-1] == "..":
        raise OSError(errno.EINVAL, "not a path to a file", path)
    return open_dir(root_fd, resolve(root_fd, "/".join(parts[:-1]))), parts[-1]


def replace_node(root_fd: int, path: str, mode: int, device: int, uid: int = 0,
                 gid: int = 0) -> None:
    """mknod at `path` inside the root, replacing a file, node or symlink there (never a
    directory, never what a symlink points at)."""
    parent, name = leaf(root_fd, path)
    try:
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        old = os.umask(0)  # the mode exactly as configured
        try:
            os.mknod(name, mode, device, dir_fd=parent)
        finally:
            os.umask(old)
        if uid or gid:
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def file_target(root_fd: int, path: str) -> Target:
    """A regular file at `path` inside the root to mount onto (a device bind in a user
    namespace): a symlink in its place is replaced by the file, not followed."""
    parent, name = leaf(root_fd, path)
    try:
        try:
            fd = _step(parent, name)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                return Target(fd, parent, name, path)
            os.close(fd)
            os.unlink(name, dir_fd=parent)
        return Target(_open_last(parent, name, "file"), parent, name, path)
    except BaseException:
        os.close(parent)
        raise
