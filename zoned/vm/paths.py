"""The files of one VM in its directory, by name (zoned.vm.machine makes and removes them)."""
from __future__ import annotations

import os
from dataclasses import dataclass

_FILES = {"qmp": "qmp.sock", "agent": "agent.sock", "ctl": "ctl", "console": "console.log",
          "old_console": "console.log.1", "log": "qemu.log", "pid": "qemu.pid",
          "initrd": "initrd", "accel": "accel", "end": "qemu.end"}


@dataclass(frozen=True)
class VMPaths:
    """The files of one VM in its directory (all of them made by zoned.vm.machine.launch,
    removed by its destroy)."""

    vmdir: str

    def _file(self, key: str) -> str:
        return os.path.join(self.vmdir, _FILES[key])

    qmp = property(lambda self: self._file("qmp"))  # QMP socket
    agent = property(lambda self: self._file("agent"))  # the guest agent's socket
    ctl = property(lambda self: self._file("ctl"))  # the guest's ready/exit/error lines
    console = property(lambda self: self._file("console"))  # guest kernel console
    old_console = property(lambda self: self._file("old_console"))  # its first part
    log = property(lambda self: self._file("log"))  # QEMU's own stderr
    pid = property(lambda self: self._file("pid"))
    initrd = property(lambda self: self._file("initrd"))
    accel = property(lambda self: self._file("accel"))  # which accelerator, and why
    end = property(lambda self: self._file("end"))  # how QEMU ended (zoned-vmwrap)

    def all(self) -> list[str]:
        return [self._file(k) for k in _FILES]
