"""The files of an image input, looked up by name (zoned.images.importer reads them): an
uncompressed image archive (TarDir) or a layout directory (Dir), both never leaving it."""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import IO, Any

from zoned.images.errors import ImageError

MAX_JSON = 16 << 20  # manifests and configs are kilobytes; refuse to load a "JSON bomb"


class TarDir:
    """Files of an (uncompressed) outer archive, looked up by name; symlinked members
    (docker-archive's <id>/layer.tar -> ../<digest>.tar) resolved inside the archive."""

    def __init__(self, path: str, shown: str | None = None) -> None:
        self.path = shown or path
        self.closers: list[Any] = []
        try:
            self.tar = tarfile.open(path, "r:")
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{path}: not a readable tar archive ({e})") from None

    def has(self, name: str) -> bool:
        return name in self.members

    def member(self, name: str) -> tarfile.TarInfo:
        m = self.members.get(name.removeprefix("./"))
        for _ in range(8):
            if m is None or not (m.issym() or m.islnk()):
                break
            target = m.linkname if m.islnk() else os.path.join(os.path.dirname(m.name), m.linkname)
            target = os.path.normpath(target).removeprefix("./")
            if target.startswith(("../", "/")):
                m = None
                break
            m = self.members.get(target)
        if m is None or not m.isreg():
            raise ImageError(f"{self.path}: the archive has no file {name!r}")
        return m

    def size(self, name: str) -> int:
        return self.member(name).size

    def open(self, name: str) -> IO[bytes]:
        f = self.tar.extractfile(self.member(name))
        assert f is not None
        return f

    def read(self, name: str) -> bytes:
        if self.size(name) > MAX_JSON:
            raise ImageError(f"{self.path}: {name} is too large")
        return self.open(name).read()

    def close(self) -> None:
        self.tar.close()
        for c in self.closers:
            c.close()


class Dir:
    """The same interface over an OCI layout (or unpacked docker-archive) directory. Every
    name is opened relative to the directory's fd by openat2 with RESOLVE_BENEATH (a
    symlink may point within the directory, never out of it: a layout naming /etc/shadow
    through a link put that file into the image) and O_NONBLOCK, and must be a regular
    file (a FIFO hung the import forever)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"cannot read {path}: {e.strerror}") from None

    def _open(self, name: str) -> int:
        from zoned.linux import syscalls as sc

        if name.startswith("/") or ".." in name.split("/") or "\0" in name:
            raise ImageError(f"{self.path}: refused path {name!r}")
        try:
            fd = sc.openat2(self.fd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, 0,
                            sc.RESOLVE_BENEATH | sc.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            why = "leads out of the directory" if e.errno == errno.EXDEV else e.strerror
            raise ImageError(f"{self.path}: {name}: {why}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImageError(f"{self.path}: {name}: not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def has(self, name: str) -> bool:
        try:
            os.close(self._open(name))
        except ImageError:
            return False
        return True

    def size(self, name: str) -> int:
        fd = self._open(name)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def open(self, name: str) -> IO[bytes]:
        fd = self._open(name)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def read(self, name: str) -> bytes:
        if self.size(name) > MAX_JSON:
            raise ImageError(f"{self.path}: {name} is too large")
        with self.open(name) as f:
            return f.read(MAX_JSON + 1)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
