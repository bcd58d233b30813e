"""The restore side: what a restore needs of this host (asked before a migration freezes
anything), restore() as a new zone with its own state dir, cgroup, network and logger
(zoned.checkpoint.incoming), and resume() for a zone restored stopped."""
from __future__ import annotations

import os

from zoned.checkpoint.archive import lower_of, read_meta
from zoned.checkpoint.criu import find_criu, lazy_support
from zoned.errors import ConfigError, ZonedError


def check_restore(rt, meta: dict, cid: str, *, lazy: bool = False) -> list[str]:
    """What would make restoring `meta` as `cid` on this host fail: every problem, each a
    line, and nothing changed. Migration asks the destination this before it freezes."""
    from zoned.runtime.steps import name_problems

    problems = name_problems(rt.store, cid)
    try:
        criu = find_criu()
        if lazy:
            why = lazy_support(criu)
            if why:
                problems.append(f"no lazy restore: {why}")
    except ZonedError as e:
        problems.append(str(e))
    try:
        lower_of(meta)
    except ZonedError as e:
        problems.append(str(e))
    for e in meta["mounts"]:
        if not e.get("skeleton") and not e.get("cgroup") and \
                not e["source"].startswith(meta["state_dir"] + "/") and \
                not os.path.exists(e["source"]):
            problems.append(f"volume {e['source']} (for {e['destination']}) does not exist")
    net = meta.get("network")
    if net:
        from zoned.network.checkpoint_hooks import check_restore

        problems += check_restore(rt.store.root, net, cid)
    return problems


def restore(rt, directory: str, *, name: str | None = None, lazy_socket: int | None = None,
            stopped: bool = False, consume: bool = False, data_dir: str | None = None) -> dict:
    """Restore a checkpoint as container `name` (default: the checkpointed one's name)
    with its own state dir, cgroup, network and state.json, so ps/exec/kill/rm work on it.

    lazy_socket: a connected socket to the source's page server (live migration).
    stopped: leave the tasks stopped (SIGSTOP); resume() lets them go.
    consume: the checkpoint dir is scratch: its upper dir is moved, not copied.
    data_dir: a defined zone's layer, which the restored container uses and keeps; its
    upper dir is the checkpoint's then (the one before is put back if the restore fails).
    (A migration's destination uses zoned.checkpoint.incoming.Incoming itself, so that
    the part before the images is done before the source freezes.)"""
    from zoned.checkpoint.incoming import Incoming
    from zoned.checkpoint.private import check_own
    from zoned.oci import spec as specmod

    directory = os.path.abspath(directory)
    check_own(directory, "--dir", directory=True)  # (a scratch dir of zoned's passes)
    meta = read_meta(directory)
    cid = name or meta["id"]
    specmod.check_id(cid)
    problems = check_restore(rt, meta, cid, lazy=lazy_socket is not None)
    if problems:
        raise ConfigError(f"cannot restore {cid!r}: " + "; ".join(problems))
    find_criu()
    incoming = Incoming(rt, meta, directory, cid, data_dir=data_dir)
    incoming.prepare()
    return incoming.restore(lazy_socket=lazy_socket, stopped=stopped, consume=consume)


def resume(rt, cid: str, timeline=None) -> None:
    """Let a container restored with stopped=True run: its held links up (or the
    quarantine lifted) and a gratuitous ARP, then SIGCONT to every task in it. The network
    opens first, so the zone's first packets find the way out."""
    import signal

    from zoned.checkpoint.incoming import open_network

    mark = timeline.mark if timeline is not None else _no_mark
    with rt.store.lock(cid):
        st = rt.store.read_state(cid)
        incoming = st["zoned"].get("incoming") or {}
        if (st["zoned"].get("network") or {}).get("networks"):
            open_network(st, None, incoming.get("held_links") or [],
                         incoming.get("quarantined", True), mark)
        for pid in rt.cgroup(st).pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        mark("SIGCONT")
        st["zoned"].pop("incoming", None)
        rt.store.write_state(cid, st)
        mark("state")


def _no_mark(step: str) -> None:
    pass
