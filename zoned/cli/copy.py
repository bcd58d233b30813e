"""`zoned cp`: files between the host and a zone, either way, the zone running or stopped
(a VM's: zoned.cli.copy_vm, through its agent).

The zone's side is handled in a forked child, the zone side, that works in the zone's
files as root: it is made unable to do anything else before it touches them.
- It enters the zone's root by an fd: the running zone's (/proc/PID/root, with its mounts,
  checked to be the zone's init after the open), or the stopped zone's overlay in a
  mount namespace of its own, with the zone's volumes bound where the zone's own paths
  lead (resolved inside the root: zoned.child.inroot) and read-only where they are, as is
  the whole root of a --read-only zone. No path in the zone, symlinks included, can reach
  the host.
- It never runs code from the zone's files: tarfile looks up no user or group names (glibc
  would read the zone's nsswitch.conf and load its libnss_*.so: docker's CVE-2019-14271),
  and no module can be imported once it is in (the import system would read the zone's
  /usr/lib/python3). Were code to run there anyway, it would have only the capabilities
  a copy needs (no chroot, mount, ptrace, ...) and no_new_privs.
The two sides talk through a tar stream on a pipe. Whatever side receives it unpacks it
with zoned.images.unpack.Unpacker, as an image layer: each write relative to a directory
fd opened without following symlinks, files made O_EXCL|O_NOFOLLOW (a symlink or a FIFO
in the way is replaced, never written through or opened), no absolute names, `..` or
device nodes, hard links inside the destination only, no directory replaced by a file.
What comes out of a zone onto the host keeps no setuid, setgid or sticky bit and no xattr.
Symlinks are copied as they are (docker and podman do the same): a link out of the
destination is a link, never followed by the copy."""
from __future__ import annotations

import os
import sys

from zoned.cli.common import runtime
from zoned.cli.copy_stream import TOP, unpack
from zoned.errors import ConfigError, ZonedError


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
    if src_id is None and not os.path.lexists(src):
        raise ConfigError(f"cp: {src!r} does not exist")
    if (st.get("zoned") or {}).get("vm"):
        from zoned.cli.copy_vm import copy_with_vm

        return copy_with_vm(st, src, dst, into_vm=dst_id is not None)
    if st["status"] != "stopped":
        return _out_of(rt, st, src, dst) if dst_id is None else _into(rt, st, src, dst)
    with rt.store.lock(cid):  # its layer is mounted here: nobody starts it meanwhile
        st = rt.state(cid)
        return _out_of(rt, st, src, dst) if dst_id is None else _into(rt, st, src, dst)


def _into(rt, st: dict, src: str, dst: str) -> int:
    import tarfile

    # Rootless, the zone's user namespace maps the user alone (or a range): what is copied
    # in belongs to the zone's root, as docker's cp makes it, not to the host's ids.
    owner = (0, 0) if os.geteuid() != 0 else None

    def zone_side(rfd: int) -> None:
        into = dst if os.path.isdir(dst) else os.path.dirname(dst.rstrip("/")) or "/"
        name = os.path.basename(src.rstrip("/")) if os.path.isdir(dst) else \
            os.path.basename(dst.rstrip("/"))
        if not os.path.isdir(into):
            raise FileNotFoundError(f"{into}: no such directory in the container")
        with os.fdopen(rfd, "rb") as f:
            unpack(f, into, name, privileged=True, owner=owner)  # the zone's own files

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
        with os.fdopen(rfd, "rb") as f:
            unpack(f, into, name, privileged=False)

    return _run(rt, st, zone_side, host_side, to_zone=False)


def _run(rt, st: dict, zone_side, host_side, *, to_zone: bool) -> int:
    """Fork the zone side (copy_zone.enter), run the host side here over a pipe; the
    child's error, if any, comes back as one line. Where the host side stopped reading
    (a refused entry), the zone side only sees its pipe close and says nothing."""
    from zoned.cli import copy_zone  # all the child uses: it can import nothing later
    userns = copy_zone.stopped_zone_userns(rt, st)  # rootless, stopped: its maps again
    r, w = os.pipe()
    er, ew = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the zone side: never returns
        code = 0
        try:
            os.close(er)
            os.close(w if to_zone else r)
            copy_zone.enter(rt, st, userns)
            zone_side(r if to_zone else w)
        except BrokenPipeError:  # the host side stopped reading: its error says why
            code = 1
        except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit
            os.write(ew, f"{getattr(e, 'strerror', None) or e}".encode()[:4000])
            code = 1
        os._exit(code)
    os.close(ew)
    os.close(r if to_zone else w)
    if userns is not None:
        os.close(userns)
    host_error = None
    try:
        host_side(w if to_zone else r)
    except Exception as e:  # noqa: BLE001 - OSError, tarfile's errors (a broken stream)
        host_error = e
    _, status = os.waitpid(pid, 0)
    with os.fdopen(er, "rb") as f:
        child_error = f.read().decode(errors="replace")
    for error in (child_error, host_error):
        if error:  # (Unpacker's errors say "cp: ..." already)
            text = str(error)
            raise ZonedError(text if text.startswith("cp:") else f"cp: {text}")
    if status:
        raise ZonedError("cp: the copy failed")
    return 0
