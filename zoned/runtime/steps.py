"""The named steps of making a container that create (zoned.runtime.lifecycle) and
restore (zoned.checkpoint.restore) share: its state record, config, cgroup, and the undo of
all of them when a later step fails."""
from __future__ import annotations

import os
import time

from zoned.errors import ConfigError
from zoned.oci.status import Status

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from zoned.runtime.store import Store


def hook_kinds(cfg: dict) -> list[str]:
    """The hook kinds a config has, recorded in state.json."""
    return sorted(k for k, v in (cfg.get("hooks") or {}).items() if v)


def oci_state(st: dict) -> dict:
    """The runtime-spec state (what hooks get on stdin and `state` prints)."""
    out = {k: st[k] for k in ("ociVersion", "id", "status", "pid", "bundle") if k in st}
    out["annotations"] = st.get("annotations") or {}
    return out


def namespace_hook(cfg: dict, state: dict, network, extra):
    """What the parent runs while the init waits with its namespaces made: the network
    attachment, then the prestart and createRuntime hooks (runtime namespace)."""
    cfg_hooks = cfg.get("hooks") or {}
    wanted = [k for k in ("prestart", "createRuntime") if cfg_hooks.get(k)]
    if network is None and not wanted and extra is None:
        return None

    def run(pid: int) -> None:
        if network is not None:
            network.attach(pid)
        if extra is not None:
            extra(pid)
        if wanted:
            from zoned.oci import hooks

            st = {**oci_state(state), "status": Status.CREATING, "pid": pid}
            for kind in wanted:
                hooks.run(cfg_hooks, kind, st)
    return run


def host_root(linux: dict) -> tuple[int, int] | None:
    """The host uid/gid that root of the container's user namespace maps to, if any."""
    if not any(n.get("type") == "user" for n in linux.get("namespaces", [])):
        return None

    def host_of(maps):
        for m in maps or []:
            if int(m["containerID"]) <= 0 < int(m["containerID"]) + int(m["size"]):
                return int(m["hostID"]) - int(m["containerID"])
        return None
    uid, gid = host_of(linux.get("uidMappings")), host_of(linux.get("gidMappings"))
    return (uid, gid) if uid is not None and gid is not None else None


def container_resources(resources: dict, devices: list | None = None) -> dict:
    """The config's resources with runc's default device allow-list appended (as runc does:
    the config's own rules, usually "deny all", come first). The rules apply before fork,
    so the init makes its linux.devices nodes under them: each node's mknod is allowed
    (only "m": using it still takes a rule of the config's, as with runc)."""
    from zoned.oci.spec import DEFAULT_DEVICES

    defaults = [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
                for _path, major, minor in DEFAULT_DEVICES]
    defaults += [
        {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},   # /dev/ptmx
        {"allow": True, "type": "c", "major": 136, "access": "rwm"},             # /dev/pts/*
    ]  # not 5:1, the host's /dev/console (a -t zone's is its pty): runc dropped it in 1.0
    defaults += [{"allow": True, "type": "b" if d.get("type") == "b" else "c",
                  "major": d.get("major", 0), "minor": d.get("minor", 0), "access": "m"}
                 for d in devices or []
                 if isinstance(d, dict) and d.get("type") in ("b", "c", "u")]
    res = dict(resources)
    res["devices"] = list(resources.get("devices") or []) + defaults
    return res


def discard_cgroup(cgroup) -> None:
    """Undo a cgroup made for a create or restore that failed: kill what is in it, remove
    it, and let the original error through."""
    try:
        cgroup.kill()
        cgroup.destroy()
        leave_shared_memory(cgroup)
    except OSError:
        pass


def leave_shared_memory(cgroup) -> None:
    """After a zone's cgroup is gone: if the zone was in a shared memory cgroup
    (zoned.runtime.cgroup_paths) and was the last one there, remove that too."""
    if getattr(cgroup, "shared_memory", False):  # (not a rootless NullCgroup's)
        from zoned.cgroups import remove_if_unused

        remove_if_unused(os.path.dirname(cgroup.path))


def utc_now() -> str:
    """RFC 3339 UTC time with microseconds, as runc's `created` (no datetime import)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def name_problems(store: Store, cid: str) -> list[str]:
    """Why `cid` cannot be a new container's name in `store` (a restore's or an incoming
    migration's, asked before anything is made): a line each."""
    from zoned.errors import ZonedError
    from zoned.oci import spec as specmod

    problems = []
    try:
        specmod.check_id(cid)
    except ZonedError as e:
        problems.append(str(e))
    if store.exists(cid):
        problems.append(f"the name {cid!r} is already in use")
    return problems


def initial_state(cid: str, cfg: dict, *, bundle: str, rootfs: str, cgroup: str,
                  data: str | None, log: str | None, logger: dict | None,
                  autoremove: bool, annotations: dict | None = None, **extra) -> dict:
    """The record a container starts with (status "creating"): the runtime-spec state plus
    zoned's fields, which tell delete and gc what to remove (cgroup, data dir, logger).
    `extra`: more of zoned's fields (a restore's restored_from)."""
    from zoned.oci.spec import OCI_VERSION

    return {
        "ociVersion": cfg.get("ociVersion", OCI_VERSION),
        "id": cid, "status": Status.CREATING, "pid": 0,
        "bundle": bundle, "rootfs": rootfs,
        "created": utc_now(),
        "owner": "",
        "annotations": annotations if annotations is not None else
        cfg.get("annotations") or {},
        "zoned": {"cgroup": cgroup, "log": log, "autoremove": autoremove, "data": data,
                  "logger": logger,
                  # which hook kinds exist: start and delete read config.json (tens of
                  # KiB with seccomp) only when they have hooks to run
                  "hooks": hook_kinds(cfg), **extra},
    }


def write_config(state_dir: str, cfg: dict) -> None:
    """config.json in the container's state dir: what exec, update, checkpoint and the
    hooks of later commands read."""
    from zoned.linux import jsonc

    with open(os.path.join(state_dir, "config.json"), "w") as f:
        f.write(jsonc.dumps(cfg, separators=(",", ":")))


def record_resources(state_dir: str, cfg: dict, resources: dict) -> None:
    """An update's limits merged into the container's config.json (cfg: as it was): a
    controller given replaces its fields given, the others stay."""
    from zoned.runtime.store import write_json_atomic

    current = cfg.setdefault("linux", {}).setdefault("resources", {})
    for key, value in resources.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    write_json_atomic(os.path.join(state_dir, "config.json"), cfg)


# Host directories a zone's masked directories and v1 /sys/fs/cgroup are bound from
# (zoned.child.rootfs), instead of a tmpfs each: shared_skeleton(), for the zones that cannot
# remount them, or STATE_DIR/skel, the zone's own.
SKELETON = "skel"
SKELETON_PARTS = ("empty", "cgroup")


def shared_skeleton() -> str:
    """The host's shared skeleton: a cache of the runtime's (/run/zoned/.cache/skel; a
    user's runtime dir, rootless), not of one state root, so removing a root leaves it."""
    if os.geteuid() == 0:
        from zoned.storage import DEFAULT_ROOT

        return os.path.join(DEFAULT_ROOT, ".cache", SKELETON)
    from zoned.rootless import runtime_base

    return os.path.join(runtime_base(), ".cache", SKELETON)


def can_remount(cfg: dict) -> bool:
    """Whether the zone's process could hold CAP_SYS_ADMIN (any set; a config without
    capabilities counts as yes), and so remount a read-only bind writable."""
    caps = (cfg.get("process") or {}).get("capabilities")
    if caps is None:
        return True
    return any("CAP_SYS_ADMIN" in (caps.get(k) or ()) for k in
               ("bounding", "effective", "permitted", "inheritable", "ambient"))


def make_skeleton(state_dir: str, cfg: dict, hierarchies: list) -> dict[str, str]:
    """The empty directory for the zone's masked directories and, on a v1 or hybrid host
    with a cgroup mount, its /sys/fs/cgroup skeleton (a directory per hierarchy).
    -> {"empty": path, "cgroup": path}, either left out when unused.

    Why: each superblock is a memory-cgroup-aware shrinker, and the kernel keeps a slot per
    shrinker id in every memory cgroup (mm/shrinker.c: a 1 KiB unit per 64 ids), so N zones
    of S superblocks cost N * N * S * 16 bytes. runc's three tmpfs (two masks, the v1 cgroup
    tmpfs) are 3 of a zone's 10; binds of directories cost none. They are read-only in the
    zone. A zone that could remount them writable (can_remount) gets its own, in its state
    dir, so what it writes reaches no other zone and goes with it; the others share the
    host's, made once (a dozen mkdirs and rmdirs per zone cost ~2 ms on a disk)."""
    linux = cfg.get("linux") or {}
    names = []
    if linux.get("maskedPaths"):
        names.append("empty")
    v2 = len(hierarchies) == 1 and hierarchies[0].fstype == "cgroup2"
    if not v2 and hierarchies and any(m.get("type") == "cgroup" for m in cfg.get("mounts") or []):
        names.append("cgroup")
    if not names:
        return {}
    base = os.path.join(state_dir, SKELETON) if can_remount(cfg) else shared_skeleton()
    dirs = [base, os.path.join(base, "empty")]
    if not v2:
        dirs.append(os.path.join(base, "cgroup"))
        dirs += [os.path.join(base, "cgroup", os.path.basename(h.mountpoint))
                 for h in hierarchies]
    if not os.path.isdir(dirs[-1]):
        # Made in place, in this order: where the last is, all are. A creator killed half-way
        # leaves a part that the next completes; two at once both succeed.
        os.makedirs(os.path.dirname(base), 0o711, exist_ok=True)  # /run/zoned/.cache
        for d in dirs:
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                pass
    return {n: os.path.join(base, n) for n in names}


def open_namespaces(namespaces: dict[str, str | None]) -> dict[str, int]:
    """The namespaces a config joins by path (but pid: see handoff.fork_init), opened:
    {type: fd}."""
    fds: dict[str, int] = {}
    for t, p in namespaces.items():
        if p and t != "pid":
            try:
                fds[t] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                for fd in fds.values():
                    os.close(fd)
                raise ConfigError(f"namespace {t} path {p!r}: {e.strerror}") from None
    return fds


def start_logger(data: str, split_stderr: bool):
    """A detached zone's zoned-logger (zoned.logs), writing into its data dir `data`:
    (logger, log path, stderr's log path or None, fds to close after the fork, the
    init's stdio). split_stderr: the same logger, a second pipe, a dir that goes with data."""
    from zoned import logs

    err_dir = os.path.join(data, "stderr") if split_stderr else None
    err_log = None
    if err_dir:
        os.makedirs(err_dir, 0o700, exist_ok=True)
        err_log = os.path.join(err_dir, logs.LOG_NAME)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        logger = logs.spawn(data, err_dir)  # (the last step that may fail)
    except BaseException:
        os.close(null)
        raise
    log_fds = [logger.write_fd, null]
    stdio = (null, logger.write_fd, logger.write_fd)
    if err_dir:
        log_fds.append(logger.err_write_fd)
        stdio = (null, logger.write_fd, logger.err_write_fd)
    return logger, os.path.join(data, logs.LOG_NAME), err_log, log_fds, stdio


def make_fifo(state_dir: str) -> int:
    """exec.fifo, which `start` opens (runc's way): an O_PATH fd of it for the init."""
    fifo = os.path.join(state_dir, "exec.fifo")
    os.mkfifo(fifo, 0o622)
    os.chmod(fifo, 0o622)  # not the umask's: the container's user opens it
    return os.open(fifo, os.O_PATH | os.O_CLOEXEC)


def refuse_in_use(cgroup) -> None:
    """A cgroupsPath the config names (not zoned's own for the zone) that is in use
    already, with processes or cgroups in it, is somebody else's: refused before the
    container owns it, so that no failure of the create or restore kills and removes it
    (runc refuses such a cgroup too). A new cgroup costs a stat per hierarchy here."""
    if cgroup.in_use():
        raise ConfigError(f"linux.cgroupsPath {cgroup.path!r}: the cgroup is in use "
                          "(processes or cgroups in it); a container needs its own")


def make_cgroup(cgroup, linux: dict):
    """The container's cgroup (opened by zoned.cgroups.open_cgroup), made and limited by
    linux.resources (with runc's default device rules, see container_resources)."""
    try:  # an interrupt (or a failure) half-way leaves no directory of it behind
        from zoned.cgroups.fs import make_despite_removals

        make_despite_removals(cgroup.create)
        cgroup.apply(container_resources(linux.get("resources") or {}, linux.get("devices")))
    except BaseException:
        discard_cgroup(cgroup)
        raise
    return cgroup


def enter_cgroup(chan, cgroup, pid: int, self_join: bool, oci_state: dict | None) -> None:
    """Put the new init in its cgroup, made, and tell it so (Op.CGROUP, with the OCI state
    for its hooks): with self_join the message carries the v1 `tasks` files it writes "0"
    to itself (zoned.cgroups.join), else it is moved by pid here (primed, where the creator
    started the primer)."""
    from zoned.child.sync import Op

    fds: list[int] = []
    fields: dict = {}
    if self_join:
        from zoned.cgroups.join import handles

        fds, fields = handles(cgroup)
    else:
        cgroup.add(pid)
        from zoned.cgroups import prime

        prime.wait()  # the move is done: the primer's thread can go
    try:
        states = {"state": oci_state, "state_running": {**oci_state, "status": "running"}} \
            if oci_state else {}  # (the C init's hooks read both: csrc/setuphooks.c)
        chan.send(Op.CGROUP, fds, **fields, **states)
    except BrokenPipeError:
        pass  # the init failed early: the handshake reads why
    finally:
        for fd in fds:
            os.close(fd)


def abandon(store: Store, cid: str, *, cgroup=None, network=None, data: str | None = None,
            logger: dict | None = None) -> None:
    """Undo a create or restore that failed after reserving `cid`: its cgroup, network,
    data dir (and logger) and state dir, in that order; each may be None (not made yet).
    The caller has killed the container's processes; the original error goes on."""
    if cgroup is not None:
        discard_cgroup(cgroup)
    if network is not None:
        network.release()
    if data is not None:
        from zoned.logs import discard_zone_data

        discard_zone_data(data, logger)
    store.remove(cid)


def refuse_vm(st: dict, what: str, why: str) -> None:
    """InvalidState for an operation that works on a zone's processes, asked of a VM (its
    process is in the guest: joining QEMU's namespaces would run on the host)."""
    if (st.get("zoned") or {}).get("vm"):
        from zoned.errors import InvalidState

        raise InvalidState(f"cannot {what} container {st['id']!r}: it is a VM ({why})")
