"""A small QMP client (QEMU's JSON machine protocol) over <vmdir>/qmp.sock.

Only the machine protocol is spoken, never the human monitor. Events that arrive while
waiting for a command's answer are kept in .events for the caller (migration waits for
MIGRATION events, the lifecycle for SHUTDOWN).
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from zoned.errors import ZonedError


class QMPError(ZonedError):
    """QEMU answered a command with an error (its class and description)."""


class QMP:
    def __init__(self, vmdir: str, timeout: float = 10.0, path: str | None = None,
                 verify_peer: bool = True) -> None:
        """verify_peer=False: a stand-in's socket (tests), not checked to be the VM's QEMU."""
        self.vmdir, self.verify_peer = vmdir, verify_peer
        self.path = path or os.path.join(vmdir, "qmp.sock")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._rbuf = b""
        self.greeting: dict[str, Any] = {}

    def __enter__(self) -> QMP:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connects (retrying while QEMU is still creating the socket) and negotiates."""
        deadline = time.monotonic() + self.timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                s.close()
                if time.monotonic() > deadline:
                    raise ZonedError(f"QMP {self.path}: {e.strerror}") from None
                time.sleep(0.02)
        if self.verify_peer:
            from zoned.vm.peer import check_peer

            check_peer(s, self.vmdir, f"QMP {self.path}")  # (closes it if not)
        s.settimeout(self.timeout)
        self._sock = s
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise ZonedError(f"QMP {self.path}: unexpected greeting {self.greeting!r}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._rbuf:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise ZonedError(f"QMP {self.path}: no answer in {self.timeout:.0f} s") from None
            if not data:
                raise ZonedError(f"QMP {self.path}: QEMU closed the connection")
            self._rbuf += data
        line, self._rbuf = self._rbuf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        """Runs a command; returns its "return" value, raises QMPError on "error"."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        return self._answer(command)

    def _answer(self, command: str) -> Any:
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                e = reply["error"]
                raise QMPError(f"QMP {command}: {e.get('class')}: {e.get('desc')}")
            elif "return" in reply:
                return reply["return"]

    def send_fd(self, command: str, fd: int, **arguments: Any) -> Any:
        """Runs a command that takes an fd with it (getfd, add-fd): `fd` goes as
        SCM_RIGHTS with the command's bytes."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        msg = json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n"
        socket.send_fds(self._sock, [msg], [fd])
        return self._answer(command)

    def wait_event(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Returns (and removes) the first event called name, waiting for it if needed."""
        assert self._sock is not None
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ZonedError(f"QMP: no {name} event in time")
            self._sock.settimeout(left)
            try:
                reply = self._read()
            finally:
                self._sock.settimeout(self.timeout)
            if "event" in reply:
                self.events.append(reply)


def wait_migrated(q: QMP, timeout: float = 600) -> dict[str, Any]:
    """query-migrate until QEMU's outgoing migration is completed, failed or cancelled
    (cancelled at the timeout: {"status": "timed out"})."""
    deadline = time.monotonic() + timeout
    while True:
        info = q.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        if time.monotonic() > deadline:
            q.execute("migrate_cancel")
            return {"status": "timed out"}
        time.sleep(0.01)


def resume_guest(vmdir: str) -> bool:
    """A migration or save that will not complete: cancel it, and the guest runs on
    (QMP `cont` if it is stopped). Best effort: a QEMU that is gone stays gone. False
    where QEMU did not answer (or is gone): the guest may still be stopped."""
    try:
        with QMP(vmdir) as q:
            try:
                q.execute("migrate_cancel")
            except QMPError:
                pass
            if q.execute("query-status").get("status") != "running":
                q.execute("cont")
        return True
    except (OSError, ZonedError):
        return False
