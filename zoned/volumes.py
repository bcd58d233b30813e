"""Named volumes (`-v data:/data`, `--mount type=volume`, `zoned volume ...`): directories
kept in the data root (/var/lib/zoned/volumes/NAME/_data for the default state root, as
podman keeps them in its graph root), outliving the zones that use them.

A config names the volumes it mounts (ANN_VOLUMES) and those made for it alone
(ANN_ANONYMOUS: `--mount type=volume` without a source). They are made when the container
is (make_for: after every check, so a refused run leaves none), and the anonymous ones go
with a container that was run with --rm (remove_anonymous), as podman's do."""
from __future__ import annotations

import os
import time

from zoned.errors import ConfigError, InvalidState, NotFound
from zoned.linux.names import ALNUM, made_of

_NAME_CHARS = ALNUM | frozenset("_.-")
DATA = "_data"
ANN_VOLUMES = "org.zoned.volumes"  # named volumes in use, comma-separated (volume rm)
ANN_ANONYMOUS = "org.zoned.volumes.anonymous"  # those made for this container alone


def volumes_dir(data_root: str) -> str:
    from zoned.storage import VOLUMES

    return os.path.join(data_root, VOLUMES)


def is_name(value: str) -> bool:
    """Whether the source of `-v SOURCE:DEST` names a volume (not a host path)."""
    return not value.startswith((".", "/", "~"))


def check_name(name: str) -> str:
    if not made_of(name, ALNUM, _NAME_CHARS, 64):  # [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
        raise ConfigError(f"invalid volume name {name!r}: use letters, digits and _.- "
                          "(at most 64, starting with a letter or digit)")
    return name


class Volumes:
    """The named volumes of one data root (the runtime's: Store.data)."""

    def __init__(self, data_root: str):
        self.data_root = data_root
        self.root = volumes_dir(data_root)

    def path(self, name: str) -> str:
        return os.path.join(self.root, check_name(name))

    def create(self, name: str | None = None, *, exist_ok: bool = False) -> str:
        """Make volume `name` (a random one if None); returns its name."""
        if name is None:
            name = os.urandom(16).hex()
        path = self.path(name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not exist_ok:
                raise InvalidState(f"volume {name!r} already exists") from None
            return name
        os.mkdir(os.path.join(path, DATA), 0o755)
        return name

    def data(self, name: str) -> str:
        """The host directory of volume `name` (made by make_for, on first use)."""
        return os.path.join(self.path(name), DATA)

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root)
                          if os.path.isdir(os.path.join(self.root, n, DATA)))
        except FileNotFoundError:
            return []

    def inspect(self, name: str) -> dict:
        path = self.path(name)
        try:
            created = os.stat(path).st_mtime
        except FileNotFoundError:
            raise NotFound(f"no such volume {name!r}") from None
        return {"Name": name, "Driver": "local", "Mountpoint": os.path.join(path, DATA),
                "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
                "Scope": "local"}

    def remove(self, name: str, users: list[str], *, force: bool = False) -> None:
        """Remove a volume and its data; refused while a zone uses it, unless `force`."""
        import shutil

        path = self.path(name)
        if not os.path.isdir(path):
            raise NotFound(f"no such volume {name!r}")
        if users and not force:
            raise InvalidState(f"volume {name!r} is in use by {', '.join(users)} "
                               "(remove them first, or rm -f)")
        shutil.rmtree(path)
        self.prune()

    def prune(self) -> None:
        """The data root's empty directories gone (zoned.storage.prune), volumes/ too."""
        from zoned.storage import prune

        prune(self.data_root)


def _names(cfg: dict, key: str) -> list[str]:
    return [n for n in ((cfg.get("annotations") or {}).get(key) or "").split(",") if n]


def make_for(cfg: dict, data_root: str) -> None:
    """Make the volumes a container's config mounts that do not exist yet (podman makes a
    named volume on first use)."""
    store = Volumes(data_root)
    for name in _names(cfg, ANN_VOLUMES):
        store.create(name, exist_ok=True)


def remove_anonymous(annotations: dict, data_root: str) -> None:
    """Remove the volumes made for one container alone (its --rm, or its create failed)."""
    import shutil

    store = Volumes(data_root)
    for name in _names({"annotations": annotations}, ANN_ANONYMOUS):
        try:
            path = store.path(name)
        except ConfigError:  # not a name zoned gives (a config's own annotation): skipped,
            continue  # a removal never fails on it
        shutil.rmtree(path, ignore_errors=True)
    store.prune()

