"""zoned-vmlog (csrc/vmlog.c, zoned.vm.vmlog): a VM's console and ctl files stay bounded
whatever the guest writes, and a status read after QEMU's exit sees the guest's last line.
Real pipes, files and processes; no QEMU (test_vm_boot.py floods a real guest's console)."""
from __future__ import annotations

import os
import time

import pytest
from conftest import process_alive

from zoned.vm import machine, vmlog

if not os.access(vmlog.VMLOG, os.X_OK):
    pytest.skip("zoned-vmlog is not built: run `make setup`", allow_module_level=True)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not process_alive(pid)


def test_a_flood_keeps_both_files_bounded_with_their_ends(tmp_path, monkeypatch):
    """30 MB to each port: console.log rotates once per limit and keeps the newest, ctl
    is cut back to its first lines ("ready") and keeps its newest ("exit 7"); the exit
    code is there the moment the writers have closed (the lock on ctl), with no wait in
    the test; the writer exits at EOF."""
    monkeypatch.setenv("ZONED_VM_CONSOLE_MAX", "1m")
    vmdir = str(tmp_path)
    log = vmlog.spawn(vmdir)
    junk = (b"x" * 99 + b"\n") * 10_000
    try:
        os.write(log.ctl_fd, b"ready\n")
        for _ in range(30):
            os.write(log.console_fd, junk)
            os.write(log.ctl_fd, junk)
        os.write(log.console_fd, b"last console line\n")
        os.write(log.ctl_fd, b"exit 7\n")
    finally:
        os.close(log.console_fd)
        os.close(log.ctl_fd)
    assert machine.exit_status(vmdir) == 7  # no QEMU pid: settles on the writer's lock
    paths = machine.VMPaths(vmdir)
    assert os.path.getsize(paths.console) <= 1 << 20
    assert os.path.getsize(paths.old_console) <= 1 << 20
    assert os.path.getsize(paths.ctl) <= vmlog.CTL_MAX
    with open(paths.console, "rb") as f:
        assert f.read().endswith(b"last console line\n")
    lines = machine.read_ctl(vmdir)
    assert lines[0] == "ready" and lines[-1] == "exit 7"
    assert sorted(os.listdir(vmdir)) == ["console.log", "console.log.1", "ctl"]
    assert _gone(log.pid)


def test_one_read_larger_than_the_limits_keeps_its_end(tmp_path, monkeypatch):
    monkeypatch.setenv("ZONED_VM_CONSOLE_MAX", "8k")
    vmdir = str(tmp_path)
    log = vmlog.spawn(vmdir)
    try:
        os.write(log.ctl_fd, b"ready\n" + b"y" * 60_000 + b"\nexit 9\n")
        os.write(log.console_fd, b"z" * 60_000 + b"\nend\n")
    finally:
        os.close(log.console_fd)
        os.close(log.ctl_fd)
    assert machine.exit_status(vmdir) == 9
    paths = machine.VMPaths(vmdir)
    with open(paths.console, "rb") as f:
        data = f.read()
    assert len(data) <= 8 << 10 and data.endswith(b"\nend\n")


def test_the_status_waits_for_the_writer_only_once_qemu_is_gone(tmp_path):
    """While the writer holds ctl (QEMU running, or its last words on their way), a
    status read after QEMU's exit waits for it; with no writer left it does not wait."""
    vmdir = str(tmp_path)
    log = vmlog.spawn(vmdir)
    ctl = machine.VMPaths(vmdir).ctl
    t = time.monotonic()
    assert vmlog.settle(ctl, timeout=0.2) is False  # a writer still holds the pipes
    assert time.monotonic() - t >= 0.2
    os.close(log.console_fd)
    os.close(log.ctl_fd)
    assert vmlog.settle(ctl, timeout=5) is True
    assert _gone(log.pid)
    assert machine.exit_status(vmdir) is None  # the guest said nothing: no status


def test_the_writer_holds_no_fd_of_its_caller(tmp_path):
    """A pipe end leaked into zoned-vmlog from its caller would keep it from EOF for good
    (it would then never exit): it keeps only its own fds."""
    r, w = os.pipe()  # inheritable: what a careless caller leaks
    try:
        log = vmlog.spawn(str(tmp_path))
        fds = sorted(int(n) for n in os.listdir(f"/proc/{log.pid}/fd"))
        targets = {os.readlink(f"/proc/{log.pid}/fd/{n}") for n in fds}
        assert f"pipe:[{os.fstat(w).st_ino}]" not in targets
        assert len(fds) <= 7, targets  # 0-2, the ctl pipe, the dir, console.log, ctl
        os.close(log.console_fd)
        os.close(log.ctl_fd)
        assert _gone(log.pid)
    finally:
        os.close(r)
        os.close(w)


def test_a_symlink_planted_for_its_files_is_not_followed(tmp_path):
    """console.log or ctl a symlink (to a host file) makes the start fail; the target is
    untouched. (launch removes what is there first; this is the writer's own guard.)"""
    from zoned.errors import ZonedError

    target = tmp_path / "host-file"
    target.write_text("precious\n")
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    (vmdir / "ctl").symlink_to(target)
    with pytest.raises(ZonedError, match="zoned-vmlog for .* did not start"):
        vmlog.spawn(str(vmdir))
    assert target.read_text() == "precious\n"
