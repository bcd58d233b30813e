"""Process security settings applied in the container child before exec: rlimits, user and
groups, capabilities (python-prctl), no_new_privs, OOM score. Seccomp is compiled in the
parent (zoned.seccomp) and loaded by the C exec step; here only what must be done in order.
"""
from __future__ import annotations

import os
import resource

from zoned.errors import ConfigError

RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def check_process(proc: dict) -> None:
    """Parent-side validation, so bad values fail before anything is created."""
    for rl in proc.get("rlimits") or []:
        if rl.get("type") not in RLIMITS:
            raise ConfigError(f"unknown rlimit type {rl.get('type')!r}")
        if int(rl.get("soft", 0)) > int(rl.get("hard", 0)):
            raise ConfigError(f"rlimit {rl['type']}: soft limit above hard limit")
    caps = proc.get("capabilities") or {}
    import prctl
    known = set(prctl.ALL_CAP_NAMES)
    for kind, names in caps.items():
        for name in names or []:
            if name.lower().removeprefix("cap_") not in known:
                raise ConfigError(f"unknown capability {name!r} in process.capabilities.{kind}")
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        raise ConfigError("apparmor/selinux labels are set but no such LSM is enabled here")


def apply_rlimits(proc: dict) -> None:
    for rl in proc.get("rlimits") or []:
        resource.setrlimit(RLIMITS[rl["type"]], (int(rl["soft"]), int(rl["hard"])))


PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}


def check_linux(linux: dict) -> None:
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


def apply_personality(linux: dict) -> None:
    pers = linux.get("personality")
    if pers:
        from zoned import syscalls as sc

        sc.personality(PERSONALITY[pers["domain"]])


def apply_oom_score_adj(proc: dict) -> None:
    if "oomScoreAdj" in proc:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(int(proc["oomScoreAdj"])))


def apply_user_and_caps(proc: dict) -> None:
    """Switch to the configured user keeping exactly the configured capabilities.

    Order as runc: keep caps across setuid, drop the bounding set, set groups/gid/uid, then
    set permitted/effective/inheritable; no_new_privs last (before seccomp at exec).
    """
    import prctl

    caps = proc.get("capabilities") or {}
    user = proc.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))

    def names(kind: str) -> list[str]:
        return [c.lower().removeprefix("cap_") for c in caps.get(kind) or []]

    prctl.set_keepcaps(1)  # PR_SET_KEEPCAPS: unlike securebits, needs no CAP_SETPCAP
    prctl.capbset.limit(*names("bounding"))
    groups = [int(g) for g in user.get("additionalGids") or []]
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if "umask" in user:
        os.umask(int(user["umask"]))
    # One capset for all three sets: effective must stay within permitted at every step.
    every = set(prctl.ALL_CAP_NAMES)
    changes = []
    for kind, flag in (("effective", prctl.CAP_EFFECTIVE), ("permitted", prctl.CAP_PERMITTED),
                       ("inheritable", prctl.CAP_INHERITABLE)):
        want = set(names(kind))
        changes += [(sorted(want), flag, True), (sorted(every - want), flag, False)]
    prctl.set_caps(*changes)
    prctl.set_keepcaps(0)
    from zoned import syscalls as sc

    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for name in names("ambient"):
        try:
            sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE,
                     getattr(prctl, "CAP_" + name.upper()))
        except PermissionError:
            # not permitted and inheritable: runc ignores this too (`runc spec` asks for
            # ambient caps without inheritable ones)
            pass
    if proc.get("noNewPrivileges"):
        prctl.set_no_new_privs(1)
