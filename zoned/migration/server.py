"""The relocation server: `zoned relocation-server --listen ADDR:PORT --allow HOSTS`
(TLS, a forked session per allowed peer) or `--stdio` (what an ssh:// source runs). An
empty allow-list refuses everyone."""
from __future__ import annotations

import os
import socket
import sys

from zoned.errors import ConfigError, ZonedError
from zoned.migration.destination import Session
from zoned.migration.transport import DEFAULT_KEY, Channel, PipeStream, TLSStream, \
    tls_context


def log(msg: str) -> None:
    sys.stderr.write(f"zoned relocation-server: {msg}\n")
    sys.stderr.flush()


def resolve_allow(allow: str) -> set[str]:
    out = set()
    for host in filter(None, (h.strip() for h in allow.split(","))):
        try:
            for info in socket.getaddrinfo(host, None):
                out.add(info[4][0])
        except socket.gaierror:
            raise ConfigError(f"--allow {host}: unknown host") from None
    return out


def serve_stdio(rt) -> None:
    """Serve one migration on stdin/stdout: what `ssh host zoned relocation-server --stdio`
    runs for an ssh:// destination."""
    peer = (os.environ.get("SSH_CLIENT") or "ssh").split()[0]
    # The channel is our stdout; anything else printing there would corrupt it.
    out = os.dup(1)
    os.dup2(2, 1)
    ch = Channel(PipeStream(0, out), "source")
    Session(rt, ch, peer, log).run()


def serve(rt, listen: str, *, allow: str = "", key: str | None = None,
          once: bool = False) -> None:
    """Receive migrating containers over TLS on `listen` (ADDR:PORT) from the hosts in
    `allow` (comma-separated, empty: nobody), one forked session each; with `once`, return
    after the first."""
    addr, _, port = listen.rpartition(":")
    if not addr or not port.isdigit():
        raise ConfigError(f"invalid --listen {listen!r}: expected ADDR:PORT")
    allowed = resolve_allow(allow)
    ctx = tls_context(key or os.environ.get("ZONED_RELOCATION_KEY") or DEFAULT_KEY,
                      server=True)
    fam = socket.AF_INET6 if ":" in addr.strip("[]") else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((addr.strip("[]"), int(port)))
    except OSError as e:
        raise ZonedError(f"cannot listen on {listen}: {e.strerror}") from None
    srv.listen(8)
    if not allowed:
        log("the allow-list is empty: every connection will be refused")
    log(f"listening on {listen}, allowing {', '.join(sorted(allowed)) or 'nobody'}")
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sessions are reaped by the kernel
    sessions = Sessions()
    while True:
        conn, (peer, *_rest) = srv.accept()
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        if peer not in allowed:
            log(f"refused {peer}: not in the allow-list")
            conn.close()
            continue
        if sessions.count() >= MAX_SESSIONS:
            log(f"refused {peer}: {MAX_SESSIONS} sessions are open already")
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            srv.close()
            code = 0
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(HANDSHAKE_TIMEOUT)  # a peer that never authenticates
                try:
                    stream = TLSStream(conn, ctx, server=True)
                except Exception as e:  # noqa: BLE001
                    log(f"refused {peer}: TLS handshake failed ({e})")
                    code = 1
                else:
                    conn.settimeout(None)  # (the session's reads set their own)
                    Session(rt, Channel(stream, peer), peer, log).run()
            finally:
                os._exit(code)
        conn.close()
        sessions.add(pid)
        if once:
            _wait_child(pid)
            return


HANDSHAKE_TIMEOUT = 20.0  # seconds for a peer's TLS handshake (its key's proof)
MAX_SESSIONS = 8  # sessions at once: each is a forked process, a migration is one


class Sessions:
    """The session processes still running (SIGCHLD is ignored: pidfds tell when one
    ends), so that connections from the allow-list cannot fork without bound."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}

    def add(self, pid: int) -> None:
        try:
            self.fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass

    def count(self) -> int:
        import select

        for pid, fd in list(self.fds.items()):
            if select.select([fd], [], [], 0)[0]:  # readable: it has ended
                os.close(fd)
                del self.fds[pid]
        return len(self.fds)


def _wait_child(pid: int) -> None:
    """Wait for a session with SIGCHLD ignored (no status to collect: poll its pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        import select

        select.select([fd], [], [])
    finally:
        os.close(fd)
