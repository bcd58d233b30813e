"""A checkpoint directory: what it holds (criu's images, the overlay's upper dir, the log,
and zoned's metadata, META), the image its upper dir needs (found by name, checked by
digest), and its export and import as a .tar.zst."""
from __future__ import annotations

import json
import os
import shutil
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
    """Make `directory` exist and hold no old checkpoint (old images would confuse criu)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".img") or name in OWN_FILES:
            p = os.path.join(directory, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def read_meta(directory: str) -> dict:
    try:
        with open(os.path.join(directory, META)) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{directory} holds no zoned checkpoint ({META} is missing)") \
            from None
    except ValueError as e:
        raise ConfigError(f"{directory}/{META} is damaged: {e}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{directory}: checkpoint format {meta.get('format')} is not "
                          f"{FORMAT}")
    return meta


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
                          f"({store.digest(img['name'])[:19]} vs {img['digest'][:19]})")
    return lower


def export_tar(directory: str, path: str) -> None:
    """DIR as a .tar.zst (owners, xattrs and overlay whiteouts kept), written atomically."""
    path = os.path.abspath(path)
    tmp = f"{path}.part"
    r = subprocess.run(["tar", *TAR_FLAGS, "--zstd", "-cf", tmp, "-C", directory, "."],
                       capture_output=True, text=True)
    if r.returncode != 0:
        unlink_if_exists(tmp)
        raise ZonedError(f"cannot write {path}: {r.stderr.strip()}")
    os.replace(tmp, path)


def import_tar(path: str, directory: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"--import {path}: no such file")
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
