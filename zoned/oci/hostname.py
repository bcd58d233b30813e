"""Hostnames: the RFC 1123 rules for a zone's UTS hostname and for names written into
/etc/hosts, and `show` for quoting a bad value in an error line.

A hostname with a newline or a tab in it would add lines to its neighbours' /etc/hosts
(issue 10, item 5), so every name zoned sets or writes is checked here first, with one error
line naming the flag.

Hostnames follow RFC 1123 (labels of 1-63 letters, digits and hyphens, no hyphen at either
end, separated by dots), at most 64 characters in all for a zone's own hostname: that is
the kernel's limit for sethostname() (__NEW_UTS_LEN), below RFC 1123's 253, which still
applies to --add-host names (they are never set as a hostname).

Not part of zoned.network: the spec checks a zone's hostname on `zoned run`'s start-up path,
which must not import the network package (nor re: zoned.linux.names says why).
"""
from __future__ import annotations

from zoned.errors import ConfigError
from zoned.linux.names import ALNUM, made_of

UTS_MAX = 64        # the kernel's hostname limit
DNS_MAX = 253       # RFC 1123 / RFC 1035 limit of a full name
_LABEL_CHARS = ALNUM | frozenset("-")  # a label: [A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?


def hostname_problem(value: object, max_len: int = UTS_MAX) -> str | None:
    """Why `value` is not an RFC 1123 hostname of at most `max_len` characters, or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > max_len:
        return f"at most {max_len} characters"
    for label in value.split("."):
        if not made_of(label, ALNUM, _LABEL_CHARS, 63, last=ALNUM):
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
    for label in "".join(c if c in _LABEL_CHARS or c == "." else "-"
                         for c in name).split("."):
        label = label.strip("-")[:63].strip("-")
        if label:
            labels.append(label)
    out = ".".join(labels)[:UTS_MAX].strip(".-")
    return out if hostname_problem(out) is None else default


def show(value: object) -> str:
    """The bad value quoted on one line (newlines and tabs escaped, long values cut)."""
    text = repr(value) if not isinstance(value, str) else \
        '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return text if len(text) <= 80 else text[:77] + '..."'
