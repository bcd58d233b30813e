"""`zoned cp`: files between the host and a zone, either way, the zone running or stopped.

The zone's side is handled in a forked child that chroots into the zone's root (a running
zone's /proc/PID/root, with its mounts; a stopped zone's overlay, mounted in a private
mount namespace), so no path in the zone, symlinks included, can reach the host. The two
sides talk through a tar stream on a pipe; what comes out of the zone is unpacked on the
host with tarfile's "data" filter (no absolute names, no links out of the destination)."""
from __future__ import annotations

import os
import sys

from zoned.cli.common import runtime
from zoned.errors import ConfigError, InvalidState, ZonedError

TOP = "_zoned_cp_"  # the top-level name in the stream; renamed on the receiving side


def split(arg: str) -> tuple[str | None, str]:
    """ID:PATH -> (ID, PATH); a host path (absolute, ./, or without ':') -> (None, path)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    cid, _, path = arg.partition(":")
    return cid, path or "/"


def cmd_cp(args) -> int:
    src_id, src = split(args.src)
    dst_id, dst = split(args.dest)
    if (src_id is None) == (dst_id is None):
        raise ConfigError("cp: exactly one of SRC and DEST must be ID:PATH (a container)")
    rt = runtime(args)
    cid = src_id or dst_id
    st = rt.state(cid)
    if (st.get("zoned") or {}).get("vm"):
        raise InvalidState(f"cannot cp with {cid!r}: a VM's files are in its guest disk "
                           "(zoned exec ID cat, or tar through exec)")
    if src_id is None and not os.path.lexists(src):
        raise ConfigError(f"cp: {src!r} does not exist")
    if st["status"] != "stopped":
        return _out_of(rt, st, src, dst) if dst_id is None else _into(rt, st, src, dst)
    with rt.store.lock(cid):  # its layer is mounted here: nobody starts it meanwhile
        st = rt.state(cid)
        return _out_of(rt, st, src, dst) if dst_id is None else _into(rt, st, src, dst)


def rename(member, name: str) -> None:
    """The stream's top-level name becomes the destination's (hard links' targets too)."""
    member.name = name + member.name[len(TOP):]
    if member.islnk() and member.linkname.startswith(TOP):
        member.linkname = name + member.linkname[len(TOP):]


def extract_on_host(tar, member, into: str) -> None:
    """Unpack one member from the zone below `into` only (tarfile's "data" filter, which
    this Python lacks): no absolute names or .., no writing through a symlink, no link
    out of `into`, no device nodes, no setuid bits."""
    base = os.path.realpath(into)

    def inside(rel: str) -> bool:
        path = os.path.realpath(os.path.join(base, rel))
        return path == base or path.startswith(base + os.sep)

    name = member.name
    if name.startswith("/") or ".." in name.split("/") or member.isdev():
        raise ZonedError(f"cp: refusing {name!r} from the container (absolute, .. or a "
                         "device)")
    if not inside(os.path.dirname(name)) or (member.islnk() and not inside(member.linkname)):
        raise ZonedError(f"cp: refusing {name!r} from the container (it leads out of "
                         f"{into})")
    target = os.path.join(base, name)
    if os.path.islink(target):  # replaced, never written through
        os.unlink(target)
    member.mode &= 0o777
    tar.extract(member, base, numeric_owner=True)


def _into(rt, st: dict, src: str, dst: str) -> int:
    import tarfile

    def zone_side(rfd: int) -> None:
        with os.fdopen(rfd, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            into = dst if os.path.isdir(dst) else os.path.dirname(dst.rstrip("/")) or "/"
            name = os.path.basename(src.rstrip("/")) if os.path.isdir(dst) else \
                os.path.basename(dst.rstrip("/"))
            if not os.path.isdir(into):
                raise FileNotFoundError(f"{into}: no such directory in the container")
            for m in tar:
                rename(m, name)
                tar.extract(m, into, numeric_owner=True)  # chrooted: the zone's root

    def host_side(wfd: int) -> None:
        with os.fdopen(wfd, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(src, arcname=TOP)

    return _run(rt, st, zone_side, host_side, to_zone=True)


def _out_of(rt, st: dict, src: str, dst: str) -> int:
    import tarfile

    def zone_side(wfd: int) -> None:
        if not os.path.lexists(src):
            raise FileNotFoundError(f"{src}: no such file in the container")
        with os.fdopen(wfd, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(src, arcname=TOP)

    def host_side(rfd: int) -> None:
        into = dst if os.path.isdir(dst) else os.path.dirname(os.path.abspath(dst))
        name = os.path.basename(src.rstrip("/")) or "root" if os.path.isdir(dst) else \
            os.path.basename(os.path.abspath(dst))
        with os.fdopen(rfd, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                rename(m, name)
                extract_on_host(tar, m, into)

    return _run(rt, st, zone_side, host_side, to_zone=False)


def _run(rt, st: dict, zone_side, host_side, *, to_zone: bool) -> int:
    """Fork the zone side (chrooted), run the host side here over a pipe; the child's
    error, if any, comes back as one line."""
    r, w = os.pipe()
    er, ew = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the zone side: never returns
        code = 0
        try:
            os.close(er)
            os.close(w if to_zone else r)
            _enter(rt, st)
            zone_side(r if to_zone else w)
        except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit
            os.write(ew, f"{getattr(e, 'strerror', None) or e}".encode()[:4000])
            code = 1
        os._exit(code)
    os.close(ew)
    os.close(r if to_zone else w)
    host_error = None
    try:
        host_side(w if to_zone else r)
    except Exception as e:  # noqa: BLE001 - OSError, tarfile's errors (a broken stream)
        host_error = e
    _, status = os.waitpid(pid, 0)
    with os.fdopen(er, "rb") as f:
        child_error = f.read().decode(errors="replace")
    if child_error:
        raise ZonedError(f"cp: {child_error}")
    if host_error is not None or status:
        raise ZonedError(f"cp: {host_error or 'the copy failed'}")
    return 0


def _enter(rt, st: dict) -> None:
    """(In the child) chroot into the zone's root: the running zone's, or the stopped
    zone's overlay (and its bind mounts) in a mount namespace of our own."""
    if st["status"] != "stopped":
        os.chroot(f"/proc/{st['pid']}/root")
        os.chdir("/")
        return
    from zoned.linux import syscalls as sc
    from zoned.oci.spec import ANN_LOWER

    cfg = rt.config(st["id"])
    lower = (cfg.get("annotations") or {}).get(ANN_LOWER)
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if lower:
        data = st["zoned"]["data"]
        root = os.path.join(rt.store.dir(st["id"]), "rootfs")
        os.makedirs(root, exist_ok=True)
        sc.mount("overlay", root, "overlay", 0,
                 f"lowerdir={lower},upperdir={data}/upper,workdir={data}/work")
    else:
        root = st.get("rootfs") or cfg["root"]["path"]
    for m in cfg.get("mounts") or []:  # -v and --mount binds: cp reaches volumes too
        if m.get("type") == "bind" and os.path.isdir(m.get("source", "")):
            target = os.path.join(root, m["destination"].lstrip("/"))
            if os.path.isdir(target) and not os.path.islink(target):
                sc.mount(m["source"], target, None, sc.MS_BIND | sc.MS_REC)
    os.chroot(root)
    os.chdir("/")
