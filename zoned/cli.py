"""The `zoned` command: a thin layer over zoned.api and zoned.runtime.

Two families of commands share one state root: the zone commands people type (run, ps,
stop, rm, exec, logs, inspect, image, gc) and runc's OCI commands that podman and containerd
call (create, start, state, kill, delete, ...). Imports are lazy: `zoned --help` and the OCI
commands must start fast.
"""
from __future__ import annotations

import os
import sys

USAGE_ERROR = 125  # podman's code for a bad flag too: every error of zoned's own is 125
ERROR_EXIT = 125  # zoned.errors.ERROR_EXIT (not imported here: start-up time)
SIGPIPE_EXIT = 141  # what a shell reports for a tool killed by SIGPIPE (podman, cat, ls)


class Interrupted(BaseException):
    """A signal arrived while zoned was setting something up: unwind and clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


GLOBAL_WITH_VALUE = ("--root", "--data-root", "--images", "--log", "--log-format")
ALIASES = {"list": "ps"}


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv, so only its parser is built (start-up time)."""
    it = iter(argv)
    for arg in it:
        if arg in GLOBAL_WITH_VALUE:
            next(it, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _parser(only: str | None = None):
    """The argument parser; with `only`, just that subcommand (the rest is not built)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one clear line, not a usage dump
            sys.stderr.write(f"zoned: {message} (see `{self.prog} --help`)\n")
            sys.exit(USAGE_ERROR)

    p = Parser(prog="zoned", description="OS-level containers (zones) on Linux.")
    p.add_argument("--root", help="state root (default /run/zoned or $ZONED_ROOT)")
    p.add_argument("--data-root", help="writable layers and logs (default /var/lib/zoned "
                   "for the default root, or $ZONED_DATA)")
    p.add_argument("--images", help="image store (default /var/lib/zoned/images)")
    p.add_argument("--log", help="(runc) log file")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--version", "-v", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    only = ALIASES.get(only, only)
    known = {name for name, _ in SUBCOMMANDS}
    for name, build in SUBCOMMANDS:
        if only is None or only not in known or name == only:
            build(sub, argparse)
    return p


def _sub_run(sub, argparse):
    r = sub.add_parser("run", help="run a command in a new container")
    r.add_argument("--name")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("-d", "--detach", action="store_true")
    r.add_argument("-i", "--interactive", action="store_true")
    r.add_argument("-t", "--tty", action="store_true")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--image")
    src.add_argument("--rootfs")
    r.add_argument("--hostname")
    r.add_argument("--memory", "-m")
    r.add_argument("--memory-swap")
    r.add_argument("--cpus")
    r.add_argument("--cpu-shares", type=int)
    r.add_argument("--cpuset-cpus")
    r.add_argument("--pids-limit", type=int, metavar="N",
                   help="most processes the zone may have at once (default 2048, as podman; "
                   "-1 or 0: no limit)")
    r.add_argument("-e", "--env", action="append", default=[])
    r.add_argument("-w", "--workdir")
    r.add_argument("-u", "--user")
    r.add_argument("-v", "--volume", action="append", default=[])
    r.add_argument("--read-only", action="store_true")
    r.add_argument("--init", action="store_true")
    r.add_argument("--network", "--net", action="append", default=[],
                   help="NAME, none (only lo, the default), host or container:NAME")
    r.add_argument("--ip")
    r.add_argument("--mac")
    r.add_argument("-p", "--publish", action="append", default=[],
                   help="HOSTPORT:CTRPORT[/tcp|udp]")
    r.add_argument("--dns", action="append", default=[])
    r.add_argument("--add-host", action="append", default=[], help="name:ip")
    # runc's `run`: with --bundle, the one positional argument is the container ID
    r.add_argument("-b", "--bundle", help="(OCI) run the bundle's config.json; then: run ID")
    r.add_argument("--pid-file")
    r.add_argument("--console-socket")
    r.add_argument("--no-pivot", action="store_true")
    r.add_argument("--no-new-keyring", action="store_true")
    r.add_argument("--preserve-fds", type=int, default=0)
    r.add_argument("--keep", action="store_true", help="(OCI) do not delete on exit")
    r.add_argument("command", nargs=argparse.REMAINDER)


def _sub_ps(sub, argparse):
    ps = sub.add_parser("ps", aliases=["list"],
                        help="list containers (or, given ID, the processes in it)")
    ps.add_argument("--format", choices=["table", "json"], default="table")
    ps.add_argument("-q", "--quiet", action="store_true")
    ps.add_argument("id", nargs="?")


def _sub_stop(sub, argparse):
    s = sub.add_parser("stop", help="stop containers: SIGTERM, then SIGKILL after a timeout")
    s.add_argument("-t", "--time", type=float, default=10.0)
    s.add_argument("ids", nargs="+")


def _sub_kill(sub, argparse):
    k = sub.add_parser("kill", help="send a signal to a container")
    k.add_argument("-a", "--all", action="store_true")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="TERM")


def _sub_rm(sub, argparse):
    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("ids", nargs="+")


def _sub_delete(sub, argparse):
    d = sub.add_parser("delete", help="(OCI) delete a stopped container")
    d.add_argument("-f", "--force", action="store_true")
    d.add_argument("id")


def _sub_exec(sub, argparse):
    e = sub.add_parser("exec", help="run a command in a running container")
    e.add_argument("-i", "--interactive", action="store_true")
    e.add_argument("-t", "--tty", action="store_true")
    e.add_argument("-d", "--detach", action="store_true")
    e.add_argument("-e", "--env", action="append", default=[])
    e.add_argument("-u", "--user")
    e.add_argument("-w", "--workdir", "--cwd", dest="workdir")
    e.add_argument("-p", "--process", help="(OCI) process.json")
    e.add_argument("--pid-file")
    e.add_argument("--console-socket")
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("-c", "--cap", action="append", default=[])
    e.add_argument("-g", "--additional-gids", action="append", default=[])
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--process-label", help=argparse.SUPPRESS)
    e.add_argument("--apparmor", help=argparse.SUPPRESS)
    e.add_argument("id")
    e.add_argument("command", nargs=argparse.REMAINDER)


def _sub_logs(sub, argparse):
    lg = sub.add_parser("logs", help="print a detached container's output")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("id")


def _sub_inspect(sub, argparse):
    ins = sub.add_parser("inspect", help="show a container's config, state and limits")
    ins.add_argument("--format", choices=["json"], default="json")
    ins.add_argument("id")


def _sub_stats(sub, argparse):
    st = sub.add_parser("stats", help="resource usage of containers")
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.add_argument("ids", nargs="*")


def _simple(name: str, help: str):
    def build(sub, argparse):
        sub.add_parser(name, help=help).add_argument("id")
    return build


def _sub_create(sub, argparse):
    c = sub.add_parser("create", help="(OCI) create a container from a bundle")
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("id")


def _sub_spec(sub, argparse):
    sp = sub.add_parser("spec", help="(OCI) write a default config.json")
    sp.add_argument("-b", "--bundle", default=".")
    sp.add_argument("--rootless", action="store_true")


def _sub_image(sub, argparse):
    img = sub.add_parser("image", help="build and list images")
    isub = img.add_subparsers(dest="image_cmd", metavar="IMAGE_COMMAND",
                              parser_class=type(img))
    ib = isub.add_parser("build", help="build an image from images/NAME.yaml or a recipe file")
    ib.add_argument("recipe")
    il = isub.add_parser("ls", help="list images", aliases=["list"])
    il.add_argument("--format", choices=["table", "json"], default="table")
    ir = isub.add_parser("rm", help="remove an image")
    ir.add_argument("name")


def _sub_network(sub, argparse):
    from zoned import netcli

    netcli.add_parser(sub, argparse)


def _sub_events(sub, argparse):
    ev = sub.add_parser("events", help="(OCI) container events and stats as JSON lines")
    ev.add_argument("--stats", action="store_true", help="print stats once and exit")
    ev.add_argument("--interval", default="5s")
    ev.add_argument("id")


def _sub_update(sub, argparse):
    up = sub.add_parser("update", help="(OCI) change a container's resource limits")
    up.add_argument("-r", "--resources", help="a linux.resources JSON file, or - for stdin")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--cpu-shares",
                 "--cpu-quota", "--cpu-period", "--cpuset-cpus", "--cpuset-mems",
                 "--pids-limit", "--blkio-weight"):
        up.add_argument(flag)
    up.add_argument("id")


def _sub_features(sub, argparse):
    sub.add_parser("features", help="(OCI) what this runtime supports, as JSON")


def _sub_gc(sub, argparse):
    g = sub.add_parser("gc", help="remove what crashed or killed zoned processes left behind")
    g.add_argument("--dry-run", action="store_true")


def _sub_checkpoint(sub, argparse):
    c = sub.add_parser("checkpoint", help="dump a running container with CRIU (>= 4); it "
                       "is removed unless --leave-running")
    c.add_argument("--dir", help="where the images go")
    c.add_argument("--export", metavar="FILE.tar.zst",
                   help="also (or only) write the checkpoint as one archive")
    c.add_argument("--leave-running", action="store_true")
    c.add_argument("--tcp-established", action="store_true")
    c.add_argument("id")


def _sub_restore(sub, argparse):
    r = sub.add_parser("restore", help="restore a checkpointed container")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--dir", help="a directory `zoned checkpoint` wrote")
    src.add_argument("--import", dest="import_", metavar="FILE",
                     help="an archive `zoned checkpoint --export` wrote")
    r.add_argument("--name", help="the restored container's name (default: the original's)")


def _sub_migrate(sub, argparse):
    m = sub.add_parser("migrate", help="move a running container to another host "
                       "(ssh://[user@]host[:port] or zoned://host:port)")
    m.add_argument("--live", action="store_true",
                   help="post-copy: freeze only for the non-memory state (CRIU lazy pages)")
    m.add_argument("--keep-source", action="store_true",
                   help="keep the checkpoint on the source (stop-and-copy only)")
    m.add_argument("--key", help="relocation key for zoned:// (default $ZONED_RELOCATION_KEY "
                   "or /etc/zoned/relocation.pem)")
    m.add_argument("--no-tcp-established", dest="tcp", action="store_false",
                   help="do not keep TCP connections")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    m.add_argument("--format", choices=["text", "json"], default="text",
                   help="the summary's format")
    m.add_argument("id")
    m.add_argument("dest")


def _sub_relocation_server(sub, argparse):
    s = sub.add_parser("relocation-server", help="receive migrating containers")
    s.add_argument("--listen", metavar="ADDR:PORT", help="TLS listener for zoned:// peers")
    s.add_argument("--allow", default="", metavar="HOST[,HOST...]",
                   help="hosts that may send containers (empty: nobody)")
    s.add_argument("--key", help="relocation key shared by the hosts (zoned relocation-key)")
    s.add_argument("--stdio", action="store_true",
                   help="serve one migration on stdin/stdout (what ssh:// runs)")
    s.add_argument("--once", action="store_true", help="exit after one migration")


def _sub_relocation_key(sub, argparse):
    k = sub.add_parser("relocation-key", help="make a relocation key for zoned:// (copy it "
                       "to every host that migrates to or from this one)")
    k.add_argument("file")


SUBCOMMANDS = [
    ("run", _sub_run), ("ps", _sub_ps), ("stop", _sub_stop), ("kill", _sub_kill),
    ("rm", _sub_rm), ("exec", _sub_exec), ("logs", _sub_logs), ("inspect", _sub_inspect),
    ("stats", _sub_stats), ("pause", _simple("pause", "freeze a container")),
    ("resume", _simple("resume", "thaw a paused container")),
    ("create", _sub_create), ("start", _simple("start", "(OCI) start a created container")),
    ("state", _simple("state", "(OCI) print a container's state JSON")),
    ("delete", _sub_delete), ("spec", _sub_spec), ("image", _sub_image), ("network", _sub_network),
    ("events", _sub_events), ("update", _sub_update), ("features", _sub_features),
    ("gc", _sub_gc), ("checkpoint", _sub_checkpoint), ("restore", _sub_restore),
    ("migrate", _sub_migrate), ("relocation-server", _sub_relocation_server),
    ("relocation-key", _sub_relocation_key),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(_command_of(argv)).parse_args(argv)
    if args.version:
        print("zoned version 0.1.0\nspec: 1.2.0")
        return 0
    if not args.cmd:
        _parser().print_help()
        return USAGE_ERROR
    from zoned.errors import ZonedError

    try:
        code = int(COMMANDS[args.cmd](args) or 0)
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
        import json
        import time

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = (json.dumps({"level": "error", "msg": message, "time": now})
                if args.log_format == "json" else f'time="{now}" level=error msg="{message}"')
        try:
            with open(args.log, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass
    return code


def _runtime(args):
    from zoned.runtime import Runtime

    return Runtime(args.root, args.data_root)


def _interruptible():
    """Turn SIGINT/SIGTERM/SIGHUP into an exception so a half-made container is removed."""
    import signal

    def handler(signum, frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def parse_signal(value: str) -> int:
    import signal

    from zoned.errors import ConfigError

    v = value.upper()
    if v.isdigit():
        if not 0 < int(v) <= signal.SIGRTMAX:
            raise ConfigError(f"invalid signal {value!r}: signal numbers are 1 to "
                              f"{int(signal.SIGRTMAX)}")
        return int(v)
    name = v if v.startswith("SIG") else "SIG" + v
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise ConfigError(f"unknown signal {value!r}") from None


# -- zone commands -----------------------------------------------------------------------
def cmd_run(args) -> int:
    from zoned import api
    from zoned.errors import ConfigError
    from zoned.spec import RunOptions

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.bundle:
        return _run_bundle(args, command)
    if args.detach and args.rm:
        pass  # removed by `zoned gc` once it has exited (no process stays to watch it)
    if args.detach and args.tty:
        raise ConfigError("-t with -d is not supported yet (a detached pty needs a reader)")
    from zoned.spec import check_id

    cid = check_id(args.name) if args.name else api.new_name()
    opts = RunOptions(args=command, image=args.image, rootfs=args.rootfs, name=cid,
                      hostname=args.hostname, memory=args.memory, memory_swap=args.memory_swap,
                      cpus=args.cpus, cpu_shares=args.cpu_shares, cpuset_cpus=args.cpuset_cpus,
                      pids_limit=args.pids_limit, env=args.env, workdir=args.workdir,
                      user=args.user, volumes=args.volume, read_only=args.read_only,
                      init=args.init, tty=args.tty, interactive=args.interactive,
                      network=args.network, ip=args.ip, mac=args.mac,
                      publish=args.publish, dns=args.dns, add_host=args.add_host)
    _interruptible()
    cfg = api.build_config(opts, args.images)
    rt = _runtime(args)
    net = api.network_for(opts, rt, cid)
    if args.detach:
        started = rt.create(cid, cfg, use_fifo=False, log=True, autoremove=args.rm,
                            network=net)
        rt.start(cid, started)
        print(cid)
        return 0
    return _foreground(rt, cid, cfg, args, net)


def _run_bundle(args, rest: list[str]) -> int:
    """runc run: create + start a bundle; wait for it unless --detach, then delete it."""
    from zoned.errors import ConfigError

    if len(rest) != 1:
        raise ConfigError("run --bundle takes exactly one argument: the container ID")
    args.id = rest[0]
    cmd_create(args)
    rt = _runtime(args)
    rt.start(args.id)
    if args.detach:
        return 0
    st = rt.store.read_state(args.id)
    rt.wait(args.id)
    code = 0
    try:
        _, status = os.waitpid(st["pid"], 0)  # ours: we forked it
        from zoned.api import status_code

        code = status_code(status)
    except ChildProcessError:
        pass
    if not args.keep:
        rt.delete(args.id, force=True)
    return code


def _foreground(rt, cid: str, cfg: dict, args, net=None) -> int:
    import signal

    from zoned.api import status_code

    stdio = None
    null = None
    if not args.tty and not args.interactive:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        stdio = (null, 1, 2)
    try:
        started = rt.create(cid, cfg, stdio=stdio, use_fifo=False, keep_pdeathsig=True,
                            autoremove=args.rm, network=net)
    finally:
        if null is not None:
            os.close(null)
    pid = started.pid

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    try:
        try:
            rt.start(cid, started)
        except BaseException:
            rt.delete(cid, force=True)
            raise
        if started.master is not None:
            _attach(started.master, args.interactive)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = status_code(status)
    finally:
        if started.master is not None:
            os.close(started.master)
    if args.rm:
        rt.delete(cid, force=True)
    else:
        rt.store.write_state(cid, {**rt.store.read_state(cid), "exit_code": code})
    return code


def _attach(master: int, interactive: bool) -> None:
    """Connect our terminal to a container's pty until it closes."""
    from zoned.console import RawMode, proxy

    tty = os.isatty(0)
    with RawMode(0):
        proxy(master, 0 if interactive else None, 1, resize_from=0 if tty else None)


def cmd_ps(args) -> int:
    rt = _runtime(args)
    if args.id:
        return _ps_processes(rt, args)
    rows = rt.list()
    if args.format == "json":
        _print_json(rows)
        return 0
    if args.quiet:
        for r in rows:
            print(r["id"])
        return 0
    table = [("NAME", "STATUS", "PID", "IMAGE", "CREATED", "COMMAND")]
    for r in rows:
        cfg = {}
        try:
            cfg = rt.config(r["id"])
        except Exception:  # noqa: BLE001 - a half-created container has no config yet
            pass
        status = r["status"]
        if status == "stopped" and "exit_code" in r:
            status = f"exited ({r['exit_code']})"
        table.append((r["id"], status, str(r.get("pid") or "-"),
                      (r.get("annotations") or {}).get("org.zoned.image", "-"),
                      r.get("created", "")[:19].replace("T", " "),
                      " ".join((cfg.get("process") or {}).get("args") or [])[:40]))
    _print_table(table)
    return 0


def _ps_processes(rt, args) -> int:
    st = rt.state(args.id)
    pids = rt.cgroup(st).pids() if st["status"] != "stopped" else []
    if args.format == "json":
        _print_json(pids)
        return 0
    table = [("PID", "CMD")]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        table.append((str(pid), cmd))
    _print_table(table)
    return 0


def cmd_stop(args) -> int:
    rt = _runtime(args)
    for cid in args.ids:
        rt.state(cid)  # NotFound for a wrong name
        rt.stop(cid, args.time)
        _autoremove(rt, cid)
        print(cid)
    return 0


def _autoremove(rt, cid: str) -> None:
    try:
        st = rt.state(cid)
    except Exception:  # noqa: BLE001
        return
    if st["status"] == "stopped" and st.get("zoned", {}).get("autoremove"):
        rt.delete(cid, force=True)


def cmd_kill(args) -> int:
    _runtime(args).kill(args.id, parse_signal(args.signal), all=args.all)
    return 0


def cmd_rm(args) -> int:
    rt = _runtime(args)
    failed = 0
    from zoned.errors import ZonedError

    for cid in args.ids:
        try:
            rt.delete(cid, force=args.force)
            print(cid)
        except ZonedError as e:
            sys.stderr.write(f"zoned: {e}\n")
            failed = e.exit_code
    return failed


def cmd_delete(args) -> int:
    from zoned.errors import NotFound

    try:
        _runtime(args).delete(args.id, force=args.force)
    except NotFound:
        if not args.force:  # runc: deleting what is gone is no error with --force
            raise
    return 0


def cmd_exec(args) -> int:
    import json

    from zoned.api import exec_process, status_code
    from zoned.errors import ConfigError

    rt = _runtime(args)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.process:
        with open(args.process) as f:
            process = json.load(f)
    else:
        if not command:
            raise ConfigError("exec needs a command (zoned exec NAME -- CMD ARGS...)")
        process = exec_process(rt.config(args.id)["process"], command, env=args.env,
                               user=args.user, cwd=args.workdir, tty=args.tty)
        if args.additional_gids:
            process["user"] = {**process.get("user", {}), "additionalGids":
                               [int(g) for g in args.additional_gids]}
        if args.cap:
            caps = {k: list(v) for k, v in (process.get("capabilities") or {}).items()}
            for c in args.cap:
                c = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
                for kind in ("bounding", "effective", "permitted"):
                    caps.setdefault(kind, [])
                    if c not in caps[kind]:
                        caps[kind].append(c)
            process["capabilities"] = caps
        if args.no_new_privs:
            process["noNewPrivileges"] = True
        if args.apparmor or args.process_label:
            raise ConfigError("--apparmor/--process-label: no such LSM is enabled here")
    stdio = None
    null = None
    if not process.get("terminal") and not args.interactive and not args.process:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        stdio = (null, 1, 2)
    try:
        started = rt.exec(args.id, process, stdio=stdio, pid_file=args.pid_file,
                          preserve_fds=args.preserve_fds, detach=args.detach)
    finally:
        if null is not None:
            os.close(null)
    master = started.master
    if args.console_socket and master is not None:
        from zoned.console import send_fd

        send_fd(args.console_socket, master)
        os.close(master)
        master = None
    started.release()
    if args.detach:
        if master is not None:
            os.close(master)
        return 0
    if master is not None:
        _attach(master, args.interactive)
        os.close(master)
    _, status = os.waitpid(started.pid, 0)
    return status_code(status)


def cmd_logs(args) -> int:
    rt = _runtime(args)
    st = rt.state(args.id)
    log = st.get("zoned", {}).get("log")
    if not log:
        from zoned.errors import ZonedError

        raise ZonedError(f"container {args.id!r} was not detached: its output went to "
                         "the terminal that ran it")
    from zoned import logs

    if not args.follow:
        logs.read(log, sys.stdout.buffer)
        return 0

    def finished() -> bool:  # the zone has stopped and its logger has written it all
        st = rt.state(args.id)
        return st["status"] == "stopped" and not logs.logger_alive(st["zoned"].get("logger"))
    logs.follow(log, sys.stdout.buffer, finished)
    return 0


def cmd_inspect(args) -> int:
    rt = _runtime(args)
    st = rt.state(args.id)
    cfg = rt.config(args.id)
    info = {"id": st["id"], "state": st, "config": cfg,
            "image": (st.get("annotations") or {}).get("org.zoned.image"),
            "limits": (cfg.get("linux") or {}).get("resources", {}),
            "cgroup": st["zoned"]["cgroup"]}
    if st["zoned"].get("network"):
        from zoned.network.info import addresses

        info["network"] = {"mode": st["zoned"]["network"].get("mode"),
                           "addresses": addresses(st["zoned"]["network"])}
    if st["status"] != "stopped":
        try:
            info["stats"] = rt.cgroup(st).stats()
        except OSError:
            pass
    _print_json(info)
    return 0


def cmd_stats(args) -> int:
    rt = _runtime(args)
    ids = args.ids or [s["id"] for s in rt.list() if s["status"] in ("running", "paused")]
    rows = {}
    for cid in ids:
        st = rt.state(cid)
        rows[cid] = rt.cgroup(st).stats() if st["status"] != "stopped" else {}
        if st["status"] != "stopped" and st["zoned"].get("network"):
            from zoned.network.info import counters

            net = counters(rt.store.root, st["zoned"]["network"])
            if net:
                rows[cid]["network"] = net
    if args.format == "json":
        _print_json(rows)
        return 0
    table = [("NAME", "MEM USAGE", "MEM LIMIT", "CPU SECONDS", "PIDS", "NET RX", "NET TX")]
    for cid, s in rows.items():
        mem, cpu, pids = s.get("memory", {}), s.get("cpu", {}), s.get("pids", {})
        net = s.get("network") or {}
        table.append((cid, _human(mem.get("usage")), _human(mem.get("limit")),
                      f"{(cpu.get('usage_ns') or 0) / 1e9:.2f}", str(pids.get("current", "-")),
                      _human(net.get("rx_bytes")), _human(net.get("tx_bytes"))))
    _print_table(table)
    return 0


def _human(n) -> str:
    if n is None or n < 0 or n >= 1 << 62:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}PiB"


def cmd_pause(args) -> int:
    _runtime(args).pause(args.id)
    return 0


def cmd_resume(args) -> int:
    _runtime(args).resume(args.id)
    return 0


def cmd_start(args) -> int:
    _runtime(args).start(args.id)
    return 0


def cmd_state(args) -> int:
    st = _runtime(args).state(args.id)
    st.pop("zoned", None)
    _print_json(st)
    return 0


def cmd_create(args) -> int:
    import json

    from zoned.errors import ConfigError

    bundle = os.path.abspath(args.bundle)
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config.json in bundle {bundle!r}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config.json in {bundle!r} is not valid JSON: {e}") from None
    from zoned.spec import validate

    validate(cfg)  # before anything reads it (here: --systemd-cgroup, the terminal check)
    _interruptible()
    rt = _runtime(args)
    if args.systemd_cgroup:
        from zoned.runtime import systemd_cgroups_path

        linux = cfg.setdefault("linux", {})
        linux["cgroupsPath"] = systemd_cgroups_path(linux.get("cgroupsPath", ""), args.id)
    if (cfg.get("process") or {}).get("terminal") and not args.console_socket:
        raise ConfigError("process.terminal is set: --console-socket is required")
    started = rt.create(args.id, cfg, bundle=bundle, pid_file=args.pid_file,
                        preserve_fds=args.preserve_fds, no_pivot=args.no_pivot)
    if started.master is not None:
        from zoned.console import send_fd

        try:
            send_fd(args.console_socket, started.master)
        finally:
            os.close(started.master)
    return 0


def cmd_spec(args) -> int:
    import json

    from zoned.errors import ZonedError
    from zoned.spec import default_config

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise ZonedError(f"{path} already exists")
    cfg = default_config(terminal=True)
    if args.rootless:
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        cfg["linux"]["resources"] = {}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return 0


def cmd_image(args) -> int:
    from zoned.errors import ConfigError, ZonedError
    from zoned.images import ImageError, ImageStore

    store = ImageStore(args.images)
    try:
        if args.image_cmd == "build":
            img = store.build(args.recipe)
            print(f"{img.name}\t{img.rootfs_dir}")
        elif args.image_cmd in ("ls", "list"):
            images = store.list()
            if args.format == "json":
                _print_json([{"name": i.name, "path": i.image_dir, "created": i.created,
                              "size": i.size, "config": i.config} for i in images])
            else:
                table = [("NAME", "SIZE", "CREATED", "PATH")]
                for i in images:
                    table.append((i.name, _human(i.size), str(i.created)[:19], i.image_dir))
                _print_table(table)
        elif args.image_cmd == "rm":
            store.remove(args.name)
        else:
            raise ConfigError("image needs a command: build, ls or rm")
    except ImageError as e:
        raise ZonedError(str(e)) from None
    return 0


def cmd_gc(args) -> int:
    from zoned.gc import collect

    errors: list[str] = []
    for line in collect(_runtime(args), dry_run=args.dry_run, errors=errors):
        print(line)
    for e in errors:  # the rest was collected; the next gc tries these again
        sys.stderr.write(f"zoned: {e}\n")
    return 125 if errors else 0


def cmd_events(args) -> int:
    import json
    import time

    rt = _runtime(args)
    interval = float(args.interval.rstrip("s") or 5)
    oom = None
    while True:
        st = rt.state(args.id)
        if st["status"] == "stopped":
            return 0
        stats = rt.cgroup(st).stats()
        if args.stats:
            print(json.dumps({"type": "stats", "id": args.id, "data": runc_stats(stats)}))
            return 0
        kills = (stats.get("memory") or {}).get("oom_kills") or 0
        if oom is not None and kills > oom:
            print(json.dumps({"type": "oom", "id": args.id}), flush=True)
        oom = kills
        print(json.dumps({"type": "stats", "id": args.id, "data": runc_stats(stats)}),
              flush=True)
        time.sleep(interval)


def runc_stats(s: dict) -> dict:
    """zoned's cgroup stats in the shape of runc's `events` types.Stats."""
    mem, cpu, pids = s.get("memory") or {}, s.get("cpu") or {}, s.get("pids") or {}
    return {
        "cpu": {"usage": {"total": cpu.get("usage_ns") or 0, "user": cpu.get("user_ns") or 0,
                          "kernel": cpu.get("system_ns") or 0},
                "throttling": {"periods": cpu.get("nr_periods") or 0,
                               "throttledPeriods": cpu.get("throttled_periods") or 0,
                               "throttledTime": cpu.get("throttled_ns") or 0}},
        "memory": {"usage": {"usage": mem.get("usage") or 0, "max": mem.get("peak") or 0,
                             "limit": mem.get("limit") if (mem.get("limit") or -1) >= 0
                             else 2 ** 63 - 1,
                             "failcnt": mem.get("oom_events") or 0},
                   "raw": mem.get("stat") or {}},
        "pids": {"current": pids.get("current") or 0,
                 "limit": pids.get("limit") if (pids.get("limit") or -1) >= 0 else 0},
    }


def cmd_update(args) -> int:
    import json

    from zoned.errors import ConfigError
    from zoned.spec import MIN_MEMORY, parse_pids_limit, parse_size

    rt = _runtime(args)
    res: dict = {}
    if args.resources:
        try:
            text = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
            res = json.loads(text)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--resources: {e}") from None

    def size(flag: str, v: str) -> int:
        return -1 if v == "-1" else parse_size(v, flag)

    def number(flag: str, v: str) -> int:
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"invalid {flag} {v!r}: expected a whole number") from None
    if args.memory:
        limit = size("--memory", args.memory)
        if 0 <= limit < MIN_MEMORY:
            raise ConfigError(f"invalid --memory {args.memory!r}: the minimum memory limit "
                              "allowed is 6MB")
        res.setdefault("memory", {})["limit"] = limit
    if args.memory_reservation:
        res.setdefault("memory", {})["reservation"] = size("--memory-reservation",
                                                           args.memory_reservation)
    if args.memory_swap:
        res.setdefault("memory", {})["swap"] = size("--memory-swap", args.memory_swap)
    for flag, key in (("cpu_shares", "shares"), ("cpu_quota", "quota"),
                      ("cpu_period", "period")):
        if getattr(args, flag):
            res.setdefault("cpu", {})[key] = number("--" + flag.replace("_", "-"),
                                                    getattr(args, flag))
    if args.cpuset_cpus:
        res.setdefault("cpu", {})["cpus"] = args.cpuset_cpus
    if args.cpuset_mems:
        res.setdefault("cpu", {})["mems"] = args.cpuset_mems
    if args.pids_limit:
        res["pids"] = {"limit": parse_pids_limit(number("--pids-limit", args.pids_limit))}
    if args.blkio_weight:
        res["blockIO"] = {"weight": number("--blkio-weight", args.blkio_weight)}
    rt.update(args.id, res)
    return 0


def cmd_features(args) -> int:
    from zoned.features import features

    _print_json(features())
    return 0


def _netcli(args) -> int:
    from zoned import netcli

    return netcli.run(args)


def _print_json(data) -> None:
    import json

    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_checkpoint(args) -> int:
    from zoned import checkpoint

    checkpoint.checkpoint(_runtime(args), args.id, args.dir, export=args.export,
                          leave_running=args.leave_running,
                          tcp_established=args.tcp_established)
    return 0


def cmd_restore(args) -> int:
    from zoned import checkpoint

    rt = _runtime(args)
    if args.import_:
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=checkpoint.scratch_dir(rt))
        try:
            checkpoint.import_tar(args.import_, tmp)
            print(checkpoint.restore(rt, tmp, name=args.name, consume=True)["id"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            checkpoint.scratch_done(rt)
        return 0
    print(checkpoint.restore(rt, args.dir, name=args.name)["id"])
    return 0


def cmd_migrate(args) -> int:
    from zoned import migrate

    _interruptible()  # a signal mid-move unwinds through the put-back, like any failure
    return migrate.main(_runtime(args), args)


def cmd_relocation_server(args) -> int:
    from zoned import relocation

    return relocation.serve_main(_runtime(args), args)


def cmd_relocation_key(args) -> int:
    from zoned import relocation

    relocation.make_key(args.file)
    print(args.file)
    return 0


def _print_table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


COMMANDS = {
    "run": cmd_run, "ps": cmd_ps, "list": cmd_ps, "stop": cmd_stop, "kill": cmd_kill,
    "rm": cmd_rm, "delete": cmd_delete, "exec": cmd_exec, "logs": cmd_logs,
    "inspect": cmd_inspect, "stats": cmd_stats, "pause": cmd_pause, "resume": cmd_resume,
    "start": cmd_start, "state": cmd_state, "create": cmd_create, "spec": cmd_spec,
    "image": cmd_image, "gc": cmd_gc, "network": lambda args: _netcli(args),
    "events": cmd_events, "update": cmd_update, "features": cmd_features,
    "checkpoint": cmd_checkpoint, "restore": cmd_restore, "migrate": cmd_migrate,
    "relocation-server": cmd_relocation_server, "relocation-key": cmd_relocation_key,
}

if __name__ == "__main__":
    sys.exit(main())
