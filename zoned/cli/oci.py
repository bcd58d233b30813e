"""runc's commands that podman and containerd call: create, start, state, delete, spec,
events, update, features."""
from __future__ import annotations

import os
import sys

from zoned.cli.common import ZONE_MODULES, interruptible, preload_modules, runtime
from zoned.cli.output import print_json


def cmd_create(args) -> int:
    if (getattr(args, "backend", None) or "zone") == "zone":
        preload_modules(("zoned.linux.jsonc",) + ZONE_MODULES)
    create_bundle(args, *load_bundle(args))
    return 0


def load_bundle(args):
    """The bundle's config, read and checked: (runtime, config, bundle dir, backend)."""
    from zoned.errors import ConfigError
    from zoned.linux import jsonc

    bundle = os.path.abspath(args.bundle)
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            cfg = jsonc.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config.json in bundle {bundle!r}") from None
    except jsonc.JSONDecodeError as e:
        raise ConfigError(f"config.json in {bundle!r} is not valid JSON: {e}") from None
    from zoned.oci.spec import bundle_paths, refuse_zoned_annotations, validate

    validate(cfg)  # before anything reads it (here: --systemd-cgroup, the terminal check)
    refuse_zoned_annotations(cfg)
    bundle_paths(cfg, bundle)
    interruptible()
    rt = runtime(args)
    if args.systemd_cgroup:
        from zoned.runtime.cgroup_paths import systemd_cgroups_path

        linux = cfg.setdefault("linux", {})
        linux["cgroupsPath"] = systemd_cgroups_path(linux.get("cgroupsPath", ""), args.id)
    if (cfg.get("process") or {}).get("terminal") and not args.console_socket:
        raise ConfigError("process.terminal is set: --console-socket is required")
    backend = getattr(args, "backend", None) or "zone"
    if backend == "zone" and (cfg.get("annotations") or {}).get(ANN_BACKEND) == "vm":
        backend = "vm"  # as Kata's runtime annotations: podman --annotation
    return rt, cfg, bundle, backend


def create_bundle(args, rt, cfg: dict, bundle: str, backend: str) -> None:
    """OCI create of a loaded bundle: its init waits for `start` (the exec fifo)."""
    if backend == "vm":
        return _create_vm(rt, args, cfg, bundle)
    sock = None
    if (cfg.get("process") or {}).get("terminal"):  # connected first, as runc dials it:
        sock = _console_socket(args.console_socket)  # a bad one makes no container
    try:
        started = rt.create(args.id, cfg, bundle=bundle, pid_file=args.pid_file,
                            preserve_fds=args.preserve_fds, no_pivot=args.no_pivot)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    if started.master is not None:
        from zoned.console import send_fd

        try:
            send_fd(sock, started.master)
        except OSError as e:  # the peer went away: the container goes too
            rt.delete(args.id, force=True)
            if args.pid_file:
                try:
                    os.unlink(args.pid_file)
                except OSError:
                    pass
            raise _console_error(args.console_socket, e) from None
        finally:
            os.close(started.master)
            sock.close()


def _console_socket(path: str):
    from zoned.console import connect_unix

    try:
        return connect_unix(path)
    except OSError as e:
        raise _console_error(path, e) from None


def _console_error(path: str, e: OSError):
    from zoned.errors import ConfigError

    return ConfigError(f"--console-socket {path!r}: {e.strerror or e}")


ANN_BACKEND = "org.zoned.backend"


def _create_vm(rt, args, cfg: dict, bundle: str) -> None:
    """OCI create of a bundle as a VM (as Kata Containers): QEMU boots the bundle's rootfs
    and process paused; `start` lets it run. The VM's pid is QEMU's."""
    from zoned.backends.vm import VmBackend
    from zoned.errors import ConfigError

    if (cfg.get("process") or {}).get("terminal"):
        raise ConfigError("process.terminal with a VM: a console socket is zone-only")
    rootfs = os.path.join(bundle, (cfg.get("root") or {}).get("path") or "rootfs")
    VmBackend(rt).create(args.id, cfg, rootfs=rootfs, bundle=bundle, stdio=(0, 1, 2),
                         created=True, pid_file=args.pid_file,
                         accel=getattr(args, "accel", None) or "auto")


def cmd_start(args) -> int:
    runtime(args).start(args.id)
    return 0


def cmd_state(args) -> int:
    st = runtime(args).state(args.id)
    st.pop("zoned", None)
    print_json(st)
    return 0


def cmd_delete(args) -> int:
    from zoned.errors import NotFound

    try:
        runtime(args).delete(args.id, force=args.force)
    except NotFound:
        if not args.force:  # runc: deleting what is gone is no error with --force
            raise
    return 0


def cmd_spec(args) -> int:
    import json

    from zoned.errors import ZonedError
    from zoned.oci.spec import default_config

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise ZonedError(f"{path} already exists")
    cfg = default_config(terminal=True)
    if args.rootless:
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        cfg["linux"]["resources"] = {}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return 0


def cmd_events(args) -> int:
    if args.id is None:  # podman's lifecycle events
        from zoned.cli.events import cmd_lifecycle_events

        args.interval = 0.2
        return cmd_lifecycle_events(args)
    import json
    import time

    from zoned.runc_stats import runc_stats

    rt = runtime(args)
    interval = go_duration(args.interval, "--interval")
    oom = None
    while True:
        st = rt.state(args.id)
        if st["status"] == "stopped":
            if args.stats:  # runc: "container ... is not running"
                from zoned.errors import InvalidState

                raise InvalidState(f"events --stats: container {args.id!r} is not running")
            return 0
        stats = rt.cgroup(st).stats()
        if args.stats:
            print(json.dumps({"type": "stats", "id": args.id, "data": runc_stats(stats)}))
            return 0
        kills = (stats.get("memory") or {}).get("oom_kills") or 0
        if oom is not None and kills > oom:
            print(json.dumps({"type": "oom", "id": args.id}), flush=True)
        oom = kills
        print(json.dumps({"type": "stats", "id": args.id, "data": runc_stats(stats)}),
              flush=True)
        time.sleep(interval)


def cmd_update(args) -> int:
    import json

    from zoned.errors import ConfigError
    from zoned.oci.spec import resources_from_flags

    res: dict = {}
    if args.resources:
        try:
            text = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
            res = json.loads(text)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--resources: {e}") from None
        if not isinstance(res, dict):
            raise ConfigError("--resources: expected a JSON object (linux.resources)")
    flags = ("memory", "memory_reservation", "memory_swap", "cpu_shares", "cpu_quota",
             "cpu_period", "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight",
             "cpus")
    given = {f: getattr(args, f) or None for f in flags}
    res = resources_from_flags(base=res, **given)  # checked before either change
    if args.config:  # virsh's --config: the zone file of a defined zone (zoned.zones)
        from zoned.zones.commands import update_config

        if args.resources:
            raise ConfigError("update --config takes flags, not --resources")
        update_config(args.id, given)
        if not args.live:
            return 0
    runtime(args).update(args.id, res)
    return 0


def cmd_features(args) -> int:
    from zoned.oci.features import features

    print_json(features())
    return 0


def go_duration(text: str, flag: str) -> float:
    """A Go duration as runc takes it (500ms, 5s, 1m30s, 1h) in seconds, above 0; a bare
    number is seconds, as zoned took it before."""
    from zoned.errors import ConfigError

    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds > 0 and seconds != float("inf"):
            return seconds

    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
             "ns": 1e-9}
    rest, total = str(text).strip(), 0.0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        number, unit = rest[:i], rest[i:j]
        if not number or number.count(".") > 1 or unit not in units:
            raise ConfigError(f"invalid {flag} {text!r}: a duration such as 500ms, 5s or 1m")
        total += float(number) * units[unit]
        rest = rest[j:]
    if total <= 0:
        raise ConfigError(f"invalid {flag} {text!r}: a duration such as 500ms, 5s or 1m")
    return total

