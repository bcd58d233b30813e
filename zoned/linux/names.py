"""Checks of names made of ASCII letters, digits and a few marks, without re.

re imports enum, functools and collections: ~4 ms of every zoned command on this host, for
patterns as simple as these. Each check here states its pattern; unlike re's `$`, none
lets a trailing newline through.
"""
from __future__ import annotations

DIGITS = frozenset("0123456789")
ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def made_of(value: object, first: frozenset, rest: frozenset, max_len: int | None = None,
            last: frozenset | None = None) -> bool:
    """[first][rest]*, at most max_len characters, its last one in `last` if given."""
    if not isinstance(value, str) or not value or value[0] not in first:
        return False
    if max_len is not None and len(value) > max_len:
        return False
    if last is not None and value[-1] not in last:
        return False
    return all(c in rest for c in value[1:])


def decimal(value: object, signed: bool = False) -> bool:
    """-?[0-9]+ (the sign only when signed): ASCII digits, not str.isdigit's others."""
    if not isinstance(value, str):
        return False
    if signed and value.startswith("-"):
        value = value[1:]
    return bool(value) and all(c in DIGITS for c in value)
