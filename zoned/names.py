"""Validation of what ends up in a zone's /etc/hosts, /etc/resolv.conf and UTS hostname.

Those files are plain text that every zone on a network shares entries of: a hostname with a
newline or a tab in it would add lines to its neighbours' /etc/hosts (issue 10, item 5). So
every name zoned writes there is checked here first, with one error line naming the flag.

Hostnames follow RFC 1123 (labels of 1-63 letters, digits and hyphens, no hyphen at either
end, separated by dots), at most 64 characters in all for a zone's own hostname: that is
the kernel's limit for sethostname() (__NEW_UTS_LEN), below RFC 1123's 253, which still
applies to --add-host names (they are never set as a hostname).

No imports beyond re and ipaddress: this runs on `zoned run`'s start-up path.
"""
from __future__ import annotations

import ipaddress
import re

from zoned.errors import ConfigError

UTS_MAX = 64        # the kernel's hostname limit
DNS_MAX = 253       # RFC 1123 / RFC 1035 limit of a full name
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
HOST_GATEWAY = "host-gateway"  # podman's --add-host value for the host's address


def hostname_problem(value: object, max_len: int = UTS_MAX) -> str | None:
    """Why `value` is not an RFC 1123 hostname of at most `max_len` characters, or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > max_len:
        return f"at most {max_len} characters"
    for label in value.split("."):
        if not _LABEL_RE.match(label):
            return ("use letters, digits and hyphens in dot-separated labels of 1-63 "
                    "characters, with no hyphen at either end (RFC 1123)")
    return None


def check_hostname(value: object, field: str = "--hostname", max_len: int = UTS_MAX) -> str:
    why = hostname_problem(value, max_len)
    if why:
        raise ConfigError(f"invalid {field} {show(value)}: {why}")
    return value  # type: ignore[return-value]


def hostname_for(hostname: str | None, name: str | None, default: str = "zoned") -> str:
    """A zone's hostname: --hostname if given (checked), else its name when that is a valid
    hostname, else the name made into one (container names may hold `_` and `+` and run to
    128 characters; a name is not a request for that exact hostname)."""
    if hostname is not None:
        return check_hostname(hostname)
    if not name:
        return default
    if hostname_problem(name) is None:
        return name
    labels = []
    for label in re.sub(r"[^A-Za-z0-9.-]", "-", name).split("."):
        label = label.strip("-")[:63].strip("-")
        if label:
            labels.append(label)
    out = ".".join(labels)[:UTS_MAX].strip(".-")
    return out if hostname_problem(out) is None else default


def check_dns(value: object) -> str:
    """A --dns server: an IPv4 or IPv6 address, nothing else (it becomes a resolv.conf
    `nameserver` line)."""
    try:
        return str(ipaddress.ip_address(str(value).strip() if isinstance(value, str) else value))
    except ValueError:
        raise ConfigError(f"invalid --dns {show(value)}: expected an IP address") from None


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
    return hosts, str(addr)


def safe_hosts_name(value: object) -> bool:
    """Whether `value` can be written as one field of an /etc/hosts line: a last guard
    for names that come from files rather than flags (leases, a migrated zone's state)."""
    return isinstance(value, str) and bool(value) and len(value) <= DNS_MAX and \
        re.fullmatch(r"[A-Za-z0-9_.+-]+", value) is not None


def show(value: object) -> str:
    """The bad value quoted on one line (newlines and tabs escaped, long values cut)."""
    text = repr(value) if not isinstance(value, str) else \
        '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return text if len(text) <= 80 else text[:77] + '..."'
