"""A zone's runtime record, ROOT/.zones/NAME/ (the state root: it is gone after a reboot,
as the zone's processes are): record.json (who monitors it, restarts, the last exit, a
stop the admin asked for), and the files csrc/monitor.c writes there (exit, console.sock,
console.log). Changed under record.lock by the CLI and by the monitor's exit hook."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

RECORDS = ".zones"  # under the state root; Store.ids() skips dot-names


def records_dir(root: str) -> str:
    return os.path.join(root, RECORDS)


def zone_run_dir(root: str, name: str) -> str:
    return os.path.join(root, RECORDS, name)


def data_dir(data_root: str, name: str) -> str:
    """The zone's writable layer and log: on disk, kept across restarts and reboots."""
    return os.path.join(data_root, "zones", name)


def read(root: str, name: str) -> dict:
    try:
        with open(os.path.join(zone_run_dir(root, name), "record.json")) as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}


def write(root: str, name: str, record: dict) -> None:
    from zoned.runtime.store import write_json_atomic

    d = zone_run_dir(root, name)
    os.makedirs(d, 0o700, exist_ok=True)
    write_json_atomic(os.path.join(d, "record.json"), record)


@contextmanager
def locked(root: str, name: str):
    """The record, read under its lock; what the block leaves in the dict is written."""
    from zoned.linux.locks import acquire

    d = zone_run_dir(root, name)
    os.makedirs(d, 0o700, exist_ok=True)
    fd = acquire(os.path.join(d, "record.lock"))
    try:
        rec = read(root, name)
        yield rec
        write(root, name, rec)
    finally:
        os.close(fd)


def monitor_alive(root: str, name: str) -> bool:
    """Whether the zone's monitor (either half of it, csrc/monitor.c) still runs: it
    holds monitor.lock for as long as it lives."""
    from zoned.linux.locks import try_acquire

    fd = try_acquire(os.path.join(zone_run_dir(root, name), "monitor.lock"))
    if fd is None:
        return os.path.exists(os.path.join(zone_run_dir(root, name), "monitor.lock"))
    os.close(fd)
    return False


def exit_file(root: str, name: str) -> tuple[int, float] | None:
    """The monitor's record of the init's last exit: (code, epoch)."""
    try:
        with open(os.path.join(zone_run_dir(root, name), "exit")) as f:
            code, when = f.read().split()
        return int(code), float(when)
    except (OSError, ValueError):
        return None


def request_stop(root: str, name: str, what: str) -> bool:
    """Record that the admin stopped a monitored zone (`zoned stop`, `rm -f`), so its exit
    hook does not restart it; False (and nothing done) for a zone without a monitor."""
    if not os.path.isdir(zone_run_dir(root, name)) or not monitor_alive(root, name):
        return False
    with locked(root, name) as rec:
        rec["stop"] = what
    return True


def wait_monitor(root: str, name: str, timeout: float = 30.0) -> None:
    """Wait until a zone's monitor has applied an exit and gone (best effort)."""
    import time

    deadline = time.monotonic() + timeout
    while monitor_alive(root, name) and time.monotonic() < deadline:
        time.sleep(0.05)


def forget(root: str, name: str) -> None:
    """Remove a run-flag zone's record (`zoned run -d --restart`) once its container is
    removed: unlike a defined zone, nothing of it is left to start again."""
    from zoned.linux.files import rmtree

    if os.path.exists(os.path.join(zone_run_dir(root, name), TRANSIENT)) and \
            not monitor_alive(root, name):
        rmtree(zone_run_dir(root, name))
        try:
            os.rmdir(records_dir(root))
        except OSError:
            pass


TRANSIENT = "run.json"  # the RunOptions of a zone made by `zoned run -d --restart`
