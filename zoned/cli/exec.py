"""`zoned exec` (and runc's `exec --process`): a new process in a running container."""
from __future__ import annotations

import os

from zoned.cli.common import attach, command_args, preload_modules, runtime

# What an exec imports, in one go (zoned.cli.common.preload_modules)
EXEC_MODULES = ("zoned.api", "zoned.oci.schema", "zoned.runtime.handoff",
                "zoned.runtime.exec_process", "zoned.child.security", "zoned.child.seccomp",
                "zoned.cgroups.driver", "zoned.cgroups.join")  # (join: the self-join's handles)


def cmd_exec(args) -> int:
    preload_modules(EXEC_MODULES)
    from zoned.api import exec_process, status_code
    from zoned.errors import ConfigError
    from zoned.linux import jsonc

    rt = runtime(args)
    command = command_args(args)
    if args.process:
        try:
            with open(args.process) as f:
                process = jsonc.load(f)
        except ValueError as e:
            raise ConfigError(f"--process {args.process!r}: not valid JSON: {e}") from None
        if not isinstance(process, dict):
            raise ConfigError(f"--process {args.process!r}: must be a JSON object (the "
                              "config's process)")
    else:
        if not command:
            raise ConfigError("exec needs a command (zoned exec NAME -- CMD ARGS...)")
        from zoned.runtime.exec_process import exec_root

        process = exec_process(rt.config(args.id)["process"], command, env=args.env,
                               user=args.user, cwd=args.workdir, tty=args.tty,
                               rootfs=exec_root(rt, args.id) if args.user else None)
        if args.additional_gids:
            if not all(g.isdecimal() for g in args.additional_gids):
                raise ConfigError(f"invalid --additional-gids {args.additional_gids!r}: "
                                  "group ids are numbers")
            process["user"] = {**process.get("user", {}), "additionalGids":
                               [int(g) for g in args.additional_gids]}
        if args.cap:
            from zoned.child.security import add_capabilities

            process["capabilities"] = add_capabilities(process.get("capabilities"), args.cap)
        if args.no_new_privs:
            process["noNewPrivileges"] = True
        if args.apparmor or args.process_label:
            raise ConfigError("--apparmor/--process-label: no such LSM is enabled here")
    if (rt.store.read_state(args.id).get("zoned") or {}).get("vm"):
        return _exec_vm(rt, args, process)
    stdio = None
    null = relay = None
    if not process.get("terminal") and not args.interactive and not args.process:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        stdio = (null, 1, 2)
    if not process.get("terminal") and (os.isatty(1) or os.isatty(2) or os.isatty(0) and
                                        (args.interactive or args.process)):
        # our terminal is not the process's to keep (zoned.cli.relay says why): pipes, or
        # for a process nobody waits for (-d), /dev/null
        if args.detach:
            if null is None:
                null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            stdio = tuple(null if os.isatty(fd) else fd for fd in (0, 1, 2))
        else:
            from zoned.cli.relay import Relay

            relay = Relay(args.interactive or bool(args.process), null)
            stdio = tuple(relay.stdio)
    try:
        started = rt.exec(args.id, process, stdio=stdio, pid_file=args.pid_file,
                          preserve_fds=args.preserve_fds, detach=args.detach)
    except BaseException:
        if relay is not None:
            relay.close()
        raise
    finally:
        if null is not None:
            os.close(null)
    master = started.master
    if args.console_socket and master is not None:
        from zoned.console import send_fd

        send_fd(args.console_socket, master)
        os.close(master)
        master = None
    started.release()
    if args.detach:
        if master is not None:
            os.close(master)
        return 0
    if master is not None:
        attach(master, args.interactive)
        os.close(master)
    if relay is not None:
        relay.started()
        return status_code(relay.wait(started.pid))
    _, status = os.waitpid(started.pid, 0)
    return status_code(status)


def _exec_vm(rt, args, process: dict) -> int:
    """exec in a VM: through its agent, which runs the process in the guest."""
    from zoned.backends.vm import VmBackend
    from zoned.errors import ConfigError

    if args.detach or args.pid_file or args.preserve_fds or args.console_socket:
        raise ConfigError("invalid exec option for a VM: -d, --pid-file, --preserve-fds and "
                          "--console-socket work on zones only")
    stdin = 0 if args.interactive or process.get("terminal") else None
    return VmBackend(rt).exec(args.id, process, stdio=(stdin, 1, 2))
