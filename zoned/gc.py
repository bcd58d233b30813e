"""Garbage collection: the same removal code as `delete`, run against what a crashed or
killed zoned left behind. Safe to run at any time, also while other zoned processes work:
a container whose lock is held is being worked on and is skipped."""
from __future__ import annotations

import os


from zoned.runtime import Runtime, cgroup_parent, default_cgroups_path
from zoned.state import rmtree


def collect(rt: Runtime, *, dry_run: bool = False) -> Iterator[str]:
    """Remove leftovers; yields one line per thing removed (or that would be)."""
    store = rt.store
    for cid in store.ids():
        fd = store.try_lock(cid)
        if fd is None:
            continue  # someone is creating, starting or deleting it right now
        try:
            st = store.read_state(cid)
            status = rt._status(cid, st)
            reason = None
            if status == "creating":
                reason = "half-created container"
            elif status == "stopped" and (st.get("zoned") or {}).get("autoremove"):
                reason = "exited --rm container"
            elif _dead((st.get("zoned") or {}).get("incoming")):
                reason = "migration that never committed"
            if reason is None:
                continue
            yield f"container {cid}: {reason}"
            if not dry_run:
                if st.get("pid") and status != "stopped":
                    from zoned.runtime import signal_pid

                    signal_pid(st["pid"], (st.get("zoned") or {}).get("pid_start"), 9)
                if not st.get("zoned"):
                    st["zoned"] = {"cgroup": default_cgroups_path(cid, store.root)}
                rt._release(cid, st)
        finally:
            os.close(fd)
    try:
        trash = [e for e in os.scandir(store.root) if e.name.startswith(".trash-")]
    except FileNotFoundError:
        trash = []
    for e in trash:
        yield f"directory {e.path}: interrupted removal"
        if not dry_run:
            rmtree(e.path)
    from zoned.cgroups import list_paths, remove_if_empty

    known = set(store.ids())
    for path in list_paths(cgroup_parent(store.root)):
        if path.rsplit("/", 1)[-1] in known:
            continue
        if dry_run:
            yield f"cgroup {path}: no container (removed if empty)"
        elif remove_if_empty(path):
            yield f"cgroup {path}: no container"
    # State-root parents (/zoned, /zoned-<hash>) with no containers left under them: empty ones
    # hold nothing, and a create racing with this rmdir retries (runtime.create).
    for path in list_paths("/"):
        if (path == "/zoned" or path.startswith("/zoned-")) and not list_paths(path):
            if dry_run:
                yield f"cgroup {path}: empty state-root parent (removed if empty)"
            elif remove_if_empty(path):
                yield f"cgroup {path}: empty state-root parent"
    from zoned import checkpoint, storage

    yield from storage.gc_orphans(store, dry_run=dry_run)  # data dirs without a zone
    yield from checkpoint.gc_scratch(rt, dry_run=dry_run)
    from zoned import network

    yield from network.gc(store.root, store.ids(), dry_run=dry_run)


def _dead(owner: dict | None) -> bool:
    """A restored-but-uncommitted container's receiving process is gone."""
    if not owner:
        return False
    from zoned.state import proc_start_time

    return proc_start_time(owner["pid"]) != owner.get("start")
