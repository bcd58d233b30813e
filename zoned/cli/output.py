"""How the CLI prints: JSON documents, aligned tables and human sizes, in one place so that
every command's `--format json` and table look alike."""
from __future__ import annotations

import sys


def print_json(data) -> None:
    """`data` as indented JSON on stdout (what `--format json` and `inspect` print)."""
    import json

    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings in left-aligned columns, the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def human(n: float | None) -> str:
    """A byte count as 1.5KiB, 64MiB...; '-' for unknown, negative or unlimited (2^62+)."""
    if n is None or n < 0 or n >= 1 << 62:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}PiB"
