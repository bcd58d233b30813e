"""A lean parser for the argv of `zoned run`, of runc's commands podman and containerd
call (create, start, state, kill, delete, exec), of `zoned ps` and of `zoned --version`:
the common forms only, without importing argparse. argparse (with re, gettext, locale and
shutil, which its help formatter pulls in) costs ~6 ms of every `zoned run`, more than a
third of runc's whole `run`. This gives the very Namespace zoned.cli.parser's argparse
parser gives, or None whenever an argv is anything but plain: an unknown or abbreviated
flag, clustered short flags (-it), a flag value starting with "-", a bad int or choice,
--image with --rootfs, -h. Then argparse parses it, with its errors and help.
tests/test_start_path.py checks the two agree (and that this table knows every dest
argparse sets).
"""
from __future__ import annotations

GLOBAL_VALUE = {"--root": "root", "--data-root": "data_root", "--images": "images",
                "--log": "log", "--log-format": "log_format"}
GLOBAL_TRUE = {"--debug": "debug", "--systemd-cgroup": "systemd_cgroup",
               "--version": "version", "-v": "version"}
GLOBAL_DEFAULTS = {"root": None, "data_root": None, "images": None, "log": None,
                   "log_format": "text", "debug": False, "systemd_cgroup": False,
                   "version": False, "cmd": None}

RUN_TRUE = {"--rm": "rm", "-d": "detach", "--detach": "detach", "-i": "interactive",
            "--interactive": "interactive", "-t": "tty", "--tty": "tty",
            "--privileged": "privileged", "--read-only": "read_only", "--init": "init",
            "--no-pivot": "no_pivot", "--no-new-keyring": "no_new_keyring", "--keep": "keep"}
RUN_VALUE = {"--name": "name", "--restart": "restart", "--image": "image",
             "--rootfs": "rootfs", "--hostname": "hostname", "--memory": "memory",
             "-m": "memory", "--memory-swap": "memory_swap",
             "--memory-cgroup": "memory_cgroup", "--cpus": "cpus",
             "--cpu-shares": "cpu_shares", "--cpuset-cpus": "cpuset_cpus",
             "--pids-limit": "pids_limit", "-w": "workdir", "--workdir": "workdir",
             "--entrypoint": "entrypoint", "-u": "user", "--user": "user",
             "--stop-signal": "stop_signal", "--stop-timeout": "stop_timeout", "--ip": "ip",
             "--mac": "mac", "--backend": "backend", "--accel": "accel", "-b": "bundle",
             "--bundle": "bundle", "--pid-file": "pid_file",
             "--console-socket": "console_socket", "--preserve-fds": "preserve_fds",
             "--detach-keys": "detach_keys"}
RUN_APPEND = {"-e": "env", "--env": "env", "--env-file": "env_file", "-v": "volume",
              "--volume": "volume", "--mount": "mount", "--tmpfs": "tmpfs",
              "--cap-add": "cap_add", "--cap-drop": "cap_drop", "-l": "label",
              "--label": "label", "--network": "network", "--net": "network",
              "-p": "publish", "--publish": "publish", "--dns": "dns",
              "--add-host": "add_host"}
RUN_INT = frozenset({"cpu_shares", "pids_limit", "stop_timeout", "preserve_fds"})
RUN_CHOICES = {"backend": ("zone", "vm"), "accel": ("auto", "kvm", "tcg"),
               "memory_cgroup": ("own", "shared"),
               "log_format": ("text", "json")}
RUN_DEFAULTS = {**{d: False for d in RUN_TRUE.values()},
                **{d: None for d in RUN_VALUE.values()},
                **{d: [] for d in RUN_APPEND.values()},
                "backend": "zone", "accel": "auto", "preserve_fds": 0, "command": []}


class Command:
    """A subcommand's flags and positionals (required, then optional, then the rest of
    argv: `remainder`), as parser.py has them; the lean parse of one takes flags and
    positionals in any order, as argparse, until the remainder begins."""

    def __init__(self, true: dict | None = None, value: dict | None = None,
                 append: dict | None = None, positionals: tuple = ("id",),
                 optional: tuple = (), remainder: str | None = None,
                 defaults: dict | None = None):
        self.true, self.value, self.append = true or {}, value or {}, append or {}
        self.positionals, self.optional, self.remainder = positionals, optional, remainder
        self.defaults = {**{d: False for d in self.true.values()},
                         **{d: None for d in self.value.values()},
                         **{d: None for d in optional}, **(defaults or {})}


OCI = {  # runc's commands as podman and containerd call them (zoned.cli.oci)
    "create": Command(true={"--no-pivot": "no_pivot", "--no-new-keyring": "no_new_keyring"},
                      value={"-b": "bundle", "--bundle": "bundle", "--pid-file": "pid_file",
                             "--console-socket": "console_socket",
                             "--preserve-fds": "preserve_fds", "--backend": "backend",
                             "--accel": "accel"},
                      defaults={"bundle": ".", "preserve_fds": 0, "accel": "auto"}),
    "start": Command(),
    "state": Command(),
    "delete": Command(true={"-f": "force", "--force": "force"}),
    "kill": Command(true={"-a": "all", "--all": "all"}, value={"-s": "sig", "--signal": "sig"},
                    optional=("signal",)),
    "exec": Command(true={"-i": "interactive", "--interactive": "interactive", "-t": "tty",
                          "--tty": "tty", "-d": "detach", "--detach": "detach",
                          "--no-new-privs": "no_new_privs"},
                    value={"-u": "user", "--user": "user", "-w": "workdir",
                           "--workdir": "workdir", "--cwd": "workdir", "-p": "process",
                           "--process": "process", "--pid-file": "pid_file",
                           "--console-socket": "console_socket",
                           "--preserve-fds": "preserve_fds",
                           "--process-label": "process_label", "--apparmor": "apparmor"},
                    append={"-e": "env", "--env": "env", "-c": "cap", "--cap": "cap",
                            "-g": "additional_gids", "--additional-gids": "additional_gids"},
                    remainder="command", defaults={"preserve_fds": 0}),
}
# Commands a person types most often, besides `run` (`zoned ps -a`: 22-26 -> 12-14 ms here)
EVERYDAY = {
    "ps": Command(true={"-q": "quiet", "--quiet": "quiet", "-a": "all", "--all": "all"},
                  value={"--format": "format"}, positionals=(), optional=("id",),
                  defaults={"format": "table"}),
}
LEAN = {**OCI, **EVERYDAY}


class Namespace:
    """argparse.Namespace's behaviour (attributes, equality, vars()) without argparse."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __eq__(self, other) -> bool:
        return vars(self) == vars(other)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __repr__(self) -> str:
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in sorted(vars(self).items()))})"


def _value(flag: str, argv: list[str], i: int) -> tuple[str | None, str, int]:
    """(dest-lookup flag, value, next index) for `--flag value` or `--flag=value`; value
    None when there is none that argparse would surely take."""
    if flag.startswith("--") and "=" in flag:
        name, _, value = flag.partition("=")
        return name, value, i + 1
    if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        return flag, argv[i + 1], i + 2
    return flag, None, i + 1


def parse(argv: list[str]):
    """The Namespace of `[GLOBAL FLAGS] run [RUN FLAGS] [COMMAND...]` or of `--version`,
    or None when argparse must decide."""
    ns = dict(GLOBAL_DEFAULTS)
    i, n = 0, len(argv)
    while i < n:  # global flags, up to the subcommand
        arg = argv[i]
        if arg in GLOBAL_TRUE:
            ns[GLOBAL_TRUE[arg]] = True
            i += 1
            continue
        if not arg.startswith("-"):
            break
        flag, value, i = _value(arg, argv, i)
        dest = GLOBAL_VALUE.get(flag)
        if dest is None or value is None:
            return None
        if dest in RUN_CHOICES and value not in RUN_CHOICES[dest]:
            return None
        ns[dest] = value
    if i == n:
        return Namespace(**ns) if ns["version"] else None
    if argv[i] in LEAN:
        return _command(ns, argv[i], LEAN[argv[i]], argv[i + 1:])
    if argv[i] != "run":
        return None
    ns.update(RUN_DEFAULTS, cmd="run")
    for dest in RUN_APPEND.values():
        ns[dest] = []
    i += 1
    while i < n:
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if arg == "-":
                return None
            ns["command"] = argv[i:]
            break
        if arg in RUN_TRUE:
            ns[RUN_TRUE[arg]] = True
            i += 1
            continue
        flag, value, i = _value(arg, argv, i)
        if value is None:
            return None
        if flag in RUN_VALUE:
            dest = RUN_VALUE[flag]
            value = _checked(dest, value)
            if value is None:
                return None
            ns[dest] = value
        elif flag in RUN_APPEND:
            ns[RUN_APPEND[flag]].append(value)
        else:
            return None
    if ns["image"] is not None and ns["rootfs"] is not None:
        return None  # mutually exclusive: argparse's error
    return Namespace(**ns)


def _checked(dest: str, value: str) -> str | int | None:
    """The value as argparse stores it (an int, a valid choice), or None where argparse
    would refuse it (and say why)."""
    if dest in RUN_INT:
        try:
            return int(value)
        except ValueError:
            return None
    if dest in RUN_CHOICES and value not in RUN_CHOICES[dest]:
        return None
    return value


def _command(ns: dict, name: str, cmd: Command, argv: list[str]):
    ns.update(cmd.defaults, cmd=name)
    ns.update({dest: [] for dest in cmd.append.values()})
    places = [*cmd.positionals, *cmd.optional]
    given = 0
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        if cmd.remainder and given == len(places):  # the command and its own flags
            if "--" in argv[i:]:
                return None  # argparse's way with "--" in a remainder
            ns[cmd.remainder] = argv[i:]
            break
        if not arg.startswith("-"):
            if given == len(places):
                return None
            ns[places[given]] = arg
            given += 1
            i += 1
            continue
        if arg in cmd.true:
            ns[cmd.true[arg]] = True
            i += 1
            continue
        flag, value, i = _value(arg, argv, i)
        if flag in cmd.append and value is not None:
            ns[cmd.append[flag]].append(value)
            continue
        dest = cmd.value.get(flag)
        if dest is None or value is None:
            return None  # "--", "-", an unknown flag or a value argparse must judge
        value = _checked(dest, value)
        if value is None:
            return None
        ns[dest] = value
    if given < len(cmd.positionals):
        return None
    if cmd.remainder:
        ns.setdefault(cmd.remainder, [])
    return Namespace(**ns)
