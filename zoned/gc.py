"""Garbage collection: the same removal code as `delete`, run against what a crashed or
killed zoned left behind. Safe to run at any time, also while other zoned processes work:
a container whose lock is held is being worked on and is skipped.

What counts as left behind: a removal that began (the `removing` mark) and did not finish,
a half-created container, an exited --rm container, a migration that never committed, a
VM's save or restore that died (zoned.backends.vm_save), the
moved-aside directory of an interrupted removal, temp files of killed writers, cgroups of
no container, and (zoned.network.release.gc) leases, veths and rules of containers that are gone.
"""
from __future__ import annotations

import os
from typing import Iterator

from zoned.errors import ZonedError
from zoned.runtime.cgroup_paths import cgroup_parent
from zoned.runtime.lifecycle import Runtime
from zoned.linux.files import rmtree
from zoned.runtime.store import remove_stale_tmp


def collect(rt: Runtime, *, dry_run: bool = False, errors: list[str] | None = None,
            images: str | None = None) -> Iterator[str]:
    """Remove leftovers; yields one line per thing removed (or that would be). A container
    whose removal fails (say nft is gone) does not stop the rest: its error goes to
    `errors` (else it is raised at the end), and the next gc tries again. `images`: the
    image store (default: ImageStore's), whose crashed builds and retired images go too."""
    failed: list[str] = []
    store = rt.store
    yield from _images(images, dry_run, failed)
    yield from _stale_tmp(store, dry_run)
    for cid in store.ids():
        fd = store.try_lock(cid)
        if fd is None:
            continue  # someone is creating, starting or deleting it right now
        try:
            try:
                st = store.read_state(cid)
            except OSError:
                continue  # removed meanwhile
            status = rt.live_status(cid, st)
            reason = None
            if store.removing(cid):
                reason = "interrupted removal"
            elif status == "creating":
                reason = "half-created container"
            elif status == "stopped" and (st.get("zoned") or {}).get("autoremove"):
                reason = "exited --rm container"
            elif _dead((st.get("zoned") or {}).get("incoming")):
                reason = "migration or restore that never committed"
            elif (st.get("zoned") or {}).get("saving"):
                yield from _interrupted_save(rt, cid, st, dry_run, failed)
                continue
            if reason is None:
                continue
            yield f"container {cid}: {reason}"
            if not dry_run:
                if st.get("pid") and status != "stopped":
                    from zoned.linux.proc import signal_pid

                    signal_pid(st["pid"], (st.get("zoned") or {}).get("pid_start"), 9)
                try:
                    rt.release(cid, st)
                except (OSError, ZonedError) as e:
                    failed.append(f"container {cid}: could not finish its removal: {e}")
        finally:
            os.close(fd)
    rootless = os.geteuid() != 0  # no cgroups, nft or host networks of its own
    for path in store.trash_dirs():
        yield f"directory {path}: interrupted removal"
        if not dry_run:
            if rootless:
                from zoned.rootless import remove_tree

                remove_tree(path)
            else:
                rmtree(path)
    if not rootless:
        yield from _cgroups(store, dry_run)
    from zoned import storage
    from zoned.checkpoint.scratch import gc_scratch

    yield from storage.gc_orphans(store, dry_run=dry_run)  # data dirs without a zone
    yield from gc_scratch(rt, dry_run=dry_run)
    if not rootless:
        from zoned.network.release import gc as network_gc

        yield from network_gc(store.root, store.ids(), dry_run=dry_run)
    if failed:
        if errors is None:
            raise ZonedError("; ".join(failed))
        errors.extend(failed)


def _cgroups(store, dry_run: bool) -> Iterator[str]:
    """Cgroups of containers that are gone, and this state root's parent if empty."""
    from zoned.cgroups import list_paths, remove_empty_ancestors, remove_if_empty, \
        remove_if_unused
    from zoned.runtime.cgroup_paths import SHARED_MEMORY_NODE

    parent = cgroup_parent(store.root)
    shared = f"{parent.rstrip('/')}/{SHARED_MEMORY_NODE}"  # zones with a shared memory cgroup
    below_parent = list_paths(parent)
    for path in [*below_parent, *list_paths(shared)]:
        # Checked after listing: a create reserves its directory before it makes its
        # cgroup, so a cgroup seen here whose container exists is never removed.
        if path == shared or store.exists(path.rsplit("/", 1)[-1]):
            continue
        if dry_run:
            yield f"cgroup {path}: no container (removed if empty)"
        elif remove_if_empty(path):
            yield f"cgroup {path}: no container"
    if shared in below_parent:
        if dry_run:
            yield f"cgroup {shared}: shared memory cgroup (removed if unused)"
        elif remove_if_unused(shared):
            yield f"cgroup {shared}: unused shared memory cgroup"
    # This state root's parent (/zoned or /zoned-<hash>) with no containers left under it:
    # empty, it holds nothing, and a create racing with this rmdir retries (make_cgroup).
    # Then the parents zoned made above it, empty too: /zoned of a parent /zoned/NAME
    # ($ZONED_CGROUP_PARENT, as the pytest plugin's roots have), which no root owns.
    path = cgroup_parent(store.root)
    if path != "/" and not list_paths(path):
        if dry_run:
            yield f"cgroup {path}: empty state-root parent (removed if empty)"
        elif remove_if_empty(path):
            yield f"cgroup {path}: empty state-root parent"
            for ancestor in remove_empty_ancestors(path):
                yield f"cgroup {ancestor}: empty parent of state-root parents"
    yield from _other_roots_parents(path, dry_run)
    yield from _below_the_default_parent(path, dry_run)


def _below_the_default_parent(own: str, dry_run: bool) -> Iterator[str]:
    """Empty cgroups below /zoned, the default root's parent, that are no container of the
    default root's: the parent of a nested root ($ZONED_CGROUP_PARENT=/zoned/NAME, as the
    pytest plugin's roots have) whose teardown never ran, and then /zoned itself if empty.
    The default root's gc took them for gone containers; the gc of another root (the gone
    one's, say) left them. Listed before the default root's store is asked (a create
    reserves its name before it makes its cgroup), removed by a plain rmdir per hierarchy
    as other roots' parents are (_other_roots_parents says why that is safe)."""
    from zoned.cgroups import list_paths, remove_if_unused
    from zoned.runtime.cgroup_paths import DEFAULT_PARENT as top
    from zoned.runtime.store import DEFAULT_ROOT, Store

    if own == top:
        return  # (the default root's gc: _cgroups above)
    below = list_paths(top)
    default = Store(DEFAULT_ROOT)
    for path in below:
        if path == own or own.startswith(path + "/") or list_paths(path) or \
                default.exists(path.rsplit("/", 1)[-1]):
            continue
        if dry_run:
            yield f"cgroup {path}: empty, of no root (removed if empty)"
        elif remove_if_unused(path):
            yield f"cgroup {path}: empty, of no root"
    if not own.startswith(top + "/") and not list_paths(top) and not dry_run and \
            remove_if_unused(top):
        yield f"cgroup {top}: empty default parent"


def _other_roots_parents(own: str, dry_run: bool) -> Iterator[str]:
    """Other state roots' parents (/zoned-<hash>, or the top of a $ZONED_CGROUP_PARENT),
    empty in every hierarchy. A removal leaves its root's parent for that root's gc,
    which never comes for a root deleted since (a test's, a benchmark's, a tmp dir's):
    this gc removes them. Only by a plain rmdir per hierarchy (remove_if_unused), never
    recursively: a parent in which another root's create has made a directory stays, and
    that create, if it finds the parent gone in a hierarchy it had not reached yet, makes
    it again (zoned.cgroups.fs.make_despite_removals)."""
    from zoned.cgroups import list_paths, remove_if_unused

    for path in list_paths("/"):
        if not path.startswith("/zoned-") or path == own or own.startswith(path + "/") \
                or list_paths(path):
            continue
        if dry_run:
            yield f"cgroup {path}: empty parent of another state root (removed if empty)"
        elif remove_if_unused(path):
            yield f"cgroup {path}: empty parent of another state root"


def _images(images: str | None, dry_run: bool, failed: list[str]) -> Iterator[str]:
    """The image store's garbage (zoned.images.store_write.prune): the .build-NAME-* dir
    of an import or build that was killed (hundreds of MB), and .old-* images no zone
    uses any more. A build in progress holds a flock on its dir (released by the kernel
    when its process dies, however it dies) and is never taken for garbage."""
    from zoned.images.store import ImageStore
    from zoned.images.store_write import prune

    try:
        for path in prune(ImageStore(images), dry_run=dry_run):
            what = "interrupted image build" if os.path.basename(path).startswith(".build-") \
                else "retired image no zone uses"
            yield f"directory {path}: {what}"
    except (OSError, ZonedError) as e:
        failed.append(f"image store: {getattr(e, 'strerror', None) or e}")


def _stale_tmp(store, dry_run: bool) -> Iterator[str]:
    """Temp files whose writer was killed between writing and renaming them: under this
    root, and in the host-wide rules registry."""
    from zoned.network import nft

    for d in [*store.tmp_dirs(), *([nft.REGISTRY] if os.geteuid() == 0 else [])]:
        for path in remove_stale_tmp(d, dry_run=dry_run):
            yield f"file {path}: temp file of a killed writer"


def _interrupted_save(rt: Runtime, cid: str, st: dict, dry_run: bool,
                      failed: list[str]) -> Iterator[str]:
    """A VM's save whose process died, finished or rolled back (zoned.backends.vm_save)."""
    from zoned.backends.vm_save import finish_interrupted

    try:
        line = finish_interrupted(rt, cid, st, dry_run=dry_run)
    except (OSError, ZonedError) as e:
        failed.append(f"container {cid}: could not finish its save: {e}")
        return
    if line:
        yield line


def _dead(owner: dict | None) -> bool:
    """A restored-but-uncommitted container's receiving process is gone."""
    if not owner:
        return False
    from zoned.linux.proc import proc_start_time

    return proc_start_time(owner["pid"]) != owner.get("start")
