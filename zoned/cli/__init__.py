"""The `zoned` command: a thin layer over zoned.api and zoned.runtime.

Two families of commands share one state root: the zone commands people type (run, ps,
stop, rm, exec, logs, inspect, image, gc) and runc's OCI commands that podman and containerd
call (create, start, state, kill, delete, ...). Start-up time is a feature, so a command
costs only what it uses: the parser builds just the subcommand named (zoned.cli.parser),
and only that command's module is imported (COMMANDS below). The modules:

    parser      the argument parser, one builder per subcommand
    containers  ps, stop, kill, rm, logs, inspect, stats, pause, resume
    run         run (zone and runc-style bundle) and the foreground wait
    exec        exec, and attaching a terminal to a container's pty
    oci         runc's create, start, state, delete, spec, events, update, features
    images      image build, ls, rm
    network     network create, ls, inspect, rm
    migration   checkpoint, restore, migrate, relocation-server, relocation-key
    system      gc
    zones       define, start, shutdown, list, console, ...: zone files (zoned.zones)
    manage      wait, restart, port, rename, top (podman's)
    copy        cp, both directions, running or stopped zones
    volumes     volume create, ls, inspect, rm (zoned.volumes)
    describe    what inspect shows; format: the Go-template subset of --format
    logview     logs --tail
    common      what every command needs: the runtime, signals as exceptions
    output      JSON and table printing, human sizes
"""
from __future__ import annotations

import os
import sys

ERROR_EXIT = 125  # zoned.errors.ERROR_EXIT (not imported here: start-up time)
SIGPIPE_EXIT = 141  # what a shell reports for a tool killed by SIGPIPE (podman, cat, ls)

# command -> "module:function" in zoned.cli; only the one that runs is imported.
COMMANDS = {
    "run": "run:cmd_run",
    "ps": "containers:cmd_ps",
    "stop": "containers:cmd_stop", "kill": "containers:cmd_kill", "rm": "containers:cmd_rm",
    "logs": "containers:cmd_logs", "inspect": "containers:cmd_inspect",
    "stats": "containers:cmd_stats", "pause": "containers:cmd_pause",
    "resume": "containers:cmd_resume",
    "exec": "exec:cmd_exec",
    "create": "oci:cmd_create", "start": "zones:cmd_start", "state": "oci:cmd_state",
    "delete": "oci:cmd_delete", "spec": "oci:cmd_spec", "events": "oci:cmd_events",
    "update": "oci:cmd_update", "features": "oci:cmd_features",
    "image": "images:cmd_image",
    "network": "network:cmd_network",
    "checkpoint": "migration:cmd_checkpoint", "restore": "zones:cmd_restore",
    "migrate": "migration:cmd_migrate",
    "relocation-server": "migration:cmd_relocation_server",
    "relocation-key": "migration:cmd_relocation_key",
    "gc": "system:cmd_gc", "info": "system:cmd_info",
    "bench": "bench:cmd_bench",
    "wait": "manage:cmd_wait", "restart": "manage:cmd_restart", "port": "manage:cmd_port",
    "rename": "manage:cmd_rename", "top": "manage:cmd_top", "cp": "copy:cmd_cp",
    "volume": "volumes:cmd_volume", "attach": "manage:cmd_attach",
    # zones as xm/virsh admins manage them (zoned.zones); start and restore above too
    **{c: f"zones:cmd_{c.replace('-', '_')}" for c in (
        "define", "undefine", "shutdown", "destroy", "reboot", "console", "list",
        "dominfo", "autostart", "clone", "save", "zone-boot", "zone-exited")},
}


def command(name: str):
    """The function that runs subcommand `name`, importing only its module (with
    __import__: importlib would import warnings too, ~1 ms)."""
    module, _, func = COMMANDS[name].partition(":")
    return getattr(__import__(f"zoned.cli.{module}", fromlist=[func]), func)


def main(argv: list[str] | None = None) -> int:
    from zoned.testhooks import mark

    mark("main")
    from zoned.cli import fastparse
    from zoned.cli.common import Interrupted

    argv = sys.argv[1:] if argv is None else argv
    args = fastparse.parse(argv)  # `run` and --version without argparse (start-up time)
    if args is None:
        from zoned.cli.parser import build_parser, command_of

        args = build_parser(command_of(argv), argv).parse_args(argv)
    if args.version:
        print("zoned version 0.1.0\nspec: 1.2.0")
        return 0
    if args.cmd in ("run", "create"):  # a container's cgroup move ahead: its grace period
        from zoned.cgroups.join import prime_for_create  # (prime.py: where it runs)

        prime_for_create()
    if not args.cmd:
        from zoned.cli.parser import USAGE_ERROR, build_parser

        build_parser().print_help()
        return USAGE_ERROR
    from zoned.errors import ZonedError

    try:
        code = int(command(args.cmd)(args) or 0)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is seen below
        return code
    except ZonedError as e:
        return _fail(args, str(e), e.exit_code)
    except Interrupted as e:
        return _fail(args, f"interrupted by signal {e.signum}", 128 + e.signum)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            return _quiet_sigpipe()
        return _fail(args, f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}",
                     ERROR_EXIT)
    except Exception as e:  # a bug: still one line, the traceback with --debug
        if args.debug:
            raise
        return _fail(args, f"internal error: {type(e).__name__}: {e} (rerun with --debug)",
                     ERROR_EXIT)


def console() -> None:
    """The `zoned` program: main(), then the exit without the interpreter's teardown
    (freeing every module and object: ~3 ms of a `zoned run` here). zoned keeps no
    atexit handler or finalizer that must run; what it printed is flushed first. Where
    that flush fails, or a thread of ours still works (threading joins those at exit),
    it exits the usual way.

    The cyclic garbage collector runs every 100,000 allocations here, not 700: the
    imports of a `zoned run` alone made 15 collections that freed almost nothing (their
    objects are the modules' code), and a run took 1-2.5 ms less without them; a
    collection in a forked child also writes to every object it visits, so each page of
    them is copied.

    Where zoned's syscalls are loaded already (a command that made or entered a zone), the
    kernel's freeing of this process's memory at exit (~1.3 ms of a `zoned run`) is left to
    a process that outlives it by that long (zoned.linux.syscalls.exit_lending_memory), and
    so is the freeing of what the command removed (zoned.linux.lastref: on a file system
    mounted with `discard`, each removal otherwise waits for the device's trim)."""
    import gc

    from zoned.linux import lastref

    gc.set_threshold(100_000)
    lastref.defer_until_exit()
    code = int(main() or 0)
    threading = sys.modules.get("threading")
    if threading is not None and any(t.is_alive() and not t.daemon
                                     for t in threading.enumerate()
                                     if t is not threading.main_thread()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    from zoned.testhooks import mark

    mark("exit")
    held = lastref.held()
    syscalls = sys.modules.get("zoned.linux.syscalls")
    if syscalls is not None:  # (not loaded for this alone: that costs more than it saves)
        syscalls.exit_lending_memory(code, held)
    if len(held) > 2:  # (one trim or two: zoned-release would cost as much)
        lastref.release(held)
    os._exit(code)


def _stdout_gone() -> bool:
    """Whether our stdout is a pipe or socket nobody reads any more (`zoned ps | head -1`):
    the kernel reports POLLERR on the write end of a pipe without readers. A broken pipe
    elsewhere (a container's sync socket) is a real error and is reported as one."""
    import select

    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def _quiet_sigpipe() -> int:
    """End as podman and the coreutils do when the reader of stdout has gone: no message,
    status 141 (128 + SIGPIPE). stdout is pointed at /dev/null first so that Python's
    flush at exit does not complain about the unwritten rest."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    return SIGPIPE_EXIT


def _fail(args, message: str, code: int) -> int:
    """Report an error: one line on stderr, and in --log as runc does (text or JSON lines),
    where podman and containerd look for the reason."""
    sys.stderr.write(f"zoned: {message}\n")
    if args.log:
        from zoned.cli.output import log_error

        log_error(args.log, args.log_format, message)
    return code
