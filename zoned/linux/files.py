"""File-tree helpers with no policy, cheap to import (no shutil on the start path)."""
from __future__ import annotations

import errno
import os


def read_to_eof(fd: int, size: int = 4096) -> bytes:
    """Everything left to read from `fd` (a pipe whose writers report and close)."""
    out = b""
    while chunk := os.read(fd, size):
        out += chunk
    return out


def rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil on the hot path; tolerates vanished entries."""
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
                rmtree(e.path)
            else:
                os.unlink(e.path)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
