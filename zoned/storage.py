"""Where a zone's persistent data lives, apart from its runtime state (as podman and CRI-O
split graphroot and runroot).

The state root (/run/zoned, a tmpfs on systemd hosts) holds what only matters while the
machine is up: state.json, config.json, the lock, exec.fifo, the /etc files bound into
the zone and the rootfs mount point. The data root holds what is big or must outlive a
reboot: each zone's writable layer (upper/, work/) and its log (ctr.log, ctr.log.1) under
DATA/containers/ID/, and checkpoints in transit under DATA/migrations/. On a tmpfs those
would be charged to the zone's own memory cgroup (a zone writing 200 MB with --memory 64m
was killed) and lost at reboot.

Which data root belongs to a state root:
  $ZONED_DATA if set (one data root per state root: the caller's choice);
  /var/lib/zoned for the default state root /run/zoned (images are in /var/lib/zoned/images);
  /var/lib/zoned/roots/NAME-HASH for any other state root (HASH of its real path), so
  per-test and per-host roots never share data dirs. Such a directory stays while its
  zones come and go (as the state root's cgroup parent does: making it and its
  containers/ again for each `zoned run --rm` cost 0.1-0.2 ms on a disk); `zoned gc` removes
  it once it holds nothing, and any other state root's that is empty (a test's, a
  benchmark's, whose state root was deleted).

After a reboot the state root is empty: zoned has no daemon and no record of a zone outside
its state dir, and a zone whose init is gone can never run again (stopped is final in the
OCI lifecycle; zoned has no restart). Its data dir is then an orphan: it stays on disk (its
log and files can still be read there) until `zoned gc`, which removes every data dir whose
zone no longer exists in the state root, as it removes any other leftover.
"""
from __future__ import annotations

import os

DEFAULT_ROOT = "/run/zoned"       # runtime state (a tmpfs on systemd hosts)
DEFAULT_DATA = "/var/lib/zoned"   # layers, logs, checkpoints in transit (disk)
CONTAINERS = "containers"
MIGRATIONS = "migrations"
VOLUMES = "volumes"  # zoned.volumes


def data_root(state_root: str) -> str:
    """The data root that belongs to `state_root` (see the module doc)."""
    env = os.environ.get("ZONED_DATA")
    if env:
        return os.path.abspath(env)
    real = os.path.realpath(state_root)
    base = default_data()
    if real == DEFAULT_ROOT or (base != DEFAULT_DATA and real == default_state_root()):
        return base
    from zoned.digest import sha256

    digest = sha256(real.encode()).hexdigest()[:10]
    return os.path.join(base, "roots", f"{os.path.basename(real) or 'root'}-{digest}")


def default_data() -> str:
    """/var/lib/zoned; rootless: $XDG_DATA_HOME/zoned (zoned.rootless)."""
    if os.geteuid() != 0:
        from zoned.rootless import data_base

        return data_base()
    return DEFAULT_DATA


def default_state_root() -> str:
    if os.geteuid() != 0:
        from zoned.rootless import runtime_base

        return os.path.realpath(runtime_base())
    return DEFAULT_ROOT


def is_keyed(data: str) -> bool:
    """A data root zoned derived from a custom state root (removed once it is empty)."""
    return os.path.dirname(data) == os.path.join(default_data(), "roots")


def zone_dir(data: str, cid: str) -> str:
    return os.path.join(data, CONTAINERS, cid)


def make_zone_dir(data: str, cid: str) -> str:
    """A new, empty data dir for zone `cid`, whose name the caller has reserved in the state
    root: whatever is there already is an orphan of a zone of that name that is gone (a
    reboot emptied the state root) and is removed first."""
    from zoned.linux.files import rmtree

    d = zone_dir(data, cid)
    for _ in range(5):  # a concurrent prune() may remove the parents meanwhile
        try:
            os.makedirs(os.path.dirname(d), mode=0o711, exist_ok=True)
            os.mkdir(d, 0o700)  # (share_with_zone_root says why 0700)
            return d
        except FileExistsError:
            rmtree(d)
        except FileNotFoundError:
            continue
    os.mkdir(d, 0o700)
    return d


def keep_zone_dir(path: str) -> str:
    """A data dir its caller keeps across the containers that use it (a defined zone's
    layer, zoned.zones): made if missing, private either way (one an older zoned made 0711
    too; share_with_zone_root says why 0700)."""
    os.makedirs(path, 0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def share_with_zone_root(path: str, root_id: tuple[int, int] | None) -> None:
    """A zone's own dirs (its state dir, its data dir) are 0700: no other host user may
    reach its writable layer, where a setuid file the zone made would run as root for
    them (docker's CVE-2021-41091), nor its config's env. A zone whose root is another
    host id (a user namespace) traverses them to mount its root: that id's group gets
    search permission (0710, as docker's userns-remap root). A rootless zoned cannot give
    a subordinate gid a directory: there, others keep search permission (0711)."""
    if root_id is None or root_id[0] == os.geteuid():
        return
    try:
        os.chown(path, -1, root_id[1])
        os.chmod(path, 0o710)
    except PermissionError:
        os.chmod(path, 0o711)


def remove_zone_dir(path: str | None) -> None:
    """Remove a zone's data dir (idempotent). Root's data roots keep their directories for
    the next zone (`zoned gc` prunes them); a user's (rootless: in their home) are pruned
    once empty."""
    if not path:
        return
    if os.geteuid() != 0:  # rootless: files of subordinate ids (zoned.rootless)
        from zoned.rootless import remove_tree

        remove_tree(path)
        prune(os.path.dirname(os.path.dirname(path)))
        return
    from zoned.linux.files import rmtree

    rmtree(path)


def prune(data: str) -> None:
    """Remove a data root's empty directories, and a derived data root itself once it is
    empty. Root's default data root keeps its directories (/var/lib/zoned/containers), and
    root's `roots` stays, which the derived ones are in. A concurrent create that finds a
    parent gone makes it again (make_zone_dir)."""
    root = os.geteuid() == 0
    if data == DEFAULT_DATA and root:
        return
    for d in (os.path.join(data, CONTAINERS), os.path.join(data, MIGRATIONS),
              os.path.join(data, VOLUMES)):
        try:
            os.rmdir(d)
        except OSError:
            pass
    if is_keyed(data):
        for d in (data, *(() if root else (os.path.dirname(data),))):
            try:
                os.rmdir(d)
            except OSError:  # not empty (or gone): best effort, like the cgroup parents
                break


def zone_ids(data: str) -> list[str]:
    """The zones that have a data dir."""
    try:
        return sorted(e.name for e in os.scandir(os.path.join(data, CONTAINERS))
                      if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def gc_orphans(store, *, dry_run: bool = False):
    """Remove data dirs whose zone is gone from the state root; yields a line each.

    The name is reserved in the state root first (mkdir, as create does), so a zone being
    created under that very name right now is never touched: either we hold the name and
    the data dir is an orphan, or the creator holds it and we skip it."""
    from zoned.errors import ZonedError
    from zoned.linux.files import rmtree

    for cid in zone_ids(store.data):
        if store.exists(cid):
            continue
        path = zone_dir(store.data, cid)
        yield f"directory {path}: data of a zone that no longer exists"
        if dry_run:
            continue
        try:
            reserved = store.reserve(cid)
        except ZonedError:  # the name is taken: a zone of that name exists now
            continue
        try:
            remove_zone_dir(path)  # (rootless: zoned.rootless.remove_tree)
        finally:
            rmtree(reserved)
    if not dry_run:
        prune(store.data)
        yield from _prune_other_roots(store.data)


def _prune_other_roots(own: str):
    """The empty data roots of other state roots (root's: a zone's removal leaves them,
    and a state root deleted since has no gc of its own). Only empty directories go, by
    rmdir: one holding a zone's dir, a volume or a migration stays."""
    if os.geteuid() != 0:
        return
    base = os.path.join(default_data(), "roots")
    try:
        entries = [e.path for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for path in entries:
        if path != own:
            prune(path)
            if not os.path.isdir(path):
                yield f"directory {path}: empty data root"
