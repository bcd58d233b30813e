"""The few prctl/capset calls a container's init makes, straight through zoned._native.

They used python-prctl, whose import (libcap, its tables: ~2 ms) ran after the fork, on
every start's critical path. A capability set is a 64-bit mask here (bit N: capability N).
"""
from __future__ import annotations

import os

from zoned._native import ffi, lib

PR_SET_PDEATHSIG = lib.PR_SET_PDEATHSIG
PR_SET_KEEPCAPS = lib.PR_SET_KEEPCAPS
PR_SET_NO_NEW_PRIVS = lib.PR_SET_NO_NEW_PRIVS


def _prctl(option: int, value: int, what: str) -> None:
    if lib.z_prctl(option, value, 0, 0, 0) < 0:
        err = ffi.errno
        raise OSError(err, f"prctl({what}): {os.strerror(err)}")


def set_pdeathsig(sig: int) -> None:
    """The signal we get when our parent dies (0: none)."""
    _prctl(PR_SET_PDEATHSIG, int(sig), "PR_SET_PDEATHSIG")


def set_keepcaps(on: bool) -> None:
    """Keep the permitted capabilities across a change of uid away from 0."""
    _prctl(PR_SET_KEEPCAPS, int(bool(on)), "PR_SET_KEEPCAPS")


def set_no_new_privs() -> None:
    """no_new_privs: no exec gains privileges from now on (set-uid bits, file caps)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")


def mask(caps) -> int:
    """The mask of capability numbers."""
    m = 0
    for c in caps:
        m |= 1 << int(c)
    return m


def get_caps() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of this thread."""
    e, p, i = (ffi.new("unsigned long long *") for _ in range(3))
    if lib.z_capget(e, p, i) < 0:
        err = ffi.errno
        raise OSError(err, f"capget: {os.strerror(err)}")
    return e[0], p[0], i[0]


def set_caps(effective: int, permitted: int, inheritable: int) -> None:
    """Set all three sets at once (effective must lie within permitted)."""
    if lib.z_capset(effective, permitted, inheritable) < 0:
        err = ffi.errno
        raise OSError(err, f"capset: {os.strerror(err)}")
