"""User-mode networking for rootless zones: `--network pasta` (passt's pasta), with `-p`
forwarding host ports to the zone. A user can make no veth or bridge; pasta joins the
zone's user and network namespaces, gives it a tap device with the host's addresses and
routes, and forwards the published ports. It runs as the user, beside the zone, and is
ended when the zone is removed (its pid and start time are in state.json).

pasta needs /dev/net/tun openable by the user (mode 0666, as Debian has it); where it is
not, the error says so.
"""
from __future__ import annotations

import os
import signal

from zoned.errors import ConfigError

MODES = ("pasta",)


def tun_usable() -> bool:
    return os.access("/dev/net/tun", os.R_OK | os.W_OK)


def port_spec(publish: str) -> tuple[str, str]:
    """-p "[IP:]HOST:CONTAINER[/tcp|udp]" -> (pasta's -t or -u, "[IP/]HOST:CONTAINER")."""
    spec, _, proto = publish.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise ConfigError(f"invalid -p {publish!r}: protocol must be tcp or udp")
    parts = spec.rsplit(":", 2)
    if len(parts) == 2:
        ip, host, ctr = "", *parts
    elif len(parts) == 3:
        ip, host, ctr = parts
    else:
        raise ConfigError(f"invalid -p {publish!r}: want [IP:]HOST_PORT:CONTAINER_PORT")
    if not (host.isdigit() and ctr.isdigit()):
        raise ConfigError(f"invalid -p {publish!r}: ports must be numbers")
    return ("-t" if proto == "tcp" else "-u"), (f"{ip}/" if ip else "") + f"{host}:{ctr}"


class UserNetwork:
    """The network object Runtime.create drives (prepare, attach, describe, release)."""

    def __init__(self, mode: str, publish: list[str]):
        if mode not in MODES:
            raise ConfigError(f"invalid --network {mode!r}: rootless zones have none "
                              f"(only lo) or {', '.join(MODES)}")
        self.mode = mode
        self.ports = [port_spec(p) for p in publish]
        self.publish = list(publish)
        self.state_dir: str | None = None
        # what state.json records: create writes it again once attach has filled it in
        self.described = {"mode": mode, "pid": None, "start": None,
                          "publish": self.publish, "networks": []}

    def prepare(self, state_dir: str, cfg: dict) -> None:
        from zoned.rootless import find_tool

        if not find_tool("pasta"):
            raise ConfigError("--network pasta: pasta is not installed (apt-get install "
                              "passt)")
        if not tun_usable():
            raise ConfigError("--network pasta: /dev/net/tun is not open to you (its mode "
                              "here is %o; user-mode networking needs 0666)"
                              % (os.stat("/dev/net/tun").st_mode & 0o777))
        self.state_dir = state_dir

    def attach(self, pid: int) -> None:
        import subprocess

        from zoned.linux.proc import proc_start_time
        from zoned.rootless import find_tool

        pidfile = os.path.join(self.state_dir or "/tmp", "pasta.pid")
        argv = [find_tool("pasta") or "pasta", "--config-net", "--quiet", "--pid", pidfile,
                "-T", "none", "-U", "none"]
        if not any(flag == "-u" for flag, _ in self.ports):
            argv += ["-u", "none"]
        if not any(flag == "-t" for flag, _ in self.ports):
            argv += ["-t", "none"]
        for flag, spec in self.ports:
            argv += [flag, spec]
        p = subprocess.run(argv + [str(pid)], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            why = " ".join(ln for ln in p.stderr.splitlines() if "syslog" not in ln)
            raise ConfigError(f"--network pasta: pasta failed: {why or p.returncode}")
        with open(pidfile) as f:  # pasta forks to the background and writes its pid
            pasta = int(f.read().strip())
        self.described.update(pid=pasta, start=proc_start_time(pasta))

    def describe(self) -> dict:
        return self.described

    def release(self) -> None:
        release(self.describe())


def release(described: dict | None) -> None:
    """End a zone's pasta (idempotent: a pid that is gone or reused is left alone)."""
    if not described or not described.get("pid"):
        return
    from zoned.linux.proc import signal_pid, wait_exit

    try:
        signal_pid(described["pid"], described.get("start"), signal.SIGTERM)
        if not wait_exit(described["pid"], described.get("start"), 2):
            signal_pid(described["pid"], described.get("start"), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
