"""zoned's cgroup stats (zoned.cgroups' stats()) in the shape of runc's `events` output
(libcontainer types.Stats), which containerd and podman read. A pure function kept out of
cgroups.py while that module is being split: it belongs next to the stats reader."""
from __future__ import annotations

UNLIMITED = 2 ** 63 - 1  # runc's memory limit when there is none (math.MaxInt64)


def runc_stats(s: dict) -> dict:
    """zoned's cgroup stats in the shape of runc's `events` types.Stats."""
    mem, cpu, pids = s.get("memory") or {}, s.get("cpu") or {}, s.get("pids") or {}
    return {
        "cpu": {"usage": {"total": cpu.get("usage_ns") or 0, "user": cpu.get("user_ns") or 0,
                          "kernel": cpu.get("system_ns") or 0},
                "throttling": {"periods": cpu.get("nr_periods") or 0,
                               "throttledPeriods": cpu.get("throttled_periods") or 0,
                               "throttledTime": cpu.get("throttled_ns") or 0}},
        "memory": {"usage": {"usage": mem.get("usage") or 0, "max": mem.get("peak") or 0,
                             "limit": mem.get("limit") if (mem.get("limit") or -1) >= 0
                             else UNLIMITED,
                             "failcnt": mem.get("oom_events") or 0},
                   "raw": mem.get("stat") or {}},
        "pids": {"current": pids.get("current") or 0,
                 "limit": pids.get("limit") if (pids.get("limit") or -1) >= 0 else 0},
    }
