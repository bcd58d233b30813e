"""Whether a process, or a socket's peer, is a given VM's QEMU.

QEMU's pid file and sockets are in the VM's dir, which a jailed QEMU can write
(zoned.vm.jail): a pid is taken for the VM's QEMU only if its command line is QEMU's
with that dir's QMP socket, and a socket there only if its peer is that process.
"""
from __future__ import annotations

import os

from zoned.errors import ZonedError
from zoned.vm.cmdline import QEMU
from zoned.vm.paths import VMPaths


def qmp_arg(vmdir: str) -> bytes:
    """The -qmp argument zoned.vm.machine.argv_for gives a QEMU of this VM dir."""
    return f"unix:{VMPaths(os.path.abspath(vmdir)).qmp},server=on,wait=off".encode()


def is_vm_qemu(pid: int, vmdir: str) -> bool:
    """Whether pid is this VM's QEMU: QEMU's program, with this directory's QMP socket
    (zoned-vmwrap's command line holds QEMU's whole, but is not QEMU)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return os.path.basename(args[0]) == QEMU.encode() and qmp_arg(vmdir) in args


def check_peer(sock, vmdir: str, what: str) -> None:
    """Closes the socket and raises unless the peer of this connected unix socket of the
    VM's dir is its QEMU: the dir is QEMU's to write (zoned/vm/jail.py), and a symlink it
    put there in place of a socket would lead zoned's connect, resolved on the host, to
    another VM's QEMU or to a host daemon's socket (SO_PEERCRED: the pid as the host sees
    it)."""
    import socket
    import struct

    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if not is_vm_qemu(pid, vmdir):
            raise ZonedError(f"{what}: the socket's peer (pid {pid}) is not this VM's QEMU")
    except BaseException:
        sock.close()
        raise
