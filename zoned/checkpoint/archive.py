"""A checkpoint directory: what it holds (criu's images, the overlay's upper dir, the log,
and zoned's metadata, META), the image its upper dir needs (found by name, checked by
digest), and its export and import as a .tar.zst."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from contextlib import contextmanager

from zoned.errors import ConfigError, ZonedError

FORMAT = 2
META = "zoned-checkpoint.json"
# What a checkpoint directory holds besides criu's *.img files.
OWN_FILES = ("upper", "ctr.log", "ctr.log.1", META, "zoned-action.sh", "dump.log",
             "stats-dump")
TAR_FLAGS = ["--xattrs", "--xattrs-include=*", "--numeric-owner", "--sparse"]


@contextmanager
def tar_stream(args: list[str], *, what: str, writing: bool):
    """`tar ARGS` over a pipe, for streaming a checkpoint between hosts: yields the fd of
    its stdin (`writing`: an archive to unpack) or of its stdout (one it packs). A tar that
    fails is raised as ZonedError("WHAT failed: ..."), once the pipe is closed."""
    pipe = subprocess.PIPE
    p = subprocess.Popen(["tar", *TAR_FLAGS, *args], stdin=pipe if writing else None,
                         stdout=None if writing else pipe, stderr=pipe)
    end = p.stdin if writing else p.stdout
    try:
        yield end.fileno()
    finally:
        end.close()
        err = p.stderr.read().decode(errors="replace")
        p.wait()
    if p.returncode != 0:
        raise ZonedError(f"{what} failed: {err.strip()}")


def clean_dir(directory: str) -> None:
    """Make `directory` exist and hold no old checkpoint (old images would confuse criu).
    Its entries are removed from the directory itself, never through a symlink to it."""
    from zoned.linux.files import DIR_FLAGS, rmtree_at

    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(directory, DIR_FLAGS)
    try:
        for e in os.scandir(fd):
            if e.name.endswith(".img") or e.name in OWN_FILES:
                rmtree_at(fd, e.name)  # (a file or a symlink: unlinked itself)
    finally:
        os.close(fd)


def read_meta(directory: str) -> dict:
    """The checkpoint's metadata, checked (check_meta). META must be a regular file in
    the directory: a symlink or a FIFO an archive planted there is refused, never read."""
    try:
        fd = os.open(os.path.join(directory, META),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{directory} holds no zoned checkpoint ({META} is missing)") \
            from None
    except OSError as e:
        raise ConfigError(f"{directory}/{META}: {e.strerror} (not a regular file)") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{directory}/{META} is not a regular file")
        try:
            meta = json.loads(f.read(MAX_META))
        except ValueError as e:
            raise ConfigError(f"{directory}/{META} is damaged: {e}") from None
    return check_meta(meta, f"{directory}/{META}")


MAX_META = 64 << 20  # what a checkpoint's metadata may take (a config, mounts, files)


def check_meta(meta: object, where: str) -> dict:
    """A checkpoint's metadata (from an archive, a directory or a migrating peer) in the
    shape zoned.checkpoint.dump wrote it: one line naming the field otherwise, before any
    of it names a path, a cgroup or a zone."""
    from zoned.oci import spec as specmod

    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: not a checkpoint's metadata (a JSON object)")
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{where}: checkpoint format {meta.get('format')} is not {FORMAT}")
    kinds = {"id": str, "config": dict, "state_dir": str, "mounts": list, "files": list,
             "log": bool, "cgroup": str}
    optional = {"annotations": dict, "image": dict, "lower": str, "network": dict,
                "hostname": str, "autoremove": bool, "tcp_established": bool, "lazy": bool,
                "zone": str, "oci": dict}
    for key, kind in (*kinds.items(), *optional.items()):
        value = meta.get(key)
        if (value is not None or key in kinds) and not isinstance(value, kind):
            raise ConfigError(f"{where}: {key} must be a JSON {_JSON_KIND[kind]}")
    specmod.check_id(meta["id"])
    for key in ("mounts", "files"):
        for item in meta[key]:
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: each of {key} must be a JSON object")
    for m in meta["mounts"]:
        if not all(isinstance(m.get(k), str) for k in ("source", "destination")):
            raise ConfigError(f"{where}: mounts: source and destination must be strings")
    specmod.validate(meta["config"])
    if meta.get("network") is not None:
        check_network(meta["network"], where)
    return meta


def check_network(described: dict, where: str) -> None:
    """The zone's network as state.json describes it: readable as one, each network by a
    valid name (it names the network's definition file)."""
    from zoned.network.definitions import check_name
    from zoned.network.model import NetworkState

    try:
        state = NetworkState.from_dict(described)
        names = [a.network for a in state.networks] if state is not None else []
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: network is not a zone's network description "
                          f"({type(e).__name__}: {e})") from None
    if state is not None and not names:
        raise ConfigError(f"{where}: network names no network")
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: network: a network's name must be a string")
        check_name(name)


_JSON_KIND = {str: "string", dict: "object", list: "array", bool: "boolean"}


def is_bind(mount: dict | None) -> bool:
    """Whether a config mount is a bind mount (as zoned.child.rootfs mounts it)."""
    if not mount:
        return False
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def image_record(name: str) -> dict:
    """The image a checkpoint's upper dir lies over: its name and digest (None if this
    host cannot tell), for lower_of() on the restoring host."""
    from zoned.images.store import ImageStore

    try:
        return {"name": name, "digest": ImageStore().digest(name)}
    except ZonedError:
        return {"name": name, "digest": None}


def lower_of(meta: dict) -> str:
    """The image's rootfs on this host: found by the image's name, and the very same
    contents as the checkpointed one (the upper layer is only valid over that)."""
    img = meta.get("image")
    if not img:
        if os.path.isdir(meta["lower"]):
            return meta["lower"]
        raise ConfigError(f"image rootfs {meta['lower']!r} is missing")
    from zoned.images.errors import ImageNotFound
    from zoned.images.store import ImageStore

    store = ImageStore()
    try:
        lower = store.get(img["name"]).rootfs_dir
    except ImageNotFound:
        raise ConfigError(f"image {img['name']!r} is not on this host (build it with "
                          f"`zoned image build {img['name']}`)") from None
    if img.get("digest") and store.digest(img["name"]) != img["digest"]:
        raise ConfigError(f"image {img['name']!r} here differs from the checkpointed one "
                          f"({store.digest(img['name'])[:19]} vs {str(img['digest'])[:19]!r})")
    return lower


def export_tar(directory: str, path: str) -> None:
    """DIR as a .tar.zst (owners, xattrs and overlay whiteouts kept), written atomically:
    into a new file of an unguessable name beside PATH (O_EXCL, 0600: it holds the zone's
    memory), renamed over PATH once complete. (A fixed PATH.part was written through
    whatever another user had planted there.)"""
    import tempfile

    from zoned.checkpoint.private import check_parents

    path = os.path.abspath(path)
    check_parents(path, "--export")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                               dir=os.path.dirname(path))
    try:
        r = subprocess.run(["tar", *TAR_FLAGS, "--zstd", "-cf", "-", "-C", directory, "."],
                           stdout=fd, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise ZonedError(f"cannot write {path}: {r.stderr.strip()}")
        os.replace(tmp, path)
    except BaseException:
        unlink_if_exists(tmp)
        raise
    finally:
        os.close(fd)


def import_tar(path: str, directory: str) -> None:
    """Unpack the archive at `path` (root's or ours, where no one else can swap it:
    zoned.checkpoint.private) into `directory`."""
    from zoned.checkpoint.private import check_own

    check_own(path, "--import", directory=False)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    r = subprocess.run(["tar", *TAR_FLAGS, "--zstd", "-xf", path, "-C", directory],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"--import {path}: not a zoned checkpoint archive "
                          f"({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'tar failed'})")


def unlink_if_exists(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
