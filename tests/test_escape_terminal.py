"""A zone's process run without -t never gets the caller's terminal (found by session 21's
audit): with it, a program left behind by `zoned exec` read what the admin typed at the
shell's next prompt, and one with CAP_SYS_ADMIN pushed input into that shell (TIOCSTI).
runc and conmon give such a process pipes and copy; so does zoned when one of its fds is
a terminal. Each test runs zoned on a real pty, as an admin's shell would."""
from __future__ import annotations

import os
import pty
import select
import time

from conftest import ZONED


def on_pty(argv: list[str], typed: bytes = b"", timeout: float = 60) -> tuple[int, str]:
    """argv with a new pty as its stdin, stdout and stderr; `typed` is typed into it once
    it runs. (exit code, what it wrote to the terminal: read until no one holds the pty
    open, or the timeout.)"""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out, deadline = b"", time.monotonic() + timeout
    try:
        if typed:
            time.sleep(0.5)
            os.write(master, typed)
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: no slave fd is open any more
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(master)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code, out.decode(errors="replace").replace("\r\n", "\n")


PROBE = "for fd in 0 1 2; do readlink /proc/self/fd/$fd; done; [ -t 1 ] && echo TTY; exit 3"


def test_run_without_t_gives_pipes_not_the_terminal(cli):
    code, out = on_pty([ZONED, "--root", cli.root, "run", "--rm", "--", "sh", "-c", PROBE])
    lines = out.split()
    assert code == 3, out
    assert lines[0] == "/dev/null" and all(x.startswith("pipe:[") for x in lines[1:3]), out
    assert "TTY" not in lines


INTERLEAVED = "i=0; while [ $i -lt 200 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"


def test_run_without_t_keeps_the_order_of_stdout_and_stderr_on_one_terminal(cli):
    """Where fds 1 and 2 are the same terminal, the process gets one pipe for both: lines
    reach the terminal in the order it wrote them (two pipes, read in turn, put a run of
    stdout's before stderr's written between), and both go to the terminal; as podman
    without -t on a terminal, and as the process would have written them itself."""
    code, out = on_pty([ZONED, "--root", cli.root, "run", "--rm", "--", "sh", "-c",
                        INTERLEAVED + "; readlink /proc/self/fd/1; readlink /proc/self/fd/2"])
    lines = out.split()
    assert code == 0, out
    assert lines[:400] == [f"{k}{i}" for i in range(200) for k in ("out", "err")], out
    assert lines[400] == lines[401] and lines[400].startswith("pipe:["), lines[400:]
    cli("run", "-d", "--name", "order", "--", "sleep", "1000", check=True)
    try:
        code, out = on_pty([ZONED, "--root", cli.root, "exec", "order", "sh", "-c",
                            INTERLEAVED])
        assert code == 0, out
        assert out.split() == [f"{k}{i}" for i in range(200) for k in ("out", "err")], out
    finally:
        cli("rm", "-f", "order")


def test_exec_without_t_gives_pipes_and_copies_both_ways(cli):
    """stdin too with -i: what is typed reaches the process, its output the terminal."""
    cli("run", "-d", "--name", "term", "--", "sleep", "1000", check=True)
    try:
        code, out = on_pty([ZONED, "--root", cli.root, "exec", "term", "sh", "-c", PROBE])
        assert code == 3 and "TTY" not in out and "/dev/pts" not in out, out
        code, out = on_pty([ZONED, "--root", cli.root, "exec", "-i", "term", "sh", "-c",
                            "readlink /proc/self/fd/0; tr a-z A-Z"], typed=b"hello\n\x04")
        assert code == 0 and "pipe:[" in out and "HELLO" in out, out
    finally:
        cli("rm", "-f", "term")


def test_a_program_left_by_exec_keeps_no_terminal(cli):
    """The audit's thief: a background process started by `zoned exec` from a terminal
    holds only pipes, which end with the exec; the terminal is not among its fds."""
    cli("run", "-d", "--name", "thief", "--", "sleep", "1000", check=True)
    try:
        code, _ = on_pty([ZONED, "--root", cli.root, "exec", "-i", "thief", "sh", "-c",
                          "sleep 300 </dev/null >/dev/null 2>&1 & "
                          "(exec 3<&0 4>&1; sleep 300) & exit 0"])
        assert code == 0
        p = cli("exec", "thief", "sh", "-c",
                "for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null; done", check=True)
        assert "/dev/pts" not in p.stdout and "/dev/tty" not in p.stdout, p.stdout
    finally:
        cli("rm", "-f", "thief")


def test_exec_returns_though_a_child_it_left_keeps_writing(cli):
    """The exec'd process exits while a background child floods the pipe (second audit:
    zoned copied for good): zoned copies what was there and returns with the code."""
    cli("run", "-d", "--name", "flood", "--", "sleep", "1000", check=True)
    try:
        start = time.monotonic()
        code, out = on_pty([ZONED, "--root", cli.root, "exec", "flood", "sh", "-c",
                            "yes & sleep 0.3; exit 4"], timeout=30)
        assert code == 4 and "y\n" in out
        assert time.monotonic() - start < 20
    finally:
        cli("rm", "-f", "flood")
