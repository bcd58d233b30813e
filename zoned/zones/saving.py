"""`zoned save NAME FILE` and `zoned restore FILE` (xm save/restore) on top of the
checkpoint export and import: save dumps the running zone into one archive and stops it
(no restart: the admin asked); restore boots the archive under a new monitor, so exit
codes and restart policies apply to the restored zone as to a booted one."""
from __future__ import annotations

import os

from zoned.errors import ConfigError, InvalidState
from zoned.zones import record


def save(rt, name: str, path: str) -> None:
    from zoned.checkpoint.dump import checkpoint
    from zoned.zones import query as commands

    commands.defined(name)
    if not commands.running(rt, name):
        raise InvalidState(f"cannot save zone {name!r}: it is not running")
    if (rt.state(name).get("zoned") or {}).get("vm"):
        raise InvalidState(f"cannot save zone {name!r}: it is a VM (no checkpoint yet)")
    with record.locked(rt.store.root, name) as rec:
        rec["stop"] = "save"
    try:
        checkpoint(rt, name, None, export=os.path.abspath(path))
    except BaseException:
        with record.locked(rt.store.root, name) as rec:
            rec.pop("stop", None)
        raise
    commands.wait_monitor(rt, name)


def archive_name(path: str) -> str:
    """The zone a saved archive holds (its checkpoint's id), read without unpacking all."""
    import json
    import subprocess

    from zoned.checkpoint.archive import META, check_meta

    p = subprocess.run(["tar", "--zstd", "-xOf", path, f"./{META}"], capture_output=True)
    try:
        meta = json.loads(p.stdout)
    except ValueError:
        raise ConfigError(f"{path}: not a file `zoned save` wrote") from None
    return check_meta(meta, f"{path}: {META}")["id"]


def restore(rt, path: str, images: str | None = None) -> tuple[str, int]:
    """Boot a saved zone from `path` under a monitor: (name, pid)."""
    from zoned.zones import query as commands
    from zoned.zones.monitor import launch

    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    name = archive_name(path)
    commands.defined(name)
    if commands.running(rt, name):
        raise InvalidState(f"cannot restore zone {name!r}: it is running")
    with record.locked(rt.store.root, name) as rec:
        rec.pop("stop", None)
        rec["restore_from"] = path
        rec["restarts"] = rec["streak"] = 0
    return name, launch(rt.store.root, rt.store.data, name, images)

