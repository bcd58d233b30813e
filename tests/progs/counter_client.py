"""counter_client.py IP PORT INTERVAL OUT: one TCP connection to a memtouch server, `next`
every INTERVAL s, each reply logged to OUT as "<monotonic s> value <n>".

It connects once (retrying for 10 s while the server starts) and never reconnects: a broken
connection must show, as "<t> error <what>" and exit 1, not be papered over. Replies have no
timeout: during a migration the connection is frozen, and TCP retransmits carry it over.
"""
from __future__ import annotations

import signal
import socket
import sys
import time


def main() -> int:
    ip, port, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    # SIGTERM ends it between two requests, never with one in flight: a request the server
    # answered but this client never logged would make the server's count one ahead.
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    log = open(out, "a", buffering=1)

    def note(kind: str, what: object) -> None:
        log.write(f"{time.monotonic():.6f} {kind} {what}\n")

    end = time.monotonic() + 10
    while True:
        if stopping:
            return 0
        try:
            s = socket.create_connection((ip, port), timeout=1)
            break
        except OSError as e:
            if time.monotonic() > end:
                note("error", f"connect: {e}")
                return 1
            time.sleep(0.05)
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    note("connected", f"{s.getsockname()[0]}:{s.getsockname()[1]}")
    f = s.makefile("rwb", buffering=0)
    try:
        while True:
            f.write(b"next\n")
            line = f.readline()
            if not line.endswith(b"\n"):
                note("error", f"connection closed (got {line!r})")
                return 1
            note("value", int(line))
            if stopping:
                return 0
            time.sleep(interval)
            if stopping:
                return 0
    except (OSError, ValueError) as e:
        note("error", repr(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
