"""Help for the options and arguments that are declared without one (runc's OCI flags,
the zone commands' arguments), and an example for every command's --help: kept in one
table so that `zoned CMD --help` always explains every option (tests/test_cli_podman.py
checks it). Loaded only when a parser is built for --help or an error message."""
from __future__ import annotations

# dest -> help, for any command; (command, dest) -> help overrides
HELP = {
    "id": "the container", "name": "its name", "names": "names", "file": "a file",
    "command": "the command and its arguments", "log_format": "(runc) text or json",
    "debug": "show the Python traceback of an internal error",
    "interactive": "keep stdin open", "tty": "give the command a terminal",
    "detach": "do not wait for it", "env": "NAME=VALUE; repeatable",
    "user": "UID[:GID] or NAME[:GROUP]", "workdir": "the working directory",
    "pid_file": "(OCI) write the pid here", "console_socket": "(OCI) send the pty master "
    "to this unix socket", "preserve_fds": "(OCI) pass this many fds after stderr",
    "cap": "(OCI) add this capability; repeatable", "additional_gids": "(OCI) an extra "
    "group; repeatable", "no_new_privs": "(OCI) set no_new_privs",
    "bundle": "(OCI) the bundle directory (default .)", "no_pivot": "(OCI) accepted, "
    "ignored", "no_new_keyring": "(OCI) accepted, ignored", "force": "also when running",
    "rootless": "(OCI) a config for a rootless container", "recipe": "images/NAME.yaml or "
    "a recipe file", "format": "table or json", "source": "an archive, OCI layout or "
    "rootfs tarball", "quiet": "only the names", "mtu": "the MTU of the network's links",
    "dry_run": "only say what would be removed", "leave_running": "keep it running after "
    "the dump", "tcp_established": "checkpoint established TCP connections",
    "dest": "ssh://[user@]host[:port] or zoned://host:port", "what": "which benchmark",
    "disable": "turn autostart off", "src": "the zone to copy", "new": "the new zone's "
    "name", "code": "(internal) the exit code", "memory": "memory limit, e.g. 64m",
    "memory_reservation": "soft memory limit", "memory_swap": "memory+swap limit (-1: "
    "unlimited)", "cpu_shares": "relative CPU weight", "cpu_quota": "CFS quota in us per "
    "period", "cpu_period": "CFS period in us", "cpuset_cpus": "CPUs it may use, e.g. 0-1",
    "cpuset_mems": "memory nodes it may use", "pids_limit": "most processes (-1: no "
    "limit)", "blkio_weight": "relative block IO weight (10-1000)", "cpus": "CPU limit in "
    "CPUs, e.g. 0.5",
    ("image rm", "name"): "the image", ("image export", "name"): "the image",
    ("image export", "file"): "the archive to write", ("image inspect", "name"): "the image",
    ("image history", "name"): "the image", ("image import", "name"): "the image's name "
    "(default: from the archive)", ("define", "file"): "the zone file",
    ("save", "file"): "where the saved zone goes", ("relocation-key", "file"): "the key "
    "file to write", ("list", "names"): "zones (default: all)",
    ("network inspect", "format"): "json", ("list", "format"): "table or json",
}

EXAMPLES = {
    "exec": "zoned exec -it web sh", "pause": "zoned pause web", "resume": "zoned resume web",
    "create": "zoned create -b ./bundle ctr1", "start": "zoned start ctr1",
    "state": "zoned state ctr1", "delete": "zoned delete -f ctr1", "spec": "zoned spec -b .",
    "image": "zoned image import busybox.tar --name busybox",
    "network": "zoned network create lan --subnet 10.99.5.0/24",
    "update": "zoned update --memory 128m web", "features": "zoned features",
    "gc": "zoned gc --dry-run", "checkpoint": "zoned checkpoint --export web.tar.zst web",
    "restore": "zoned restore --import web.tar.zst", "migrate": "zoned migrate web "
    "ssh://host2", "relocation-server": "zoned relocation-server --stdio",
    "relocation-key": "zoned relocation-key /etc/zoned/relocation.pem",
    "bench": "zoned bench startup --quick", "info": "zoned info",
    "define": "zoned define web.zone",
    "undefine": "zoned undefine web", "shutdown": "zoned shutdown -t 5 web",
    "destroy": "zoned destroy web", "reboot": "zoned reboot web", "console": "zoned "
    "console web", "list": "zoned list", "dominfo": "zoned dominfo web",
    "autostart": "zoned autostart web", "clone": "zoned clone web web2",
    "save": "zoned save web web.save", "zone-boot": "(internal, run by the monitor)",
    "zone-exited": "(internal, run by the monitor)",
}


def fill(parser, path: tuple[str, ...] = ()) -> None:
    """Give every action of `parser` and its subcommands a help, every command an
    example (epilog), where their declarations have none."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                here = path + (name,)
                if len(here) == 1 and not sub.epilog and name in EXAMPLES:
                    sub.epilog = f"example:\n  {EXAMPLES[name]}"
                    sub.formatter_class = argparse.RawDescriptionHelpFormatter
                fill(sub, here)
        elif action.help is None:
            action.help = HELP.get((" ".join(path), action.dest)) or HELP.get(action.dest)
