"""A saved VM in one file (`zoned save` of a VM zone, `zoned checkpoint --export` of a VM
container): its description and QEMU's own migration stream, which an admin can move
with any tool and `zoned restore` reads back.

The format (version 1; all integers big-endian):

  offset  size  what
  0       16    MAGIC, b"ZONED-VM-SAVE\\n\\0\\0"
  16      4     VERSION (1)
  20      4     H, the header's length in bytes (at most MAX_HEADER)
  24      8     S, the stream's length in bytes (0 until the stream is complete)
  32      32    SHA-256 of the stream (zeros until the stream is complete)
  64      H     the header: one JSON object, UTF-8 (check_header lists its fields)
  64+H    S     QEMU's migration stream (QMP `migrate` to an fd), as QEMU wrote it
  64+H+S        end of file: any other length is a damaged or unfinished file

The header says what restore boots before it reads the stream: the kind ("zone": a
defined zone's `zoned save`; "container": a checkpoint export), the container's name, its
OCI config (the machine is made from it exactly as on the source: the same devices,
memory and vCPUs), the image by name and content digest (the read-only root disk is made
here from this host's copy, which must be the same), the accelerator, the network
description (networks, addresses, MACs, published ports), and for a zone its zone file
(restore defines the zone from it where it is not defined: zoned.zones.saving). The
guest's writable layer is its tmpfs, so it is in the stream (guest RAM). Nothing in the
header names a host path: a config with a bind mount (a 9p volume) is refused (save
leaves out the binds of the network's /etc files, which a restore's network set-up makes
anew), and so is a zone file naming one where it would define the zone; the image is
found by name, the networks by their definition names.

Writing: the stream's length and digest are written last (pwrite), then fsync, then the
file is renamed from its temp name: a file that has both is complete. Reading: the header
is bounded and checked before anything exists; the stream is fed to a paused QEMU through
a pipe while its digest is computed, and a stream that does not match its digest leaves
a QEMU that is destroyed before its guest ever ran (`-S`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time

from zoned.errors import ConfigError, ZonedError

MAGIC = b"ZONED-VM-SAVE\n\0\0"
VERSION = 1
PREFIX = struct.Struct(">16sIIQ32s")  # magic, version, H, S, sha256: 64 bytes
MAX_HEADER = 1 << 20  # a config, a network description: far less
CHUNK = 1 << 20
STALL = 30.0  # s a stream may stand still (QEMU wedged) before the save or restore is given
# up, which holds the zone's lock meanwhile ($ZONED_TEST_STREAM_STALL: the tests' shorter)
KINDS = ("zone", "container")
# What a stream may be beyond the guest's RAM: QEMU's page headers (8 bytes a 4 KiB
# page), device state, the ROMs. A longer one is refused before QEMU reads any of it.
STREAM_SLACK = 64 << 20


def is_save_file(path: str) -> bool:
    """Whether `path` starts like a saved VM (a regular file only: a FIFO is not read)."""
    from zoned.linux.files import open_regular

    try:
        fd = open_regular(path)
    except OSError:
        return False
    try:
        return os.pread(fd, 16, 0) == MAGIC
    finally:
        os.close(fd)


def write_prefix(fd: int, header: dict) -> int:
    """The magic, version and header at the start of `fd` (stream length and digest
    zero: not complete); returns where the stream begins."""
    data = json.dumps(header, sort_keys=True).encode()
    if len(data) > MAX_HEADER:
        raise ZonedError(f"the VM's description is {len(data)} bytes, over {MAX_HEADER}")
    os.pwrite(fd, PREFIX.pack(MAGIC, VERSION, len(data), 0, bytes(32)) + data, 0)
    return PREFIX.size + len(data)


def complete(fd: int, length: int, digest: bytes) -> None:
    """Mark the file complete: the stream's length and digest, then fsync."""
    os.pwrite(fd, struct.pack(">Q32s", length, digest), 24)
    os.fsync(fd)


class SavedVM:
    """A saved VM file opened for reading: its checked header, and where its stream is."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path
        size = os.fstat(fd).st_size
        raw = os.pread(fd, PREFIX.size, 0)
        if len(raw) < PREFIX.size:
            raise ConfigError(f"{path}: not a saved VM (too short)")
        magic, version, hlen, slen, self.digest = PREFIX.unpack(raw)
        if magic != MAGIC:
            raise ConfigError(f"{path}: not a saved VM (no {MAGIC[:13].decode()} magic)")
        if version != VERSION:
            raise ConfigError(f"{path}: saved VM format {version} is not {VERSION}")
        if hlen > MAX_HEADER:
            raise ConfigError(f"{path}: header of {hlen} bytes, over {MAX_HEADER}")
        if slen == 0 or self.digest == bytes(32):
            raise ConfigError(f"{path}: an unfinished save (no stream length or digest)")
        self.offset, self.length = PREFIX.size + hlen, slen
        if size != self.offset + slen:
            raise ConfigError(f"{path}: {size} bytes where its header says "
                              f"{self.offset + slen}: a damaged or truncated file")
        try:
            header = json.loads(os.pread(fd, hlen, PREFIX.size).decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{path}: header is not JSON: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: header is not JSON: nested too deep") from None
        self.header = check_header(header, f"{path}: header")
        from zoned.backends.vm import machine_spec

        spec = machine_spec(self.header["config"], self.header["image"]["name"])
        if slen > spec.memory_mib * (1 << 20) * 1.01 + STREAM_SLACK:
            raise ConfigError(f"{path}: stream of {slen} bytes for a guest of "
                              f"{spec.memory_mib} MiB")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "SavedVM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_saved(path: str, what: str) -> SavedVM:
    """Open and check a saved VM: root's or ours, not a symlink, in directories nobody
    else can write (zoned.checkpoint.private), its header checked (check_header)."""
    from zoned.checkpoint.private import check_own

    check_own(path, what, directory=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return SavedVM(fd, path)
    except BaseException:
        os.close(fd)
        raise


_FIELDS = {"kind": str, "id": str, "config": dict, "image": dict, "accel": str,
           "log": bool, "autoremove": bool, "saved": (int, float)}
_OPTIONAL = {"network": dict, "zone": str, "qemu": dict}


def check_header(header: object, where: str) -> dict:
    """A header in the shape save wrote it, one line naming the field otherwise: before
    any of it names a container, an image or a network."""
    from zoned.oci import spec as specmod

    if not isinstance(header, dict):
        raise ConfigError(f"{where}: not a JSON object")
    for key, kind in (*_FIELDS.items(), *_OPTIONAL.items()):
        value = header.get(key)
        if (key in _FIELDS or value is not None) and not isinstance(value, kind):
            raise ConfigError(f"{where}: {key} is missing or of the wrong type")
    unknown = set(header) - set(_FIELDS) - set(_OPTIONAL)
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if header["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind {header['kind']!r} is not one of {KINDS}")
    specmod.check_id(header["id"])
    image = header["image"]
    if not isinstance(image.get("name"), str) or not isinstance(image.get("digest"), str) \
            or not re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]):
        raise ConfigError(f"{where}: image needs a name and a sha256: digest")
    if header["accel"] not in ("kvm", "tcg"):
        raise ConfigError(f"{where}: accel {header['accel']!r} is not kvm or tcg")
    specmod.validate(header["config"])
    if header["config"].get("hooks"):  # (commands run on the host as root)
        raise ConfigError(f"{where}: config has hooks: a saved VM runs nothing on the host")
    specmod.refuse_zoned_annotations(header["config"], f"{where}: config", "a saved VM")
    from zoned.backends.vm import machine_spec

    from zoned.checkpoint.archive import is_bind

    for m in header["config"].get("mounts") or []:
        if is_bind(m):
            raise ConfigError(f"{where}: config mounts {m.get('source')!r}: a saved VM "
                              "names no host path (a VM with a volume cannot be saved)")
    spec = machine_spec(header["config"], image["name"], accel=header["accel"])
    spec.validate()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
    if spec.memory_mib > total:
        raise ConfigError(f"{where}: memory {spec.memory_mib} MiB is more than this "
                          f"host has ({total} MiB)")
    if header.get("network") is not None:
        from zoned.checkpoint.archive import check_network

        check_network(header["network"], where)
    return header


# -- the stream ------------------------------------------------------------------------
def hand_fd(q, name: str, fd: int) -> None:
    """Give QEMU `fd` under `name` (QMP getfd, the fd as SCM_RIGHTS), for an fd: URI."""
    q.send_fd("getfd", fd, fdname=name)


def _pipe_with(q, name: str, *, qemu_writes: bool) -> int:
    """A pipe whose one end QEMU has as fd `name` (hand_fd), that end closed here; ours
    (CLOEXEC) returned: read from it if qemu_writes, else written to."""
    r, w = os.pipe2(os.O_CLOEXEC)
    theirs, ours = (w, r) if qemu_writes else (r, w)
    try:
        hand_fd(q, name, theirs)
    except BaseException:
        os.close(ours)
        raise
    finally:
        os.close(theirs)
    return ours


def stream_out(q, out_fd: int, progress=None) -> tuple[int, bytes, dict]:
    """QMP `migrate` of the (stopped) guest into `out_fd` at its offset, through a pipe
    read here: (bytes, SHA-256, QEMU's query-migrate at the end)."""
    from zoned.linux.files import write_all
    from zoned.testhooks import hit

    r = _pipe_with(q, "zoned-save", qemu_writes=True)
    try:
        q.execute("migrate", uri="fd:zoned-save")
        h, n, stall = hashlib.sha256(), 0, _stall()
        while True:
            if not _ready(r, False, stall):
                raise ZonedError(f"QEMU sent nothing of the guest's state for {stall:g} s "
                                 "(wedged?): the save is given up")
            data = os.read(r, CHUNK)
            if not data:
                break
            h.update(data)
            write_all(out_fd, data)
            n += len(data)
            hit("vmsave:streaming")
            if progress is not None:
                progress(n)
    finally:
        os.close(r)
    from zoned.vm.qmp import wait_migrated

    return n, h.digest(), wait_migrated(q)


def stream_in(q, saved: SavedVM) -> None:
    """Feed the file's stream to a QEMU started with `-incoming defer` (paused): through
    a pipe, exactly the stream's length, its digest checked; ZonedError if it does not
    match or QEMU does not end up paused with the whole state (QEMU exits at a stream it
    cannot load: its own words are in its log)."""
    from zoned.testhooks import hit

    w = _pipe_with(q, "zoned-restore", qemu_writes=False)
    try:
        os.set_blocking(w, False)  # (each write waits in _ready, up to the stall limit)
        q.execute("migrate-incoming", uri="fd:zoned-restore")
        h, left, pos, stall = hashlib.sha256(), saved.length, saved.offset, _stall()
        while left:
            data = os.pread(saved.fd, min(CHUNK, left), pos)
            if not data:
                raise ZonedError(f"{saved.path}: shorter than its header says")
            h.update(data)
            view = memoryview(data)
            while view:
                if not _ready(w, True, stall):
                    raise ZonedError(f"QEMU took nothing of {saved.path} for {stall:g} s "
                                     "(wedged?): the restore is given up")
                try:
                    view = view[os.write(w, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise ZonedError(f"QEMU could not load {saved.path}: "
                                     f"{_qemu_said(q)}") from None
            left -= len(data)
            pos += len(data)
            hit("vmrestore:streaming")
    finally:
        os.close(w)
    if h.digest() != saved.digest:
        raise ZonedError(f"{saved.path}: the stream does not match its SHA-256 (damaged)")
    deadline = time.monotonic() + 120
    try:
        while (status := q.execute("query-status")["status"]) == "inmigrate":
            if time.monotonic() > deadline:
                raise ZonedError("QEMU did not finish loading the saved state")
            time.sleep(0.01)
    except (OSError, ZonedError):
        raise ZonedError(f"QEMU could not load {saved.path}: {_qemu_said(q)}") from None
    if status not in ("paused", "prelaunch", "postmigrate"):
        raise ZonedError(f"QEMU is {status!r} after {saved.path}: {_qemu_said(q)}")


def _stall() -> float:
    try:
        return float(os.environ.get("ZONED_TEST_STREAM_STALL") or STALL)
    except ValueError:  # (a test knob: a bad value is the default)
        return STALL


def _ready(fd: int, writing: bool, timeout: float) -> bool:
    """Whether the pipe end `fd` can be read (or written) within `timeout` s; a closed
    other end counts as ready (the read or write then says so)."""
    import select

    p = select.poll()
    p.register(fd, select.POLLOUT if writing else select.POLLIN)
    return bool(p.poll(timeout * 1000))


def _qemu_said(q) -> str:
    """QEMU's last line (its log, beside the QMP socket), made printable."""
    from zoned.vm.config import guest_text
    from zoned.linux.files import open_regular
    from zoned.vm.machine import VMPaths

    try:
        with open(open_regular(VMPaths(os.path.dirname(q.path)).log), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 300))
            lines = f.read().strip().splitlines()
    except OSError:
        lines = []
    return guest_text(lines[-1]) if lines else "it said nothing"
