"""`zoned migrate` of a VM: QEMU's own migration stream, carried over the same
authenticated relocation channel (zoned.migration.transport) as a zone's CRIU images.

Both QEMUs talk to a unix socket in their VM dir; zoned pumps the stream between them as
DATA frames, so ssh:// and zoned:// (TLS, relocation key, allow-list) work unchanged.

  source                                     destination (relocation-server)
  hello {kind: vm, config, image digest,  ->  checks the name, the image (same digest),
         network, accel}                      the network and address; boots QEMU paused
                                              with -incoming, listening (migrate-incoming)
                                          <-  ready {problems}
  QMP migrate (precopy: the guest runs on;
  stop-and-copy: `stop` first), stream    ->  into its QEMU
  sent {downtime}                         ->  waits until its QEMU has all of it
                                          <-  restored
  commit                                  ->  QMP cont: the guest runs here
                                          <-  committed
  remove the source's (paused) VM
Before the commit the guest only ever runs on the source (the destination's vCPUs are
held by -S): a failure there `cont`s the source's QEMU and removes the destination's.
The writable layer is the guest's tmpfs, so it travels in RAM; the read-only root disk is
made on the destination from its own copy of the image (the digest must match).
"""
from __future__ import annotations

import os
import socket
import time

from zoned.errors import InvalidState, ZonedError
from zoned.migration import transport
from zoned.oci.status import Status

MAX_BANDWIDTH = 10 << 30  # bytes/s: QEMU 7.2's default is 32 MiB/s (a 256 MiB guest: 8 s)
SOCKET = "migrate.sock"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def migrate_vm(rt, cid: str, dest: str, *, live: bool, key: str | None, progress) -> dict:
    """Move VM `cid` to `dest`; the summary (as zoned.migration.source's, plus QEMU's
    own downtime and RAM figures)."""
    from zoned.backends.vm import refuse_unportable, vm_of
    from zoned.images.store import ImageStore

    t0 = time.monotonic()
    say = progress.phase
    summary: dict = {"id": cid, "destination": dest, "backend": "vm",
                     "mode": "live" if live else "stop-and-copy", "image_bytes": 0}
    with rt.store.lock(cid):
        st = rt.state(cid)
        if st["status"] is not Status.RUNNING:
            raise InvalidState(f"cannot migrate container {cid!r}: it is {st['status']}")
        vm = vm_of(st)
        cfg = refuse_unportable(rt, cid, vm, "migrate")
        hello = {"op": "hello", "protocol": transport.PROTOCOL, "kind": "vm", "live": live,
                 "vm": {"id": cid, "config": cfg, "image": vm["image"],
                        "digest": ImageStore().digest(vm["image"]), "accel": vm.get("accel"),
                        "network": st["zoned"].get("network"),
                        "log": bool(st["zoned"].get("log")),
                        "autoremove": bool(st["zoned"].get("autoremove"))}}
        say(f"connecting to {dest}")
        ch = transport.connect(dest, key=key)
        try:
            ch.send_msg(hello)
            ready = ch.expect("ready", timeout=120)
            if ready.get("problems"):
                raise ZonedError(f"{dest} cannot take {cid!r}: " + "; ".join(ready["problems"]))
            _send(rt, cid, st, ch, live, progress, summary)
        except transport.PeerGone as e:
            why = transport.ssh_error(ch) or str(e)
            raise ZonedError(f"migration of {cid!r} failed: {why}") from None
        finally:
            ch.close()
    summary["total_ms"] = _ms(time.monotonic() - t0)
    say(f"done in {summary['total_ms'] / 1000:.2f} s")
    return summary


def _send(rt, cid: str, st: dict, ch, live: bool, progress, s: dict) -> None:
    from zoned.backends.vm import vm_of
    from zoned.vm.qmp import QMP, wait_migrated

    say = progress.phase
    vmdir = vm_of(st)["dir"]
    path = os.path.join(vmdir, SOCKET)
    committed = False
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(30)
        with QMP(vmdir) as q:
            q.execute("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH})
            if not live:
                say("stopping the guest")
                q.execute("stop")
            t_start = time.monotonic()
            say("sending the guest's memory" + (" while it runs (precopy)" if live else ""))
            q.execute("migrate", uri=f"unix:{path}")
            conn, _ = listener.accept()
            with conn:
                ch.send_msg({"op": "ram"})
                s["bytes"] = ch.send_file_stream(
                    conn.fileno(), progress=lambda n: progress.bytes("memory", n))
            info = wait_migrated(q)
        t_end = time.monotonic()
        if info.get("status") != "completed":
            raise ZonedError(f"QEMU's migration {info.get('status')}: "
                             f"{info.get('error-desc', 'no reason given')}")
        ram = info.get("ram") or {}
        s["ram_bytes"] = ram.get("transferred", 0)
        s["qemu_downtime_ms"] = info.get("downtime", 0)
        s["precopy_ms"] = _ms(t_end - t_start)
        ch.send_msg({"op": "sent"})
        say("waiting for the destination")
        ch.expect("restored", timeout=120)
        ch.send_msg({"op": "commit"})
        committed = True
        ch.expect("committed", timeout=transport.COMMIT_TIMEOUT)
        t_run = time.monotonic()
        # Frozen: QEMU's own stop-to-complete time, then until the destination runs it.
        s["frozen_ms"] = _ms((t_run - t_end) + (info.get("downtime", 0) / 1000 if live
                                                 else t_run - t_start))
        say(f"running on the destination (frozen {s['frozen_ms']:.0f} ms)")
        rt.release(cid, rt.store.read_state(cid))  # the paused QEMU, taps, leases, record
    except BaseException:
        if not committed:
            _resume_here(vmdir, ch)
        raise
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _resume_here(vmdir: str, ch) -> None:
    """Before the commit: the guest goes on here (cancel, `cont`), the destination is told."""
    from zoned.vm.qmp import resume_guest

    try:
        ch.send_msg({"op": "abort"})
    except ZonedError:
        pass
    resume_guest(vmdir)


# -- the destination ---------------------------------------------------------------------
def check_incoming(rt, vm: dict, images: str | None = None) -> list[str]:
    """Why this host cannot take the VM `vm` describes (one line each), nothing changed.
    images: the image store it is to boot from (default: ImageStore's)."""
    from zoned.images.errors import ImageError
    from zoned.images.store import ImageStore
    from zoned.runtime.steps import name_problems

    cid = vm["id"]
    problems = name_problems(rt.store, cid)
    try:
        if ImageStore(images).digest(vm["image"]) != vm["digest"]:
            problems.append(f"image {vm['image']!r} here is not the source's "
                            f"({str(vm['digest'])[:19]!r})")
    except ImageError as e:
        problems.append(f"image {vm['image']!r}: {e}")
    try:
        from zoned.vm.assets import kernel

        kernel()
    except ZonedError as e:
        problems.append(str(e))
    if vm.get("accel") == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problems.append("the VM runs on KVM and this host has no usable /dev/kvm")
    if vm.get("network"):
        from zoned.network.checkpoint_hooks import check_restore

        problems += check_restore(rt.store.root, vm["network"], cid)
    return problems


def receive_vm(session, hello: dict) -> None:
    """The destination's side, run by zoned.migration.destination.Session for a VM."""
    from zoned.backends.vm import VmBackend, vm_of
    from zoned.vm.qmp import QMP

    rt, ch, vm = session.rt, session.ch, hello["vm"]
    session.cid = cid = vm["id"]
    session.log(f"{session.peer}: {'live ' if hello.get('live') else ''}migration of VM {cid}")
    problems = check_incoming(rt, vm)
    if problems:
        ch.send_msg({"op": "ready", "problems": problems})
        return
    network = None
    cfg = vm["config"]
    if vm.get("network"):
        from zoned.network.attach import setup_for_restore

        network = setup_for_restore(rt.store.root, cid, vm["network"],
                                    cfg.get("hostname") or cid)
    backend = VmBackend(rt)
    started = backend.create(cid, cfg, image=vm["image"], network=network, log=vm["log"],
                             autoremove=vm["autoremove"], accel=vm.get("accel") or "auto",
                             incoming="defer")
    session.restored = True  # from here a failure removes it (Session._undo)
    path = os.path.join(vm_of(rt.store.read_state(cid))["dir"], SOCKET)
    with QMP(started.vmdir) as q:
        q.execute("migrate-incoming", uri=f"unix:{path}")
    sock = _connect(path)
    try:
        ch.send_msg({"op": "ready", "problems": []})
        msg = ch.recv_msg()
        if msg.get("op") != "ram":
            raise ZonedError(f"the source gave up ({msg.get('error') or msg.get('op')})")
        ch.recv_file_stream(sock.fileno())
    finally:
        sock.close()
    msg = ch.recv_msg(timeout=120)
    if msg.get("op") != "sent":
        raise ZonedError(f"the source gave up ({msg.get('error') or msg.get('op')})")
    with QMP(started.vmdir) as q:
        deadline = time.monotonic() + 60
        while (status := q.execute("query-status")["status"]) == "inmigrate":
            if time.monotonic() > deadline:
                raise ZonedError("QEMU did not finish loading the migration stream")
            time.sleep(0.01)
        if status not in ("paused", "prelaunch", "postmigrate"):
            raise ZonedError(f"QEMU is {status!r} after the migration stream")
    ch.send_msg({"op": "restored"})
    msg = ch.recv_msg(timeout=transport.COMMIT_TIMEOUT)
    if msg.get("op") != "commit":
        raise ZonedError(f"the source did not commit ({msg.get('op')})")
    backend.commit_incoming(cid)
    session.restored = False  # from here on it lives here
    ch.send_msg({"op": "committed"})
    session.log(f"{session.peer}: VM {cid} is running here")


def _connect(path: str, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise ZonedError(f"QEMU is not listening on {path}") from None
            time.sleep(0.01)
