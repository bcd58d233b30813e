"""What an image's files cost and hold: its size, its setuid/setgid files and file
capabilities (shown by `zoned image inspect`), the bytes it shares with other images, and
the hard-linking of identical files across images that makes such sharing happen.

Images are unpacked rootfs dirs (every zone's read-only overlay lower, and the source of a
VM's squashfs), so two images from the same base would hold the same files twice. At
create time, a regular file identical to one in another image -- same bytes, mode, owner,
no xattrs -- is replaced by a hard link to it. Lowers are never written (overlayfs copies
up), so sharing an inode is safe; `zoned image rm` of one image leaves the other whole.
`zoned image ls` reports SHARED (bytes in inodes another image also links) and UNIQUE (what
removing the image would free).
"""
from __future__ import annotations

import hashlib
import os
import stat

MIN_SHARE = 4096  # smaller files are not worth a hash and a link


def scan(rootfs: str) -> dict:
    """Apparent size (hard links counted once), setuid/setgid files, file capabilities."""
    seen: set[tuple[int, int]] = set()
    size = 0
    setuid, caps = [], []
    for dirpath, _dirnames, filenames in os.walk(rootfs):
        for n in filenames:
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = "/" + os.path.relpath(path, rootfs)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                setuid.append(rel)
            try:
                if "security.capability" in os.listxattr(path, follow_symlinks=False):
                    caps.append(rel)
            except OSError:
                pass
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += st.st_size
    return {"size": size, "setuid": sorted(setuid), "capabilities": sorted(caps)}


def _files(rootfs: str):
    for dirpath, _dirs, filenames in os.walk(rootfs):
        for n in filenames:
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                yield path, st


def usage(rootfs_by_name: dict[str, str]) -> dict[str, tuple[int, int]]:
    """name -> (shared bytes, unique bytes) over the given images."""
    owners: dict[tuple[int, int], set[str]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for name, rootfs in rootfs_by_name.items():
        for _path, st in _files(rootfs):
            key = (st.st_dev, st.st_ino)
            owners.setdefault(key, set()).add(name)
            sizes[key] = st.st_size
    out = {name: [0, 0] for name in rootfs_by_name}
    for key, names in owners.items():
        for name in names:
            out[name][0 if len(names) > 1 else 1] += sizes[key]
    return {n: (v[0], v[1]) for n, v in out.items()}


def _sha(path: str) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _plain(path: str) -> bool:
    try:
        return not os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False


def share(rootfs: str, others: list[str]) -> int:
    """Hard-link rootfs's files to identical ones in the other images; returns bytes saved."""
    by_size: dict[int, list[tuple[str, os.stat_result]]] = {}
    for other in others:
        for path, st in _files(other):
            if st.st_size >= MIN_SHARE:
                by_size.setdefault(st.st_size, []).append((path, st))
    if not by_size:
        return 0
    hashes: dict[str, bytes] = {}
    used: set[int] = set()  # inodes linked to already: the image's own link structure stays
    saved = 0
    dev = os.stat(rootfs).st_dev
    for path, st in list(_files(rootfs)):
        cands = [(p, s) for p, s in by_size.get(st.st_size, ())
                 if s.st_dev == dev and (s.st_mode, s.st_uid, s.st_gid) == (st.st_mode, st.st_uid, st.st_gid)]
        if not cands or st.st_nlink > 1 or not _plain(path):
            continue
        try:
            mine = _sha(path)
        except OSError:
            continue
        for cand, cst in cands:
            if cand not in hashes:
                try:
                    hashes[cand] = _sha(cand)
                except OSError:  # removed by a concurrent `image rm`
                    hashes[cand] = b""
            if hashes[cand] == mine and cst.st_ino not in used and _plain(cand):
                used.add(cst.st_ino)
                tmp = path + ".zoned-share-tmp"
                try:
                    os.link(cand, tmp)
                except OSError:  # the other image went away meanwhile, or a name clash
                    break
                os.replace(tmp, path)
                saved += st.st_size
                break
    return saved
