"""A cpio "newc" writer: the initramfs format the kernel unpacks (no cpio tool needed).

Only what an initramfs uses: directories, regular files, symlinks, the TRAILER!!! record.
The kernel accepts concatenated archives, which is how a VM's config is appended to the
shared, cached base archive (zoned.vm.initramfs).
"""
from __future__ import annotations

import stat

_MAGIC = b"070701"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class CpioWriter:
    """Collects entries in memory; bytes() gives the archive (with its trailer)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", uid: int = 0, gid: int = 0,
               mtime: int = 0, nlink: int = 1) -> None:
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, uid, gid, nlink, mtime, len(data), 0, 0, 0, 0,
                  len(raw), 0)
        self._ino += 1
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._parts += [header, raw, _pad4(len(header) + len(raw)), data, _pad4(len(data))]

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def __bytes__(self) -> bytes:
        trailer = CpioWriter()
        trailer._ino = 0
        trailer._entry("TRAILER!!!", 0, nlink=1)
        return b"".join(self._parts + trailer._parts)


def read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    """Parses newc archives (concatenated ones too) into (name, mode, data); for tests and
    for checking a cached archive."""
    out: list[tuple[str, int, bytes]] = []
    at = 0
    while at + 110 <= len(data):
        if data[at:at + 6] != _MAGIC:
            if data[at:at + 1] == b"\0":  # padding between archives
                at += 1
                continue
            raise ValueError(f"cpio: bad magic at {at}")
        f = [int(data[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_at = at + 110
        name = data[name_at:name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        body = data[data_at:data_at + size]
        at = data_at + size + (-size % 4)
        if name != "TRAILER!!!":
            out.append((name, mode, body))
    return out
