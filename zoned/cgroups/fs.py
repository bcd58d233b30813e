"""cgroupfs access shared by both drivers: reading and writing cgroup files, walking and
removing cgroup trees, and the CgroupError every failure becomes.

Files are read and written with os.open/os.read/os.write, one write() per value, because
cgroupfs takes each write() as one command (a buffered writer could split or merge them).
"""
from __future__ import annotations

import errno
import os
import time

from zoned.errors import ZonedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable


class CgroupError(ZonedError, OSError):
    """A cgroup operation that failed or a resource this host can't enforce. The message is
    one line naming the spec field and the cgroup file; it is an OSError too, so callers
    that treat cgroupfs like any file system keep working."""

    def __init__(self, message: str, err: int | None = None, *, field: str | None = None,
                 path: str | None = None):
        if err is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, err, message)
        self.message = message
        self.field = field
        self.path = path

    def __str__(self) -> str:
        return self.message


def logger():
    """The package's logger, made on first use (importing logging costs start-up time).
    One name for the whole package, "zoned.cgroups", as before it was split."""
    import logging

    return logging.getLogger("zoned.cgroups")


def read_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def write_file(path: str, value: str, *more: str) -> None:
    """Write `value`, then each of `more` with a write(2) of its own, through one open (a
    v1 devices list: the kernel takes one rule a write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for v in (value, *more):
            try:
                os.write(fd, v.encode())
            except OSError as e:
                e.written = v  # which one the kernel refused (write_field names it)
                raise
    finally:
        os.close(fd)


def read_if_exists(path: str) -> str | None:
    """The file's text, or None when it (or its cgroup) does not exist."""
    try:
        return read_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def parse_int(text: str | None) -> int | None:
    """A single-number file's value, None if unreadable."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_keyed(text: str | None) -> dict[str, int]:
    """A flat-keyed file (memory.stat, cpu.stat, memory.events, cgroup.events) as a dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def write_field(field: str, path: str, value: str, *more: str) -> None:
    """Write one cgroup file (`more`: as write_file), turning failures into a CgroupError
    naming field and file."""
    try:
        write_file(path, value, *more)
    except FileNotFoundError:
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            raise CgroupError(f"{field}: cgroup {d} does not exist (create() it first)",
                              errno.ENOENT, field=field, path=path) from None
        raise CgroupError(f"{field}: {path} does not exist (controller not available for "
                          "this cgroup on this host)", errno.ENOENT, field=field,
                          path=path) from None
    except OSError as e:
        value = getattr(e, "written", value)
        raise CgroupError(f"{field}: writing {value!r} to {path} failed: "
                          f"{os.strerror(e.errno or 0)}", e.errno, field=field,
                          path=path) from None


def make_despite_removals(make) -> None:
    """make(): a mkdir -p of cgroups, tried up to 3 times. An empty parent may be removed
    meanwhile (`zoned gc`, another state root's teardown): a mkdir below it then fails
    ENOENT, and a file of it written or read after its rmdir ENODEV (a removed cgroup's
    files stay open to us but dead)."""
    for attempt in range(3):
        try:
            make()
            return
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV) or attempt == 2:
                raise


def make_dir(path: str) -> bool:
    """mkdir of one cgroup: True if made, False if it was there; CgroupError naming it."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise CgroupError(f"create: mkdir {path} failed: {os.strerror(e.errno or 0)}",
                          e.errno, path=path) from None


def procs_below(d: str) -> set[int]:
    """PIDs in the cgroup directory `d` and every cgroup below it."""
    out: set[int] = set()
    stack = [d]
    while stack:
        cur = stack.pop()
        text = read_if_exists(os.path.join(cur, "cgroup.procs"))
        if text is None:
            continue
        out.update(int(p) for p in text.split())
        try:
            with os.scandir(cur) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def remove_tree(d: str, deadline: float) -> None:
    """rmdir a cgroup and its sub-cgroups, bottom-up, retrying EBUSY until `deadline`
    (a just-killed task can keep the cgroup busy for a moment). Missing is fine."""
    try:
        with os.scandir(d) as it:
            subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for s in subs:
        remove_tree(s, deadline)
    delay = 0.001
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"destroy: rmdir {d} failed: {os.strerror(e.errno or 0)}"
                                  + (" (processes still in it?)" if e.errno == errno.EBUSY
                                     else ""), e.errno, path=d) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll `cond` with a growing sleep; False if it is still false after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
