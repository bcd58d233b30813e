"""Idle cost: host CPU that running-but-idle instances take, per instance, over a window.

For every instance, the CPU time (utime + stime, all threads: QEMU's vCPU threads too) of
every host process that exists for it (workload, init, logger/conmon/QEMU; the
scheduler's nanosecond counts) is read at the
start and the end of the window; the difference over the window, in percent of one CPU, is
one sample per instance. The host's total busy CPU over the same window is kept as context
(other load on the host shows there, not in the per-instance figures)."""
from __future__ import annotations

import time

from zoned.bench.backends import Backend, Instance
from zoned.bench.procfs import cpu_seconds
from zoned.bench.stats import summary


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def measure(backend: Backend, instances: list[Instance], window: float) -> dict:
    pids = {i.name: backend.host_pids(i) for i in instances}
    before = {n: sum(cpu_seconds(p) for p in ps) for n, ps in pids.items()}
    b0, t0 = host_cpu()
    start = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - start
    b1, t1 = host_cpu()
    after = {n: sum(cpu_seconds(p) for p in ps) for n, ps in pids.items()}
    pct = [100 * (after[n] - before[n]) / elapsed for n in pids]
    return {
        "window_s": round(elapsed, 3),
        "instances": len(instances),
        "cpu_pct_per_instance_samples": [round(x, 4) for x in pct],
        "cpu_pct_per_instance": summary(pct),
        "host_busy_pct_during_window": round(100 * (b1 - b0) / max(1, t1 - t0), 2),
    }
