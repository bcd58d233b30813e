"""The state store: one directory per container under one root (default /run/zoned).

Layout of <root>/<id>/ (runtime state only: the state root is a tmpfs on systemd hosts):
  lock         flock'ed by whoever changes the container (creator, start, kill, delete)
  state.json   runtime-spec state plus zoned's own fields, replaced atomically
  config.json  the OCI config the container was created from
  removing     exists once a removal has begun: `zoned gc` finishes it
  exec.fifo    exists while the container is "created"; `start` opens it to release init
  hosts resolv.conf hostname   bound into a networked container
  rootfs/      the mount point of an image container's overlay
The zone's persistent data (its overlay upper/ and work/ dirs, its log ctr.log) lives in
the data root instead, DATA/containers/<id>/ (zoned.storage says which data root belongs
to a state root); state.json records the zone's data dir as zoned.data.

Creating the directory is the name reservation (mkdir is atomic), so two zoned processes
cannot take the same name. Any zoned process can pick up any container from here: there is
no daemon.
"""
from __future__ import annotations

import errno
import os
import time

from zoned.errors import NotFound, ZonedError
from zoned.linux import jsonc, lastref
from zoned.linux.files import open_regular, rmtree, write_all
from zoned.linux.locks import acquire, try_acquire
from zoned.storage import DEFAULT_ROOT

REMOVING = "removing"  # in a container dir: its removal has begun (see Store.mark_removing)


class HeldLock:
    """A lock fd held until the `with` block ends (a class, not contextlib's decorator:
    contextlib imports functools and collections, ~1 ms of every zoned command)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def default_root() -> str:
    root = os.environ.get("ZONED_ROOT")
    if root:
        return root
    if os.geteuid() != 0:  # rootless: the user's own (zoned.rootless)
        from zoned.rootless import runtime_base

        return runtime_base()
    return DEFAULT_ROOT


def write_json_atomic(path: str, data: dict, *, in_place_if_full: bool = False) -> None:
    """Replace `path` with `data` as JSON: a temp file renamed over it, so a reader never
    sees half a file. A failed write removes its temp file (else a full disk leaves an
    empty *.tmp behind for ever).

    in_place_if_full: for files that only change under a lock and are only read under it
    (leases, the rules registry). When the disk is full and the new text is no longer than
    the old, overwrite the old file in place, padded with blanks to its old size: that
    needs no new blocks, so removing a lease or a published port works on a full disk.
    """
    payload = jsonc.dumps(data, separators=(",", ":")).encode()  # dumps: the C encoder
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        _write_tmp(tmp, payload)
        lastref.hold(path)  # the version replaced: freed after a CLI's exit (its trim)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not (in_place_if_full and e.errno in (errno.ENOSPC, errno.EDQUOT)
                and _overwrite_in_place(path, payload)):
            raise


def write_json_tmp(path: str, data: dict) -> str:
    """`data` as JSON in the temp file that write_json_atomic would rename over `path`;
    the caller renames it (os.replace) when the new version is to be seen. Removed again if
    the write fails."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        _write_tmp(tmp, jsonc.dumps(data, separators=(",", ":")).encode())
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return tmp


def _write_tmp(tmp: str, payload: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        # Blocks allocated now, not at writeback: ext4 (auto_da_alloc) otherwise starts
        # writing a renamed-over file's delayed blocks out inside rename(2) itself.
        os.posix_fallocate(fd, 0, len(payload))  # (json: never empty)
        write_all(fd, payload)
    finally:
        os.close(fd)
    from zoned.testhooks import hit

    hit("write:tmp")


def _overwrite_in_place(path: str, payload: bytes) -> bool:
    """Write `payload` over the start of `path`, blank-padded to the file's size (JSON
    allows trailing whitespace), in one pwrite into blocks the file already has."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if len(payload) > size:
            return False
        return os.pwrite(fd, payload + b" " * (size - len(payload)), 0) == size
    except OSError:
        return False
    finally:
        os.close(fd)


TMP_MAX_AGE = 600.0  # seconds: no tmp+rename writer takes this long


def remove_stale_tmp(directory: str, *, max_age: float = TMP_MAX_AGE,
                     dry_run: bool = False) -> list[str]:
    """The temp files (NAME.PID.tmp, as write_json_atomic and zoned's other tmp+rename
    writers name them) in `directory` whose writer is dead or that are older than
    `max_age`: a killed writer left them. Removed unless dry_run; returns their paths."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".tmp")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    out = []
    for e in entries:
        pid = e.name[:-4].rsplit(".", 1)[-1]
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            if pid.isdigit() and os.path.exists(f"/proc/{pid}") and \
                    now - e.stat(follow_symlinks=False).st_mtime < max_age:
                continue  # its writer may still be at work
            if not dry_run:
                os.unlink(e.path)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        out.append(e.path)
    return out


class Store:
    """The state root: reserve, lock, read and remove container directories."""

    def __init__(self, root: str | os.PathLike | None = None, data: str | None = None):
        self.root = os.fspath(root or default_root())
        self._data = data

    @property
    def data(self) -> str:
        """The data root of this state root (writable layers, logs, checkpoints)."""
        if self._data is None:
            from zoned.storage import data_root

            self._data = data_root(self.root)
        return self._data

    def data_dir(self, cid: str, state: dict | None = None) -> str:
        """A zone's data dir: the one its state.json records, else where it would be."""
        recorded = ((state or {}).get("zoned") or {}).get("data")
        if recorded:
            return recorded
        from zoned.storage import zone_dir

        return zone_dir(self.data, cid)

    def ensure(self) -> None:
        os.makedirs(self.root, mode=0o711, exist_ok=True)

    def _path(self, cid: str, *names: str) -> str:
        """A path in container `cid`'s directory. A name with a slash, "", or one of the
        root's own entries (a dot first: .trash-*, .cache, .zones) is no container's: a
        command given `../other-root/x` must not reach another state root's."""
        if not cid or "/" in cid or cid.startswith(".") or "\0" in cid:
            raise NotFound(f"container {cid!r} does not exist")
        return os.path.join(self.root, cid, *names)

    def dir(self, cid: str) -> str:
        return self._path(cid)

    def exists(self, cid: str) -> bool:
        try:
            return os.path.isdir(self._path(cid))
        except NotFound:
            return False

    def reserve(self, cid: str) -> str:
        """Atomically claim `cid`; raises if the name is in use."""
        d = self._path(cid)
        try:
            os.mkdir(d, 0o700)  # zoned.storage.share_with_zone_root says why
        except FileNotFoundError:
            self.ensure()
            return self.reserve(cid)
        except FileExistsError:
            raise ZonedError(f"container name {cid!r} is already in use") from None
        return d

    def ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root)
                          if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def lock(self, cid: str, *, blocking: bool = True) -> HeldLock:
        """Hold the container's lock (`with store.lock(cid) as fd:`). Raises NotFound if
        the container is gone."""
        d = self._path(cid)
        try:
            fd = acquire(os.path.join(d, "lock"), blocking=blocking)
        except FileNotFoundError:
            raise NotFound(f"container {cid!r} does not exist") from None
        except BlockingIOError:
            raise ZonedError(f"container {cid!r} is busy (locked by another zoned)") from None
        if not os.path.isdir(d):  # removed while we waited
            os.close(fd)
            raise NotFound(f"container {cid!r} does not exist")
        return HeldLock(fd)

    def try_lock(self, cid: str) -> int | None:
        """A non-blocking lock for gc: the fd, or None if someone holds it."""
        return try_acquire(self._path(cid, "lock"))

    def read_state(self, cid: str) -> dict:
        try:
            with open(self._path(cid, "state.json")) as f:
                return jsonc.load(f)
        except FileNotFoundError:
            if self.exists(cid):
                return {"id": cid, "status": "creating"}
            raise NotFound(f"container {cid!r} does not exist") from None
        except jsonc.JSONDecodeError:
            return {"id": cid, "status": "creating"}

    def write_state(self, cid: str, state: dict) -> None:
        write_json_atomic(self._path(cid, "state.json"), state)

    def prepare_state(self, cid: str, state: dict) -> str:
        """state.json's next version, written to its temp file now and seen once
        commit_state renames it: a creator writes it while the init sets up, and only
        the rename waits for the init."""
        return write_json_tmp(self._path(cid, "state.json"), state)

    def commit_state(self, cid: str, tmp: str) -> None:
        path = self._path(cid, "state.json")
        lastref.hold(path)
        os.replace(tmp, path)

    def record(self, cid: str, names: tuple[str, ...]) -> dict[str, bytes]:
        """The named files of a container's dir (relative paths) as they are now, those
        that exist: what record_again writes back (a restart whose new start failed)."""
        files = {}
        for name in names:  # (a VM's are in a dir its QEMU writes: no symlink, no FIFO)
            try:
                fd = open_regular(self._path(cid, name))
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP, errno.EINVAL):
                    continue
                raise
            with open(fd, "rb") as f:
                files[name] = f.read()
        return files

    def record_again(self, cid: str, files: dict[str, bytes]) -> None:
        """Claim `cid` again and write `files` (from record) into its new dir, state.json
        last: until then a reader sees a container being created, and gc one whose create
        did not finish. Raises as reserve if the name was taken meanwhile."""
        d = self.reserve(cid)
        for name in sorted(files, key=lambda n: n == "state.json"):
            path = os.path.join(d, name)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o644)
            with open(fd, "wb") as f:
                f.write(files[name])

    def read_config(self, cid: str) -> dict:
        with open(self._path(cid, "config.json")) as f:
            return jsonc.load(f)

    def mark_removing(self, cid: str) -> None:
        """Record (holding the container's lock) that its removal has begun, so that
        `zoned gc` finishes it if this process dies half-way. An empty file: creating it
        needs an inode but no data block, so it works on a full disk too."""
        try:
            os.close(os.open(self._path(cid, REMOVING),
                             os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # no inode left: go on without the record; the removal itself needs none

    def removing(self, cid: str) -> bool:
        """Whether a removal of `cid` began (and has not finished)."""
        return os.path.exists(self._path(cid, REMOVING))

    def trash_dirs(self) -> list[str]:
        """Container directories moved aside by a removal that did not finish."""
        try:
            return [e.path for e in os.scandir(self.root) if e.name.startswith(".trash-")]
        except FileNotFoundError:
            return []

    def tmp_dirs(self) -> list[str]:
        """Where zoned's tmp+rename writers put temp files under this root."""
        return [self.root, os.path.join(self.root, ".networks"),
                *(self.dir(cid) for cid in self.ids())]

    def remove(self, cid: str) -> None:
        """Remove the container directory and everything in it; idempotent."""
        try:
            d = self._path(cid)
        except NotFound:
            return
        if not os.path.exists(d):
            return
        # Move it aside first so a concurrent reader never sees a half-deleted container.
        trash = os.path.join(self.root, f".trash-{cid}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(d, trash)
        except FileNotFoundError:
            return
        from zoned.testhooks import hit

        hit("rm:trash")
        rmtree(trash)
