"""What an image's files cost and hold: its size, its setuid/setgid files and file
capabilities (shown by `zoned image inspect`), the bytes it shares with other images, and
the hard-linking of identical files across images that makes such sharing happen.

Images are unpacked rootfs dirs (every zone's read-only overlay lower, and the source of a
VM's squashfs), so two images from the same base would hold the same files twice. At
create time, a regular file identical to one in another image -- same bytes, mode, owner,
no xattrs -- is replaced by a hard link to it (see share: by fds, never through a
symlink). Lowers are never written (overlayfs copies up), so sharing an inode is safe; `zoned image rm` of one image leaves the other whole.
`zoned image ls` reports SHARED (bytes in inodes another image also links) and UNIQUE (what
removing the image would free).
"""
from __future__ import annotations

import hashlib
import os
import stat

from zoned.linux.files import fd_path, walk

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Iterator

MIN_SHARE = 4096  # smaller files are not worth a hash and a link
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a FIFO's wait
_TMP = ".zoned-share-tmp"


def _regular_files(rootfs: str) -> Iterator[tuple[int, str, list[str], os.stat_result]]:
    """(dir fd, name, parent components, lstat) of every regular file, by an iterative
    fd walk (zoned.linux.files.walk): no symlink followed, no depth limit."""
    for fd, parts, entries in walk(rootfs):
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield fd, e.name, parts, st


def scan(rootfs: str) -> dict:
    """Apparent size (hard links counted once), setuid/setgid files, file capabilities."""
    seen: set[tuple[int, int]] = set()
    size = 0
    setuid, caps = [], []
    for fd, name, parts, st in _regular_files(rootfs):
        rel = "/" + "/".join([*parts, name])
        if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            setuid.append(rel)
        try:
            if "security.capability" in os.listxattr(fd_path(fd, name), follow_symlinks=False):
                caps.append(rel)
        except OSError:
            pass
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        size += st.st_size
    return {"size": size, "setuid": sorted(setuid), "capabilities": sorted(caps)}


def usage(rootfs_by_name: dict[str, str]) -> dict[str, tuple[int, int]]:
    """name -> (shared bytes, unique bytes) over the given images."""
    owners: dict[tuple[int, int], set[str]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for name, rootfs in rootfs_by_name.items():
        for _fd, _name, _parts, st in _regular_files(rootfs):
            key = (st.st_dev, st.st_ino)
            owners.setdefault(key, set()).add(name)
            sizes[key] = st.st_size
    out = {name: [0, 0] for name in rootfs_by_name}
    for key, names in owners.items():
        for name in names:
            out[name][0 if len(names) > 1 else 1] += sizes[key]
    return {n: (v[0], v[1]) for n, v in out.items()}


def _sha(fd: int) -> bytes:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.digest()


def _open_plain(dir_fd: int, name: str, resolve: int = 0) -> tuple[int, os.stat_result] | None:
    """An fd on `name` and its fstat if it is a regular file with no xattrs, else None.
    Opened without following anything (openat2 RESOLVE_NO_SYMLINKS for a path in another
    image, O_NOFOLLOW for a name), so the file checked, hashed and linked is one inode."""
    try:
        if resolve:
            from zoned.linux import syscalls as sc

            fd = sc.openat2(dir_fd, name, _READ, 0, resolve)
        else:
            fd = os.open(name, _READ, dir_fd=dir_fd)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and not os.listxattr(fd):
            return fd, st
    except OSError:
        pass
    os.close(fd)
    return None


def share(rootfs: str, others: list[str]) -> int:
    """Hard-link rootfs's files to identical ones in the other images; returns bytes saved.
    Identical: same bytes, type (regular), mode, owner, device, and no xattrs on either.
    Everything is relative to directory fds and no symlink is followed: the other file is
    opened (never through a link), checked and hashed by fd, linked from that very fd
    (linkat of /proc/self/fd/N) to a temp name in the file's own directory fd, and renamed
    over it only if the name still holds the inode hashed. A directory swapped for a
    symlink meanwhile cannot make root replace or link a file outside the images."""
    by_size: dict[int, list[tuple[int, str, os.stat_result]]] = {}
    roots: list[int] = []
    try:
        for other in others:
            try:
                roots.append(os.open(other, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC))
                for _fd, name, parts, st in _regular_files(other):
                    if st.st_size >= MIN_SHARE:
                        by_size.setdefault(st.st_size, []).append(
                            (roots[-1], "/".join([*parts, name]), st))
            except OSError:  # removed by a concurrent `image rm`: not shared with
                continue
        return _share(rootfs, by_size) if by_size else 0
    finally:
        for fd in roots:
            os.close(fd)


def _share(rootfs: str, by_size: dict[int, list[tuple[int, str, os.stat_result]]]) -> int:
    from zoned.linux import syscalls as sc

    beneath = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS
    hashes: dict[tuple[int, int], bytes] = {}
    used: set[tuple[int, int]] = set()  # inodes linked to already: the image's own links stay
    saved = 0
    dev = os.stat(rootfs).st_dev
    for dfd, name, _parts, st in _regular_files(rootfs):
        cands = [(r, p, s) for r, p, s in by_size.get(st.st_size, ())
                 if s.st_dev == dev and (s.st_mode, s.st_uid, s.st_gid) == (st.st_mode, st.st_uid, st.st_gid)]
        if not cands or st.st_nlink > 1 or name == _TMP:
            continue
        mine = _open_plain(dfd, name)
        if mine is None:
            continue
        mfd, mst = mine
        try:
            if mst.st_nlink > 1 or (mst.st_dev, mst.st_ino) != (st.st_dev, st.st_ino):
                continue
            digest = _sha(mfd)
            for root, rel, _cst in cands:
                n = _link_one(dfd, name, mst, digest, root, rel, beneath, hashes, used)
                if n:
                    saved += n
                    break
        finally:
            os.close(mfd)
    return saved


def _link_one(dfd: int, name: str, mst: os.stat_result, digest: bytes, root: int, rel: str,
              resolve: int, hashes: dict, used: set) -> int:
    """Replace dfd/name (mst, hashing to digest) by a link to the file at rel in another
    image (root fd) if that is identical; returns the bytes saved (0 if not)."""
    theirs = _open_plain(root, rel, resolve)
    if theirs is None:
        return 0
    cfd, cst = theirs
    try:
        key = (cst.st_dev, cst.st_ino)
        if key in used or cst.st_dev != mst.st_dev or cst.st_size != mst.st_size \
                or (cst.st_mode, cst.st_uid, cst.st_gid) != (mst.st_mode, mst.st_uid, mst.st_gid):
            return 0
        if key not in hashes:
            hashes[key] = _sha(cfd)
        if hashes[key] != digest:
            return 0
        try:
            os.link(f"/proc/self/fd/{cfd}", _TMP, dst_dir_fd=dfd, follow_symlinks=True)
        except OSError:  # a name clash, or the file is gone meanwhile
            return 0
        try:
            linked = os.stat(_TMP, dir_fd=dfd, follow_symlinks=False)
            now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if (linked.st_dev, linked.st_ino) != key or now.st_ino != mst.st_ino:
                os.unlink(_TMP, dir_fd=dfd)
                return 0
            os.replace(_TMP, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            try:
                os.unlink(_TMP, dir_fd=dfd)
            except OSError:
                pass
            return 0
        used.add(key)
        return mst.st_size
    finally:
        os.close(cfd)
