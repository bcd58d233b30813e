"""The logic of the zone commands (define, undefine, start, shutdown, destroy, reboot,
autostart, clone): what zoned/cli/zones.py calls. A zone is its file in the zone dir; its
container (same name) exists while it runs, or stopped when its policy preserved it."""
from __future__ import annotations

import os
import signal
import time

from zoned.errors import ConfigError, InvalidState, NotFound, ZonedError
from zoned.zones import record
from zoned.zones.query import WAIT_MONITOR, defined, names, running, wait_monitor
from zoned.zones.zonefile import Zone, load, zone_dir, zone_path

__all__ = ["WAIT_MONITOR", "defined", "names", "running", "wait_monitor"]  # for zoned.cli


def define(rt, path: str, images: str | None = None) -> Zone:
    """Check a zone file (and that it converts: its image exists, its limits parse) and
    put it in the zone dir as NAME.yaml, with a generated uuid when it has none."""
    import uuid

    from zoned.zones.convert import oci_config
    from zoned.zones.zonefile import parse, write_text

    zone = load(path)
    oci_config(zone, images, (rt.store.root, rt.store.data), startable=True)
    stop_signal(zone)  # checked now, not when a shutdown needs it
    text = zone.text
    if "uuid" not in zone.data:
        zone.data["uuid"] = str(uuid.uuid4())
        text += ("" if text.endswith("\n") or not text else "\n") + \
            f"uuid: {zone.data['uuid']}\n"
    target = zone_path(zone.name)
    existing = os.path.exists(target) and os.path.realpath(target) != os.path.realpath(path)
    if existing:
        old = load(target)
        if old.get("uuid") and "uuid" not in load(path).data:  # redefining keeps the uuid
            text = text.replace(f"uuid: {zone.data['uuid']}", f"uuid: {old.get('uuid')}")
    os.makedirs(zone_dir(), 0o755, exist_ok=True)
    write_text(target, text)
    return parse(text, target)


def undefine(rt, name: str) -> None:
    """Remove a stopped zone's file, writable layer and runtime record."""
    from zoned.linux.files import rmtree

    defined(name)
    if running(rt, name) or record.monitor_alive(rt.store.root, name):
        raise InvalidState(f"cannot undefine zone {name!r}: it is running "
                           "(shutdown or destroy it first)")
    try:
        rt.delete(name, force=True)
    except NotFound:
        pass
    from zoned.storage import remove_zone_dir

    layer = record.data_dir(rt.store.data, name)
    rmtree(layer)
    try:
        os.rmdir(os.path.dirname(layer))  # DATA/zones, once no zone has a layer there
    except OSError:
        pass
    remove_zone_dir(layer)  # and a derived data root left empty
    rmtree(record.zone_run_dir(rt.store.root, name))
    try:
        os.rmdir(record.records_dir(rt.store.root))
    except OSError:
        pass
    os.unlink(zone_path(name))


def start(rt, name: str, images: str | None = None) -> int:
    """Boot a defined zone (again) under a new monitor; the init's pid."""
    from zoned.zones.monitor import launch

    defined(name)
    root = rt.store.root
    if record.monitor_alive(root, name) or running(rt, name):
        raise InvalidState(f"cannot start zone {name!r}: it is already running")
    with record.locked(root, name) as rec:
        rec.pop("stop", None)
        rec["restarts"] = rec["streak"] = 0
        rec.pop("restart_times", None)
    return launch(root, rt.store.data, name, images)


def _request(rt, name: str, what: str) -> None:
    """Record the admin's request: the exit hook reads it."""
    with record.locked(rt.store.root, name) as rec:
        rec["stop"] = what


def stop_signal(zone: Zone) -> int:
    """The zone file's stop_signal (a name or a number, as `zoned run --stop-signal`)."""
    from zoned.oci.runflags import check_signal

    value = zone.get("stop_signal", "SIGTERM")
    try:
        return check_signal(str(value), "stop_signal")
    except ConfigError as e:
        raise zone.error("stop_signal", str(e)) from None


def shutdown(rt, name: str, timeout: float | None = None) -> None:
    """Ask the zone's init to stop (its stop signal, SIGKILL after the timeout); it stays
    defined and is not restarted."""
    from zoned.linux.proc import signal_pid, wait_exit

    zone = defined(name)
    if not running(rt, name):
        if record.monitor_alive(rt.store.root, name):  # between a crash and its restart
            _request(rt, name, "shutdown")
            wait_monitor(rt, name)
            return
        raise InvalidState(f"cannot shut down zone {name!r}: it is not running")
    sig = stop_signal(zone)
    _request(rt, name, "shutdown")
    timeout = float(zone.get("stop_timeout", 10) if timeout is None else timeout)
    st = rt.state(name)
    if (st.get("zoned") or {}).get("vm"):
        rt.stop(name, timeout)
    else:
        pid, start_time = st["pid"], st["zoned"]["pid_start"]
        if st["status"] == "paused":
            rt.resume(name)
        signal_pid(pid, start_time, sig)
        if not wait_exit(pid, start_time, timeout):
            signal_pid(pid, start_time, signal.SIGKILL)
            wait_exit(pid, start_time, 10)
    _finish(rt, name)


def _finish(rt, name: str) -> None:
    """After the init is gone: the monitor's hook removes the container; without a monitor
    (it was killed) nobody would, so do it here."""
    if record.monitor_alive(rt.store.root, name):
        wait_monitor(rt, name)
        return
    try:
        rt.delete(name, force=True)
    except NotFound:
        pass
    with record.locked(rt.store.root, name) as r:
        r.pop("stop", None)
        r.pop("monitor", None)


def destroy(rt, name: str) -> None:
    """Kill the zone at once (xm destroy); it stays defined."""
    defined(name)
    _request(rt, name, "destroy")
    if not running(rt, name) and not record.monitor_alive(rt.store.root, name):
        with record.locked(rt.store.root, name) as r:
            r.pop("stop", None)
        raise InvalidState(f"cannot destroy zone {name!r}: it is not running")
    try:
        rt.delete(name, force=True)
    except NotFound:
        pass
    _finish(rt, name)


def reboot(rt, name: str, timeout: float | None = None) -> int:
    """Stop the zone and boot it again at once (no back-off); the new init's pid."""
    zone = defined(name)
    if not running(rt, name):
        raise InvalidState(f"cannot reboot zone {name!r}: it is not running")
    if not record.monitor_alive(rt.store.root, name):  # none to boot it again: do it here
        shutdown(rt, name, timeout)
        return start(rt, name)
    old = rt.state(name)["pid"]
    _request(rt, name, "reboot")
    rt.stop(name, float(zone.get("stop_timeout", 10) if timeout is None else timeout))
    deadline = time.monotonic() + WAIT_MONITOR
    while time.monotonic() < deadline:
        try:
            st = rt.state(name)
            if st["status"] == "running" and st["pid"] != old:
                return st["pid"]
        except NotFound:
            pass
        if not record.monitor_alive(rt.store.root, name):
            break
        time.sleep(0.05)
    raise ZonedError(f"zone {name!r} did not come back after the reboot "
                     f"(see {record.zone_run_dir(rt.store.root, name)}/monitor.log)")


def set_autostart(name: str, enabled: bool) -> None:
    from zoned.zones.zonefile import set_key

    defined(name)
    set_key(zone_path(name), "autostart", "true" if enabled else "false")


def autostart_all(rt, images: str | None = None) -> list[tuple[str, str]]:
    """The boot path: start every zone marked autostart that is not running, in name
    order; safe to run twice. [(name, "started" | "running" | error)]"""
    out = []
    for name in names():
        try:
            zone = defined(name)
            if not zone.get("autostart"):
                continue
            if running(rt, name) or record.monitor_alive(rt.store.root, name):
                out.append((name, "running"))
                continue
            start(rt, name, images)
            out.append((name, "started"))
        except ZonedError as e:
            out.append((name, f"error: {e}"))
    return out


def shutdown_all(rt, timeout: float | None = None) -> list[tuple[str, str]]:
    """Shut every running zone down (the systemd unit's ExecStop), all at once: each one's
    wait for its stop timeout overlaps the others' (in reverse name order of starting)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> tuple[str, str]:
        try:
            shutdown(rt, name, timeout)
            return name, "shut down"
        except ZonedError as e:
            return name, f"error: {e}"

    todo = [n for n in reversed(names()) if running(rt, n)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, todo))


def clone(rt, src: str, new: str, overrides: list[str] | None = None) -> Zone:
    """A new zone file from SRC's (a new name and uuid; no fixed ip or mac; KEY=VALUE
    overrides, values in YAML) and a copy-on-write copy of SRC's writable layer (reflink
    where the filesystem can)."""
    import subprocess

    import yaml

    from zoned.oci.spec import check_id
    from zoned.zones.zonefile import parse, write_text

    check_id(new)
    zone = defined(src)
    if os.path.exists(zone_path(new)):
        raise ConfigError(f"zone {new!r} is already defined ({zone_path(new)})")
    if running(rt, src):
        raise InvalidState(f"cannot clone zone {src!r}: it is running (its layer would "
                           "be copied mid-write; shut it down first)")
    data = dict(zone.data)
    data["name"] = new
    data.pop("uuid", None)
    data.pop("hostname", None)
    data["autostart"] = False
    for vif in data.get("vif") or []:
        vif.pop("ip", None)
        vif.pop("mac", None)
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq or key in ("name", "uuid"):
            raise ConfigError(f"invalid --set {item!r}: KEY=VALUE (not name or uuid)")
        try:
            data[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"invalid --set {item!r}: {e}") from None
    text = f"# cloned from {src}\n" + yaml.safe_dump(data, sort_keys=False)
    parse(text, zone_path(new))  # the overrides are checked as a defined file is
    src_layer = record.data_dir(rt.store.data, src)
    dst_layer = record.data_dir(rt.store.data, new)
    if os.path.isdir(os.path.join(src_layer, "upper")):
        os.makedirs(dst_layer, 0o700, exist_ok=True)  # (zoned.storage.share_with_zone_root)
        p = subprocess.run(["cp", "-a", "--reflink=auto", os.path.join(src_layer, "upper"),
                            os.path.join(dst_layer, "upper")], capture_output=True, text=True)
        if p.returncode != 0:
            from zoned.linux.files import rmtree

            rmtree(dst_layer)
            raise ZonedError(f"copying {src}'s layer failed: {p.stderr.strip()}")
    import uuid

    text += f"uuid: {uuid.uuid4()}\n"
    write_text(zone_path(new), text)
    return parse(text, zone_path(new))


# `zoned update` flag -> the zone file's key (`update --config`, as virsh setmem/setvcpus)
UPDATE_KEYS = {"memory": "memory", "cpus": "vcpus", "cpuset_cpus": "cpus",
               "pids_limit": "pids"}


def update_config(name: str, flags: dict) -> Zone:
    """Write resource changes into a defined zone's file (next boot's limits): only the
    flags a zone file has a key for."""
    from zoned.zones.zonefile import set_keys

    zone = defined(name)
    changes = {}
    for flag, value in flags.items():
        if value is None:
            continue
        if flag not in UPDATE_KEYS:
            raise ConfigError(f"invalid --{flag.replace('_', '-')} with --config: a zone "
                              "file has no key for it")
        key = UPDATE_KEYS[flag]
        if key == "memory" and "maxmem" in zone.data:
            key = "maxmem"
        changes[key] = str(value)
    if not changes:
        raise ConfigError("update --config: nothing to change")
    return set_keys(zone.path, changes)
