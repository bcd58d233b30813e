#!/usr/bin/env python3
"""zoned migrate between two netns "hosts": frozen time, total time, pings lost, TCP kept,
memory intact, stop-and-copy vs live. The code lives in zoned/bench/migrate_twohost.py
(its docstring says what is measured and how); `zoned bench migrate` runs it too."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoned.bench.migrate_twohost import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
