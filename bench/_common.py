"""Shared helpers for the benchmarks in bench/: environment facts, statistics, tables,
JSON output, OCI bundles and leftover checks. Plain stdlib (plus zoned itself)."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the repo's zoned, also when run from another directory
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
DEFAULT_ZONED = str(REPO / ".venv" / "bin" / "zoned")
CGROUP_ROOT = "/sys/fs/cgroup"


# -- environment ----------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def environment(runc: str | None = None, zoned_cli: str | None = None) -> dict:
    """Host facts worth keeping next to the numbers."""
    from zoned.cgroups import detect

    mem = meminfo()
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cgroup_mode": detect(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "mem_total_mib": round(mem.get("MemTotal", 0) / 1024),
        "pid_max": _read_int("/proc/sys/kernel/pid_max"),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "run_fstype": _fstype("/run"),
    }
    if runc:
        env["runc"] = _first_line([runc, "--version"])
    if zoned_cli:
        env["zoned"] = _first_line([zoned_cli, "--version"])
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "zoned"],
                           capture_output=True, text=True).stdout.split("\n")
    env["git_head"] = head
    env["zoned_tree_modified"] = sorted(ln[3:] for ln in dirty if ln.strip())
    return env


def _fstype(path: str) -> str | None:
    """The file system type of the mount that holds `path` (longest mount point prefix)."""
    best, fstype = "", None
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            parts = ln.split()
            mnt = parts[4]
            fs = parts[parts.index("-", 6) + 1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, fs
    return fstype


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


# -- statistics -------------------------------------------------------------------------------

def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def summary(xs: list[float]) -> dict:
    """median, p95, min, max, mean, stdev of samples (same unit as the input)."""
    import statistics

    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "p95": percentile(xs, 95),
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
    }


# -- output -------------------------------------------------------------------------------------

def table(rows: list[list], header: list[str], left_last: bool = True) -> str:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        last = len(r) - 1  # first and last columns (names, notes) left, numbers right
        return "  ".join(c.ljust(w) if i in (0, last) and left_last or i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=False))).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def write_json(name: str, data: dict, path: str | None = None) -> Path:
    out = Path(path) if path else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, out)
    return out


# -- bundles ------------------------------------------------------------------------------------

def make_bundle(args: list[str], *, readonly: bool, zoned_cli: str,
                image: str = "busybox", spec_from: str = "zoned", runc: str | None = None,
                prefix: str = "zoned-bench-bundle-") -> Path:
    """An OCI bundle in a fresh temp dir: the image's rootfs copied by
    ImageStore.export_bundle, config.json from `zoned spec` (or `runc spec`) with
    process.args=args, terminal=false and root.readonly as given."""
    from zoned.images.store import ImageStore

    bundle = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        ImageStore().export_bundle(image, bundle)
        spec_cmd = ([zoned_cli, "spec", "--bundle", str(bundle)] if spec_from == "zoned"
                    else [runc or "runc", "spec", "--bundle", str(bundle)])
        subprocess.run(spec_cmd, check=True, capture_output=True)
        cfg_path = bundle / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["process"]["args"] = list(args)
        cfg["process"]["terminal"] = False
        cfg["root"]["readonly"] = readonly
        cfg_path.write_text(json.dumps(cfg, indent=2))
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise
    return bundle


# -- leftovers ----------------------------------------------------------------------------------

def cgroup_dirs_named(prefix: str, max_depth: int = 4) -> list[str]:
    """Every cgroup directory (any hierarchy, up to max_depth below the mount) whose name
    starts with `prefix`."""
    found = []

    def walk(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if e.name.startswith(prefix):
                found.append(e.path)
            elif depth < max_depth:
                walk(e.path, depth + 1)

    walk(CGROUP_ROOT, 0)
    return sorted(found)


def mounts_containing(needle: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.strip() for ln in f if needle in ln]


def state_entries(root: str) -> list[str]:
    try:
        return sorted(os.listdir(root))
    except FileNotFoundError:
        return []


def rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...) or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()[0].decode()


def python_zoned_processes(needle: str | None = None) -> list[dict]:
    """Processes whose executable is a python and whose cmdline mentions 'zoned' (and
    `needle`, when given). The calling process is never listed."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "python" not in os.path.basename(exe):
            continue
        cmd = proc_cmdline(pid)
        if "zoned" not in cmd or (needle and needle not in cmd):
            continue
        out.append({"pid": pid, "exe": exe, "cmdline": cmd[:200]})
    return out
