"""What happens when a zone's init exits: which event it was (poweroff, reboot, crash),
what the zone file says to do about it (on_* and podman's `restart`), and how long a
restart waits (back-off, so a crash loop does not spin)."""
from __future__ import annotations

import signal

BACKOFF_FIRST = 0.1   # seconds before the 1st restart of a streak, doubled each time
BACKOFF_MAX = 30.0
STREAK_RESET = 10.0   # a zone that ran this long has recovered: its streak starts again
BOOT_FAILED = -1      # the code the monitor reports when a restart could not boot


def event_of(code: int) -> str:
    """The init's exit as an xm event. A pid namespace's init that calls reboot(2) is
    killed by the kernel with SIGHUP for a restart, SIGINT for a power-off or halt
    (pid_namespaces(7)); exit 0 is a clean power-off; anything else is a crash."""
    if code == 128 + signal.SIGHUP:
        return "reboot"
    if code in (0, 128 + signal.SIGINT):
        return "poweroff"
    return "crash"


def decide(zone, event: str, requested: str | None, restarts: int) -> str:
    """destroy, restart or preserve. An admin's shutdown/destroy/save never restarts; a
    reboot the admin asked for always does. `restart` (podman's) overrides on_*: always
    restarts every exit, on-failure[:N] restarts crashes (N times at most)."""
    if requested == "reboot":
        return "restart"
    if requested:
        return "preserve" if requested == "preserve" else "destroy"
    policy = zone.get("restart") or "no"
    if policy == "always":
        return "restart"
    if policy.startswith("on-failure") and event == "crash":
        _, _, limit = policy.partition(":")
        if not limit or restarts < int(limit):
            return "restart"
        return zone.action("on_crash") if zone.action("on_crash") != "restart" \
            else "preserve"
    return zone.action(f"on_{event}")


def backoff(streak: int) -> float:
    """Seconds to wait before restart number `streak` of a crash loop (1, 2, ...)."""
    if streak <= 1:
        return BACKOFF_FIRST if streak == 1 else 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (streak - 1))
