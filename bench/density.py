#!/usr/bin/env python3
"""Container density: start N idle containers, measure what each costs the host, remove them.

What is measured, per engine (zoned by default; add runc with --runc):

  start      N containers running `sleep 100000`, detached, one after the other:
             zoned: `zoned --root R run -d --name bench-d<tok>-z-<i> -- sleep 100000` (the CLI
             process exits, nothing of zoned stays resident); with --api in-process
             `zoned.Container([...], root=R).start()` instead (then this benchmark process
             is the parent of every container). runc: `runc --root X run -d --bundle B
             bench-d<tok>-r-<i>` on one shared bundle with root.readonly=true (the busybox
             image exported with ImageStore.export_bundle, config from `zoned spec`).
             Reported: total time, containers/s, per-start latency (median, p95) and the
             mean latency of the first 10% vs the last 10% of starts (degradation with N).
  memory     after the starts and a settle delay (--settle), compared with a baseline taken
             just before the first start (all /proc/meminfo figures in KiB, divided by N):
             - PSS of every process in every container (pids from the container's pids
               cgroup: cgroup.procs), from /proc/<pid>/smaps_rollup -- the workload itself;
             - memory cgroup charge: memory.usage_in_bytes (v1; memory.current on v2) of
               each container's memory cgroup, and memory.kmem.usage_in_bytes;
             - kernel memory: the deltas of Slab (SReclaimable + SUnreclaim), KernelStack,
               PageTables and Percpu; Shmem (grows with the state dirs when /run is a
               tmpfs; their size is reported separately as state_root_bytes);
             - overall: the delta of "used" = MemTotal - MemAvailable; and the host overhead
               beyond the workload = (used delta - sum of PSS) / N, the figure compared with
               the issue's target of < 1 MiB per container.
             meminfo is host-wide: anything else running on the host moves it. The spread of
             "used" over the baseline samples is reported as the noise floor.
  resident   processes whose executable is python and whose cmdline contains 'zoned' and
             this run's state root (must be 0 once the starts are done: zoned has no
             per-container monitor); the host-wide count of python+'zoned' processes is
             reported too (other users of the host may have some); python processes
             inside the containers' cgroups; who the container inits' parents are.
  remove     `zoned rm -f` with --rm-batch ids per command (API: Container.remove();
             runc: `runc delete -f` per id); total time and containers/s. Then leftovers:
             state dirs, cgroup dirs named bench-d<tok>-*, mounts, processes still alive
             (zombies waiting for PID 1 to reap them are counted separately), and the
             meminfo deltas vs the baseline after removal and again after --leak-wait
             seconds (a leak shows up here), with the slab caches that grew most
             (/proc/slabinfo) and the per-controller num_cgroups of /proc/cgroups, which
             counts removed-but-pinned ("dying") cgroups too.

The run stops starting at the first failure (with --keep-going: after 10 in a row) and
records the error, the count reached and a snapshot of the likely limiting resources (pids,
memory, open files, ...) and of what else was running (other zoned/pytest processes). Everything
is removed at the end, also on failure or Ctrl-C. Needs root. Results go to
bench/results/density-<N>[-api][-rootfs].json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from zoned.bench.procfs import (MEM_KEYS, cgroup_mounts, limits_snapshot,  # noqa: E402
                                new_memcg_cost, num_cgroups, proc_cgroups, sample_meminfo, slab_top, slabinfo,
                                smaps_rollup, used_kib)
from zoned.bench.facts import read_int  # noqa: E402
from zoned.bench import scale  # noqa: E402
from zoned.linux.proc import proc_start_time  # noqa: E402
from zoned.runtime.cgroup_paths import ANN_MEMORY_CGROUP  # noqa: E402

_ERR = tempfile.TemporaryFile()  # stderr of commands: a file, never a pipe the init inherits


def _sp(cmd: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a command, stdio on /dev/null, stderr appended to a temp file; (rc, stderr).

    The wait is a blocking waitpid: subprocess's own timeout= polls with sleeps of up to
    50 ms, which would round every start time up to 16, 32, 64 ms. A timer thread
    kills a command that hangs instead."""
    start = _ERR.seek(0, os.SEEK_END)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=_ERR)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        rc = p.wait()
    finally:
        timer.cancel()
    err = ""
    if rc:
        _ERR.seek(start)
        err = _ERR.read().decode(errors="replace").strip()[-1000:]
        if rc == -signal.SIGKILL:
            err = f"killed after a {timeout}s timeout. {err}"
    return rc, err


def ppid_and_comm(pid: int) -> tuple[int | None, str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        with open(f"/proc/{ppid}/comm") as f:
            return ppid, f.read().strip()
    except (OSError, ValueError):
        return None, "?"


def dir_usage(root: str) -> int:
    total = 0
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(d, name)).st_blocks * 512
            except OSError:
                pass
    return total


def other_activity() -> dict:
    """What else runs on the host (meminfo is host-wide): process count, load, and any
    pytest / zoned commands of other users."""
    busy = []
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        n += 1
        cmd = C.proc_cmdline(int(name))
        if "pytest" in cmd or ("zoned" in cmd and "bench" not in cmd and "python" in cmd):
            busy.append(cmd[:120])
    return {"processes": n, "loadavg": [round(x, 2) for x in os.getloadavg()],
            "other_zoned_or_pytest": busy[:10], "other_count": len(busy)}


class Engine:
    """Start/list/remove containers of one kind; subclasses per engine."""

    label = "?"
    api = False

    def prepare(self) -> None:
        """Anything the run needs before the first start."""

    def exec_cmd(self, cid: str) -> list[str]:
        raise NotImplementedError

    def ips(self) -> dict[str, str] | None:
        return None

    def __init__(self, a, tok: str, bundle: Path | None):
        self.a, self.tok, self.bundle = a, tok, bundle
        self.ids: list[str] = []
        self.pids: dict[str, int] = {}

    def name(self, i: int) -> str:
        return f"bench-d{self.tok}-{self.tag}-{i}"

    def start(self, i: int) -> str | None:
        raise NotImplementedError

    pid_key = "pid"  # the init's pid in ROOT/ID/state.json

    def init_pid(self, cid: str) -> int | None:
        try:
            with open(os.path.join(self.root, cid, "state.json")) as f:
                return int(json.load(f).get(self.pid_key) or 0) or None
        except (OSError, ValueError):
            return None

    def started(self, cid: str, rc: int, err: str) -> str | None:
        """Record a start command's outcome: None, or why it failed (a half-made
        container is recorded too, so that it is removed)."""
        if rc:
            if os.path.isdir(os.path.join(self.root, cid)):
                self.ids.append(cid)
            return f"exit {rc}: {err}"
        self.ids.append(cid)
        return None

    def remove_all(self) -> tuple[list[float], list[str]]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def state_root(self) -> str:
        raise NotImplementedError

    def resident_needle(self) -> str:
        return self.state_root()


class Zoned(Engine):
    tag = "z"

    def __init__(self, a, tok, bundle, api: bool = False):
        super().__init__(a, tok, bundle)
        self.api = api
        if api:
            self.tag = "za"
        self.root = f"{a.root_prefix}{tok}{'-api' if api else ''}"
        self.Z = [a.zoned, "--root", self.root]
        self.containers = {}
        self.net = f"bench-d{tok}" if a.network else None
        mode = "API (in-process)" if api else "CLI"
        src = "--rootfs bundle, read-only" if a.zoned_rootfs else "image overlay"
        self.label = f"zoned {mode}, {src}" + (", networked" if self.net else "") + (
            ", shared memory cgroup" if a.memory_cgroup == "shared" else "")

    def prepare(self) -> None:
        """The run's own network (--network): subnet from --subnet, else zoned's pick."""
        if self.net:
            cmd = self.Z + ["network", "create"]
            if self.a.subnet:
                cmd += ["--subnet", self.a.subnet]
            rc, err = _sp(cmd + [self.net])
            if rc:
                raise RuntimeError(f"network create: {err}")

    def exec_cmd(self, cid: str) -> list[str]:
        return self.Z + ["exec", cid, "--", "true"]

    def ips(self) -> dict[str, str] | None:
        if not self.net:
            return None
        return {cid: scale.zone_ip(os.path.join(self.root, cid, "state.json"))
                for cid in self.ids}

    def state_root(self) -> str:
        return self.root

    def start(self, i: int) -> str | None:
        cid = self.name(i)
        if self.api:
            import zoned

            kw = {}
            if self.a.zoned_rootfs:
                kw = {"rootfs": str(self.bundle / "rootfs"), "read_only": True}
            if self.net:
                kw["network"] = [self.net]
            if self.a.memory_cgroup:
                kw["annotations"] = {ANN_MEMORY_CGROUP: self.a.memory_cgroup}
            try:
                c = zoned.Container(self.a.workload, root=self.root, name=cid, **kw)
                c.start()
            except Exception as e:  # noqa: BLE001 - recorded as the failure of this start
                return f"{type(e).__name__}: {e}"
            self.containers[cid] = c
            self.ids.append(cid)
            return None
        cmd = self.Z + ["run", "-d", "--name", cid]
        if self.net:
            cmd += ["--network", self.net]
        if self.a.zoned_rootfs:
            cmd += ["--rootfs", str(self.bundle / "rootfs"), "--read-only"]
        if self.a.memory_cgroup:
            cmd += ["--memory-cgroup", self.a.memory_cgroup]
        return self.started(cid, *_sp(cmd + ["--"] + self.a.workload))

    def remove_all(self) -> tuple[list[float], list[str]]:
        times, errors = [], []
        if self.api:
            for cid in self.ids:
                t = time.perf_counter()
                try:
                    self.containers[cid].remove(force=True)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{cid}: {e}")
                times.append(time.perf_counter() - t)
            self.remove_network(errors)
            return times, errors
        b = self.a.rm_batch
        for k in range(0, len(self.ids), b):
            batch = self.ids[k:k + b]
            t = time.perf_counter()
            rc, err = _sp(self.Z + ["rm", "-f"] + batch, timeout=600)
            times.append(time.perf_counter() - t)
            if rc:
                errors.append(f"rm -f batch {k // b}: exit {rc}: {err}")
        self.remove_network(errors)
        return times, errors

    def remove_network(self, errors: list[str]) -> None:
        if self.net:
            rc, err = _sp(self.Z + ["network", "rm", self.net], timeout=600)
            if rc:
                errors.append(f"network rm {self.net}: exit {rc}: {err}")

    def cleanup(self) -> None:
        for c in self.containers.values():
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001
                pass
        left = [c for c in C.state_entries(self.root) if not c.startswith(".")]
        for k in range(0, len(left), 50):
            _sp(self.Z + ["rm", "-f"] + left[k:k + 50], timeout=600)
        if self.net and os.path.isdir(self.root):
            _sp(self.Z + ["network", "rm", self.net], timeout=600)
        if os.path.isdir(self.root):  # whatever a killed start or rm left: gc removes it
            _sp(self.Z + ["gc"], timeout=900)
        C.rmdir_quiet(self.root)


class Runc(Engine):
    pid_key = "init_process_pid"
    tag = "r"

    def __init__(self, a, tok, bundle):
        super().__init__(a, tok, bundle)
        self.root = f"/run/runc-bench-density-{tok}"
        self.R = [a.runc_bin, "--root", self.root]
        self.label = "runc, shared read-only bundle"

    def state_root(self) -> str:
        return self.root

    def resident_needle(self) -> str:
        return "\0never\0"  # runc is Go: no python processes to look for

    def exec_cmd(self, cid: str) -> list[str]:
        return self.R + ["exec", cid, "true"]

    def start(self, i: int) -> str | None:
        cid = self.name(i)
        return self.started(cid, *_sp(self.R + ["run", "-d", "--bundle", str(self.bundle),
                                             cid]))

    def remove_all(self) -> tuple[list[float], list[str]]:
        times, errors = [], []
        for cid in self.ids:
            t = time.perf_counter()
            rc, err = _sp(self.R + ["delete", "-f", cid])
            times.append(time.perf_counter() - t)
            if rc:
                errors.append(f"{cid}: exit {rc}: {err}")
        return times, errors

    def cleanup(self) -> None:
        if os.path.isdir(self.root):
            out = subprocess.run(self.R + ["list", "-q"], capture_output=True, text=True).stdout
            for cid in out.split():
                _sp(self.R + ["delete", "-f", cid])
        C.rmdir_quiet(self.root)


def measure_engine(eng: Engine, a, mounts: dict[str, str]) -> dict:
    n = a.count
    res: dict = {"engine": eng.label, "requested": n}
    print(f"[{eng.label}] baseline ...", file=sys.stderr)
    time.sleep(a.settle)
    base, noise = sample_meminfo()
    slab0, cg0 = slabinfo(), num_cgroups()
    fds_before = len(os.listdir("/proc/self/fd"))
    res["baseline_used_noise_kib"] = noise
    res["activity_before"] = other_activity()
    # The kernel's cost of one more memory cgroup, before, at full and after: its shrinker
    # slots follow the most superblocks alive at once since boot (procfs.new_memcg_cost).
    res["new_memcg_cost"] = {"baseline": new_memcg_cost(mounts)}

    # -- start ------------------------------------------------------------------------------
    lat: list[float] = []
    stamps: list[tuple[float, float]] = []
    eng.prepare()
    counts0 = scale.kernel_counts()
    failure = None
    failures = []
    consecutive = 0
    t0 = time.perf_counter()
    i = 0
    while len(lat) < n:
        if len(lat) % 50 == 0:
            why = scale.host_guard(a.min_available_mib)
            if why:  # never exhaust a shared host: stop here, record it
                res["stopped_early"] = {"reached": len(lat), "why": why,
                                        "limits": limits_snapshot()}
                print(f"[{eng.label}] stopping at {len(lat)}: {why}", file=sys.stderr)
                break
        t = time.perf_counter()
        err = eng.start(i)
        dt = time.perf_counter() - t
        i += 1
        if err:
            f = {"index": i - 1, "reached": len(lat), "error": err, "limits": limits_snapshot(),
                 "busy": other_activity()}
            failure = failure or f
            failures.append(f)
            consecutive += 1
            print(f"[{eng.label}] start {i - 1} FAILED: {err}", file=sys.stderr)
            if not a.keep_going or consecutive >= 10:
                break
            continue
        consecutive = 0
        lat.append(dt)
        stamps.append((t, t + dt))
        if len(lat) % max(1, n // 10) == 0:
            print(f"[{eng.label}] started {len(lat)}/{n} ({dt * 1000:.0f} ms)", file=sys.stderr)
    wall = time.perf_counter() - t0
    started = len(lat)
    res["started"] = started
    res["start_failure"] = failure
    res["start_failures"] = failures[:20]
    res["start_failure_count"] = len(failures)
    tenth = max(1, started // 10)
    res["start"] = {
        "wall_s": wall,
        "rate_per_s": started / wall if wall else None,
        "latency_ms": C.summary([x * 1000 for x in lat]),
        "first_10pct_mean_ms": C.summary([x * 1000 for x in lat[:tenth]]).get("mean"),
        "last_10pct_mean_ms": C.summary([x * 1000 for x in lat[-tenth:]]).get("mean"),
    }
    if res["start"]["first_10pct_mean_ms"]:
        res["start"]["last_over_first"] = (res["start"]["last_10pct_mean_ms"]
                                           / res["start"]["first_10pct_mean_ms"])
    deciles = scale.decile_rates(stamps)
    res["start"]["by_decile"] = deciles
    if deciles:
        res["start"]["first_10pct_rate_per_s"] = deciles[0]["rate_per_s"]
        res["start"]["last_10pct_rate_per_s"] = deciles[-1]["rate_per_s"]
    res["kernel_counts_delta_after_start"] = {
        k: (v or 0) - (counts0.get(k) or 0) for k, v in scale.kernel_counts().items()}
    # -- reachable? (a random sample: exec in; ping when networked) ----------------------
    if eng.ids and a.reach_sample:
        print(f"[{eng.label}] exec/ping sample of {a.reach_sample} ...", file=sys.stderr)
        res["reach"] = scale.reach(eng.exec_cmd, list(eng.ids), a.reach_sample, eng.ips())
    if isinstance(eng, Zoned) and eng.ids:
        res["list"] = {}
        for what, extra in (("ps_q", ["-q"]), ("ps_table", []), ("ps_json", ["--format", "json"])):
            ok, ms, err = scale.timed(eng.Z + ["ps", "-a"] + extra, timeout=600)
            res["list"][what] = {"ok": ok, "ms": ms, "error": err if not ok else ""}

    # -- measure ----------------------------------------------------------------------------
    time.sleep(a.settle)
    after, noise_after = sample_meminfo()
    slab1, cg1 = slabinfo(), num_cgroups()
    res["slab_top_delta_after_start_kib"] = slab_top(slab0, slab1)
    res["new_memcg_cost"]["full"] = new_memcg_cost(mounts)
    res["num_cgroups_delta_after_start"] = {k: cg1.get(k, 0) - v for k, v in cg0.items()}
    res["after_used_noise_kib"] = noise_after
    res["activity_at_measurement"] = other_activity()
    pss = Counter()
    nprocs = 0
    memcg = Counter()
    memcg_seen: set[str | None] = set()
    pythons_inside = []
    parents = Counter()
    not_running = []
    all_pids = set()
    born: dict[int, int | None] = {}  # a pid reused by another process after removal is not ours
    for cid in eng.ids:
        ipid = eng.init_pid(cid)
        if not ipid or C.proc_state(ipid) in (None, "Z", "X"):
            not_running.append(cid)
            continue
        eng.pids[cid] = ipid
        parents[ppid_and_comm(ipid)[1]] += 1
        cg = proc_cgroups(ipid, mounts)
        pids_dir = cg.get("pids") or cg.get("")
        procs = []
        try:
            with open(os.path.join(pids_dir, "cgroup.procs")) as f:
                procs = [int(x) for x in f.read().split()]
        except (OSError, TypeError):
            procs = [ipid]
        for pid in procs:
            all_pids.add(pid)
            born[pid] = proc_start_time(pid)
            nprocs += 1
            r = smaps_rollup(pid)
            for k in ("Pss", "Pss_Anon", "Pss_File", "Rss"):
                pss[k] += r.get(k, 0)
            try:
                if "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe")):
                    pythons_inside.append(pid)
            except OSError:
                pass
        md = cg.get("memory")
        if md in memcg_seen:  # a shared memory cgroup (--memory-cgroup shared): once
            continue
        memcg_seen.add(md)
        if md and md.startswith(os.path.join(C.CGROUP_ROOT, "memory")):
            memcg["usage"] += read_int(os.path.join(md, "memory.usage_in_bytes")) or 0
            memcg["kmem"] += read_int(os.path.join(md, "memory.kmem.usage_in_bytes")) or 0
        elif md:
            memcg["usage"] += read_int(os.path.join(md, "memory.current")) or 0
    running = len(eng.pids)
    per = max(1, started)
    delta = {k: after.get(k, 0) - base.get(k, 0) for k in MEM_KEYS}
    delta["used"] = used_kib(after) - used_kib(base)
    kernel = sum(delta[k] for k in ("Slab", "KernelStack", "PageTables", "Percpu"))
    overhead = (delta["used"] - pss["Pss"]) / per
    res["running"] = running
    res["not_running"] = not_running[:20]
    res["processes_in_containers"] = nprocs
    res["memory_kib"] = {
        "pss_total": dict(pss),
        "pss_per_container": {k: v / per for k, v in pss.items()},
        "memcg_usage_per_container": memcg["usage"] / 1024 / per,
        "memcg_kmem_per_container": memcg["kmem"] / 1024 / per,
        "meminfo_delta_total": delta,
        "meminfo_delta_per_container": {k: v / per for k, v in delta.items()},
        "kernel_per_container": kernel / per,
        "used_per_container": delta["used"] / per,
        "overhead_beyond_workload_per_container": overhead,
        "state_root_bytes_per_container": dir_usage(eng.state_root()) / per,
    }
    res["target_lt_1mib_overhead"] = {"value_kib": overhead, "met": overhead < 1024}
    res["resident"] = {
        "python_zoned_processes_of_this_run": C.python_zoned_processes(eng.resident_needle()),
        "python_zoned_processes_host_wide": len(C.python_zoned_processes()),
        "python_processes_inside_containers": pythons_inside,
        "container_init_parents": dict(parents),
        "bench_process_fd_delta": len(os.listdir("/proc/self/fd")) - fds_before,
        "note": ("API mode: this benchmark process is the parent of every container"
                 if eng.api else ""),
    }

    # -- remove -----------------------------------------------------------------------------
    print(f"[{eng.label}] removing {len(eng.ids)} ...", file=sys.stderr)
    t0 = time.perf_counter()
    times, errors = eng.remove_all()
    rm_wall = time.perf_counter() - t0
    res["remove"] = {"wall_s": rm_wall, "count": len(eng.ids),
                     "rate_per_s": len(eng.ids) / rm_wall if rm_wall else None,
                     "per_call_ms": C.summary([x * 1000 for x in times]),
                     "errors": errors[:20], "error_count": len(errors)}
    # leftovers: processes may stay zombies until PID 1 reaps them
    all_pids = {p for p in all_pids if proc_start_time(p) in (born.get(p), None)}
    deadline = time.monotonic() + a.reap_wait
    while time.monotonic() < deadline:
        all_pids = {p for p in all_pids if proc_start_time(p) in (born.get(p), None)}
        if all(C.proc_state(p) is None for p in all_pids):
            break
        time.sleep(0.2)
    alive = [p for p in all_pids if C.proc_state(p) not in (None, "Z", "X")]
    zombies = [p for p in all_pids if C.proc_state(p) in ("Z", "X")]
    prefix = f"bench-d{eng.tok}-{eng.tag}-"
    left = {
        "state_entries": C.state_entries(eng.state_root()),
        "cgroup_dirs": C.cgroup_dirs_named(prefix)[:50],
        "mounts": C.mounts_containing(eng.state_root()),
        "processes_alive": alive[:50],
        "zombies_after_wait": len(zombies),
    }
    if isinstance(eng, Zoned):
        left["network"] = scale.network_leftovers(eng.state_root())
    net_left = left.get("network") or {}
    left["ok"] = not (left["state_entries"] or left["cgroup_dirs"] or left["mounts"]
                      or left["processes_alive"] or net_left.get("link_count")
                      or net_left.get("registry_fragments"))
    res["leftovers"] = left
    for label, wait in (("after_removal", a.settle), ("after_leak_wait", a.leak_wait)):
        time.sleep(wait)
        end, _ = sample_meminfo()
        slab2, cg2 = slabinfo(), num_cgroups()
        d = {k: end.get(k, 0) - base.get(k, 0) for k in MEM_KEYS}
        d["used"] = used_kib(end) - used_kib(base)
        res[f"{label}_delta_kib"] = d
        res[f"slab_top_delta_{label}_kib"] = slab_top(slab0, slab2)
        res[f"num_cgroups_delta_{label}"] = {k: cg2.get(k, 0) - v for k, v in cg0.items()}
    res["new_memcg_cost"]["after_removal"] = new_memcg_cost(mounts)
    res["leak_wait_s"] = a.settle + a.leak_wait
    return res


def fmt_rows(results: list[dict]) -> tuple[list[str], list[list]]:
    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    header = ["metric"] + [r["engine"] for r in results]
    spec = [
        ("containers started / requested", lambda r: f"{r['started']}/{r['requested']}"),
        ("failed starts", lambda r: str(r.get("start_failure_count", 0))),
        ("running at measurement", lambda r: str(r["running"])),
        ("start: total s", lambda r: f(r["start"]["wall_s"])),
        ("start: containers/s", lambda r: f(r["start"]["rate_per_s"])),
        ("start: median ms", lambda r: f(r["start"]["latency_ms"].get("median"))),
        ("start: p95 ms", lambda r: f(r["start"]["latency_ms"].get("p95"))),
        ("start: first 10% mean ms", lambda r: f(r["start"]["first_10pct_mean_ms"])),
        ("start: last 10% mean ms", lambda r: f(r["start"]["last_10pct_mean_ms"])),
        ("start: last/first", lambda r: f(r["start"].get("last_over_first"), ".2f")),
        ("start: first 10% containers/s", lambda r: f(r["start"].get("first_10pct_rate_per_s"))),
        ("start: last 10% containers/s", lambda r: f(r["start"].get("last_10pct_rate_per_s"))),
        ("exec in sample: ok/n", lambda r: f"{r['reach']['exec']['ok']}/{r['reach']['sampled']}"),
        ("exec in sample: median ms", lambda r: f(r["reach"]["exec"]["latency_ms"].get("median"))),
        ("ping sample: ok/n", lambda r: f"{r['reach']['ping']['ok']}/{r['reach']['sampled']}"),
        ("ps -a -q ms", lambda r: f(r["list"]["ps_q"]["ms"], ".0f")),
        ("ps -a (table) ms", lambda r: f(r["list"]["ps_table"]["ms"], ".0f")),
        ("ps -a --format json ms", lambda r: f(r["list"]["ps_json"]["ms"], ".0f")),
        ("processes per container", lambda r: f(r["processes_in_containers"]
                                                / max(1, r["running"]), ".2f")),
        ("PSS / ctr KiB (workload)", lambda r: f(r["memory_kib"]["pss_per_container"].get("Pss"))),
        ("  of which anon KiB", lambda r: f(r["memory_kib"]["pss_per_container"].get("Pss_Anon"))),
        ("memcg usage / ctr KiB", lambda r: f(r["memory_kib"]["memcg_usage_per_container"])),
        ("  memcg kmem / ctr KiB", lambda r: f(r["memory_kib"]["memcg_kmem_per_container"])),
        ("Slab delta / ctr KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["Slab"])),
        ("  SReclaimable KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["SReclaimable"])),
        ("  SUnreclaim KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["SUnreclaim"])),
        ("KernelStack / ctr KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["KernelStack"])),
        ("PageTables / ctr KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["PageTables"])),
        ("Percpu / ctr KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["Percpu"])),
        ("kernel (slab+stack+pt+percpu) KiB", lambda r: f(r["memory_kib"]["kernel_per_container"])),
        ("one more memcg, slab KiB: baseline/full/after",
         lambda r: "/".join(f((r.get("new_memcg_cost", {}).get(k) or {}).get("slab_kib_per_memcg"),
                              ".0f") for k in ("baseline", "full", "after_removal"))),
        ("Shmem (tmpfs) / ctr KiB", lambda r: f(r["memory_kib"]["meminfo_delta_per_container"]["Shmem"])),
        ("used (Total-Available) / ctr KiB", lambda r: f(r["memory_kib"]["used_per_container"])),
        ("host overhead beyond workload KiB", lambda r: f(r["memory_kib"]["overhead_beyond_workload_per_container"])),
        ("  target < 1024 KiB", lambda r: "MET" if r["target_lt_1mib_overhead"]["met"] else "NOT MET"),
        ("baseline 'used' noise KiB (total)", lambda r: str(r["baseline_used_noise_kib"])),
        ("resident zoned python procs (this run)", lambda r: str(len(r["resident"]["python_zoned_processes_of_this_run"]))),
        ("python procs inside containers", lambda r: str(len(r["resident"]["python_processes_inside_containers"]))),
        ("container init parents", lambda r: ",".join(f"{k}:{v}" for k, v in r["resident"]["container_init_parents"].items())),
        ("remove: total s", lambda r: f(r["remove"]["wall_s"])),
        ("remove: containers/s", lambda r: f(r["remove"]["rate_per_s"])),
        ("remove: errors", lambda r: str(r["remove"]["error_count"])),
        ("leftovers (state/cgroup/mount/procs)", lambda r: "none" if r["leftovers"]["ok"] else
            f"{len(r['leftovers']['state_entries'])}/{len(r['leftovers']['cgroup_dirs'])}/"
            f"{len(r['leftovers']['mounts'])}/{len(r['leftovers']['processes_alive'])}"),
        ("zombies left after reap wait", lambda r: str(r["leftovers"]["zombies_after_wait"])),
        ("used after removal vs baseline KiB", lambda r: str(r["after_removal_delta_kib"]["used"])),
        ("Slab after removal vs baseline KiB", lambda r: str(r["after_removal_delta_kib"]["Slab"])),
        ("Percpu after removal vs baseline KiB", lambda r: str(r["after_removal_delta_kib"]["Percpu"])),
        ("memory cgroups still counted after removal", lambda r: str(r["num_cgroups_delta_after_removal"].get("memory"))),
        ("... after leak wait: used KiB", lambda r: str(r["after_leak_wait_delta_kib"]["used"])),
        ("... after leak wait: Slab KiB", lambda r: str(r["after_leak_wait_delta_kib"]["Slab"])),
        ("... after leak wait: memory cgroups", lambda r: str(r["num_cgroups_delta_after_leak_wait"].get("memory"))),
    ]
    rows = []
    for label, fn in spec:
        row = [label]
        for r in results:
            try:
                row.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                row.append("-")
        rows.append(row)
    return header, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Start N idle containers, measure start rate and host memory per "
                    "container, remove them; zoned (and runc with --runc) side by side.",
        epilog="Results: a table on stdout and JSON in bench/results/density-<N>*.json.")
    p.add_argument("--count", type=int, default=100, help="containers to start (default 100; "
                   "the issue's target is 1000)")
    p.add_argument("--runc", action="store_true", help="also measure runc (`runc run -d` on "
                   "one shared read-only bundle)")
    p.add_argument("--no-zoned", action="store_true", help="skip zoned (runc only)")
    p.add_argument("--api", action="store_true", help="start zoned containers in-process with "
                   "zoned.Container(...).start() instead of the CLI")
    p.add_argument("--api-too", action="store_true", help="measure zoned both ways in one "
                   "run: the CLI, then the API")
    p.add_argument("--network", action="store_true", help="zoned zones get a network of "
                   "the run's own (bridge + NAT, as `zoned network create`)")
    p.add_argument("--subnet", help="that network's subnet (for more than 250 zones: "
                   "e.g. 10.93.0.0/18 for 10000)")
    p.add_argument("--reach-sample", type=int, default=30, help="zones (picked at random) "
                   "to exec `true` in (and ping, when networked) once all are up (default 30)")
    p.add_argument("--no-raise", action="store_true", help="do not raise sysctls (pid_max, "
                   "neighbour table) for the run; by default those too low for --count are "
                   "raised and restored at the end")
    p.add_argument("--min-available-mib", type=int, default=4096, help="stop starting "
                   "when MemAvailable falls below this (default 4096: the host is shared)")
    p.add_argument("--root-prefix", default="/run/zoned-bench-density-",
                   help="zoned state roots are PREFIX<token>")
    p.add_argument("--zoned-rootfs", action="store_true", help="zoned uses the shared bundle "
                   "rootfs (--rootfs B/rootfs --read-only) like runc, not an image overlay")
    p.add_argument("--memory-cgroup", choices=("own", "shared"), help="zoned's "
                   "--memory-cgroup (default: own, a memory cgroup per zone)")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first "
                   "failed start (stop after 10 failures in a row); failures are recorded")
    p.add_argument("--rm-batch", type=int, default=50, help="ids per `zoned rm -f` (default 50)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to wait before each memory snapshot (default 2)")
    p.add_argument("--leak-wait", type=float, default=10.0,
                   help="extra seconds after removal before the last memory snapshot, to tell "
                        "memory the kernel frees late from a leak (default 10)")
    p.add_argument("--reap-wait", type=float, default=15.0,
                   help="seconds to wait for container processes to disappear after removal")
    p.add_argument("--workload", default="sleep 100000", help="command of each container")
    p.add_argument("--zoned", default=C.DEFAULT_ZONED, help="zoned CLI (default: the venv's)")
    p.add_argument("--runc-bin", dest="runc_bin", default=shutil.which("runc") or "runc",
                   help="runc binary (default: runc on $PATH)")
    p.add_argument("--out", help="JSON path (default bench/results/density-<N>[-api][-rootfs].json)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root")
    if a.count < 1:
        p.error("--count must be positive")
    a.workload = a.workload.split()
    engines_wanted = ([] if a.no_zoned else (["zoned", "zoned-api"] if a.api_too else
                                             ["zoned-api" if a.api else "zoned"])) \
        + (["runc"] if a.runc else [])
    if not engines_wanted:
        p.error("nothing to measure (--no-zoned without --runc)")

    def on_term(signum, frame):  # SIGTERM unwinds like Ctrl-C: through the clean-up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    env = C.environment(runc=a.runc_bin, zoned_cli=a.zoned)
    env["limits_at_start"] = limits_snapshot()
    sysctls = scale.Sysctls()
    limit_notes: list[dict] = []
    tok = os.urandom(2).hex()
    mounts = cgroup_mounts()
    bundle = None
    results = []
    engines: list[Engine] = []
    t_start = time.monotonic()
    try:
        limit_notes = [] if a.no_raise else scale.raise_limits(sysctls, a.count, a.network)
        if a.runc or a.zoned_rootfs:
            bundle = C.make_bundle(a.workload, readonly=True, zoned_cli=a.zoned,
                                   prefix="zoned-bench-density-bundle-")
        for e in engines_wanted:
            eng = Runc(a, tok, bundle) if e == "runc" else Zoned(a, tok, bundle,
                                                                 api=e == "zoned-api")
            engines.append(eng)
            try:
                results.append(measure_engine(eng, a, mounts))
            finally:
                eng.cleanup()
    finally:
        for eng in engines:
            eng.cleanup()
        if bundle is not None:
            shutil.rmtree(bundle, ignore_errors=True)
        sysctls.restore()
    elapsed = time.monotonic() - t_start
    final_left = {
        "cgroup_dirs": C.cgroup_dirs_named(f"bench-d{tok}-"),
        "state_roots": [r for e in engines for r in [e.state_root()] if os.path.exists(r)],
        "network": [n for e in engines if isinstance(e, Zoned) and e.net
                    for n in [scale.network_leftovers(e.state_root())]
                    if n["link_count"] or n["registry_fragments"]],
        "bundle_exists": bool(bundle and bundle.exists()),
    }
    final_left["ok"] = not any(final_left.values())

    header, rows = fmt_rows(results)
    name = f"density-{a.count}" + ("-api" if a.api else "") + ("-net" if a.network else "") \
        + ("-rootfs" if a.zoned_rootfs else "") \
        + ("-sharedmem" if a.memory_cgroup == "shared" else "")
    data = {"benchmark": "density", "environment": env,
            "parameters": vars(a),
            "results": results, "final_leftovers": final_left,
            "limits": sysctls.log + limit_notes,
            "elapsed_s": round(elapsed, 1)}
    out = C.write_json(name, data, a.out)
    print(f"\ndensity: {a.count} x `{' '.join(a.workload)}` ({env['date']}, kernel "
          f"{env['kernel']}, cgroup {env['cgroup_mode']}, {env['cpu_count']} CPUs, "
          f"{env['mem_total_mib']} MiB, {env.get('runc')})")
    print(C.table(rows, header, left_last=False))
    for r in results:
        for f in r.get("start_failures", [])[:5]:
            print(f"[{r['engine']}] start FAILED at #{f['index']} (reached {f['reached']}): "
                  f"{f['error']}")
        if r.get("start_failure_count", 0) > 5:
            print(f"[{r['engine']}] ... {r['start_failure_count']} failed starts in all")
        if r.get("stopped_early"):
            print(f"[{r['engine']}] stopped early at {r['stopped_early']['reached']}: "
                  f"{r['stopped_early']['why']}")
        busy = r.get("activity_at_measurement", {}).get("other_count")
        if busy:
            print(f"[{r['engine']}] WARNING: {busy} other zoned/pytest processes were running "
                  "at measurement time: meminfo deltas are perturbed")
        if r["remove"]["errors"]:
            print(f"[{r['engine']}] remove errors: {r['remove']['errors'][:3]}")
    print("final leftovers: " + ("none" if final_left["ok"] else json.dumps(final_left)))
    print(f"JSON: {out}")
    ok = final_left["ok"] and all(r["leftovers"]["ok"] and not r.get("start_failure")
                                  and not r.get("stopped_early")
                                  for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
