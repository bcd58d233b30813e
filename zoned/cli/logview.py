"""`zoned logs [--since T] [-t] [--tail N] [-f]`. zoned-logger keeps the zone's bytes as
they came in ctr.log and when each read of them came in ctr.ts (zoned.logtimes): --since
and -t/--timestamps read the two together, as podman's k8s-file log gives them."""
from __future__ import annotations

import sys


class TailWriter:
    """A binary stream that keeps only the last `n` lines of what is written before the
    first flush (the log as it was), then passes everything through (what -f follows)."""

    def __init__(self, out, n: int | None):
        self.out, self.n, self.held, self.passing = out, n, bytearray(), n is None

    def write(self, data: bytes) -> None:
        if self.passing:
            self.out.write(data)
        else:
            self.held += data
            if len(self.held) > 64 << 20:  # keep memory bounded: whole lines only matter
                cut = len(self.held) - (32 << 20)
                del self.held[:cut]

    def flush(self) -> None:
        if not self.passing:
            self.passing = True
            lines = bytes(self.held).splitlines(keepends=True)
            self.out.write(b"".join(lines[-self.n:] if self.n else []))
        self.out.flush()


def show(rt, args, log: str) -> int:
    from zoned import logs
    from zoned.errors import ConfigError

    if args.tail is not None and args.tail < 0:
        raise ConfigError(f"invalid --tail {args.tail}: expected 0 or more lines")
    since = None
    if args.since:
        from zoned.logtimes import parse_since

        try:
            since = parse_since(args.since)
        except ValueError:
            raise ConfigError(f"invalid --since {args.since!r}: expected an RFC 3339 time "
                              "(2026-01-02T15:04:05Z), Unix seconds or a duration (10s, "
                              "5m, 1h30m)") from None
    tail = out = TailWriter(sys.stdout.buffer, args.tail)
    if since is not None or args.timestamps:
        from zoned.logtimes import TimedWriter

        out = TimedWriter(tail, since=since, timestamps=args.timestamps)
    if not args.follow:
        logs.read(log, out)
        if out is not tail:
            out.finish()
        tail.flush()
        return 0

    def finished() -> bool:
        st = rt.state(args.id)
        return st["status"] == "stopped" and not logs.logger_alive(st["zoned"].get("logger"))
    logs.follow(log, out, finished)
    if out is not tail:
        out.finish()
    tail.flush()
    return 0
