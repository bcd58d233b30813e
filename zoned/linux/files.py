"""File-tree helpers with no policy, cheap to import (no shutil on the start path)."""
from __future__ import annotations

import errno
import os
import stat

from zoned.linux.lastref import hold


def read_to_eof(fd: int, size: int = 4096) -> bytes:
    """Everything left to read from `fd` (a pipe whose writers report and close)."""
    out = b""
    while chunk := os.read(fd, size):
        out += chunk
    return out


def rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil on the hot path; tolerates vanished entries.
    What it removes is handed to zoned.linux.lastref first (freed after a CLI's exit).
    A symlink at `path` is removed itself, never the tree it points to (scandir would
    follow it: a link planted in a state root emptied its target)."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    _rmtree(path)


def _rmtree(path: str) -> None:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                _rmtree(e.path)
            else:
                hold(e.path)
                os.unlink(e.path)
        except FileNotFoundError:
            pass
    hold(path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def seal_filled(fd: int, data: bytes, mode: int | None = None) -> int:
    """Fill a fresh memfd (made with MFD_ALLOW_SEALING) with `data`, rewind it, chmod it to
    `mode` if given, and seal it against any change (write, grow, shrink, more seals), so
    that what a reader finds there is what was written. Returns fd; closes it on failure."""
    import fcntl

    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        if mode is not None:
            os.fchmod(fd, mode)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                    fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
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
