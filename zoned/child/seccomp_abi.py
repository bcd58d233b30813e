"""What seccomp's OCI objects and the kernel's filters are made of, shared by the profile
and cache (zoned.child.seccomp) and the compiler (zoned.child.seccomp_program): the
filter flags, actions, comparison ops and architectures zoned knows, the kernel's limits
on a program, and the error for an object zoned cannot compile. Also what
`zoned features` reports (zoned.oci.features)."""
from __future__ import annotations

from zoned.errors import ConfigError

# seccomp(2) SECCOMP_FILTER_FLAG_* (linux/seccomp.h)
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})

OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
        "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")

# OCI arch name -> libseccomp arch name (seccomp_arch_resolve_name)
ARCHES = {
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

SYSCALL_MAX_ARGS = 6
MAX_ERRNO = 4095
BPF_INSN_SIZE = 8          # sizeof(struct sock_filter)
BPF_MAXINSNS = 4096        # the kernel refuses longer programs


class SeccompError(ConfigError, ValueError):
    """A `linux.seccomp` object zoned cannot compile; a ValueError, shown by the CLI as a
    one-line ZonedError."""


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
            flags |= FLAGS[name]
        except (KeyError, TypeError):
            raise SeccompError(
                f"seccomp: unknown value {name!r} in flags (known: {', '.join(FLAGS)})") from None
    if not _uses_notify(seccomp):
        flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    return flags


def _uses_notify(seccomp: dict) -> bool:
    return seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
        isinstance(r, dict) and r.get("action") == "SCMP_ACT_NOTIFY"
        for r in seccomp.get("syscalls") or [])
