"""The argument parser of `zoned`. Only the subcommand named on the command line is built
(building all ~28 costs milliseconds that `zoned run` and runc's OCI calls would pay on
every start), and `zoned --version` builds none."""
from __future__ import annotations

import sys

USAGE_ERROR = 125  # podman's code for a bad flag too: every error of zoned's own is 125
GLOBAL_WITH_VALUE = ("--root", "--data-root", "--images", "--log", "--log-format")
ALIASES: dict[str, str] = {}  # `list` is xm list now (zoned.cli.zones), not ps
NO_COMMANDS = ""  # build_parser(NO_COMMANDS): only the global flags


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv, so only its parser is built (start-up time)."""
    it = iter(argv)
    for arg in it:
        if arg in GLOBAL_WITH_VALUE:
            next(it, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(only: str | None = None, argv: list[str] | None = None):
    """The argument parser; with `only`, just that subcommand (the rest is not built). Given
    the argv of a call that names no subcommand and asks for no help (`zoned --version`),
    no subcommand is built at all."""
    import argparse

    named = only if only in {name for name, _ in SUBCOMMANDS} else None

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one clear line, not a usage dump
            prog = f"zoned {named}" if self.prog == "zoned" and named else self.prog
            sys.stderr.write(f"zoned: {message} (see `{prog} --help`)\n")
            log, log_format = _log_flags(argv or [])  # (in --log too, as any error)
            if log:
                from zoned.cli.output import log_error

                log_error(log, log_format, message)
            sys.exit(USAGE_ERROR)

    if only is None and argv is not None and not {"-h", "--help"} & set(argv):
        only = NO_COMMANDS
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
    if only == NO_COMMANDS:
        return p
    only = ALIASES.get(only, only)
    known = {name for name, _ in SUBCOMMANDS}
    for name, build in SUBCOMMANDS:
        if only is None or only not in known or name == only:
            build(sub, argparse)
    if argv is None or {"-h", "--help"} & set(argv):  # only when help is shown:
        from zoned.cli.helptext import fill  # `zoned run` imports nothing more

        fill(p)
    return p


def _log_flags(argv: list[str]) -> tuple[str | None, str]:
    """--log and --log-format of an argv argparse refused: runc's global flags, before the
    command (as podman and containerd give them), never a word after it."""
    from zoned.cli.fastparse import GLOBAL_VALUE as values  # (the one list of them)

    found = {"--log": None, "--log-format": "text"}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if flag in values and not eq:
            value = argv[i + 1] if i + 1 < len(argv) else None
            i += 1
        if flag in found and value is not None:
            found[flag] = value
        i += 1
    return found["--log"], found["--log-format"] or "text"


def _sub_run(sub, argparse):
    r = sub.add_parser(
        "run", help="run a command in a new container",
        usage="zoned run [OPTIONS] IMAGE [COMMAND...]\n"
              "       zoned run [OPTIONS] -- COMMAND...   (the default image, busybox)\n"
              "       zoned run [OPTIONS] --image IMAGE|--rootfs DIR [--] COMMAND...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  zoned run --rm busybox sh -c 'echo hi'\n"
               "  zoned run -d --name web -p 8080:80 -v data:/data busybox httpd -f\n"
               "  zoned run --rm -- uname -a")
    r.add_argument("--name", help="the container's name (default: a generated one)")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--restart", metavar="POLICY", help="no, on-failure[:N] or always: "
                   "restart a detached zone when it exits (with back-off; zoned.zones)")
    r.add_argument("-d", "--detach", action="store_true",
                   help="run in the background and print the name")
    r.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    r.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    r.add_argument("--detach-keys", metavar="KEYS", help="with -it: the keys that detach "
                   "and leave the zone running (default ctrl-p,ctrl-q; \"\" for none)")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--image", help="the image (instead of the IMAGE argument)")
    src.add_argument("--rootfs", help="a root directory to run instead of an image")
    r.add_argument("--hostname", help="the hostname (default: the name)")
    r.add_argument("--memory", "-m", help="memory limit, e.g. 64m")
    r.add_argument("--memory-swap", help="memory+swap limit (-1: unlimited swap)")
    r.add_argument("--memory-cgroup", choices=("own", "shared"),
                   help="own (default): a memory cgroup of the zone's own; shared: the one "
                   "the state root's shared zones use, no memory limit (for density)")
    r.add_argument("--cpus", help="CPU limit in CPUs, e.g. 0.5")
    r.add_argument("--cpu-shares", type=int, help="relative CPU weight (1024 = normal)")
    r.add_argument("--cpuset-cpus", help="CPUs the zone may run on, e.g. 0-1")
    r.add_argument("--pids-limit", type=int, metavar="N",
                   help="most processes the zone may have at once (default 2048, as podman; "
                   "-1 or 0: no limit)")
    r.add_argument("-e", "--env", action="append", default=[],
                   help="NAME=VALUE (or NAME: from this environment); repeatable")
    r.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="NAME=VALUE lines to add to the environment; repeatable")
    r.add_argument("-w", "--workdir", help="the command's working directory (it must "
                   "exist in the image, as with podman)")
    r.add_argument("--entrypoint", help="replaces the image's Entrypoint (\"\" for none)")
    r.add_argument("-u", "--user", help="UID[:GID] or NAME[:GROUP] to run as")
    r.add_argument("-v", "--volume", action="append", default=[],
                   help="HOSTDIR:DIR[:ro] or VOLUME:DIR[:ro] (a named volume, made on "
                   "first use); repeatable")
    r.add_argument("--mount", action="append", default=[], metavar="type=TYPE,...",
                   help="type=bind|volume|tmpfs,source=..,target=..[,ro][,tmpfs-size=..]")
    r.add_argument("--tmpfs", action="append", default=[], metavar="DIR[:OPTS]",
                   help="mount a tmpfs on DIR (e.g. /run:size=64m)")
    r.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability (NET_ADMIN, or ALL); repeatable")
    r.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability (or ALL); repeatable")
    r.add_argument("--privileged", action="store_true", help="all capabilities, no "
                   "seccomp filter, no masked /proc paths, all devices allowed")
    r.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label (shown by inspect); repeatable")
    r.add_argument("--stop-signal", metavar="SIGNAL",
                   help="what `zoned stop` sends first (default: the image's, else TERM)")
    r.add_argument("--stop-timeout", type=int, metavar="SECONDS",
                   help="how long `zoned stop` waits before SIGKILL (default 10)")
    r.add_argument("--read-only", action="store_true",
                   help="a read-only root (/tmp, /var/tmp and /run stay writable)")
    r.add_argument("--init", action="store_true",
                   help="run a small init as PID 1 that reaps and forwards signals")
    r.add_argument("--network", "--net", action="append", default=[],
                   help="NAME, none (only lo, the default), host or container:NAME")
    r.add_argument("--ip", help="the address on the network")
    r.add_argument("--mac", help="the MAC address on the network")
    r.add_argument("-p", "--publish", action="append", default=[],
                   help="HOSTPORT:CTRPORT[/tcp|udp] (on the default network zoned0 "
                   "unless --network)")
    r.add_argument("--dns", action="append", default=[], help="a DNS server; repeatable")
    r.add_argument("--add-host", action="append", default=[],
                   help="name:ip in /etc/hosts; repeatable")
    r.add_argument("--backend", choices=("zone", "vm"), default="zone",
                   help="zone (namespaces on this kernel, the default) or vm (a QEMU "
                   "micro-VM booting the image: --memory and --cpus are its RAM and vCPUs)")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="--backend vm: KVM, TCG (emulation), or auto: KVM if a test boot "
                   "works, else TCG")
    # runc's `run`: with --bundle, the one positional argument is the container ID
    r.add_argument("-b", "--bundle", help="(OCI) run the bundle's config.json; then: run ID")
    r.add_argument("--pid-file", help="(OCI) write the container's pid here")
    r.add_argument("--console-socket", help="(OCI) send the pty master to this socket")
    r.add_argument("--no-pivot", action="store_true", help="(OCI) accepted, ignored")
    r.add_argument("--no-new-keyring", action="store_true", help="(OCI) accepted, ignored")
    r.add_argument("--preserve-fds", type=int, default=0,
                   help="(OCI) pass this many fds after stderr")
    r.add_argument("--keep", action="store_true", help="(OCI) do not delete on exit")
    r.add_argument("command", nargs=argparse.REMAINDER,
                   help="IMAGE [COMMAND...], or -- COMMAND... for the default image")


def _sub_ps(sub, argparse):
    ps = _cmd(sub, "ps", "list running containers (-a: all), or given ID, its processes",
              "zoned ps -a\n  zoned ps --format '{{.Names}} {{.Status}}'")
    ps.add_argument("--format", default="table",
                    help="table, json, or a Go template ({{.ID}} {{.Names}} {{.Status}} "
                    "{{.Image}} {{.Command}} {{.Pid}} {{.ExitCode}})")
    ps.add_argument("-q", "--quiet", action="store_true", help="only the names")
    ps.add_argument("-a", "--all", action="store_true",
                    help="also stopped and created ones (with their exit codes)")
    ps.add_argument("id", nargs="?", help="a container: list its processes instead")


def _sub_stop(sub, argparse):
    s = _cmd(sub, "stop", "stop containers (in parallel): the stop signal, then SIGKILL "
             "after the timeout", "zoned stop -t 2 web db")
    s.add_argument("-t", "--time", type=float, default=None, metavar="SECONDS",
                   help="seconds before SIGKILL (default: the zone's --stop-timeout, "
                   "else 10)")
    s.add_argument("ids", nargs="+", metavar="ID", help="containers to stop")


def _sub_kill(sub, argparse):
    k = _cmd(sub, "kill", "send a signal to a container (default SIGKILL, as podman)",
             "zoned kill web\n  zoned kill -s HUP web")
    k.add_argument("-a", "--all", action="store_true",
                   help="signal every process of the container, not only its init")
    k.add_argument("-s", "--signal", dest="sig", metavar="SIGNAL",
                   help="the signal: a name (HUP, SIGHUP) or number (default KILL)")
    k.add_argument("id", help="the container")
    k.add_argument("signal", nargs="?", default=None,
                   help="(runc's form) the signal, instead of -s")


def _sub_rm(sub, argparse):
    rm = _cmd(sub, "rm", "remove containers", "zoned rm -f web")
    rm.add_argument("-f", "--force", action="store_true",
                    help="stop running ones first; a missing name is no error")
    rm.add_argument("ids", nargs="+", metavar="ID", help="containers to remove")


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
    lg = _cmd(sub, "logs", "print a detached container's output",
              "zoned logs --tail 20 -f web\n  zoned logs -t --since 5m web")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="keep printing what it writes until it stops")
    lg.add_argument("-n", "--tail", type=int, metavar="N", help="only the last N lines")
    lg.add_argument("--since", metavar="TIME", help="only lines written since TIME: RFC "
                    "3339 (2026-01-02T15:04:05Z), Unix seconds or a duration ago (10s, 5m)")
    lg.add_argument("-t", "--timestamps", action="store_true",
                    help="put each line's time (RFC 3339, UTC) in front of it")
    lg.add_argument("id", help="the container")


def _sub_inspect(sub, argparse):
    ins = _cmd(sub, "inspect", "show containers' state, config, mounts, network and limits",
               "zoned inspect web\n  zoned inspect --format '{{.State.Pid}}' web db")
    ins.add_argument("-f", "--format", metavar="FORMAT",
                     help="json (the default when piped), summary (on a terminal) or a Go "
                     "template such as '{{.State.Pid}}'")
    ins.add_argument("--raw", action="store_true",
                     help="the full config, with the seccomp profile")
    ins.add_argument("--type", choices=["container"], help=argparse.SUPPRESS)
    ins.add_argument("ids", nargs="+", metavar="ID", help="containers")


def _sub_stats(sub, argparse):
    st = _cmd(sub, "stats", "resource usage of running containers",
              "zoned stats --no-stream")
    st.add_argument("--format", choices=["table", "json"], default="table",
                    help="table, or json (a list)")
    st.add_argument("--no-stream", action="store_true",
                    help="print once (the default when not on a terminal)")
    st.add_argument("ids", nargs="*", metavar="ID", help="containers (default: running)")


def _cmd(sub, name: str, help: str, example: str, **kw):
    """A subcommand with its one-line help and an example in its --help."""
    import argparse

    return sub.add_parser(name, help=help, description=help,
                          epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _sub_wait(sub, argparse):
    w = _cmd(sub, "wait", "wait until containers stop; print their exit codes",
             "zoned wait web")
    w.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    w.add_argument("ids", nargs="+", metavar="ID", help="containers")


def _sub_restart(sub, argparse):
    r = _cmd(sub, "restart", "stop containers and start them again (same layer, "
             "addresses, log)", "zoned restart web")
    r.add_argument("-t", "--time", type=float, default=None, metavar="SECONDS",
                   help="seconds before SIGKILL (default: the zone's --stop-timeout)")
    r.add_argument("ids", nargs="+", metavar="ID", help="containers")


def _sub_cp(sub, argparse):
    c = _cmd(sub, "cp", "copy files between a container (running or stopped) and the host",
             "zoned cp ./conf web:/etc/app\n  zoned cp web:/var/log/app.log .")
    c.add_argument("src", help="HOSTPATH or ID:PATH")
    c.add_argument("dest", help="HOSTPATH or ID:PATH")


def _sub_port(sub, argparse):
    p = _cmd(sub, "port", "list a container's published ports", "zoned port web 80/tcp")
    p.add_argument("id", help="the container")
    p.add_argument("port", nargs="?", help="only this one: PORT[/PROTO]")


def _sub_rename(sub, argparse):
    r = _cmd(sub, "rename", "rename a stopped container", "zoned rename web web-old")
    r.add_argument("old", help="its name")
    r.add_argument("new", help="the new name")


def _sub_top(sub, argparse):
    t = _cmd(sub, "top", "a container's processes, as ps(1) shows them",
             "zoned top web\n  zoned top web pid args")
    t.add_argument("id", help="the container")
    t.add_argument("fields", nargs="*", help="ps -o fields (default: user pid ppid pcpu "
                   "etime tty time args)")


def _sub_attach(sub, argparse):
    a = _cmd(sub, "attach", "attach to a detached container: its terminal (run -dt; "
             "ctrl-p,ctrl-q detaches), else its output from now on until it stops (Ctrl-C "
             "detaches)", "zoned attach web")
    a.add_argument("--no-stdin", action="store_true",
                   help="do not pass what is typed to the container")
    a.add_argument("--detach-keys", metavar="KEYS", help="the keys that detach "
                   "(default ctrl-p,ctrl-q; \"\" for none)")
    a.add_argument("id", help="the container")


def _sub_volume(sub, argparse):
    v = _cmd(sub, "volume", "named volumes (-v NAME:/dir)", "zoned volume create data")
    vsub = v.add_subparsers(dest="volume_cmd", metavar="COMMAND", required=True,
                            parser_class=type(v))
    c = vsub.add_parser("create", help="create a volume (a random name if none)")
    c.add_argument("name", nargs="?", help="its name")
    ls = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("--format", default="table", help="table, json or a Go template")
    ls.add_argument("-q", "--quiet", action="store_true", help="only the names")
    ins = vsub.add_parser("inspect", help="a volume's mount point and users (JSON)")
    ins.add_argument("--format", help="json (default) or a Go template")
    ins.add_argument("names", nargs="+", metavar="NAME", help="volumes")
    rm = vsub.add_parser("rm", aliases=["remove"], help="remove volumes and their data")
    rm.add_argument("-f", "--force", action="store_true",
                    help="also while containers use them")
    rm.add_argument("names", nargs="+", metavar="NAME", help="volumes")


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
    c.add_argument("--backend", choices=("zone", "vm"), default=None,
                   help="vm: boot the bundle's rootfs and process as a QEMU micro-VM (also "
                   "annotation org.zoned.backend=vm)")
    c.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="with a VM: KVM, TCG or auto (KVM if a test boot works)")
    c.add_argument("id")


def _sub_spec(sub, argparse):
    sp = sub.add_parser("spec", help="(OCI) write a default config.json")
    sp.add_argument("-b", "--bundle", default=".")
    sp.add_argument("--rootless", action="store_true")


def _sub_image(sub, argparse):
    img = sub.add_parser("image", help="build, import, export and list images")
    isub = img.add_subparsers(dest="image_cmd", metavar="IMAGE_COMMAND",
                              parser_class=type(img))
    ib = isub.add_parser("build", help="build an image from images/NAME.yaml or a recipe file")
    ib.add_argument("recipe")
    il = isub.add_parser("ls", help="list images", aliases=["list"])
    il.add_argument("--format", choices=["table", "json"], default="table")
    ir = isub.add_parser("rm", help="remove an image")
    ir.add_argument("name")
    ii = isub.add_parser("import", help="import a docker/OCI archive, OCI layout or rootfs tarball")
    ii.add_argument("source")
    ii.add_argument("--name")
    ii.add_argument("--max-size", help="refuse archives that unpack to more (default 16G)")
    ie = isub.add_parser("export", help="write an image as an OCI archive (podman load)")
    ie.add_argument("name")
    ie.add_argument("file")
    for verb in ("inspect", "history"):
        isub.add_parser(verb, help=f"{verb} an image").add_argument("name")
    ip = isub.add_parser("prune", help="delete left-overs of crashed builds and removed images")
    ip.add_argument("--cache", action="store_true", help="also empty the .deb cache")


def _sub_network(sub, argparse):
    n = sub.add_parser("network", help="manage networks (bridge, routed or NAT)")
    nsub = n.add_subparsers(dest="network_cmd", metavar="NETWORK_COMMAND",
                            parser_class=type(n))
    c = nsub.add_parser("create", help="create a network")
    c.add_argument("name")
    c.add_argument("--subnet", help="IPv4 CIDR (default: a free /24 from 10.99.0.0/16)")
    c.add_argument("--gateway", help="the host's address on it (default: the first)")
    c.add_argument("--mode", choices=["nat", "bridge", "routed"], default="nat",
                   help="nat (default): bridge + masquerade; bridge: a plain L2 segment; "
                        "routed: no bridge, a /32 route per container and proxy ARP")
    c.add_argument("--bridge", help="bridge name (default derived from the name)")
    c.add_argument("--internal", action="store_true", help="no traffic in or out")
    c.add_argument("--mtu", type=int)
    ls = nsub.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("-q", "--quiet", action="store_true")
    ins = nsub.add_parser("inspect", help="a network's settings and containers (JSON)")
    ins.add_argument("--format", choices=["json"], default="json")
    ins.add_argument("names", nargs="+")
    rm = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    rm.add_argument("names", nargs="+")


def _sub_events(sub, argparse):
    ev = _cmd(sub, "events", "lifecycle events of containers as they happen (create, start, "
              "died with the exit code, oom, remove...); given ID: runc's stats events",
              "zoned events --filter event=died --format json")
    ev.add_argument("--stats", action="store_true", help="(with ID) print stats once and exit")
    ev.add_argument("--interval", default="5s", help="(with ID) seconds between stats")
    ev.add_argument("--format", choices=["text", "json"], default="text",
                    help="(without ID) text or JSON lines")
    ev.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="(without ID) container=NAME, event=EVENT or image=IMAGE")
    ev.add_argument("--timeout", type=float, metavar="SECONDS",
                    help="(without ID) stop after this long (default: until interrupted)")
    ev.add_argument("id", nargs="?", help="(runc) a container: its stats and oom events")


def _sub_update(sub, argparse):
    up = sub.add_parser("update", help="(OCI) change a container's resource limits")
    up.add_argument("-r", "--resources", help="a linux.resources JSON file, or - for stdin")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--cpu-shares",
                 "--cpu-quota", "--cpu-period", "--cpuset-cpus", "--cpuset-mems",
                 "--pids-limit", "--blkio-weight", "--cpus"):
        up.add_argument(flag)
    up.add_argument("--config", action="store_true", help="a defined zone: write the "
                    "change into its zone file (its next boot); with --live, both")
    up.add_argument("--live", action="store_true", help="the running zone (the default "
                    "without --config)")
    up.add_argument("id")


def _sub_features(sub, argparse):
    sub.add_parser("features", help="(OCI) what this runtime supports, as JSON")


def _sub_info(sub, argparse):
    i = sub.add_parser("info", help="how zoned runs here: root or rootless, roots, cgroups")
    i.add_argument("--format", choices=["text", "json"], default="text")


def _sub_gc(sub, argparse):
    g = sub.add_parser("gc", help="remove what crashed or killed zoned processes left behind")
    g.add_argument("--dry-run", action="store_true")


def _sub_bench(sub, argparse):
    b = sub.add_parser("bench", help="measure zones vs VMs (and runc, podman) on this host: "
                       "start-up, density, idle cost, migration, network")
    b.add_argument("what", nargs="?", default="all",
                   choices=["startup", "density", "idle", "migrate", "network", "all"])
    b.add_argument("--backends", default="zone,vm,runc,podman",
                   help="comma-separated (default zone,vm,runc,podman; floors always run)")
    b.add_argument("--count", type=int, help="start-up rounds and instances per backend "
                   "(default 30 and 50; --quick 10 and 10; VMs at most 10, --quick 3)")
    b.add_argument("--quick", action="store_true", help="a short run (under 5 minutes)")
    b.add_argument("--format", choices=["table", "json", "markdown"], default="table",
                   help="what to print on stdout (all are written to --out)")
    b.add_argument("--out", metavar="DIR", help="where bench.json, report.md, table.txt and "
                   "the plots go (default bench/results/zoned-bench)")
    b.add_argument("--plot", metavar="DIR", help="where the PNG plots go (default --out; "
                   "'' for none)")
    b.add_argument("--budget", default="8G", help="stop starting instances of a backend "
                   "once they use this much host memory (default 8G)")
    b.add_argument("--window", type=float, metavar="S",
                   help="idle CPU window in seconds (default 30, --quick 5)")
    b.add_argument("--zoned", metavar="PATH", help="the zoned CLI whose zones and VMs are "
                   "measured (default: this one)")


def _moves_sub(name: str):
    """The parser of a checkpoint or migration command (zoned.cli.parser_moves)."""
    def build(sub, argparse):
        from zoned.cli.parser_moves import build as build_move

        build_move(name, sub, argparse)
    return build


SUBCOMMANDS = [
    ("run", _sub_run), ("ps", _sub_ps), ("stop", _sub_stop), ("kill", _sub_kill),
    ("rm", _sub_rm), ("exec", _sub_exec), ("logs", _sub_logs), ("inspect", _sub_inspect),
    ("stats", _sub_stats), ("pause", _simple("pause", "freeze a container")),
    ("resume", _simple("resume", "thaw a paused container")),
    ("create", _sub_create), ("start", _simple("start", "(OCI) start a created container")),
    ("state", _simple("state", "(OCI) print a container's state JSON")),
    ("delete", _sub_delete), ("spec", _sub_spec), ("image", _sub_image), ("network", _sub_network),
    ("events", _sub_events), ("update", _sub_update), ("features", _sub_features),
    ("info", _sub_info), ("gc", _sub_gc),
    *((n, _moves_sub(n)) for n in ("checkpoint", "restore", "migrate", "relocation-server",
                                   "relocation-key")),
    ("bench", _sub_bench),
    # podman's day-to-day commands (zoned.cli.manage, copy, volumes)
    ("wait", _sub_wait), ("restart", _sub_restart), ("cp", _sub_cp), ("port", _sub_port),
    ("rename", _sub_rename), ("top", _sub_top), ("volume", _sub_volume),
    ("attach", _sub_attach),
]


def _zone_sub(name: str):
    """The parser of a zone command (zoned.cli.zones), imported only when it is built."""
    def build(sub, argparse):
        from zoned.cli.zones import build as build_zone

        build_zone(name, sub, argparse)
    return build


SUBCOMMANDS += [(n, _zone_sub(n)) for n in (
    "define", "undefine", "shutdown", "destroy", "reboot", "console", "list", "dominfo",
    "autostart", "clone", "save", "zone-boot", "zone-exited")]


