"""The files every VM boots from, made once and shared: guest kernel, initramfs, root disks.

All live under ``$ZONED_VM_DIR`` (default /var/lib/zoned/vm):
  kernel/<version>/{vmlinux,config,modules/}  scripts/install-vm-kernel.sh (make setup)
  initramfs/<hash>.cpio   zoned-vminit + the modules, keyed by the hash of those inputs
  disks/<digest>.squashfs an image's rootfs, keyed by the image's content digest
Each is built in a temp file and renamed into place under a flock, so parallel callers are
safe and a crash leaves no half-made file under the final name. N VMs of one image share
one disk file (and one copy of it in the host page cache).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator

from zoned.errors import ZonedError

VMINIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "libexec", "zoned-vminit")


def vm_dir() -> str:
    return os.environ.get("ZONED_VM_DIR", "/var/lib/zoned/vm")


class Kernel:
    """An unpacked guest kernel: its version, uncompressed ELF and modules directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.version = os.path.basename(path)
        self.vmlinux = os.path.join(path, "vmlinux")
        self.modules = os.path.join(path, "modules")


def kernel() -> Kernel:
    """The newest complete guest kernel; a clear error when `make setup` has not run."""
    base = os.path.join(vm_dir(), "kernel")
    try:
        found = sorted(d for d in os.listdir(base)
                       if os.path.exists(os.path.join(base, d, ".complete")))
    except FileNotFoundError:
        found = []
    if not found:
        raise ZonedError(f"no VM guest kernel in {base}: run `make setup` "
                         "(scripts/install-vm-kernel.sh)")
    return Kernel(os.path.join(base, found[-1]))


@contextmanager
def _locked(directory: str) -> Iterator[None]:
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(tmp: str, final: str) -> None:
    os.chmod(tmp, 0o644)
    os.rename(tmp, final)


def base_initramfs(k: Kernel | None = None) -> str:
    """The shared part of every VM's initrd: /init (zoned-vminit) and the guest modules.
    Uncompressed: under TCG the guest decompressing it costs more than reading it."""
    from zoned.vm.cpio import CpioWriter

    k = k or kernel()
    if not os.path.exists(VMINIT):
        raise ZonedError(f"{VMINIT} is missing: run `make setup`")
    with open(os.path.join(k.modules, "load-order")) as f:
        order = f.read().split()
    try:
        with open(os.path.join(k.modules, "load-order-9p")) as f:
            order_9p = f.read().split()
    except FileNotFoundError:  # a kernel unpacked by an older install script
        order_9p = []
    inputs = [("init", VMINIT)] + [(m, os.path.join(k.modules, m + ".ko"))
                                   for m in order + order_9p]
    h = hashlib.sha256(k.version.encode())
    blobs = {}
    for name, path in inputs:
        with open(path, "rb") as f:
            blobs[name] = f.read()
        h.update(name.encode() + b"\0" + hashlib.sha256(blobs[name]).digest())
    directory = os.path.join(vm_dir(), "initramfs")
    final = os.path.join(directory, h.hexdigest()[:32] + ".cpio")
    if os.path.exists(final):
        return final
    with _locked(directory):
        if os.path.exists(final):
            return final
        w = CpioWriter()
        for d in ("dev", "proc", "sys", "lib", "lib/modules", "zoned"):
            w.directory(d)
        w.file("init", blobs["init"], 0o755)
        for m in order + order_9p:
            w.file(f"lib/modules/{m}.ko", blobs[m])
        w.file("lib/modules/load-order", ("\n".join(order) + "\n").encode())
        w.file("lib/modules/load-order-9p", ("\n".join(order_9p) + "\n").encode())
        tmp = f"{final}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(bytes(w))
        _publish(tmp, final)
        # Bases of another vminit or kernel: each VM boots from its own copy, but another
        # checkout of zoned may be using one right now; gone after a day unused.
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            try:
                if name.endswith(".cpio") and time.time() - os.stat(path).st_atime > 86400:
                    _unlink(path)
            except FileNotFoundError:
                pass
    return final


def vm_initrd(vmdir: str, config: bytes, k: Kernel | None = None) -> str:
    """<vmdir>/initrd: the base archive with the VM's config appended as a second archive.
    In the initrd, the config is in guest RAM from the first instruction on, so it needs no
    device and migrates with the guest (a 9p share or the 2 KiB kernel command line would not
    do)."""
    from zoned.vm.cpio import CpioWriter

    base = base_initramfs(k)
    w = CpioWriter()
    w.file("zoned/config", config, 0o600)
    path = os.path.join(vmdir, "initrd")
    tmp = path + ".tmp"
    from zoned.vm.jail import new_vm_file

    with open(base, "rb") as src, open(new_vm_file(tmp), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.write(bytes(w))
    os.rename(tmp, path)
    return path


def root_disk(image: str, store_root: str | None = None) -> str:
    """The image's rootfs as a read-only squashfs (uncompressed: cheaper for a TCG guest to
    read, and shared through the host page cache), made once per image digest. store_root:
    the image store (default: zoned's)."""
    from zoned.images.store import ImageStore

    store = ImageStore(store_root)
    img = store.get(image)
    digest = store.digest(image).split(":", 1)[-1]
    directory = os.path.join(vm_dir(), "disks")
    final = os.path.join(directory, digest[:32] + ".squashfs")
    if os.path.exists(final):
        return final
    with _locked(directory):
        if os.path.exists(final):
            return final
        tmp = f"{final}.tmp{os.getpid()}"
        mksquashfs(img.rootfs_dir, tmp)
        _publish(tmp, final)
    return final


def dir_disk(rootfs: str, out: str) -> str:
    """A read-only squashfs of `rootfs` at `out`, for one VM (an OCI bundle's rootfs is
    the container's own, so nothing is shared or cached)."""
    tmp = f"{out}.tmp{os.getpid()}"
    mksquashfs(rootfs, tmp)
    os.rename(tmp, out)
    return out


def mksquashfs(rootfs: str, out: str) -> None:
    """`rootfs` as an uncompressed squashfs at `out` (removed again on failure)."""
    try:
        subprocess.run(["mksquashfs", rootfs, out, "-noappend", "-no-progress", "-quiet",
                        "-noI", "-noD", "-noF", "-noX"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise ZonedError("mksquashfs is missing: run `make setup` (squashfs-tools)") from None
    except subprocess.CalledProcessError as e:
        _unlink(out)
        raise ZonedError(f"mksquashfs {rootfs}: "
                         f"{e.stderr.decode(errors='replace').strip()}") from None


def prune_disks() -> list[str]:
    """Deletes the root disks of images that are gone or were rebuilt (a running VM keeps
    its open disk; a migration's destination would make it again); returns their paths."""
    from zoned.images.store import ImageStore

    store = ImageStore()
    keep = set()
    for img in store.list():
        try:
            keep.add(store.digest(img.name).split(":", 1)[-1][:32] + ".squashfs")
        except (ZonedError, OSError):  # an image going away meanwhile: not kept
            pass
    directory = os.path.join(vm_dir(), "disks")
    removed = []
    with _locked(directory):
        for name in os.listdir(directory):
            if name.endswith(".squashfs") and name not in keep:
                _unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
