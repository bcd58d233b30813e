"""zoned's VM backend machinery: a zone's image and process booted as a QEMU micro-VM.

The lead's integration (``zoned run --backend vm``, state store, networks, migration) calls
this API; nothing here knows about zoned's state root. Modules import lazily (QEMU, pyroute2
and json-heavy code stay off ``zoned run``'s path for zones).

  spec = MachineSpec(image="busybox", argv=["sh"], env=[...], cwd="/", uid=0, gid=0,
                     tty=False, hostname="h", memory_mib=256, vcpus=1, accel="auto",
                     nics=[Nic(tap, mac, ip, prefixlen, gateway)], dns=[...], hosts="...",
                     groups=[...], volumes=[Volume(host_dir, guest_path, readonly)])
  # volumes are virtio-9p: while one is mounted QEMU 7.2 refuses live migration
  spec.validate()                    # ConfigError naming the field (memory < 128 MiB, ...)
  p = launch(spec, vmdir, stdio=(in_fd, out_fd, err_fd), place=cgroup.add)
                                     # -> subprocess.Popen of zoned-vmwrap, QEMU's parent
  wait_ready(vmdir, timeout, p)      # the guest init is starting the process
  exit_status(vmdir) -> int | None   # after QEMU exits: the process's code, 128+n on signal
                                     # (the guest's, or the signal that ended QEMU)
  signal_qemu(vmdir, sig) -> bool    # to our QEMU, by pidfd
  stop(vmdir, sig=SIGTERM, timeout=10) -> int | None  # signal, then SIGKILL, then kill QEMU
  Agent(vmdir).exec(argv, env, cwd, uid, gid, tty, stdio) -> int; .signal(sig, "main"|"exec")
  QMP(vmdir).execute("query-status") # machine protocol only
  accel.detect() / accel.used(vmdir) -> Verdict(accel, reason)
  qemu_pid(vmdir) -> int | None      # our QEMU, checked by its command line
  find_qemus(vmdir) -> list[int]     # the same by a /proc scan (no pid file: gc's case)
  destroy(vmdir)                     # kill -9 QEMU (if ours), remove its files; idempotent

Layout of a VM directory (created by launch, removed by destroy): qmp.sock, agent.sock,
ctl (the guest's "ready" / "exit N" / "error MSG" lines), console.log and console.log.1 (the
serial console), both written bounded by zoned-vmlog (zoned.vm.vmlog), qemu.log (QEMU's
stderr), qemu.pid, qemu.end (how QEMU ended, written by zoned-vmwrap), initrd (shared base
+ this VM's config), accel.
Shared, built once: $ZONED_VM_DIR (/var/lib/zoned/vm)/{kernel,initramfs,disks} (see
zoned.vm.assets). The guest side is csrc/vminit.c (zoned/libexec/zoned-vminit).

Stdio: the guest's stdout/stderr are written by QEMU to the caller's fds, reopened through
/proc/self/fd (pipes, ttys, /dev/null; a regular file should be opened O_APPEND, a socket
cannot be reopened: pass a pipe). With tty=True QEMU's stdin/stdout must be the terminal.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "MachineSpec": "zoned.vm.config", "Nic": "zoned.vm.config", "Volume": "zoned.vm.config",
    "launch": "zoned.vm.machine", "argv_for": "zoned.vm.machine",
    "wait_ready": "zoned.vm.machine", "exit_status": "zoned.vm.machine",
    "destroy": "zoned.vm.machine", "stop": "zoned.vm.machine", "qemu_pid": "zoned.vm.machine",
    "find_qemus": "zoned.vm.machine", "signal_qemu": "zoned.vm.machine",
    "VMPaths": "zoned.vm.machine", "BootFiles": "zoned.vm.machine",
    "Agent": "zoned.vm.agent", "QMP": "zoned.vm.qmp", "QMPError": "zoned.vm.qmp",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'zoned.vm' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
