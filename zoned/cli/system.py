"""`zoned gc`: what crashed or killed zoned processes left behind."""
from __future__ import annotations

import sys

from zoned.cli.common import runtime


def cmd_gc(args) -> int:
    from zoned.gc import collect

    errors: list[str] = []
    for line in collect(runtime(args), dry_run=args.dry_run, errors=errors):
        print(line)
    for e in errors:  # the rest was collected; the next gc tries these again
        sys.stderr.write(f"zoned: {e}\n")
    return 125 if errors else 0
