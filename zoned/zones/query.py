"""What the zone commands and the monitor's helpers ask about a zone: its file, whether
it runs, and waiting for its monitor. A module of its own so that the modules that act on
zones (commands, monitor, saving) need not import one another."""
from __future__ import annotations

import os
import time

from zoned.errors import NotFound, ZonedError
from zoned.zones import record
from zoned.zones.zonefile import Zone, load, zone_dir, zone_path

WAIT_MONITOR = 30.0  # seconds shutdown/destroy wait for the monitor to finish the exit


def defined(name: str) -> Zone:
    """The zone file of `name`, or NotFound."""
    path = zone_path(name)
    if not os.path.exists(path):
        raise NotFound(f"zone {name!r} is not defined (no {path})")
    return load(path)


def names() -> list[str]:
    try:
        return sorted(e.name[:-5] for e in os.scandir(zone_dir())
                      if e.name.endswith(".yaml") and e.is_file())
    except FileNotFoundError:
        return []


def running(rt, name: str) -> bool:
    try:
        return rt.state(name)["status"] != "stopped"
    except NotFound:
        return False


def wait_monitor(rt, name: str, timeout: float = WAIT_MONITOR) -> None:
    """Wait until the zone's monitor has applied the exit and gone."""
    deadline = time.monotonic() + timeout
    while record.monitor_alive(rt.store.root, name):
        if time.monotonic() > deadline:
            raise ZonedError(f"zone {name!r}: its monitor did not finish in {timeout:.0f}s")
        time.sleep(0.05)
