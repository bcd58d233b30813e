"""podman's commands on existing zones that zoned lacked: wait, restart, port, rename, top.
(cp is zoned.cli.copy; attach, events: zoned.cli.attach.)"""
from __future__ import annotations

import os
import sys

from zoned.cli.common import runtime
from zoned.cli.describe import recorded_code
from zoned.errors import ZonedError


def cmd_wait(args) -> int:
    """Block until each zone has stopped; print its exit code (-1 if unknown), as podman."""
    rt = runtime(args)
    last = 0
    for cid in args.ids:
        rt.state(cid)  # NotFound first
        while True:
            st = rt.state(cid)
            if st["status"] == "stopped":
                break
            rt.wait(cid, args.interval)
        code = recorded_code(rt, cid)
        last = -1 if code is None else code
        print(last)
    return 0


def cmd_restart(args) -> int:
    """Stop (as `zoned stop`) and start again with the same config, writable layer, network
    addresses and log: podman's restart."""
    from zoned.cli.containers import stop_timeout
    from zoned.errors import InvalidState

    rt = runtime(args)
    for cid in args.ids:
        st = rt.state(cid)
        vm = (st.get("zoned") or {}).get("vm")
        if vm and not vm.get("image"):
            raise InvalidState(f"cannot restart {cid!r}: a VM booted from an OCI bundle is "
                               "created again by its client (runc's restart is none)")
        if os.path.isdir(os.path.join(rt.store.root, ".zones", cid)):  # zoned.zones'
            from zoned.zones import commands

            commands.reboot(rt, cid, args.time)
            print(cid)
            continue
        images = _check_bootable(st, rt.config(cid), args.images)  # before it stops
        if st["status"] != "stopped":
            rt.stop(cid, stop_timeout(rt, cid, args.time))
        code = _boot_again(rt, cid, images)
        if code:
            return code  # the worker printed why
        print(cid)
    return 0


def start_made(rt, cid: str, images: str | None) -> int | None:
    """podman's `start` of a zone zoned made itself (from an image or --rootfs, not an OCI
    bundle): a stopped one boots again as `restart` boots it, and its name is printed; a
    running one is left as it is, silently (as podman 4.3). None for anything else:
    runc's start of a created container (what podman and containerd call) goes on, as
    does its error for the rest."""
    st = rt.state(cid)
    if st.get("bundle") != rt.store.dir(cid) or st["status"] not in ("running", "stopped"):
        return None
    if st["status"] == "stopped":
        code = _boot_again(rt, cid, _check_bootable(st, rt.config(cid), images))
        if code:
            return code  # the worker printed why
        print(cid)
    return 0


def _boot_again(rt, cid: str, images: str | None = None) -> int:
    """Re-create a stopped zone in place (_check_bootable first): its data dir (upper layer,
    log) is handed to create as the caller's (kept over the delete), then given back to
    the zone. A VM boots its image again, on the same network addresses, its log going
    on: a reboot (its writable layer was guest RAM), as `virsh reboot` or podman's restart
    of a Kata container."""
    cfg = rt.config(cid)
    with rt.store.lock(cid):
        st = rt.store.read_state(cid)
        record = rt.store.record(cid, _record_names(rt, cid, st))
        z = st.setdefault("zoned", {})
        kept = bool(z.get("kept_data"))
        z["kept_data"] = True
        rt.store.write_state(cid, st)
    rt.delete(cid, force=True)
    me = os.getpid()
    try:
        code = _start_in_place(rt, cid, cfg, z, images)
    except BaseException:
        if os.getpid() == me:  # (not in start_reaped's worker: it exits with a code)
            _record_again(rt, cid, record)
        raise
    if code:
        _record_again(rt, cid, record)
        return code
    if not kept:
        with rt.store.lock(cid):
            st = rt.store.read_state(cid)
            st["zoned"].pop("kept_data", None)
            rt.store.write_state(cid, st)
    return 0


def _record_names(rt, cid: str, st: dict) -> tuple[str, ...]:
    """What a stopped zone's record is (config, state, exit status; a VM's guest lines and
    QEMU's end), written back as it was if the new start fails."""
    names = ("config.json", "state.json", "exit")
    vm = (st.get("zoned") or {}).get("vm")
    if vm and vm.get("dir"):
        from zoned.vm.machine import VMPaths

        rel = os.path.relpath(vm["dir"], rt.store.dir(cid))
        if not rel.startswith(".."):
            names += (VMPaths(rel).ctl, VMPaths(rel).end)
    return names


def _record_again(rt, cid: str, record: dict[str, bytes]) -> None:
    """A restart whose new start failed (its error is said) leaves the zone listed and
    stopped as before, as podman's does; its address was given back (podman's stopped
    containers hold none either). Its writable layer and log were kept throughout."""
    try:
        rt.store.record_again(cid, record)
    except (OSError, ZonedError) as e:
        print(f"zoned: {cid}: the stopped zone's record could not be written back ({e}); "
              "`zoned gc` removes its data", file=sys.stderr)


def _start_in_place(rt, cid: str, cfg: dict, z: dict, images: str | None) -> int:
    """The new start of _boot_again, the old record gone: 0, or the worker's exit code
    (it printed why)."""
    from zoned.network.attach import setup_for_restore

    data, described, log = z.get("data"), z.get("network"), bool(z.get("log"))
    net = setup_for_restore(rt.store.root, cid, described, cfg.get("hostname") or cid) \
        if described else None

    def start() -> tuple[str, int]:
        if z.get("vm"):
            from zoned.backends.vm import VmBackend

            started = VmBackend(rt).create(cid, cfg, image=z["vm"]["image"], network=net,
                                           log=log, data_dir=data, wait=True,
                                           autoremove=bool(z.get("autoremove")),
                                           images=images)
        else:
            started = rt.run(cid, cfg, log=log, network=net, data_dir=data,
                             autoremove=bool(z.get("autoremove")))
        return rt.store.dir(cid), started.pid

    if log and not z.get("vm"):  # its logger is the init's parent again: the next exit
        # code is kept (a VM's is kept by QEMU's parent, zoned-vmwrap)
        from zoned.cli.detach import start_reaped

        return start_reaped(start)
    start()
    return 0


def _check_bootable(st: dict, cfg: dict, images: str | None) -> str | None:
    """Before a restart deletes the record: what its boot needs is there (the zone's image
    layer; the VM's image, in the store it was made from unless --images says another),
    so a restart that cannot boot fails with the zone still listed, as podman's. Returns
    the image store for the boot."""
    from zoned.errors import ConfigError
    from zoned.oci.spec import ANN_LOWER

    vm = (st.get("zoned") or {}).get("vm")
    if vm:
        from zoned.images.store import ImageStore

        images = images or vm.get("images")
        ImageStore(images).get(vm["image"])  # (ImageError, one line, if it is gone)
        return images
    lower = (cfg.get("annotations") or {}).get(ANN_LOWER)
    if lower and not os.path.isdir(lower):
        raise ConfigError(f"cannot restart {st['id']!r}: its image layer {lower!r} is gone "
                          "(removed or rebuilt image)")
    return images


def cmd_port(args) -> int:
    """The published ports, as podman prints them: 80/tcp -> 0.0.0.0:8080, or the host
    address a port is published on (-p 127.0.0.1:8080:80: 127.0.0.1:8080)."""
    rt = runtime(args)
    st = rt.state(args.id)
    ports = ((st.get("zoned") or {}).get("network") or {}).get("ports") or []
    for p in ports:
        spec = f"{p['port']}/{p['proto']}"
        if args.port in (None, spec, str(p["port"])):
            host = f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}"
            print(host if args.port else f"{spec} -> {host}")
    return 0


def cmd_rename(args) -> int:
    """Rename a stopped zone or VM: its state dir (a VM's files inside it) and data dir
    (its log) move to the new name, and every path its record holds with them. The new
    name stays reserved until the state dir replaces its (empty) reservation: a `run
    --name NEW` meanwhile is refused, rather than taking the data dir for an orphan."""
    from zoned.errors import InvalidState
    from zoned.oci.spec import check_id
    from zoned.oci.status import Status

    rt = runtime(args)
    old, new = check_id(args.old), check_id(args.new)
    st = rt.state(old)
    z = st.get("zoned") or {}
    if z.get("network") or os.path.isdir(os.path.join(rt.store.root, ".zones", old)):
        raise InvalidState(f"cannot rename {old!r}: zones on a network and zones under a "
                           "monitor keep their name for now")
    with rt.store.lock(old):
        st = rt.store.read_state(old)  # what it is now, under its lock
        status = rt.live_status(old, st)
        if status is not Status.STOPPED:  # (a created zone's init is in its name's cgroup)
            raise InvalidState(f"cannot rename {old!r}: it is {status} (stop it first)")
        new_dir = rt.store.reserve(new)  # the name is ours from here, or in use: an error
        try:
            _rename_stopped(rt, old, new, st, new_dir)
        except BaseException:
            try:
                os.rmdir(new_dir)  # (still the empty reservation)
            except OSError:
                pass
            raise
    return 0


def _rename_stopped(rt, old: str, new: str, st: dict, new_dir: str) -> None:
    """cmd_rename's moves, `new` reserved (new_dir, empty): cgroup, data dir, the record's
    paths, then the state dir onto the reservation."""
    from zoned.storage import zone_dir

    _cgroup_renamed(rt, old, new, st)
    data = (st.get("zoned") or {}).get("data")
    if data and os.path.isdir(data) and data == zone_dir(rt.store.data, old):
        target = zone_dir(rt.store.data, new)
        if os.path.lexists(target):  # an orphan: the name was free (make_zone_dir's way)
            from zoned.linux.files import rmtree

            rmtree(target)
        os.rename(data, target)
        st["zoned"]["data"] = target
        if st["zoned"].get("log"):
            st["zoned"]["log"] = os.path.join(target, os.path.basename(st["zoned"]["log"]))
    old_dir = rt.store.dir(old)
    for key in ("bundle", "rootfs"):
        if str(st.get(key, "")).startswith(old_dir):
            st[key] = new_dir + st[key][len(old_dir):]
    vm = st["zoned"].get("vm")
    if vm and str(vm.get("dir", "")).startswith(old_dir + "/"):
        vm["dir"] = new_dir + vm["dir"][len(old_dir):]
    st["id"] = new
    rt.store.write_state(old, st)
    os.rename(old_dir, new_dir)  # (onto the empty reservation: it replaces it)


def _cgroup_renamed(rt, old: str, new: str, st: dict) -> None:
    """A stopped zone's or VM's cgroup of its name (empty since its end) goes, and its
    record names the new name's: a later container called `old` would otherwise share
    it, and the rm of the renamed one would kill what is in it. (A config's own
    cgroupsPath is left as it is.)"""
    from zoned.cgroups import open_cgroup
    from zoned.errors import InvalidState
    from zoned.runtime.cgroup_paths import default_cgroups_path, shared_memory_path

    path = st["zoned"].get("cgroup") or default_cgroups_path(old, rt.store.root)
    own, renamed = (default_cgroups_path(n, rt.store.root) for n in (old, new))
    shared = bool(st["zoned"].get("shared_memory"))
    if path != (shared_memory_path(own) if shared else own):
        return
    cgroup = open_cgroup(path, shared)
    if cgroup.exists() and not cgroup.remove_if_empty():
        raise InvalidState(f"cannot rename {old!r}: its cgroup {path} still holds processes")
    st["zoned"]["cgroup"] = shared_memory_path(renamed) if shared else renamed


def cmd_top(args) -> int:
    """The zone's processes as ps(1) shows them (podman top's default columns)."""
    import subprocess

    from zoned.errors import InvalidState

    rt = runtime(args)
    st = rt.state(args.id)
    if st["status"] == "stopped":
        raise InvalidState(f"cannot list processes of {args.id!r}: it is stopped")
    if (st.get("zoned") or {}).get("vm"):
        return _top_vm(st, args.fields)
    pids = rt.cgroup(st).pids()
    fields = args.fields or ["user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args"]
    sys.stdout.flush()
    return subprocess.run(["ps", "-o", ",".join(fields), "-p",
                           ",".join(str(p) for p in pids) or "0"]).returncode and 0


VM_TOP_FIELDS = ["user", "pid", "ppid", "tty", "args"]  # what busybox's ps -o knows of
# podman top's defaults (no %CPU, ELAPSED or TIME)


def _top_vm(st: dict, fields: list[str] | None) -> int:
    """A VM's processes: the guest's ps through its agent (podman top of a Kata container
    asks its agent too), without the guest kernel's threads (PID 2, kthreadd, and its
    children) and that ps itself, where the columns show pid and ppid. The guest's words
    are printed with control characters escaped."""
    import tempfile

    from zoned.backends.vm import vm_of
    from zoned.errors import ZonedError
    from zoned.vm.agent import run_in_guest
    from zoned.vm.config import guest_text

    fields = fields or VM_TOP_FIELDS
    own: list[int] = []
    with tempfile.TemporaryFile() as out:
        code, why = run_in_guest(vm_of(st)["dir"], ["ps", "-o", ",".join(fields)],
                                 stdout=out.fileno(), on_started=own.append)
        out.seek(0)
        lines = out.read(1 << 20).decode(errors="replace").splitlines()
    if code:
        raise ZonedError(f"top: the guest's ps: {why or f'exit {code}'}")
    if "pid" in fields and "ppid" in fields:
        pid, ppid = fields.index("pid"), fields.index("ppid")
        hidden = {"2", *map(str, own)}

        def shown(line: str) -> bool:
            words = line.split()
            return len(words) <= max(pid, ppid) or not (
                words[pid] in hidden or words[ppid] == "2")
        lines = lines[:1] + [ln for ln in lines[1:] if shown(ln)]
    print("\n".join(guest_text(ln) for ln in lines))
    return 0


def cmd_attach(args) -> int:
    """A detached zone's terminal (run -dt) until it stops or the detach keys are typed;
    else its output from now on, until it stops (its log, followed from the end): a zone
    without a terminal has no stdin. A zone with a console (zone files, run --restart -t)
    is `zoned console`."""
    from zoned import logs
    from zoned.cli.logview import TailWriter
    from zoned.errors import InvalidState

    rt = runtime(args)
    st = rt.state(args.id)
    log = (st.get("zoned") or {}).get("log")
    if not log:
        raise InvalidState(f"cannot attach to {args.id!r}: it was not detached (its output "
                           "goes to the terminal that ran it)")
    if st["status"] == "stopped":
        raise InvalidState(f"cannot attach to {args.id!r}: it is stopped")
    if (st.get("zoned") or {}).get("attach"):  # a terminal: zoned.cli.attach_tty
        from zoned.cli.attach_tty import attach, connect, parse_keys

        keys = parse_keys(args.detach_keys)
        sock, master = connect(rt.store.dir(args.id), args.id)
        attach(sock, master, keys, None if args.no_stdin else 0)
        return 0  # detached, or the zone ended: 0 either way, as podman 4.3's attach

    def finished() -> bool:
        st = rt.state(args.id)
        return st["status"] == "stopped" and not logs.logger_alive(st["zoned"].get("logger"))
    out = TailWriter(sys.stdout.buffer, 0)
    try:
        logs.follow(log, out, finished)
    except KeyboardInterrupt:
        return 0
    out.flush()
    return 0
