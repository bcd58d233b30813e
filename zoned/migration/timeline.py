"""Where a migration's frozen time goes, measured on each side: a Timeline is a list of
(step, ms since its start) marks. The source's starts when it freezes; the destination's
when the images begin to arrive, and it sends its marks back with its answers. The summary
of `zoned migrate` carries both (`timeline`), and bench/migrate.py reports them step by
step: so what to move out of the freeze is chosen from numbers, not guesses."""
from __future__ import annotations

import time


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.marks: list[list] = []

    def mark(self, step: str, at: float | None = None) -> None:
        """Step `step` ended now (or at time.monotonic() value `at`)."""
        t = time.monotonic() if at is None else at
        self.marks.append([step, round((t - self.t0) * 1000, 1)])

    def to_list(self) -> list[list]:
        return [list(m) for m in self.marks]


def steps(marks: list[list]) -> dict[str, float]:
    """{step: ms it took} from a list of marks: each mark's time minus the one before."""
    out: dict[str, float] = {}
    prev = 0.0
    for step, t in marks:
        out[step] = round(t - prev, 1)
        prev = t
    return out
