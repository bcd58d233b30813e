"""The Python API: what test harnesses embed and what the CLI is a thin layer over.

    result = zoned.run(["echo", "hi"], image="busybox", memory="64m")
    with zoned.Container(["sleep", "60"], image="busybox") as c:
        print(c.exec(["hostname"]).stdout)
"""
from __future__ import annotations

import os
import signal

from zoned.backends.zone import ZoneBackend
from zoned.backends.zone import network_for as network_for  # the CLI's too
from zoned.errors import ZonedError
from zoned.linux.proc import wait_exit
from zoned.oci.spec import RunOptions

DEFAULT_IMAGE = "busybox"
LIBEXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libexec")


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
        if self.returncode:
            raise ZonedError(f"command {self.args!r} exited with status {self.returncode}")


def new_name() -> str:
    return "z-" + os.urandom(5).hex()


def status_code(wait_status: int) -> int:
    """A waitpid status as a shell would report it: exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def build_config(opts: RunOptions, images_root: str | None = None) -> dict:
    """RunOptions -> OCI config: resolve the image, add --init and the default seccomp."""
    image_rootfs = image_config = None
    if not opts.rootfs:
        from zoned.images.errors import ImageError, ImageNotFound
        from zoned.images.store import ImageStore

        try:
            image = ImageStore(images_root).get(opts.image or DEFAULT_IMAGE)
        except ImageNotFound as e:
            raise ZonedError(str(e)) from None
        except ImageError as e:  # a malformed name ("../../etc") or a damaged image
            from zoned.errors import ConfigError

            raise ConfigError(f"--image: {e}") from None
        opts.image = image.name
        image_rootfs, image_config = image.rootfs_dir, image.config
    init = os.path.join(LIBEXEC, "zoned-init")
    cfg = opts.to_config(image_rootfs=image_rootfs,
                         image_config=image_config,
                         init_path=init if os.path.exists(init) else None)
    from zoned.child.seccomp import default_profile

    cfg["linux"]["seccomp"] = default_profile(cfg["process"]["capabilities"]["bounding"])
    return cfg


def _pump(pid: int, fds: dict[int, list[bytes]], stdin_fd: int | None,
          data: bytes | None) -> int:
    """Feed `data` to stdin and collect output until EOF, then reap `pid`."""
    import selectors

    sel = selectors.DefaultSelector()
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
        for key, _ in sel.select():
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
    _, st = os.waitpid(pid, 0)
    return status_code(st)


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


def _finish(args, code, reads, text, name) -> Result:
    outs = [b"".join(v) for v in reads.values()] if reads else [None, None]
    if text and reads:
        outs = [o.decode(errors="replace") for o in outs]
    return Result(list(args), code, outs[0], outs[1], name)


def run(args: list[str], *, image: str | None = None, capture: bool = True,
        input: bytes | str | None = None, text: bool = False, check: bool = False,
        root: str | None = None, name: str | None = None, images: str | None = None,
        backend: str = "zone", accel: str = "auto", **options) -> Result:
    """Run `args` in a new container, wait for it, remove it and return its Result.

    Keyword options are RunOptions fields (memory="64m", pids_limit=64, env=[...], ...).
    backend="vm" boots it as a QEMU micro-VM instead (accel: "auto", "kvm" or "tcg").
    """
    cid = name or new_name()
    opts = RunOptions(args=list(args), image=image, name=cid, **options)
    if isinstance(input, str):
        input = input.encode()
    if backend == "vm":
        result = _run_vm(list(args), cid, opts, root, images, capture, input, text, accel)
        if check:
            result.check_returncode()
        return result
    if backend != "zone":
        from zoned.errors import ConfigError

        raise ConfigError(f"invalid backend {backend!r}: zone or vm")
    cfg = build_config(opts, images)
    backend = ZoneBackend(root)
    stdio, stdin_w, reads, close = _pipes(capture, input)
    try:
        started = backend.create(cid, cfg, stdio=stdio, keep_pdeathsig=True, autoremove=True,
                                 network=backend.attach_network(cid, opts))
    finally:
        for fd in close:
            os.close(fd)
    try:
        backend.start(cid, started)
        code = _pump(started.pid, reads, stdin_w, input)
    finally:
        backend.delete(cid, force=True)
    result = _finish(args, code, reads, text, cid)
    if check:
        result.check_returncode()
    return result


def _run_vm(args: list[str], cid: str, opts: RunOptions, root: str | None,
            images: str | None, capture: bool, input: bytes | None, text: bool,
            accel: str) -> Result:
    """run() as a VM: the guest's exit code, QEMU removed with the record."""
    from zoned.backends.vm import VmBackend, boot_error, check_options
    from zoned.vm.machine import exit_status

    check_options(opts)
    cfg = build_config(opts, images)
    rt = ZoneBackend(root).runtime
    stdio, stdin_w, reads, close = _pipes(capture, input)
    try:
        started = VmBackend(rt).create(cid, cfg, image=opts.image, stdio=stdio,
                                       autoremove=True, network=network_for(opts, rt, cid),
                                       accel=accel, die_with_caller=True)
    finally:
        for fd in close:
            os.close(fd)
    try:
        _pump(started.pid, reads, stdin_w, input)  # QEMU's status: not the guest's
        code = exit_status(started.vmdir)
        if code is None:
            raise ZonedError(boot_error(started.vmdir))
    finally:
        rt.delete(cid, force=True)
    return _finish(args, code, reads, text, cid)


class Container:
    """A detached container owned by this Python process (its init is our child, so
    `wait()` gets the real exit status). A context manager: removed on exit.
    backend="vm": a QEMU micro-VM (accel "auto", "kvm" or "tcg"), with the same methods."""

    def __init__(self, args: list[str] | None = None, *, image: str | None = None,
                 name: str | None = None, root: str | None = None, images: str | None = None,
                 backend: str = "zone", accel: str = "auto", **options):
        if backend not in ("zone", "vm"):
            from zoned.errors import ConfigError

            raise ConfigError(f"invalid backend {backend!r}: zone or vm")
        self.name = name or new_name()
        self.opts = RunOptions(args=list(args or []), image=image, name=self.name, **options)
        self.backend = ZoneBackend(root)
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
        cfg = build_config(self.opts, self.images)
        network = self.backend.attach_network(self.name, self.opts)
        if self.vm:
            started = VmBackend(self.runtime).create(
                self.name, cfg, image=self.opts.image, log=True, network=network,
                accel=self.accel, wait=True)
            self.pid = started.pid
            return self
        started = self.backend.create(self.name, cfg, log=True, network=network)
        self.backend.start(self.name, started)
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

    def exec(self, args: list[str], *, capture: bool = True, input: bytes | str | None = None,
             text: bool = True, env: list[str] | None = None, user: str | None = None,
             cwd: str | None = None, check: bool = False) -> Result:
        """Run `args` inside the container and wait for it."""
        process = exec_process(self.runtime.config(self.name)["process"], args, env=env,
                               user=user, cwd=cwd)
        if isinstance(input, str):
            input = input.encode()
        if self.vm:
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
        code = _pump(started.pid, reads, stdin_w, input)
        result = _finish(args, code, reads, text, self.name)
        if check:
            result.check_returncode()
        return result

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
        return _finish(args, code, reads, text, self.name)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        self.backend.kill(self.name, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        self.runtime.stop(self.name, timeout)
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once the container's init has exited; None on timeout."""
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

    def logs(self) -> str:
        log = self.runtime.state(self.name)["zoned"].get("log")
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
                self.backend.kill(self.name, signal.SIGKILL)
                self.wait(10)
        except (NotFound, ZonedError):
            pass
        try:
            self.backend.delete(self.name, force=force)
        except NotFound:
            pass


def exec_process(base: dict, args: list[str], *, env: list[str] | None = None,
                 user: str | None = None, cwd: str | None = None, tty: bool = False) -> dict:
    """An OCI process for exec: the container's own (caps, rlimits, env) with overrides."""
    from zoned.oci.spec import merge_env, parse_env, parse_user

    proc = dict(base)
    proc["args"] = list(args)
    proc["terminal"] = tty
    proc["env"] = merge_env(list(base.get("env") or []), parse_env(env or []))
    if user:
        proc["user"] = parse_user(user)
    if cwd:
        proc["cwd"] = cwd
    return proc
