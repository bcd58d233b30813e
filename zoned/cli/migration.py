"""Moving containers in time and space: checkpoint, restore, migrate, and the receiving
side of a migration (relocation-server, relocation-key)."""
from __future__ import annotations

import os
import sys
import time

from zoned.cli.common import interruptible, runtime


def cmd_checkpoint(args) -> int:
    if args.image_path:  # runc's (podman's, containerd's)
        from zoned.checkpoint import oci

        if args.dir or args.export:
            from zoned.errors import ConfigError

            raise ConfigError("--image-path is runc's checkpoint, --dir and --export "
                              "zoned's: give one or the other")
        oci.checkpoint(runtime(args), args.id, args.image_path, work_path=args.work_path,
                       leave_running=args.leave_running,
                       tcp_established=args.tcp_established, criu_flags=_criu_flags(args))
        return 0
    from zoned.checkpoint.dump import checkpoint

    checkpoint(runtime(args), args.id, args.dir, export=args.export,
               leave_running=args.leave_running, tcp_established=args.tcp_established)
    return 0


def _criu_flags(args) -> tuple[str, ...]:
    """runc's flags that are CRIU's options of the same name, as given."""
    return tuple(flag for flag, on in (("--file-locks", args.file_locks),
                                       ("--ext-unix-sk", args.ext_unix_sk),
                                       ("--shell-job", args.shell_job)) if on)


def cmd_restore_oci(args) -> int:
    """runc's restore (podman's, containerd's): `restore --image-path DIR --bundle B
    --detach ID`, the ID where `zoned restore FILE` has its file."""
    from zoned.checkpoint import oci
    from zoned.cli.oci import load_bundle
    from zoned.errors import ConfigError

    for given, why in ((not args.file, "the container's ID"), (not args.bundle, "--bundle"),
                       (not args.detach, "--detach (zoned restores detached only, as "
                                         "podman and containerd ask)")):
        if given:
            raise ConfigError(f"restore --image-path needs {why}")
    if args.dir or args.import_:
        raise ConfigError("--image-path is runc's restore, --dir and --import zoned's: "
                          "give one or the other")
    if args.console_socket:
        raise ConfigError("--console-socket: a container with a terminal cannot be "
                          "restored")
    args.id = args.file
    rt, cfg, bundle, backend = load_bundle(args)
    if backend != "zone":
        raise ConfigError(f"annotations: a {backend} cannot be restored from CRIU's images")
    oci.restore(rt, args.id, args.image_path, cfg, bundle, pid_file=args.pid_file,
                tcp_established=args.tcp_established, criu_flags=_criu_flags(args))
    return 0


def cmd_restore(args) -> int:
    from zoned.checkpoint import archive, restore, scratch

    rt = runtime(args)
    if args.import_:
        from zoned.vm.savefile import is_save_file

        if is_save_file(args.import_):  # a VM's (zoned.backends.vm_save)
            from zoned.backends import vm_save

            with vm_save.read(args.import_, "--import", "container") as saved:
                vm_save.restore(rt, saved, name=args.name, images=args.images)
                print(args.name or saved.header["id"])
            return 0
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=scratch.scratch_dir(rt))
        try:
            archive.import_tar(args.import_, tmp)
            print(restore.restore(rt, tmp, name=args.name, consume=True)["id"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            scratch.scratch_done(rt)
        return 0
    print(restore.restore(rt, args.dir, name=args.name)["id"])
    return 0


def cmd_migrate(args) -> int:
    from zoned.migration.source import migrate

    interruptible()  # a signal mid-move unwinds through the put-back, like any failure
    s = migrate(runtime(args), args.id, args.dest, live=args.live,
                keep_source=args.keep_source, tcp_established=args.tcp, key=args.key,
                progress=None if args.quiet else StderrProgress(args.id))
    if args.format == "json":
        import json

        print(json.dumps(s))
    else:
        pages = f", pages {s['page_bytes'] / 2**20:.1f} MiB" if "page_bytes" in s else ""
        print(f"migrated {s['id']} to {s['destination']} ({s['mode']}): frozen "
              f"{s['frozen_ms']:.0f} ms, total {s['total_ms'] / 1000:.2f} s, "
              f"{s['bytes'] / 2**20:.1f} MiB moved (images {s['image_bytes'] / 2**20:.1f} MiB"
              f"{pages})" + (f"; checkpoint kept in {s['kept']}" if s.get("kept") else ""))
    return 0


class StderrProgress:
    """Phase lines and a byte counter on stderr (redrawn in place on a terminal)."""

    def __init__(self, cid: str):
        self.cid = cid
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self._dirty = False

    def phase(self, text: str) -> None:
        self._end_line()
        sys.stderr.write(f"migrate {self.cid}: {text} [{time.monotonic() - self.t0:6.2f}s]\n")
        sys.stderr.flush()

    def bytes(self, label: str, n: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        sys.stderr.write(f"\rmigrate {self.cid}: {label} {n / 2**20:8.1f} MiB")
        sys.stderr.flush()
        self._dirty = True

    def _end_line(self) -> None:
        if self._dirty:
            sys.stderr.write("\n")
            self._dirty = False


def cmd_relocation_server(args) -> int:
    from zoned.errors import ConfigError
    from zoned.migration import server

    rt = runtime(args)
    if args.stdio:
        if args.listen:
            raise ConfigError("--stdio and --listen exclude each other")
        server.serve_stdio(rt)
        return 0
    if not args.listen:
        raise ConfigError("give --listen ADDR:PORT (or --stdio, as ssh:// runs it)")
    server.serve(rt, args.listen, allow=args.allow, key=args.key, once=args.once)
    return 0


def cmd_relocation_key(args) -> int:
    from zoned.migration.transport import make_key

    make_key(args.file)
    print(args.file)
    return 0
