"""Moving containers between hosts: the channel, its two transports, and the receiving end.

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

The receiving side (Session) checks everything a restore needs before the source freezes,
unpacks the images, restores the container *stopped*, and lets it run only when the
source commits: so the container never runs in two places, and a failure at any point
before the commit leaves it running on the source and nothing here.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time

from zoned.errors import ConfigError, ZonedError

PROTOCOL = 1
CTRL, DATA, PAGES = 0, 1, 2
_HDR = struct.Struct("!BI")
CHUNK = 1 << 20
DEFAULT_KEY = "/etc/zoned/relocation.pem"
COMMIT_TIMEOUT = 30.0
PS_IOV_SIZE = 32  # CRIU's page server request (see Channel._hold_close)


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
        _write_all(self.wfd, data)

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
        self.pages_sent = 0
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
        kind, payload = self.recv()
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
            _write_all(fd, payload)
            total += len(payload)

    def demux(self, page_sock: socket.socket | None, *, hold: bool = False) -> None:
        """From now on a thread reads: CTRL messages queue up for recv_msg(), PAGES go to
        `page_sock` (the local CRIU's end); and what CRIU writes there goes out as PAGES.
        With `hold`, incoming PAGES are kept back until release_pages(): the source's
        page server must not see a request before the commit (see Migration)."""
        self._q = queue.Queue()
        self._held: list[bytes] | None = [] if hold else None
        self._part = bytearray()
        self._plock = threading.Lock()
        self._page_sock = page_sock

        def deliver(payload: bytes | None) -> None:
            if payload:
                page_sock.sendall(payload)
            elif payload is not None and not hold:
                _shutdown(page_sock, socket.SHUT_WR)

        def reader():
            try:
                while True:
                    kind, payload = self.recv()
                    if kind == CTRL:
                        self._q.put(json.loads(payload))
                    elif kind == PAGES and page_sock is not None:
                        with self._plock:
                            if self._held is not None:
                                payload = self._hold_close(payload)
                        deliver(payload)
            except BaseException as e:  # noqa: BLE001 - hand it to whoever waits
                if page_sock is not None:
                    if hold:  # the source: fail its page server, never end it cleanly
                        poison(page_sock)
                    _shutdown(page_sock, socket.SHUT_RDWR)
                self._q.put(e if isinstance(e, ZonedError) else PeerGone(str(e)))

        def pump():
            try:
                while True:
                    data = page_sock.recv(CHUNK)
                    self.send(PAGES, data)
                    self.pages_sent += len(data)
                    if not data:
                        return
            except (OSError, ZonedError):
                pass

        self._deliver = deliver
        threading.Thread(target=reader, name="zoned-demux", daemon=True).start()
        if page_sock is not None:
            threading.Thread(target=pump, name="zoned-pages", daemon=True).start()

    def _hold_close(self, payload: bytes) -> bytes:
        """What of `payload` may reach the source's page server before the commit: page
        requests, yes (the restore needs them); the final close, no. Requests are CRIU's
        page_server_iov records; a close
        (PS_IOV_FLUSH/PS_IOV_FLUSH_N_CLOSE, 0x1023/0x1024) would let the page server end
        successfully, and CRIU would kill the source's tasks before the destination's
        copy is committed. So from a close on, everything waits for release_pages().
        (The record is 32 bytes since CRIU 4: {u32 cmd, u32 flags, u64 nr_pages, u64 vaddr,
        u64 dst_id}; zoned needs CRIU >= 4.)"""
        if not payload:  # EOF from the destination's CRIU: hold that too
            self._held.append(payload)
            return b""
        if self._held:
            self._held.append(payload)
            return b""
        self._part += payload
        n = len(self._part) - len(self._part) % PS_IOV_SIZE
        for off in range(0, n, PS_IOV_SIZE):
            cmd = int.from_bytes(self._part[off:off + 4], "little") & 0xffff
            if cmd >= 0x1000:
                out = bytes(self._part[:off])
                self._held.append(bytes(self._part[off:]))
                self._part = bytearray()
                return out
        out = bytes(self._part[:n])
        del self._part[:n]
        return out

    def release_pages(self) -> None:
        """Let held-back PAGES through, in order, and the rest as they come."""
        with self._plock:
            held, self._held = [bytes(self._part)] + (self._held or []), None
            self._part = bytearray()
            for payload in held:
                self._deliver(payload)

    def close(self) -> None:
        self.stream.close()


def poison(page_sock: socket.socket) -> None:
    """Make a lazy dump's page server fail. A clean close means "every page was sent" to
    CRIU, and it kills the tasks; a command it does not know fails the dump instead, and
    CRIU then gives the frozen tasks back alive, their connections unlocked."""
    try:
        page_sock.sendall(b"\xff" * 64)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


# -- keys and TLS ------------------------------------------------------------------------
def make_key(path: str) -> None:
    """A relocation key: an EC private key and its self-signed certificate in one PEM
    (mode 0600). Copy it to every host that may send or receive containers."""
    if os.path.exists(path):
        raise ConfigError(f"{path} already exists (remove it first to make a new key)")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    old = os.umask(0o077)
    try:
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                            "-subj", "/CN=zoned-relocation", "-keyout", tmp, "-out",
                            tmp + ".crt"], capture_output=True, text=True)
        if r.returncode != 0:
            raise ZonedError(f"openssl failed: {r.stderr.strip()}")
        with open(tmp, "a") as f, open(tmp + ".crt") as c:
            f.write(c.read())
        os.rename(tmp, path)
    finally:
        os.umask(old)
        for p in (tmp, tmp + ".crt"):
            try:
                os.unlink(p)
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


# -- the receiving side --------------------------------------------------------------------
class Session:
    """One incoming migration on the destination."""

    def __init__(self, rt, ch: Channel, peer: str, log=None):
        self.rt, self.ch, self.peer = rt, ch, peer
        self.log = log or (lambda msg: None)
        self.dir: str | None = None
        self.cid: str | None = None
        self.restored = False

    def run(self) -> None:
        from zoned import checkpoint as ck

        try:
            self._run(ck)
        except PeerGone as e:
            self.log(f"{self.peer}: {e}")
            self._undo()
        except BaseException as e:
            self.log(f"{self.peer}: migration of {self.cid or '?'} failed: {e}")
            self._undo()
            try:
                self.ch.send_msg({"op": "error", "error": f"destination: {e}"})
            except ZonedError:
                pass
            if not isinstance(e, Exception):
                raise
        finally:
            if self.dir:
                import shutil

                shutil.rmtree(self.dir, ignore_errors=True)
                ck.scratch_done(self.rt)

    def _run(self, ck) -> None:
        import tempfile

        hello = self.ch.expect("hello", timeout=60)
        if hello.get("protocol") != PROTOCOL:
            raise ZonedError(f"protocol {hello.get('protocol')} is not {PROTOCOL}")
        meta, live = hello["meta"], bool(hello.get("live"))
        self.cid = cid = meta["id"]
        self.log(f"{self.peer}: {'live ' if live else ''}migration of {cid}")
        problems = ck.check_restore(self.rt, meta, cid, lazy=live)
        self.dir = tempfile.mkdtemp(prefix=f"in-{os.getpid()}-{cid}-", dir=ck.scratch_dir(self.rt))
        if hello.get("cpuinfo") and not problems:
            problems += _cpuinfo_check(self.dir, hello["cpuinfo"])
        if live and not problems:
            try:
                ck.ensure_pipe_size()
            except ZonedError as e:
                problems.append(str(e))
        self.ch.send_msg({"op": "ready", "problems": problems,
                          "criu": _criu_version_str(), "kernel": os.uname().release})
        if problems:
            return
        if meta.get("network"):  # while the source dumps: not in the frozen time
            from zoned.network.netlink import import_iproute

            import_iproute()
        msg = self.ch.recv_msg()
        if msg.get("op") != "images":
            return  # the source gave up (its own dump failed): nothing was made here
        t0 = time.monotonic()
        from zoned.runtime import _fault_injection

        _fault_injection("ZONED_TEST_PAUSE_RECEIVE")
        self._untar()
        page_sock = mine = None
        if live:
            mine, page_sock = socket.socketpair()
        self.ch.demux(page_sock)
        try:
            st = ck.restore(self.rt, self.dir, lazy_socket=mine.fileno() if mine else None,
                            stopped=True, consume=True)
        finally:
            if mine is not None:
                mine.close()
        self.restored = True
        self.ch.send_msg({"op": "restored", "pid": st["pid"],
                          "restore_s": time.monotonic() - t0})
        msg = self.ch.recv_msg(timeout=COMMIT_TIMEOUT)
        if msg.get("op") != "commit":
            raise ZonedError(f"the source did not commit ({msg.get('op')})")
        ck.resume(self.rt, cid)
        self.restored = False  # from here on it lives here
        self.ch.send_msg({"op": "committed"})
        self.log(f"{self.peer}: {cid} is running here")
        if live:
            try:
                ck.wait_lazy_pages(st["pid"])
            except ZonedError as e:
                # Without its pages the copy here cannot run: the source's CRIU gives the
                # container back to the source when its page server fails.
                self.log(f"{self.peer}: post-copy of {cid} failed: {e}; removing it")
                self.rt.delete(cid, force=True)
                raise
            self.ch.send_msg({"op": "done"})
            self.log(f"{self.peer}: {cid}: every page arrived")

    def _untar(self) -> None:
        from zoned.checkpoint import TAR_FLAGS

        p = subprocess.Popen(["tar", *TAR_FLAGS, "-xf", "-", "-C", self.dir],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.ch.recv_file_stream(p.stdin.fileno())
        finally:
            p.stdin.close()
            err = p.stderr.read().decode(errors="replace")
            p.wait()
        if p.returncode != 0:
            raise ZonedError(f"unpacking the images failed: {err.strip()}")

    def _undo(self) -> None:
        """Nothing half-restored stays: the stopped copy goes (the source still runs)."""
        if self.restored and self.cid:
            try:
                self.rt.delete(self.cid, force=True)
            except ZonedError:
                pass
            self.restored = False


def _criu_version_str() -> str | None:
    from zoned import checkpoint as ck

    try:
        return ".".join(map(str, ck.criu_version(ck.find_criu()) or ()))
    except ZonedError:
        return None


def cpuinfo_dump() -> str | None:
    """This CPU's features as CRIU sees them (base64 of cpuinfo.img)."""
    import base64
    import tempfile

    from zoned import checkpoint as ck

    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([ck.find_criu(), "cpuinfo", "dump", "-D", d],
                           capture_output=True)
        if r.returncode != 0:
            return None
        with open(os.path.join(d, "cpuinfo.img"), "rb") as f:
            return base64.b64encode(f.read()).decode()


def _cpuinfo_check(d: str, data: str) -> list[str]:
    import base64

    from zoned import checkpoint as ck

    path = os.path.join(d, "cpuinfo.img")
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    try:
        r = subprocess.run([ck.find_criu(), "cpuinfo", "check", "-D", d],
                           capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        return ["this CPU lacks features the source's has (criu cpuinfo check): "
                + (r.stderr.strip().splitlines() or ["?"])[-1]]
    return []


# -- the server ------------------------------------------------------------------------------
def _log(msg: str) -> None:
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
    Session(rt, ch, peer, _log).run()


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
        _log("the allow-list is empty: every connection will be refused")
    _log(f"listening on {listen}, allowing {', '.join(sorted(allowed)) or 'nobody'}")
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sessions are reaped by the kernel
    while True:
        conn, (peer, *_rest) = srv.accept()
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        if peer not in allowed:
            _log(f"refused {peer}: not in the allow-list")
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            srv.close()
            code = 0
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    stream = TLSStream(conn, ctx, server=True)
                except Exception as e:  # noqa: BLE001
                    _log(f"refused {peer}: TLS handshake failed ({e})")
                    code = 1
                else:
                    Session(rt, Channel(stream, peer), peer, _log).run()
            finally:
                os._exit(code)
        conn.close()
        if once:
            _wait_child(pid)
            return


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
