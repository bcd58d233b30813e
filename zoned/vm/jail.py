"""QEMU's jail: what zoned-vmwrap binds into the mount namespace QEMU runs in.

QEMU parses what a guest controls (its virtio devices, 9p requests, a saved VM's stream)
and runs as uid 0: without capabilities (zoned-vmwrap --caps) every file root owns and
every unix socket of the host's would still be open to an exploited QEMU. Its root is a
tmpfs holding only what it was seen to open (strace of a boot): its binary and libraries
(/usr, the loader's cache), the guest kernel and disk, the VM's own directory (its
sockets, pid file and initrd), the 9p volumes, a few device nodes, the NUMA and CPU facts
under /sys/devices/system, its own /proc/self (the /proc/self/fd paths zoned hands it its
pipes by; no other process) and an empty /tmp. Everything else of the host is not there.
Each path keeps its own name, so QEMU's command line is the same inside. Its network
namespace is an empty one of its own (zoned-vmwrap): its taps come as fds
(zoned.vm.machine.open_tap), so no host TCP service or abstract socket is in its reach.

The VM's dir is bound read-write: what zoned itself reads and writes there goes through
zoned.linux.files.open_regular and new_vm_file, and its sockets are taken only from that QEMU
(zoned.vm.machine.check_peer).
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from zoned.vm.config import MachineSpec

JAIL = ".jail"  # in the VM's directory: the (empty) directory the tmpfs is mounted on
SYSTEM = ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/sys/devices/system")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


def jail_dir(vmdir: str) -> str:
    return os.path.join(vmdir, JAIL)


def remove_jail_dir(vmdir: str) -> None:
    """The jail's mount point gone, whatever a QEMU left under its name (a symlink)."""
    path = jail_dir(vmdir)
    try:
        os.rmdir(path)
    except NotADirectoryError:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make_jail_dir(vmdir: str) -> None:
    """The jail's mount point, an empty directory made anew (zoned-vmwrap mounts QEMU's
    root there, in QEMU's mount namespace only)."""
    remove_jail_dir(vmdir)
    os.mkdir(jail_dir(vmdir), 0o700)


def qemu_prefix() -> tuple[str, ...]:
    """QEMU's install prefix where it is not under /usr (a /opt/qemu build: its binary, and
    its firmware and modules beside it, which QEMU finds relative to itself)."""
    import shutil

    from zoned.vm.cmdline import QEMU

    found = shutil.which(QEMU)
    if not found:
        return ()
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(found)))
    return () if prefix in ("/", "/usr") or prefix.startswith("/usr/") else (prefix,)


def vmwrap_args(spec: MachineSpec, vmdir: str, files: tuple[str, ...], accel: str) -> list[str]:
    """zoned-vmwrap's --jail, --ro, --rw and --dev arguments: `files` are what QEMU reads
    (its kernel, initrd and disk; bound read-only unless in the VM's directory, which is
    bound read-write). System paths this host lacks (/lib64) are left out."""
    vmdir = os.path.abspath(vmdir)
    args = ["--jail", jail_dir(vmdir)]
    for p in SYSTEM + qemu_prefix():
        if os.path.lexists(p):
            args += ["--ro", p]
    for f in files:
        f = os.path.abspath(f)
        if not f.startswith(vmdir + "/"):
            args += ["--ro", f]
    args += ["--rw", vmdir]
    for v in spec.volumes:
        args += ["--ro" if v.readonly else "--rw", os.path.abspath(v.host)]
    devices = list(DEVICES)
    if accel == "kvm":
        devices.append("/dev/kvm")
    for d in devices:
        args += ["--dev", d]
    return args


def new_vm_file(path: str, mode: int = 0o600) -> int:
    """An fd to write a file of the VM's dir made anew: whatever QEMU left under that name
    (a symlink to a host file: zoned would truncate and write it) is unlinked first, and
    the new one is made O_EXCL."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode)
