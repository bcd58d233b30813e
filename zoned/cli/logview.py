"""`zoned logs --tail N` (also with -f). zoned-logger keeps the zone's bytes as they came,
without a time per line, so --since and -t/--timestamps are refused with one line rather
than answered with made-up times."""
from __future__ import annotations

import sys


class TailWriter:
    """A binary stream that keeps only the last `n` lines of what is written before the
    first flush (the log as it was), then passes everything through (what -f follows)."""

    def __init__(self, out, n: int):
        self.out, self.n, self.held, self.passing = out, n, bytearray(), False

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

    if args.since or args.timestamps:
        raise ConfigError(f"{'--since' if args.since else '--timestamps'}: zoned's logs keep "
                          "no time per line (only --tail and -f)")
    if args.tail < 0:
        raise ConfigError(f"invalid --tail {args.tail}: expected 0 or more lines")
    out = TailWriter(sys.stdout.buffer, args.tail)
    if not args.follow:
        logs.read(log, out)
        out.flush()
        return 0

    def finished() -> bool:
        st = rt.state(args.id)
        return st["status"] == "stopped" and not logs.logger_alive(st["zoned"].get("logger"))
    logs.follow(log, out, finished)
    out.flush()
    return 0
