"""What every command needs: its runtime, and signals turned into an exception so that a
half-made container is cleaned up."""
from __future__ import annotations


class Interrupted(BaseException):
    """A signal arrived while zoned was setting something up: unwind and clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# What creating a zone imports (a `run`, the OCI `create`), loaded at once from the module
# pack (zoned.modulepack.preload: each with its module-level imports first, ~25 us less
# per module). Only the time of the imports depends on these lists: a module missing here
# is imported when needed (tests/test_start_path.py checks that they cover each command).
ZONE_MODULES = ("zoned.oci.spec", "zoned.oci.schema", "zoned.oci.hostname",
                "zoned.runtime.lifecycle", "zoned.runtime.handoff", "zoned.child.process",
                "zoned.child.security", "zoned.child.seccomp", "zoned.child.rootfs",
                "zoned.child.initplan", "zoned.cgroups.driver", "zoned.cgroups.devices")


def preload_modules(names: tuple[str, ...]) -> None:
    """`names`, then this host's cgroup driver, in one go (see ZONE_MODULES)."""
    from zoned.modulepack import preload

    preload(names)
    from zoned.cgroups.driver import driver_module

    preload((driver_module(),))


def runtime(args):
    """The Runtime of the state root and data root the global flags name (its module and
    what that imports, ~20 modules, in one preload: every command that has a runtime)."""
    from zoned.modulepack import preload

    preload(("zoned.runtime.lifecycle",))
    from zoned.runtime.lifecycle import Runtime

    return Runtime(args.root, args.data_root)


def interruptible() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into an exception so a half-made container is removed."""
    import _signal  # not signal.py (its enums: ~4 ms of start-up)

    def handler(signum, frame):
        raise Interrupted(signum)

    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, handler)


def command_args(args) -> list[str]:
    """The container command after the flags, without a leading `--`."""
    return args.command[1:] if args.command[:1] == ["--"] else args.command


def attach(master: int, interactive: bool) -> None:
    """Connect our terminal to a container's pty until it closes."""
    import os

    from zoned.console import RawMode, proxy

    tty = os.isatty(0)
    with RawMode(0):
        proxy(master, 0 if interactive else None, 1, resize_from=0 if tty else None)


def past_guest_output(*fds: int) -> None:
    """QEMU wrote the guest's output through /proc/self/fd/N, a file description of its
    own: move ours (shared with the shell) past it, or the shell's next write to the same
    regular file would land on the guest's output."""
    import os
    import stat

    for fd in fds:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            pass
