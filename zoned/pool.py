"""zoned.Pool: zones made ahead with the same options, each handed out once.

For a caller that starts many short zones alike (a test suite, a build farm): a maker
process of the pool keeps `size` zones waiting (namespaces, overlay, cgroups, seccomp,
user, caps: all of zoned.run's set-up), their inits waiting for start. run(args) takes
one, gives it its args (and env) as it starts it, then goes on as zoned.run does: output,
exit status, timeout; the maker removes the zone afterwards and makes the next. A zone is
never reused: every run gets a fresh one. What the pool saves is the caller's latency, not
work: each zone still costs its set-up, in the maker, on another CPU, while the caller
does something else (pytest's own work between two tests, or the test). A fork server,
or Firecracker's and Kata's VM templates, do the same for processes and VMs.

How: Pool() starts the makers (single-threaded pythons: a thread would take the caller's
GIL, and the caller would wait for it). The maker clones each init as the caller's child
(CLONE_PARENT, zoned.child.process), so the caller reaps it and gets its exit status as
zoned.run does, and a caller that dies takes its zones with it (their parent-death
signal), and the maker too (its own). Over a socket pair the maker sends each zone's name
and pid with its sync channel and the caller's ends of its stdin/stdout/stderr pipes
(SCM_RIGHTS); the caller answers "done" when it has reaped it.

What differs from zoned.run: the process is known only at start (late_process): the init
waits, its credentials applied, as zoned-spawn's sealed copy (~0.1 MiB; a python waiting
held ~5) and gets the process with "start" as a plan of its own (args, env, cwd, the
lookup: zoned.child.initplan.compile_late); a rootless pool's init (a user namespace) waits
as python and gets them as JSON. Nothing else is in the zone then, and the zone is this
caller's alone. Options are fixed per
pool; no network of its own (a zone made ahead would hold its lease while it waits).
Rootless too: a rootless zone's init is made through a user-namespace stage, which the
maker clones as the caller's child as well; the caller reaps it with the zone's message.
"""
from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import dataclass

from zoned.api import Result, build_config, command_args, finish, new_name, pump
from zoned.errors import ConfigError, ZonedError
from zoned.linux import lastref

MAX_PROCESS_BYTES = 60 << 10  # args + env travel in one sync message (64 KiB)
_MSG = 1 << 16


def _send(sock: socket.socket, fds: list[int] | None = None, **fields) -> None:
    data = json.dumps(fields).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _recv(sock: socket.socket, flags: int = 0) -> tuple[dict | None, list[int]]:
    """One message and its fds; (None, []) at EOF. (socket.recv_fds ignores flags.)"""
    from array import array

    fds = array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(_MSG, socket.CMSG_LEN(4 * fds.itemsize),
                                                    flags)
    except ConnectionResetError:  # the peer went with our messages unread: as EOF
        return None, []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return (json.loads(data) if data else None), list(fds)


@dataclass
class Template:
    """What every zone of a pool is made from: zoned.run's options, as JSON goes."""
    size: int
    root: str | None
    images: str | None
    options: dict
    userns: str | None = None  # rootless: the user namespace the zones join (the maker's)

    def config(self, name: str) -> dict:
        from zoned.oci.spec import RunOptions

        options = {"volume_root": self.root, **self.options}  # the makers' state root's
        cfg = build_config(RunOptions(args=["true"], name=name, **options), self.images)
        if self.userns:
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "user":
                    ns["path"] = self.userns
        return cfg


def shared_userns() -> int:
    """Rootless: a user namespace mapped as zoned.run would map a zone's (the user's own id
    as root, and the subordinate range), for all of a pool's zones, as rootless podman
    keeps one for all of a user's containers. The pool maps it once and hands it to each
    maker. Each zone still has its own mount, pid,
    network, IPC and UTS namespaces, so no zone sees another's processes, files or
    sockets; what the zones share is the id map, which is the user's anyway. It saves
    newuidmap and newgidmap (two setuid programs) per zone. Its fd."""
    from zoned.rootless import id_mappings
    from zoned.runtime.handoff import idmap_userns

    uids, gids = id_mappings()
    return idmap_userns({"uidMappings": uids, "gidMappings": gids})


class Pool:
    """Zones with the same options, made ahead by a process of the pool: run() starts one.

    size: how many wait to be taken (a new one is made once a run is over, or at once
    if none waits).
    makers: how many maker processes share the making (each keeps its part of `size`
    waiting); default min(size, 2, CPUs): on a busy caller, making and removing a zone
    costs more CPU than the run, so a second maker on another CPU raises the rate.
    root, images, image and other keyword options: as zoned.run's (README "Options").
    cgroup_parent: where the zones' cgroups go (default: $ZONED_CGROUP_PARENT, else
    zoned's for the root). data_root: where their writable layers go (default: the
    state root's, zoned.storage); with the state root on a tmpfs, a dir on it makes and
    removes a zone for ~20% less CPU than a disk (ext4's inode allocation), at the cost
    of what the zones write being in memory while they run.
    A context manager; close() removes the zones not run yet and ends the makers. Not for
    use from two threads at once; make it in a thread that outlives it (the kernel's
    parent-death signal, which ends the makers and the zones with their caller, follows
    the thread that made them)."""

    def __init__(self, *, size: int = 2, makers: int | None = None, root: str | None = None,
                 images: str | None = None, image: str | None = None,
                 cgroup_parent: str | None = None, data_root: str | None = None,
                 **options):
        if size < 1:
            raise ConfigError(f"size: {size} (at least 1)")
        if makers is None:
            makers = min(size, 2, os.cpu_count() or 1)
        if not 1 <= makers <= size:
            raise ConfigError(f"makers: {makers} (1 to size, {size})")
        if options.get("network") not in (None, "none", ["none"]) or options.get("publish"):
            raise ConfigError("network: a Pool's zones have no network of their own "
                              "(use zoned.run)")
        self.size, self.root, self.images = size, root, images
        template = Template(size, root, images, {"image": image, **options})
        template.config("pool")  # checked here, in the caller: a bad option raises now
        from zoned.backends.zone import ZoneBackend
        from zoned.runtime.lifecycle import Runtime

        self._backend = ZoneBackend(runtime=Runtime(root, data_root))
        self._pids: set[int] = set()  # inits made for us and not reaped yet
        self._error: str | None = None  # why a maker makes no more zones
        self._makers: list[tuple[int, socket.socket]] = []  # (pid, our socket)
        self._owner: dict[str, socket.socket] = {}  # zone taken -> its maker's socket
        self._turn = 0  # the maker whose zone is taken next, if it has one ready
        userns = -1
        try:
            if os.geteuid() != 0:  # one user namespace for the whole pool, mapped once
                userns = shared_userns()
            for i in range(makers):
                share = size // makers + (i < size % makers)
                self._makers.append(_spawn_maker(
                    Template(share, root, images, template.options), cgroup_parent,
                    data_root, userns))
        except BaseException:
            self.close()
            raise
        finally:
            if userns >= 0:
                os.close(userns)  # the makers hold it now

    @property
    def failure(self) -> str | None:
        """Why a maker makes no more zones (run() raises it), or None."""
        return self._error

    @property
    def maker_pids(self) -> list[int]:
        """The maker processes (the caller's children until close())."""
        return [pid for pid, _ in self._makers]

    # -- the caller ----------------------------------------------------------------------
    def run(self, args: list[str] | str, *, input: bytes | str | None = None,
            text: bool = False, check: bool = False, timeout: float | None = None,
            shell: bool = False, env: list[str] | None = None) -> Result:
        """zoned.run(args, ...) in the next zone made ahead: its Result (stdout and stderr
        captured). env: "K=V" entries added to the image's (as run's env= option)."""
        args = command_args(args, shell)
        if not args:
            raise ConfigError("args: a Pool's run needs a command")
        process: dict = {"args": args}
        if env:
            from zoned.oci.values import parse_env

            process["env"] = parse_env(list(env))  # the init adds them to its own
        if len(json.dumps(process)) > MAX_PROCESS_BYTES:
            raise ConfigError(f"args and env: over {MAX_PROCESS_BYTES} bytes for a Pool "
                              "(use zoned.run)")
        if isinstance(input, str):
            input = input.encode()
        name, pid, chan_fd, stdin_w, out_r, err_r = self._take()
        from zoned.child.sync import Channel, SyncSocket
        from zoned.runtime.handoff import Started

        reads: dict[int, list[bytes]] = {out_r: [], err_r: []}
        try:
            started = Started(pid, Channel(SyncSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET,
                                                      0, chan_fd)))
            chan_fd = -1
            self._backend.start(name, started, process)
            code, timed_out = pump(pid, reads, stdin_w, input, timeout, lambda: _kill(pid))
            stdin_w = out_r = err_r = -1  # pump closed them and reaped the init
        except BaseException:
            for fd in (chan_fd, stdin_w, out_r, err_r):
                if fd >= 0:
                    os.close(fd)
            _kill(pid)
            _reap(pid)
            raise
        finally:
            self._pids.discard(pid)
            self._done(name)
        return finish(args, code, reads, text, name, timeout=timeout, timed_out=timed_out,
                      check=check)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a zone waits to be taken (a maker has one ready; the next run()
        takes it without waiting): False if none is by `timeout` seconds. A warm-up, or a
        benchmark's way to keep the making of the next zone out of what it times next
        (a maker may still be removing a zone run before: it makes the next one while a
        run runs if none waits)."""
        import select

        if not self._makers:
            raise ZonedError("the pool is closed")
        ready, _, _ = select.select([sock for _, sock in self._makers], [], [], timeout)
        return bool(ready)

    def _next_maker(self) -> socket.socket:
        """The first maker, from this turn's on, with a message for us (waiting for one)."""
        import select

        socks = [sock for _, sock in self._makers]
        order = socks[self._turn:] + socks[:self._turn]
        ready, _, _ = select.select(order, [], [])
        sock = next(s for s in order if s in ready)
        self._turn = (socks.index(sock) + 1) % len(socks)
        return sock

    def _take(self) -> tuple[str, int, int, int, int, int]:
        if not self._makers:
            raise ZonedError("the pool is closed")
        if self._error is not None:  # a maker makes no more
            raise ZonedError(self._error)
        sock = self._next_maker()
        msg, fds = _recv(sock)
        for pid in (msg or {}).get("reap", ()):
            _reap(pid)  # a user-namespace stage the maker made as our child: it has exited
        if msg is None or msg.get("op") != "zone" or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            self._error = "zoned.Pool: no zone: " + \
                ((msg or {}).get("message") or "a maker has gone")
            raise ZonedError(self._error)
        self._pids.add(msg["pid"])
        self._owner[msg["name"]] = sock
        try:
            _send(sock, op="took", name=msg["name"])
        except OSError:
            pass  # the maker has gone: this zone still runs
        return (msg["name"], msg["pid"], *fds)

    def _done(self, name: str) -> None:
        try:
            _send(self._owner.pop(name), op="done", name=name)
        except (OSError, KeyError):
            pass  # the maker has gone: close() reaps and gc removes

    def close(self) -> None:
        """Remove the zones not run, end the makers and reap them and their zones."""
        makers, self._makers = self._makers, []
        for _, sock in makers:
            try:
                _send(sock, op="close")
            except OSError:
                pass
        for _, sock in makers:
            try:
                while True:  # zones still in the socket: their fds go with it
                    msg, fds = _recv(sock)
                    for fd in fds:
                        os.close(fd)
                    if msg is None:
                        break
                    for pid in msg.get("reap", ()):
                        _reap(pid)
                    if msg.get("pid"):  # a zone not run
                        self._pids.add(msg["pid"])
            except OSError:
                pass
            sock.close()
        for pid in (*self._pids, *(pid for pid, _ in makers)):
            _reap(pid)  # the makers killed the inits; they are our children
        self._pids.clear()
        self._owner.clear()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)  # our child, not yet reaped: its pid is its own
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# -- the maker -------------------------------------------------------------------------
MAKER_SOCK_FD, MAKER_USERNS_FD = 3, 4  # where a maker finds what the caller hands it


def _spawn_maker(template: Template, cgroup_parent: str | None, data_root: str | None,
                 userns: int = -1) -> tuple[int, socket.socket]:
    """Start the maker as a new python (not a fork of the caller: each zone's init is a
    fork of the maker, whose cost grows with its memory: 21 ms of CPU a zone from a
    14 MiB process, 29 from 83 MiB, 40 from 289 MiB here). userns: the pool's user
    namespace (rootless), which the maker keeps at MAKER_USERNS_FD. Its pid, and our
    socket."""
    import sys

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spec = json.dumps({**template.__dict__, "cgroup_parent": cgroup_parent,
                       "data_root": data_root,
                       "userns_fd": MAKER_USERNS_FD if userns >= 0 else None})
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-c", "import sys; from zoned.pool import maker_main; "
            "maker_main(int(sys.argv[1]), sys.argv[2])", str(MAKER_SOCK_FD), spec]
    actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), MAKER_SOCK_FD)]
    high = -1
    if userns >= 0:  # from above both targets, so that neither dup2 overwrites the other
        import fcntl

        high = fcntl.fcntl(userns, fcntl.F_DUPFD_CLOEXEC, 10)
        actions.append((os.POSIX_SPAWN_DUP2, high, MAKER_USERNS_FD))
    try:
        pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if high >= 0:
            os.close(high)
    return pid, ours


def maker_main(fd: int, spec: str) -> None:
    """The maker (a python of its own, the caller's child): make zones while fewer than
    `size` wait, remove each one the caller is done with, and at "close" (or the
    caller's end) the rest. Never returns."""
    from zoned.child import caps

    caps.set_pdeathsig(signal.SIGKILL)
    lastref.single_threaded_only()  # it clones python inits (a rootless pool's) and stages
    code = 0
    sock = socket.socket(fileno=fd)
    try:
        fields = json.loads(spec)
        cgroup_parent, data_root = fields.pop("cgroup_parent"), fields.pop("data_root")
        userns_fd = fields.pop("userns_fd", None)
        keep = max(fd, userns_fd if userns_fd is not None else fd)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))  # what else the caller let through
        if os.getppid() == 1:
            return
        if userns_fd is not None:  # the pool's user namespace: its zones join it
            os.set_inheritable(userns_fd, False)  # as the maker's own was: no exec keeps it
            fields["userns"] = f"/proc/{os.getpid()}/fd/{userns_fd}"
        if cgroup_parent:
            os.environ["ZONED_CGROUP_PARENT"] = cgroup_parent
        if data_root:
            os.environ["ZONED_DATA"] = data_root  # the data root zoned.storage then uses
        _serve(Template(**fields), sock)
    except BaseException as exc:  # noqa: BLE001 - said to the caller, then exit
        code = 1
        try:
            _send(sock, op="error", message=str(exc) or type(exc).__name__)
        except OSError:
            pass
    finally:
        os._exit(code)


def _serve(template: Template, sock: socket.socket) -> None:
    """The maker's loop. A failure to make a zone is sent to the caller (after the zones
    made before it, which stay usable) and ends the making, not the serving: the zones
    out are removed as they are done, the rest at "close" or when the caller has gone."""
    from zoned.backends.zone import ZoneBackend
    from zoned.cgroups import prime

    backend = ZoneBackend(template.root)
    if os.geteuid() != 0 and not template.userns:  # no pool's to join: a maker's own
        template.userns = f"/proc/{os.getpid()}/fd/{shared_userns()}"
    keeper = prime.keeper()  # each init's cgroup move, without its grace period
    out: dict[str, int] = {}  # zones sent, not done: name -> pid
    # each one's state.json as made, which the run's start replaces: freed here, after
    # the zone's removal, not in the caller's rename (a trim on a `discard` mount)
    pinned: dict[str, int] = {}
    taken: set[str] = set()  # of those, the ones a run has taken
    failed = False
    try:
        while True:
            waiting = len(out) - len(taken)
            # make one while fewer than size wait, but not while a run runs if one waits:
            # the run would share its CPU with the maker
            block = failed or waiting >= template.size or (taken and waiting > 0)
            try:
                msg, _ = _recv(sock, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                msg = {"op": "make"}
            if msg is None or msg.get("op") == "close":
                return
            if msg.get("op") == "took" and msg.get("name") in out:
                taken.add(msg["name"])
            elif msg.get("op") == "done" and msg.get("name") in out:
                out.pop(msg["name"])
                taken.discard(msg["name"])
                try:
                    backend.delete(msg["name"], force=True)
                except ZonedError:
                    pass  # one zone's removal: `zoned gc` finishes it, the pool goes on
                _unpin(pinned.pop(msg["name"], -1))
            elif msg.get("op") == "make":
                if keeper is not None:
                    os.write(keeper[0], b"m")
                try:
                    name, pid, fds, reap = _make(template, backend)
                except Exception as exc:  # noqa: BLE001 - the caller raises it
                    failed = True  # (with the caller's children the failed create killed)
                    _send(sock, op="error", message=str(exc) or type(exc).__name__,
                          reap=getattr(exc, "sibling_pids", []))
                    continue
                out[name] = pid
                pinned[name] = lastref.pin(os.path.join(backend.runtime.store.root, name,
                                                        "state.json"))
                try:
                    _send(sock, fds, op="zone", name=name, pid=pid, reap=reap)
                finally:
                    for fd in fds:
                        os.close(fd)
    finally:
        for name, pid in out.items():
            _kill(pid)  # the caller's child: it reaps it in close()
            try:
                backend.delete(name, force=True)
            except ZonedError:
                pass
        for fd in pinned.values():
            _unpin(fd)


def _unpin(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _make(template: Template, backend) -> tuple[str, int, list[int], list[int]]:
    """One zone made ahead: (name, init pid, [sync channel, stdin w, stdout r, stderr r],
    [the caller's other children to reap: a user-namespace stage])."""
    name = new_name()
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        started = backend.create(name, template.config(name),
                                 stdio=(stdin_r, out_w, err_w), keep_pdeathsig=True,
                                 autoremove=True, late_process=True, sibling=True)
    except BaseException:
        for fd in (stdin_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
    chan = started.chan.sock.detach()
    return name, started.pid, [chan, stdin_w, out_r, err_r], list(started.to_reap)
