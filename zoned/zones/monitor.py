"""The Python halves of a zone's monitor (csrc/monitor.c does the waiting):

  launch()   what `zoned start` runs: starts zoned-monitor detached (its own session, so
             it outlives the CLI) and returns once the zone runs or failed to;
  boot()     `zoned zone-boot NAME`, the monitor's child: creates and starts the zone
             from its file, reports the init's pid (and pty master) and exits, so the
             init is re-parented to the monitor (a child subreaper);
  exited()   `zoned zone-exited NAME CODE`, run by the monitor when the init exits:
             records the exit and applies the zone's policy (zoned.zones.policy);
             returns RESTART to have the monitor boot the zone again.
"""
from __future__ import annotations

import os
import sys
import time

from zoned.errors import NotFound, ZonedError
from zoned.zones import record

MONITOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "libexec", "zoned-monitor")
RESTART = 10  # the hook's exit status that makes the monitor boot the zone again


def _zoned_argv(root: str, data: str, images: str | None) -> list[str]:
    argv = [sys.executable, "-m", "zoned", "--root", root, "--data-root", data]
    return argv + (["--images", images] if images else [])


def launch(root: str, data: str, name: str, images: str | None = None) -> int:
    """Start the zone's monitor, which boots the zone; the init's pid, or the boot's error
    (ZonedError with its exit code)."""
    if not os.access(MONITOR, os.X_OK):
        raise ZonedError(f"{MONITOR} is missing (run `make setup`)")
    run = record.zone_run_dir(root, name)
    os.makedirs(run, 0o700, exist_ok=True)
    for stale in ("exit", "console.sock"):
        try:
            os.unlink(os.path.join(run, stale))
        except FileNotFoundError:
            pass
    zoned = _zoned_argv(root, data, images)
    argv = [MONITOR, run, "", *zoned, "zone-boot", name, "--", *zoned, "zone-exited", name]
    r, w = os.pipe()
    log = os.open(os.path.join(run, "monitor.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    child = os.fork()
    if child == 0:  # pragma: no cover - becomes the monitor
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.set_inheritable(w, True)
            argv[2] = str(w)
            os.execv(MONITOR, argv)
        finally:
            os._exit(127)
    os.close(w)
    os.close(log)
    os.waitpid(child, 0)
    from zoned.linux.files import read_to_eof

    out = read_to_eof(r)
    os.close(r)
    text = out.decode(errors="replace")
    if text.startswith("ok "):
        return int(text.split()[1])
    if text.startswith("err "):
        _, code, message = (text.split(" ", 2) + ["", ""])[:3]
        err = ZonedError(message.strip() or "the zone did not boot")
        err.exit_code = int(code) if code.lstrip("-").isdigit() else 125
        raise err
    raise ZonedError(f"the zone's monitor did not start (see {run}/monitor.log)")


def boot(root: str, data: str, name: str, images: str | None = None) -> int:
    """The monitor's boot worker: create and start zone `name`, report to the monitor."""
    import socket

    fd = int(os.environ.get("ZONED_MONITOR_FD", "-1"))
    if fd < 0:
        raise ZonedError("zone-boot is run by zoned-monitor (use `zoned start NAME`)")
    sock = socket.socket(fileno=fd)
    try:
        pid, master = _boot(root, data, name, images)
    except ZonedError as e:
        sock.send(f"err {e.exit_code} {e}".encode()[:1000])
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the monitor must hear of any failure
        sock.send(f"err 125 internal error: {type(e).__name__}: {e}".encode()[:1000])
        return 125
    socket.send_fds(sock, [f"ok {pid}".encode()], [master] if master is not None else [])
    return 0


def _boot(root: str, data: str, name: str, images: str | None) -> tuple[int, int | None]:
    from zoned import api
    from zoned.linux.proc import proc_start_time
    from zoned.runtime import Runtime
    from zoned.zones.convert import oci_config
    from zoned.zones.zonefile import load, zone_path

    data_dir = None
    if os.path.exists(zone_path(name)):
        zone = load(zone_path(name))
        opts, cfg = oci_config(zone, images, (root, data))
        data_dir = record.data_dir(data, name)  # a defined zone's layer outlives boots
    else:
        from zoned.zones.transient import load as load_transient

        found = load_transient(root, name)
        if found is None:
            raise NotFound(f"zone {name!r} is not defined (no {zone_path(name)})")
        zone, opts = found
        cfg = api.build_config(opts, images)
    rt = Runtime(root, data)
    clear_stopped(rt, name)
    with record.locked(root, name) as rec:
        ppid = os.getppid()
        rec["monitor"] = {"pid": ppid, "start": proc_start_time(ppid), "keeper": _ppid(ppid)}
        rec["booted"] = time.time()
        rec.setdefault("restarts", 0)
        restore_from = rec.pop("restore_from", None)
    if restore_from:  # zoned restore FILE: once; a later restart boots the zone file
        return boot_restored(rt, name, restore_from, images), None
    if data_dir is not None:  # its files as before a restore that was killed
        from zoned.checkpoint.incoming import put_layer_back

        put_layer_back(os.path.join(data_dir, "upper"))
    net = api.network_for(opts, rt, name)
    if zone.get("backend") == "vm":
        from zoned.backends.vm import VmBackend

        started = VmBackend(rt).create(name, cfg, image=opts.image, network=net, log=True,
                                       wait=True, data_dir=data_dir)  # (its log goes on)
        return started.pid, None
    started = rt.run(name, cfg, log=not opts.tty, network=net, data_dir=data_dir)
    return started.pid, started.master


def _ppid(pid: int) -> int | None:
    """The parent of `pid` (the monitor's keeper half), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def clear_stopped(rt, name: str) -> None:
    """Remove the zone's last container (stopped: preserved, or left by a reboot) before
    booting it again; its writable layer is the zone's and stays."""
    from zoned.oci.status import Status

    try:
        st = rt.state(name)
    except NotFound:
        return
    if st["status"] is not Status.STOPPED and st["status"] != "stopped":
        raise ZonedError(f"zone {name!r} is already running")
    rt.delete(name, force=True)


def exited(root: str, data: str, name: str, code: int) -> int:
    """The monitor's exit hook: record the exit, apply the policy; RESTART or 0."""
    from zoned.runtime import Runtime
    from zoned.zones import policy
    from zoned.zones.zonefile import load, zone_path

    rt = Runtime(root, data)
    try:
        zone = load(zone_path(name))
    except ZonedError:
        from zoned.zones.transient import load as load_transient

        found = load_transient(root, name)  # `zoned run -d --restart`
        zone = found[0] if found else None  # else undefined while it ran: no restart
    now = time.time()
    if code != policy.BOOT_FAILED:
        try:
            st = rt.state(name)
            if (st.get("zoned") or {}).get("vm") and st.get("exit_code") is not None:
                code = int(st["exit_code"])  # the guest's, not QEMU's
            rt.record_exit(name, code)
        except NotFound:
            pass
    with record.locked(root, name) as rec:
        event = policy.event_of(code) if code != policy.BOOT_FAILED else "crash"
        requested = rec.pop("stop", None)
        if now - rec.get("booted", now) >= policy.STREAK_RESET:
            rec["streak"] = 0
        rec["last_exit"] = {"code": code, "time": now, "event": event,
                            "requested": requested}
        action = policy.decide(zone, event, requested, rec.get("restarts", 0)) \
            if zone is not None else "destroy"
        rec["action"] = action
        delay = 0.0
        if action == "restart":
            rec["restarts"] = rec.get("restarts", 0) + 1
            if requested != "reboot":
                rec["streak"] = rec.get("streak", 0) + 1
                delay = policy.backoff(rec["streak"])
            rec["restart_times"] = (rec.get("restart_times") or [])[-19:] + [now]
        else:
            rec.pop("monitor", None)
    if action in ("restart", "destroy"):
        try:
            rt.delete(name, force=True)
        except NotFound:
            pass
    if action != "restart":
        return 0
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:  # a shutdown or destroy meanwhile cancels it
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if record.read(root, name).get("stop"):
            break
    with record.locked(root, name) as rec:
        if rec.get("stop"):
            rec["last_exit"]["requested"] = rec.pop("stop")
            rec.pop("monitor", None)
            return 0
    return RESTART


def boot_restored(rt, name: str, path: str, images: str | None = None) -> int:
    """The boot worker's restore (zoned.zones.monitor): the archive's container, restored
    as `name`; criu --restore-detached leaves its init to the monitor (the subreaper).
    A saved VM is booted from its file (zoned.backends.vm_save): zoned-vmwrap, QEMU's
    parent, is the worker's child, and so the monitor's once the worker has exited."""
    import shutil
    import tempfile

    from zoned.checkpoint import archive, restore as restore_mod, scratch
    from zoned.vm.savefile import is_save_file

    if is_save_file(path):
        from zoned.backends import vm_save

        with vm_save.read(path, "restore", "zone") as saved:
            if saved.header["id"] != name:
                raise ZonedError(f"restore {path}: the file holds zone "
                                 f"{saved.header['id']!r}, not {name!r}")
            return vm_save.restore(rt, saved, name=name, images=images,
                                   data_dir=record.data_dir(rt.store.data, name)).pid

    tmp = tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=scratch.scratch_dir(rt))
    try:
        archive.import_tar(path, tmp)
        st = restore_mod.restore(rt, tmp, name=name, consume=True,  # in the zone's layer,
                                 data_dir=record.data_dir(rt.store.data, name))  # as a boot
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        scratch.scratch_done(rt)
    return int(st["pid"])
