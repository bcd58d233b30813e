"""The relay of CRIU's lazy-page stream between the two hosts, in PAGES frames of the
migration's channel (transport.Channel.demux): the destination's `criu lazy-pages` asks,
the source's page server (a lazy `criu dump`) answers. On the source the relay holds back
the final close until the migration commits: it must not end the dump before then."""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from zoned.errors import ZonedError

PS_IOV_SIZE = 32  # CRIU's page server request (see PageRelay._hold_close)


class PageRelay:
    """One end's local CRIU socket and the channel. from_peer() takes what the other end
    sent; pump() (a thread) sends what the local CRIU writes; with `hold`, a close and what
    follows it wait for release()."""

    def __init__(self, sock: socket.socket, *, hold: bool):
        self.sock, self.hold = sock, hold
        self.held: list[bytes] | None = [] if hold else None
        self.part = bytearray()
        self.lock = threading.Lock()
        self.sent = 0

    def deliver(self, payload: bytes | None) -> None:
        if payload:
            self.sock.sendall(payload)
        elif payload is not None and not self.hold:
            shutdown_quietly(self.sock, socket.SHUT_WR)

    def from_peer(self, payload: bytes) -> None:
        """A PAGES frame from the other end: to the local CRIU, or held back."""
        with self.lock:
            if self.held is not None:
                payload = self._hold_close(payload)
        self.deliver(payload)

    def fail(self) -> None:
        """The channel is gone. The source fails its page server, never ends it cleanly."""
        if self.hold:
            poison(self.sock)
        shutdown_quietly(self.sock, socket.SHUT_RDWR)

    def pump(self, send: Callable[[bytes], None], chunk: int) -> None:
        """What the local CRIU writes, to the other end (`send`, at most `chunk` bytes a
        frame), until its EOF."""
        try:
            while True:
                data = self.sock.recv(chunk)
                send(data)
                self.sent += len(data)
                if not data:
                    return
        except (OSError, ZonedError):
            pass

    def _hold_close(self, payload: bytes) -> bytes:
        """What of `payload` may reach the source's page server before the commit: page
        requests, yes (the restore needs them); the final close, no. Requests are CRIU's
        page_server_iov records; a close
        (PS_IOV_FLUSH/PS_IOV_FLUSH_N_CLOSE, 0x1023/0x1024) would let the page server end
        successfully, and CRIU would kill the source's tasks before the destination's
        copy is committed. So from a close on, everything waits for release().
        (The record is 32 bytes since CRIU 4: {u32 cmd, u32 flags, u64 nr_pages, u64 vaddr,
        u64 dst_id}; zoned needs CRIU >= 4.)"""
        if not payload:  # EOF from the destination's CRIU: hold that too
            self.held.append(payload)
            return b""
        if self.held:
            self.held.append(payload)
            return b""
        self.part += payload
        n = len(self.part) - len(self.part) % PS_IOV_SIZE
        for off in range(0, n, PS_IOV_SIZE):
            cmd = int.from_bytes(self.part[off:off + 4], "little") & 0xffff
            if cmd >= 0x1000:
                out = bytes(self.part[:off])
                self.held.append(bytes(self.part[off:]))
                self.part = bytearray()
                return out
        out = bytes(self.part[:n])
        del self.part[:n]
        return out

    def release(self) -> None:
        """Let held-back PAGES through, in order, and the rest as they come."""
        with self.lock:
            held, self.held = [bytes(self.part)] + (self.held or []), None
            self.part = bytearray()
            for payload in held:
                self.deliver(payload)


def poison(page_sock: socket.socket) -> None:
    """Make a lazy dump's page server fail. A clean close means "every page was sent" to
    CRIU, and it kills the tasks; a command it does not know fails the dump instead, and
    CRIU then gives the frozen tasks back alive, their connections unlocked."""
    try:
        page_sock.sendall(b"\xff" * 64)
    except OSError:
        pass


def shutdown_quietly(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass
