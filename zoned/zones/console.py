"""`zoned console NAME`: attach the terminal to a running zone's pty, which its monitor
holds (csrc/monitor.c serves it on ROOT/.zones/NAME/console.sock). Ctrl-] detaches, as in
xm and virsh; the zone keeps running."""
from __future__ import annotations

import os
import select
import socket

from zoned.errors import InvalidState
from zoned.zones import record

DETACH = b"\x1d"  # Ctrl-]


def connect(root: str, name: str) -> socket.socket:
    """The console socket of a zone, reached through its dir's fd (the path may be longer
    than a socket address allows)."""
    run = record.zone_run_dir(root, name)
    try:
        dfd = os.open(run, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidState(f"zone {name!r} has no console: it is not running") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/console.sock")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise InvalidState(f"zone {name!r} has no console: it is not running with a "
                           "terminal (tty: true in its zone file)") from None
    finally:
        os.close(dfd)
    return sock


def attach(root: str, name: str, stdin: int = 0, stdout: int = 1) -> str:
    """Relay stdin/stdout and the zone's console until Ctrl-] ("detached") or the zone's
    end ("closed")."""
    from zoned.console import RawMode

    sock = connect(root, name)
    if os.isatty(stdout):
        os.write(stdout, f"Connected to zone {name}; escape character is ^]\r\n".encode())
    try:
        with RawMode(stdin):
            return _relay(sock, stdin, stdout)
    finally:
        sock.close()


def _relay(sock: socket.socket, stdin: int, stdout: int) -> str:
    fds = [sock.fileno(), stdin]
    while True:
        ready, _, _ = select.select(fds, [], [])
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                return "closed"
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 4096)
            if not data:  # EOF on stdin: keep showing output until the zone ends
                fds.remove(stdin)
                continue
            head, sep, _ = data.partition(DETACH)
            if head:
                sock.sendall(head)
            if sep:
                return "detached"
