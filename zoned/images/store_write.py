"""Writing to the image store (zoned.images.store): the build transaction, imports,
removal, pruning, digests, and the retiring of a replaced image that zones still use (its
dir is kept with a note until no overlay names it). Apart from the store's reading, which
`zoned run` does on its start path: that loads none of this."""
from __future__ import annotations

import os

from zoned.images.errors import ImageError, ImageNotFound, valid_name
from zoned.images.paths import is_dir, is_file, join_path
from zoned.linux import jsonc
from zoned.linux.locks import acquire, try_acquire

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the store imports this module, not the reverse
    from pathlib import Path

    from zoned.images.store import Image, ImageStore

# The repository's images/ (this file is zoned/images/store_write.py).
RECIPES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "images")


def find_recipe(name: str) -> Path:
    """Recipe file for a bare image name: ``$ZONED_RECIPES/<name>.yaml`` first, so users can
    add or override images, then the repository's ``images/`` directory."""
    from pathlib import Path

    if not valid_name(name):
        raise ImageError(f"invalid image name {name!r} "
                         "(use lowercase letters, digits, '_', '.', '-')")
    dirs = [Path(d) for d in [os.environ.get("ZONED_RECIPES")] if d] + [Path(RECIPES_DIR)]
    for d in dirs:
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    raise ImageError(f"no recipe for image {name!r} "
                     f"(looked for {name}.yaml in: {', '.join(map(str, dirs))})")


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


def build(store: ImageStore, recipe: str | Path) -> Image:
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
        debs = build_rootfs(r, rootfs, scratch, store)
        shutil.rmtree(scratch)
        shutil.copyfile(path, tmp / "recipe.yaml")
        os.chmod(tmp / "recipe.yaml", 0o644)
        return {"description": r.description, "config": r.config, "debs": debs,
                "recipe": str(path.resolve()),
                "history": [{"created_by": f"zoned image build {path.name}"
                             + (f" ({r.bootstrap['tool']} {r.bootstrap['suite']})"
                                if r.bootstrap else ""), "comment": r.description}]}

    return create(store, r.name, fill, what="building")


def import_image(store: ImageStore, source: str, name: str | None = None,
                 max_size: int | None = None, progress: bool | None = None) -> Image:
    """Import a docker-archive, oci-archive, OCI layout dir or rootfs tarball (see
    zoned.images.importer); refused entries leave nothing behind."""
    from zoned.images.importer import (Progress, apply_layers, default_name, history,
                                       open_source, runtime_config)
    from zoned.images.unpack import Limits

    if name is not None and not valid_name(name):
        raise ImageError(f"invalid --name {name!r} (use lowercase letters, digits, '_', '.', '-')")
    limits = Limits(max_size)
    ensure_root(store)
    src = open_source(os.fspath(source), store.root_dir, limits)
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

        return create(store, name, fill, what="importing")
    finally:
        src.close()


def create(store: ImageStore, name: str, fill, what: str = "creating") -> Image:
    """The store's write transaction: fill(tmp, rootfs) populates a temp dir and returns
    image.json's fields; the dir is then renamed into place as image `name` (replacing
    an older one, kept while zones use it). Any failure deletes the temp dir."""
    import datetime
    import shutil
    import tempfile
    from pathlib import Path

    from zoned.images.sizes import scan, share

    ensure_root(store)
    with store.lock():
        collect_garbage(store)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=store.root))
        busy = hold(tmp)  # marks the temp dir live for other processes' GC
    old = None
    built = False
    try:
        os.chmod(tmp, 0o755)  # readable by containers' mapped users
        rootfs = tmp / "rootfs"
        rootfs.mkdir(mode=0o755)
        os.chmod(rootfs, 0o755)
        meta = fill(tmp, rootfs)
        with store.lock(shared=True):
            others = [i.rootfs_dir for i in store.list_unlocked() if i.name != name]
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
        target = store.root / name
        with store.lock():
            old = set_aside(store, name) if target.exists() else None
            try:
                os.rename(tmp, target)
            except OSError:
                if old:  # put the previous image back
                    os.rename(old[0], target)
                    release(old[0], old[2])
                raise
            built = True
            release(tmp, busy)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ImageError(f"{what} image {name!r}: {e}") from None
        raise
    finally:
        if not built:
            release(tmp, busy)
    if old:
        retire(*old)
    return store.get(name)


def ensure_root(store: ImageStore) -> None:
    try:
        if not is_dir(store.root_dir):
            os.makedirs(store.root_dir, exist_ok=True)
            os.chmod(store.root_dir, 0o755)  # not umask-dependent: containers' users traverse it
    except OSError as e:
        raise ImageError(f"cannot create image store {store.root_dir}: {e.strerror}") from None


def remove(store: ImageStore, name: str) -> None:
    """Delete an image; containers still running on it keep it until they stop."""
    if not valid_name(name):
        raise ImageError(f"invalid image name {name!r}")
    with store.lock():
        if not is_file(join_path(store.root_dir, name) + "/image.json"):
            raise ImageNotFound(f"image {name!r} not found")
        collect_garbage(store)
        old = set_aside(store, name)
    retire(*old)


def prune(store: ImageStore) -> list[Path]:
    """Delete left-overs: crashed builds and retired images no container uses any more."""
    if not is_dir(store.root_dir):
        return []
    from pathlib import Path

    with store.lock():
        return [Path(p) for p in collect_garbage(store)]


def digest(store: ImageStore, name: str) -> str:
    """sha256 of the image's rootfs contents (paths, modes, owners, file data, link
    targets; not times), so two hosts that built the same recipe agree. A checkpoint's
    upper layer only makes sense over the very same lower layer: migration compares
    this before it freezes anything. Cached next to image.json (keyed by its mtime)."""
    import hashlib

    img = store.get(name)
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
                                            if os.path.islink(join_path(dirpath, d))]):
            path = join_path(dirpath, n) if n else dirpath
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


def hold(path: str | os.PathLike) -> int:
    """flock a work dir's lock file, <dir>.lock, so other processes' GC knows its owner
    is alive (works across pid namespaces and pid reuse, unlike pid files). Returns the
    fd for release(). The caller holds the store lock.

    A 0600 file in the store's directory rather than the work dir itself: any user may
    open a 0755 directory and flock it, and so keep gc from a dir, or hang a writer
    waiting for that lock while it holds the store's (and every `zoned run` with it)."""
    lock = os.fspath(path) + ".lock"
    while True:
        fd = acquire(lock)
        try:  # one a release() was unlinking as we opened it guards nothing
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release(path: str | os.PathLike, fd: int) -> None:
    """Give up hold(path)'s lock, when `path` is gone or is no work dir any more."""
    try:
        os.unlink(os.fspath(path) + ".lock")
    except FileNotFoundError:
        pass
    os.close(fd)


def set_aside(store: ImageStore, name: str) -> tuple[str, str, int]:
    """Rename <name> to .old-<name>-XXXX (caller holds the store lock)."""
    import tempfile

    aside = tempfile.mkdtemp(prefix=f".old-{name}-", dir=store.root_dir)
    src = join_path(store.root_dir, name)
    fd = hold(aside)
    os.rename(src, aside)  # replaces the empty placeholder dir atomically
    return aside, src + "/rootfs", fd


def retire(aside: str, old_rootfs: str, fd: int) -> None:
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
        release(aside, fd)


def collect_garbage(store: ImageStore) -> list[str]:
    """Remove unlocked .build-* (crashed builds) and unused .old-* dirs (caller holds the lock)."""
    import shutil

    removed = []
    names = os.listdir(store.root_dir)
    for n in names:
        if not n.startswith((".build-", ".old-")):
            continue
        p = join_path(store.root_dir, n)
        if n.endswith(".lock"):  # a work dir's (mkdtemp's random tails have no dot)
            if n[:-5] not in names and (fd := try_acquire(p)) is not None:
                release(p[:-5], fd)  # its dir is gone: left by a crash
            continue
        fd = try_acquire(p + ".lock")
        if fd is None:  # its owner is alive and working on it
            continue
        try:
            note = p + "/.inuse.json"
            if is_file(note):
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
            release(p, fd)  # held only while someone works on the dir
    return removed
