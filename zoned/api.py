"""The Python API: what test harnesses embed and what the CLI is a thin layer over.

    result = zoned.run(["echo", "hi"], image="busybox", memory="64m", timeout=30)
    with zoned.Container(["sleep", "60"], image="busybox") as c:
        print(c.exec(["hostname"]).stdout)

It behaves like `subprocess` where the two overlap: a list command (a str only with
shell=True, as `sh -c`), `timeout=` raising TimeoutExpired and `check=True` raising
CalledProcessError, both subclasses of subprocess's own (and of ZonedError).
"""
from __future__ import annotations

import os
import _signal  # not signal.py: its enums of every signal cost ~4 ms a command
import time

from zoned.backends.zone import ZoneBackend
from zoned.errors import ZonedError
from zoned.linux import lastref, netahead
from zoned.linux.proc import wait_exit
from zoned.oci.spec import RunOptions
# What the CLI's `run` uses too, in a module of their own (it need not load this one):
from zoned.runconfig import DEFAULT_IMAGE as DEFAULT_IMAGE
from zoned.runconfig import LIBEXEC as LIBEXEC
from zoned.runconfig import build_config as build_config
from zoned.runconfig import network_for as network_for
from zoned.runconfig import new_name as new_name
from zoned.runconfig import status_code as status_code


class Result:
    """What a finished container or exec gave back (like subprocess.CompletedProcess)."""

    __slots__ = ("args", "returncode", "stdout", "stderr", "name")

    def __init__(self, args: list[str], returncode: int, stdout: bytes | str | None = None,
                 stderr: bytes | str | None = None, name: str | None = None):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr
        self.name = name

    def __repr__(self) -> str:
        return (f"Result(args={self.args!r}, returncode={self.returncode}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")

    def check_returncode(self) -> None:
        """Raise CalledProcessError (a subprocess.CalledProcessError) if it failed."""
        if self.returncode:
            from zoned.api_errors import CalledProcessError

            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr,
                                     self.name)

    @property
    def output(self):  # subprocess.CompletedProcess has no such name, its error does
        return self.stdout


def __getattr__(name: str):
    """zoned.api.TimeoutExpired / CalledProcessError, loaded when first asked for."""
    if name in ("TimeoutExpired", "CalledProcessError"):
        from zoned import api_errors

        return getattr(api_errors, name)
    raise AttributeError(f"module 'zoned.api' has no attribute {name!r}")


def command_args(args, shell: bool = False) -> list[str]:
    """The argv a command means: a list as is; a str only with shell=True, as `sh -c STR`
    (subprocess's rule: iterating a str gave `exec: "e"` before)."""
    if isinstance(args, (str, bytes)):
        if isinstance(args, bytes):
            args = args.decode()
        if shell:
            return ["/bin/sh", "-c", args]
        raise TypeError(f"command {args!r} is a str: pass a list (shlex.split(cmd)) or "
                        "shell=True to run it with /bin/sh -c")
    if shell:
        raise TypeError("shell=True needs the command as one str")
    args = list(args) if args is not None else []
    for a in args:
        if not isinstance(a, str):
            raise TypeError(f"command argument {a!r} is not a str")
    return args


GRACE = 2.0  # after a timeout's kill: how long to drain output still buffered in pipes


def pump(pid: int, fds: dict[int, list[bytes]], stdin_fd: int | None,
          data: bytes | None, timeout: float | None = None,
          kill=None) -> tuple[int, bool]:
    """Feed `data` to stdin and collect output until EOF, then reap `pid`.
    With `timeout`: call kill() when it runs out, drain for GRACE seconds (a process the
    kill missed may hold a pipe), and return (status, True)."""
    import selectors

    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    sel = selectors.DefaultSelector()
    try:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        view = memoryview(data or b"")
        if stdin_fd is not None:
            if view:
                os.set_blocking(stdin_fd, False)
                sel.register(stdin_fd, selectors.EVENT_WRITE)
            else:
                os.close(stdin_fd)
                stdin_fd = None
        while sel.get_map():
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    if timed_out:
                        break  # drained what we could: the rest is a stray holder's
                    timed_out = True
                    kill()
                    deadline = time.monotonic() + GRACE
                    continue
            for key, _ in sel.select(wait):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, view[:65536])
                    except BrokenPipeError:
                        n = len(view)
                    view = view[n:]
                    if not view:
                        sel.unregister(fd)
                        os.close(fd)
                        stdin_fd = None
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    fds[fd].append(chunk)
                else:
                    sel.unregister(fd)
                    os.close(fd)
        for key in list(sel.get_map().values()):
            sel.unregister(key.fd)
            os.close(key.fd)
    finally:
        sel.close()  # its epoll fd: else only the cyclic GC closes it (sel <-> its map),
        # maybe in a child forked meanwhile, where that number is another file by then
    if deadline is not None and not timed_out:  # no pipes to wait on: wait for the pid
        import select

        fd = os.pidfd_open(pid)  # our unreaped child: it is the process we started
        try:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                timed_out = True
                kill()
        finally:
            os.close(fd)
    _, st = os.waitpid(pid, 0)
    return status_code(st), timed_out


def _pipes(capture: bool, input: bytes | None):
    """-> (child stdio, parent stdin write end, parent read ends {fd: chunks}, to close)."""
    stdin_r = stdin_w = None
    if input is not None:
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    else:
        stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if capture:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        return (stdin_r, out_w, err_w), stdin_w, {out_r: [], err_r: []}, [stdin_r, out_w, err_w]
    return (stdin_r, 1, 2), stdin_w, {}, [stdin_r]


def finish(args, code, reads, text, name, *, timeout: float | None = None,
           timed_out: bool = False, check: bool = False) -> Result:
    """The Result of a run or exec from its status and collected output; raises
    TimeoutExpired if it timed out, CalledProcessError for a non-zero status with check."""
    outs = [b"".join(v) for v in reads.values()] if reads else [None, None]
    if text and reads:
        outs = [o.decode(errors="replace") for o in outs]
    result = Result(list(args), code, outs[0], outs[1], name)
    if timed_out:
        from zoned.api_errors import TimeoutExpired

        raise TimeoutExpired(result.args, timeout, result.stdout, result.stderr, result.name)
    if check:
        result.check_returncode()
    return result


def _kill_pid(pid: int):
    def kill() -> None:
        try:
            os.kill(pid, _signal.SIGKILL)  # our child, not yet reaped: its pid is its own
        except ProcessLookupError:
            pass
    return kill


def run(args: list[str] | str, *, image: str | None = None, capture: bool = True,
        input: bytes | str | None = None, text: bool = False, check: bool = False,
        timeout: float | None = None, shell: bool = False,
        root: str | None = None, name: str | None = None, images: str | None = None,
        backend: str = "zone", accel: str = "auto", **options) -> Result:
    """Run `args` in a new container, wait for it, remove it and return its Result
    (.args, .returncode, .stdout, .stderr, .name), as subprocess.run does.

    args: a list; a str only with shell=True (run as /bin/sh -c STR in the zone).
    capture: stdout/stderr into the Result (False: this process's own).
    input: bytes (or str) fed to the command's stdin; else stdin is /dev/null.
    text: decode stdout/stderr to str.  check: raise zoned.api.CalledProcessError (a
    subprocess.CalledProcessError) on a non-zero status.  timeout: seconds; then the zone
    is killed (SIGKILL to its PID 1) and zoned.api.TimeoutExpired (a
    subprocess.TimeoutExpired) raised with the output so far.
    root: the state root (default $ZONED_ROOT or /run/zoned; rootless: zoned.rootless).
    name: the zone's name (default z-<random>).  images: the image store's root.
    Other keyword options are RunOptions fields, listed in README "Options": image,
    memory="64m", cpus=0.5, pids_limit=64, env=["A=b"], user, workdir, hostname,
    volumes=["/src:/dst:ro"], read_only, init, network, publish, ...
    backend="vm" boots it as a QEMU micro-VM instead (accel: "auto", "kvm" or "tcg").
    """
    args = command_args(args, shell)
    cid = name or new_name()
    opts = RunOptions(args=list(args), image=image, name=cid, **options)
    if isinstance(input, str):
        input = input.encode()
    if backend == "vm":
        if timeout is not None:
            from zoned.errors import ConfigError

            raise ConfigError("timeout= is not supported with backend=\"vm\" yet")
        result = _run_vm(list(args), cid, opts, root, images, capture, input, text, accel)
        if check:
            result.check_returncode()
        return result
    if backend != "zone":
        from zoned.errors import ConfigError

        raise ConfigError(f"invalid backend {backend!r}: zone or vm")
    from zoned.cgroups import prime
    from zoned.cgroups.join import prime_for_create

    prime_for_create()  # a cgroup move by pid: its grace period overlaps the rest
    keeping = lastref.begin()  # what the run replaces and removes: freed off our path
    try:
        try:
            backend = ZoneBackend(root)
            _own_volumes(opts, backend.runtime)
            cfg = build_config(opts, images)
            stdio, stdin_w, reads, close = _pipes(capture, input)
            netns = netahead.take() if netahead.fits(cfg) else None
            if netns is not None:
                close.append(netns)
            try:
                started = backend.run(cid, cfg, stdio=stdio, keep_pdeathsig=True,
                                      autoremove=True, netns_fd=netns,
                                      network=backend.attach_network(cid, opts))
            finally:
                for fd in close:
                    os.close(fd)
        finally:
            prime.wait()  # (create joined it; not if it failed before the move)
        try:
            code, timed_out = pump(started.pid, reads, stdin_w, input, timeout,
                                    _kill_pid(started.pid))  # PID 1: its namespace dies too
        finally:
            backend.delete(cid, force=True)
    finally:
        if keeping:
            lastref.end()
    netahead.make_next()  # (now, not at the start: finding 26)
    return finish(args, code, reads, text, cid, timeout=timeout, timed_out=timed_out,
                  check=check)


def _own_volumes(opts: RunOptions, rt) -> None:
    """Named volumes in the data root of the runtime the zone is made in (unless the
    caller named one)."""
    if opts.volume_root is None and opts.volume_data is None:
        opts.volume_root, opts.volume_data = rt.store.root, rt.store.data


def _run_vm(args: list[str], cid: str, opts: RunOptions, root: str | None,
            images: str | None, capture: bool, input: bytes | None, text: bool,
            accel: str) -> Result:
    """run() as a VM: the guest's exit code, QEMU removed with the record."""
    from zoned.backends.vm import VmBackend, boot_error, check_options
    from zoned.vm.machine import exit_status

    check_options(opts)
    rt = ZoneBackend(root).runtime
    _own_volumes(opts, rt)
    cfg = build_config(opts, images)
    stdio, stdin_w, reads, close = _pipes(capture, input)
    try:
        started = VmBackend(rt).create(cid, cfg, image=opts.image, stdio=stdio,
                                       autoremove=True, network=network_for(opts, rt, cid),
                                       accel=accel, die_with_caller=True)
    finally:
        for fd in close:
            os.close(fd)
    try:
        pump(started.pid, reads, stdin_w, input)  # (zoned-vmwrap, QEMU's parent)
        code = exit_status(started.vmdir)
        if code is None:
            raise ZonedError(boot_error(started.vmdir))
    finally:
        rt.delete(cid, force=True)
    return finish(args, code, reads, text, cid)


class Container:
    """A detached container owned by this Python process (its init is our child, so
    `wait()` gets the real exit status). A context manager: started on entry, killed and
    removed on exit. Its stdout and stderr go to two logs: logs("stdout"), logs("stderr").
    backend="vm": a QEMU micro-VM (accel "auto", "kvm" or "tcg"), with the same methods.

    args: a list (a str with shell=True); default: the image's command.  root, images,
    name and every RunOptions field (memory=, network=, ...) as zoned.run takes them."""

    def __init__(self, args: list[str] | str | None = None, *, image: str | None = None,
                 name: str | None = None, root: str | None = None, images: str | None = None,
                 backend: str = "zone", accel: str = "auto", shell: bool = False,
                 **options):
        args = command_args(args, shell)
        if backend not in ("zone", "vm"):
            from zoned.errors import ConfigError

            raise ConfigError(f"invalid backend {backend!r}: zone or vm")
        self.name = name or new_name()
        self.opts = RunOptions(args=list(args or []), image=image, name=self.name, **options)
        self.backend = ZoneBackend(root)
        _own_volumes(self.opts, self.backend.runtime)
        self.runtime = self.backend.runtime  # for what the Backend interface leaves out
        self.images = images
        self.vm = backend == "vm"
        self.accel = accel
        self.pid: int | None = None
        self.returncode: int | None = None

    def start(self) -> "Container":
        if self.vm:
            from zoned.backends.vm import VmBackend, check_options

            check_options(self.opts)
            started = VmBackend(self.runtime).create(
                self.name, build_config(self.opts, self.images), image=self.opts.image,
                log=True, network=self.backend.attach_network(self.name, self.opts),
                accel=self.accel, wait=True)
            self.pid = started.pid
            return self
        from zoned.cgroups import prime
        from zoned.cgroups.join import prime_for_create

        prime_for_create()  # as in run()
        try:
            started = self.backend.run(
                self.name, build_config(self.opts, self.images), log=True,
                network=self.backend.attach_network(self.name, self.opts), split_stderr=True)
        finally:
            prime.wait()
        self.pid = started.pid
        return self

    def __enter__(self) -> "Container":
        return self.start() if self.pid is None else self

    def __exit__(self, *exc) -> None:
        self.remove(force=True)

    @property
    def state(self) -> dict:
        return self.backend.state(self.name)

    @property
    def status(self) -> str:
        return self.state["status"]

    def exec(self, args: list[str] | str, *, capture: bool = True,
             input: bytes | str | None = None, text: bool = True,
             env: list[str] | None = None, user: str | None = None, cwd: str | None = None,
             check: bool = False, timeout: float | None = None,
             shell: bool = False) -> Result:
        """Run `args` inside the container and wait for it (docker exec), as run() does:
        input= is its stdin (else /dev/null), text (default True here) decodes output,
        env=["A=b"], user="uid[:gid]", cwd=; check= raises CalledProcessError; timeout=
        SIGKILLs the exec'd process (not the zone) and raises TimeoutExpired."""
        args = command_args(args, shell)
        from zoned.runtime.exec_process import exec_root

        process = exec_process(self.runtime.config(self.name)["process"], args, env=env,
                               user=user, cwd=cwd,
                               rootfs=exec_root(self.runtime, self.name) if user else None)
        if isinstance(input, str):
            input = input.encode()
        if self.vm:
            if timeout is not None:
                from zoned.errors import ConfigError

                raise ConfigError("timeout= is not supported with backend=\"vm\" yet")
            result = self._exec_vm(args, process, capture, input, text)
            if check:
                result.check_returncode()
            return result
        stdio, stdin_w, reads, close = _pipes(capture, input)
        try:
            started = self.backend.exec(self.name, process, stdio=stdio)
        finally:
            for fd in close:
                os.close(fd)
        started.release()
        code, timed_out = pump(started.pid, reads, stdin_w, input, timeout,
                                _kill_pid(started.pid))
        return finish(args, code, reads, text, self.name, timeout=timeout,
                      timed_out=timed_out, check=check)

    def _exec_vm(self, args: list[str], process: dict, capture: bool,
                 input: bytes | None, text: bool) -> Result:
        """exec in a VM: its agent copies the streams in this thread, so they go through
        temp files, not pipes (a full pipe would block it)."""
        import tempfile

        from zoned.backends.vm import VmBackend

        with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            fin.write(input or b"")
            fin.seek(0)
            stdio = (fin.fileno(), out.fileno(), err.fileno()) if capture else \
                (fin.fileno(), 1, 2)
            code = VmBackend(self.runtime).exec(self.name, process, stdio=stdio)
            reads = {}
            if capture:
                out.seek(0)
                err.seek(0)
                reads = {1: [out.read()], 2: [err.read()]}
        return finish(args, code, reads, text, self.name)

    def kill(self, sig: int = _signal.SIGKILL) -> None:
        """Send `sig` to the zone's PID 1. The default is SIGKILL (docker kill's): PID 1
        ignores every signal it has no handler for, so SIGTERM does not stop `sleep`."""
        self.backend.kill(self.name, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (or the image's StopSignal), SIGKILL after `timeout` seconds; the exit
        status (137 when it had to be killed)."""
        self.runtime.stop(self.name, timeout)
        return self._reap(10)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status once the container's init has exited. timeout= (seconds): the
        zone is killed when it runs out and TimeoutExpired raised, with its logs."""
        code = self._reap(timeout)
        if code is None:
            self.kill(_signal.SIGKILL)
            self._reap(10)
            from zoned.api_errors import TimeoutExpired

            raise TimeoutExpired(self.opts.args, timeout, self.logs("stdout"),
                                 self.logs("stderr"), self.name)
        return code

    def _reap(self, timeout: float | None) -> int | None:
        """The exit status, or None if the init still runs after `timeout`."""
        if self.returncode is not None:
            return self.returncode
        if self.pid is None:
            raise ZonedError(f"container {self.name!r} was not started")
        st = self.runtime.store.read_state(self.name)
        if not wait_exit(self.pid, st["zoned"].get("pid_start"), timeout):
            return None
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = status_code(status)
        except ChildProcessError:
            pass
        if self.vm:  # QEMU's status is not the guest process's
            from zoned.backends.vm import exit_code

            self.returncode = exit_code(self.runtime.store.read_state(self.name))
        return self.returncode

    def logs(self, stream: str = "all") -> str:
        """What the zone wrote: stream "stdout", "stderr", or "all" (stdout, then stderr:
        the two are logged apart, so their interleaving is not kept)."""
        if stream == "all":
            return self.logs("stdout") + self.logs("stderr")
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"invalid stream {stream!r}: stdout, stderr or all")
        z = self.runtime.state(self.name)["zoned"]
        log = z.get("log") if stream == "stdout" else z.get("log_stderr")
        if not log:
            return ""
        import io

        from zoned.logs import read

        out = io.BytesIO()
        read(log, out)  # ctr.log.1 and ctr.log: across a rotation
        return out.getvalue().decode(errors="replace")

    def stats(self) -> dict:
        return self.runtime.cgroup(self.runtime.state(self.name)).stats()

    def remove(self, force: bool = True) -> None:
        from zoned.errors import NotFound

        try:
            if self.pid is not None and self.returncode is None and force:
                self.backend.kill(self.name, _signal.SIGKILL)
                self._reap(10)
        except (NotFound, ZonedError):
            pass
        try:
            self.backend.delete(self.name, force=force)
        except NotFound:
            pass


def exec_process(base: dict, args: list[str], *, env: list[str] | None = None,
                 user: str | None = None, cwd: str | None = None, tty: bool = False,
                 rootfs: str | None = None) -> dict:
    """An OCI process for exec: the container's own (caps, rlimits, env) with overrides.
    rootfs: where user names and a uid's primary group are looked up (exec_root(): the
    running zone's own passwd and group, as podman's exec does)."""
    from zoned.oci.values import merge_env, parse_env, parse_user

    proc = dict(base)
    proc["args"] = list(args)
    proc["terminal"] = tty
    proc["env"] = merge_env(list(base.get("env") or []), parse_env(env or []))
    if user:
        proc["user"] = parse_user(user, rootfs)
    if cwd:
        proc["cwd"] = cwd
    return proc
