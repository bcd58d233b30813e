"""`zoned cp` with a VM: the guest's own tar, run through the VM's agent, on the guest's
side; on the host's, the same stream handling as a zone's copy (zoned.cli.copy's
docstring says what the Unpacker refuses). The guest is not trusted: what comes out of it
is unpacked as a hostile stream, whose every entry must lie below the name that was asked
for. What goes in is unpacked by the guest's tar, as the guest's root, which can touch
nothing but the guest. A VM's writable layer is its RAM, so a stopped VM has no files to
copy (podman copies with a Kata container the same way: through its agent)."""
from __future__ import annotations

import os
import posixpath
import threading

from zoned.errors import InvalidState, ZonedError
from zoned.vm.agent import run_in_guest


def copy_with_vm(st: dict, src: str, dst: str, *, into_vm: bool) -> int:
    """Copy host src to the VM's dst (into_vm), or the VM's src to host dst."""
    from zoned.backends.vm import vm_of

    if st["status"] != "running":
        raise InvalidState(f"cannot cp with {st['id']!r}: it is {st['status']} (a VM's "
                           "files live in its guest, its writable layer in its RAM)")
    vmdir = vm_of(st)["dir"]
    return _into(vmdir, src, dst) if into_vm else _out_of(vmdir, src, dst)


def _into(vmdir: str, src: str, dst: str) -> int:
    import tarfile

    is_dir, _ = run_in_guest(vmdir, ["test", "-d", dst])
    into = dst if is_dir == 0 else (posixpath.dirname(dst.rstrip("/")) or "/")
    name = os.path.basename(src.rstrip("/")) if is_dir == 0 else \
        posixpath.basename(dst.rstrip("/"))
    if not name or name in (".", ".."):
        raise ZonedError(f"cp: {dst!r}: name a file or a directory in the VM")
    r, w = os.pipe2(os.O_CLOEXEC)
    failed: list[BaseException] = []

    def pack() -> None:
        try:
            with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
                tar.add(src, arcname=name)
        except BaseException as e:  # noqa: BLE001 - reported below (a closed pipe: the
            failed.append(e)        # guest's tar gave up, and says why)

    writer = threading.Thread(target=pack, daemon=True)
    writer.start()
    try:
        code, why = run_in_guest(vmdir, ["tar", "-x", "-f", "-", "-C", into], stdin=r)
    finally:
        os.close(r)
        writer.join()
    if code:
        raise ZonedError(f"cp: into the VM's {into!r}: {why or f'tar exited {code}'}")
    if failed and not isinstance(failed[0], BrokenPipeError):
        raise ZonedError(f"cp: {getattr(failed[0], 'strerror', None) or failed[0]}")
    return 0


def _out_of(vmdir: str, src: str, dst: str) -> int:
    from zoned.cli.copy_stream import unpack

    path = posixpath.normpath("/" + src)
    top = posixpath.basename(path) or "."
    into = dst if os.path.isdir(dst) else os.path.dirname(os.path.abspath(dst))
    name = (posixpath.basename(path) or "root") if os.path.isdir(dst) else \
        os.path.basename(os.path.abspath(dst))
    r, w = os.pipe2(os.O_CLOEXEC)
    result: list = []

    def run_tar() -> None:
        try:
            result.append(run_in_guest(vmdir, ["tar", "-c", "-f", "-", "-C",
                                               posixpath.dirname(path), top], stdout=w))
        except BaseException as e:  # noqa: BLE001 - reported below
            result.append(e)
        finally:
            os.close(w)  # the host side reads to the end

    reader = threading.Thread(target=run_tar, daemon=True)
    reader.start()
    host_error = None
    try:
        with os.fdopen(r, "rb") as f:
            unpack(f, into, name, privileged=False, top=top)
    except Exception as e:  # noqa: BLE001 - the guest's word comes first, where it has one
        host_error = e
    reader.join()
    outcome = result[0] if result else None
    if isinstance(outcome, BaseException) and not isinstance(outcome, BrokenPipeError):
        raise ZonedError(f"cp: {outcome}")
    if isinstance(outcome, tuple) and outcome[0]:
        raise ZonedError(f"cp: {src!r} in the VM: {outcome[1] or f'tar exited {outcome[0]}'}")
    if host_error is not None:
        text = str(host_error)
        raise ZonedError(text if text.startswith("cp:") else f"cp: {text}")
    return 0
