"""Unpacking untrusted tar streams (image layers, rootfs tarballs) into an image's rootfs,
never writing outside it.

Python's tarfile does the parsing; every write is ours, made relative to a directory fd
opened component by component with O_NOFOLLOW, so no path the archive names -- nor any
symlink an earlier entry or layer planted -- can lead a write out of the rootfs:

- absolute names and names with a '..' component are refused (GNU tar would strip or keep
  them; an image has no business naming either);
- an entry whose *parent* path goes through a symlink is refused: layers made by
  docker/podman/buildah never do that (they record the real path), and following such a link
  "inside the root" would still let a crafted layer rewrite files it does not name;
- the last component is never followed: an existing entry there is removed first and files
  are created O_EXCL|O_NOFOLLOW, so writing "over" a symlink or a hard link replaces it;
- hard links must name an earlier entry inside the rootfs (same checks; a link to a
  symlink links the symlink itself, not what it points to);
- device nodes are refused (the runtime gives a zone its own /dev); FIFOs are fine;
- setuid/setgid bits and file capabilities are kept, as the image's author meant, but
  listed (``Unpacker.setuid``) so ``zoned image inspect`` shows them;
- only ``user.*`` and ``security.capability`` xattrs are applied: a layer's
  ``trusted.overlay.*`` would steer the overlay mount this rootfs becomes a lower of;
- with ``privileged=False`` (what comes out of a zone onto the host: ``zoned cp``) files
  keep their permission bits only (no setuid, setgid or sticky bit) and no xattr at all;
  with ``replace_dirs=False`` (a copy, either way) an entry never removes a directory to
  take its place, as docker's cp refuses to;
- the target directory is opened once, and every walk starts from that fd: a directory
  above it swapped for a symlink meanwhile changes nothing;
- the bytes written and the number of entries are capped (``Limits``), checked against
  each header before anything is written, so a small compressed layer cannot fill the disk;
  pax/GNU extended headers (read into memory whole by tarfile) are capped at 1 MiB.

OCI/docker whiteouts (``.wh.NAME`` deletes NAME from the layers below, ``.wh..wh..opq``
empties the directory of what the layers below put there) are applied when ``layered``.
Every refusal is an UnsafeArchive (an ImageError): one line naming the archive part and
the entry. The caller deletes the half-made rootfs.
"""
from __future__ import annotations

import os
import stat
import tarfile
from typing import IO, Callable

from zoned.images.errors import ImageError
from zoned.linux.files import rmtree_at

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_MAX_BYTES = 16 << 30  # $ZONED_IMAGE_MAX_SIZE or --max-size overrides
DEFAULT_MAX_ENTRIES = 2_000_000
PATH_MAX = 4096  # linux/limits.h, with its NUL: no path in a rootfs may need more
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
_XATTRS_KEPT = ("user.", "security.capability")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class UnsafeArchive(ImageError):
    """An archive entry that would escape the rootfs or break a limit: refused, one line."""


MAX_HEADER = 1 << 20  # a pax/GNU long-name header is read into memory whole: cap it


class _CappedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized extended headers before tarfile reads them into
    memory (a gzip of 4 GiB of one pax record is a few MiB: a memory bomb)."""

    _EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                 tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)

    def _proc_member(self, tarfile_):  # tarfile's documented hook: TarFile(tarinfo=...)
        if self.type in self._EXTENDED and self.size > MAX_HEADER:
            raise UnsafeArchive(f"an extended header of {self.size} bytes (at most {MAX_HEADER})")
        return super()._proc_member(tarfile_)


class Limits:
    """How much one import may write: bytes of file data and number of entries."""

    __slots__ = ("max_bytes", "max_entries")

    def __init__(self, max_bytes: int | None = None, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        env = os.environ.get("ZONED_IMAGE_MAX_SIZE")
        self.max_bytes = max_bytes if max_bytes is not None else (
            parse_size(env) if env else DEFAULT_MAX_BYTES)
        self.max_entries = max_entries


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes (binary units, as `zoned run --memory`)."""
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1 << (10 * ("KMGT".index(s[-1]) + 1))
        s = s[:-1]
    try:
        n = int(float(s) * mult)
    except ValueError:
        raise ImageError(f"invalid size {text!r} (use e.g. 512M, 4G)") from None
    if n <= 0:
        raise ImageError(f"invalid size {text!r}: must be positive")
    return n


def components(name: str) -> list[str]:
    """An archive name as path components inside the rootfs; refuses absolute and '..'."""
    if name.startswith("/"):
        raise ValueError("absolute path")
    if "\0" in name:
        raise ValueError("NUL byte in path")
    parts = [c for c in name.split("/") if c not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' in path")
    return parts


_ID_MAX = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown
_TIME_MAX = 2**40  # seconds either side of 1970: ~35000 years, far inside time_t


def _bad_header(m: tarfile.TarInfo) -> str:
    """Why a header's values (pax records can say anything: a NUL in a name, a uid of
    2**40, an mtime of 1e400 or nan, xattr values that are not base64) cannot be applied;
    "" if they can. Checked before anything is written: each is one line naming the entry,
    never an internal error from os.* halfway through."""
    import math

    if "\0" in m.linkname:
        return "NUL byte in link target"
    for what, v in (("uid", m.uid), ("gid", m.gid)):
        if not (isinstance(v, int) and 0 <= v <= _ID_MAX):
            return f"{what} {v!r} out of range"
    if not (isinstance(m.mtime, (int, float)) and math.isfinite(m.mtime)
            and abs(m.mtime) <= _TIME_MAX):
        return f"mtime {str(m.mtime)[:40]!r} out of range"
    for key, value in (m.pax_headers or {}).items():
        if key.startswith("LIBARCHIVE.xattr."):
            try:
                _b64(value.encode("utf-8", "surrogateescape"))
            except ValueError:
                return f"xattr {key[len('LIBARCHIVE.xattr.'):][:60]!r}: invalid base64"
        if key.startswith(_XATTR_PREFIXES) and "\0" in key:
            return "NUL byte in an xattr name"
    return ""


def _b64(raw: bytes) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error as e:
        raise ValueError(str(e)) from None


class Unpacker:
    """Applies tar streams, in order, to one rootfs directory (see the module doc)."""

    def __init__(self, rootfs: str, limits: Limits | None = None, layered: bool = True,
                 privileged: bool = True, replace_dirs: bool = True) -> None:
        self.rootfs = rootfs
        self.limits = limits or Limits()
        self.layered = layered
        self.privileged = privileged  # special mode bits and xattrs as the archive says
        self.replace_dirs = replace_dirs  # a file may take a directory's place (a layer)
        self._root_fd = -1  # the rootfs, opened once per stream (apply)
        self.bytes = 0  # file data written, all layers
        self.entries = 0
        self.setuid: set[str] = set()  # "/path" of setuid/setgid files and file capabilities
        self.skipped_xattrs = 0
        self.whiteouts = 0
        self.layer_sizes: list[int] = []  # bytes each layer wrote (filled by the importer)
        self.root = os.geteuid() == 0
        self._label = ""
        self._layer_paths: set[tuple[str, ...]] = set()
        self._dir_times: list[tuple[list[str], float]] = []

    # -- public

    def apply(self, fileobj: IO[bytes], label: str,
              rename: Callable[[tarfile.TarInfo], None] | None = None) -> None:
        """Unpack one (possibly compressed) tar stream; label names it in errors ("layer 2").
        rename: called on each entry before it is checked (zoned cp names the top)."""
        self._label = label
        self._layer_paths = set()
        self._dir_times = []
        self._root_fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*", tarinfo=_CappedTarInfo) as tar:
                for member in tar:
                    if rename is not None:
                        rename(member)
                    self._entry(tar, member)
            self._restore_dir_times()
        except UnsafeArchive as e:
            if str(e).startswith(label):
                raise
            raise UnsafeArchive(f"{label}: refused: {e}") from None
        except tarfile.TarError as e:
            raise ImageError(f"{label}: not a valid tar archive ({e})") from None
        except EOFError:
            raise ImageError(f"{label}: archive is truncated") from None
        finally:
            os.close(self._root_fd)
            self._root_fd = -1

    # -- one entry

    def _refuse(self, name: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self._label}: refused entry {name!r}: {why}")

    def _entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise self._refuse(m.name, f"more than {self.limits.max_entries} entries")
        try:
            parts = components(m.name)
        except ValueError as e:
            raise self._refuse(m.name, str(e)) from None
        if not parts:
            return  # "./": the rootfs itself keeps its own mode and owner
        if len(("/" + "/".join(parts)).encode("utf-8", "surrogateescape")) >= PATH_MAX:
            # no tool could reach it inside the zone, and os.walk & co. recurse per level
            raise self._refuse(m.name[:200] + "...", f"path longer than PATH_MAX ({PATH_MAX})")
        bad = _bad_header(m)
        if bad:
            raise self._refuse(m.name, bad)
        if m.ischr() or m.isblk():
            raise self._refuse(m.name, "device node (the runtime provides /dev)")
        base = parts[-1]
        if self.layered and base.startswith(WHITEOUT):
            return self._whiteout(m.name, parts)
        if m.isreg() and self.bytes + m.size > self.limits.max_bytes:
            raise self._refuse(m.name, f"unpacked size exceeds the limit of "
                                       f"{self.limits.max_bytes} bytes (--max-size)")
        dfd = self._parent(m.name, parts[:-1], create=True)
        try:
            self._layer_paths.add(tuple(parts))
            self._make(tar, m, dfd, base, "/" + "/".join(parts))
        except OSError as e:
            raise ImageError(f"{self._label}: entry {m.name!r}: {e.strerror}") from None
        finally:
            os.close(dfd)
        if m.isdir():
            self._dir_times.append((parts, m.mtime))

    def _parent(self, name: str, parts: list[str], create: bool | None) -> int:
        """An fd of the directory parts (relative to the rootfs), walked without following
        any symlink; missing directories are made (0755) if create, -1 if create is None."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self._root_fd)
        try:
            for i, c in enumerate(parts):
                try:
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create is None:  # a whiteout in a directory no layer made
                        os.close(fd)
                        return -1
                    if not create:
                        raise self._refuse(name, f"/{'/'.join(parts[:i + 1])} does not exist") from None
                    os.mkdir(c, 0o755, dir_fd=fd)
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                    os.fchmod(nfd, 0o755)  # whatever the umask
                except OSError:  # ELOOP/ENOTDIR: a symlink or a file is in the way
                    st = os.stat(c, dir_fd=fd, follow_symlinks=False)
                    where = "/" + "/".join(parts[:i + 1])
                    if stat.S_ISLNK(st.st_mode):
                        target = os.readlink(c, dir_fd=fd)
                        raise self._refuse(name, f"path goes through the symlink {where} -> {target}") from None
                    raise self._refuse(name, f"{where} is not a directory") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear(self, dfd: int, base: str, keep_dir: bool) -> bool:
        """Remove what is at base (never following it); True if a directory was kept."""
        try:
            st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            if not self.replace_dirs:
                raise UnsafeArchive(f"{self._label}: refused entry {base!r}: a directory "
                                    "is in its place")
            rmtree_at(dfd, base)  # iterative: a lower layer's deep tree is no RecursionError
        else:
            os.unlink(base, dir_fd=dfd)
        return False

    def _make(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dfd: int, base: str, path: str) -> None:
        mode = m.mode & (0o7777 if self.privileged else 0o777)
        if m.isdir():
            if not self._clear(dfd, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=dfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=dfd)
            try:
                self._meta(fd, m, mode, path)
            finally:
                os.close(fd)
        elif m.isreg():
            self._clear(dfd, base, keep_dir=False)
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
            try:
                src = tar.extractfile(m)
                left = m.size
                while left > 0 and src is not None:
                    chunk = src.read(min(_CHUNK, left))
                    if not chunk:
                        raise ImageError(f"{self._label}: entry {m.name!r} is truncated")
                    os.write(fd, chunk)  # a regular file: full writes
                    left -= len(chunk)
                self.bytes += m.size
                self._meta(fd, m, mode, path)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)
        elif m.issym():
            self._clear(dfd, base, keep_dir=False)
            os.symlink(m.linkname, base, dir_fd=dfd)
            if self.root:
                os.chown(base, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(base, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
        elif m.islnk():
            self._hardlink(m, dfd, base)
        elif m.isfifo():
            self._clear(dfd, base, keep_dir=False)
            os.mkfifo(base, 0o600, dir_fd=dfd)
            fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                self._meta(fd, m, mode, path)
            finally:
                os.close(fd)
        else:
            raise self._refuse(m.name, f"unsupported entry type {m.type!r}")

    def _meta(self, fd: int, m: tarfile.TarInfo, mode: int, path: str) -> None:
        """Owner, then mode (chown clears setuid bits), then the allowed xattrs."""
        if self.root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, mode)
        if mode & (stat.S_ISUID | stat.S_ISGID) and not m.isdir():
            self.setuid.add(path)
        for key, value in (m.pax_headers or {}).items() if self.privileged else ():
            prefix = next((p for p in _XATTR_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            attr = key[len(prefix):]
            if not attr.startswith(_XATTRS_KEPT) or (attr.startswith("security.") and not self.root):
                self.skipped_xattrs += 1
                continue
            raw = value.encode("utf-8", "surrogateescape")
            if prefix == "LIBARCHIVE.xattr.":
                raw = _b64(raw)  # (checked by _bad_header)
            try:
                os.setxattr(fd, attr, raw)
            except OSError:  # the store's filesystem has no user xattrs: not fatal
                self.skipped_xattrs += 1
                continue
            if attr == "security.capability":
                self.setuid.add(path)

    def _hardlink(self, m: tarfile.TarInfo, dfd: int, base: str) -> None:
        try:
            tparts = components(m.linkname)
        except ValueError as e:
            raise self._refuse(m.name, f"hard link target {m.linkname!r}: {e}") from None
        if not tparts:
            raise self._refuse(m.name, "hard link to the rootfs itself")
        tfd = self._parent(m.name, tparts[:-1], create=False)
        try:
            try:
                st = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise self._refuse(m.name, f"hard link target {m.linkname!r} does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise self._refuse(m.name, f"hard link to a directory {m.linkname!r}")
            if tparts == components(m.name):
                return
            self._clear(dfd, base, keep_dir=False)
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _whiteout(self, name: str, parts: list[str]) -> None:
        self.whiteouts += 1
        dfd = self._parent(name, parts[:-1], create=None)
        if dfd < 0:
            return
        try:
            if parts[-1] == OPAQUE:  # keep only what this layer put in the directory
                keep = {p[len(parts) - 1] for p in self._layer_paths
                        if len(p) >= len(parts) and list(p[:len(parts) - 1]) == parts[:-1]}
                for child in os.listdir(dfd):
                    if child not in keep:
                        self._clear(dfd, child, keep_dir=False)
            else:
                victim = parts[-1][len(WHITEOUT):]
                if victim in ("", ".", ".."):
                    raise self._refuse(name, "malformed whiteout")
                self._clear(dfd, victim, keep_dir=False)
        finally:
            os.close(dfd)

    def _restore_dir_times(self) -> None:
        """Directory mtimes last: creating their children changed them."""
        for parts, mtime in reversed(self._dir_times):
            try:
                dfd = self._parent("", parts[:-1], create=False)
            except ImageError:
                continue  # removed by a later whiteout of the same layer
            try:
                os.utime(parts[-1], (mtime, mtime), dir_fd=dfd, follow_symlinks=False)
            except OSError:
                pass
            finally:
                os.close(dfd)
