"""A detached zone whose exit code is kept, with no process added for it.

Only a process's parent learns its exit status, and `zoned run -d` exits at once. So the
CLI forks a worker that creates and starts the zone (the init is the worker's child) and
then execs zoned-logger -p in place (zoned.logs.become): the zone's one extra process,
its log writer, is also its init's parent, reaps it and writes STATEDIR/exit. The CLI
process waits only for the worker's "ok" (or its exit, with the error it printed) and
returns, as before.
"""
from __future__ import annotations

import _signal  # not signal.py (its enums: ~4 ms of start-up)
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~8 ms here)
if TYPE_CHECKING:
    from collections.abc import Callable

OK = b"ok\n"


def start_reaped(start: Callable[[], tuple[str, int] | Callable[[], None]]) -> int:
    """Run `start()` (create and start a zone with log=True; returns its state dir and init
    pid, or the step that execs its logger: tty_zone()) in a worker that then becomes the
    zone's logger. 0 once the zone runs, else the worker's exit code (it has printed its
    error)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    worker = os.fork()
    if worker == 0:  # pragma: no cover - the worker, measured through the CLI tests
        os.close(r)
        _work(start, w)  # returns only by an exception: the CLI prints it and exits
        raise AssertionError("unreachable")
    os.close(w)
    # The terminal's Ctrl-C reaches the worker too (same process group), which undoes a
    # half-made zone; this process only waits for its word.
    old = _signal.signal(_signal.SIGINT, _signal.SIG_IGN)

    def forward(signum, frame):
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    olds = {s: _signal.signal(s, forward) for s in (_signal.SIGTERM, _signal.SIGHUP)}
    try:
        from zoned.linux.files import read_to_eof

        said = read_to_eof(r, 16)
    finally:
        os.close(r)
        _signal.signal(_signal.SIGINT, old)
        for s, h in olds.items():
            _signal.signal(s, h)
    if said == OK:
        return 0
    _, status = os.waitpid(worker, 0)
    if os.WIFSIGNALED(status):  # it could say nothing: say it here (gc undoes the rest)
        import signal

        sig = os.WTERMSIG(status)
        print(f"zoned: the zone's start was ended by {signal.Signals(sig).name}; "
              "`zoned gc` removes what it left", file=sys.stderr)
        return 125
    from zoned.api import status_code

    return status_code(status) or 125


def _work(start, report: int) -> None:
    from zoned import logs
    from zoned.cli.common import interruptible

    interruptible()
    logs.defer_next()
    started = start()
    for s in (_signal.SIGINT, _signal.SIGHUP):  # as the logger's own: the zone runs now
        _signal.signal(s, _signal.SIG_IGN)
    if not callable(started):
        logs.create_deferred_files()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # `$(zoned run -d ...)` sees EOF once the CLI has exited
    os.dup2(null, 2)
    os.close(null)
    os.write(report, OK)
    os.close(report)  # the CLI reads to EOF: `run -it` connects before the zone starts
    if callable(started):
        started()
    else:
        logs.become(*started)


ATTACH_SOCK = "attach.sock"


def attach_path(state_dir: str) -> str:
    return os.path.join(state_dir, ATTACH_SOCK)


def tty_zone(rt, cid: str, started, *, early_client: bool = False) -> Callable[[], None]:
    """In the worker, for a zone created with a terminal (and log=False): make it a
    detached zone with a log and an attach socket (state.json: log, logger, data,
    attach), and return the step that starts it and execs zoned-logger -P. With
    `early_client` (`run -it`), the CLI connects before the zone starts, so it sees the
    zone's first output (after the worker's "ok", so it must be the last thing)."""
    import socket

    from zoned import logs
    from zoned.linux.proc import proc_start_time

    state_dir = rt.store.dir(cid)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # through /proc: the state dir's path may be longer than sun_path
        listener.bind(f"/proc/self/fd/{dfd}/{ATTACH_SOCK}")
    finally:
        os.close(dfd)
    os.chmod(attach_path(state_dir), 0o600)
    listener.listen(4)
    with rt.store.lock(cid):
        st = rt.store.read_state(cid)
        z = st["zoned"]
        if not z.get("data"):
            from zoned.storage import make_zone_dir

            z["data"] = make_zone_dir(rt.store.data, cid)
        me = os.getpid()
        z.update(log=os.path.join(z["data"], logs.LOG_NAME), attach=ATTACH_SOCK,
                 logger={"pid": me, "start": proc_start_time(me), "pipe": None})
        rt.store.write_state(cid, st)

    def run() -> None:
        client = None
        if early_client:
            listener.settimeout(10)
            try:
                client, _ = listener.accept()
                socket.send_fds(client, [b"\0"], [started.master])
            except OSError:
                client = None
        try:
            rt.start(cid, started)
        except BaseException:
            rt.delete(cid, force=True)
            raise
        logs.become_tty(state_dir, started.pid, started.master, listener.fileno(),
                        z["data"], client.fileno() if client is not None else None)

    return run


def run_tty(rt, cid: str, cfg: dict, args, net) -> int:
    """`run -dt` (print the name; `zoned attach` later) and `run -it` (attached at once,
    detach keys leave it running; else its exit code, removed with --rm): a zone whose
    pty master its logger holds (tty_zone), so it outlives this process."""
    from zoned.cli.attach_tty import parse_keys

    keys = parse_keys(getattr(args, "detach_keys", None))

    def start():
        started = rt.create(cid, cfg, use_fifo=False, autoremove=args.rm, network=net)
        try:
            return tty_zone(rt, cid, started, early_client=not args.detach)
        except BaseException:
            rt.delete(cid, force=True)
            raise

    code = start_reaped(start)
    if code or args.detach:
        if not code:
            print(cid)
        return code
    return _attached(rt, cid, keys, args)


def _attached(rt, cid: str, keys: bytes, args) -> int:
    """The `run -it` half in this process: attach, pass signals on to the zone's init."""
    import signal

    from zoned.cli.attach_tty import attach, connect

    sock, master = connect(rt.store.dir(cid), cid)
    pid = rt.store.read_state(cid).get("pid") or 0

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
              signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    if attach(sock, master, keys, 0 if args.interactive else None):
        return 0  # detached: it runs on (podman's `run -it` and ctrl-p,ctrl-q)
    from zoned.cli.describe import recorded_code

    code = recorded_code(rt, cid)
    if args.rm:
        rt.delete(cid, force=True)
    return 125 if code is None else code
