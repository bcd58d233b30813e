"""File-tree helpers with no policy, cheap to import (no shutil on the start path)."""
from __future__ import annotations

import errno
import os

from zoned.linux.lastref import hold

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported on the start path
    from typing import Callable, Iterator


def read_to_eof(fd: int, size: int = 4096) -> bytes:
    """Everything left to read from `fd` (a pipe whose writers report and close)."""
    out = b""
    while chunk := os.read(fd, size):
        out += chunk
    return out


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WALK_TRIES = 3  # rmtree's walks of one tree whose directories someone moves meanwhile


def rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil on the hot path; tolerates vanished entries.
    What it removes is handed to zoned.linux.lastref first (freed after a CLI's exit).
    A symlink at `path` is removed itself, never the tree it points to (scandir would
    follow it: a link planted in a state root emptied its target). Iterative and relative
    to directory fds: a tree deeper than Python's recursion limit or PATH_MAX goes too."""
    rmtree_at(None, path)


def rmtree_at(dir_fd: int | None, name: str) -> None:
    """rmtree of `name` relative to dir_fd (None: the working directory), never following
    a symlink: one at `name` is unlinked itself, one inside the tree is unlinked too. A
    directory of the tree moved elsewhere meanwhile (by a zone still writing a volume)
    stops the walk there (walk) and it starts again from the top, WALK_TRIES times."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        _hold_at(dir_fd, name)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        return
    os.close(fd)

    def emptied(parent: int, child: str) -> None:
        _hold_at(parent, child)
        try:
            os.rmdir(child, dir_fd=parent)
        except FileNotFoundError:
            pass

    for attempt in range(WALK_TRIES):
        try:
            _empty(name, dir_fd, emptied)
            break
        except OSError as e:  # a directory of it moved meanwhile (walk never follows it
            if e.errno != errno.ESTALE or attempt == WALK_TRIES - 1:  # out): from the top
                raise
    if dir_fd is None:
        _rmdir_path(name)
    else:
        emptied(dir_fd, name)


def _empty(name: str, dir_fd: int | None, emptied: Callable[[int, str], None]) -> None:
    """Remove everything below `name` (rmtree_at's walk)."""
    for fd, _parts, entries in walk(name, dir_fd=dir_fd, leave=emptied, one_fs=True):
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                continue
            _hold_at(fd, e.name)
            try:
                os.unlink(e.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:  # replaced by a directory meanwhile: left
                pass


def _rmdir_path(path: str) -> None:
    hold(path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _hold_at(dir_fd: int | None, name: str) -> None:
    hold(name, dir_fd)


def fd_path(dir_fd: int, name: str = "") -> str:
    """A path naming `name` in the directory dir_fd is open on, for the calls that take no
    dir_fd (xattrs, lstat): the fd's magic link, then `name`, not followed; ""
    names the directory itself ("/." : the bare magic link would be the link, not it)."""
    return f"/proc/self/fd/{dir_fd}/{name or '.'}"


def walk(top: str, dir_fd: int | None = None,
         leave: Callable[[int, str], None] | None = None, one_fs: bool = False,
         ) -> Iterator[tuple[int, list[str], list[os.DirEntry]]]:
    """Every directory of the tree at `top` (relative to dir_fd), top-down, as (fd, parts,
    entries): an fd open on it (valid until the next step), its path components below
    top, and its entries (os.DirEntry, stat relative to the fd). No symlink is followed
    and no path is built, so depth is bounded by neither PATH_MAX nor recursion: only
    one directory fd is open at a time, and the walk goes back up by ".." after checking
    it is the directory it came from (a tree moved meanwhile raises, never escapes).
    leave(parent_fd, name) is called after a directory below top was walked (rmtree's
    rmdir). Sorting `entries` in place (as os.walk's dirnames) sets the order subdirs are
    walked in. Entries that vanish meanwhile are skipped. one_fs: a mount point (a mount
    left there, a bind of the same file system too) is not walked: rmtree's rmdir then
    fails EBUSY, rather than emptying what is mounted, maybe a host directory."""
    descend = _open_below if one_fs else _open_dir
    fd = os.open(top, DIR_FLAGS, dir_fd=dir_fd)
    parts: list[str] = []
    stack: list[tuple[tuple[int, int], list[str]]] = []
    try:
        while True:
            st = os.fstat(fd)
            with os.scandir(fd) as it:
                entries = list(it)
            yield fd, parts, entries
            subdirs = []
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        subdirs.append(e.name)
                except OSError:
                    pass
            subdirs.reverse()
            stack.append(((st.st_dev, st.st_ino), subdirs))
            while True:  # to the next directory: down into a pending one, or up
                ident, pending = stack[-1]
                if pending:
                    name = pending.pop()
                    try:
                        nfd = descend(fd, name)
                    except OSError as e:
                        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                            continue  # gone, replaced by a file or a link, a mount point
                        raise
                    os.close(fd)
                    fd = nfd
                    parts.append(name)
                    break
                stack.pop()
                if not stack:
                    return
                pfd = os.open("..", DIR_FLAGS, dir_fd=fd)
                pst = os.fstat(pfd)
                os.close(fd)
                fd = pfd
                if (pst.st_dev, pst.st_ino) != stack[-1][0]:
                    raise OSError(errno.ESTALE, "directory moved during the walk",
                                  "/".join(parts))
                name = parts.pop()
                if leave is not None:
                    leave(fd, name)
    finally:
        os.close(fd)


def _open_dir(fd: int, name: str) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=fd)


def _open_below(fd: int, name: str) -> int:
    """_open_dir, failing EXDEV at a mount point (openat2's RESOLVE_NO_XDEV: st_dev
    cannot tell a bind of the same file system)."""
    from zoned.linux import syscalls as sc

    return sc.openat2(fd, name, DIR_FLAGS, 0, sc.RESOLVE_NO_XDEV | sc.RESOLVE_NO_SYMLINKS)


def write_procfs(path: str, text: str) -> None:
    """Write a file of a zone's /proc (a sysctl, oom_score_adj, the time offsets), never one
    its rootfs put there when no /proc is mounted: not followed, not made, not waited on
    (a FIFO), refused unless it is procfs's."""
    from zoned.linux import syscalls as sc

    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if sc.fstatfs_type(fd) != sc.PROC_SUPER_MAGIC:
            raise OSError(errno.EINVAL, "not a file of procfs (is /proc mounted?)", path)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def proc_fd_dir() -> int:
    """/proc/self/fd of the procfs at /proc (a zone's own, after pivot_root), to reopen an fd
    through later; OSError if /proc is no procfs (then it is the rootfs's own files)."""
    from zoned.linux import syscalls as sc

    fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if sc.fstatfs_type(fd) != sc.PROC_SUPER_MAGIC:
        os.close(fd)
        raise OSError(errno.EINVAL, "not procfs", "/proc")
    return fd


def reopen_fd(dir_fd: int, fd: int, flags: int) -> int:
    """`fd` (an O_PATH one: exec.fifo's) opened again with `flags` through proc_fd_dir's
    `dir_fd`, checked to be that very file."""
    new = os.open(str(fd), flags, dir_fd=dir_fd)
    want, got = os.fstat(fd), os.fstat(new)
    if (want.st_dev, want.st_ino) != (got.st_dev, got.st_ino):
        os.close(new)
        raise OSError(errno.ENXIO, "not the file it was", f"/proc/self/fd/{fd}")
    return new


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Every byte of `data` to `fd` (a blocking one: a pipe, a file), however many writes
    that takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def seal_filled(fd: int, data: bytes, mode: int | None = None) -> int:
    """Fill a fresh memfd (made with MFD_ALLOW_SEALING) with `data`, rewind it, chmod it to
    `mode` if given, and seal it against any change (write, grow, shrink, more seals), so
    that what a reader finds there is what was written. Returns fd; closes it on failure."""
    import fcntl

    try:
        write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        if mode is not None:
            os.fchmod(fd, mode)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                    fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str) -> int:
    """An fd to read `path` if it is a regular file, where someone else may have put
    something else under that name: a symlink is not followed (zoned is root: it would
    read the file it names), a FIFO neither blocks nor is taken. Raises OSError: ENOENT
    as usual, ELOOP for a symlink, EINVAL for anything but a regular file."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def new_beside(path: str) -> tuple[int, str]:
    """A new temp file (fd, name) in `path`'s directory, to fill and then rename over
    `path`: mkstemp's (O_EXCL|O_NOFOLLOW, an unguessable name), with the mode open()
    would have given it (0666 less the umask). A fixed PATH.tmp in a directory others may
    write (/tmp) is a name they can plant first: a symlink the write would follow."""
    import tempfile

    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def replace_file(path: str, data: bytes) -> None:
    """Write `path` atomically through new_beside(): readers see the old or the new
    file, and a symlink at `path` is replaced, not written through."""
    fd, tmp = new_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it: a window in which
    another thread's files would be made with none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
