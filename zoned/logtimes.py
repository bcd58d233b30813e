"""The time of each line of a detached zone's log, for `zoned logs --since T` and `-t`.

zoned-logger (csrc/logger.c) keeps ctr.log as the zone's bytes, unchanged (what `logs`
without these flags prints, and what older zoned wrote), and beside it ctr.ts (rotated
with it to ctr.ts.1): one 16-byte record per read() from the zone's pipe, the log offset
where that read's bytes begin and the time it was read (ns since the epoch). A line has
the time of the record its first byte falls under, as conmon stamps lines when it reads
them. A log written before ctr.ts existed (or restored from a checkpoint) has lines
without a record: they take the time of the file's first record, else its mtime.
"""
from __future__ import annotations

import bisect
import os
import re
import struct
import time

from zoned.logs import LOG_NAME, TS_NAME  # (logs: the cheap one, on the run path)

OLD_TS_NAME = "ctr.ts.1"
RECORD = struct.Struct("<QQ")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_since(value: str, now: float | None = None) -> float:
    """podman's --since: an RFC 3339 time (a date alone, or no offset: local time), Unix
    seconds, or a Go duration before now (10s, 5m, 1h30m); epoch seconds. ValueError."""
    now = time.time() if now is None else now
    text = value.strip()
    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+", text):
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    import datetime

    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return when.timestamp()  # naive: local time, as podman takes it


def stamp(ns: int) -> str:
    """RFC 3339 with nanoseconds and Z, as `logs -t` prints a line's time."""
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


class Timeline:
    """The times of one log file (open as `f`): its ctr.ts records, found by the file's
    inode (ctr.log, or ctr.log.1 once rotated), re-read as the file grows."""

    def __init__(self, f):
        self.f = f
        self.ino = os.fstat(f.fileno()).st_ino
        self.directory = os.path.dirname(os.path.abspath(f.name))
        self.offsets: list[int] = []
        self.times: list[int] = []

    def _ts_path(self) -> str | None:
        for log, ts in ((LOG_NAME, TS_NAME), (LOG_NAME + ".1", OLD_TS_NAME)):
            try:
                if os.stat(os.path.join(self.directory, log)).st_ino == self.ino:
                    return os.path.join(self.directory, ts)
            except FileNotFoundError:
                pass
        return None

    def _load(self) -> None:
        path = self._ts_path()
        if path is None:
            return
        try:
            with open(path, "rb") as t:
                t.seek(len(self.offsets) * RECORD.size)
                data = t.read()
        except FileNotFoundError:
            return
        for off, ns in RECORD.iter_unpack(data[:len(data) // RECORD.size * RECORD.size]):
            self.offsets.append(off)
            self.times.append(ns)

    def at(self, offset: int) -> int:
        """The time (ns) of the byte at `offset`."""
        if not self.offsets or offset >= self.offsets[-1]:
            self._load()  # appended since the last look
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i >= 0:
            return self.times[i]
        if self.times:
            return self.times[0]
        return int(os.fstat(self.f.fileno()).st_mtime * 1e9)


class TimedWriter:
    """Takes the log's bytes with where they come from (write_from) and passes whole
    lines on to `out`, those before `since` (epoch s) left out, each with its time in
    front when `timestamps`."""

    def __init__(self, out, *, since: float | None, timestamps: bool):
        self.out, self.timestamps = out, timestamps
        self.since_ns = None if since is None else int(since * 1e9)
        self.partial = bytearray()
        self.partial_ns = 0
        self.timeline: Timeline | None = None

    def write_from(self, f, offset: int, data: bytes) -> None:
        if self.timeline is None or self.timeline.f is not f:
            self.timeline = Timeline(f)
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl + 1
            if not self.partial:
                self.partial_ns = self.timeline.at(offset + start)
            self.partial += data[start:end]
            if nl >= 0:
                self._emit()
            start = end

    def write(self, data: bytes) -> None:  # no source known: now
        self.timeline = None
        if not self.partial:
            self.partial_ns = time.time_ns()
        self.partial += data
        while b"\n" in self.partial:
            line, _, rest = bytes(self.partial).partition(b"\n")
            self.partial = bytearray(line + b"\n")
            self._emit()
            self.partial = bytearray(rest)

    def _emit(self) -> None:
        line, self.partial = bytes(self.partial), bytearray()
        if self.since_ns is not None and self.partial_ns < self.since_ns:
            return
        if self.timestamps:
            self.out.write(stamp(self.partial_ns).encode() + b" ")
        self.out.write(line)

    def finish(self) -> None:
        """The last line, even without its newline (the log ends there)."""
        if self.partial:
            self._emit()
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()
