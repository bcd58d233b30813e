"""Container networking (placeholder until the network layer lands)."""
from __future__ import annotations

from zoned.errors import ZonedError


def setup(root: str, cid: str, opts):
    raise ZonedError(f"--network {','.join(opts.network)}: networking is not available yet")


def release(root: str, cid: str, described: dict) -> None:
    return None
