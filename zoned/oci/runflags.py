"""podman's run flags that become mounts, capabilities and annotations: --tmpfs, --mount,
--cap-add/--cap-drop, --privileged, --label, --stop-signal, --stop-timeout, --env-file.
Kept out of zoned.oci.spec (the one place RunOptions turns into a config, which calls these)
so that each flag's parsing and its one-line error live together."""
from __future__ import annotations

import os

from zoned.errors import ConfigError

ANN_STOP_TIMEOUT = "org.zoned.stopTimeout"  # seconds `zoned stop` waits without -t
ANN_LABEL = "org.zoned.label."  # --label KEY=VALUE -> annotation org.zoned.label.KEY


def user_mounts(volumes: list[str], mounts: list[str], tmpfs: list[str],
                volume_data: str, parse_volume) -> tuple[list[dict], list[str], list[str]]:
    """-v, --mount and --tmpfs as OCI mounts, parents before children (as podman:
    `--tmpfs /x -v D:/x/y` keeps /x/y visible); the named volumes used, and of those the
    anonymous ones (made for this container alone). Volumes live in the data root
    `volume_data`; nothing is made here (zoned.volumes.make_for, at create)."""
    from zoned.volumes import Volumes, check_name, is_name

    store = Volumes(volume_data)
    used: list[str] = []
    anonymous: list[str] = []

    def volume_dir(name: str | None) -> str:
        if name is None:
            name = os.urandom(16).hex()
            anonymous.append(name)
        used.append(check_name(name))
        return store.data(name)

    out = []
    for v in volumes:
        src, sep, rest = v.partition(":")
        named = bool(sep and src and is_name(src))
        if named:
            v = f"{volume_dir(src)}:{rest}"
        out.append(parse_volume(v, must_exist=not named))
    out += [parse_mount(m, volume_dir) for m in mounts]
    out += [parse_tmpfs(t) for t in tmpfs]
    out.sort(key=lambda m: m["destination"].rstrip("/").count("/"))
    return out, used, anonymous


def parse_tmpfs(value: str) -> dict:
    """--tmpfs /path[:opts] -> a tmpfs mount (podman's defaults: rw,nosuid,nodev)."""
    dst, _, opts = value.partition(":")
    if not dst.startswith("/"):
        raise ConfigError(f"invalid --tmpfs {value!r}: expected /PATH[:OPTIONS] with an "
                          "absolute path")
    options = ["rw", "nosuid", "nodev"] + [o for o in opts.split(",") if o]
    return {"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": options}


def parse_mount(value: str, volume_dir) -> dict:
    """--mount type=bind|tmpfs|volume,source=..,target=..[,ro][,tmpfs-size=..]."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        if key in ("ro", "readonly") and not eq:
            val = "true"
        fields[{"src": "source", "dst": "target", "destination": "target",
                "readonly": "ro"}.get(key, key)] = val
    kind = fields.pop("type", "")
    target = fields.pop("target", "")
    ro = fields.pop("ro", "false").lower() in ("true", "1", "")
    if kind not in ("bind", "tmpfs", "volume"):
        raise ConfigError(f"invalid --mount {value!r}: type must be bind, tmpfs or volume")
    if not target.startswith("/"):
        raise ConfigError(f"invalid --mount {value!r}: target=/PATH (absolute) is required")
    mode = "ro" if ro else "rw"
    if kind == "tmpfs":
        opts = [mode, "nosuid", "nodev"]
        if "tmpfs-size" in fields:
            opts.append(f"size={fields.pop('tmpfs-size')}")
        if "tmpfs-mode" in fields:
            opts.append(f"mode={fields.pop('tmpfs-mode')}")
        _no_more(value, fields)
        return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}
    source = fields.pop("source", "")
    fields.pop("bind-propagation", None)
    _no_more(value, fields)
    if kind == "volume":
        source = volume_dir(source or None)
    elif not source.startswith("/") or not os.path.exists(source):
        raise ConfigError(f"invalid --mount {value!r}: source must be an existing absolute "
                          "path")
    return {"destination": target, "type": "bind", "source": os.path.realpath(source),
            "options": ["rbind", "rprivate", mode]}


def _no_more(value: str, fields: dict) -> None:
    if fields:
        raise ConfigError(f"invalid --mount {value!r}: unknown option "
                          f"{sorted(fields)[0]!r}")


def cap_name(value: str, flag: str) -> str:
    from zoned.child.security import CAPABILITIES

    name = value.upper()
    name = name if name.startswith("CAP_") else "CAP_" + name
    if name != "CAP_ALL" and name not in CAPABILITIES:
        raise ConfigError(f"invalid {flag} {value!r}: unknown capability")
    return name


def capabilities(base: list[str], add: list[str], drop: list[str],
                 privileged: bool) -> list[str]:
    """The bounding set: podman's defaults, --privileged all, then --cap-drop and --cap-add
    (ALL on either side as podman)."""
    every = kernel_caps()
    caps = list(every) if privileged else list(base)
    dropped = [cap_name(c, "--cap-drop") for c in drop]
    added = [cap_name(c, "--cap-add") for c in add]
    if "CAP_ALL" in dropped:
        caps = []
    caps = [c for c in caps if c not in dropped]
    for c in (every if "CAP_ALL" in added else added):
        if c not in caps:
            caps.append(c)
    return caps


def kernel_caps() -> list[str]:
    """Every capability zoned itself holds (its bounding set: the kernel's, less what a
    host may withhold from root, e.g. CAP_SYS_RESOURCE): what --privileged and ALL mean."""
    from zoned.child.security import CAPABILITIES

    from zoned.linux.proc import status_caps

    try:
        bounding = status_caps("self", "CapBnd")
    except (OSError, ValueError):
        bounding = (1 << 41) - 1
    return [c for i, c in enumerate(CAPABILITIES) if bounding >> i & 1]


def privileged(cfg: dict) -> None:
    """podman's --privileged, the parts zoned has: every capability (done by the caller),
    no masked or read-only /proc paths, no seccomp filter (zoned.api leaves it out), all
    devices allowed in the device cgroup, and /sys writable."""
    linux = cfg["linux"]
    linux["maskedPaths"], linux["readonlyPaths"] = [], []
    linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    cfg["process"]["noNewPrivileges"] = False
    for m in cfg["mounts"]:
        if m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = [o for o in m.get("options", []) if o != "ro"] + ["rw"]


def annotations(labels: list[str], stop_timeout: str | int | None) -> dict:
    """--label and --stop-timeout as annotations (what stop and inspect read)."""
    out = {}
    for item in labels:
        key, _, val = item.partition("=")
        if not key or any(c.isspace() for c in key):
            raise ConfigError(f"invalid --label {item!r}: expected KEY=VALUE")
        out[ANN_LABEL + key] = val
    if stop_timeout is not None:
        try:
            seconds = int(stop_timeout)
        except (TypeError, ValueError):
            seconds = -1
        if seconds < 0:
            raise ConfigError(f"invalid --stop-timeout {stop_timeout!r}: expected whole "
                              "seconds (0 or more)")
        out[ANN_STOP_TIMEOUT] = str(seconds)
    return out


def check_signal(value: str, flag: str = "signal") -> int:
    """A signal name (KILL, SIGKILL) or number -> its number; one clear line if unknown."""
    import signal

    v = str(value).upper()
    if v.isdigit():
        if not 0 < int(v) <= signal.SIGRTMAX:
            raise ConfigError(f"invalid {flag} {value!r}: signal numbers are 1 to "
                              f"{int(signal.SIGRTMAX)}")
        return int(v)
    try:
        return int(signal.Signals["SIG" + v.removeprefix("SIG")])
    except KeyError:
        raise ConfigError(f"invalid {flag} {value!r}: unknown signal") from None


def labels(annotations: dict) -> dict:
    """The --label pairs back from a config's annotations."""
    return {k[len(ANN_LABEL):]: v for k, v in (annotations or {}).items()
            if k.startswith(ANN_LABEL)}


def read_env_file(path: str) -> list[str]:
    """--env-file: KEY=VALUE lines (and bare KEY: taken from our environment), # comments
    and blank lines skipped, as podman."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(f"invalid --env-file {path!r}: {e.strerror}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def check_workdir(rootfs: str | None, workdir: str, mounts: list[dict]) -> None:
    """-w on a directory the image lacks fails as podman's does (exit 126, `workdir "/x"
    does not exist`), unless a mount makes it; zoned would otherwise create it silently.
    Resolved inside the rootfs, so a symlink in the image cannot point at the host."""
    from zoned.errors import ExecError
    from zoned.linux import syscalls as sc

    if rootfs is None or any(workdir == m["destination"] or workdir.startswith(
            m["destination"].rstrip("/") + "/") for m in mounts):
        return
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = sc.openat2(root_fd, workdir.lstrip("/") or ".",
                        os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                        sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        os.close(fd)
    except OSError:
        raise ExecError(f'invalid --workdir: "{workdir}" does not exist in the image',
                        126) from None
    finally:
        os.close(root_fd)
