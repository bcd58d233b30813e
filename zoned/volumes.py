"""Named volumes (`-v data:/data`, `--mount type=volume`, `zoned volume ...`): directories
kept in the data root (/var/lib/zoned/volumes/NAME/_data for the default state root, as
podman keeps them in its graph root), outliving the zones that use them."""
from __future__ import annotations

import os
import re
import time

from zoned.errors import ConfigError, InvalidState, NotFound

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DATA = "_data"


def volumes_dir(state_root: str) -> str:
    from zoned.storage import data_root

    return os.path.join(data_root(state_root), "volumes")


def is_name(value: str) -> bool:
    """Whether the source of `-v SOURCE:DEST` names a volume (not a host path)."""
    return not value.startswith((".", "/", "~"))


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name or ""):
        raise ConfigError(f"invalid volume name {name!r}: use letters, digits and _.- "
                          "(at most 64, starting with a letter or digit)")
    return name


class Volumes:
    """The named volumes of one state root."""

    def __init__(self, state_root: str):
        self.root = volumes_dir(state_root)

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

    def data(self, name: str | None) -> str:
        """The host directory of volume `name`, created on first use as podman does."""
        name = self.create(name, exist_ok=True)
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
