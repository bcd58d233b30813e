"""Checkpoints in transit (a migration's, an export's or an import's) under
DATA/migrations, and the gc of those whose zoned process died."""
from __future__ import annotations

import os
import shutil


def scratch_dir(rt) -> str:
    """Where zoned keeps checkpoints in transit: DATA/migrations, on the data root's disk
    (a memory dump is as big as the zone's memory: never on the state root's tmpfs), and
    on the same file system as the zones' upper dirs, so restore can move one in. Names
    say who owns them: in-PID-NAME (a destination's session), out-PID-NAME (a source's
    migration), tmp-PID-* (an export or import); gc removes those whose PID is gone.
    NAME-TIMESTAMP is a checkpoint kept on purpose (migrate --keep-source)."""
    from zoned.storage import MIGRATIONS

    d = os.path.join(rt.store.data, MIGRATIONS)
    for attempt in range(5):  # a concurrent storage.prune() may remove a parent meanwhile
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
    return d


def scratch_done(rt) -> None:
    """Remove the scratch dir if nothing is in transit any more."""
    from zoned.storage import prune

    prune(rt.store.data)


def gc_scratch(rt, *, dry_run: bool = False):
    """Remove checkpoints in transit whose zoned process died (yields a line each)."""
    import re

    from zoned.linux.proc import proc_start_time

    from zoned.storage import MIGRATIONS

    d = os.path.join(rt.store.data, MIGRATIONS)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for n in names:
        m = re.match(r"^(in|out|tmp)-(\d+)-", n)
        if not m or proc_start_time(int(m.group(2))) is not None:  # (a zombie is gone)
            continue
        yield f"directory {d}/{n}: checkpoint of a migration that died"
        if not dry_run:
            shutil.rmtree(os.path.join(d, n), ignore_errors=True)
    if not dry_run:
        scratch_done(rt)
