"""The seccomp compiler: an OCI `linux.seccomp` object to the BPF program libseccomp
exports for it (zoned._seccomp). Only a cache miss of zoned.child.seccomp.compile_bpf
loads this (and the extension), not a usual `zoned run`. The semantics follow runc's
libcontainer/seccomp: which actions, unknown syscalls skipped, several conditions on the
same argument split into separate rules."""
from __future__ import annotations

import errno
import os

from zoned.child.seccomp_abi import ACTIONS, ARCHES, BPF_INSN_SIZE, BPF_MAXINSNS, MAX_ERRNO, \
    OPS, SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, SECCOMP_FILTER_FLAG_TSYNC, \
    SYSCALL_MAX_ARGS, SeccompError, filter_flags

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any


def _ret_value(value: Any, field: str, limit: int) -> int:
    if value is None:
        return errno.EPERM
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise SeccompError(f"seccomp: {field} must be an integer 0..{limit}, got {value!r}")
    return value


def _action(lib, name: Any, errno_ret: Any, field: str, errno_field: str) -> int:
    if name not in ACTIONS:
        raise SeccompError(f"seccomp: unknown action {name!r} in {field}")
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError(f"seccomp: {field}: SCMP_ACT_NOTIFY is not supported yet")
    if name == "SCMP_ACT_ERRNO":   # the kernel caps errno at MAX_ERRNO, libseccomp refuses more
        return lib.zs_act_errno(_ret_value(errno_ret, errno_field, MAX_ERRNO))
    if name == "SCMP_ACT_TRACE":   # the tracer's message (runc passes errnoRet)
        return lib.zs_act_trace(_ret_value(errno_ret, errno_field, 0xFFFF))
    return {
        "SCMP_ACT_KILL": lib.SCMP_ACT_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": lib.SCMP_ACT_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": lib.SCMP_ACT_KILL_PROCESS,
        "SCMP_ACT_TRAP": lib.SCMP_ACT_TRAP,
        "SCMP_ACT_ALLOW": lib.SCMP_ACT_ALLOW,
        "SCMP_ACT_LOG": lib.SCMP_ACT_LOG,
    }[name]


def _u64(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise SeccompError(f"seccomp: {field} must be an unsigned 64-bit integer, got {value!r}")
    return value


def _conditions(lib, args: Any, field: str) -> list[tuple[int, int, int, int]]:
    """(index, op, value, valueTwo) tuples, validated; valueTwo is the masked value of
    SCMP_CMP_MASKED_EQ (value is then the mask), as in runc."""
    if not isinstance(args, list):
        raise SeccompError(f"seccomp: {field} must be a list")
    out = []
    for j, a in enumerate(args):
        f = f"{field}[{j}]"
        if not isinstance(a, dict):
            raise SeccompError(f"seccomp: {f} must be an object")
        index = a.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < SYSCALL_MAX_ARGS:
            raise SeccompError(f"seccomp: {f}.index must be 0..5, got {index!r}")
        op = a.get("op")
        if op not in OPS:
            raise SeccompError(f"seccomp: unknown op {op!r} in {f}.op (known: {', '.join(OPS)})")
        out.append((index, getattr(lib, op), _u64(a.get("value", 0), f + ".value"),
                    _u64(a.get("valueTwo", 0), f + ".valueTwo")))
    return out


def compile_program(seccomp: dict, *, tree: bool = True) -> bytes:
    """Build the filter with libseccomp and export it (uncached: compile_bpf caches);
    runc's rules for what is added. tree=False: libseccomp's plain list of syscalls, the
    same decisions (the tests compare the two)."""
    from zoned._seccomp import ffi, lib   # the only import of the extension: cache misses

    default = _action(lib, seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"),
                      "defaultAction", "defaultErrnoRet")
    flags = filter_flags(seccomp)

    arch_tokens = []
    arches = seccomp.get("architectures") or []
    if not isinstance(arches, list):
        raise SeccompError("seccomp: architectures must be a list")
    for a in arches:
        lname = ARCHES.get(a) if isinstance(a, str) else None
        token = lib.seccomp_arch_resolve_name(lname.encode()) if lname else 0
        if not token:
            raise SeccompError(f"seccomp: unknown or unsupported arch {a!r} in architectures")
        arch_tokens.append(token)

    rules = seccomp.get("syscalls") or []
    if not isinstance(rules, list):
        raise SeccompError("seccomp: syscalls must be a list")
    plan = []   # (field, names, action, conditions), all validated before libseccomp runs
    for i, rule in enumerate(rules):
        field = f"syscalls[{i}]"
        if not isinstance(rule, dict):
            raise SeccompError(f"seccomp: {field} must be an object")
        action = _action(lib, rule.get("action"), rule.get("errnoRet"),
                         field + ".action", field + ".errnoRet")
        conds = _conditions(lib, rule.get("args") or [], field + ".args")
        names = rule.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise SeccompError(f"seccomp: {field}.names must be a list of syscall names")
        plan.append((field, names, action, conds))

    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise SeccompError("seccomp: libseccomp refused the default action (seccomp_init)")
    try:
        # A binary tree of syscall numbers, not a list (libseccomp >= 2.5; an older one
        # keeps the list): the same decisions, but the kernel tests each filter against
        # every syscall of every arch when it loads it (its allow-cache bitmap), which
        # took 1.1 ms of each start for the default profile's list and 0.4 for the tree,
        # and each syscall of the zone walks O(log n) instructions instead of O(n).
        if tree:
            lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for a, token in zip(arches, arch_tokens, strict=True):
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -errno.EEXIST:
                raise SeccompError(f"seccomp: cannot add arch {a!r}: {os.strerror(-rc)}")
        for bit, attr in ((SECCOMP_FILTER_FLAG_TSYNC, lib.SCMP_FLTATR_CTL_TSYNC),
                          (SECCOMP_FILTER_FLAG_LOG, lib.SCMP_FLTATR_CTL_LOG),
                          (SECCOMP_FILTER_FLAG_SPEC_ALLOW, lib.SCMP_FLTATR_CTL_SSB)):
            if flags & bit:
                rc = lib.seccomp_attr_set(ctx, attr, 1)
                if rc < 0:
                    raise SeccompError(f"seccomp: flag {bit:#x} in flags is not supported "
                                       f"by this kernel/libseccomp: {os.strerror(-rc)}")

        for field, names, action, conds in plan:
            if action == default:
                continue   # redundant; libseccomp would reject it (as runc skips it)
            # runc: several conditions on one argument cannot be ANDed by libseccomp, so
            # each condition becomes a rule of its own (their union matches)
            indexes = [c[0] for c in conds]
            if len(set(indexes)) != len(indexes):
                groups = [[c] for c in conds]
            else:
                groups = [conds]
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == lib.__NR_SCMP_ERROR:
                    continue   # unknown to libseccomp on this arch: skipped, like runc
                for group in groups:
                    arr = ffi.new("struct scmp_arg_cmp[]", max(len(group), 1))
                    for k, (index, op, value, value2) in enumerate(group):
                        arr[k].arg = index
                        arr[k].op = op
                        arr[k].datum_a = value
                        arr[k].datum_b = value2
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), arr)
                    if rc < 0:
                        raise SeccompError(f"seccomp: cannot add the rule for {name!r} "
                                           f"({field}): {os.strerror(-rc)}")

        fd = os.memfd_create("zoned-seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            size = os.fstat(fd).st_size
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while size > 0:
                chunk = os.read(fd, size)
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
            bpf = b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)

    if not bpf or len(bpf) % BPF_INSN_SIZE:
        raise OSError(errno.EIO, f"seccomp: libseccomp exported {len(bpf)} bytes of BPF")
    if len(bpf) > BPF_MAXINSNS * BPF_INSN_SIZE:
        raise SeccompError(f"seccomp: the filter has {len(bpf) // BPF_INSN_SIZE} "
                           f"instructions, over the kernel's {BPF_MAXINSNS}")
    return bpf
