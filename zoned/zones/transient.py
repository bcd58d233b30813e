"""`zoned run -d --restart no|on-failure[:N]|always` (podman's flag): a zone made from run
flags instead of a zone file, under the same per-zone monitor, so it gets exit codes,
restarts with back-off, and `zoned stop`/`rm` that are not undone by its policy. Its
RunOptions are kept in ROOT/.zones/NAME/run.json for the boot worker; when it is not
restarted its container is kept stopped (podman's way: `ps` shows the exit, `rm` ends it).
A restart boots a new container from the same options (a fresh writable layer)."""
from __future__ import annotations

import json
import os

from zoned.errors import ConfigError
from zoned.oci.spec import RunOptions
from zoned.zones import record
from zoned.zones.zonefile import RESTART_RE, Zone


def check(args) -> None:
    if not RESTART_RE.match(args.restart):
        raise ConfigError(f"invalid --restart {args.restart!r}: no, on-failure[:N] or always")
    for bad, why in ((not args.detach, "needs -d (a monitor restarts detached zones)"),
                     (args.rm, "and --rm exclude each other"),
                     (args.backend != "zone", "is for zones (not --backend vm) for now"),
                     (args.tty, "with -t: use a zone file with tty: true (zoned console)")):
        if bad:
            raise ConfigError(f"invalid --restart: {why}")


def run_detached(args, opts: RunOptions, cid: str) -> int:
    """Start the zone under a monitor and print its name, as `run -d` does."""
    from zoned.cli.common import runtime
    from zoned.zones.monitor import launch

    check(args)
    from zoned import api

    api.build_config(opts, args.images)  # every error before anything exists
    rt = runtime(args)
    if rt.store.exists(cid):
        raise ConfigError(f"container name {cid!r} is already in use")
    d = record.zone_run_dir(rt.store.root, cid)
    if os.path.exists(d):
        record.forget(rt.store.root, cid)
    os.makedirs(d, 0o700, exist_ok=True)
    options = {k: getattr(opts, k) for k in RunOptions.FIELDS}
    with open(os.path.join(d, record.TRANSIENT), "w") as f:
        json.dump({"options": options, "restart": args.restart}, f)
    try:
        launch(rt.store.root, rt.store.data, cid, args.images)
    except BaseException:
        record.forget(rt.store.root, cid)
        raise
    print(cid)
    return 0


def load(root: str, name: str) -> tuple[Zone, RunOptions] | None:
    """A run-flag zone's policy (as a Zone: `restart`, and preserve for every on_*) and
    its RunOptions; None if `name` is not one."""
    path = os.path.join(record.zone_run_dir(root, name), record.TRANSIENT)
    try:
        with open(path) as f:
            saved = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    data = {"name": name, "restart": saved["restart"], "on_poweroff": "preserve",
            "on_reboot": "preserve", "on_crash": "preserve"}
    options = dict(saved["options"])
    args = options.pop("args", None)
    return Zone(path, data, {}, ""), RunOptions(args, **options)
