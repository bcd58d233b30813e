"""Attaching a terminal to a zone with a tty (`run -it`, `run -dt` then `attach`), with
podman's detach keys.

The zone's logger (zoned-logger -P, csrc/logger.c) holds the pty master; a client that
connects to STATEDIR/attach.sock gets a copy of the master and from then on the zone's
output. The client writes its input to the master itself, and sets the window size
there, so the logger only relays output. Typing the detach keys (default ctrl-p,ctrl-q,
`--detach-keys ""` none) leaves the zone running and the client returns.
"""
from __future__ import annotations

import os
import select
import signal
import socket

DEFAULT_KEYS = "ctrl-p,ctrl-q"
_CTRL = "abcdefghijklmnopqrstuvwxyz@[\\]^_"


def parse_keys(spec: str | None) -> bytes:
    """podman's --detach-keys: comma-separated `ctrl-X` (X: a-z, @, [, \\, ], ^, _) or
    single characters; "" for none. ConfigError names the flag."""
    if spec is None:
        spec = DEFAULT_KEYS
    if spec == "":
        return b""
    out = bytearray()
    for part in spec.split(","):
        if len(part) == 1:
            out.append(ord(part))
        elif part.lower().startswith("ctrl-") and len(part) == 6 and \
                part[5].lower() in _CTRL:
            c = part[5].lower()
            out.append(ord(c) - 96 if c.isalpha() else ord(c) - 64)
        else:
            from zoned.errors import ConfigError

            raise ConfigError(f"invalid --detach-keys {spec!r}: expected keys like "
                              f"ctrl-p,ctrl-q (ctrl-a..z, @, [, \\, ], ^, _, or one "
                              f"character each), or \"\" for none")
    return bytes(out)


class KeyWatch:
    """Finds the detach sequence in what the user types; what is not part of it passes on
    (a partial match is held back until it is known not to be the sequence)."""

    def __init__(self, keys: bytes):
        self.keys, self.held = keys, bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes for the zone, whether the sequence was completed)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            if b == self.keys[len(self.held)]:
                self.held.append(b)
                if len(self.held) == len(self.keys):
                    self.held.clear()
                    return bytes(out), True
                continue
            out += self.held
            self.held.clear()
            if b == self.keys[0]:
                self.held.append(b)
                if len(self.keys) == 1:
                    return bytes(out), True
            else:
                out.append(b)
        return bytes(out), False


def connect(state_dir: str, name: str) -> tuple[socket.socket, int]:
    """(the socket the zone's output comes on, its pty master)."""
    from zoned.errors import ZonedError

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/attach.sock")
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    except OSError as e:
        sock.close()
        raise ZonedError(f"cannot attach to {name!r}: {e.strerror or e}") from None
    finally:
        os.close(dfd)
    if not fds:
        sock.close()
        raise ZonedError(f"cannot attach to {name!r}: its logger sent no terminal")
    return sock, fds[0]


def _copy_size(src: int, dst: int) -> None:
    from zoned.console import get_size, set_size

    try:
        rows, cols = get_size(src)
    except OSError:
        return
    if rows and cols:
        set_size(dst, rows, cols)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return  # the reader went away: what is left has nowhere to go


def attach(sock: socket.socket, master: int, keys: bytes, stdin: int | None = 0,
           stdout: int = 1) -> bool:
    """Relay until the zone's terminal closes (False) or the detach keys are typed
    (True). Raw mode and the window size when stdin is a terminal."""
    from zoned.console import RawMode

    tty = stdin is not None and os.isatty(stdin)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def resize(*_):
        try:
            os.write(wake_w, b"\0")
        except OSError:
            pass

    old = signal.signal(signal.SIGWINCH, resize) if tty else None
    watch = KeyWatch(keys)
    try:
        with RawMode(stdin if tty else -1):
            if tty:
                _copy_size(stdin, master)
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            poller.register(wake_r, select.POLLIN)
            if stdin is not None:
                poller.register(stdin, select.POLLIN)
            while True:
                for fd, _ in poller.poll():
                    if fd == sock.fileno():
                        data = sock.recv(65536)
                        if not data:
                            return False
                        _write_all(stdout, data)
                    elif fd == wake_r:
                        os.read(wake_r, 64)
                        _copy_size(stdin, master)
                    elif fd == stdin:
                        data = os.read(stdin, 4096)
                        if not data:  # EOF: stop reading (as the foreground proxy does)
                            poller.unregister(stdin)
                            continue
                        data, detached = watch.feed(data)
                        if data:
                            _write_all(master, data)
                        if detached:
                            return True
    finally:
        if tty:
            signal.signal(signal.SIGWINCH, old if old is not None else signal.SIG_DFL)
        os.close(wake_r)
        os.close(wake_w)
        os.close(master)
        sock.close()
