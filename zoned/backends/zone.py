"""ZoneBackend: a container as an OS-level zone on this host's kernel. It adds no logic of
its own: the lifecycle is zoned.runtime.Runtime's, networking zoned.network's and
checkpoints zoned.checkpoint's, each imported only when used."""
from __future__ import annotations

import _signal  # not signal.py: its enums of every signal cost ~4 ms a command

from zoned.backends.base import Backend
from zoned.runconfig import network_for as network_for
from zoned.runtime.lifecycle import Runtime

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.oci.spec import RunOptions
    from zoned.runtime.handoff import Started


class ZoneBackend(Backend):
    """Zones under one state root (`root`, else $ZONED_ROOT or /run/zoned), or under the
    root of the given Runtime."""

    def __init__(self, root: str | None = None, *, runtime: Runtime | None = None):
        self.runtime = runtime if runtime is not None else Runtime(root)

    def create(self, cid: str, config: dict, *, stdio: tuple[int, int, int] | None = None,
               network: object | None = None, log: bool = False, autoremove: bool = False,
               **backend_options) -> Started:
        """backend_options: Runtime.create's others (use_fifo, keep_pdeathsig, pid_file,
        preserve_fds, ...). use_fifo defaults to False: the caller holds the handle."""
        backend_options.setdefault("use_fifo", False)
        return self.runtime.create(cid, config, stdio=stdio, network=network, log=log,
                                   autoremove=autoremove, **backend_options)

    def run(self, cid: str, config: dict, *, stdio: tuple[int, int, int] | None = None,
            network: object | None = None, log: bool = False, autoremove: bool = False,
            **backend_options) -> Started:
        """create() and start() in one step (Runtime.run): one state write."""
        return self.runtime.run(cid, config, stdio=stdio, network=network, log=log,
                                autoremove=autoremove, **backend_options)

    def start(self, cid: str, started: Started | None = None,
              process: dict | None = None) -> None:
        self.runtime.start(cid, started, process)

    def kill(self, cid: str, sig: int = _signal.SIGTERM) -> None:
        self.runtime.kill(cid, sig)

    def delete(self, cid: str, *, force: bool = False) -> None:
        self.runtime.delete(cid, force=force)

    def state(self, cid: str) -> dict:
        return self.runtime.state(cid)

    def exec(self, cid: str, process: dict, *,
             stdio: tuple[int, int, int] | None = None) -> Started:
        return self.runtime.exec(cid, process, stdio=stdio)

    def attach_network(self, cid: str, opts: RunOptions) -> object | None:
        return network_for(opts, self.runtime, cid)

    def checkpoint(self, cid: str, directory: str | None, *, leave_running: bool = False,
                   tcp_established: bool = False, export: str | None = None) -> str:
        from zoned.checkpoint.dump import checkpoint

        return checkpoint(self.runtime, cid, directory, leave_running=leave_running,
                          tcp_established=tcp_established, export=export)
