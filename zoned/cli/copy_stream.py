"""The tar stream of `zoned cp`, on the side that receives it: its top entry renamed to
the destination's name, every entry checked to lie below it, unpacked by
zoned.images.unpack.Unpacker (zoned.cli.copy's docstring says what that refuses). Shared
by a zone's copy (zoned.cli.copy) and a VM's (zoned.cli.copy_vm)."""
from __future__ import annotations

TOP = "_zoned_cp_"  # the top-level name in the stream; renamed on the receiving side


def rename(member, name: str, top: str = TOP) -> None:
    """The stream's top-level name becomes the destination's (hard links' targets too).
    An entry not below `top` is refused: a stream another side wrote (a VM's guest) may
    hold anything."""
    from zoned.images.unpack import UnsafeArchive

    for attr in ("name", "linkname") if member.islnk() else ("name",):
        value = getattr(member, attr).rstrip("/")
        if value != top and not value.startswith(top + "/"):
            raise UnsafeArchive(f"cp: {value!r} is not below {top!r}")
        setattr(member, attr, name + value[len(top):])


CP_MAX_BYTES = 1 << 62  # a copy has no size limit of its own (Unpacker's is for images)


def unpack(fileobj, into: str, name: str, *, privileged: bool,
           owner: tuple[int, int] | None = None, top: str = TOP) -> None:
    """The tar stream `fileobj` below the directory `into`, its top (`top` in the stream)
    named `name`; every entry owned by `owner` (uid, gid) where given, else by the ids the
    stream names."""
    from zoned.images.unpack import Limits, Unpacker

    def entry(m) -> None:
        rename(m, name, top)
        if owner is not None:
            m.uid, m.gid = owner

    Unpacker(into, Limits(max_bytes=CP_MAX_BYTES), layered=False, privileged=privileged,
             replace_dirs=False).apply(fileobj, "cp", entry)
