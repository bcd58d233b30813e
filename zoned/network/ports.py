"""Published ports (`-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]`): parsing, and the check that
the host port is free on the host.

zoned publishes a port with a DNAT rule only: nothing is bound on the host. Without a check
a zone would silently take over a port a host process listens on (issue 10, item 6). So,
like podman, zoned refuses a port the host already uses: when the zone is created it binds
the host address and port itself (the kernel's own conflict rules: a wildcard listener
blocks every specific address and the other way round, an IPv6 dual-stack listener blocks
IPv4) and lets go at once.

zoned checks and does not hold the port. Holding it needs a process that lives as long as
the zone, and zoned has none (podman's conmon holds them); handing the socket to the zone's
own init would put a host-namespace socket inside the zone. So a host process that binds the
port *after* the zone was created is not stopped; the zone's DNAT rule takes the traffic.
"""
from __future__ import annotations

import errno
import ipaddress
import re

from zoned.errors import ConfigError
from zoned.oci.hostname import show
from zoned.network.model import PortMapping

_PORT_RE = re.compile(r"^(?:([0-9.]+):)?(\d{1,5}):(\d{1,5})(?:/(tcp|udp))?\Z")


def parse_publish(value: str) -> PortMapping:
    """One `-p` value, parsed once: the PortMapping keeps `value` as its spec, for errors."""
    shown = show(value)
    m = _PORT_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"invalid -p {shown}: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]")
    host_ip, hp, cp, proto = m.groups()
    hp, cp = int(hp), int(cp)
    if not (0 < hp < 65536 and 0 < cp < 65536):
        raise ConfigError(f"invalid -p {shown}: ports are 1..65535")
    if host_ip:
        try:
            addr = ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise ConfigError(f"invalid -p {shown}: {host_ip} is not an IPv4 "
                              "address") from None
        if addr.is_multicast or addr.is_reserved:
            raise ConfigError(f"invalid -p {shown}: {host_ip} is not a unicast address")
        # 0.0.0.0: every address, as without HOSTIP
        host_ip = None if addr.is_unspecified else str(addr)
    return PortMapping(host_port=hp, port=cp, proto=proto or "tcp", host_ip=host_ip,
                       spec=value)


def check_publish_twice(ports: list[PortMapping]) -> None:
    """One zone publishing the same host port twice (any two host addresses overlap when
    either is the wildcard; two specific ones are refused too, to keep the rule simple)."""
    seen: dict = {}
    for p in ports:
        k = (p.proto, p.host_port)
        spec = show(p.shown())
        if k in seen:
            raise ConfigError(f"invalid -p {spec}: host port {p.host_port}/{p.proto} "
                              f"is published twice (also by -p {seen[k]})")
        seen[k] = spec


def check_host_free(ports: list[PortMapping]) -> None:
    """Refuse a host port that a process on the host has bound (see the module doc)."""
    for p in ports:
        why = _bind_problem(p.host_ip or "0.0.0.0", p.host_port, p.proto)
        if why:
            raise ConfigError(f"invalid -p {show(p.shown())}: {why}")


def _bind_problem(addr: str, port: int, proto: str) -> str | None:
    import socket

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":
            # Only listeners (and sockets bound without SO_REUSEADDR) conflict, not the
            # TIME_WAIT leftovers of closed connections.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                where = "" if addr == "0.0.0.0" else f" on {addr}"
                return (f"host port {port}/{proto}{where} is already in use by a process "
                        "on the host")
            if e.errno == errno.EADDRNOTAVAIL:
                return f"{addr} is not an address of this host"
            return f"cannot check host port {addr}:{port}/{proto}: {e.strerror}"
    return None
