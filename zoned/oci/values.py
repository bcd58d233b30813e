"""Values users give as text (flags, the API's arguments, zone files), parsed into what an
OCI config holds: sizes, CPU shares of time, pids limits, users, volumes, environments.
Each refuses bad input with a ConfigError that names what was wrong (exit 125)."""
from __future__ import annotations

import errno
import os
import stat

from zoned.errors import ConfigError
from zoned.linux.names import decimal

_SIZE_RE = r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)?\s*$"  # (re: only parse_size's)
# setresuid(2) and friends read (uid_t)-1 as "leave unchanged": as a container's uid it
# would keep root. The kernel's largest real id is one below.
MAX_ID = (1 << 32) - 2


def parse_size(value: str | int, what: str = "size") -> int:
    """'64m', '1g', '512k', '1048576' -> bytes (binary units, like docker)."""
    if isinstance(value, int):
        return value
    import re

    m = re.match(_SIZE_RE, str(value), re.I)
    if not m:
        raise ConfigError(f"invalid {what} {value!r}: expected a number with an optional "
                          "unit k, m, g or t (e.g. 64m)")
    num, unit = float(m.group(1)), m.group(2).lower()
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}[unit]
    n = int(num * mult)
    if n <= 0:
        raise ConfigError(f"invalid {what} {value!r}: must be positive")
    return n


# The smallest CFS quota the kernel takes (1 ms): podman refuses less ("CPU cfs quota cannot
# be less than 1ms"); below it --cpus would round to a quota of 0, which means no limit.
MIN_CPU_QUOTA_US = 1000
# podman's minimum --memory ("minimum memory limit allowed is 6MB"): less cannot even hold
# the container's set-up, which then dies with an unclear error.
MIN_MEMORY = 6 << 20
# podman's default pids.max for `run` (containers.conf pids_limit), so that a fork bomb in
# a zone cannot take every pid on the host. OCI bundles keep their own config.
DEFAULT_PIDS_LIMIT = 2048


def parse_cpus(value: str | float) -> tuple[int, int]:
    """'0.5' -> (quota, period) in microseconds, as `docker --cpus`."""
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid --cpus {value!r}: expected a number such as 0.5") from None
    if not 0 < cpus <= 1024:  # also refuses nan and inf
        raise ConfigError(f"invalid --cpus {value!r}: must be > 0 and at most 1024")
    period = 100_000
    quota = int(cpus * period)
    if quota < MIN_CPU_QUOTA_US:
        raise ConfigError(f"invalid --cpus {value!r}: the CPU quota would be {quota}us, "
                          f"below the minimum of {MIN_CPU_QUOTA_US}us (--cpus 0.01)")
    return quota, period


def parse_pids_limit(value: str | int | None) -> int | None:
    """--pids-limit: N > 0, or -1 or 0 for no limit (podman treats 0 as unlimited too);
    None (not given) is the default, DEFAULT_PIDS_LIMIT."""
    if value is None:
        return DEFAULT_PIDS_LIMIT
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid --pids-limit {value!r}: expected a number (-1 for no "
                          "limit)") from None
    if n < -1:
        raise ConfigError(f"invalid --pids-limit {value!r}: use a positive number, or -1 "
                          "(or 0) for no limit")
    return -1 if n <= 0 else n


def parse_user(value: str, rootfs: str | None = None) -> dict:
    """'UID[:GID]' or 'name[:group]' -> OCI process.user, names resolved in the rootfs."""
    user, _, group = str(value).partition(":")
    uid = _lookup(user, rootfs, "etc/passwd", "user")
    if group:
        gid = _lookup(group, rootfs, "etc/group", "group")
    elif decimal(user, signed=True):
        gid = _primary_gid(uid, rootfs)
    else:
        gid = _lookup(user, rootfs, "etc/passwd", "user", field=3)
    return {"uid": uid, "gid": gid}


def _lookup(name: str, rootfs: str | None, db: str, what: str, field: int = 2) -> int:
    if decimal(name, signed=True):  # negative too, to refuse it as a number
        n = int(name)
        if not 0 <= n <= MAX_ID:
            raise ConfigError(f"invalid --user {name!r}: a{' uid' if what == 'user' else ' gid'}"
                              f" must be from 0 to {MAX_ID}")
        return n
    if rootfs is not None:
        try:
            for line in _read(rootfs, db).splitlines():
                parts = line.split(":")
                if len(parts) > field and parts[0] == name:
                    return int(parts[field])
        except (OSError, ValueError):
            pass
    raise ConfigError(f"unknown {what} {name!r} in the image (use a numeric id)")


def _primary_gid(uid: int, rootfs: str | None) -> int:
    if rootfs is not None:
        try:
            for line in _read(rootfs, "etc/passwd").splitlines():
                parts = line.split(":")
                if len(parts) > 3 and parts[2] == str(uid):
                    return int(parts[3])
        except (OSError, ValueError):
            pass
    return 0  # like docker: a uid the image does not know gets group 0


def _read(root: str, rel: str) -> str:
    """A small regular file of the image, its path resolved inside the rootfs: a link such
    as etc/passwd -> /etc/shadow must not read the host's, nor a FIFO hang zoned."""
    from zoned.linux import syscalls as sc

    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = sc.openat2(root_fd, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                        0, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root_fd)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", rel)
        return f.read(1 << 20).decode("utf-8", "replace")


def parse_volume(value: str, must_exist: bool = True) -> dict:
    """'HOST:CTR[:ro|rw]' -> an OCI bind mount. The host path must exist (must_exist:
    a named volume's is made at create, zoned.volumes.make_for)."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(f"invalid volume {value!r}: expected HOST:CONTAINER[:ro]")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ConfigError(f"invalid volume {value!r}: mode must be ro or rw")
    if not os.path.isabs(src) or not os.path.isabs(dst):
        raise ConfigError(f"invalid volume {value!r}: both paths must be absolute")
    if must_exist and not os.path.exists(src):
        raise ConfigError(f"volume source {src!r} does not exist")
    return {"destination": dst, "type": "bind", "source": os.path.realpath(src),
            "options": ["rbind", "rprivate", mode]}


def parse_env(items: list[str]) -> list[str]:
    out = []
    for item in items:
        if "=" in item:
            key = item.split("=", 1)[0]
        else:
            key = item
            if item not in os.environ:
                continue
            item = f"{item}={os.environ[item]}"
        if not key or "=" in key or any(c.isspace() for c in key):
            raise ConfigError(f"invalid environment variable {item!r}")
        out.append(item)
    return out


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    env = {e.split("=", 1)[0]: e for e in base}
    for e in extra:
        env[e.split("=", 1)[0]] = e
    return list(env.values())
