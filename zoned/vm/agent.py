"""The host side of the guest agent: exec into a running VM, signal its processes.

The guest side is csrc/vminit.c, reached over the virtio-serial port zoned.agent, whose
QEMU chardev is the unix socket <vmdir>/agent.sock. Frames: type (1 byte), payload length
(u32 little endian), payload.
  host -> guest: E exec (records, zoned.vm.config), I stdin, C stdin EOF, S signal (records)
  guest -> host: P started (pid), o stdout, e stderr, x exit status, ! error
One exec at a time per VM: QEMU's socket chardev takes one client (a second one waits in the
socket's backlog until the first has gone), and the guest kills the exec'd process (its
process group) when its client goes -- so a vanished zoned leaves no orphan holding the slot,
and nothing of the old process reaches the next client.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import time

from zoned.errors import ExecError, ZonedError
from zoned.linux.files import write_all
from zoned.vm.config import decode_records, encode_records, guest_text, process_records

FRAME_MAX = 1 << 20
_HDR = struct.Struct("<cI")


def encode_frame(kind: str, payload: bytes = b"") -> bytes:
    if len(payload) > FRAME_MAX:
        raise ValueError(f"frame of {len(payload)} bytes: over {FRAME_MAX}")
    return _HDR.pack(kind.encode(), len(payload)) + payload


def decode_frames(buf: bytearray) -> list[tuple[str, bytes]]:
    """Takes the whole frames off the front of buf (a partial one stays)."""
    frames = []
    while len(buf) >= _HDR.size:
        kind, n = _HDR.unpack_from(buf)
        if n > FRAME_MAX:
            raise ZonedError(f"agent: frame of {n} bytes from the guest")
        if len(buf) < _HDR.size + n:
            break
        frames.append((kind.decode("latin-1"), bytes(buf[_HDR.size:_HDR.size + n])))
        del buf[:_HDR.size + n]
    return frames


class Agent:
    """A connection to one VM's agent (connect lazily; close() or use as a context)."""

    def __init__(self, vmdir: str, timeout: float = 30.0, verify_peer: bool = True) -> None:
        """verify_peer=False: a stand-in's socket (tests), not checked to be the VM's QEMU."""
        self.vmdir, self.verify_peer = vmdir, verify_peer
        self.path = os.path.join(vmdir, "agent.sock")
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise ZonedError(f"VM agent {self.path}: {e.strerror}") from None
            if self.verify_peer:
                from zoned.vm.peer import check_peer

                check_peer(s, self.vmdir, f"VM agent {self.path}")  # (closes it if not)
            self._sock = s
        return self._sock

    def _send(self, kind: str, payload: bytes = b"") -> None:
        try:
            self._connect().sendall(encode_frame(kind, payload))
        except OSError as e:
            raise ZonedError(f"VM agent: {e.strerror}") from None

    def signal(self, sig: int, target: str = "main") -> None:
        """Sends sig to the VM's main process or ("exec") to the process this connection
        exec'd. Errors (no such process) are reported by the guest asynchronously and are
        not waited for: a signal to a VM that is ending is not an error."""
        if target not in ("main", "exec"):
            raise ValueError(f"target {target!r}: main or exec")
        self._send("S", encode_records([("target", target), ("sig", str(int(sig)))]))

    def _hello(self, deadline: float) -> None:
        """Says hello until the guest answers: its answer means it knows this client is
        there, so what it sends back from now on reaches us (right after a connect, the
        guest may still take us for gone and drop its answers: csrc/vmagent.h)."""
        sock = self._connect()
        while True:
            self._send("H")
            step = time.monotonic() + 0.2
            while (left := min(step, deadline) - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data = sock.recv(1 << 16)
                if not data:
                    raise ZonedError("VM agent: the VM went away")
                self._buf += data
                frames = decode_frames(self._buf)
                if any(kind == "h" for kind, _ in frames):
                    return
            if time.monotonic() >= deadline:
                raise ZonedError(f"VM agent: no answer in {self.timeout:.0f} s")

    def exec(self, argv: list[str], env: list[str] | None = None, cwd: str = "/",
             uid: int = 0, gid: int = 0, tty: bool = False,
             stdio: tuple[int | None, int | None, int | None] = (None, 1, 2),
             on_started: object = None, groups: list[int] | None = None) -> int:
        """Runs argv in the VM (in its root, as uid:gid, in cwd) and returns its exit code
        (128+n if killed by signal n). stdin is copied from stdio[0] (None: none, EOF at
        once), output to stdio[1]/stdio[2] (None: dropped; with tty both come on stdio[1]).
        on_started(pid) is called once the guest has forked it."""
        env = env if env is not None else []
        payload = encode_records(process_records(argv, env, cwd, uid, gid, tty,
                                                 groups=groups))
        sock = self._connect()
        deadline = time.monotonic() + self.timeout
        self._hello(deadline)
        self._send("E", payload)
        fin, fout, ferr = stdio
        if fin is None:
            self._send("C")
        started = False
        while True:
            rlist = [sock] + ([fin] if fin is not None and started else [])
            wait = None if started else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(rlist, [], [], wait)
            if not started and (not ready or time.monotonic() > deadline):
                # (checked with frames arriving too: a guest streaming others never
                # starting the process must not hold the exec for good)
                raise ZonedError(f"VM agent: no answer in {self.timeout:.0f} s")
            if fin is not None and fin in ready:
                data = os.read(fin, 65536)
                if data:
                    self._send("I", data)
                else:
                    self._send("C")
                    fin = None
            if sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    raise ZonedError("VM agent: the VM went away during exec")
                self._buf += data
                for kind, body in decode_frames(self._buf):
                    if not started and kind in "oexh":
                        continue  # an earlier client's process, or a repeated hello
                    if kind == "P":
                        started = True
                        if on_started is not None:
                            on_started(guest_number(body, "pid", 1 << 22))
                    elif kind == "o" and fout is not None:
                        write_all(fout, body)
                    elif kind == "e" and ferr is not None:
                        write_all(ferr, body)
                    elif kind == "x":
                        return guest_number(body, "exit status", 255)
                    elif kind == "!":
                        raise ExecError(f"VM exec: {guest_text(body)}")


def run_in_guest(vmdir: str, argv: list[str], *, stdin: int | None = None,
                 stdout: int | None = None, timeout: float = 120.0,
                 on_started: object = None) -> tuple[int, str]:
    """Run argv in the guest (root, in /) through a new agent connection, stdin copied
    from the stdin fd, output to the stdout fd: its exit code and the first line it wrote
    to stderr, printable (the guest's text, for one line of zoned's). timeout: for the
    guest to start it (a TCG guest under load is slow)."""
    import tempfile

    with tempfile.TemporaryFile() as err:
        with Agent(vmdir, timeout=timeout) as agent:
            code = agent.exec(argv, stdio=(stdin, stdout, err.fileno()),
                              on_started=on_started)
        err.seek(0)
        first = err.read(4096).decode(errors="replace").strip().splitlines()
    return code, guest_text(first[0]) if first else ""


__all__ = ["Agent", "decode_frames", "encode_frame", "decode_records", "run_in_guest"]


def guest_number(body: bytes, what: str, top: int) -> int:
    """A number the guest sends (a pid, an exit status), checked: from 0 to `top`, else
    one line (the guest is not trusted to send what zoned's vminit would)."""
    text = body.decode("latin-1")
    if not (text.isdecimal() and text.isascii() and len(text) <= 8 and int(text) <= top):
        raise ZonedError(f"agent: the guest sent {what} {text[:20]!r}")
    return int(text)

