"""Local images: read-only root filesystems built from YAML recipes, never pulled.

An image is a directory ``<store>/<name>/`` holding ``rootfs/`` (shared, unmodified, as the
overlayfs lower dir of every container using the image), ``image.json`` (config and metadata)
and ``recipe.yaml`` (the recipe it was built from, for provenance). The store defaults to
``/var/lib/zoned/images`` and can be moved with ``$ZONED_IMAGES``.

This module is the store: looking images up (on ``zoned run``'s start path), listing,
removing, pruning, and the build transaction. The recipe format, building a rootfs from a
recipe and exporting images live in zoned.images.recipes, imported only by the methods that need it.
Start-up time matters here: only cheap stdlib modules are imported at module level (no
dataclasses, pathlib, typing, subprocess, tarfile, shutil, tempfile...); tests/test_images.py
checks that. Paths are kept as strings, with pathlib.Path views for API compatibility.

Concurrency: a build happens in ``<store>/.build-<name>-XXXX`` and is renamed into place while
holding ``flock(<store>/.lock)``; a failed build deletes its temp dir, and a crashed one's is
collected by the next build/remove (each live temp dir is itself flock'ed by its builder).
Rebuild/remove renames the old image aside to ``.old-<name>-XXXX`` and deletes it -- unless an
overlay mount in any mount namespace still names it as a lowerdir: deleting a lower dir under
a running container makes every file it has not yet looked up vanish (measured: ``ls`` of the
merged dir goes empty), so such a dir is kept with a ``.inuse.json`` note and deleted by a later
build/remove/prune once those mounts are gone. Running containers therefore keep the image
they started with. Only overlay lowerdirs are detected, not plain bind mounts of the rootfs.
"""
from __future__ import annotations

import errno
import os
import stat

from zoned.images.errors import ImageError, ImageNotFound, valid_name
from zoned.linux import jsonc
from zoned.linux.locks import acquire, try_acquire

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: never imported at run time
    from pathlib import Path
    from typing import Any

DEFAULT_STORE = "/var/lib/zoned/images"
# The repository's images/ (this file is zoned/images/store.py).
RECIPES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "images")


class Image:
    """A built image as found in the store; its rootfs must be treated as read-only.

    A plain class rather than a dataclass: importing dataclasses (and with it inspect) costs
    ~5 ms, and pathlib ~3 ms, on every ``zoned run``, which only needs ``rootfs_dir`` and
    ``config``. Paths are stored as strings (``image_dir``, ``rootfs_dir``); ``path`` and
    ``rootfs`` are pathlib.Path views created on access, so pathlib is imported only by
    callers that use them.
    """

    __slots__ = ("name", "image_dir", "rootfs_dir", "config", "created", "size")

    def __init__(self, name: str, path: str | os.PathLike, rootfs: str | os.PathLike,
                 config: dict[str, Any], created: str = "", size: int = 0) -> None:
        self.name = name
        self.image_dir = os.fspath(path)  # <store>/<name>
        self.rootfs_dir = os.fspath(rootfs)  # <store>/<name>/rootfs: the overlay lower dir
        self.config = config
        self.created = created  # ISO 8601, UTC
        self.size = size  # bytes of the rootfs (apparent size, hardlinks counted once)

    @property
    def path(self) -> Path:
        from pathlib import Path

        return Path(self.image_dir)

    @property
    def rootfs(self) -> Path:
        from pathlib import Path

        return Path(self.rootfs_dir)

    def _key(self) -> tuple:
        return (self.name, self.image_dir, self.rootfs_dir, self.config, self.created, self.size)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return (f"Image(name={self.name!r}, path={self.image_dir!r}, rootfs={self.rootfs_dir!r}, "
                f"config={self.config!r}, created={self.created!r}, size={self.size!r})")


def find_recipe(name: str) -> Path:
    """Recipe file for a bare image name: ``$ZONED_RECIPES/<name>.yaml`` first, so users can
    add or override images, then the repository's ``images/`` directory."""
    from pathlib import Path

    if not valid_name(name):
        raise ImageError(f"invalid image name {name!r} (use lowercase letters, digits, '_', '.', '-')")
    dirs = [Path(d) for d in [os.environ.get("ZONED_RECIPES")] if d] + [Path(RECIPES_DIR)]
    for d in dirs:
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    raise ImageError(f"no recipe for image {name!r} (looked for {name}.yaml in: {', '.join(map(str, dirs))})")


# ---------------------------------------------------------------- path helpers (no pathlib)


def _norm(p: str) -> str:
    """p spelled as str(pathlib.Path(p)) spells it (no empty or '.' components, no trailing
    '/', '..' kept), so the paths handed out -- e.g. overlay lowerdirs -- stay as they were."""
    if "//" not in p and "/." not in p and not p.startswith(".") and not (len(p) > 1 and p.endswith("/")):
        return p or "."
    lead = "//" if p[:2] == "//" and p[:3] != "///" else "/" if p[:1] == "/" else ""
    return lead + "/".join(c for c in p.split("/") if c and c != ".") or "."


def _join(d: str, name: str) -> str:
    """pathlib's ``Path(d) / name`` for a normalized d and a single component name."""
    if d == ".":
        return name
    return d + name if d.endswith("/") else d + "/" + name


_IGNORED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _mode_of(path: str) -> int:
    """st_mode, or 0 where pathlib's is_dir()/is_file() would answer False; other errors
    (e.g. EACCES) propagate as they do from pathlib."""
    try:
        return os.stat(path).st_mode
    except OSError as e:
        if e.errno not in _IGNORED_ERRNOS:
            raise
        return 0
    except ValueError:
        return 0


def _is_dir(path: str) -> bool:
    return stat.S_ISDIR(_mode_of(path))


def _is_file(path: str) -> bool:
    return stat.S_ISREG(_mode_of(path))


# ---------------------------------------------------------------- in-use detection


def _overlay_mounts() -> list[tuple[int, int, list[str]]]:
    """(mount-ns inode, mount id, lowerdirs) of every overlay mount in every mount namespace:
    containers mount their rootfs in their own namespace, invisible in ours."""
    from zoned.linux import mountinfo

    out = []
    seen: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if ns in seen:
                continue
            mounts = mountinfo.read(pid)
        except OSError:
            continue
        seen.add(ns)
        for m in mounts:
            if m.fstype != "overlay":
                continue
            lowers = []
            for opt in m.super_options:
                key, _, val = opt.partition("=")
                if key.startswith("lowerdir"):  # lowerdir= and lowerdir+=
                    lowers += [v for v in val.split(":") if v]
            out.append((ns, m.mount_id, lowers))
    return out


def _mounts_using(rootfs: str) -> list[list[int]]:
    names = {rootfs, os.path.realpath(rootfs)}
    return [[ns, mid] for ns, mid, lowers in _overlay_mounts() if names.intersection(lowers)]


def _mounts_alive(records: list[list[int]], rootfs: str) -> bool:
    """Whether any recorded mount still exists; the lowerdir must match too, because mount
    ids are recycled and the namespace's other overlays could take a freed one."""
    current = {(ns, mid) for ns, mid, lowers in _overlay_mounts() if rootfs in lowers}
    return any((ns, mid) in current for ns, mid in records)


# ---------------------------------------------------------------- the store


class _StoreLock:
    """flock on <store>/.lock: exclusive for renames, shared for readers. Readers that can't
    create the lock file (read-only store) go without: renames are still atomic."""

    __slots__ = ("path", "shared", "fd")

    def __init__(self, path: str, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = acquire(self.path, shared=self.shared, mode=0o644)
        except OSError:
            if not self.shared:
                raise

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class ImageStore:
    """Images under one directory; safe to use from several processes at once."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if not root and not os.environ.get("ZONED_IMAGES") and os.geteuid() != 0:
            from zoned.rootless import images_dir  # rootless: the user's own store

            root = images_dir()
        self.root_dir = _norm(os.fspath(root or os.environ.get("ZONED_IMAGES") or DEFAULT_STORE))

    @property
    def root(self) -> Path:
        """The store directory as a pathlib.Path (``root_dir`` is the same as a str)."""
        from pathlib import Path

        return Path(self.root_dir)

    # -- reading

    def get(self, name: str) -> Image:
        """The image called name, or ImageNotFound telling how to build it."""
        if not valid_name(name):
            raise ImageError(f"invalid image name {name!r}")
        with self.lock(shared=True):
            return self.read_unlocked(name)

    def list(self) -> list[Image]:
        """All images, sorted by name; half-written or foreign entries are skipped."""
        if not _is_dir(self.root_dir):
            return []
        with self.lock(shared=True):
            return self.list_unlocked()

    def list_unlocked(self) -> list[Image]:
        """list() for a caller that holds lock(shared=True)."""
        out = []
        for n in sorted(os.listdir(self.root_dir)):
            if valid_name(n) and _is_file(_join(_join(self.root_dir, n), "image.json")):
                try:
                    out.append(self.read_unlocked(n))
                except ImageError:
                    pass
        return out

    def read_unlocked(self, name: str) -> Image:
        """Image `name` as its image.json says, for a caller that holds lock(shared=True)
        across this read and its use of the image's files (get() takes the lock itself)."""
        path = _join(self.root_dir, name)
        meta_file = path + "/image.json"
        if not _is_file(meta_file):
            raise ImageNotFound(f"image {name!r} not found (build it with: zoned image build {name})")
        try:
            with open(meta_file) as f:
                meta = jsonc.loads(f.read())
            return Image(name=name, path=path, rootfs=path + "/rootfs", config=meta["config"],
                         created=meta.get("created", ""), size=int(meta.get("size", 0)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(f"image {name!r} is damaged ({meta_file}: {e}); rebuild it") from None

    # -- writing

    def build(self, recipe: str | Path) -> Image:
        """Build (or rebuild) an image from a recipe file path or a bare recipe name.
        A string counts as a path if it contains '/' or ends in .yaml/.yml."""
        import shutil
        from pathlib import Path

        from zoned.images.recipes import build_rootfs, load_recipe

        s = str(recipe)
        if isinstance(recipe, Path) or "/" in s or s.endswith((".yaml", ".yml")):
            path = Path(recipe)
        else:
            path = find_recipe(s)
        r = load_recipe(path)  # validate before creating anything

        def fill(tmp: Path, rootfs: Path) -> dict:
            scratch = tmp / ".scratch"
            scratch.mkdir()
            debs = build_rootfs(r, rootfs, scratch, self)
            shutil.rmtree(scratch)
            shutil.copyfile(path, tmp / "recipe.yaml")
            os.chmod(tmp / "recipe.yaml", 0o644)
            return {"description": r.description, "config": r.config, "debs": debs,
                    "recipe": str(path.resolve()),
                    "history": [{"created_by": f"zoned image build {path.name}"
                                 + (f" ({r.bootstrap['tool']} {r.bootstrap['suite']})"
                                    if r.bootstrap else ""), "comment": r.description}]}

        return self.create(r.name, fill, what="building")

    def import_image(self, source: str, name: str | None = None, max_size: int | None = None,
                     progress: bool | None = None) -> Image:
        """Import a docker-archive, oci-archive, OCI layout dir or rootfs tarball (see
        zoned.images.importer); refused entries leave nothing behind."""
        from zoned.images.importer import (Progress, apply_layers, default_name, history,
                                           open_source, runtime_config)
        from zoned.images.unpack import Limits

        if name is not None and not valid_name(name):
            raise ImageError(f"invalid --name {name!r} (use lowercase letters, digits, '_', '.', '-')")
        limits = Limits(max_size)
        self._ensure_root()
        src = open_source(os.fspath(source), self.root_dir, limits)
        try:
            config = runtime_config(src.config, source)
            name = name or default_name(src, source)

            def fill(tmp: Path, rootfs: Path) -> dict:
                up = apply_layers(src, str(rootfs), limits,
                                  Progress(len(src.layers), progress))
                return {"config": config, "description": f"imported from {src.kind}",
                        "source": {"kind": src.kind, "path": os.path.abspath(source), "ref": src.ref,
                                   "layers": [layer.diff_id or layer.digest for layer in src.layers]},
                        "architecture": src.config.get("architecture", ""),
                        "history": history(src.config, up.layer_sizes)
                        or [{"created_by": f"zoned image import {os.path.basename(source)}",
                             "size": up.bytes}],
                                "skipped_xattrs": up.skipped_xattrs}

            return self.create(name, fill, what="importing")
        finally:
            src.close()

    def create(self, name: str, fill, what: str = "creating") -> Image:
        """The store's write transaction: fill(tmp, rootfs) populates a temp dir and returns
        image.json's fields; the dir is then renamed into place as image `name` (replacing
        an older one, kept while zones use it). Any failure deletes the temp dir."""
        import datetime
        import shutil
        import tempfile
        from pathlib import Path

        from zoned.images.sizes import scan, share

        self._ensure_root()
        with self.lock():
            self._collect_garbage()
            tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=self.root))
            busy = self._hold(tmp)  # marks the temp dir live for other processes' GC
        old = None
        try:
            os.chmod(tmp, 0o755)  # readable by containers' mapped users
            rootfs = tmp / "rootfs"
            rootfs.mkdir(mode=0o755)
            os.chmod(rootfs, 0o755)
            meta = fill(tmp, rootfs)
            with self.lock(shared=True):
                others = [i.rootfs_dir for i in self.list_unlocked() if i.name != name]
                shared = share(str(rootfs), others)
            created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            found = scan(str(rootfs))
            meta = {"name": name, "created": created, "size": found["size"],
                    "shared_at_create": shared, **meta,
                    "setuid": found["setuid"], "capabilities": found["capabilities"]}
            for h in meta.get("history") or []:
                h.setdefault("created", created)
                h.setdefault("size", meta["size"])
            (tmp / "image.json").write_text(jsonc.dumps(meta, indent=2) + "\n")
            os.chmod(tmp / "image.json", 0o644)
            target = self.root / name
            with self.lock():
                old = self._set_aside(name) if target.exists() else None
                try:
                    os.rename(tmp, target)
                except OSError:
                    if old:  # put the previous image back
                        os.rename(old[0], target)
                        os.close(old[2])
                    raise
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise ImageError(f"{what} image {name!r}: {e}") from None
            raise
        finally:
            os.close(busy)
        if old:
            self._retire(*old)
        return self.get(name)

    def _ensure_root(self) -> None:
        try:
            if not _is_dir(self.root_dir):
                os.makedirs(self.root_dir, exist_ok=True)
                os.chmod(self.root_dir, 0o755)  # not umask-dependent: containers' users traverse it
        except OSError as e:
            raise ImageError(f"cannot create image store {self.root_dir}: {e.strerror}") from None

    def meta(self, name: str) -> dict:
        """image.json of image `name`, as written (for inspect and history)."""
        img = self.get(name)
        try:
            with open(img.image_dir + "/image.json") as f:
                return jsonc.loads(f.read())
        except (OSError, ValueError) as e:
            raise ImageError(f"image {name!r} is damaged: {e}") from None

    def remove(self, name: str) -> None:
        """Delete an image; containers still running on it keep it until they stop."""
        if not valid_name(name):
            raise ImageError(f"invalid image name {name!r}")
        with self.lock():
            if not _is_file(_join(self.root_dir, name) + "/image.json"):
                raise ImageNotFound(f"image {name!r} not found")
            self._collect_garbage()
            old = self._set_aside(name)
        self._retire(*old)

    def prune(self) -> list[Path]:
        """Delete left-overs: crashed builds and retired images no container uses any more."""
        if not _is_dir(self.root_dir):
            return []
        from pathlib import Path

        with self.lock():
            return [Path(p) for p in self._collect_garbage()]

    def digest(self, name: str) -> str:
        """sha256 of the image's rootfs contents (paths, modes, owners, file data, link
        targets; not times), so two hosts that built the same recipe agree. A checkpoint's
        upper layer only makes sense over the very same lower layer: migration compares
        this before it freezes anything. Cached next to image.json (keyed by its mtime)."""
        import hashlib

        img = self.get(name)
        cache = img.image_dir + "/digest"
        stamp = str(os.stat(img.image_dir + "/image.json").st_mtime_ns)
        try:
            with open(cache) as f:
                have_stamp, value = f.read().split()
            if have_stamp == stamp:
                return value
        except (OSError, ValueError):
            pass
        h = hashlib.sha256()
        root = img.rootfs_dir
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for n in [""] + sorted(filenames + [d for d in dirnames
                                                if os.path.islink(_join(dirpath, d))]):
                path = _join(dirpath, n) if n else dirpath
                st = os.lstat(path)
                rel = os.path.relpath(path, root)
                h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
                if os.path.islink(path):
                    h.update(os.readlink(path).encode())
                elif n and os.path.isfile(path):
                    with open(path, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                h.update(b"\n")
        value = "sha256:" + h.hexdigest()
        try:
            tmp = f"{cache}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{stamp} {value}\n")
            os.rename(tmp, cache)
        except OSError:
            pass  # a read-only store: just not cached
        return value

    # -- exporting (zoned.images.recipes does the work)

    def export_rootfs_tar(self, name: str, dest_path: str | Path) -> Path:
        """Write the rootfs as a tarball (e.g. for `podman import`); .gz/.tgz compresses.
        Owners are numeric so the host's user names don't leak into the archive."""
        from zoned.images.recipes import export_rootfs_tar

        return export_rootfs_tar(self, name, dest_path)

    def export_bundle(self, name: str, dir: str | Path) -> Path:
        """Copy the rootfs to <dir>/rootfs for an OCI bundle (the runtime writes config.json);
        returns that path. A copy, not the shared lower dir, since OCI runtimes write to it."""
        from zoned.images.recipes import export_bundle

        return export_bundle(self, name, dir)

    # -- internals

    def lock(self, shared: bool = False) -> _StoreLock:
        """flock on <store>/.lock as a context manager (see _StoreLock): shared to read an
        image without a rebuild replacing it meanwhile, exclusive to rename."""
        return _StoreLock(_join(self.root_dir, ".lock"), shared)

    @staticmethod
    def _hold(path: str | os.PathLike) -> int:
        """flock a work dir so other processes' GC knows its owner is alive (works across
        pid namespaces and pid reuse, unlike pid files). Returns the fd to close."""
        return acquire(os.fspath(path), directory=True)

    def _set_aside(self, name: str) -> tuple[str, str, int]:
        """Rename <name> to .old-<name>-XXXX (caller holds the store lock)."""
        import tempfile

        aside = tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root_dir)
        src = _join(self.root_dir, name)
        fd = self._hold(src)
        os.rename(src, aside)  # replaces the empty placeholder dir atomically
        return aside, src + "/rootfs", fd

    def _retire(self, aside: str, old_rootfs: str, fd: int) -> None:
        """Delete a set-aside image unless running containers still have it as a lower dir."""
        try:
            users = _mounts_using(old_rootfs)
            if users:
                with open(os.path.join(aside, ".inuse.json"), "w") as f:
                    f.write(jsonc.dumps({"rootfs": old_rootfs, "mounts": users}))
            else:
                import shutil

                shutil.rmtree(aside, ignore_errors=True)
        finally:
            os.close(fd)

    def _collect_garbage(self) -> list[str]:
        """Remove unlocked .build-* (crashed builds) and unused .old-* dirs (caller holds the lock)."""
        import shutil

        removed = []
        for n in os.listdir(self.root_dir):
            if not n.startswith((".build-", ".old-")):
                continue
            p = _join(self.root_dir, n)
            fd = try_acquire(p, directory=True)
            if fd is None:  # its owner is alive and working on it
                continue
            try:
                note = p + "/.inuse.json"
                if _is_file(note):
                    try:
                        with open(note) as f:
                            info = jsonc.loads(f.read())
                        alive = _mounts_alive(info["mounts"], info["rootfs"])
                    except (OSError, ValueError, KeyError):
                        alive = False
                    if alive:
                        continue
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            finally:
                os.close(fd)
        return removed
