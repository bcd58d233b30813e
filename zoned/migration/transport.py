"""Moving containers between hosts: the channel and its two transports.

Transports (both carry the same framed protocol, see Channel):
  ssh://[user@]host[:port]  `ssh host zoned relocation-server --stdio`: SSH authenticates
                            and encrypts, as `virsh migrate qemu+ssh://` relies on it.
                            $ZONED_SSH_COMMAND replaces `ssh` (as GIT_SSH_COMMAND does).
  zoned://host:port         TLS 1.3 to `zoned relocation-server --listen`, mutually
                            authenticated with a relocation key every host shares (a
                            private key and its self-signed certificate: each end proves
                            it holds the key, and trusts only that certificate), and a
                            source-address allow-list checked before the handshake.
                            Xen's relocation server sent memory in the clear and, with an
                            empty allow-list, accepted anyone; here the memory is always
                            encrypted and an empty allow-list refuses everyone.

"""
from __future__ import annotations

import json
import os
import queue
import socket
import struct
import subprocess
import threading

from zoned.errors import ConfigError, ZonedError
from zoned.linux.files import write_all

PROTOCOL = 1
CTRL, DATA, PAGES = 0, 1, 2
_HDR = struct.Struct("!BI")
CHUNK = 1 << 20
MAX_FRAME = 64 << 20  # a frame's length past this is a protocol error, not a buffer to fill
DEFAULT_KEY = "/etc/zoned/relocation.pem"
COMMIT_TIMEOUT = 30.0


class PeerGone(ZonedError):
    """The other end closed the connection or died."""


# -- streams -----------------------------------------------------------------------------
class PipeStream:
    """Two fds (ssh's pipes, or our stdin/stdout on the receiving end)."""

    def __init__(self, rfd: int, wfd: int, proc: subprocess.Popen | None = None):
        self.rfd, self.wfd, self.proc = rfd, wfd, proc

    def read(self, n: int) -> bytes:
        return os.read(self.rfd, n)

    def write(self, data) -> None:
        write_all(self.wfd, data)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class TLSStream:
    """TLS over a TCP socket through memory BIOs, so one thread may read while another
    writes (an SSLSocket must not be used from two threads at once)."""

    def __init__(self, sock: socket.socket, ctx, *, server: bool):
        import ssl

        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server)
        self.lock = threading.Lock()   # the SSL object
        self.wlock = threading.Lock()  # the order of records on the wire
        self._ssl = ssl
        self._handshake()

    def settimeout(self, seconds: float | None) -> None:
        """How long a read may wait for the peer (None: for ever)."""
        self.sock.settimeout(seconds)

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _handshake(self) -> None:
        ssl = self._ssl
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                try:
                    self._flush()
                    data = self.sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if not data:
                    raise PeerGone("the peer closed the connection during the TLS "
                                   "handshake") from None
                self.inc.write(data)

    def read(self, n: int) -> bytes:
        ssl = self._ssl
        while True:
            with self.lock:
                try:
                    data = self.obj.read(n)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    return b""
                pending = self.out.pending
            if pending:  # what reading produced (key updates, tickets) goes out in order
                with self.wlock:
                    with self.lock:
                        out = self.out.read()
                    if out:
                        self.sock.sendall(out)
            if data is not None:
                return data
            raw = self.sock.recv(262144)
            if not raw:
                return b""
            with self.lock:
                self.inc.write(raw)

    def write(self, data) -> None:
        with self.wlock:
            with self.lock:
                self.obj.write(data)
                out = self.out.read()
            self.sock.sendall(out)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- the channel -------------------------------------------------------------------------
class Channel:
    """Frames (kind, length, payload) over a stream: CTRL carries one JSON message, DATA
    the checkpoint's tar stream, PAGES the lazy page stream between the two CRIUs. An
    empty DATA or PAGES frame ends that stream.

    Until demux() the caller reads frames itself; after it, a thread sorts them: CTRL
    messages into a queue (recv_msg), PAGES into the local CRIU's socket."""

    def __init__(self, stream, label: str):
        self.stream, self.label = stream, label
        self.wlock = threading.Lock()
        self.sent = 0
        self.received = 0
        self._relay = None
        self._q: queue.Queue | None = None
        self._buf = bytearray()

    # sending
    def send(self, kind: int, payload: bytes = b"") -> None:
        try:
            hdr = _HDR.pack(kind, len(payload))
            with self.wlock:
                if len(payload) < 65536:  # small: one write, not a copy of a big payload
                    self.stream.write(hdr + payload)
                else:
                    self.stream.write(hdr)
                    self.stream.write(payload)
        except (OSError, ValueError) as e:
            raise PeerGone(f"{self.label}: connection lost ({e})") from None
        self.sent += len(payload)

    def send_msg(self, msg: dict) -> None:
        self.send(CTRL, json.dumps(msg).encode())

    # receiving
    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self.stream.read(max(n - len(self._buf), 262144))
            except OSError as e:
                raise PeerGone(f"{self.label}: connection lost ({e})") from None
            if not chunk:
                raise PeerGone(f"{self.label}: the other end closed the connection")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def recv(self) -> tuple[int, bytes]:
        kind, length = _HDR.unpack(self._exact(_HDR.size))
        if length > MAX_FRAME:  # our frames are CHUNK at most: a peer must not make us
            raise ZonedError(f"{self.label}: protocol error (a frame of {length} bytes)")
        payload = self._exact(length) if length else b""
        self.received += length
        return kind, payload

    def recv_msg(self, timeout: float | None = None) -> dict:
        if self._q is not None:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                raise PeerGone(f"{self.label}: no answer in {timeout:.0f} s") from None
            if isinstance(item, BaseException):
                raise item
            return item
        settimeout = getattr(self.stream, "settimeout", None)  # (a TLS socket's)
        if timeout is not None and settimeout is not None:
            settimeout(timeout)
        try:
            kind, payload = self.recv()
        except PeerGone as e:
            if timeout is not None and "timed out" in str(e):
                raise PeerGone(f"{self.label}: no answer in {timeout:.0f} s") from None
            raise
        finally:
            if timeout is not None and settimeout is not None:
                settimeout(None)
        if kind != CTRL:
            raise ZonedError(f"{self.label}: protocol error (frame {kind} where a message "
                             "was expected)")
        return json.loads(payload)

    def expect(self, op: str, timeout: float | None = None) -> dict:
        msg = self.recv_msg(timeout)
        if msg.get("op") == "error":
            raise ZonedError(msg.get("error") or "the other end failed")
        if msg.get("op") != op:
            raise ZonedError(f"{self.label}: protocol error (got {msg.get('op')!r}, "
                             f"expected {op!r})")
        return msg

    # streams
    def send_file_stream(self, fd: int, kind: int = DATA, progress=None) -> int:
        """Copy fd to EOF as `kind` frames, then the empty end frame."""
        total = 0
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                break
            self.send(kind, data)
            total += len(data)
            if progress:
                progress(total)
        self.send(kind, b"")
        return total

    def recv_file_stream(self, fd: int, kind: int = DATA) -> int:
        total = 0
        while True:
            k, payload = self.recv()
            if k == CTRL:
                msg = json.loads(payload)
                raise ZonedError(msg.get("error") or f"{self.label}: stream interrupted")
            if k != kind:
                raise ZonedError(f"{self.label}: protocol error (frame {k} in a stream)")
            if not payload:
                return total
            write_all(fd, payload)
            total += len(payload)

    def demux(self, page_sock: socket.socket | None, *, hold: bool = False) -> None:
        """From now on a thread reads: CTRL messages queue up for recv_msg(), PAGES go to
        `page_sock` (the local CRIU's end); and what CRIU writes there goes out as PAGES.
        With `hold`, incoming PAGES are kept back until release_pages(): the source's
        page server must not see a request before the commit (see PageRelay)."""
        from zoned.migration.pages import PageRelay

        self._q = queue.Queue()
        relay = self._relay = PageRelay(page_sock, hold=hold) if page_sock is not None \
            else None

        def reader():
            try:
                while True:
                    kind, payload = self.recv()
                    if kind == CTRL:
                        self._q.put(json.loads(payload))
                    elif kind == PAGES and relay is not None:
                        relay.from_peer(payload)
            except BaseException as e:  # noqa: BLE001 - hand it to whoever waits
                if relay is not None:
                    relay.fail()
                self._q.put(e if isinstance(e, ZonedError) else PeerGone(str(e)))

        threading.Thread(target=reader, name="zoned-demux", daemon=True).start()
        if relay is not None:
            threading.Thread(target=relay.pump,
                             args=(lambda data: self.send(PAGES, data), CHUNK), name="zoned-pages", daemon=True).start()

    @property
    def pages_sent(self) -> int:
        """The bytes of PAGES the local CRIU sent the other end."""
        return self._relay.sent if self._relay is not None else 0

    def release_pages(self) -> None:
        """Let held-back PAGES through, in order, and the rest as they come."""
        self._relay.release()

    def close(self) -> None:
        self.stream.close()


# -- keys and TLS ------------------------------------------------------------------------
def make_key(path: str) -> None:
    """A relocation key: an EC private key and its self-signed certificate in one PEM
    (mode 0600). Copy it to every host that may send or receive containers.

    openssl prints both to a pipe; they go into a file mkstemp made (O_EXCL|O_NOFOLLOW,
    0600, an unguessable name in the key's directory), which is then linked into place
    without replacing anything: no name another user can plant beforehand is ever
    opened (a predictable temp name was: openssl writes into an existing file, keeping
    its owner and mode)."""
    import tempfile

    if os.path.lexists(path):
        raise ConfigError(f"{path} already exists (remove it first to make a new key)")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                        "-subj", "/CN=zoned-relocation", "-keyout", "-", "-out", "-"],
                       stdin=subprocess.DEVNULL, capture_output=True)
    pem = r.stdout
    if r.returncode != 0 or b"PRIVATE KEY-----" not in pem or b"CERTIFICATE-----" not in pem:
        raise ZonedError(f"openssl failed: {r.stderr.decode(errors='replace').strip()}")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # unlike rename, never replaces what appeared meanwhile
        except FileExistsError:
            raise ConfigError(f"{path} already exists (remove it first to make a new "
                              "key)") from None
        except OSError:  # a file system without hard links
            os.rename(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def tls_context(key: str, *, server: bool):
    import ssl

    if not os.path.isfile(key):
        raise ConfigError(f"relocation key {key} does not exist (make one with "
                          "`zoned relocation-key FILE` and copy it to both hosts)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(key)
        ctx.load_verify_locations(key)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"relocation key {key}: not a key and certificate ({e})") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # the peer is whoever holds the shared key
    return ctx


# -- the sending side's connection ---------------------------------------------------------
def parse_dest(dest: str) -> tuple[str, str | None, str, int | None]:
    """(scheme, user, host, port) of ssh://[user@]host[:port] or zoned://host:port."""
    from urllib.parse import urlsplit

    u = urlsplit(dest)
    if u.scheme not in ("ssh", "zoned") or not u.hostname:
        raise ConfigError(f"invalid destination {dest!r}: use ssh://[user@]host[:port] or "
                          "zoned://host:port")
    try:
        port = u.port
    except ValueError:
        raise ConfigError(f"invalid port in {dest!r}") from None
    if u.scheme == "zoned" and port is None:
        raise ConfigError(f"{dest}: zoned:// needs a port (zoned://host:port)")
    return u.scheme, u.username, u.hostname, port


def connect(dest: str, *, key: str | None = None, timeout: float = 10.0) -> Channel:
    scheme, user, host, port = parse_dest(dest)
    if scheme == "ssh":
        import shlex

        cmd = shlex.split(os.environ.get("ZONED_SSH_COMMAND") or "ssh -o BatchMode=yes")
        if port:
            cmd += ["-p", str(port)]
        cmd += [f"{user}@{host}" if user else host, "--"]
        cmd += shlex.split(os.environ.get("ZONED_REMOTE_COMMAND") or "zoned")
        cmd += ["relocation-server", "--stdio"]
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        except OSError as e:
            raise ZonedError(f"cannot run {cmd[0]}: {e}") from None
        ch = Channel(PipeStream(p.stdout.fileno(), p.stdin.fileno(), p), dest)
        ch.ssh = p
        return ch
    ctx = tls_context(key or os.environ.get("ZONED_RELOCATION_KEY") or DEFAULT_KEY,
                      server=False)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ZonedError(f"cannot connect to {dest}: {e.strerror or e}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    import ssl

    try:
        stream = TLSStream(sock, ctx, server=False)
    except PeerGone:
        sock.close()
        raise ZonedError(f"{dest} closed the connection during the TLS handshake: this "
                         "host is not in its --allow list") from None
    except ssl.SSLError as e:
        sock.close()
        raise ZonedError(f"{dest}: TLS handshake failed ({e.reason or e}): the two hosts "
                         "do not share the same relocation key") from None
    except OSError as e:
        sock.close()
        raise ZonedError(f"{dest}: connection failed during the handshake ({e})") from None
    return Channel(stream, dest)


def ssh_error(ch: Channel) -> str:
    """What ssh printed, for an error line (the remote zoned's message, or ssh's own)."""
    p = getattr(ch, "ssh", None)
    if p is None:
        return ""
    try:
        p.wait(timeout=5)
        err = p.stderr.read().decode(errors="replace").strip()
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return ""
    return err.splitlines()[-1] if err else f"ssh exited with {p.returncode}"
