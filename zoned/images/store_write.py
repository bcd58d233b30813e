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
    import tempfile
    from pathlib import Path

    from zoned.images.sizes import scan, share

    ensure_root(store)
    with store.lock():
        collect_garbage(store)
        # mkdtemp's 0700 stays: the image dir is root's alone (ensure_root says why)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=store.root))
        busy = hold(tmp)  # marks the temp dir live for other processes' GC
    old = None
    built = False
    try:
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
        previous = _created(store, name)
        if previous is not None:  # said by `zoned image import` (a re-tag, as podman's)
            meta["replaced"] = previous
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
        _remove(str(tmp))
        if isinstance(e, OSError):
            raise ImageError(f"{what} image {name!r}: {e}") from None
        raise
    finally:
        if not built:
            release(tmp, busy)
    if old:
        retire(*old)
    return store.get(name)


def _created(store: ImageStore, name: str) -> str | None:
    """The `created` of the image `name` now in the store, or None if there is none."""
    try:
        with open(join_path(store.root_dir, name) + "/image.json") as f:
            return str(jsonc.loads(f.read()).get("created", ""))
    except (OSError, ValueError, AttributeError):
        return None


def ensure_root(store: ImageStore) -> None:
    """Create the store if need be, and make it 0700 (an existing one too, as a store an
    older zoned made 0755): its images hold setuid-root files (Debian's su, mount, or a
    crafted image's) and world-writable dirs (/tmp), which any host user could run or
    write through a traversable store (docker's CVE-2021-41091), and it is where root
    links and renames files at import. Nobody else needs it: a rootful zone's overlay is
    mounted by root outside any user namespace (a bundle cannot name an image lower), and
    a rootless zoned's store is the user's own, whose uid is its zones' root."""
    try:
        os.makedirs(store.root_dir, mode=0o700, exist_ok=True)
        st = os.stat(store.root_dir)
        if st.st_mode & 0o077:
            os.chmod(store.root_dir, 0o700)
    except OSError as e:
        raise ImageError(f"cannot create image store {store.root_dir}: {e.strerror}") from None


def _remove(path: str) -> bool:
    """Delete a work or retired dir, iteratively (a crafted layer of thousands of nested
    dirs made shutil.rmtree raise RecursionError); False if something stayed."""
    from zoned.linux.files import rmtree

    try:
        rmtree(path)
        return True
    except OSError as e:
        import sys

        print(f"zoned: warning: could not remove {path}: {e.strerror or e}", file=sys.stderr)
        return False


def remove(store: ImageStore, name: str) -> None:
    """Delete an image; containers still running on it keep it until they stop."""
    if not valid_name(name):
        raise ImageError(f"invalid image name {name!r}")
    ensure_root(store)
    with store.lock():
        if not is_file(join_path(store.root_dir, name) + "/image.json"):
            raise ImageNotFound(f"image {name!r} not found")
        collect_garbage(store)
        old = set_aside(store, name)
    retire(*old)


def prune(store: ImageStore, dry_run: bool = False) -> list[Path]:
    """Delete left-overs: crashed builds and retired images no container uses any more
    (`zoned image prune`, and `zoned gc` through zoned.gc). dry_run: only list them."""
    if not is_dir(store.root_dir):
        return []
    from pathlib import Path

    if not dry_run:
        ensure_root(store)
    with store.lock(shared=dry_run):
        return [Path(p) for p in collect_garbage(store, dry_run)]


def digest(store: ImageStore, name: str) -> str:
    """sha256 of the image's rootfs contents (see tree_digest; not times), so two hosts
    that built the same recipe agree. A checkpoint's upper layer only makes sense over the
    very same lower layer: migration compares this before it freezes anything, and a VM's
    root disk is cached by it. Cached next to image.json (keyed by its mtime); a cache an
    older zoned wrote (the unframed format) is kept, so checkpoints made with it restore."""
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
    value = tree_digest(img.rootfs_dir)
    try:
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{stamp} {value}\n")
        os.rename(tmp, cache)
    except OSError:
        pass  # a read-only store: just not cached
    return value


_KIND = {0o040000: b"d", 0o100000: b"f", 0o120000: b"l", 0o010000: b"p", 0o140000: b"s",
         0o020000: b"c", 0o060000: b"b"}


def tree_digest(root: str) -> str:
    """"sha256:..." of a tree: for each entry, top-down in name order, its relative path,
    file type, permission bits, owner, xattrs (names and values), symlink target and file
    data, every field preceded by its length, so that no two different trees hash the
    same bytes (the unframed `path\0mode\0uid:gid\0data\n` of before let a file's data
    spell further entries: two different images got one digest). Hard links and times
    are left out (sharing links identical files across images)."""
    import hashlib
    import stat

    from zoned.linux.files import fd_path, walk

    h = hashlib.sha256(b"zoned-tree-digest-v2\0")

    def field(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)

    def record(dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        field(os.fsencode(rel))
        field(_KIND.get(stat.S_IFMT(st.st_mode), b"?"))
        field(b"%o %d %d" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
        at = fd_path(dir_fd, name)
        try:
            attrs = sorted(os.listxattr(at, follow_symlinks=False))
        except OSError:
            attrs = []
        field(b"%d" % len(attrs))
        for a in attrs:
            field(os.fsencode(a))
            field(os.getxattr(at, a, follow_symlinks=False))
        if stat.S_ISLNK(st.st_mode):
            field(os.fsencode(os.readlink(name, dir_fd=dir_fd)))
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                h.update(st.st_size.to_bytes(8, "big"))
                left, offset = st.st_size, 0
                while left > 0:
                    chunk = os.pread(fd, min(left, 1 << 20), offset)
                    if not chunk:
                        raise ImageError(f"{root}/{rel}: changed while hashing it")
                    h.update(chunk)
                    left -= len(chunk)
                    offset += len(chunk)
            finally:
                os.close(fd)
        else:
            field(b"")

    for fd, parts, entries in walk(root):
        entries.sort(key=lambda e: os.fsencode(e.name))  # walk descends in this order
        if not parts:
            record(fd, "", ".", os.fstat(fd))
        for e in entries:
            rel = "/".join([*parts, e.name])
            record(fd, e.name, rel, e.stat(follow_symlinks=False))
    return "sha256:" + h.hexdigest()


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
            _remove(aside)
    finally:
        release(aside, fd)


def collect_garbage(store: ImageStore, dry_run: bool = False) -> list[str]:
    """Remove unlocked .build-* (crashed builds) and unused .old-* dirs (caller holds the
    lock). A build in progress is told apart by the flock its builder holds on its dir's
    lock file (hold), released by the kernel when the builder dies, however it dies. One
    entry that cannot be removed is reported and skipped: it must not stop the command
    (every import, rm and prune runs this first)."""
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
        fd = try_acquire(p + ".lock")  # (None too for one we cannot open: not ours)
        if fd is None:  # its owner is alive and working on it
            continue
        try:
            note = p + "/.inuse.json"
            if is_file(note):
                try:
                    with open(note) as f:
                        info = jsonc.loads(f.read())
                    alive = _mounts_alive(info["mounts"], info["rootfs"])
                except (OSError, ValueError, KeyError, TypeError):
                    alive = False
                if alive:
                    continue
            if dry_run or _remove(p):
                removed.append(p)
        finally:
            release(p, fd)  # held only while someone works on the dir
    return removed
