"""`zoned run --backend vm`: the zone's image and process booted as a QEMU micro-VM
(zoned.backends.vm), detached or in the foreground with the guest's exit code as ours."""
from __future__ import annotations

import os
import signal


def run_vm(rt, cid: str, cfg: dict, args, net, image: str) -> int:
    from zoned.backends.vm import VmBackend, boot_error
    from zoned.cli.common import past_guest_output
    from zoned.errors import ZonedError
    from zoned.vm.machine import exit_status

    backend = VmBackend(rt)
    if args.detach:
        backend.create(cid, cfg, image=image, network=net, log=True,
                       autoremove=args.rm, accel=args.accel, wait=True, images=args.images)
        print(cid)
        return 0
    null = None
    if args.tty:
        stdio = (0, 1, 2)  # QEMU's stdio chardev is the terminal (raw mode is QEMU's)
    else:
        if not args.interactive:
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        stdio = (null if null is not None else 0, 1, 2)
    try:
        started = backend.create(cid, cfg, image=image, stdio=stdio, network=net,
                                 autoremove=args.rm, accel=args.accel,
                                 die_with_caller=True, stdin=args.interactive or args.tty,
                                 images=args.images)
    finally:
        if null is not None:
            os.close(null)

    def forward(signum, frame):  # to the guest's process, as `run` does for a zone's
        try:
            backend.kill(cid, signum)
        except ZonedError:
            pass

    if not args.tty:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, forward)
    while True:
        try:
            started.proc.wait()
            break
        except InterruptedError:
            continue
    past_guest_output(1, 2)
    code = exit_status(started.vmdir)
    error = boot_error(started.vmdir) if code is None else None
    if args.rm:
        rt.delete(cid, force=True)
    elif code is not None:
        rt.record_exit(cid, code)
    if error:
        raise ZonedError(error)
    return code

