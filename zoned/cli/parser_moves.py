"""The parsers of the commands that move containers in time and space (zoned.cli.migration:
checkpoint, restore, migrate, relocation-server, relocation-key), built only when one of
them is asked for."""
from __future__ import annotations


def build(name: str, sub, argparse) -> None:
    {"checkpoint": _checkpoint, "restore": _restore, "migrate": _migrate,
     "relocation-server": _relocation_server,
     "relocation-key": _relocation_key}[name](sub, argparse)


def _checkpoint(sub, argparse):
    c = sub.add_parser("checkpoint", help="dump a running container with CRIU (>= 4); it "
                       "is removed unless --leave-running")
    c.add_argument("--dir", help="where the images go")
    c.add_argument("--export", metavar="FILE.tar.zst",
                   help="also (or only) write the checkpoint as one archive")
    c.add_argument("--leave-running", action="store_true")
    c.add_argument("--tcp-established", action="store_true")
    _runc_criu_flags(c, "where the images go, runc's way (podman's, containerd's): the "
                     "container's files and network stay the engine's")
    c.add_argument("id")


def _runc_criu_flags(p, image_path_help: str) -> None:
    """runc's checkpoint/restore flags (zoned.checkpoint.oci)."""
    p.add_argument("--image-path", help=image_path_help)
    p.add_argument("--work-path", help="where CRIU's log goes (runc's)")
    for flag in ("--file-locks", "--ext-unix-sk", "--shell-job"):
        p.add_argument(flag, action="store_true", help="CRIU's option of that name (runc's)")


def _restore(sub, argparse):
    r = sub.add_parser("restore", help="restore a checkpointed container (--dir, --import) "
                       "or a saved zone (FILE)")
    r.add_argument("file", nargs="?", help="a file `zoned save` wrote (xm restore); with "
                   "--image-path, the container's ID")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--dir", help="a directory `zoned checkpoint` wrote")
    src.add_argument("--import", dest="import_", metavar="FILE",
                     help="an archive `zoned checkpoint --export` wrote")
    r.add_argument("--name", help="the restored container's name (default: the original's)")
    _runc_criu_flags(r, "a checkpoint `checkpoint --image-path` made; FILE is then the "
                     "container's ID (runc's restore, as podman and containerd call it)")
    r.add_argument("--bundle", "-b", help="with --image-path: the bundle to restore into")
    r.add_argument("--detach", "-d", action="store_true",
                   help="with --image-path: return once restored (the only way zoned does)")
    r.add_argument("--pid-file", help="with --image-path: write the restored init's pid")
    r.add_argument("--console-socket", help=argparse.SUPPRESS)  # refused: no terminal
    r.add_argument("--tcp-established", action="store_true", help=argparse.SUPPRESS)
    # (runc's; nothing to do here. go-runc, containerd's, spells it -no-subreaper)
    r.add_argument("--no-subreaper", "-no-subreaper", action="store_true",
                   help=argparse.SUPPRESS)
    r.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)


def _migrate(sub, argparse):
    m = sub.add_parser("migrate", help="move a running container to another host "
                       "(ssh://[user@]host[:port] or zoned://host:port)")
    m.add_argument("--live", action="store_true",
                   help="post-copy: freeze only for the non-memory state (CRIU lazy pages)")
    m.add_argument("--keep-source", action="store_true",
                   help="keep the checkpoint on the source (stop-and-copy only)")
    m.add_argument("--key", help="relocation key for zoned:// (default $ZONED_RELOCATION_KEY "
                   "or /etc/zoned/relocation.pem)")
    m.add_argument("--no-tcp-established", dest="tcp", action="store_false",
                   help="do not keep TCP connections")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    m.add_argument("--format", choices=["text", "json"], default="text",
                   help="the summary's format")
    m.add_argument("id")
    m.add_argument("dest")


def _relocation_server(sub, argparse):
    s = sub.add_parser("relocation-server", help="receive migrating containers")
    s.add_argument("--listen", metavar="ADDR:PORT", help="TLS listener for zoned:// peers")
    s.add_argument("--allow", default="", metavar="HOST[,HOST...]",
                   help="hosts that may send containers (empty: nobody)")
    s.add_argument("--key", help="relocation key shared by the hosts (zoned relocation-key)")
    s.add_argument("--stdio", action="store_true",
                   help="serve one migration on stdin/stdout (what ssh:// runs)")
    s.add_argument("--once", action="store_true", help="exit after one migration")


def _relocation_key(sub, argparse):
    k = sub.add_parser("relocation-key", help="make a relocation key for zoned:// (copy it "
                       "to every host that migrates to or from this one)")
    k.add_argument("file")
