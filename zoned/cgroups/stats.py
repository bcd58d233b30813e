"""A cgroup's usage and limits in one shape for v1 and v2 (`zoned stats`, the API's
Container.stats, runc-style `events --stats`). Loaded only when stats are asked for.

Each function takes `read(name)`: the text of one of the cgroup's files, or None when the
file (or its controller) is missing, so a stat this kernel lacks comes back as None
instead of failing the rest. Units: bytes, nanoseconds, counts; UNLIMITED (-1) for "no
limit" on either version.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from zoned.cgroups.fs import parse_int, parse_keyed

UNLIMITED = -1  # what stats() reports for "no limit" (the spec's own spelling)

# The kernel's "no limit" on v1: PAGE_COUNTER_MAX pages, rounded to the page size.
V1_UNLIMITED = 0x7FFFFFFFFFFFF000

Reader = Callable[[str], "str | None"]


def int_or_max(text: str | None) -> int | None:
    """A limit as stats() reports it: None if unreadable, -1 for "max"/v1's huge value."""
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return UNLIMITED
    try:
        v = int(text)
    except ValueError:
        return None
    return UNLIMITED if v >= V1_UNLIMITED else v


def v2_stats(read: Reader) -> dict:
    """Stats from a v2 cgroup's files (cgroup.freeze state is added by the caller)."""
    mem_events = parse_keyed(read("memory.events"))
    cpu = parse_keyed(read("cpu.stat"))
    swap = parse_int(read("memory.swap.current"))

    def us(k: str) -> int | None:
        return cpu[k] * 1000 if k in cpu else None

    return {
        "memory": {
            "usage": parse_int(read("memory.current")),
            "peak": parse_int(read("memory.peak")),
            "limit": int_or_max(read("memory.max")),
            "swap_usage": swap,
            "oom_kills": mem_events.get("oom_kill"),
            "oom_events": mem_events.get("oom"),
            "events": mem_events,
            "stat": parse_keyed(read("memory.stat")),
        },
        "cpu": {
            "usage_ns": us("usage_usec"),
            "user_ns": us("user_usec"),
            "system_ns": us("system_usec"),
            "nr_periods": cpu.get("nr_periods"),
            "throttled_periods": cpu.get("nr_throttled"),
            "throttled_ns": us("throttled_usec"),
        },
        "pids": {
            "current": parse_int(read("pids.current")),
            "limit": int_or_max(read("pids.max")),
            "peak": parse_int(read("pids.peak")),
        },
    }


def v1_stats(read: Reader) -> dict:
    """Stats from the v1 controllers' files (the freezer state is added by the caller)."""
    oom = parse_keyed(read("memory.oom_control"))
    usage = parse_int(read("memory.usage_in_bytes"))
    memsw = parse_int(read("memory.memsw.usage_in_bytes"))
    failcnt = parse_int(read("memory.failcnt"))
    cpu = parse_keyed(read("cpu.stat"))
    usage_user = parse_int(read("cpuacct.usage_user"))
    usage_sys = parse_int(read("cpuacct.usage_sys"))
    if usage_user is None:  # older kernels: USER_HZ ticks only
        st = parse_keyed(read("cpuacct.stat"))
        hz = os.sysconf("SC_CLK_TCK")
        usage_user = st["user"] * 10**9 // hz if "user" in st else None
        usage_sys = st["system"] * 10**9 // hz if "system" in st else None
    return {
        "memory": {
            "usage": usage,
            "peak": parse_int(read("memory.max_usage_in_bytes")),
            "limit": int_or_max(read("memory.limit_in_bytes")),
            "swap_usage": (memsw - usage) if memsw is not None and usage is not None
            else None,
            # oom_kill is in memory.oom_control since 4.13; failcnt (limit hits) is
            # the closest older kernels offer
            "oom_kills": oom.get("oom_kill", failcnt if oom else None),
            "under_oom": oom.get("under_oom"),
            "failcnt": failcnt,
            "stat": parse_keyed(read("memory.stat")),
        },
        "cpu": {
            "usage_ns": parse_int(read("cpuacct.usage")),
            "user_ns": usage_user,
            "system_ns": usage_sys,
            "nr_periods": cpu.get("nr_periods"),
            "throttled_periods": cpu.get("nr_throttled"),
            "throttled_ns": cpu.get("throttled_time"),
        },
        "pids": {
            "current": parse_int(read("pids.current")),
            "limit": int_or_max(read("pids.max")),
            "peak": parse_int(read("pids.peak")),
        },
    }
