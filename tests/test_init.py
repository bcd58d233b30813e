"""Tests for csrc/init.c (zoned-init), run for real as PID 1 of a pid namespace."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "csrc" / "init.c"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for pid namespaces"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler"),
]


@pytest.fixture(scope="session")
def init_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build zoned-init with exactly the Makefile's command (static, stripped)."""
    out = tmp_path_factory.mktemp("init") / "zoned-init"
    r = subprocess.run(
        ["cc", "-static", "-Os", "-s", "-Wall", "-o", str(out), str(SRC)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # warning-free, including static-link warnings
    return str(out)


def in_pidns(init_bin: str, script: str) -> list[str]:
    return ["unshare", "--pid", "--fork", "--mount-proc", init_bin, "--", "sh", "-c", script]


def run(init_bin: str, script: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        in_pidns(init_bin, script), capture_output=True, text=True, timeout=timeout
    )


def test_binary_is_static(init_bin: str) -> None:
    with open(init_bin, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # ELF64
    # A dynamically linked binary has a PT_INTERP program header naming its
    # loader (ld-linux); a static one must run in an image without libc.
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    PT_INTERP = 3
    assert types and PT_INTERP not in types


def test_runs_as_pid1_and_child_is_pid2(init_bin: str) -> None:
    r = run(init_bin, 'echo $$; cat /proc/1/comm')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "zoned-init"]


def test_without_double_dash(init_bin: str) -> None:
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", init_bin, "sh", "-c", "exit 3"],
        timeout=10,
    )
    assert r.returncode == 3


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_status_passes_through(init_bin: str, code: int) -> None:
    assert run(init_bin, f"exit {code}").returncode == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR1, signal.SIGSEGV])
def test_killed_by_signal_gives_128_plus_n(init_bin: str, sig: signal.Signals) -> None:
    r = run(init_bin, f"kill -{int(sig)} $$")
    assert r.returncode == 128 + int(sig)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.parametrize(
    "sig,code",
    [(signal.SIGTERM, 42), (signal.SIGINT, 43), (signal.SIGHUP, 44), (signal.SIGUSR2, 45)],
)
def test_signal_to_init_is_forwarded(init_bin: str, sig: signal.Signals, code: int) -> None:
    name = sig.name[3:]
    script = f'trap "exit {code}" {name}; echo ready; while :; do sleep 0.1; done'
    p = subprocess.Popen(in_pidns(init_bin, script), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"  # the trap is installed
        (init_pid,) = _children(p.pid)  # unshare's child is our init (PID 1 inside)
        with open(f"/proc/{init_pid}/comm") as f:
            assert f.read().strip() == "zoned-init"
        os.kill(init_pid, sig)
        assert p.wait(timeout=10) == code
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_uncaught_sigterm_kills_child(init_bin: str) -> None:
    # Without a trap the child dies of SIGTERM and init reports 128+15.
    p = subprocess.Popen(
        in_pidns(init_bin, "echo ready; exec sleep 60"), stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline() == "ready\n"
        (init_pid,) = _children(p.pid)
        # Wait for the exec so the signal hits sleep, not the shell.
        deadline = time.monotonic() + 5
        while True:
            (child,) = _children(init_pid)
            with open(f"/proc/{child}/comm") as f:
                if f.read().strip() == "sleep":
                    break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(init_pid, signal.SIGTERM)
        assert p.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _proc_snapshot(block: str) -> dict[int, dict[str, str]]:
    """Parse `grep -H ... /proc/[0-9]*/status` output into {pid: {field: value}}."""
    procs: dict[int, dict[str, str]] = {}
    for line in block.splitlines():
        path, _, rest = line.partition(":")
        key, _, value = rest.partition(":")
        pid = int(path.split("/")[2])
        procs.setdefault(pid, {})[key] = value.strip()
    return procs


def test_orphans_are_reaped(init_bin: str) -> None:
    status = 'grep -H -e "^Name" -e "^State" -e "^PPid" /proc/[0-9]*/status'
    # `( ... &)` returns only after the subshell exited, so its sleep is
    # already an orphan at the first snapshot.
    script = f"(sleep 1 &); {status}; echo ---; sleep 2; {status}"
    r = run(init_bin, script)
    assert r.returncode == 0, r.stderr
    before, after = (_proc_snapshot(b) for b in r.stdout.split("---\n"))

    # The subshell exited, so its child (`sleep 1`, maybe not yet exec'd)
    # was reparented to init: only init can reap it.
    orphans = [pid for pid, p in before.items() if p["PPid"] == "1" and pid != 2]
    assert len(orphans) == 1, before
    assert orphans[0] not in after

    states = {pid: p["State"] for pid, p in after.items()}
    assert not [s for s in states.values() if s.startswith("Z")], after
    assert set(after) == {1, 2}, after  # only init and the shell remain


def test_many_orphans_are_reaped(init_bin: str) -> None:
    # Several children exiting at once coalesce into fewer SIGCHLDs.
    script = (
        "for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.2 &); done; sleep 1.5; "
        "cat /proc/[0-9]*/stat"
    )
    r = run(init_bin, script)
    assert r.returncode == 0, r.stderr
    states = [line.rsplit(")", 1)[1].split()[0] for line in r.stdout.splitlines()]
    assert "Z" not in states, r.stdout


def test_exec_failure_enoent(init_bin: str) -> None:
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", init_bin, "--", "/nonexistent/cmd"],
        capture_output=True, text=True, timeout=10,
    )
    assert r.returncode == 127
    assert r.stderr == "zoned-init: exec /nonexistent/cmd: No such file or directory\n"


def test_exec_failure_path_lookup(init_bin: str) -> None:
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", init_bin, "no-such-command-zoned"],
        capture_output=True, text=True, timeout=10,
    )
    assert r.returncode == 127
    assert "zoned-init: exec no-such-command-zoned: " in r.stderr


def test_exec_failure_eacces(init_bin: str, tmp_path: Path) -> None:
    script = tmp_path / "notexec"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", init_bin, "--", str(script)],
        capture_output=True, text=True, timeout=10,
    )
    assert r.returncode == 126
    assert r.stderr == f"zoned-init: exec {script}: Permission denied\n"


def test_usage(init_bin: str) -> None:
    r = subprocess.run([init_bin], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: zoned-init")


def test_works_as_subreaper_outside_pidns(init_bin: str) -> None:
    # Not PID 1: it sets PR_SET_CHILD_SUBREAPER, so a grandchild whose
    # parent exits is adopted by zoned-init rather than by host PID 1.
    code = (
        "import os,time\n"
        "pid=os.fork()\n"
        "if pid==0:\n"
        "    if os.fork()==0:\n"
        "        time.sleep(1); os._exit(0)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid,0)\n"
        "me=os.getppid()\n"
        "kids=open(f'/proc/{me}/task/{me}/children').read().split()\n"
        "print(len(kids))\n"
    )
    py = shutil.which("python3") or "/usr/bin/python3"
    r = subprocess.run([init_bin, py, "-c", code], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"  # this python and the adopted grandchild


def test_child_is_foreground_process_group_on_a_tty(init_bin: str) -> None:
    master, slave = os.openpty()

    def make_ctty() -> None:
        # Runs in the forked child after setsid (start_new_session=True).
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        p = subprocess.Popen(
            in_pidns(init_bin, "cat /proc/self/stat"),
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=make_ctty, pass_fds=(),
        )
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        fields = out.decode().rsplit(")", 1)[1].split()
        pgrp, tpgid = int(fields[2]), int(fields[5])
        assert pgrp != 1  # not init's group: the child has its own
        assert tpgid == pgrp  # and it is the terminal's foreground group
    finally:
        os.close(master)
        os.close(slave)
