"""The API's errors for a failed or hung command, shaped as `subprocess`'s own so a
harness written for subprocess catches them unchanged; they are ZonedErrors too.

Kept out of zoned.api so `zoned run` does not import subprocess (start-up time)."""
from __future__ import annotations

import subprocess

from zoned.errors import ZonedError


class CalledProcessError(ZonedError, subprocess.CalledProcessError):
    """check=True and the command exited non-zero: .returncode, .cmd, .output/.stdout,
    .stderr as subprocess's, and .name (the zone's)."""

    def __init__(self, returncode: int, cmd, output=None, stderr=None,
                 name: str | None = None):
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.name = name


class TimeoutExpired(ZonedError, subprocess.TimeoutExpired):
    """timeout= ran out: the zone (run) or the exec'd process (exec) was killed first;
    .output/.stdout and .stderr hold what it wrote until then."""

    def __init__(self, cmd, timeout: float, output=None, stderr=None,
                 name: str | None = None):
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.name = name
