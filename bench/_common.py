"""Shared helpers for the scripts in bench/: a thin re-export of zoned.bench, where the
measuring code lives (also used by `zoned bench`)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the repo's zoned, also when run from another directory
    sys.path.insert(0, str(REPO))

from zoned.bench.common import (DEFAULT_ZONED, RESULTS, environment, make_bundle,  # noqa: E402,F401
                                write_json)
from zoned.bench.facts import first_line, meminfo, read_int  # noqa: E402,F401
from zoned.bench.leftovers import (cgroup_dirs_named, mounts_containing,  # noqa: E402,F401
                                   remove_root, remove_zones, rmdir_quiet)
from zoned.bench.procfs import (CGROUP_ROOT, proc_cmdline, proc_state,  # noqa: E402,F401
                                python_zoned_processes)
from zoned.bench.report import table  # noqa: E402,F401
from zoned.bench.stats import percentile, summary  # noqa: E402,F401


def state_entries(root: str) -> list[str]:
    """Every entry of a state root (the scripts count zoned's dot files too)."""
    import os

    try:
        return sorted(os.listdir(root))
    except FileNotFoundError:
        return []
