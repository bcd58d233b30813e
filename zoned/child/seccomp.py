"""Seccomp for containers: the OCI `linux.seccomp` object in, a raw BPF program out.

The parent (the zoned CLI) compiles; the container child only loads. `compile_bpf` turns an
OCI runtime-spec 1.2 `linux.seccomp` dict into the bytes of a `struct sock_filter` array (what
libseccomp's seccomp_export_bpf writes); the child hands them, with `filter_flags(...)`, to
`zoned.linux.syscalls.execve_seccomp` / `seccomp_set_filter` right before execve. The child must
have set no_new_privs first, or still hold CAP_SYS_ADMIN (in its user namespace) when loading:
seccomp(2) refuses the filter (EACCES) otherwise. The exported program does not set
no_new_privs by itself (that is a libseccomp load-time attribute, never exported).

Compiling means dlopen'ing libseccomp and building the filter (milliseconds), so programs are
cached in-process and on disk (`CACHE_DIR/<sha256>.bpf`); importing this module never imports
the zoned._seccomp extension, only a cache miss does.

`default_profile` is the Docker/Moby default profile (zoned/data/seccomp-default.json: the
rules of moby/moby profiles/seccomp/default.json at commit 00f3d189e420, Apache-2.0,
unchanged; only reformatted, with a `_source` note of origin and license added),
resolved for the host architecture and the container's capabilities the way moby does it.
The semantics of `compile_bpf` follow runc's libcontainer/seccomp (which actions, unknown
syscalls skipped, several conditions on the same argument split into separate rules).
"""
from __future__ import annotations

import errno
import os
import stat

from zoned.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

from zoned.digest import sha256
from zoned.linux import jsonc
from zoned.linux.once import once

__all__ = ["default_profile", "compile_bpf", "compile_program", "filter_flags", "SeccompError",
           "CACHE_DIR"]

CACHE_DIR = "/run/zoned/.cache/seccomp"
_CACHE_FORMAT = b"zoned-seccomp-bpf-v2"  # v2: libseccomp's binary tree (compile_program)

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # zoned/
_DATA = os.path.join(_PACKAGE, "data", "seccomp-default.json")

# seccomp(2) SECCOMP_FILTER_FLAG_* (linux/seccomp.h)
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

_ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})

_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
        "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")

# OCI arch name -> libseccomp arch name (seccomp_arch_resolve_name)
_ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
}

# uname -m -> (Go's GOARCH, which moby's "arches" filters name, OCI arch of the archMap entry)
_HOST_ARCH = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

_SYSCALL_MAX_ARGS = 6
_MAX_ERRNO = 4095
_BPF_INSN_SIZE = 8          # sizeof(struct sock_filter)
_BPF_MAXINSNS = 4096        # the kernel refuses longer programs

_memo: dict[str, bytes] = {}


class SeccompError(ConfigError, ValueError):
    """A `linux.seccomp` object zoned cannot compile; a ValueError, shown by the CLI as a
    one-line ZonedError."""


# ---------------------------------------------------------------- default profile

@once
def _moby_profile() -> dict:
    with open(_DATA, "rb") as f:
        return jsonc.load(f)


def _kernel_at_least(version: str) -> bool:
    """moby's kernelGreaterEqualThan: compare major.minor of the running kernel."""
    def parse(s: str) -> tuple[int, int]:
        parts = s.split("-", 1)[0].split(".")
        try:
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise SeccompError(f"seccomp: bad kernel version {s!r}") from None
    return parse(os.uname().release) >= parse(version)


def _cap(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def default_profile(capabilities: Iterable[str]) -> dict:
    """The default OCI `linux.seccomp` for a container holding `capabilities` (pass the
    bounding set). Moby's allow-list with its caps/arch/kernel conditions resolved for this
    host, so the result is a plain OCI object that compile_bpf (and any OCI runtime) takes."""
    caps = {_cap(c) for c in capabilities}
    machine = os.uname().machine
    goarch, native = _HOST_ARCH.get(machine, (machine, ""))
    prof = _moby_profile()

    arches: list[str] = []
    for entry in prof.get("archMap") or []:
        if entry["architecture"] == native:
            arches.append(entry["architecture"])
            arches.extend(entry.get("subArchitectures") or [])

    syscalls = []
    for rule in prof["syscalls"]:
        exc = rule.get("excludes") or {}
        if goarch in (exc.get("arches") or []):
            continue
        if any(c in caps for c in exc.get("caps") or []):
            continue
        if exc.get("minKernel") and _kernel_at_least(exc["minKernel"]):
            continue
        inc = rule.get("includes") or {}
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if not all(c in caps for c in inc.get("caps") or []):
            continue
        if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]):
            continue
        out: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            out["args"] = [dict(a) for a in rule["args"]]
        syscalls.append(out)

    return {
        "defaultAction": prof["defaultAction"],
        "defaultErrnoRet": prof.get("defaultErrnoRet", errno.EPERM),
        "architectures": arches,
        "syscalls": syscalls,
    }


# ---------------------------------------------------------------- flags

def filter_flags(seccomp: dict) -> int:
    """SECCOMP_FILTER_FLAG_* bits the loader must pass to seccomp(2) with the program.

    The filter is exported, not loaded by libseccomp, so its load-time attributes (TSYNC,
    LOG, SPEC_ALLOW) never reach the kernel through it: every requested flag is returned
    here. WAIT_KILLABLE_RECV only means something with a notify listener (the kernel rejects
    it without SECCOMP_FILTER_FLAG_NEW_LISTENER), so it is dropped while notify is unsupported.
    """
    flags = 0
    for name in seccomp.get("flags") or []:
        try:
            flags |= _FLAGS[name]
        except (KeyError, TypeError):
            raise SeccompError(
                f"seccomp: unknown value {name!r} in flags (known: {', '.join(_FLAGS)})") from None
    if not _uses_notify(seccomp):
        flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    return flags


def _uses_notify(seccomp: dict) -> bool:
    return seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
        isinstance(r, dict) and r.get("action") == "SCMP_ACT_NOTIFY"
        for r in seccomp.get("syscalls") or [])


# ---------------------------------------------------------------- compile + cache

def _canonical(seccomp: dict) -> str:
    try:
        return jsonc.dumps(seccomp, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError) as e:
        raise SeccompError(f"seccomp: not a JSON object: {e}") from None


def _cache_path(canonical: str) -> str:
    """Key on the profile, the host arch and the extension build, so a rebuilt zoned (or a
    different libseccomp linked into it) never reads a stale program. /run is a tmpfs: an
    upgraded libseccomp is picked up at the latest on reboot."""
    h = sha256(_build_fingerprint())
    h.update(canonical.encode())
    return os.path.join(CACHE_DIR, h.hexdigest() + ".bpf")


@once
def _build_fingerprint() -> bytes:
    """Format, host arch and the zoned._seccomp build (found without importing it)."""
    fp = [_CACHE_FORMAT, os.uname().machine.encode()]
    pkg = _PACKAGE
    try:
        for name in sorted(os.listdir(pkg)):
            if name.startswith("_seccomp.") and name.endswith(".so"):
                st = os.stat(os.path.join(pkg, name))
                fp.append(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError:
        pass
    return b"\0".join(fp) + b"\0"


def _read_cache(path: str) -> bytes | None:
    """A cached program, only if it is ours (owned by us, not writable by others) and sane."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & 0o022 or st.st_size == 0
                or st.st_size % _BPF_INSN_SIZE or st.st_size > _BPF_MAXINSNS * _BPF_INSN_SIZE):
            return None
        data = os.read(fd, st.st_size + 1)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _make_cache_dir() -> None:
    """Create CACHE_DIR private (0700); missing parents as traversable-only (0711), like the
    state root, rather than whatever the umask gives."""
    missing = []
    d = CACHE_DIR
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700 if d == CACHE_DIR else 0o711)
        except FileExistsError:
            pass


def _write_cache(path: str, bpf: bytes) -> None:
    """Atomic (tmp + rename) so a concurrent reader sees all or nothing; best effort."""
    import tempfile   # only needed on a miss; keeps the common path's imports small

    tmp = None
    try:
        _make_cache_dir()
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".tmp-", suffix=".bpf")
        try:
            os.write(fd, bpf)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def compile_bpf(seccomp: dict) -> bytes:
    """The BPF program (struct sock_filter[]) for an OCI `linux.seccomp` object.

    Cached in-process and on disk, keyed by the canonical JSON, so the usual CLI run loads
    no libseccomp at all. Raises SeccompError (a ValueError) for actions, ops, arches or
    flags it does not know, naming the field."""
    if not isinstance(seccomp, dict):
        raise SeccompError("seccomp: linux.seccomp must be an object")
    key = _canonical(seccomp)
    bpf = _memo.get(key)
    if bpf is not None:
        return bpf
    path = _cache_path(key)
    bpf = _read_cache(path)
    if bpf is None:
        bpf = compile_program(seccomp)
        _write_cache(path, bpf)
    _memo[key] = bpf
    return bpf


def _ret_value(value: Any, field: str, limit: int) -> int:
    if value is None:
        return errno.EPERM
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise SeccompError(f"seccomp: {field} must be an integer 0..{limit}, got {value!r}")
    return value


def _action(lib, name: Any, errno_ret: Any, field: str, errno_field: str) -> int:
    if name not in _ACTIONS:
        raise SeccompError(f"seccomp: unknown action {name!r} in {field}")
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError(f"seccomp: {field}: SCMP_ACT_NOTIFY is not supported yet")
    if name == "SCMP_ACT_ERRNO":   # the kernel caps errno at MAX_ERRNO, libseccomp refuses more
        return lib.zs_act_errno(_ret_value(errno_ret, errno_field, _MAX_ERRNO))
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
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < _SYSCALL_MAX_ARGS:
            raise SeccompError(f"seccomp: {f}.index must be 0..5, got {index!r}")
        op = a.get("op")
        if op not in _OPS:
            raise SeccompError(f"seccomp: unknown op {op!r} in {f}.op (known: {', '.join(_OPS)})")
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
        lname = _ARCHES.get(a) if isinstance(a, str) else None
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

    if not bpf or len(bpf) % _BPF_INSN_SIZE:
        raise OSError(errno.EIO, f"seccomp: libseccomp exported {len(bpf)} bytes of BPF")
    if len(bpf) > _BPF_MAXINSNS * _BPF_INSN_SIZE:
        raise SeccompError(f"seccomp: the filter has {len(bpf) // _BPF_INSN_SIZE} "
                           f"instructions, over the kernel's {_BPF_MAXINSNS}")
    return bpf
