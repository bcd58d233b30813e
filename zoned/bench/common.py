"""What the stand-alone scripts in bench/ share (startup.py, density.py, faults.py,
oci_clients.py, network.py, and migrate_twohost here): their environment record, JSON
writing and OCI bundles. bench/_common.py re-exports this module for them."""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from zoned.bench.facts import REPO, first_line, fstype, git_head, meminfo, read_int

RESULTS = REPO / "bench" / "results"
DEFAULT_ZONED = str(REPO / ".venv" / "bin" / "zoned")


def environment(runc: str | None = None, zoned_cli: str | None = None) -> dict:
    """Host facts worth keeping next to the numbers (the scripts' format)."""
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
        "pid_max": read_int("/proc/sys/kernel/pid_max"),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "run_fstype": fstype("/run"),
    }
    if runc:
        env["runc"] = first_line([runc, "--version"])
    if zoned_cli:
        env["zoned"] = first_line([zoned_cli, "--version"])
    env["git_head"], env["zoned_tree_modified"] = git_head()
    return env


def write_json(name: str, data: dict, path: str | None = None) -> Path:
    """Write data to `path` (default bench/results/NAME.json) atomically, through a temp
    file no one can plant (zoned.linux.files.replace_file: benches run as root, and
    --out may name a directory others write, as /tmp)."""
    from zoned.linux.files import replace_file

    out = Path(path) if path else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_file(str(out), (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())
    return out


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
