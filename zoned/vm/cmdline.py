"""What every QEMU of the VM backend runs with: the binary and the guest kernel's command line
(shared by machine.py's VMs and accel.py's marker boots)."""
from __future__ import annotations

QEMU = "qemu-system-x86_64"
# QEMU's own seccomp filter, as libvirt sets it: no exec or fork (spawn), no set*id
# (elevateprivileges), no obsolete or scheduling syscalls; QEMU sets no_new_privs with it.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def host_tsc_khz() -> int:
    """The host's TSC rate in kHz: a TCG guest's TSC runs at it, and without
    tsc_early_khz= its timer calibration hung 3 of 4 boots under load."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return 0


def kernel_cmdline(accel: str, tsc_khz: int) -> str:
    """Quiet, no probing of hardware microvm lacks; a panic or a reset ends QEMU
    (-no-reboot), so a crashed guest never lingers."""
    args = ["console=ttyS0", "quiet", "loglevel=3", "panic=-1", "reboot=t", "pci=off",
            "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd",
            "random.trust_cpu=on", "cryptomgr.notests", "8250.nr_uarts=1"]
    if accel == "tcg" and tsc_khz > 0:
        # TCG's guest TSC is the host's: known rate, and no clocksource watchdog needed.
        args += [f"tsc_early_khz={tsc_khz}", "tsc=reliable"]
    return " ".join(args)
