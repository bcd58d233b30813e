"""`zoned save NAME FILE` and `zoned restore FILE` (xm save/restore). A zone is saved
through the checkpoint export and import (CRIU, a .tar.zst); a VM zone through QEMU's
own migration into one file (zoned.backends.vm_save, zoned.vm.savefile). Save stops the
zone (no restart: the admin asked); restore boots the file under a new monitor, so exit
codes and restart policies apply to the restored zone as to a booted one.

As xm's, the file holds the zone's definition too (its zone file): on a host where the
zone is not defined, restore defines it from there first (undone if the restore fails),
unless that file names host paths (a volume's, a rootfs): those the admin defines."""
from __future__ import annotations

import os

from zoned.errors import ConfigError, InvalidState
from zoned.zones import record


def save(rt, name: str, path: str) -> dict | None:
    """Save running zone `name` into `path` and stop it; a VM's save summary."""
    from zoned.zones import query as commands

    zone_file = commands.defined(name).text  # (kept in the file: restore defines it)
    if not commands.running(rt, name):
        raise InvalidState(f"cannot save zone {name!r}: it is not running")
    is_vm = bool((rt.state(name).get("zoned") or {}).get("vm"))
    with record.locked(rt.store.root, name) as rec:
        rec["stop"] = "save"
    summary = None
    try:
        if is_vm:
            from zoned.backends.vm_save import save as save_vm

            summary = save_vm(rt, name, path, kind="zone", what="save", zone_file=zone_file)
        else:
            from zoned.checkpoint.dump import checkpoint

            checkpoint(rt, name, None, export=os.path.abspath(path), zone_file=zone_file)
    except BaseException:
        with record.locked(rt.store.root, name) as rec:
            rec.pop("stop", None)
        raise
    commands.wait_monitor(rt, name)
    return summary


def saved_archive(path: str) -> tuple[str, str | None]:
    """The zone a saved archive holds (its checkpoint's id) and its zone file (None from
    an older zoned), read without unpacking all."""
    import json
    import subprocess

    from zoned.checkpoint.archive import META, check_meta

    p = subprocess.run(["tar", "--zstd", "-xOf", path, f"./{META}"], capture_output=True)
    try:
        meta = json.loads(p.stdout)
    except ValueError:
        raise ConfigError(f"{path}: not a file `zoned save` wrote") from None
    meta = check_meta(meta, f"{path}: {META}")
    return meta["id"], meta.get("zone")


def saved_vm(path: str) -> dict:
    """A saved VM zone's header, checked: its id is the zone's, its zone field the zone
    file (None from an older zoned)."""
    from zoned.backends.vm_save import read

    with read(path, "restore", "zone") as saved:
        return saved.header


def check_saved_vm(h: dict, path: str, name: str, images: str | None) -> None:
    """The machine of the file at `path` (its header `h`) must be the one the zone's
    definition here boots (the same image, memory, vCPUs and networks), or QEMU could
    not load it, or the zone would come back other than it is defined."""
    from zoned.backends.vm import machine_spec
    from zoned.network.model import NetworkState
    from zoned.zones import query as commands
    from zoned.zones.convert import oci_config

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


def define_saved(rt, name: str, text: str | None, path: str, images: str | None) -> None:
    """Define zone `name` from the zone file a save kept (`text`), as `zoned define` would;
    refused if there is none, if it is another zone's, or if it names host paths."""
    import tempfile

    from zoned.errors import NotFound
    from zoned.zones.commands import define
    from zoned.zones.zonefile import parse, zone_path

    if text is None:
        raise NotFound(f"zone {name!r} is not defined (no {zone_path(name)}), and {path} "
                       "holds no zone file (saved by an older zoned): define it first")
    zone = parse(text, f"{path} (its zone file)")
    if zone.name != name:
        raise ConfigError(f"restore {path}: its zone file defines {zone.name!r}, the save "
                          f"is of {name!r}")
    hosts = host_paths(zone)
    if hosts:
        raise ConfigError(f"restore {path}: zone {name!r} is not defined here and its "
                          f"zone file names host paths ({', '.join(hosts)}): define it "
                          "first")
    with tempfile.TemporaryDirectory(prefix="zoned-restore.") as d:
        tmp = os.path.join(d, f"{name}.yaml")
        with open(tmp, "x") as f:
            f.write(text)
        define(rt, tmp, images)


def host_paths(zone) -> list[str]:
    """The host paths a zone file names: its rootfs, its volumes' host sides (a named
    volume, a bare name, is zoned's own)."""
    out = [zone.get("rootfs")] if zone.get("rootfs") else []
    for vol in zone.get("volumes") or []:
        host = str(vol).split(":", 1)[0]
        if "/" in host or host.startswith("."):
            out.append(host)
    return out


def restore(rt, path: str, images: str | None = None) -> tuple[str, int, bool]:
    """Boot a saved zone from `path` under a monitor: (name, pid, whether the zone was
    defined from the file). A zone not defined here is defined from the file first, and
    undefined again if the restore fails."""
    from zoned.vm.savefile import is_save_file
    from zoned.zones import query as commands
    from zoned.zones.monitor import launch
    from zoned.zones.zonefile import zone_path

    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    header = saved_vm(path) if is_save_file(path) else None
    name, text = (header["id"], header.get("zone")) if header else saved_archive(path)
    made = not os.path.exists(zone_path(name))
    if made:
        define_saved(rt, name, text, path, images)
    try:
        if header:
            check_saved_vm(header, path, name, images)
        commands.defined(name)
        if commands.running(rt, name):
            raise InvalidState(f"cannot restore zone {name!r}: it is running")
        with record.locked(rt.store.root, name) as rec:
            rec.pop("stop", None)
            rec["restore_from"] = path
            rec["restarts"] = rec["streak"] = 0
        return name, launch(rt.store.root, rt.store.data, name, images), made
    except BaseException:
        if made:
            _undefine_after_failure(rt, name)
        raise


def _undefine_after_failure(rt, name: str) -> None:
    """The zone restore defined, undefined again: nothing of a failed restore stays."""
    from zoned.errors import ZonedError
    from zoned.zones import commands

    try:
        commands.wait_monitor(rt, name)
        commands.undefine(rt, name)
    except ZonedError:
        pass  # (its monitor still there: `zoned undefine` later)
