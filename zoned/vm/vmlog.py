"""A VM's console.log and ctl, written by zoned-vmlog (csrc/vmlog.c), bounded.

QEMU writes the guest's serial console and ctl port into two pipes; zoned-vmlog, one
small process per VM outside the VM's cgroup, appends them to <vmdir>/console.log
(rotated to console.log.1) and <vmdir>/ctl (cut back to its first lines), so a guest
cannot grow either file without bound (libvirt's virtlogd exists for the same reason).
It holds a lock on ctl until QEMU has gone and everything is written: settle() waits
for that, so a status read after QEMU's exit sees the guest's last line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from zoned.errors import ZonedError

VMLOG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec",
                     "zoned-vmlog")
CONSOLE_MAX = 1 << 20  # bytes per console file (two of them: console.log, .1)
CTL_MAX = 64 << 10  # zoned.vm.machine.read_ctl reads its first 4 KiB and the rest


@dataclass(frozen=True)
class VmLog:
    """A started zoned-vmlog: its pid, and the pipes' write ends QEMU gets (the caller
    closes them once QEMU has them)."""

    pid: int
    console_fd: int
    ctl_fd: int


def console_max() -> int:
    """Bytes per console file: $ZONED_VM_CONSOLE_MAX (e.g. 256k), else 1 MiB."""
    value = os.environ.get("ZONED_VM_CONSOLE_MAX")
    if not value:
        return CONSOLE_MAX
    from zoned.oci.values import parse_size

    return parse_size(value, "ZONED_VM_CONSOLE_MAX")


def spawn(vmdir: str) -> VmLog:
    """Start zoned-vmlog for `vmdir`, which makes console.log and ctl (empty) and has
    locked ctl before this returns. It exits once QEMU, the pipes' last writer, is gone."""
    if not os.access(VMLOG, os.X_OK):
        raise ZonedError(f"{VMLOG} is missing: run `make setup`")
    from zoned.linux.proc import spawn_daemon

    con_r, con_w = os.pipe2(os.O_CLOEXEC)
    ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, con_r, 0), (os.POSIX_SPAWN_DUP2, ctl_r, 3)]
    argv = [VMLOG, vmdir, str(console_max()), str(CTL_MAX)]
    try:
        return VmLog(spawn_daemon(VMLOG, argv, actions, f"zoned-vmlog for {vmdir}"),
                     con_w, ctl_w)
    except BaseException:
        os.close(con_w)
        os.close(ctl_w)
        raise
    finally:
        os.close(con_r)
        os.close(ctl_r)


def settle(ctl: str, timeout: float = 2.0) -> bool:
    """Wait until nothing writes `ctl` any more (zoned-vmlog has drained QEMU's last
    words and exited); False if it still has not after `timeout`. Only for after QEMU
    has exited: while it runs, the writer runs too."""
    from zoned.linux.locks import wait_shared

    try:
        fd = os.open(ctl, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        return wait_shared(fd, timeout)
    finally:
        os.close(fd)

