"""Density: start idle instances of one backend one after another, until N or a memory
budget (of the instances' own memory, below), and measure what each costs the host.

Per start: its latency (the whole start command) and, right after it, host memory used
(MemTotal - MemAvailable, vs a baseline taken just before the first start) and the memory
attributable to the instances (attributed_kib: PSS of all their host processes + the
kernel memory charged to their memory cgroups). The least-squares slope of the attributable line is
the measured cost of one more instance (the "used" slope is reported too, with its r²:
on a busy host other processes' page cache moves it by more than a zone costs), and how
many would fit = MemAvailable at the baseline / slope (also given per GiB). After the starts and a
settle delay: PSS of every host process of every instance (workload, init, logger, conmon,
QEMU: smaps_rollup), the memory cgroup charge, and the kernel's part (Slab, KernelStack,
PageTables, Percpu deltas), each per instance; the start rate and its degradation (mean of
the last 10% of starts over the first 10%). Stops early when the budget is used up, when
MemAvailable falls below 10% of MemTotal, or at the first failed start (recorded).

The instances are returned to the caller (idle cost is measured on them before removal)."""
from __future__ import annotations

import time
from collections.abc import Callable

from zoned.bench.backends import Backend, Instance
from zoned.bench.facts import meminfo
from zoned.bench.procfs import (KERNEL_KEYS, MEM_KEYS, limits_snapshot, memcg_bytes,
                                memcg_kernel_bytes, num_cgroups, sample_meminfo, slab_top,
                                slabinfo, smaps_rollup, used_kib)
from zoned.bench.runcmd import BenchFailure
from zoned.bench.stats import slope, summary, theil_sen

GIB_KIB = 1024 * 1024


def attributed_kib(backend: Backend, inst: Instance) -> int:
    """Memory that is the instance's own: PSS of every host process of it (workload, init,
    logger, conmon, QEMU) + kernel memory charged to its memory cgroup. Per instance, so
    other processes on the host do not move it (MemAvailable and meminfo's kernel deltas
    are host-wide: on a busy host their noise is larger than a zone)."""
    pss = sum(smaps_rollup(p).get("Pss", 0) for p in backend.host_pids(inst))
    kmem = memcg_kernel_bytes(inst.pid, backend.ctx.mounts) or 0
    return pss + kmem // 1024


def start_many(backend: Backend, n: int, budget_kib: int, settle: float,
               progress: Callable[[str], None]) -> tuple[dict, list[Instance]]:
    """Start up to n instances; the raw samples and the instances started."""
    time.sleep(settle)
    base, noise = sample_meminfo()
    res: dict = {"requested": n, "budget_kib": budget_kib, "baseline_used_noise_kib": noise,
                 "baseline_mem_available_kib": base["MemAvailable"],
                 "_base": base, "_slab0": slabinfo(), "_cg0": num_cgroups()}
    lat, used, attributed, insts = [], [], [], []
    stop = None
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        try:
            inst = backend.start_idle()
        except BenchFailure as e:
            stop = {"reason": "failed start", "index": i, "error": str(e),
                    "limits": limits_snapshot()}
            progress(f"density: {backend.name} start {i + 1} FAILED: {e}")
            break
        lat.append((time.perf_counter() - t) * 1000)
        insts.append(inst)
        m = meminfo()
        used.append(used_kib(m) - used_kib(base))
        attributed.append(sum(attributed_kib(backend, x) for x in insts))
        if (i + 1) % max(1, n // 5) == 0 or i + 1 == n:
            progress(f"density: {backend.name} {i + 1}/{n} started ({lat[-1]:.0f} ms)")
        if attributed[-1] > budget_kib:  # the instances' own memory, not the host's noise
            stop = {"reason": f"budget of {budget_kib} KiB used", "index": i}
            break
        if m["MemAvailable"] < m["MemTotal"] // 10:
            stop = {"reason": "MemAvailable below 10% of MemTotal", "index": i}
            break
    res["start_wall_s"] = time.perf_counter() - t0
    res["started"] = len(insts)
    res["stopped_early"] = stop
    res["start_latency_ms_samples"] = [round(x, 3) for x in lat]
    res["used_kib_after_each_start"] = used
    res["attributed_kib_after_each_start"] = attributed
    return res, insts


def analyse(backend: Backend, res: dict, insts: list[Instance], settle: float) -> dict:
    """The per-instance memory figures, once the starts are done."""
    base, slab0, cg0 = res.pop("_base"), res.pop("_slab0"), res.pop("_cg0")
    k = len(insts)
    lat = res["start_latency_ms_samples"]
    tenth = max(1, k // 10)
    first, last = summary(lat[:tenth]).get("mean"), summary(lat[-tenth:]).get("mean")
    res["start_latency_ms"] = summary(lat)
    res["start_rate_per_s"] = k / res["start_wall_s"] if res["start_wall_s"] and k else None
    res["start_degradation_last_over_first"] = (last / first) if first and last else None
    xs = list(range(1, k + 1))
    line = slope(xs, res["used_kib_after_each_start"]) if k >= 2 else None
    res["used_slope"] = line
    res["used_kib_per_instance_slope"] = line["slope"] if line else None
    aline = slope(xs, res["attributed_kib_after_each_start"]) if k >= 2 else None
    res["attributed_slope"] = aline
    res["kib_per_instance_slope"] = theil_sen(xs, res["attributed_kib_after_each_start"])
    res["kib_per_instance"] = res["kib_per_instance_basis"] = None
    res["fit_in_host_memory"] = res["instances_per_gib"] = None
    if not k:
        return res
    time.sleep(settle)
    after, noise_after = sample_meminfo(n=3, gap=0.3)
    pss, pss_anon, charge, kmem, nprocs = [], [], [], [], []
    for inst in insts:
        pids = backend.host_pids(inst)
        nprocs.append(len(pids))
        rolls = [smaps_rollup(p) for p in pids]
        pss.append(sum(r.get("Pss", 0) for r in rolls))
        pss_anon.append(sum(r.get("Pss_Anon", 0) for r in rolls))
        c = memcg_bytes(inst.pid, backend.ctx.mounts)
        if c is not None:
            charge.append(c / 1024)
        c = memcg_kernel_bytes(inst.pid, backend.ctx.mounts)
        if c is not None:
            kmem.append(c / 1024)
    delta = {key: after.get(key, 0) - base.get(key, 0) for key in MEM_KEYS}
    delta["used"] = used_kib(after) - used_kib(base)
    kernel = sum(delta[key] for key in ("Slab", "KernelStack", "PageTables", "Percpu"))
    res["processes_per_instance"] = summary(nprocs)
    res["pss_kib_per_instance_samples"] = pss
    res["pss_kib_per_instance"] = summary(pss)
    res["pss_anon_kib_per_instance"] = summary(pss_anon)
    res["memcg_kib_per_instance"] = summary(charge) if charge else None
    res["memcg_kernel_kib_per_instance"] = summary(kmem) if kmem else None
    # the cost of one more: the (Theil-Sen) slope; where there is none (one instance) or
    # it is not positive (noise larger than the cost), the mean of the same per-instance
    # figure over all instances once they settled
    own = summary([p + (kmem[j] if j < len(kmem) else 0) for j, p in enumerate(pss)])
    res["attributed_kib_per_instance_at_end"] = own
    ts = res["kib_per_instance_slope"]
    if ts is not None and ts > 0:
        per, basis = ts, "slope"
    else:
        per = own["mean"]
        basis = "mean at end" if ts is None else f"mean at end (slope {ts:.0f} KiB)"
    res["kib_per_instance"], res["kib_per_instance_basis"] = per, basis
    if per and per > 0:
        res["fit_in_host_memory"] = int(res["baseline_mem_available_kib"] / per)
        res["instances_per_gib"] = GIB_KIB / per
    res["meminfo_delta_kib_per_instance"] = {key: v / k for key, v in delta.items()}
    res["kernel_kib_per_instance"] = kernel / k  # host-wide meminfo deltas
    res["kernel_keys"] = KERNEL_KEYS
    res["used_kib_per_instance_after_settle"] = delta["used"] / k
    res["mem_available_drop_kib_per_instance"] = -delta["MemAvailable"] / k
    res["after_used_noise_kib"] = noise_after
    res["slab_top_delta_kib"] = slab_top(slab0, slabinfo())
    res["num_cgroups_delta"] = {c: v - cg0.get(c, 0) for c, v in num_cgroups().items()
                                if v != cg0.get(c, 0)}
    return res


def remove(backend: Backend, insts: list[Instance]) -> dict:
    """Remove the instances; wall time and rate."""
    t = time.perf_counter()
    err = None
    try:
        backend.remove(insts)
    except BenchFailure as e:
        err = str(e)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "rate_per_s": len(insts) / wall if wall and insts else None,
            "error": err}
