"""Seccomp for containers: the OCI `linux.seccomp` object in, a raw BPF program out.

The parent (the zoned CLI) compiles; the container child only loads. `compile_bpf` turns an
OCI runtime-spec 1.2 `linux.seccomp` dict into the bytes of a `struct sock_filter` array (what
libseccomp's seccomp_export_bpf writes); the child hands them, with `filter_flags(...)`, to
`zoned.linux.syscalls.execve_seccomp` / `seccomp_set_filter` right before execve. The child must
have set no_new_privs first, or still hold CAP_SYS_ADMIN (in its user namespace) when loading:
seccomp(2) refuses the filter (EACCES) otherwise. The exported program does not set
no_new_privs by itself (that is a libseccomp load-time attribute, never exported).

Compiling means dlopen'ing libseccomp and building the filter (milliseconds), so programs are
cached in-process and on disk (`cache_dir()/<sha256>.bpf`); importing this module never imports
the compiler (zoned.child.seccomp_program) or the zoned._seccomp extension, only a cache
miss does. What both read (flags, actions, the kernel's limits) is zoned.child.seccomp_abi.

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

from zoned.child.seccomp_abi import BPF_INSN_SIZE, BPF_MAXINSNS, SeccompError, filter_flags

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

from zoned.digest import sha256
from zoned.linux import jsonc
from zoned.linux.once import once

__all__ = ["default_profile", "compile_bpf", "filter_flags", "SeccompError", "CACHE_DIR"]

CACHE_DIR = "/run/zoned/.cache/seccomp"  # root's; an ordinary user's: cache_dir()
_CACHE_FORMAT = b"zoned-seccomp-bpf-v2"  # v2: libseccomp's binary tree (seccomp_program)

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # zoned/
_DATA = os.path.join(_PACKAGE, "data", "seccomp-default.json")

# uname -m -> (Go's GOARCH, which moby's "arches" filters name, OCI arch of the archMap entry)
_HOST_ARCH = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

_memo: dict[str, bytes] = {}


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


# ---------------------------------------------------------------- compile + cache

def _canonical(seccomp: dict) -> str:
    try:
        return jsonc.dumps(seccomp, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError) as e:
        raise SeccompError(f"seccomp: not a JSON object: {e}") from None


def cache_dir() -> str:
    """Where compiled programs are kept: CACHE_DIR for root; for an ordinary user, in the
    runtime dir of its own (zoned.rootless.runtime_base), as the shared skeleton is. Root's
    /run/zoned is not a user's to write: each rootless run compiled the default profile
    again (~12-16 ms, a third of a rootless `zoned run`)."""
    if os.geteuid() == 0:
        return CACHE_DIR
    from zoned.rootless import runtime_base

    return os.path.join(runtime_base(), ".cache", "seccomp")


def _cache_path(canonical: str) -> str:
    """Key on the profile, the host arch and the extension build, so a rebuilt zoned (or a
    different libseccomp linked into it) never reads a stale program. /run is a tmpfs: an
    upgraded libseccomp is picked up at the latest on reboot."""
    h = sha256(_build_fingerprint())
    h.update(canonical.encode())
    return os.path.join(cache_dir(), h.hexdigest() + ".bpf")


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
                or st.st_size % BPF_INSN_SIZE or st.st_size > BPF_MAXINSNS * BPF_INSN_SIZE):
            return None
        data = os.read(fd, st.st_size + 1)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _make_cache_dir(top: str) -> None:
    """Create the cache dir `top` private (0700); missing parents as traversable-only
    (0711), like the state root, rather than whatever the umask gives."""
    missing = []
    d = top
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700 if d == top else 0o711)
        except FileExistsError:
            pass


def _write_cache(path: str, bpf: bytes) -> None:
    """Atomic (tmp + rename) so a concurrent reader sees all or nothing; best effort."""
    import tempfile   # only needed on a miss; keeps the common path's imports small

    tmp = None
    try:
        top = os.path.dirname(path)
        _make_cache_dir(top)
        fd, tmp = tempfile.mkstemp(dir=top, prefix=".tmp-", suffix=".bpf")
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
        from zoned.child.seccomp_program import compile_program  # a miss only

        bpf = compile_program(seccomp)
        _write_cache(path, bpf)
    _memo[key] = bpf
    return bpf
