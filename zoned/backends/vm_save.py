"""A running VM saved into one file, and booted again from one (zoned.vm.savefile says
what the file holds): what `zoned save`/`restore` of a VM zone and `zoned checkpoint
--export`/`restore --import` of a VM container share. It is QEMU's own migration, into a
file: the guest is stopped, its state streamed out, the VM removed; a restore boots QEMU
paused with `-incoming`, as a migration's destination does, feeds it the stream, and
lets the guest run.

Who owns what, so that `zoned gc` can finish whatever a killed zoned left:
  save     holds the container's lock throughout, and records zoned.saving {pid, start,
           tmp, path} in its state before it writes anything. The temp file (O_EXCL,
           0600, an unguessable name beside FILE) is the save's until it is renamed to
           FILE. Once the stream is complete and fsynced the mark says "complete": from
           there a save is finished forward (gc renames the temp file into place and
           removes the VM); before that it is rolled back (gc removes the temp file and
           the stopped guest runs on).
  restore  the booted VM carries the "incoming" mark with the restoring process, as a
           migration's destination does: gc removes a VM whose restorer died before the
           guest ran.
"""
from __future__ import annotations

import os
import time

from zoned.errors import ConfigError, InvalidState, ZonedError
from zoned.oci.status import Status
from zoned.testhooks import hit


def save(rt, cid: str, path: str, *, kind: str, what: str,
         leave_running: bool = False, zone_file: str | None = None) -> dict:
    """Save running VM `cid` into `path` (kind "zone" or "container": what restore
    accepts it as), then remove the VM unless leave_running. `what` names the argument
    in errors; zone_file: a defined zone's file, kept in the header (a host where the zone
    is not defined restores it from there). Returns a summary: bytes, seconds, QEMU's RAM
    figure."""
    import tempfile

    from zoned.checkpoint.private import check_parents

    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"{what} {path}: no such directory {os.path.dirname(path)}")
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path}: a directory; give a file's path")
    check_parents(path, what)
    t0 = time.monotonic()
    with rt.store.lock(cid):
        st = rt.state(cid)
        header = _describe(rt, cid, st, kind)
        if zone_file is not None:
            header["zone"] = zone_file
        vmdir = st["zoned"]["vm"]["dir"]
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                   dir=os.path.dirname(path))
        try:
            _mark(rt, cid, {"tmp": tmp, "path": path})
            hit("vmsave:marked")
            summary = _write(vmdir, fd, header)
            _mark(rt, cid, {"tmp": tmp, "path": path, "complete": True})
            hit("vmsave:complete")
            _commit_file(tmp, path, what)
        except BaseException as e:
            _unlink(tmp)
            from zoned.vm.qmp import resume_guest

            if resume_guest(vmdir):
                _mark(rt, cid, None)
            elif isinstance(e, ZonedError):  # (the mark stays: gc resumes it, see below)
                raise ZonedError(f"{e}; QEMU does not answer now: `zoned gc` resumes the "
                                 "guest once it does") from e
            raise
        finally:
            os.close(fd)
        if leave_running:
            from zoned.vm.qmp import resume_guest

            resume_guest(vmdir)
            _mark(rt, cid, None)
    if not leave_running:
        rt.delete(cid, force=True)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary


def _describe(rt, cid: str, st: dict, kind: str) -> dict:
    """The file's header, and every refusal made before the guest is touched."""
    from zoned.backends.vm import refuse_unportable, vm_of
    from zoned.images.store import ImageStore

    vm = vm_of(st)
    if vm is None:
        raise InvalidState(f"cannot save container {cid!r}: it is not a VM")
    if st["status"] is not Status.RUNNING:
        raise InvalidState(f"cannot save container {cid!r}: it is {st['status']}")
    z = st["zoned"]
    if z.get("incoming") or z.get("saving"):
        raise InvalidState(f"cannot save container {cid!r}: a migration, save or restore "
                           "of it has not finished (`zoned gc` finishes a dead one)")
    cfg = refuse_unportable(rt, cid, vm, "save")
    header = {"kind": kind, "id": cid, "accel": vm.get("accel") or "tcg",
              "config": _portable_config(cfg, rt.store.dir(cid)),
              "image": {"name": vm["image"],
                        "digest": ImageStore(vm.get("images")).digest(vm["image"])},
              "network": z.get("network"), "log": bool(z.get("log")),
              "autoremove": bool(z.get("autoremove")), "saved": time.time()}
    from zoned.vm.savefile import check_header

    return check_header(header, f"cannot save container {cid!r}")  # what restore reads


def _portable_config(cfg: dict, state_dir: str) -> dict:
    """The config less the binds of the network's files from the state dir (/etc/hosts,
    resolv.conf, hostname), which a restore's network set-up makes anew, and less zoned's
    own annotations (the image's rootfs path here): a saved VM names no host path."""
    from zoned.checkpoint.archive import is_bind
    from zoned.oci.spec import zoned_own_annotations

    out = dict(cfg)
    out["mounts"] = [m for m in cfg.get("mounts") or [] if not (
        is_bind(m) and str(m.get("source", "")).startswith(state_dir + "/"))]
    own = zoned_own_annotations()
    out["annotations"] = {k: v for k, v in (cfg.get("annotations") or {}).items()
                          if k not in own}
    return out


def _write(vmdir: str, fd: int, header: dict) -> dict:
    """Header, then the stopped guest's stream, then its length and digest (complete)."""
    from zoned.migration.vm import MAX_BANDWIDTH
    from zoned.vm.qmp import QMP
    from zoned.vm.savefile import complete, stream_out, write_prefix

    offset = write_prefix(fd, header)
    os.lseek(fd, offset, os.SEEK_SET)
    with QMP(vmdir, timeout=30) as q:
        q.execute("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH})
        q.execute("stop")
        n, digest, info = stream_out(q, fd)
    if info.get("status") != "completed":
        raise ZonedError(f"QEMU's save {info.get('status')}: "
                         f"{info.get('error-desc', 'no reason given')}")
    complete(fd, n, digest)
    return {"bytes": offset + n, "ram_bytes": (info.get("ram") or {}).get("transferred", 0),
            "qemu_ms": info.get("total-time", 0)}


def _mark(rt, cid: str, saving: dict | None) -> None:
    """zoned.saving in the container's state (the store lock held): who saves where."""
    from zoned.linux.proc import proc_start_time

    st = rt.store.read_state(cid)
    if saving is None:
        st["zoned"].pop("saving", None)
    else:
        st["zoned"]["saving"] = {"pid": os.getpid(), "start": proc_start_time(os.getpid()),
                                 **saving}
    rt.store.write_state(cid, st)


def _commit_file(tmp: str, path: str, what: str) -> None:
    """The complete temp file becomes `path` (its directories checked again: they are
    what keeps another user from swapping it)."""
    from zoned.checkpoint.private import check_parents

    check_parents(path, what)
    os.replace(tmp, path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- restore -----------------------------------------------------------------------------
def read(path: str, what: str, kind: str):
    """The saved VM at `path`, opened and checked (zoned.vm.savefile.open_saved), of
    `kind`; the caller closes it (close())."""
    from zoned.vm.savefile import open_saved

    saved = open_saved(os.path.abspath(path), what)
    if saved.header["kind"] != kind:
        saved.close()
        other = "a defined zone's (zoned restore FILE)" if saved.header["kind"] == "zone" \
            else "a container's (zoned restore --import FILE)"
        raise ConfigError(f"{what} {path}: the file is {other} save")
    return saved


def restore(rt, saved, *, name: str | None = None, images: str | None = None,
            data_dir: str | None = None):
    """Boot the saved VM as container `name` (the saved one's by default) and let it run
    once QEMU has its whole state: a VmStarted. Anything that fails removes the VM before
    its guest ran. data_dir: a zone's layer dir, where its log goes on."""
    from zoned.backends.vm import VmBackend
    from zoned.migration.vm import check_incoming
    from zoned.oci import spec as specmod
    from zoned.vm.qmp import QMP
    from zoned.vm.savefile import stream_in

    h = saved.header
    cid = name or h["id"]
    specmod.check_id(cid)
    problems = check_incoming(rt, {"id": cid, "image": h["image"]["name"],
                                   "digest": h["image"]["digest"], "accel": h["accel"],
                                   "network": h.get("network")}, images)
    if problems:
        raise ConfigError(f"cannot restore {cid!r}: " + "; ".join(problems))
    network = None
    if h.get("network"):
        from zoned.network.attach import setup_for_restore

        network = setup_for_restore(rt.store.root, cid, h["network"],
                                    h["config"].get("hostname") or cid)
    backend = VmBackend(rt)
    started = backend.create(cid, h["config"], image=h["image"]["name"], network=network,
                             log=h["log"], autoremove=h["autoremove"], accel=h["accel"],
                             incoming="defer", images=images, data_dir=data_dir)
    try:
        with QMP(started.vmdir, timeout=30) as q:
            stream_in(q, saved)
        backend.commit_incoming(cid)
    except BaseException:
        try:
            rt.delete(cid, force=True)
        except ZonedError:
            pass  # (gc: the incoming mark names this process)
        raise
    return started


# -- gc ----------------------------------------------------------------------------------
def finish_interrupted(rt, cid: str, st: dict, dry_run: bool = False) -> str | None:
    """gc's part: a save whose process died (the store lock is free and the mark's
    process gone). Complete: its file goes into place and the VM is removed. Not
    complete: the temp file goes and the guest runs on. A line saying which, or None
    for a container with no dead save."""
    from zoned.linux.proc import proc_start_time

    saving = (st.get("zoned") or {}).get("saving")
    if not saving or proc_start_time(saving.get("pid") or 0) == saving.get("start"):
        return None
    tmp, path = saving.get("tmp") or "", saving.get("path") or ""
    why = ""
    if saving.get("complete") and not dry_run:
        try:
            if os.path.lexists(tmp) and _is_temp_of(tmp, path):
                _commit_file(tmp, path, "save")
            rt.release(cid, st)
            return f"container {cid}: save that died once complete ({path} written, " \
                "VM removed)"
        except (OSError, ConfigError) as e:  # its place is not safe now: undone instead
            why = f" ({path}: {getattr(e, 'strerror', None) or e})"
    elif saving.get("complete"):
        return f"container {cid}: save that died once complete (to finish)"
    if not dry_run:
        _unlink_temp(tmp, path)
        from zoned.vm.qmp import resume_guest

        if not resume_guest(st["zoned"]["vm"]["dir"]):  # (a wedged QEMU: the next gc)
            return f"container {cid}: save that died{why}: {tmp} removed; its QEMU " \
                "does not answer, its guest is resumed once it does"
        _mark(rt, cid, None)
        _clear_zone_stop(rt, cid)
    return f"container {cid}: save that died{why}: its guest runs on, {tmp} removed"


def _is_temp_of(tmp: str, path: str) -> bool:
    """Whether `tmp` is a name save gives a temp file for `path` (gc touches no other)."""
    base = os.path.basename(tmp)
    return os.path.dirname(tmp) == os.path.dirname(path) and \
        base.startswith(f".{os.path.basename(path)}.") and base.endswith(".part")


def _unlink_temp(tmp: str, path: str) -> None:
    if tmp and _is_temp_of(tmp, path):
        _unlink(tmp)


def _clear_zone_stop(rt, cid: str) -> None:
    """A defined zone whose save was rolled back goes on under its policy again."""
    from zoned.zones import record

    if not os.path.isdir(record.zone_run_dir(rt.store.root, cid)):
        return
    with record.locked(rt.store.root, cid) as rec:
        if rec.get("stop") == "save":
            rec.pop("stop")
