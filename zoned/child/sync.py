"""The sync socket between zoned and the process it forked: typed messages, errno kept.

One JSON object per SOCK_SEQPACKET message ({"op": NAME, ...fields}); fds travel with
SCM_RIGHTS. JSON because the C side (csrc/spawn.c, the init's and exec's last step) speaks
it too. The sequence of a create and of an exec is in zoned.child.process's docstring.

A failure is {"op": "error", "message": TEXT, "errno": E}. E is the errno of the command's
own exec (CommandError; spawn.c's execve), so the parent decides by number, not by words,
that a missing command exits 127 and a non-executable one 126 (the shell's codes, as runc).
Any other failure of the set-up sends 0, whatever its errno: a device under /proc or a
missing working directory is the config's fault, exit 125, not "command not found".
"""
from __future__ import annotations

import _socket  # the C module: socket.py (with selectors and its enums) costs ~1.5 ms of
import errno as errnos  # every `zoned run`, for one socketpair and SCM_RIGHTS
import os
import sys

from zoned.linux import jsonc
from zoned.strconst import StrConstants

# SCM_RIGHTS carries C ints: packed by hand (array, which socket.send_fds uses, imports
# collections: ~1.5 ms of every zoned command)
_INT, _ORDER = 4, sys.byteorder
# fds one message may carry: a zone's init gets a `tasks` file per v1 hierarchy (up to 15
# with name=systemd) and one directory (zoned.cgroups.join)
MAX_FDS = 32

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from _socket import socket


class Op(StrConstants):
    """Every message's op. Who sends it: P parent, C child (init or exec helper)."""

    CGROUP = "cgroup"          # P: the child is in its cgroup (may come at any time)
    NAMESPACES = "namespaces"  # C: its namespaces exist (the network hook may run)
    GO = "go"                  # P: the hook is done / the made process is in the cgroup
    CONSOLE = "console"        # C: the pty master (an fd) and the slave's name
    READY = "ready"            # C: set up, waiting to be started
    START = "start"            # P: exec now (the caller holds the channel: `run`)
    ACK = "ack"                # P: the state is written (create, then `zoned start`)
    DETACHED = "detached"      # C: pdeathsig is off: the creator may exit
    USERNS = "userns"          # C (user namespace stage): write my uid/gid maps
    MAPPED = "mapped"          # P: they are written
    PID = "pid"                # C (user namespace stage): the init's pid
    MADE = "made"              # C (exec helper): the real process exists, outside the cgroup
    SPAWNED = "spawned"        # C (exec helper): it exec'd (errno 0) or why not
    ERROR = "error"            # C: a failure, with message and errno


class Message:
    """A received message: its op (None at EOF: the peer closed, e.g. by a successful
    exec of a CLOEXEC socket), its fields, and the fds that came with it (CLOEXEC)."""

    __slots__ = ("op", "fields", "fds")

    def __init__(self, op: Op | None, fields: dict, fds: list[int]):
        self.op, self.fields, self.fds = op, fields, fds

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    @property
    def errno(self) -> int:
        return int(self.fields.get("errno") or 0)

    def error(self, default: str):
        """The ZonedError this message reports (an ExecError for a command that is
        missing or not executable), or one saying `default` if it reports nothing."""
        from zoned.errors import ExecError, ZonedError

        message = self.fields.get("message") or default
        code = exit_code_for(self.errno)
        if code != 1:
            return ExecError(message, code)
        return ZonedError(message)


EOF = Message(None, {}, [])


class CommandError(OSError):
    """The container's command could not be executed (missing, not executable): the one
    failure whose errno reaches the parent (run_child), so that it exits 127 or 126."""


def exit_code_for(err: int) -> int:
    """A failed exec's exit code: 127 if the file is missing, 126 if it may not be run
    (nor run this way: ENOEXEC, a script without #! or another machine's binary, is 126
    in bash and podman)."""
    if err == errnos.ENOENT:
        return 127
    if err in (errnos.EACCES, errnos.EPERM, errnos.ENOEXEC):
        return 126
    return 1


class SyncSocket(_socket.socket):
    """One end of the sync channel: _socket's socket, closed by `with` as socket.socket."""

    __slots__ = ()

    def __enter__(self) -> SyncSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pair() -> tuple[SyncSocket, SyncSocket]:
    """The parent/child sync channel: message boundaries kept, fds can travel (both ends
    close-on-exec, as socket.socketpair makes them)."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return tuple(SyncSocket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, s.detach())
                 for s in (a, b))


def send_fds(sock: socket, data: bytes, fds: list[int]) -> None:
    """socket.send_fds: one message with `fds` attached (SCM_RIGHTS)."""
    packed = b"".join(fd.to_bytes(_INT, _ORDER, signed=True) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])


def recv_fds(sock: socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds: one message and the fds that came with it."""
    fds: list[int] = []
    data, ancdata, flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * _INT),
                                               _socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += (int.from_bytes(payload[i:i + _INT], _ORDER, signed=True)
                    for i in range(0, len(payload) - _INT + 1, _INT))
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):  # never half of a message
        for fd in fds:
            os.close(fd)
        raise OSError(errnos.EMSGSIZE, "a message on the sync socket too long to read")
    return data, fds


def send(sock: socket, op: Op, fds: list[int] | None = None, **fields) -> None:
    data = jsonc.dumps({"op": op.value, **fields}).encode()
    if fds:
        send_fds(sock, data, fds)
    else:
        sock.send(data)


def send_error(sock: socket, message: str, err: int = 0) -> None:
    send(sock, Op.ERROR, message=message, errno=err)


class Channel:
    """Typed messages over the sync socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket):
        self.sock = sock

    def send(self, op: Op, fds: list[int] | None = None, **fields) -> None:
        send(self.sock, op, fds, **fields)

    def recv(self) -> Message:
        try:
            data, fds = recv_fds(self.sock, 1 << 16, MAX_FDS)
        except ConnectionResetError:
            # The peer closed with a message of ours unread (a child that failed before
            # it read "cgroup"). The kernel reports that once, before the messages the
            # peer had sent: its error is still queued, or EOF follows.
            data, fds = recv_fds(self.sock, 1 << 16, MAX_FDS)
        for fd in fds:
            os.set_inheritable(fd, False)
        if not data:
            for fd in fds:
                os.close(fd)
            return EOF
        fields = jsonc.loads(data)
        try:
            op = Op(fields.pop("op", None))
        except ValueError:
            op = Op.ERROR  # not ours: treat it as a failure to follow the protocol
            fields = {"message": "protocol error on the sync socket"}
        return Message(op, fields, fds)
