"""Process security settings applied in the container child before exec: rlimits, user and
groups, capabilities (zoned.child.caps), no_new_privs, OOM score. Seccomp is compiled in the
parent (zoned.child.seccomp) and loaded by the C exec step; here only what must be done in order.
"""
from __future__ import annotations

import os
import resource

from zoned.errors import ConfigError

RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}
NGROUPS_MAX = 65536  # the kernel's limit of supplementary groups (setgroups)

# The kernel's capabilities by number (include/uapi/linux/capability.h, through 6.x's
# CAP_CHECKPOINT_RESTORE = 40). python-prctl's table is the C header it was built against,
# which can stop short (here it calls 40 "last_cap"), so zoned keeps its own.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS = {name: i for i, name in enumerate(CAPABILITIES)}
PR_CAPBSET_DROP = 24
CAP_KINDS = ("bounding", "effective", "inheritable", "permitted", "ambient")


_last_cap: list[int] = []  # cap_last_cap's answer, once a process (the kernel's)


def cap_last_cap() -> int:
    """The highest capability the running kernel knows (older kernels stop before 40)."""
    if not _last_cap:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap.append(int(f.read()))
        except (OSError, ValueError):
            _last_cap.append(len(CAPABILITIES) - 1)
    return _last_cap[0]


def cap_number(name: str) -> int | None:
    """'CAP_SYS_ADMIN' (or 'sys_admin', any case) -> 21; None if zoned does not know it."""
    up = name.upper()
    return CAP_NUMBERS.get(up if up.startswith("CAP_") else "CAP_" + up)


def add_capabilities(caps: dict | None, names: list[str]) -> dict:
    """process.capabilities with `names` ('net_admin' or 'CAP_NET_ADMIN') added to the
    bounding, effective and permitted sets (runc exec --cap); `caps` is not changed."""
    out = {kind: list(v) for kind, v in (caps or {}).items()}
    for name in names:
        up = name.upper()
        cap = up if up.startswith("CAP_") else "CAP_" + up
        for kind in ("bounding", "effective", "permitted"):
            have = out.setdefault(kind, [])
            if cap not in have:
                have.append(cap)
    return out


def supported_caps(proc: dict) -> dict:
    """process.capabilities without the names the kernel does not know, and the dropped
    names: runc ignores those with a warning ("ignoring unknown or unavailable
    capabilities"), so a config written for a newer kernel (podman --privileged lists
    every capability it knows) still runs."""
    last = cap_last_cap()
    caps = proc.get("capabilities") or {}
    kept, dropped = {}, set()
    for kind, names in caps.items():
        kept[kind] = []
        for name in names:
            n = cap_number(name)
            if n is None or n > last:
                dropped.add(name)
            else:
                kept[kind].append(name)
    return {"capabilities": kept, "dropped": sorted(dropped)}


def check_process(proc: dict) -> None:
    """Parent-side validation, so bad values fail before anything is created. The types
    are checked already (zoned.oci.schema). Capabilities this kernel does not know are
    dropped from `proc` with a warning, as runc does."""
    for i, rl in enumerate(proc.get("rlimits") or []):
        if rl["type"] not in RLIMITS:
            raise ConfigError(f"config.json: process.rlimits[{i}].type: unknown rlimit "
                              f"{rl['type']!r}")
        if rl["soft"] > rl["hard"]:
            raise ConfigError(f"config.json: process.rlimits[{i}]: soft limit {rl['soft']} "
                              f"of {rl['type']} is above the hard limit {rl['hard']}")
    user = proc.get("user") or {}
    if user.get("umask", 0) > 0o777:
        raise ConfigError(f"config.json: process.user.umask {user['umask']}: not a file "
                          "mode mask (0 to 0o777)")
    if len(user.get("additionalGids") or []) > NGROUPS_MAX:
        raise ConfigError(f"config.json: process.user.additionalGids: "
                          f"{len(user['additionalGids'])} groups, at most {NGROUPS_MAX}")
    for kind in proc.get("capabilities") or {}:
        if kind not in CAP_KINDS:
            raise ConfigError(f"config.json: process.capabilities.{kind}: unknown set "
                              f"(use {', '.join(CAP_KINDS)})")
    if proc.get("capabilities"):
        caps = supported_caps(proc)
        if caps["dropped"]:
            import logging

            logging.getLogger("zoned").warning(
                "zoned: warning: ignoring unknown or unavailable capabilities: %s",
                " ".join(caps["dropped"]))
            proc["capabilities"] = caps["capabilities"]
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        raise ConfigError("apparmor/selinux labels are set but no such LSM is enabled here")


def apply_rlimits(proc: dict) -> None:
    """The config's rlimits; one the kernel refuses (a hard limit above fs.nr_open, or
    raised without CAP_SYS_RESOURCE) is named: the config's fault, not the command's."""
    for i, rl in enumerate(proc.get("rlimits") or []):
        try:
            resource.setrlimit(RLIMITS[rl["type"]], (int(rl["soft"]), int(rl["hard"])))
        except (OSError, ValueError) as e:  # (EPERM is a ValueError here)
            why = e.strerror if isinstance(e, OSError) else str(e)
            raise ConfigError(f"invalid process.rlimits[{i}] ({rl['type']} {rl['soft']}:"
                              f"{rl['hard']}): {why}") from None


PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}


def check_linux(linux: dict) -> None:
    check_sysctl(linux)
    for i, d in enumerate(linux.get("devices") or []):
        for field in ("major", "minor"):
            if not 0 <= d.get(field, 0) <= 0xFFFFFFFF:
                raise ConfigError(f"config.json: linux.devices[{i}].{field} {d[field]}: a "
                                  "device number is 0 to 4294967295")
    pers = linux.get("personality")
    if pers and pers.get("domain") not in PERSONALITY:
        raise ConfigError(f"linux.personality.domain {pers.get('domain')!r}: "
                          f"use one of {', '.join(PERSONALITY)}")
    if pers and pers.get("flags"):
        raise ConfigError("linux.personality.flags are not supported (none are defined)")
    if linux.get("mountLabel"):
        raise ConfigError("linux.mountLabel is set but SELinux is not enabled here")
    if linux.get("intelRdt"):
        raise ConfigError("linux.intelRdt is not supported")


# IPC sysctls a private ipc namespace owns (runc's validSysctlMap), plus fs.mqueue.*.
IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})


def sysctl_dotted(key: str) -> str:
    """runc's convertSysctlVariableToDotsSeparator: "net/ipv4/conf/eth0.100/rp_filter"
    (sysctl.d's slash form) -> "net.ipv4.conf.eth0/100.rp_filter"."""
    first = min((i for i in (key.find("."), key.find("/")) if i >= 0), default=-1)
    if first < 0 or key[first] == ".":
        return key
    return key.translate(str.maketrans("./", "/."))


def check_sysctl(linux: dict) -> None:
    """runc's rule (libcontainer/configs/validate, sysctl): a sysctl is written only if the
    container has its own copy of it, in a namespace of its own; anything else would be
    written to the host with full capabilities (vm.swappiness, kernel.core_pattern)."""
    sysctls = linux.get("sysctl") or {}
    if not sysctls:
        return
    namespaces = {n["type"]: n.get("path") or "" for n in linux.get("namespaces") or []}
    for key in sysctls:
        s = sysctl_dotted(key)
        if s in IPC_SYSCTLS or s.startswith("fs.mqueue."):
            if "ipc" not in namespaces:
                raise ConfigError(f"linux.sysctl: {s!r} is not allowed in the host's ipc "
                                  "namespace (add an ipc namespace)")
            continue
        if s.startswith("net."):
            if _host_netns(namespaces):
                raise ConfigError(f"linux.sysctl: {s!r} is not allowed in the host network "
                                  "namespace (add a network namespace)")
            continue
        if "uts" in namespaces:
            if s == "kernel.domainname":
                continue
            if s == "kernel.hostname":
                raise ConfigError(f"linux.sysctl: {s!r} is not allowed: it conflicts with "
                                  "the config's hostname field")
        if s.startswith("user."):
            if "user" not in namespaces:
                raise ConfigError(f"linux.sysctl: {s!r}: setting ucounts without a user "
                                  "namespace is not allowed")
            continue
        raise ConfigError(f"linux.sysctl: {s!r} is not in a separate kernel namespace "
                          "(it would change the host)")


def _host_netns(namespaces: dict) -> bool:
    """Whether the container would share our network namespace: none listed, or a path
    that is the one we are in (runc's isHostNetNS; "host" means "current")."""
    if "network" not in namespaces:
        return True
    path = namespaces["network"]
    if not path:
        return False
    try:
        theirs, ours = os.stat(path), os.stat("/proc/self/ns/net")
    except OSError as e:
        raise ConfigError(f"linux.namespaces: network path {path!r}: {e.strerror}") from None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def apply_personality(linux: dict) -> None:
    pers = linux.get("personality")
    if pers:
        from zoned.linux import syscalls as sc

        sc.personality(PERSONALITY[pers["domain"]])


def apply_oom_score_adj(proc: dict) -> None:
    if "oomScoreAdj" in proc:
        from zoned.linux.files import write_procfs

        try:
            write_procfs("/proc/self/oom_score_adj", str(int(proc["oomScoreAdj"])))
        except OSError as e:  # (lower than ours without CAP_SYS_RESOURCE: EACCES, not 126)
            raise ConfigError(f"invalid process.oomScoreAdj {proc['oomScoreAdj']}: "
                              f"{e.strerror}") from None


def take_credentials(proc: dict, bpf: bytes, seccomp_flags: int) -> bytes:
    """A container's init or exec's helper takes the process's credentials: the seccomp
    filter first where there is no no_new_privs (the kernel only takes one from a
    CAP_SYS_ADMIN caller then: before the capabilities go, as runc does), the user and
    capabilities, then non-dumpable and the parent-death signal again (each credential
    change reset them). -> the program still to load (b"" if loaded here)."""
    import _signal  # not signal.py (its enums of every signal: ~4 ms)

    from zoned.child import caps
    from zoned.linux import syscalls as sc

    if bpf and not proc.get("noNewPrivileges"):
        sc.seccomp_set_filter(bpf, seccomp_flags)
        bpf = b""
    apply_user_and_caps(proc)
    sc.set_dumpable(False)
    caps.set_pdeathsig(_signal.SIGKILL)
    return bpf


def apply_user_and_caps(proc: dict, groups_denied: bool | None = None) -> None:
    """Switch to the configured user keeping exactly the configured capabilities.

    Order as runc: keep caps across setuid, drop the bounding set, set groups/gid/uid, then
    set permitted/effective/inheritable; no_new_privs last (before seccomp at exec).
    groups_denied: whether setgroups is denied in this user namespace, where the caller
    asked before a chroot hid /proc (zoned cp into a stopped zone); None: asked here.
    """
    from zoned.child import caps as capsets

    caps = supported_caps(proc)["capabilities"]  # unknown ones were reported by the parent
    user = proc.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    every = set(range(cap_last_cap() + 1))

    def numbers(kind: str) -> set[int]:
        return {cap_number(c) for c in caps.get(kind) or []}

    from zoned.linux import syscalls as sc

    capsets.set_keepcaps(True)  # PR_SET_KEEPCAPS: unlike securebits, needs no CAP_SETPCAP
    for cap in sorted(every - numbers("bounding")):  # by number: prctl's table may stop short
        sc.prctl(PR_CAPBSET_DROP, cap)
    groups = [int(g) for g in user.get("additionalGids") or []]
    try:
        os.setgroups(groups)
    except PermissionError as e:  # rootless, one id mapped: the kernel denies setgroups,
        if groups or not (setgroups_denied() if groups_denied is None else groups_denied):
            # (and no supplementary group can exist anyway)
            raise _id_error("additionalGids", groups, e) from None
    except OSError as e:
        raise _id_error("additionalGids", groups, e) from None
    for field, set_ids, value in (("gid", os.setresgid, gid), ("uid", os.setresuid, uid)):
        try:
            set_ids(value, value, value)
        except OSError as e:
            raise _id_error(field, value, e) from None
    if "umask" in user:
        os.umask(int(user["umask"]))
    # One capset for all three sets: effective must stay within permitted at every step.
    capsets.set_caps(*(capsets.mask(numbers(kind) & every)
                       for kind in ("effective", "permitted", "inheritable")))
    capsets.set_keepcaps(False)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(numbers("ambient")):
        try:
            sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
        except PermissionError:
            # not permitted and inheritable: runc ignores this too (`runc spec` asks for
            # ambient caps without inheritable ones)
            pass
    if proc.get("noNewPrivileges"):
        capsets.set_no_new_privs()


def creds_fields(proc: dict) -> list:
    """apply_user_and_caps's work as the C code does it (z_set_creds, csrc/zoned.c): the
    bounding set's caps to drop, groups, groups as the config shows them (for its errors),
    uid, gid, umask (-1: none), the effective, permitted and inheritable masks, the ambient
    caps, no_new_privs. Lists are comma-separated numbers."""
    from zoned.child.caps import mask

    caps = supported_caps(proc)["capabilities"]
    every = set(range(cap_last_cap() + 1))

    def numbers(kind: str) -> set[int]:
        return {cap_number(c) for c in caps.get(kind) or []}

    user = proc.get("user") or {}
    groups = [int(g) for g in user.get("additionalGids") or []]
    return [",".join(map(str, sorted(every - numbers("bounding")))),
            ",".join(map(str, groups)), str(groups), int(user.get("uid", 0)),
            int(user.get("gid", 0)), int(user["umask"]) if "umask" in user else -1,
            *(mask(numbers(kind) & every) for kind in ("effective", "permitted", "inheritable")),
            ",".join(map(str, sorted(numbers("ambient")))), int(bool(proc.get("noNewPrivileges")))]


def _id_error(field: str, value: object, e: OSError) -> ConfigError:
    """An id the kernel refuses is the config's fault (exit 125), not the command's."""
    import errno

    hint = " (not mapped in the zone's user namespace)" if e.errno == errno.EINVAL else ""
    return ConfigError(f"invalid process.user.{field} {value}: {e.strerror}{hint}")


def setgroups_denied() -> bool:
    """setgroups is denied in our user namespace (one mapped by its own user). An exec
    helper stays outside the zone's pid namespace, so its /proc/self is missing from the
    zone's /proc: PID 1 there is in the same user namespace."""
    for path in ("/proc/self/setgroups", "/proc/1/setgroups"):
        try:
            with open(path) as f:
                return f.read().strip() == "deny"
        except OSError:
            continue
    return False
