"""The v2 device allow-list: an OCI device rule list compiled to a
BPF_PROG_TYPE_CGROUP_DEVICE program (runc's devicefilter, same layout), loaded and attached
to the cgroup with bpf(2). Loaded only when a v2 cgroup gets device rules.
"""
from __future__ import annotations

import os
import struct

from zoned.cgroups.devices import device_rule
from zoned.cgroups.fs import CgroupError, logger

ACCESS_BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD/READ/WRITE
TYPE_BITS = {"b": 1, "c": 2}            # BPF_DEVCG_DEV_BLOCK/CHAR


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction (struct bpf_insn), little-endian."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_LDXW, _AND32K, _RSH32K, _MOV32X, _MOV64K = 0x61, 0x54, 0x74, 0xBC, 0xB7
_JNEK, _JNEX, _EXIT = 0x55, 0x5D, 0x95


def device_filter(rules: list) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program for an OCI device rule list: the last matching
    rule decides, nothing matching is denied (runc's devicefilter, same layout)."""
    parsed = [device_rule(i, r) for i, r in enumerate(rules or [])]
    prog = [
        insn(_LDXW, 2, 1, 0),            # r2 = ctx->access_type
        insn(_AND32K, 2, imm=0xFFFF),    # r2 = device type
        insn(_LDXW, 3, 1, 0),
        insn(_RSH32K, 3, imm=16),        # r3 = requested access
        insn(_LDXW, 4, 1, 4),            # r4 = major
        insn(_LDXW, 5, 1, 8),            # r5 = minor
    ]
    for allow, typ, major, minor, access in reversed(parsed):
        conds: list[list[bytes]] = []
        if typ != "a":
            conds.append([insn(_JNEK, 2, imm=TYPE_BITS[typ])])
        if access != "rwm":
            mask = sum(ACCESS_BITS[c] for c in access)
            conds.append([insn(_MOV32X, 1, 3), insn(_AND32K, 1, imm=mask),
                          insn(_JNEX, 1, 3)])   # requested must be a subset of allowed
        if major is not None:
            conds.append([insn(_JNEK, 4, imm=major)])
        if minor is not None:
            conds.append([insn(_JNEK, 5, imm=minor)])
        block = [i for c in conds for i in c] + [insn(_MOV64K, 0, imm=int(allow)),
                                                 insn(_EXIT)]
        # patch each jump to skip to the end of this block
        for j, ins in enumerate(block):
            if ins[0] in (_JNEK, _JNEX):
                block[j] = ins[:2] + struct.pack("<h", len(block) - j - 1) + ins[4:]
        prog.extend(block)
        if not conds:
            return b"".join(prog)  # unconditional: rules before it can't matter (and the
            #                        verifier rejects unreachable code)
    prog += [insn(_MOV64K, 0, imm=0), insn(_EXIT)]
    return b"".join(prog)


_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_GET_FD_BY_ID, _BPF_PROG_QUERY = 13, 16
_BPF_PROG_TYPE_CGROUP_DEVICE, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI = 15, 6, 2


def _bpf(cmd: int, attr: bytearray, what: str) -> int:
    from zoned.linux import syscalls  # the C extension: only when a program is really loaded

    try:
        return syscalls.bpf(cmd, attr)
    except OSError as e:
        raise CgroupError(f"devices: bpf({what}) failed: {os.strerror(e.errno or 0)}",
                          e.errno, field="devices") from None


def attach_device_filter(cgroup_dir: str, prog: bytes) -> None:
    """Load `prog` and attach it to the cgroup directory, replacing the device programs
    attached there before (ours, from an earlier apply)."""
    from zoned.linux.syscalls import address_of

    insns = bytearray(prog)
    lic = bytearray(b"Apache\0")
    attr = bytearray(struct.pack(
        "<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
        address_of(insns), address_of(lic), 0, 0, 0, 0, 0, b"zoned_devices", 0, 0).ljust(72,
                                                                                         b"\0"))
    prog_fd = _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    try:
        try:
            dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError(f"devices: open {cgroup_dir} failed: {os.strerror(e.errno or 0)}",
                              e.errno, field="devices", path=cgroup_dir) from None
        try:
            old, flags = query_device_progs(dfd)
            # Attach the new program before detaching the old: in between both apply
            # (the stricter of the two), never neither.
            attr = bytearray(struct.pack(
                "<IIIII", dfd, prog_fd, _BPF_CGROUP_DEVICE,
                _BPF_F_ALLOW_MULTI if (flags & _BPF_F_ALLOW_MULTI or not old) else flags, 0))
            _bpf(_BPF_PROG_ATTACH, attr, "BPF_PROG_ATTACH")
            if old and flags & _BPF_F_ALLOW_MULTI:
                for pid_ in old:
                    _detach_prog(dfd, pid_)
        finally:
            os.close(dfd)
    finally:
        os.close(prog_fd)


def query_device_progs(dfd: int) -> tuple[list[int], int]:
    """The ids of the device programs attached to the cgroup open at `dfd`, and the attach
    flags; ([], 0) when the kernel can't say."""
    from zoned.linux.syscalls import address_of

    ids = bytearray(4 * 64)
    attr = bytearray(struct.pack("<IIIIQI4x", dfd, _BPF_CGROUP_DEVICE, 0, 0, address_of(ids),
                                 64))
    try:
        _bpf(_BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    except CgroupError:
        return [], 0
    _, _, _, flags, _, cnt = struct.unpack("<IIIIQI4x", bytes(attr))
    return list(struct.unpack(f"<{min(cnt, 64)}I", bytes(ids[:4 * min(cnt, 64)]))), flags


def _detach_prog(dfd: int, prog_id: int) -> None:
    attr = bytearray(struct.pack("<III", prog_id, 0, 0))
    try:
        fd = _bpf(_BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")
    except CgroupError as e:
        logger().warning("cgroups: cannot detach old device program %d: %s", prog_id, e)
        return
    try:
        attr = bytearray(struct.pack("<IIIII", dfd, fd, _BPF_CGROUP_DEVICE, 0, 0))
        _bpf(_BPF_PROG_DETACH, attr, "BPF_PROG_DETACH")
    finally:
        os.close(fd)
