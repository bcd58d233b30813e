"""A container's lifecycle states (runtime-spec "status", plus runc's "paused") and the
operations each allows, in one place: youki's ContainerStatus with its can_start(),
can_pause(), ... rather than string comparisons spread over the runtime.

The values are the strings state.json, `zoned state` and podman use; a Status is a str
(zoned.strconst: a StrEnum without enum's import), so it compares equal to them, formats
as them and serialises as them.

    creating --create--> created --start--> running <--pause/resume--> paused
        every state but creating --init exits--> stopped --delete--> (gone)
"""
from __future__ import annotations

from zoned.strconst import StrConstants


class Status(StrConstants):
    CREATING = "creating"  # state.json reserved, the container is being set up
    CREATED = "created"    # init waits for `start`
    RUNNING = "running"
    PAUSED = "paused"      # frozen (cgroup freezer)
    STOPPED = "stopped"    # init has exited

    def is_active(self) -> bool:
        """A live init: there is something to signal, and delete needs force."""
        return self in _ACTIVE

    def can_start(self) -> bool:
        return self is Status.CREATED

    def can_kill(self) -> bool:
        return self in _ACTIVE

    def can_pause(self) -> bool:
        return self is Status.RUNNING

    def can_resume(self) -> bool:
        return self is Status.PAUSED

    def can_exec(self) -> bool:
        """runc execs into a created container too (its init is alive, waiting)."""
        return self in (Status.CREATED, Status.RUNNING)

    def can_delete(self) -> bool:
        """Without force: a stopped container, or one whose creation never finished."""
        return self not in _ACTIVE


_ACTIVE = frozenset((Status.CREATED, Status.RUNNING, Status.PAUSED))
