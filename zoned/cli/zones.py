"""The zone commands as Xen and libvirt admins know them (zoned.zones does the work):
define, undefine, start, shutdown, destroy, reboot, console, list, dominfo, autostart,
clone, save, restore; and the monitor's two hidden helpers, zone-boot and zone-exited.
Their argument parsers are here too: zoned.cli.parser builds one only when it is named."""
from __future__ import annotations

import os
import sys

from zoned.cli.common import runtime
from zoned.cli.output import print_json, print_table


# -- parsers (called by zoned.cli.parser) -----------------------------------------------
def build(name: str, sub, argparse) -> None:
    PARSERS[name](sub, argparse)


def _p_define(sub, argparse):
    p = sub.add_parser("define", help="check a zone file and add it to the zone dir "
                       "(/etc/zoned/zones or $ZONED_ZONE_DIR)")
    p.add_argument("file")


def _p_name(cmd: str, help: str, **extra):
    def b(sub, argparse):
        p = sub.add_parser(cmd, help=help)
        p.add_argument("name")
        if extra.get("timeout"):
            p.add_argument("-t", "--time", type=float,
                           help="seconds before SIGKILL (default: stop_timeout or 10)")
    return b


def _p_shutdown(sub, argparse):
    p = sub.add_parser("shutdown", help="stop a zone: its stop signal, then SIGKILL after "
                       "a timeout; it is not restarted")
    p.add_argument("-t", "--time", type=float,
                   help="seconds before SIGKILL (default: stop_timeout or 10)")
    p.add_argument("-a", "--all", action="store_true", help="every running zone")
    p.add_argument("name", nargs="?")


def _p_list(sub, argparse):
    p = sub.add_parser("list", help="defined zones, with xm list's columns")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("names", nargs="*")


def _p_autostart(sub, argparse):
    p = sub.add_parser("autostart", help="mark a zone to start at boot (--disable: not); "
                       "without NAME, start every zone so marked (the boot path)")
    p.add_argument("--disable", action="store_true")
    p.add_argument("name", nargs="?")


def _p_clone(sub, argparse):
    p = sub.add_parser("clone", help="a new zone from a stopped one: its file and a copy "
                       "of its writable layer")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of the copy (VALUE in YAML), e.g. --set vcpus=2")
    p.add_argument("src")
    p.add_argument("new")


def _p_save(sub, argparse):
    p = sub.add_parser("save", help="checkpoint a running zone into FILE and stop it")
    p.add_argument("name")
    p.add_argument("file")


def _p_zone_boot(sub, argparse):
    p = sub.add_parser("zone-boot")
    p.add_argument("name")


def _p_zone_exited(sub, argparse):
    p = sub.add_parser("zone-exited")
    p.add_argument("name")
    p.add_argument("code", type=int)


PARSERS = {
    "define": _p_define,
    "undefine": _p_name("undefine", "remove a stopped zone's file and writable layer"),
    "shutdown": _p_shutdown,
    "destroy": _p_name("destroy", "kill a zone at once; it stays defined"),
    "reboot": _p_name("reboot", "stop a zone and boot it again", timeout=True),
    "console": _p_name("console", "attach to a zone's console (tty: true); Ctrl-] "
                       "detaches"),
    "list": _p_list,
    "dominfo": _p_name("dominfo", "a zone's details"),
    "autostart": _p_autostart,
    "clone": _p_clone,
    "save": _p_save,
    "zone-boot": _p_zone_boot,
    "zone-exited": _p_zone_exited,
}


# -- commands ---------------------------------------------------------------------------
def cmd_define(args) -> int:
    from zoned.zones import commands

    zone = commands.define(runtime(args), args.file, args.images)
    print(f"zone {zone.name} defined from {args.file}")
    return 0


def cmd_undefine(args) -> int:
    from zoned.zones import commands

    commands.undefine(runtime(args), args.name)
    print(f"zone {args.name} undefined")
    return 0


def cmd_start(args) -> int:
    """`start ID`: runc's start of a created container (what podman and containerd call);
    podman's of a zone zoned made (manage.start_made); else booting a defined zone
    (again)."""
    rt = runtime(args)
    name = args.id
    if rt.store.exists(name):
        st = rt.store.read_state(name)
        if st.get("status") == "created" or \
                not (st.get("annotations") or {}).get("org.zoned.zone"):
            from zoned.cli.oci import cmd_start as oci_start

            if st.get("status") != "created":
                from zoned.cli.manage import start_made

                code = start_made(rt, name, args.images)
                if code is not None:
                    return code
            return oci_start(args)
    from zoned.zones import commands
    from zoned.zones.zonefile import zone_path

    if not os.path.exists(zone_path(name)) and not rt.store.exists(name):
        from zoned.cli.oci import cmd_start as oci_start

        return oci_start(args)  # its error: no such container
    pid = commands.start(rt, name, args.images)
    print(f"zone {name} started (pid {pid})")
    return 0


def cmd_shutdown(args) -> int:
    from zoned.errors import ConfigError
    from zoned.zones import commands

    rt = runtime(args)
    if args.all:
        failed = 0
        for name, what in commands.shutdown_all(rt, args.time):
            print(f"zone {name}: {what}")
            failed += what.startswith("error")
        return 1 if failed else 0
    if not args.name:
        raise ConfigError("shutdown needs a zone name (or --all)")
    commands.shutdown(rt, args.name, args.time)
    print(f"zone {args.name} shut down")
    return 0


def cmd_destroy(args) -> int:
    from zoned.zones import commands

    commands.destroy(runtime(args), args.name)
    print(f"zone {args.name} destroyed")
    return 0


def cmd_reboot(args) -> int:
    from zoned.zones import commands

    pid = commands.reboot(runtime(args), args.name, args.time)
    print(f"zone {args.name} rebooted (pid {pid})")
    return 0


def cmd_console(args) -> int:
    from zoned.zones import commands
    from zoned.zones.console import attach

    rt = runtime(args)
    commands.defined(args.name)
    how = attach(rt.store.root, args.name)
    if os.isatty(2):
        sys.stderr.write(f"\r\n[{how} from zone {args.name}]\r\n")
    return 0


def cmd_list(args) -> int:
    from zoned.zones import commands, listing

    rt = runtime(args)
    names = args.names or commands.names()
    rows = [listing.info(rt, commands.defined(n)) for n in names]
    if args.format == "json":
        print_json(rows)
    else:
        print_table(listing.table(rows))
    return 0


def cmd_dominfo(args) -> int:
    from zoned.zones import commands, listing

    rt = runtime(args)
    for key, value in listing.dominfo_lines(listing.info(rt, commands.defined(args.name))):
        print(f"{key + ':':<15}{value}")
    return 0


def cmd_autostart(args) -> int:
    from zoned.zones import commands

    if args.name:
        commands.set_autostart(args.name, not args.disable)
        print(f"zone {args.name} {'unmarked' if args.disable else 'marked'} as autostarted")
        return 0
    failed = 0
    for name, what in commands.autostart_all(runtime(args), args.images):
        print(f"zone {name}: {what}")
        failed += what.startswith("error")
    return 1 if failed else 0


def cmd_clone(args) -> int:
    from zoned.zones import commands

    commands.clone(runtime(args), args.src, args.new, args.set)
    print(f"zone {args.new} cloned from {args.src}")
    return 0


def cmd_save(args) -> int:
    from zoned.zones import saving

    summary = saving.save(runtime(args), args.name, args.file)
    size = f" ({summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.2f} s)" \
        if summary else ""
    print(f"zone {args.name} saved to {args.file}{size}")
    return 0


def cmd_restore(args) -> int:
    """`restore FILE`: a saved zone (xm restore), under a monitor; with --dir/--import,
    the checkpoint restore of any container; with --image-path, runc's restore."""
    if getattr(args, "image_path", None):
        from zoned.cli.migration import cmd_restore_oci

        return cmd_restore_oci(args)
    if not getattr(args, "file", None):
        from zoned.cli.migration import cmd_restore as checkpoint_restore
        from zoned.errors import ConfigError

        if not args.dir and not args.import_:
            raise ConfigError("restore needs FILE (a saved zone), --dir or --import")

        return checkpoint_restore(args)
    from zoned.zones import saving

    name, pid, defined = saving.restore(runtime(args), args.file, args.images)
    print(f"zone {name} {'defined from the file and ' if defined else ''}restored (pid {pid})")
    return 0


def cmd_zone_boot(args) -> int:
    from zoned.zones.monitor import boot

    rt = runtime(args)
    return boot(rt.store.root, rt.store.data, args.name, args.images)


def cmd_zone_exited(args) -> int:
    from zoned.zones.monitor import exited

    rt = runtime(args)
    return exited(rt.store.root, rt.store.data, args.name, args.code)


# -- zoned run -d --restart ---------------------------------------------------------
def check_restart(args) -> None:
    """`run --restart`'s checks, before anything exists."""
    from zoned.errors import ConfigError
    from zoned.zones.zonefile import RESTART_RE

    if not RESTART_RE.match(args.restart):
        raise ConfigError(f"invalid --restart {args.restart!r}: no, on-failure[:N] or always")
    for bad, why in ((not args.detach, "needs -d (a monitor restarts detached zones)"),
                     (args.rm, "and --rm exclude each other"),
                     (args.backend != "zone", "is for zones (not --backend vm) for now"),
                     (args.tty, "with -t: use a zone file with tty: true (zoned console)")):
        if bad:
            raise ConfigError(f"invalid --restart: {why}")


def run_restart(args, opts, cid: str) -> int:
    """`zoned run -d --restart POLICY` (zoned.zones.transient): the zone under a monitor;
    its name printed, as `run -d` does."""
    import json

    from zoned.errors import ConfigError
    from zoned.oci.spec import RunOptions
    from zoned.zones import record
    from zoned.zones.monitor import launch

    check_restart(args)
    from zoned import api

    api.build_config(opts, args.images)  # every error before anything exists
    rt = runtime(args)
    from zoned.zones.zonefile import zone_path

    if rt.store.exists(cid) or os.path.exists(zone_path(cid)):
        raise ConfigError(f"container name {cid!r} is already in use (a container or a "
                          "defined zone)")
    d = record.zone_run_dir(rt.store.root, cid)
    if os.path.exists(d):
        record.forget(rt.store.root, cid)
    os.makedirs(d, 0o700, exist_ok=True)
    options = {k: getattr(opts, k) for k in RunOptions.FIELDS}
    with open(os.path.join(d, record.TRANSIENT), "w") as f:
        json.dump({"options": options, "restart": args.restart}, f)
    try:
        launch(rt.store.root, rt.store.data, cid, args.images)
    except BaseException:
        record.forget(rt.store.root, cid)
        raise
    print(cid)
    return 0
