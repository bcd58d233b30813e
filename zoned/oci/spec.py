"""Build and check OCI runtime-spec configs (config.json, runtime-spec 1.2).

The OCI config is zoned's one internal model: CLI flags, the Python API and zone files all
convert into it, and the runtime executes nothing else. The config stays plain JSON data (a
dict shaped exactly like config.json) so that an OCI bundle from podman or containerd and a
config zoned built itself take the same path. `RunOptions` is the typed front door for the
common case.
"""
from __future__ import annotations

import os

from zoned.errors import ConfigError
from zoned.linux.names import ALNUM, made_of
from zoned.oci.values import MAX_ID, MIN_MEMORY, merge_env, parse_cpus, parse_env, \
    parse_pids_limit, parse_size, parse_user, parse_volume

# The devices every container gets (runc's default device list): path, major, minor. Here,
# not in zoned.child.rootfs (which makes them): the cgroup's device rules allow them too,
# and the creator should not import the init's mount code for that (~1 ms of its start).
DEFAULT_DEVICES = [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                   ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]

OCI_VERSION = "1.2.0"

# runc's default capability set (`runc spec`): what `zoned spec` writes for OCI bundles.
RUNC_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# What `zoned run` grants: podman's defaults, a subset of runc's without NET_RAW, MKNOD and
# AUDIT_WRITE (no raw sockets, no device nodes).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
    "CAP_SYS_CHROOT",
]

# What runc and podman mask and make read-only by default.
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time")

# Annotations zoned itself understands (the OCI extension point).
ANN_LOWER = "org.zoned.rootfs.lower"  # overlay lower dir: rootfs is an overlay over an image
ANN_IMAGE = "org.zoned.image"
ANN_STOP_SIGNAL = "org.opencontainers.image.stopSignal"  # the image's StopSignal, for stop


def stop_signal(cfg: dict) -> int:
    """The signal `stop` sends first: the image's StopSignal (SIGINT, INT, 2), else SIGTERM."""
    import signal

    value = str((cfg.get("annotations") or {}).get(ANN_STOP_SIGNAL, "")).upper()
    if value.isdigit() and 0 < int(value) < signal.NSIG:
        return int(value)
    try:
        return int(signal.Signals["SIG" + value.removeprefix("SIG")])
    except KeyError:
        return int(signal.SIGTERM)


# A container id/name: runc's characters, starting with a letter or digit (so never "." or
# ".."), at most 64 long: podman's ids are 64 hex digits, and the name is the default
# hostname (the kernel's limit is 64) and part of cgroup, state and interface-alias names.
MAX_ID_LEN = 64
_ID_CHARS = ALNUM | frozenset("_.+-")  # [A-Za-z0-9][A-Za-z0-9_.+-]*


def check_id(cid: str) -> str:
    if not made_of(cid, ALNUM, _ID_CHARS, MAX_ID_LEN):
        shown = repr(cid) if len(str(cid)) <= 70 else repr(str(cid)[:67] + "...")
        raise ConfigError(f"invalid container name {shown}: use letters, digits and _.+- "
                          f"(at most {MAX_ID_LEN}, starting with a letter or digit)")
    return cid


def default_mounts() -> list[dict]:
    """runc's default mounts; /sys/fs/cgroup mirrors the host's hierarchies (see rootfs)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def default_config(args: list[str] | None = None, *, rootfs: str = "rootfs",
                   terminal: bool = False, caps: list[str] | None = None) -> dict:
    """What `zoned spec` writes: runc's default config, the container's own namespaces."""
    caps = list(caps or RUNC_CAPS)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args or ["sh"]),
            "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps),
                             "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": "zoned",
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


class RunOptions:
    """What `zoned run` and `zoned.run()` accept; `to_config()` turns it into the OCI config.

    A plain class with the fields below rather than a dataclass: importing dataclasses costs
    ~5 ms (it loads inspect), and `zoned run` must start as fast as runc.
    """

    FIELDS = {
        "args": list, "image": None, "rootfs": None, "name": None, "hostname": None,
        "memory": None, "memory_swap": None, "cpus": None, "cpu_shares": None,
        "cpuset_cpus": None, "pids_limit": None, "env": list, "workdir": None, "user": None,
        "entrypoint": None,  # None: the image's; "" (--entrypoint ""): none
        "volumes": list, "read_only": False, "init": False, "tty": False,
        "interactive": False,
        # networking (zoned.network): names, or "none" (only lo), "host", "container:NAME"
        "network": list, "ip": None, "mac": None, "publish": list, "dns": list,
        "add_host": list,
        "annotations": dict,
        # podman's run flags (zoned.oci.runflags); volume_root: the state root whose named
        # volumes `-v NAME:/dir` uses (zoned.volumes; default $ZONED_ROOT or /run/zoned),
        # volume_data: its data root, where the volumes are (default: volume_root's)
        "tmpfs": list, "mounts": list, "cap_add": list, "cap_drop": list,
        "privileged": False, "labels": list, "stop_signal": None, "stop_timeout": None,
        "volume_root": None, "volume_data": None,
    }
    __slots__ = tuple(FIELDS)

    def __init__(self, args: list[str] | None = None, **options):
        unknown = set(options) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
        options["args"] = args
        for name, default in self.FIELDS.items():
            value = options.get(name)
            if value is None:
                value = default() if callable(default) else default
            elif default is list and isinstance(value, str):
                value = [value]  # network="zoned0", env="A=b": one item
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "RunOptions(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS
                                         if getattr(self, k) != self.FIELDS[k]
                                         and getattr(self, k) not in ([], {})) + ")"

    def volumes_data_root(self) -> str:
        """The data root whose volumes/ holds `-v NAME:/dir` (zoned.volumes)."""
        if self.volume_data:
            return self.volume_data
        from zoned.storage import data_root, default_state_root

        return data_root(self.volume_root or os.environ.get("ZONED_ROOT")
                         or default_state_root())

    def to_config(self, *, image_rootfs: str | None = None, image_config: dict | None = None,
                  init_path: str | None = None) -> dict:
        """The OCI config for these options. `image_rootfs` is the overlay lower dir."""
        image_config = image_config or {}
        rootfs = os.path.realpath(self.rootfs) if self.rootfs else image_rootfs
        # docker's rule: the command replaces the image's Cmd, --entrypoint its Entrypoint
        # (and then the Cmd too)
        if self.entrypoint is not None:
            args = [a for a in [self.entrypoint] if a] + list(self.args)
        else:
            args = list(image_config.get("entrypoint") or []) + (
                list(self.args) or list(image_config.get("cmd") or []))
        if not args:
            raise ConfigError("no command given and the image has no default command")
        caps = DEFAULT_CAPS
        if self.cap_add or self.cap_drop or self.privileged:  # (imported only then)
            from zoned.oci import runflags

            caps = runflags.capabilities(DEFAULT_CAPS, self.cap_add, self.cap_drop,
                                         self.privileged)
        cfg = default_config(args, terminal=self.tty, caps=caps or ["CAP_CHOWN"])
        if not caps:  # --cap-drop ALL
            cfg["process"]["capabilities"] = {k: [] for k in cfg["process"]["capabilities"]}
        if self.privileged:
            runflags.privileged(cfg)
        from zoned.oci.hostname import hostname_for

        hostname = hostname_for(self.hostname, self.name)
        proc = cfg["process"]
        proc["env"] = merge_env(
            merge_env([f"PATH={DEFAULT_PATH}"], list(image_config.get("env") or [])),
            ([f"HOSTNAME={hostname}"]
             + (["TERM=xterm"] if self.tty else []) + parse_env(self.env)))
        proc["cwd"] = self.workdir or image_config.get("workdir") or "/"
        if not os.path.isabs(proc["cwd"]):
            raise ConfigError(f"invalid working directory {proc['cwd']!r}: must be absolute")
        user = self.user or image_config.get("user")
        if user:
            proc["user"] = parse_user(str(user), rootfs)
        cfg["hostname"] = hostname
        cfg["root"] = {"path": str(rootfs) if self.rootfs else "rootfs",
                       "readonly": bool(self.read_only)}
        if self.image and image_rootfs is not None and not self.rootfs:
            cfg.setdefault("annotations", {})[ANN_LOWER] = str(image_rootfs)
            cfg["annotations"][ANN_IMAGE] = self.image
            if image_config.get("stop_signal"):
                cfg["annotations"][ANN_STOP_SIGNAL] = str(image_config["stop_signal"])
        extra = {}
        if self.labels or self.stop_signal is not None or self.stop_timeout is not None:
            from zoned.oci import runflags

            extra = runflags.annotations(self.labels, self.stop_timeout)
            if self.stop_signal is not None:  # over the image's StopSignal
                extra[ANN_STOP_SIGNAL] = str(runflags.check_signal(self.stop_signal,
                                                                   "--stop-signal"))
        if self.annotations or extra:
            cfg.setdefault("annotations", {}).update({**extra, **self.annotations})
        if self.read_only:  # podman's --read-only-tmpfs: scratch space stays writable
            for d in ("/tmp", "/var/tmp", "/run"):
                cfg["mounts"].append({"destination": d, "type": "tmpfs", "source": "tmpfs",
                                      "options": ["rw", "nosuid", "nodev", "mode=1777"]})
        if self.volumes or self.mounts or self.tmpfs:  # zoned.oci.runflags, zoned.volumes
            from zoned.oci.runflags import user_mounts
            from zoned.volumes import ANN_ANONYMOUS, ANN_VOLUMES

            mounts, volumes, anonymous = user_mounts(self.volumes, self.mounts, self.tmpfs,
                                                     self.volumes_data_root(), parse_volume)
            cfg["mounts"].extend(mounts)
            if volumes:  # so that `volume rm` knows who uses them; made at create
                cfg.setdefault("annotations", {})[ANN_VOLUMES] = ",".join(volumes)
            if anonymous:  # removed with a container run with --rm
                cfg["annotations"][ANN_ANONYMOUS] = ",".join(anonymous)
        if self.workdir and not self.rootfs:  # podman's rule for images; --rootfs: runc's
            from zoned.oci.runflags import check_workdir

            check_workdir(rootfs, proc["cwd"], cfg["mounts"])
        if self.init:
            if not init_path:
                raise ConfigError("--init needs zoned-init (run `make` to build it)")
            cfg["mounts"].append({"destination": "/dev/init", "type": "bind",
                                  "source": init_path, "options": ["bind", "ro"]})
            proc["args"] = ["/dev/init", "--"] + args
        if self.network == ["host"]:  # share the host's network namespace
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                          if n["type"] != "network"]
        cfg["linux"]["resources"] = resources_from_flags(
            base=cfg["linux"]["resources"], memory=self.memory, memory_swap=self.memory_swap,
            cpus=self.cpus, cpu_shares=self.cpu_shares, cpuset_cpus=self.cpuset_cpus or None,
            pids_limit=self.pids_limit, defaults=True)
        return cfg


def resources_from_flags(*, base: dict | None = None, memory: str | int | None = None,
                         memory_swap: str | int | None = None,
                         memory_reservation: str | int | None = None,
                         cpus: str | float | None = None, cpu_shares: str | int | None = None,
                         cpu_quota: str | int | None = None,
                         cpu_period: str | int | None = None, cpuset_cpus: str | None = None,
                         cpuset_mems: str | None = None, pids_limit: str | int | None = None,
                         blkio_weight: str | int | None = None,
                         defaults: bool = False) -> dict:
    """linux.resources from the resource flags (docker's names) of `run` and `update`: the
    one place they are parsed and checked. None means not given. The result is `base` (not
    changed) with the flags merged over it.

    `run` asks for `defaults`: swap no larger than the memory limit, pids.max 2048 (podman's),
    and "-1" is no size there. Without (`update`), only what is given is set and -1 means
    no limit. Both refuse a memory+swap limit below the memory limit, as podman does."""
    res = {k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()}

    def size(flag: str, value: str | int) -> int:
        if not defaults and str(value) == "-1":
            return -1
        return parse_size(value, flag)

    def whole(flag: str, value: str | int) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"invalid {flag} {value!r}: expected a whole number") from None

    if memory is not None:
        limit = size("--memory", memory)
        if 0 <= limit < MIN_MEMORY:
            raise ConfigError(f"invalid --memory {memory!r}: the minimum memory limit "
                              "allowed is 6MB")
        res.setdefault("memory", {})["limit"] = limit
        if defaults and memory_swap is None:
            res["memory"]["swap"] = limit  # no swap beyond the limit, like podman
    if memory_swap is not None and (memory is not None or not defaults):
        swap = -1 if str(memory_swap) == "-1" else parse_size(memory_swap, "--memory-swap")
        res.setdefault("memory", {})["swap"] = swap
    if memory_reservation is not None:
        res.setdefault("memory", {})["reservation"] = size("--memory-reservation",
                                                           memory_reservation)
    mem = res.get("memory") or {}
    limit, swap = mem.get("limit"), mem.get("swap")
    if (isinstance(limit, int) and isinstance(swap, int) and limit >= 0 and swap != -1
            and swap < limit):
        shown = repr(memory_swap) if memory_swap is not None else swap
        raise ConfigError(f"invalid --memory-swap {shown}: the memory+swap limit must be at "
                          f"least the memory limit, {limit} bytes")
    cpu: dict = {}
    if cpus is not None:
        cpu["quota"], cpu["period"] = parse_cpus(cpus)
    for flag, key, value in (("--cpu-shares", "shares", cpu_shares),
                             ("--cpu-quota", "quota", cpu_quota),
                             ("--cpu-period", "period", cpu_period)):
        if value is not None:
            cpu[key] = whole(flag, value)
    if cpuset_cpus is not None:
        cpu["cpus"] = cpuset_cpus
    if cpuset_mems is not None:
        cpu["mems"] = cpuset_mems
    if cpu:
        res["cpu"] = {**(res.get("cpu") or {}), **cpu}
    if pids_limit is not None or defaults:
        res["pids"] = {"limit": parse_pids_limit(pids_limit)}
    if blkio_weight is not None:
        res["blockIO"] = {**(res.get("blockIO") or {}),
                          "weight": whole("--blkio-weight", blkio_weight)}
    return res


def zoned_own_annotations() -> tuple[str, ...]:
    """The annotations zoned sets itself (refuse_zoned_annotations)."""
    from zoned.volumes import ANN_ANONYMOUS, ANN_VOLUMES

    return ANN_LOWER, ANN_VOLUMES, ANN_ANONYMOUS


def refuse_zoned_annotations(cfg: dict, where: str = "config.json",
                             who: str = "a bundle") -> None:
    """The annotations zoned sets itself to carry what its own front ends decided (the
    overlay's lower dir: a host path; the volumes a zone owns, which its removal may
    remove) are not a bundle's (or a saved VM's) to set: org.zoned.rootfs.lower = / would
    make the host's root the container's. The ones documented for users
    (org.zoned.backend, org.zoned.memory-cgroup, labels) stay."""
    for key in zoned_own_annotations():
        if key in (cfg.get("annotations") or {}):
            raise ConfigError(f"{where}: annotations: {key} is zoned's own; {who} cannot "
                              "set it")


def bundle_paths(cfg: dict, bundle: str) -> None:
    """A bind mount's relative source names a path in the bundle, as runc reads it (runc
    works in the bundle's directory): made absolute here, once, so that nothing later
    resolves it against another directory (the caller's). Other mounts' sources are names
    (tmpfs, proc), not paths."""
    for m in cfg.get("mounts") or []:
        source, options = m.get("source"), m.get("options") or []
        if source and not source.startswith("/") and (
                m.get("type") == "bind" or "bind" in options or "rbind" in options):
            m["source"] = os.path.join(bundle, source)


def validate(cfg: dict) -> dict:
    """Every check of a config before anything is created, in one place: the field types
    (zoned.oci.schema), then the rules runc applies (ids, namespaces, sysctls, capabilities,
    rlimits, hooks). Each failure is one ConfigError naming the field. Returns `cfg`,
    normalised (nulls dropped, capabilities the kernel lacks removed with a warning)."""
    from zoned.child import security
    from zoned.oci import schema

    schema.check(cfg)
    validate_process(cfg["process"])
    if not cfg["root"]["path"]:
        raise ConfigError("config.json: root.path is required")
    linux = cfg.get("linux") or {}
    if cfg.get("hostname") not in (None, ""):  # runc sets no hostname for ""
        from zoned.oci.hostname import check_hostname

        check_hostname(cfg["hostname"], "config.json: hostname")
    seen = set()
    for i, ns in enumerate(linux.get("namespaces") or []):
        t = ns["type"]
        if t not in NAMESPACES:
            raise ConfigError(f"config.json: linux.namespaces[{i}].type: unknown namespace "
                              f"type {t!r}")
        if t in seen:
            raise ConfigError(f"config.json: namespace {t!r} listed twice")
        seen.add(t)
    _check_namespace_needs(cfg, linux, seen)
    check_private_mount_namespace(linux)
    for i, m in enumerate(cfg.get("mounts") or []):
        if not m["destination"].startswith("/"):
            raise ConfigError(f"config.json: mounts[{i}].destination "
                              f"{m['destination']!r} must be absolute")
    security.check_linux(linux)
    if linux.get("devices"):
        check_devices(linux["devices"], cfg.get("mounts") or [])
    if cfg.get("hooks"):  # (hooks is not loaded for the usual config without any)
        from zoned.oci import hooks

        hooks.check(cfg["hooks"])
    return cfg


# File systems that hold no device node: mknod there fails (procfs: ENOENT), as does the
# file a user namespace's device is bound onto.
NO_DEVICE_FS = ("proc", "sysfs", "cgroup", "cgroup2", "mqueue", "devpts")


def check_devices(devices: list[dict], mounts: list[dict]) -> None:
    """A device under a mount of a file system that holds none (/proc, /sys, /dev/pts)
    cannot be made: refused before anything is created, naming the field. runc fails in
    its init, "mknod .../proc/x: no such file or directory", which podman reports as a
    command not found (127). The last mount over the path decides (devices are made after
    all mounts); a symlink inside the rootfs is the init's to find (zoned.child.rootfs)."""
    def lexical(path: str) -> str:  # (normpath keeps a leading "//")
        return os.path.normpath("/" + path.lstrip("/"))

    for i, d in enumerate(devices):
        path, over = lexical(d["path"]), None
        for m in mounts:
            dest = lexical(m["destination"])
            if path == dest or path.startswith(dest.rstrip("/") + "/"):
                over = m
        if over is not None and over.get("type") in NO_DEVICE_FS:
            raise ConfigError(f'invalid linux.devices[{i}].path "{d["path"]}": inside the '
                              f'{over["type"]} mount on {over["destination"]}, where no '
                              "device node can be made")


# The kernel's limit for hostname and domainname (__NEW_UTS_LEN): longer ones fail in the
# container's set-up.
MAX_UTS_NAME = 64


def check_private_mount_namespace(linux: dict) -> None:
    """The rootfs is set up with mounts and pivot_root: in the caller's mount namespace (no
    "mount" entry) or in a joined one (a "path") that would replace the root of every
    process there, the host's included. runc chroots instead, but still mounts into the
    host's namespace; zoned refuses."""
    mount = [n for n in linux.get("namespaces") or [] if isinstance(n, dict)
             and n.get("type") == "mount"]
    if not mount:
        raise ConfigError('linux.namespaces: a "mount" namespace is required (zoned sets up '
                          "the rootfs with mounts and pivot_root, which would change the "
                          "caller's root)")
    if mount[0].get("path"):
        raise ConfigError(f'linux.namespaces: joining the "mount" namespace '
                          f'{mount[0]["path"]!r} is not supported (zoned would mount and '
                          "pivot_root in it)")


def _check_namespace_needs(cfg: dict, linux: dict, namespaces: set[str]) -> None:
    """runc's rules for settings that only make sense in a namespace of the container's
    own (libcontainer/configs/validate: uts, namespaces)."""
    for key in ("hostname", "domainname"):
        value = cfg.get(key) or ""
        if value and "uts" not in namespaces:
            raise ConfigError(f"config.json: {key}: cannot be set without a private uts "
                              "namespace")
        if len(value.encode()) > MAX_UTS_NAME:
            raise ConfigError(f"config.json: {key}: {len(value.encode())} bytes long, the "
                              f"kernel's limit is {MAX_UTS_NAME}")
    maps = linux.get("uidMappings") or linux.get("gidMappings")
    user_path = any(n["type"] == "user" and n.get("path")
                    for n in linux.get("namespaces") or [])
    if "user" in namespaces and not user_path and not maps:
        raise ConfigError("config.json: linux.uidMappings: a new user namespace needs "
                          "uidMappings and gidMappings")
    if maps and "user" not in namespaces:
        raise ConfigError("config.json: linux.uidMappings: user namespace mappings are "
                          "given, but there is no user namespace in linux.namespaces")
    if linux.get("timeOffsets") and "time" not in namespaces:
        raise ConfigError("config.json: linux.timeOffsets: given, but there is no time "
                          "namespace in linux.namespaces")
    adj = (cfg.get("process") or {}).get("oomScoreAdj")
    if adj is not None and not -1000 <= adj <= 1000:
        raise ConfigError(f"config.json: process.oomScoreAdj {adj}: must be from -1000 to "
                          "1000")




def validate_process(proc: dict, where: str = "process") -> dict:
    """The checks of a process object (config.json's, or `exec --process`'s): its types
    must have been checked (zoned.oci.schema) already."""
    from zoned.child import security

    if not proc["args"]:
        raise ConfigError(f"config.json: {where}.args must be a non-empty list")
    cwd = proc.get("cwd", "/")
    if not cwd.startswith("/"):
        raise ConfigError(f"config.json: {where}.cwd {cwd!r} must be an absolute path")
    for i, item in enumerate(proc.get("env") or []):
        if "=" not in item:
            raise ConfigError(f"config.json: {where}.env[{i}] {item!r}: expected NAME=VALUE")
    user = proc.get("user") or {}
    for key in ("uid", "gid"):
        if user.get(key, 0) > MAX_ID:
            raise ConfigError(f"config.json: {where}.user.{key} {user[key]}: must be at most "
                              f"{MAX_ID} ({MAX_ID + 1} means \"unchanged\" to the kernel)")
    for i, g in enumerate(user.get("additionalGids") or []):
        if g > MAX_ID:
            raise ConfigError(f"config.json: {where}.user.additionalGids[{i}] {g}: must be "
                              f"at most {MAX_ID}")
    security.check_process(proc)
    return proc
