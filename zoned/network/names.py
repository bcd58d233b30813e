"""Validation of what ends up in a zone's /etc/hosts and /etc/resolv.conf: --dns servers,
--add-host entries, and the last guard on names that come from files (leases, a migrated
zone's state). The hostname rules themselves are zoned.oci.hostname's.

No imports beyond re and ipaddress.
"""
from __future__ import annotations

import ipaddress
import re

from zoned.errors import ConfigError
from zoned.oci.hostname import DNS_MAX, hostname_problem, show

HOST_GATEWAY = "host-gateway"  # podman's --add-host value for the host's address


def check_dns(value: object) -> str:
    """A --dns server: an IPv4 or IPv6 address, nothing else (it becomes a resolv.conf
    `nameserver` line)."""
    try:
        addr = ipaddress.ip_address(str(value).strip() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(f"invalid --dns {show(value)}: expected an IP address") from None
    if getattr(addr, "scope_id", None) is not None:  # fe80::1%<anything, newlines too>
        raise ConfigError(f"invalid --dns {show(value)}: an address with a scope (%...)")
    return str(addr)


def parse_add_host(item: object) -> tuple[list[str], str]:
    """--add-host NAME[;NAME...]:IP (podman's syntax): the names checked as hostnames, the
    address parsed; IPv6 may be given bare or in brackets (`h:[::1]`), and `host-gateway`
    stands for the host's address on the zone's network (resolved later)."""
    if not isinstance(item, str):
        raise ConfigError(f"invalid --add-host {show(item)}: expected name:ip")
    names, sep, ip = item.partition(":")
    if not sep or not names or not ip:
        raise ConfigError(f"invalid --add-host {show(item)}: expected name:ip")
    hosts = names.split(";")
    for h in hosts:
        why = hostname_problem(h, DNS_MAX)
        if why:
            raise ConfigError(f"invalid --add-host {show(item)}: host name {show(h)}: {why}")
    if ip == HOST_GATEWAY:
        return hosts, ip
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ConfigError(f"invalid --add-host {show(item)}: {show(ip)} is not an IP "
                          f"address (or {HOST_GATEWAY})") from None
    if getattr(addr, "scope_id", None) is not None:  # its text would go into /etc/hosts
        raise ConfigError(f"invalid --add-host {show(item)}: an address with a scope (%...)")
    return hosts, str(addr)


def safe_hosts_name(value: object) -> bool:
    """Whether `value` can be written as one field of an /etc/hosts line: a last guard
    for names that come from files rather than flags (leases, a migrated zone's state)."""
    return isinstance(value, str) and bool(value) and len(value) <= DNS_MAX and \
        re.fullmatch(r"[A-Za-z0-9_.+-]+", value) is not None
