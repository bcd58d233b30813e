"""/proc/PID/mountinfo, parsed once and right (proc(5)); zoned's only parser of it.

A line is `ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
SUPER_OPTIONS`. The kernel writes path fields byte for byte, escaping space, tab, newline and
backslash (and `,` `=` in super options) as three octal digits (`\\040`). So a field is
split off first, its escapes are decoded on bytes, and only then are the bytes decoded as
UTF-8 (surrogateescape: a name that is not UTF-8 still round-trips through os.fsencode).
Decoding escapes on str instead (`unicode_escape`) turns UTF-8 names into mojibake.

On `zoned run`'s start path (cgroup detection): no regex, typing, dataclasses or
namedtuple.
"""
from __future__ import annotations

OCTAL_DIGITS = b"01234567"


class Mount:
    """One line of mountinfo, with every text field unescaped. options (per mount: "rw",
    "nosuid", ...) and super_options (the file system's) are split on commas before they
    are unescaped, so a comma inside a value (an overlay lowerdir) does not split it;
    optional holds the propagation tags ("shared:1", "master:2"). A plain class with
    __slots__: namedtuple() and dataclasses cost more to set up than a start path parse."""

    __slots__ = ("mount_id", "parent_id", "major", "minor", "root", "mount_point", "options",
                 "optional", "fstype", "source", "super_options")
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    def __init__(self, mount_id: int, parent_id: int, major: int, minor: int, root: str,
                 mount_point: str, options: tuple[str, ...], optional: tuple[str, ...],
                 fstype: str, source: str, super_options: tuple[str, ...]):
        self.mount_id, self.parent_id, self.major, self.minor = mount_id, parent_id, major, minor
        self.root, self.mount_point, self.options, self.optional = root, mount_point, options, \
            optional
        self.fstype, self.source, self.super_options = fstype, source, super_options

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mount) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Mount(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def unescape(field: bytes) -> str:
    """A mountinfo field with the kernel's octal escapes decoded, as UTF-8."""
    if b"\\" in field:
        first, *rest = field.split(b"\\")
        out = bytearray(first)
        for part in rest:
            code = part[:3]
            if len(code) == 3 and all(c in OCTAL_DIGITS for c in code) and int(code, 8) < 256:
                out.append(int(code, 8))
                out += part[3:]
            else:  # not an escape the kernel writes: keep it as it is
                out += b"\\" + part
        field = bytes(out)
    return field.decode("utf-8", "surrogateescape")


def parse_line(line: bytes) -> Mount | None:
    """One mountinfo line as a Mount; None for a line that is not one (never from the
    kernel: a truncated read, a blank line)."""
    line = line.rstrip(b"\n")
    if b"\\" not in line:  # the common case, nothing escaped: decode the line once
        text = line.decode("utf-8", "surrogateescape")
        return _record(text.split(" "), str, "-", ",", ":")
    return _record(line.split(b" "), unescape, b"-", b",", b":")


def _record(fields, decode, dash, comma, colon) -> Mount | None:
    """The Mount of a line's fields (all str or all bytes, with the separators to match)."""
    try:
        sep = fields.index(dash, 6)
        major, minor = fields[2].split(colon)
        sopts = fields[sep + 3] if len(fields) > sep + 3 else None
        return Mount(int(fields[0]), int(fields[1]), int(major), int(minor),
                     decode(fields[3]), decode(fields[4]),
                     tuple(map(decode, fields[5].split(comma))),
                     tuple(map(decode, fields[6:sep])), decode(fields[sep + 1]),
                     decode(fields[sep + 2]),
                     tuple(map(decode, sopts.split(comma))) if sopts else ())
    except (ValueError, IndexError):
        return None


def parse(text: bytes | str) -> list[Mount]:
    """Every mount in a mountinfo text, in its order. A str (a file read in text mode) is
    turned back into the kernel's bytes first."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    # split on newlines only: the kernel escapes \n in names, but not \r (splitlines)
    return [m for m in map(parse_line, text.split(b"\n")) if m is not None]


def read(pid: int | str = "self") -> list[Mount]:
    """The mounts process `pid` sees (its mount namespace, under its root)."""
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse(f.read())
