"""Terminal plumbing for ``zoned run -t`` and the OCI ``--console-socket``.

The pieces, in the order a runtime uses them:

* :func:`open_pty` creates a pseudo-terminal master; :func:`open_slave`
  opens its peer without a path lookup.
* :func:`make_controlling_tty` runs in the container child: new session,
  the slave becomes its controlling terminal and its stdin/stdout/stderr.
* On the host, :class:`RawMode` puts the user's terminal in raw mode so
  keystrokes (^C, ^Z, arrows) go to the container's line discipline
  instead of being interpreted twice, and :func:`proxy` copies bytes
  between the host's stdio and the pty master, forwarding window size.
* :func:`send_fd` / :func:`recv_fd` implement runc's console-socket
  protocol, so a caller (containerd, conmon, ``recvtty``) can own the
  master instead of us.

Stdlib only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import struct
import termios
import threading
import tty

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType



__all__ = [
    "open_pty",
    "open_slave",
    "pty_number",
    "get_size",
    "set_size",
    "RawMode",
    "proxy",
    "send_fd",
    "recv_fd",
    "recv_fd_named",
    "make_controlling_tty",
]

# Linux ioctl numbers (asm-generic/ioctls.h, same on x86_64 and arm64) that
# the termios module does not export.
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): pty number
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): (un)lock the slave
TIOCGPTPEER = 0x5441  # _IO('T', 0x41): open the slave from the master (4.13+)

_WINSIZE = struct.Struct("HHHH")  # struct winsize: rows, cols, xpixel, ypixel
_INT = struct.Struct("i")

# runc's utils.MaxNameLen: the receiver's buffer for the name payload.
MAX_NAME_LEN = 4096


# --------------------------------------------------------------------------
# Creating ptys


def open_pty() -> tuple[int, str]:
    """Create a pty; return ``(master_fd, slave_path)``.

    We open ``/dev/ptmx`` ourselves (what ``posix_openpt`` + ``unlockpt`` +
    ``ptsname`` do in C; Python only grows those in 3.13) rather than use
    :func:`os.openpty`, because openpty also opens the slave *by path* in
    our own mount namespace.  Holding just the master lets the slave be
    opened later from the master itself (:func:`open_slave`), e.g. after
    the child has entered its namespaces.  ``O_NOCTTY`` keeps the master
    from becoming *our* controlling terminal; ``O_CLOEXEC`` keeps it out
    of the container.

    Which devpts instance the pty lives in depends on the ``/dev/ptmx``
    this process sees: the slave path is only meaningful where that
    instance is mounted at ``/dev/pts``.
    """
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, _INT.pack(0))  # unlockpt()
        return master, f"/dev/pts/{pty_number(master)}"
    except BaseException:
        os.close(master)
        raise


def pty_number(master_fd: int) -> int:
    """The N of ``/dev/pts/N`` for a pty master (ptsname without the path)."""
    buf = fcntl.ioctl(master_fd, TIOCGPTN, _INT.pack(0))
    return _INT.unpack(buf)[0]


def bind_console(slave_fd: int) -> None:
    """Make a zone's /dev/console the pty `slave_fd` (its init, after pivot_root): bound by
    fd (a clone of the slave's own mount), so no path of the rootfs's decides what is
    bound, onto a file of its /dev opened without following any symlink (made if
    missing). A /dev/console that is a symlink is refused: following it as root made or
    covered a file of the rootfs's choosing (runc's CVE-2025-52565)."""
    from zoned.linux import syscalls as sc

    no_links = sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS
    leaf = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    dev = sc.openat2(sc.AT_FDCWD, "/dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                     no_links)
    try:
        try:
            target = sc.openat2(dev, "console", leaf, 0, sc.RESOLVE_BENEATH | no_links)
        except FileNotFoundError:
            os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600, dir_fd=dev))
            target = sc.openat2(dev, "console", leaf, 0, sc.RESOLVE_BENEATH | no_links)
        try:
            if stat.S_ISLNK(os.fstat(target).st_mode):
                raise OSError(errno.ELOOP, "a symbolic link in the rootfs", "/dev/console")
            tree = sc.open_tree("", sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC |
                                sc.AT_EMPTY_PATH, dirfd=slave_fd)
            try:
                sc.move_mount_to_fd(tree, target)
            finally:
                os.close(tree)
        finally:
            os.close(target)
    finally:
        os.close(dev)


def open_slave(master_fd: int, flags: int = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC) -> int:
    """Open the slave of ``master_fd`` without resolving any path.

    TIOCGPTPEER (the race-free ``open(ptsname())`` runc uses) works across
    mount namespaces and cannot be tricked by a container-controlled
    ``/dev/pts``.  The returned fd is close-on-exec by default; dup2 it to
    0/1/2 (see :func:`make_controlling_tty`) to hand it to a program.
    """
    return fcntl.ioctl(master_fd, TIOCGPTPEER, flags)


# --------------------------------------------------------------------------
# Window size


def get_size(fd: int) -> tuple[int, int]:
    """Return ``(rows, cols)`` of the terminal ``fd`` (either pty end)."""
    rows, cols, _, _ = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSIZE.size)))
    return rows, cols


def set_size(fd: int, rows: int, cols: int) -> None:
    """Set the window size of ``fd``.

    On a pty master this is how the container learns the size: the kernel
    stores it and sends SIGWINCH to the slave's foreground process group.
    """
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))


def _copy_size(src_fd: int, dst_fd: int) -> None:
    try:
        rows, cols = get_size(src_fd)
    except OSError:  # src is not a tty (any more): nothing to propagate
        return
    if rows and cols:  # 0x0 means "unknown" (e.g. a fresh pty): keep ours
        set_size(dst_fd, rows, cols)


# --------------------------------------------------------------------------
# Host terminal


class RawMode:
    """Context manager: put a host tty in raw mode, restore it on exit.

    Raw mode is needed because the container's pty has its own line
    discipline: the host's must pass every byte through untouched (no
    echo, no line editing, ^C as a byte rather than SIGINT to zoned).
    A no-op if ``fd`` is not a tty, so ``zoned run -t < file`` works.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved: list | None = None

    @property
    def active(self) -> bool:
        """Whether the terminal is currently switched to raw mode by us."""
        return self._saved is not None

    def __enter__(self) -> RawMode:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            # TCSANOW, not tty's default TCSAFLUSH: don't drop type-ahead.
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            # TCSADRAIN: let already-written output finish in raw mode.
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)


# --------------------------------------------------------------------------
# Copying


_CHUNK = 65536


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Blocking write of all of ``data``, even if ``fd`` is O_NONBLOCK."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def proxy(
    master_fd: int,
    stdin_fd: int | None = 0,
    stdout_fd: int = 1,
    *,
    done: Callable[[], bool] | None = None,
    resize_from: int | None = None,
) -> None:
    """Copy ``stdin_fd`` -> pty master -> ``stdout_fd`` until the container is gone.

    Returns when reading the master gives EIO/EOF (every slave fd is
    closed: the container and everything it started exited) or, checked
    every 100 ms, when ``done()`` is true.  ``done`` exists because a
    daemonised process in the container, or a slave fd leaked into the
    runtime, keeps the slave open forever; pass e.g. "the main process has
    been reaped".  Either way output already written by the container is
    drained to ``stdout_fd`` before returning.

    EOF on stdin just stops reading it (nothing is sent to the master: in a
    raw-mode pty the container sees EOF only if the user types ^D).  Pass
    ``stdin_fd=None`` to not read input at all.

    With ``resize_from`` (the host tty fd), its window size is copied to
    the pty now and on every SIGWINCH.  The handler is installed only for
    the duration of the call, and only from the main thread (Python's
    rule); elsewhere just the initial size is copied.

    The master is switched to O_NONBLOCK while proxying (so a container
    that stops reading input can't wedge output) and restored afterwards.
    If ``stdout_fd`` breaks (EPIPE), output is discarded but still read so
    the container does not block on a full pty.
    """
    wake_r = wake_w = -1
    old_handler: object = None
    if resize_from is not None:
        _copy_size(resize_from, master_fd)
        if threading.current_thread() is threading.main_thread():
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

            def on_winch(signum: int, frame: object) -> None:
                try:
                    os.write(wake_w, b"\0")  # self-pipe: wakes up poll()
                except OSError:  # pipe full: a wakeup is already pending
                    pass

            old_handler = signal.signal(signal.SIGWINCH, on_winch)

    old_flags = fcntl.fcntl(master_fd, fcntl.F_GETFL)
    fcntl.fcntl(master_fd, fcntl.F_SETFL, old_flags | os.O_NONBLOCK)
    try:
        _Proxy(master_fd, stdin_fd, stdout_fd, done, resize_from, wake_r).run()
    finally:
        fcntl.fcntl(master_fd, fcntl.F_SETFL, old_flags)
        if wake_r >= 0:
            # Restore before closing the pipe: a late SIGWINCH then runs
            # the old handler, never ours on a closed fd.
            signal.signal(signal.SIGWINCH, old_handler if old_handler is not None else signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)


class _Proxy:
    """The poll loop behind :func:`proxy` (state kept off the call stack)."""

    def __init__(
        self,
        master: int,
        stdin: int | None,
        stdout: int,
        done: Callable[[], bool] | None,
        resize_from: int | None,
        wake: int,
    ) -> None:
        self.master, self.stdin, self.stdout = master, stdin, stdout
        self.done, self.resize_from, self.wake = done, resize_from, wake
        self.pending = bytearray()  # input read from stdin, not yet in the pty
        self.stdout_ok = True
        self.poller = select.poll()
        self.stdin_polled = False

    def run(self) -> None:
        self.poller.register(self.master, select.POLLIN)
        if self.stdin is not None:
            self._poll_stdin(True)
        if self.wake >= 0:
            self.poller.register(self.wake, select.POLLIN)
        timeout = 100 if self.done is not None else None
        while True:
            if self.done is not None and self.done():
                self._drain()
                return
            for fd, ev in self.poller.poll(timeout):
                if fd == self.master:
                    if ev & select.POLLOUT:
                        self._flush_input()
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        if self._read_master() is False:
                            return
                elif fd == self.stdin:
                    self._read_stdin()
                elif fd == self.wake:
                    try:
                        os.read(self.wake, 512)
                    except BlockingIOError:
                        pass
                    assert self.resize_from is not None
                    _copy_size(self.resize_from, self.master)

    def _poll_stdin(self, on: bool) -> None:
        if on and not self.stdin_polled:
            self.poller.register(self.stdin, select.POLLIN)
        elif not on and self.stdin_polled:
            self.poller.unregister(self.stdin)
        self.stdin_polled = on

    def _set_master_events(self) -> None:
        events = select.POLLIN | (select.POLLOUT if self.pending else 0)
        self.poller.modify(self.master, events)

    def _read_master(self) -> bool | None:
        """Copy one chunk of output.

        True: copied some; None: nothing right now; False: the slave side
        is gone (EIO on Linux once the last slave fd is closed).
        """
        try:
            data = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EIO:
                return False
            raise
        if not data:
            return False
        self._output(data)
        return True

    def _drain(self) -> None:
        # A non-blocking read of a pty master first flushes the kernel's
        # pending flip-buffer work, so EAGAIN here really means "empty".
        while self._read_master():
            pass

    def _output(self, data: bytes) -> None:
        if not self.stdout_ok:
            return
        try:
            _write_all(self.stdout, data)
        except BrokenPipeError:
            self.stdout_ok = False

    def _read_stdin(self) -> None:
        assert self.stdin is not None
        try:
            data = os.read(self.stdin, _CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: host tty hung up, same as EOF
                raise
            data = b""
        if not data:
            self._poll_stdin(False)
            self.stdin = None
            return
        self.pending += data
        if len(self.pending) >= _CHUNK:  # back-pressure: stop reading input
            self._poll_stdin(False)
        self._set_master_events()

    def _flush_input(self) -> None:
        try:
            n = os.write(self.master, self.pending)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            n = len(self.pending)  # slave gone: the read side will notice
        del self.pending[:n]
        if self.stdin is not None and len(self.pending) < _CHUNK:
            self._poll_stdin(True)
        self._set_master_events()


# --------------------------------------------------------------------------
# OCI console socket (runc's utils.SendFd / RecvFd)


def connect_unix(sock_path: str) -> socket.socket:
    """Connect to a unix socket, even past sun_path's 108-byte limit."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if len(os.fsencode(sock_path)) < 108:
            sock.connect(sock_path)
        else:
            # Go through a directory fd: /proc/self/fd/N/name is short.
            head, tail = os.path.split(sock_path)
            dirfd = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dirfd}/{tail}")
            finally:
                os.close(dirfd)
        return sock
    except BaseException:
        sock.close()
        raise


def _fd_name(fd: int) -> str:
    """What to send as the name: the slave path for a pty master, else /proc's link."""
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode):
        try:
            return f"/dev/pts/{pty_number(fd)}"
        except OSError:
            pass
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd:{fd}"


def send_fd(sock_path: str | socket.socket, fd: int, *, name: str | None = None) -> None:
    """Send ``fd`` to the console socket listening at ``sock_path``.

    Wire format as runc: one SOCK_STREAM message whose payload is a name
    (< 4096 bytes) and whose SCM_RIGHTS ancillary data carries exactly one
    fd.  The payload must be non-empty anyway (a zero-byte stream message
    carries no ancillary data).  The name defaults to the pty's slave path
    (``/dev/pts/N``); runc itself sends the master's name (``/dev/ptmx``)
    and receivers such as containerd ignore it.

    ``sock_path`` may also be an already connected socket (e.g. one end of
    a socketpair to hand a pty opened inside the container to the parent);
    it is left open.
    """
    if name is None:
        name = _fd_name(fd)
    payload = name.encode()
    if not payload or len(payload) >= MAX_NAME_LEN:
        raise ValueError(f"send_fd: bad name length {len(payload)}")
    if isinstance(sock_path, socket.socket):
        socket.send_fds(sock_path, [payload], [fd])
        return
    with connect_unix(sock_path) as sock:
        socket.send_fds(sock, [payload], [fd])


def recv_fd_named(conn: socket.socket) -> tuple[int, str]:
    """Receive one fd sent by :func:`send_fd` (or runc); return ``(fd, name)``.

    The fd is received close-on-exec (MSG_CMSG_CLOEXEC) so it cannot leak
    into a process spawned meanwhile.  (We call recvmsg directly because
    Python 3.11's socket.recv_fds silently drops its ``flags`` argument.)
    """
    fd_size = _INT.size
    msg, ancdata, flags, _ = conn.recvmsg(
        MAX_NAME_LEN, socket.CMSG_LEN(fd_size), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fd_size
            fds += [_INT.unpack_from(data, i)[0] for i in range(0, usable, fd_size)]
    if flags & socket.MSG_CTRUNC or len(fds) != 1:
        # With MSG_CTRUNC the kernel already closed the fds that did not
        # fit (the peer sent more than one); close the ones that did.
        for fd in fds:
            os.close(fd)
        if not msg and not fds and not flags & socket.MSG_CTRUNC:
            raise EOFError("recv_fd: peer closed the connection")
        raise OSError(errno.EPROTO, f"recv_fd: expected exactly 1 fd (got {len(fds)}, flags {flags:#x})")
    return fds[0], msg.decode(errors="replace")


def recv_fd(conn: socket.socket) -> int:
    """Receive one fd sent over a console socket (see :func:`recv_fd_named`)."""
    return recv_fd_named(conn)[0]


# --------------------------------------------------------------------------
# Container side


def make_controlling_tty(slave_fd: int, *, close: bool = True) -> None:
    """Make ``slave_fd`` the caller's controlling tty and its fds 0, 1, 2.

    Call it in the container child after fork, before exec.  A process can
    only acquire a controlling terminal as a session leader without one, so
    this starts a new session first (EPERM from setsid means we already are
    a session/group leader; TIOCSCTTY then reports if that is not enough).
    The slave is closed afterwards when ``close`` and it is not 0-2.
    """
    try:
        os.setsid()
    except PermissionError:
        pass
    fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        if slave_fd != target:
            os.dup2(slave_fd, target)  # dup2 fds are inheritable
        else:
            os.set_inheritable(target, True)
    if close and slave_fd > 2:
        os.close(slave_fd)
