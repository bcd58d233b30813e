"""`zoned save NAME FILE` and `zoned restore FILE` (xm save/restore). A zone is saved
through the checkpoint export and import (CRIU, a .tar.zst); a VM zone through QEMU's
own migration into one file (zoned.backends.vm_save, zoned.vm.savefile). Save stops the
zone (no restart: the admin asked); restore boots the file under a new monitor, so exit
codes and restart policies apply to the restored zone as to a booted one."""
from __future__ import annotations

import os

from zoned.errors import ConfigError, InvalidState
from zoned.zones import record


def save(rt, name: str, path: str) -> dict | None:
    """Save running zone `name` into `path` and stop it; a VM's save summary."""
    from zoned.zones import query as commands

    commands.defined(name)
    if not commands.running(rt, name):
        raise InvalidState(f"cannot save zone {name!r}: it is not running")
    is_vm = bool((rt.state(name).get("zoned") or {}).get("vm"))
    with record.locked(rt.store.root, name) as rec:
        rec["stop"] = "save"
    summary = None
    try:
        if is_vm:
            from zoned.backends.vm_save import save as save_vm

            summary = save_vm(rt, name, path, kind="zone", what="save")
        else:
            from zoned.checkpoint.dump import checkpoint

            checkpoint(rt, name, None, export=os.path.abspath(path))
    except BaseException:
        with record.locked(rt.store.root, name) as rec:
            rec.pop("stop", None)
        raise
    commands.wait_monitor(rt, name)
    return summary


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


def saved_vm_name(path: str, images: str | None) -> str:
    """The zone a saved VM holds, checked against its definition here: the file's machine
    must be the one the definition boots (the same image, memory, vCPUs and networks),
    or QEMU could not load it, or the zone would come back other than it is defined."""
    from zoned.backends.vm import machine_spec
    from zoned.backends.vm_save import read
    from zoned.network.model import NetworkState
    from zoned.zones import query as commands
    from zoned.zones.convert import oci_config

    with read(path, "restore", "zone") as saved:
        h = saved.header
    name = h["id"]
    zone = commands.defined(name)
    if zone.get("backend") != "vm":
        raise ConfigError(f"restore {path}: zone {name!r} is now defined as a zone, and "
                          "the file holds a VM (backend: vm)")
    opts, cfg = oci_config(zone, images)
    here, saved_spec = machine_spec(cfg, opts.image), machine_spec(h["config"],
                                                                   h["image"]["name"])
    for field in ("image", "memory_mib", "vcpus", "tty"):
        if getattr(here, field) != getattr(saved_spec, field):
            raise ConfigError(f"restore {path}: zone {name!r}'s {field} is now "
                              f"{getattr(here, field)!r}, saved with "
                              f"{getattr(saved_spec, field)!r}")
    state = NetworkState.from_dict(h.get("network"))
    nets = [a.network for a in state.networks] if state is not None else []
    if nets != [n for n in opts.network if n != "none"]:
        raise ConfigError(f"restore {path}: zone {name!r}'s networks are now "
                          f"{opts.network}, saved on {nets}")
    return name


def restore(rt, path: str, images: str | None = None) -> tuple[str, int]:
    """Boot a saved zone from `path` under a monitor: (name, pid)."""
    from zoned.vm.savefile import is_save_file
    from zoned.zones import query as commands
    from zoned.zones.monitor import launch

    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    name = saved_vm_name(path, images) if is_save_file(path) else archive_name(path)
    commands.defined(name)
    if commands.running(rt, name):
        raise InvalidState(f"cannot restore zone {name!r}: it is running")
    with record.locked(rt.store.root, name) as rec:
        rec.pop("stop", None)
        rec["restore_from"] = path
        rec["restarts"] = rec["streak"] = 0
    return name, launch(rt.store.root, rt.store.data, name, images)
