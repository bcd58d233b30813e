"""Local images: read-only root filesystems built from YAML recipes, never pulled.

An image is a directory ``<store>/<name>/`` holding ``rootfs/`` (shared, unmodified, as the
overlayfs lower dir of every container using the image), ``image.json`` (config and metadata)
and ``recipe.yaml`` (the recipe it was built from, for provenance). The store defaults to
``/var/lib/zoned/images`` and can be moved with ``$ZONED_IMAGES``.

This module is the store and its reading: looking images up (on ``zoned run``'s start
path) and listing. Writing (the build transaction, imports, removing, pruning, digests) is
zoned.images.store_write, which the methods that write import. The recipe format, building a
rootfs from a recipe and exporting images live in zoned.images.recipes.
Start-up time matters here: only cheap stdlib modules are imported at module level (no
dataclasses, pathlib, typing, subprocess, tarfile, shutil, tempfile...); tests/test_images.py
checks that. Paths are kept as strings, with pathlib.Path views for API compatibility.

Concurrency: a build happens in ``<store>/.build-<name>-XXXX`` and is renamed into place while
holding ``flock(<store>/.lock)``; a failed build deletes its temp dir, and a crashed one's is
collected by the next build/remove (each live temp dir's ``<dir>.lock`` is flock'ed by its
builder).
Rebuild/remove renames the old image aside to ``.old-<name>-XXXX`` and deletes it -- unless an
overlay mount in any mount namespace still names it as a lowerdir: deleting a lower dir under
a running container makes every file it has not yet looked up vanish (measured: ``ls`` of the
merged dir goes empty), so such a dir is kept with a ``.inuse.json`` note and deleted by a later
build/remove/prune once those mounts are gone. Running containers therefore keep the image
they started with. Only overlay lowerdirs are detected, not plain bind mounts of the rootfs.
"""
from __future__ import annotations

import os

from zoned.images.errors import ImageError, ImageNotFound, valid_name
from zoned.images.paths import is_dir, is_file, join_path, norm
from zoned.linux import jsonc
from zoned.linux.locks import acquire

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: never imported at run time
    from pathlib import Path
    from typing import Any

DEFAULT_STORE = "/var/lib/zoned/images"


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


# ---------------------------------------------------------------- the store


class _StoreLock:
    """flock on <store>/.lock: exclusive for renames, shared for readers. Readers that can't
    create the lock file (read-only store) go without: renames are still atomic. The file
    is 0600: another user who could open it could hold it, and hang every `zoned run`."""

    __slots__ = ("path", "shared", "fd")

    def __init__(self, path: str, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = acquire(self.path, shared=self.shared)
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
        self.root_dir = norm(os.fspath(root or os.environ.get("ZONED_IMAGES") or DEFAULT_STORE))

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
        if not is_dir(self.root_dir):
            return []
        with self.lock(shared=True):
            return self.list_unlocked()

    def list_unlocked(self) -> list[Image]:
        """list() for a caller that holds lock(shared=True)."""
        out = []
        for n in sorted(os.listdir(self.root_dir)):
            if valid_name(n) and is_file(join_path(join_path(self.root_dir, n), "image.json")):
                try:
                    out.append(self.read_unlocked(n))
                except ImageError:
                    pass
        return out

    def read_unlocked(self, name: str) -> Image:
        """Image `name` as its image.json says, for a caller that holds lock(shared=True)
        across this read and its use of the image's files (get() takes the lock itself)."""
        if not valid_name(name):  # a name is one path component of the store, never more
            raise ImageError(f"invalid image name {name!r}")
        path = join_path(self.root_dir, name)
        meta_file = path + "/image.json"
        if not is_file(meta_file):
            raise ImageNotFound(f"image {name!r} not found (build it with: zoned image build {name})")
        try:
            with open(meta_file) as f:
                meta = jsonc.loads(f.read())
            return Image(name=name, path=path, rootfs=path + "/rootfs", config=meta["config"],
                         created=meta.get("created", ""), size=int(meta.get("size", 0)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(f"image {name!r} is damaged ({meta_file}: {e}); rebuild it") from None

    # -- writing (zoned.images.store_write does the work: `zoned run` loads none of it)

    def build(self, recipe: str | Path) -> Image:
        """Build (or rebuild) an image from a recipe file path or a bare recipe name.
        A string counts as a path if it contains '/' or ends in .yaml/.yml."""
        from zoned.images.store_write import build

        return build(self, recipe)

    def import_image(self, source: str, name: str | None = None, max_size: int | None = None,
                     progress: bool | None = None) -> Image:
        """Import a docker-archive, oci-archive, OCI layout dir or rootfs tarball (see
        zoned.images.importer); refused entries leave nothing behind."""
        from zoned.images.store_write import import_image

        return import_image(self, source, name, max_size, progress)

    def create(self, name: str, fill, what: str = "creating") -> Image:
        """The store's write transaction: fill(tmp, rootfs) populates a temp dir and returns
        image.json's fields; the dir is then renamed into place as image `name` (replacing
        an older one, kept while zones use it). Any failure deletes the temp dir."""
        from zoned.images.store_write import create

        return create(self, name, fill, what)

    def remove(self, name: str) -> None:
        """Delete an image; containers still running on it keep it until they stop."""
        from zoned.images.store_write import remove

        remove(self, name)

    def prune(self) -> list[Path]:
        """Delete left-overs: crashed builds and retired images no container uses any more."""
        from zoned.images.store_write import prune

        return prune(self)

    def digest(self, name: str) -> str:
        """sha256 of the image's rootfs contents (zoned.images.store_write.digest)."""
        from zoned.images.store_write import digest

        return digest(self, name)

    def meta(self, name: str) -> dict:
        """image.json of image `name`, as written (for inspect and history)."""
        img = self.get(name)
        try:
            with open(img.image_dir + "/image.json") as f:
                return jsonc.loads(f.read())
        except (OSError, ValueError) as e:
            raise ImageError(f"image {name!r} is damaged: {e}") from None

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
        return _StoreLock(join_path(self.root_dir, ".lock"), shared)

