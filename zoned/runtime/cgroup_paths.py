"""Where a container's cgroup goes: the parent per state root, runc's systemd-style
"slice:prefix:name" paths, and linux.cgroupsPath made absolute."""
from __future__ import annotations

import os

from zoned.errors import ConfigError


DEFAULT_PARENT = "/zoned"  # the default state root's (zoned.gc sweeps it from any root)


def cgroup_parent(root: str | None = None) -> str:
    """Where a state root's containers without a cgroupsPath go: /zoned for the default
    root, /zoned-<hash of the root> for any other, or $ZONED_CGROUP_PARENT (podman's
    --cgroup-parent). One parent per root is what lets `gc` of one root remove leftover
    cgroups without ever touching another root's containers."""
    env = os.environ.get("ZONED_CGROUP_PARENT")
    if env:
        return "/" + env.strip("/")
    from zoned.runtime.store import DEFAULT_ROOT, default_root

    root = os.path.realpath(root or default_root())
    if root == DEFAULT_ROOT:
        return DEFAULT_PARENT
    from zoned.digest import sha256

    return "/zoned-" + sha256(root.encode()).hexdigest()[:10]


def systemd_cgroups_path(path: str, cid: str) -> str:
    """runc --systemd-cgroup's "slice:prefix:name" as the cgroupfs path systemd would use
    ("machine.slice:libpod:ID" -> /machine.slice/libpod-ID.scope). zoned does not talk to
    systemd; it places the cgroup where systemd would, so the tree looks the same."""
    from zoned.errors import ConfigError

    parts = (path or f"system.slice:zoned:{cid}").split(":")
    if len(parts) != 3:
        raise ConfigError(f"cgroupsPath {path!r}: expected slice:prefix:name with "
                          "--systemd-cgroup")
    slice_, prefix, name = parts
    slice_ = slice_ or "system.slice"
    out = ""
    if slice_ != "-.slice":
        if not slice_.endswith(".slice"):
            raise ConfigError(f"cgroupsPath {path!r}: {slice_!r} is not a .slice")
        words = slice_[:-len(".slice")].split("-")
        out = "".join("/" + "-".join(words[:i + 1]) + ".slice" for i in range(len(words)))
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else \
        f"{name}.scope"
    return f"{out}/{unit}"


def default_cgroups_path(cid: str, root: str | None = None) -> str:
    return f"{cgroup_parent(root)}/{cid}"


def resolve_cgroups_path(path: str | None) -> str | None:
    """linux.cgroupsPath as an absolute cgroup path. A relative one (the spec allows it: "a
    runtime-determined location") goes where runc's cgroupfs driver puts it: below the
    cgroup zoned itself runs in (on cgroup v2, its parent: runc's fs2, since a cgroup with
    processes in it cannot have controllers enabled for children). ".." never climbs
    above that base (runc's CleanPath)."""
    if not path:
        return None
    import posixpath

    if path.startswith("/"):
        resolved = posixpath.normpath("/" + path.lstrip("/"))  # as zoned.cgroups cleans it
    else:
        from zoned.cgroups import own_cgroup

        inner = posixpath.normpath("/" + path)
        resolved = posixpath.normpath(own_cgroup().rstrip("/") + inner)
    if resolved == "/":
        raise ConfigError(f"config.json: linux.cgroupsPath {path!r}: names the root cgroup")
    return resolved


# A zone's memory cgroup: its own (runc's and podman's way), or one that the zones of a
# state root share. The kernel gives every memory cgroup a slot for each memory-aware
# shrinker, and every mounted superblock has one (a zone mounts 7): with a memory cgroup
# per zone the slots grow as zones squared (~1.1 MiB per zone at 10,000 zones, over half
# of each zone's host memory; bench/README.md). Shared, a zone has every other
# controller of its own (pids, cpu, freezer, devices...) but no memory limit, no memory
# figure of its own in `zoned stats`, and an OOM kill of the group is the host's.
ANN_MEMORY_CGROUP = "org.zoned.memory-cgroup"  # "own" (the default) or "shared"
SHARED_MEMORY_NODE = "@shared-memory"  # "@" is in no container id: no zone has this name


def shares_memory_cgroup(cfg: dict) -> bool:
    """Whether the config asks for the shared memory cgroup; ConfigError, naming the
    field, for a bad value or with what it rules out."""
    value = (cfg.get("annotations") or {}).get(ANN_MEMORY_CGROUP, "own")
    if value not in ("own", "shared"):
        raise ConfigError(f"config.json: annotations.{ANN_MEMORY_CGROUP} {value!r}: "
                          "expected own or shared")
    if value == "own":
        return False
    linux = cfg.get("linux") or {}
    memory = (linux.get("resources") or {}).get("memory") or {}
    limits = sorted(k for k, v in memory.items() if v is not None)
    if limits:
        raise ConfigError(f"config.json: linux.resources.memory.{limits[0]}: a zone in the "
                          "shared memory cgroup has no memory limit of its own")
    if linux.get("cgroupsPath"):
        raise ConfigError(f"config.json: linux.cgroupsPath: a zone in the shared memory "
                          f"cgroup has zoned's own path (drop {ANN_MEMORY_CGROUP} or the path)")
    if os.geteuid() != 0:
        raise ConfigError(f"config.json: annotations.{ANN_MEMORY_CGROUP}: shared needs root "
                          "(a rootless zone has no memory cgroup zoned makes)")
    check_shared_capabilities(cfg.get("process") or {})
    return True


def check_shared_capabilities(process: dict, where: str = "config.json: process") -> None:
    """No process of a zone in the shared memory cgroup may hold CAP_SYS_ADMIN: with it, it
    could remount its cgroupfs writable, where (v1) its memory hierarchy's root is the
    shared cgroup, and limit the memory of every other zone in it."""
    for kind, names in sorted((process.get("capabilities") or {}).items()):
        if "CAP_SYS_ADMIN" in (names or []):
            raise ConfigError(f"{where}.capabilities.{kind}: CAP_SYS_ADMIN in a "
                              "zone in the shared memory cgroup (it could remount its "
                              "cgroupfs and limit the other zones' memory)")


def shared_memory_path(path: str) -> str:
    """A zone's cgroup below the shared memory cgroup of its parent: PARENT/@shared-memory/ID
    (whose memory cgroup is PARENT/@shared-memory, zoned.cgroups.open_cgroup)."""
    parent, name = os.path.split(path)
    return os.path.join(parent, SHARED_MEMORY_NODE, name)
