"""`zoned run`: a zone from an image or a rootfs, in the foreground or detached; and runc's
`run --bundle ID` (create, start, wait, delete)."""
from __future__ import annotations

import os

from zoned.cli.common import (ZONE_MODULES, attach, command_args, interruptible,
                              preload_modules, runtime)
from zoned.testhooks import mark

# a run's config, from an image; then a zone's (preload_modules)
RUN_MODULES = ("zoned.runconfig", "zoned.images.store") + ZONE_MODULES


def cmd_run(args) -> int:
    # A detached zone's worker (the zone's logger to be) is forked first, before the
    # config's imports and work: the fork of a smaller process, whose child then makes its
    # own pages rather than copying the parent's on each write. The worker reports any
    # error.
    detach = args.detach and not args.tty and args.backend == "zone" and not _restarts(args)
    if args.backend == "zone" and not detach:
        preload_modules(RUN_MODULES)
    from zoned import runconfig

    mark("imported")
    if args.bundle:
        return _run_bundle(args, command_args(args))
    from zoned.oci.spec import check_id

    cid = check_id(args.name) if args.name else runconfig.new_name()
    if detach:
        from zoned.cli.detach import start_reaped

        code = start_reaped(lambda: _start_detached(args, cid))
        mark("detached")
        if code == 0:
            print(cid)
        return code
    rt, cfg, opts, net = _prepare(args, cid)
    if _restarts(args):  # under a monitor (zoned.zones)
        from zoned.cli.zones import run_restart

        return run_restart(args, opts, cid)
    if args.backend == "vm":
        from zoned.cli.run_vm import run_vm

        return run_vm(rt, cid, cfg, args, net, opts.image)
    if args.tty and (args.detach or args.interactive):  # the logger holds the pty
        from zoned.cli.detach import run_tty

        return run_tty(rt, cid, cfg, args, net)
    return _foreground(rt, cid, cfg, args, net)


def _restarts(args) -> bool:
    return bool(args.restart and args.restart != "no")


def _start_detached(args, cid: str) -> tuple[str, int]:
    """In the worker of a detached run (its logger becomes the init's parent, so the exit
    code is kept): the whole start, as start_reaped wants it."""
    preload_modules(RUN_MODULES)
    rt, cfg, _opts, net = _prepare(args, cid)
    started = rt.run(cid, cfg, log=True, autoremove=args.rm, network=net)
    mark("started")
    return rt.store.dir(cid), started.pid


def _prepare(args, cid: str):
    """The run's options checked and made concrete: (runtime, OCI config, RunOptions,
    network set-up or None). A --restart run gets no config (its monitor makes it)."""
    from zoned import runconfig
    from zoned.errors import ConfigError
    from zoned.oci.spec import RunOptions

    image, command = image_and_command(args)
    env = list(args.env)
    if args.env_file:
        from zoned.oci.runflags import read_env_file

        env = [e for f in args.env_file for e in read_env_file(f)] + env
    rt = runtime(args)
    opts = RunOptions(args=command, image=image, rootfs=args.rootfs, name=cid,
                      hostname=args.hostname, memory=args.memory, memory_swap=args.memory_swap,
                      cpus=args.cpus, cpu_shares=args.cpu_shares, cpuset_cpus=args.cpuset_cpus,
                      pids_limit=args.pids_limit, env=env, workdir=args.workdir,
                      entrypoint=args.entrypoint,
                      user=args.user, volumes=args.volume, read_only=args.read_only,
                      init=args.init, tty=args.tty, interactive=args.interactive,
                      network=args.network, ip=args.ip, mac=args.mac,
                      publish=args.publish, dns=args.dns, add_host=args.add_host,
                      tmpfs=args.tmpfs, mounts=args.mount, cap_add=args.cap_add,
                      cap_drop=args.cap_drop, privileged=args.privileged,
                      labels=args.label, stop_signal=args.stop_signal,
                      stop_timeout=args.stop_timeout, volume_root=rt.store.root,
                      volume_data=rt.store.data,
                      annotations=_memory_cgroup(args.memory_cgroup))
    if opts.publish and not opts.network:  # podman's: -p alone means the default network
        from zoned.network.definitions import DEFAULT_NETWORK

        opts.network = [DEFAULT_NETWORK]
    if _restarts(args):
        return rt, None, opts, None
    if args.backend == "vm":
        from zoned.backends.vm import check_options

        _refuse_for_vm(args)
        check_options(opts)
    elif args.accel != "auto":
        raise ConfigError("invalid --accel: only with --backend vm")
    interruptible()
    cfg = runconfig.build_config(opts, args.images)
    mark("configured")
    if opts.privileged:  # podman's --privileged runs without a seccomp filter
        cfg["linux"].pop("seccomp", None)
    return rt, cfg, opts, runconfig.network_for(opts, rt, cid)


def _refuse_for_vm(args) -> None:
    """The run flags a VM guest cannot honour (it has its own kernel, init and /dev): one
    line each, before anything exists. -v, named volumes and bind/volume --mounts are
    shared into the guest; --label, --stop-signal, --stop-timeout, --env-file work."""
    from zoned.errors import ConfigError

    tmpfs_mount = [m for m in args.mount if "type=tmpfs" in m.replace(" ", "")]
    for flag, value in (("--tmpfs", args.tmpfs), ("--mount type=tmpfs", tmpfs_mount),
                        ("--cap-add", args.cap_add), ("--cap-drop", args.cap_drop),
                        ("--privileged", args.privileged),
                        ("--memory-cgroup shared", args.memory_cgroup == "shared")):
        if value:
            raise ConfigError(f"invalid {flag} with --backend vm: not supported for VMs")


def _memory_cgroup(choice: str | None) -> dict | None:
    """--memory-cgroup as its annotation (zoned.runtime.cgroup_paths)."""
    if choice is None:
        return None
    from zoned.runtime.cgroup_paths import ANN_MEMORY_CGROUP

    return {ANN_MEMORY_CGROUP: choice}


def image_and_command(args) -> tuple[str | None, list[str]]:
    """podman's `run [OPTIONS] IMAGE [COMMAND...]`. The first argument is the image unless
    --image or --rootfs names one, or a `--` comes first (then the default image runs the
    command, as zoned always did): so `zoned run sh` never silently runs `sh` in busybox,
    and `zoned run debian ls` never runs a command called "debian"."""
    from zoned.errors import ConfigError

    if args.image or args.rootfs or args.command[:1] == ["--"]:
        return args.image, command_args(args)
    if not args.command:
        return None, []  # the default image's own command
    name, rest = args.command[0], args.command[1:]
    from zoned.images.errors import ImageError
    from zoned.images.store import ImageStore

    try:
        ImageStore(args.images).get(name)
    except ImageError:
        raise ConfigError(f"no image {name!r} in the image store (see `zoned image ls`); to "
                          f"run {name!r} in the default image: zoned run [OPTIONS] -- "
                          f"{name} ...") from None
    return name, rest[1:] if rest[:1] == ["--"] else rest


def _run_bundle(args, rest: list[str]) -> int:
    """runc run: create + start a bundle; wait for it unless --detach, then delete it. A
    zone without a terminal is created and started in one step (Runtime.run)."""
    from zoned.cli.oci import create_bundle, load_bundle
    from zoned.errors import ConfigError

    if len(rest) != 1:
        raise ConfigError("run --bundle takes exactly one argument: the container ID")
    args.id = rest[0]
    rt, cfg, bundle, backend = load_bundle(args)
    if backend == "zone" and not (cfg.get("process") or {}).get("terminal"):
        rt.run(args.id, cfg, bundle=bundle, pid_file=args.pid_file,
               preserve_fds=args.preserve_fds, no_pivot=args.no_pivot)
    else:  # the console socket gets the pty before the process starts
        create_bundle(args, rt, cfg, bundle, backend)
        rt.start(args.id)
    if args.detach:
        return 0
    st = rt.store.read_state(args.id)
    rt.wait(args.id)
    code = 0
    try:
        _, status = os.waitpid(st["pid"], 0)  # ours: we forked it
        from zoned.runconfig import status_code

        code = status_code(status)
    except ChildProcessError:
        pass
    if (st.get("zoned") or {}).get("vm"):  # QEMU's status is not the guest process's
        from zoned.backends.vm import exit_code
        from zoned.cli.common import past_guest_output

        past_guest_output(1, 2)
        code = exit_code(st)
        code = 255 if code is None else code
    if not args.keep:
        rt.delete(args.id, force=True)
    return code


def _foreground(rt, cid: str, cfg: dict, args, net=None) -> int:
    """Run the zone with our stdio, forwarding signals to it; its exit code is ours."""
    import _signal  # not signal.py (its enums: ~4 ms of start-up)

    from zoned.runconfig import status_code

    stdio = None
    null = relay = None
    if not args.tty and not args.interactive:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        stdio = (null, 1, 2)
    if not args.tty and (os.isatty(1) or os.isatty(2) or args.interactive and os.isatty(0)):
        from zoned.cli.relay import Relay  # pipes, not our terminal (relay.py says why)

        relay = Relay(args.interactive, null)
        stdio = tuple(relay.stdio)

    def forward_to(pid: int) -> None:
        """From the start on, our signals are the zone's (its process may run before
        rt.run returns); before, they interrupt the create, which undoes it."""
        def forward(signum, frame):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

        for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
                    _signal.SIGUSR1, _signal.SIGUSR2):
            _signal.signal(sig, forward)

    try:
        started = rt.run(cid, cfg, stdio=stdio, keep_pdeathsig=True, autoremove=args.rm,
                         network=net, on_start=forward_to)
    except BaseException:
        if relay is not None:
            relay.close()
        raise
    finally:
        if null is not None:
            os.close(null)
    pid = started.pid
    mark("started")
    try:
        if started.master is not None:
            attach(started.master, args.interactive)
        if relay is not None:
            relay.started()
            status = relay.wait(pid)
        else:
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
        code = status_code(status)
        mark("exited")
    finally:
        if started.master is not None:
            os.close(started.master)
    if args.rm:
        rt.delete(cid, force=True)
    else:
        rt.record_exit(cid, code)
    mark("removed" if args.rm else "recorded")
    return code
