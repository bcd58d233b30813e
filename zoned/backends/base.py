"""Backend: the small interface a front end drives a container through.

An ABC rather than a typing.Protocol: abc is loaded at interpreter start-up anyway, typing
is not, and `zoned run` goes through here (start-up time is a feature). A backend
subclasses it, so a missing method fails at once, when the backend is instantiated.

Every method takes the container's id; configs are OCI runtime-spec dicts (zoned.oci.spec
builds and validates them), states are runtime-spec state dicts whose "status" is a
zoned.oci.status.Status. Errors are ZonedErrors (zoned.errors): NotFound for an unknown id,
InvalidState for an operation the container's status forbids (Status.can_*), ConfigError
for bad input, found before anything is created.
"""
from __future__ import annotations

import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
from abc import ABC, abstractmethod

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.oci.spec import RunOptions
    from zoned.runtime.handoff import Started


class Backend(ABC):
    """What runs containers: create -> start -> (exec, kill) -> delete, plus state,
    networking and checkpoints."""

    @abstractmethod
    def create(self, cid: str, config: dict, *, stdio: tuple[int, int, int] | None = None,
               network: object | None = None, log: bool = False, autoremove: bool = False,
               **backend_options) -> Started:
        """Set the container up to the point of running config's process, and leave that
        process waiting: status "created". `config` is checked first (every check, one
        ConfigError naming the field); on any failure everything created so far is removed
        and the error re-raised, so a failed create leaves nothing behind.

        stdio: the fds the process gets as 0, 1, 2 (else the caller's). network: what
        attach_network() returned for this id, attached here and released with the
        container. log: keep the output in the container's log. autoremove: delete the
        container once it has exited (`run --rm`). backend_options: what only this backend
        understands. Returns the handle start() releases; its .pid is the process's pid
        as seen from the host."""

    @abstractmethod
    def start(self, cid: str, started: Started | None = None) -> None:
        """Let a created container's process run: status "running". `started` is create()'s
        handle when the caller holds it; without it, the container is started from
        another process (the OCI CLI's `create` then `start`). InvalidState unless the
        container is created (Status.can_start)."""

    @abstractmethod
    def run(self, cid: str, config: dict, *, stdio: tuple[int, int, int] | None = None,
            network: object | None = None, log: bool = False, autoremove: bool = False,
            **backend_options) -> Started:
        """create() and start() for a caller that holds the handle (`runc run`): status
        "running" on return, the same arguments as create(). On any failure, of either
        step, nothing of the container stays. A backend may do both in one step (the
        zone backend does: Runtime.run)."""

    @abstractmethod
    def kill(self, cid: str, sig: int = _signal.SIGTERM) -> None:
        """Send `sig` to the container's init (its main process). InvalidState unless it
        has one alive: created, running or paused (Status.can_kill). Returns at once; the
        container is "stopped" once its init has exited."""

    @abstractmethod
    def delete(self, cid: str, *, force: bool = False) -> None:
        """Remove the container and all it owns (processes, cgroup, rootfs mounts and
        layers, network, state). InvalidState if it still runs, unless `force`, which
        kills it first (Status.can_delete); NotFound for an unknown id."""

    @abstractmethod
    def state(self, cid: str) -> dict:
        """The runtime-spec state (id, status, pid, bundle, annotations, plus zoned's
        extra fields), its status live (a Status): read now, never cached. pid is 0 once
        the container is stopped. NotFound for an unknown id."""

    @abstractmethod
    def exec(self, cid: str, process: dict, *,
             stdio: tuple[int, int, int] | None = None) -> Started:
        """Start `process` (an OCI process object, checked like config.json's) in the
        container, with the same isolation as its init, and leave it waiting: the
        returned handle's release() lets it run, and its .pid is its pid on the host.
        InvalidState unless the container is created or running (Status.can_exec)."""

    @abstractmethod
    def attach_network(self, cid: str, opts: RunOptions) -> object | None:
        """The networking a container about to be created from `opts` gets (its
        --network, --ip, --mac, -p, --dns, --add-host), as the value create() takes as
        `network`; None when it needs none (no network, "none" or "host"). Checks the
        options (ConfigError) but creates nothing: create() attaches, delete() releases."""

    @abstractmethod
    def checkpoint(self, cid: str, directory: str | None, *, leave_running: bool = False,
                   tcp_established: bool = False, export: str | None = None) -> str:
        """Save the running container to `directory` and/or a tarball `export`, from which
        restore brings it back, here or on another host. Without leave_running the
        container stops and is deleted (as runc does). tcp_established: keep its
        established TCP connections. Returns where the checkpoint is (export, else
        directory). InvalidState unless running."""
