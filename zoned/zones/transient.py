"""`zoned run -d --restart no|on-failure[:N]|always` (podman's flag): a zone made from run
flags instead of a zone file, under the same per-zone monitor, so it gets exit codes,
restarts with back-off, and `zoned stop`/`rm` that are not undone by its policy. Its
RunOptions are kept in ROOT/.zones/NAME/run.json (written by zoned.cli.zones.run_restart)
for the boot worker; when it is not
restarted its container is kept stopped (podman's way: `ps` shows the exit, `rm` ends it).
A restart boots a new container from the same options (a fresh writable layer)."""
from __future__ import annotations

import json
import os

from zoned.oci.spec import RunOptions
from zoned.zones import record
from zoned.zones.zonefile import Zone


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
