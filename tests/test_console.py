"""Tests for zoned.console with real ptys, processes and sockets (no mocks)."""

from __future__ import annotations

import os
import select
import signal
import socket
import termios
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from zoned import console


# ---------------------------------------------------------------- helpers


class Collector:
    """Reads a pipe in a thread so proxy()'s writes to it never block."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.data = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.r, 65536):
            with self.lock:
                self.data += chunk
        os.close(self.r)

    def text(self) -> str:
        with self.lock:
            return self.data.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in output {self.text()!r}")
            time.sleep(0.01)

    def finish(self) -> str:
        """Close the write end and return everything written."""
        os.close(self.w)
        self.thread.join(10)
        return self.text()


def spawn_on_pty(slave_fd: int, master_fd: int, argv: list[str]) -> int:
    """Fork a child whose controlling tty and stdio are the pty slave."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(master_fd)
            console.make_controlling_tty(slave_fd)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def deadline_done(seconds: float, also: Callable[[], bool] | None = None) -> Callable[[], bool]:
    """A done() that also stops a hung proxy() so the test fails instead of hanging."""
    end = time.monotonic() + seconds

    def done() -> bool:
        if time.monotonic() > end:
            raise AssertionError("proxy() did not finish in time")
        return also() if also is not None else False

    return done


def wait_exit(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def wait_size(fd: int, size: tuple[int, int], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while console.get_size(fd) != size:
        if time.monotonic() > end:
            raise AssertionError(f"size {console.get_size(fd)} != {size}")
        time.sleep(0.01)


@pytest.fixture
def pty_pair():
    master, path = console.open_pty()
    slave = console.open_slave(master)
    yield master, slave, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


# ---------------------------------------------------------------- ptys


def test_open_pty(pty_pair) -> None:
    master, slave, path = pty_pair
    assert path.startswith("/dev/pts/")
    assert path == f"/dev/pts/{console.pty_number(master)}"
    assert os.ttyname(slave) == path
    assert not os.get_inheritable(master)  # O_CLOEXEC
    assert os.path.samestat(os.stat(path), os.fstat(slave))
    # The path opens the same pty (i.e. it was unlocked).
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(master, b"ping\n")
        assert os.read(fd, 100) == b"ping\n"
    finally:
        os.close(fd)


def test_size_roundtrip(pty_pair) -> None:
    master, slave, _ = pty_pair
    console.set_size(master, 30, 100)
    assert console.get_size(master) == (30, 100)
    assert console.get_size(slave) == (30, 100)  # one size per pty
    console.set_size(slave, 24, 80)
    assert console.get_size(master) == (24, 80)


def test_get_size_not_a_tty() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            console.get_size(r)
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------- proxy


def test_proxy_shell_session() -> None:
    master, path = console.open_pty()
    slave = console.open_slave(master)
    console.set_size(master, 30, 100)
    pid = spawn_on_pty(
        slave, master, ["/bin/sh", "-c", "tty; stty size; echo hi; read x; echo got:$x"]
    )
    os.close(slave)  # else the master never reports EIO
    in_r, in_w = os.pipe()
    os.write(in_w, b"abc\n")
    os.close(in_w)  # stdin EOF right away must not end the session
    out = Collector()
    try:
        console.proxy(master, in_r, out.w, done=deadline_done(20))
    finally:
        os.close(in_r)
        os.close(master)
    text = out.finish()
    assert wait_exit(pid) == 0
    assert f"{path}\r\n" in text  # tty: the slave is the controlling tty
    assert "30 100\r\n" in text
    assert "hi\r\n" in text
    assert "got:abc\r\n" in text


def test_proxy_controlling_tty_and_session() -> None:
    master, path = console.open_pty()
    slave = console.open_slave(master)
    rdev = os.fstat(slave).st_rdev
    # /proc/self/stat: pid (comm) state ppid pgrp session tty_nr ...
    pid = spawn_on_pty(slave, master, ["/bin/sh", "-c", "echo $$; cat /proc/$$/stat"])
    os.close(slave)
    out = Collector()
    try:
        console.proxy(master, None, out.w, done=deadline_done(20))
    finally:
        os.close(master)
    text = out.finish()
    assert wait_exit(pid) == 0
    shpid, stat_line = text.split("\r\n")[:2]
    fields = stat_line.rsplit(")", 1)[1].split()
    session, tty_nr = int(fields[3]), int(fields[4])
    assert session == int(shpid) == pid  # new session, led by the child
    assert tty_nr == rdev


def test_proxy_drains_output_when_done(pty_pair) -> None:
    # The test keeps a slave fd open (like a leaked fd or a daemon in the
    # container), so EIO never comes: done() ends the proxy and the output
    # still buffered in the pty must be drained, not lost.
    master, slave, _ = pty_pair
    child_slave = os.dup(slave)
    n = 200_000
    pid = spawn_on_pty(child_slave, master, ["/bin/sh", "-c", f"head -c {n} /dev/zero | tr '\\0' x; echo END"])
    os.close(child_slave)
    status: list[int] = []

    def child_exited() -> bool:
        if not status:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status.append(os.waitstatus_to_exitcode(st))
        return bool(status)

    out = Collector()
    console.proxy(master, None, out.w, done=deadline_done(20, child_exited))
    text = out.finish()
    assert status == [0]
    assert text.count("x") == n
    assert text.endswith("END\r\n")
    # proxy() restored the master's blocking mode.
    assert os.get_blocking(master)


def test_proxy_stdin_not_read_by_child_does_not_block_output(pty_pair) -> None:
    # A lot of input the child never reads must not wedge output.
    master, slave, _ = pty_pair
    child_slave = os.dup(slave)
    os.close(slave)
    pid = spawn_on_pty(child_slave, master, ["/bin/sh", "-c", "sleep 0.5; echo done-sleeping"])
    os.close(child_slave)
    in_r, in_w = os.pipe()
    feeder = threading.Thread(target=lambda: _feed(in_w, 1 << 20), daemon=True)
    feeder.start()
    out = Collector()
    try:
        console.proxy(master, in_r, out.w, done=deadline_done(20))
    finally:
        os.close(in_r)
    text = out.finish()
    assert wait_exit(pid) == 0
    assert "done-sleeping" in text


def _feed(fd: int, n: int) -> None:
    try:
        os.write(fd, b"y" * n)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_proxy_forwards_window_size() -> None:
    host_master, _ = console.open_pty()  # stands in for the user's terminal
    host_tty = console.open_slave(host_master)
    console.set_size(host_tty, 40, 120)

    master, _ = console.open_pty()
    slave = console.open_slave(master)
    console.set_size(master, 10, 10)
    # The shell waits for a line before each `stty size`, so it only looks
    # once the proxy has applied the size.
    pid = spawn_on_pty(
        slave, master, ["/bin/sh", "-c", "read x; stty size; read x; stty size"]
    )
    os.close(slave)
    in_r, in_w = os.pipe()
    out = Collector()
    before = signal.getsignal(signal.SIGWINCH)

    def resize_later() -> None:
        wait_size(master, (40, 120))  # copied at the start of proxy()
        os.write(in_w, b"\n")
        out.wait_for("40 120\r\n")
        console.set_size(host_tty, 50, 132)
        os.kill(os.getpid(), signal.SIGWINCH)  # what the host kernel would do
        wait_size(master, (50, 132))
        os.write(in_w, b"\n")

    t = threading.Thread(target=resize_later, daemon=True)
    t.start()
    try:
        console.proxy(master, in_r, out.w, done=deadline_done(20), resize_from=host_tty)
    finally:
        t.join(10)
        for fd in (in_r, in_w, master, host_tty, host_master):
            os.close(fd)
    text = out.finish()
    assert wait_exit(pid) == 0
    assert "40 120\r\n" in text  # copied at start, replacing 10x10
    assert "50 132\r\n" in text  # copied on SIGWINCH
    assert signal.getsignal(signal.SIGWINCH) == before  # handler restored


def test_proxy_outside_main_thread_copies_initial_size() -> None:
    host_master, _ = console.open_pty()
    host_tty = console.open_slave(host_master)
    console.set_size(host_tty, 33, 77)
    master, _ = console.open_pty()
    slave = console.open_slave(master)
    pid = spawn_on_pty(slave, master, ["/bin/sh", "-c", "read x; stty size"])
    os.close(slave)
    in_r, in_w = os.pipe()
    out = Collector()
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGWINCH)

    def run() -> None:
        try:
            console.proxy(master, in_r, out.w, done=deadline_done(20), resize_from=host_tty)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    wait_size(master, (33, 77))
    os.write(in_w, b"\n")
    t.join(30)
    for fd in (in_r, in_w, master, host_tty, host_master):
        os.close(fd)
    assert signal.getsignal(signal.SIGWINCH) == before  # not touched
    assert not errors
    assert wait_exit(pid) == 0
    assert "33 77\r\n" in out.finish()


# ---------------------------------------------------------------- RawMode


def test_raw_mode_sets_and_restores(pty_pair) -> None:
    _, host_tty, _ = pty_pair
    original = termios.tcgetattr(host_tty)
    assert original[3] & termios.ICANON and original[3] & termios.ECHO
    with console.RawMode(host_tty) as rm:
        assert rm.active
        raw = termios.tcgetattr(host_tty)
        assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert not raw[1] & termios.OPOST
        assert raw[6][termios.VMIN] == 1
    assert not rm.active
    assert termios.tcgetattr(host_tty) == original


def test_raw_mode_restores_on_exception(pty_pair) -> None:
    _, host_tty, _ = pty_pair
    original = termios.tcgetattr(host_tty)
    with pytest.raises(RuntimeError):
        with console.RawMode(host_tty):
            raise RuntimeError("boom")
    assert termios.tcgetattr(host_tty) == original


def test_raw_mode_noop_on_non_tty() -> None:
    r, w = os.pipe()
    try:
        with console.RawMode(r) as rm:
            assert not rm.active
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------- console socket


def _listen(path: str) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv


def test_send_recv_fd_roundtrip(tmp_path: Path, pty_pair) -> None:
    master, slave, path = pty_pair
    sock_path = str(tmp_path / "console.sock")
    with _listen(sock_path) as srv:
        console.send_fd(sock_path, master)  # connect + send is buffered
        conn, _ = srv.accept()
        with conn:
            got, name = console.recv_fd_named(conn)
    try:
        assert name == path  # runc-style payload: the pty's name
        assert got != master
        assert not os.get_inheritable(got)  # received close-on-exec
        assert os.path.samestat(os.fstat(got), os.fstat(master))
        os.write(got, b"hello\n")  # the received master drives the slave
        assert os.read(slave, 100) == b"hello\n"
        os.write(slave, b"back\n")
        out = b""
        while not out.endswith(b"back\r\n"):
            out += os.read(got, 100)
        assert out == b"hello\r\nback\r\n"  # the echo, then the slave's write
    finally:
        os.close(got)


def test_send_fd_custom_name_and_recv_fd(tmp_path: Path, pty_pair) -> None:
    master, slave, _ = pty_pair
    sock_path = str(tmp_path / "c.sock")
    with _listen(sock_path) as srv:
        console.send_fd(sock_path, master, name="/dev/ptmx")  # what runc sends
        conn, _ = srv.accept()
        with conn:
            got = console.recv_fd(conn)
    try:
        os.write(got, b"x\n")
        assert os.read(slave, 10) == b"x\n"
    finally:
        os.close(got)


def test_send_fd_long_socket_path(tmp_path: Path, pty_pair) -> None:
    master, slave, _ = pty_pair
    d = tmp_path / ("d" * 100)
    d.mkdir()
    sock_path = str(d / "console.sock")
    assert len(sock_path) > 108
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dirfd = os.open(d, os.O_PATH)
    try:
        srv.bind(f"/proc/self/fd/{dirfd}/console.sock")
        srv.listen(1)
        console.send_fd(sock_path, master)
        conn, _ = srv.accept()
        with conn:
            got = console.recv_fd(conn)
        os.close(got)
    finally:
        os.close(dirfd)
        srv.close()


def test_send_fd_over_connected_socket(pty_pair) -> None:
    master, slave, path = pty_pair
    a, b = socket.socketpair()
    with a, b:
        console.send_fd(a, master)
        got, name = console.recv_fd_named(b)
        a.send(b"still open")  # send_fd left the socket alone
        assert b.recv(100) == b"still open"
    try:
        assert name == path
        os.write(got, b"y\n")
        assert os.read(slave, 10) == b"y\n"
    finally:
        os.close(got)


def test_recv_fd_peer_closed() -> None:
    a, b = socket.socketpair()
    b.close()
    with a, pytest.raises(EOFError):
        console.recv_fd(a)


def test_recv_fd_rejects_extra_fds() -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        socket.send_fds(b, [b"x"], [r, w])
        with pytest.raises(OSError):
            console.recv_fd(a)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


# ---------------------------------------------------------------- container side


def test_make_controlling_tty_when_already_session_leader(pty_pair) -> None:
    master, slave, path = pty_pair
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()  # the caller may have done it already: EPERM ignored
            console.make_controlling_tty(slave, close=False)
            ok = (
                os.ttyname(0) == os.ttyname(1) == os.ttyname(2) == path
                and os.tcgetpgrp(0) == os.getpid()
                and os.getsid(0) == os.getpid()
            )
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 10)
        assert ready and os.read(r, 10) == b"ok"
    finally:
        os.close(r)
    assert wait_exit(pid) == 0
