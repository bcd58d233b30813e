"""QEMU's jail: what zoned-vmwrap binds into the mount namespace QEMU runs in.

QEMU parses what a guest controls (its virtio devices, 9p requests, a saved VM's stream)
and runs as uid 0: without capabilities (zoned-vmwrap --caps) every file root owns and
every unix socket of the host's would still be open to an exploited QEMU. Its root is a
tmpfs holding only what it was seen to open (strace of a boot): its binary and libraries
(/usr, the loader's cache), the guest kernel and disk, the VM's own directory (its
sockets, pid file and initrd), the 9p volumes, a few device nodes, the NUMA and CPU facts
under /sys/devices/system, a /proc of processes (the /proc/self/fd paths zoned hands it
its pipes by) and an empty /tmp. Everything else of the host is not there. Each path
keeps its own name, so QEMU's command line is the same inside.
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


def vmwrap_args(spec: MachineSpec, vmdir: str, files: tuple[str, ...], accel: str) -> list[str]:
    """zoned-vmwrap's --jail, --ro, --rw and --dev arguments: `files` are what QEMU reads
    (its kernel, initrd and disk; bound read-only unless in the VM's directory, which is
    bound read-write). System paths this host lacks (/lib64) are left out."""
    vmdir = os.path.abspath(vmdir)
    args = ["--jail", jail_dir(vmdir)]
    for p in SYSTEM:
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
    if spec.nics:
        devices.append("/dev/net/tun")
    for d in devices:
        args += ["--dev", d]
    return args
