"""OCI device rules (linux.resources.devices): checking them, and what they become on v1,
writes to devices.deny/devices.allow. On v2 the same checked rules become an eBPF program
(zoned.cgroups.bpf).
"""
from __future__ import annotations

import errno

from zoned.cgroups.fs import CgroupError
from zoned.cgroups.resources import check_int


def device_rule(i: int, r: object) -> tuple[bool, str, int | None, int | None, str]:
    """The i-th OCI device rule checked and normalised: (allow, type "a"/"b"/"c", major
    or None for any, minor or None for any, access as a subset of "rwm" in that order)."""
    field = f"devices[{i}]"
    if not isinstance(r, dict):
        raise CgroupError(f"{field}: expected an object, got {r!r}", errno.EINVAL, field=field)
    allow = r.get("allow")
    if not isinstance(allow, bool):
        raise CgroupError(f"{field}.allow: expected true or false, got {allow!r}",
                          errno.EINVAL, field=field)
    typ = r.get("type") or "a"
    if typ not in ("a", "b", "c"):
        raise CgroupError(f"{field}.type: expected 'a', 'b' or 'c', got {typ!r}",
                          errno.EINVAL, field=field)
    access = r.get("access") or "rwm"
    if not isinstance(access, str) or set(access) - set("rwm"):
        raise CgroupError(f"{field}.access: expected letters of 'rwm', got {access!r}",
                          errno.EINVAL, field=field)
    major, minor = r.get("major"), r.get("minor")
    major = None if major is None or major == -1 else check_int(field + ".major", major)
    minor = None if minor is None or minor == -1 else check_int(field + ".minor", minor)
    access = "".join(c for c in "rwm" if c in access)
    return allow, typ, major, minor, access


def v1_device_writes(rules: list) -> list[tuple[bool, str]]:
    """The v1 devices.allow/deny writes for an OCI rule list: deny everything, then each
    rule in order (the kernel's exception list then matches the spec's last-rule-wins
    for the usual default-deny-plus-allows lists)."""
    out: list[tuple[bool, str]] = [(False, "a")]
    for i, r in enumerate(rules or []):
        allow, typ, major, minor, access = device_rule(i, r)
        mj = "*" if major is None else str(major)
        mn = "*" if minor is None else str(minor)
        if typ == "a" and major is None and minor is None and access == "rwm":
            entries = ["a"]  # the kernel's "everything": resets the exception list
        elif typ == "a":
            entries = [f"b {mj}:{mn} {access}", f"c {mj}:{mn} {access}"]
        else:
            entries = [f"{typ} {mj}:{mn} {access}"]
        out.extend((allow, e) for e in entries)
    if len(out) > 1 and out[1] == (False, "a"):
        out.pop(0)  # the spec already starts with deny-all
    return out
