"""PNG plots of a `zoned bench` result; the only module that imports matplotlib.

Runs in the benchmark's interpreter when that has matplotlib (the `plot` extra), else as
a script under the system Python with Debian's python3-matplotlib (`python3 plots.py
RESULT.json OUTDIR`): it imports nothing of zoned, so any Python 3 with matplotlib will
do. Without either, `zoned bench` still writes its table, JSON and report and says why
there are no plots."""
from __future__ import annotations

import json
import os
import subprocess
import sys

SYSTEM_PYTHON = "/usr/bin/python3"
COLORS = {"zone": "tab:blue", "vm": "tab:red", "runc": "tab:green", "podman": "tab:purple",
          "floor:unshare": "tab:gray", "floor:python": "tab:olive"}


def _title(res: dict) -> str:
    m = res.get("machine", {})
    acc = m.get("accelerator") or "no VM"
    return (f"{m.get('date', '')[:16]}  kernel {m.get('kernel')}, {m.get('cpu_count')} CPUs, "
            f"cgroup {m.get('cgroup_layout')}, VM accel. {acc}")


def draw(res: dict, outdir: str) -> list[str]:
    """Every plot the result has data for; the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    written = []

    def save(fig, name):
        fig.suptitle(_title(res), fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, name), dpi=100)
        plt.close(fig)
        written.append(name)

    den = res.get("density") or {}
    if any(d.get("attributed_kib_after_each_start") for d in den.values()):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, d in den.items():
            used = d.get("attributed_kib_after_each_start") or []
            if not used:
                continue
            xs = list(range(1, len(used) + 1))
            ax.plot(xs, [max(u, 1) / x for u, x in zip(used, xs, strict=True)], marker="o", ms=3,
                    color=COLORS.get(name), label=f"{name}: "
                    f"{(d.get('kib_per_instance') or 0):.0f} KiB per instance")
        ax.set_yscale("log")
        ax.set_xlabel("instances running (N)")
        ax.set_ylabel("attributed memory / N (KiB, log)")
        ax.set_title("memory per instance vs N (PSS of its processes + memcg kernel)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "memory-per-instance.png")

    st = (res.get("startup") or {}).get("samples_ms") or {}
    data = [(n, s["true"]) for n, s in st.items() if s.get("true")]
    if data:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.boxplot([d[1] for d in data], whis=(0, 95), showfliers=True)
        ax.set_xticks(range(1, len(data) + 1), [f"{n}\n(n={len(x)})" for n, x in data],
                      fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log); whiskers: min and p95")
        ax.set_title("start latency: run /bin/true to completion")
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "startup-latency.png")

    per_gib = [(n, d["instances_per_gib"]) for n, d in den.items()
               if d.get("instances_per_gib")]
    if per_gib:
        fig, ax = plt.subplots(figsize=(6, 4))
        bars = ax.bar([n for n, _ in per_gib], [v for _, v in per_gib],
                      color=[COLORS.get(n, "tab:gray") for n, _ in per_gib])
        for b, (_, v) in zip(bars, per_gib, strict=True):
            ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                        va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("idle instances per GiB of host memory (log)")
        ax.set_title("instances that fit per GiB (measured slope)")
        save(fig, "instances-per-gib.png")

    mig = (res.get("migrate") or {}).get("backends") or {}
    lines = []
    for name, m in mig.items():
        for mode in ("stop-and-copy", "live"):
            pts = [(x["size_mib"], x["frozen_ms"]) for x in m.get("results", [])
                   if x["mode"] == mode and x.get("frozen_ms") is not None]
            if pts:
                lines.append((f"{name} {mode}", pts, COLORS.get(name),
                              "o" if mode == "live" else "s"))
    if lines:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for label, pts, color, marker in lines:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                    ls="-" if "live" in label else "--", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("workload memory (MiB)")
        ax.set_ylabel("frozen time (ms)")
        ax.set_title("migration: frozen time vs memory size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "migrate-frozen.png")
    return written


def make(json_path: str, outdir: str) -> tuple[list[str], str | None]:
    """Draw the plots of a result file: (files written, why none or what failed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        with open(json_path) as f:
            return draw(json.load(f), outdir), None
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import matplotlib"], capture_output=True).returncode:
        return [], ("no plots: matplotlib is not importable (pip install 'zoned[plot]', or "
                    "apt-get install python3-matplotlib)")
    p = subprocess.run([SYSTEM_PYTHON, os.path.abspath(__file__), json_path, outdir],
                       capture_output=True, text=True, timeout=300)
    if p.returncode:
        return [], f"plotting failed: {p.stderr.strip()[-500:]}"
    return [ln for ln in p.stdout.split() if ln.endswith(".png")], None


# -- bench/migrate.py's own plot (its JSON format) --------------------------------------------------------------------------------------

TWOHOST_PLOT = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

data = json.load(open(sys.argv[1]))
rows = data["results"]
env = data["environment"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
style = {"stop-and-copy": ("tab:blue", "o"), "live": ("tab:orange", "s")}
for mode, (color, marker) in style.items():
    pts = [(r["size_mib"], r["frozen_ms"], r["total_s"]) for r in rows
           if r["mode"] == mode and r["frozen_ms"] is not None]
    if not pts:
        continue
    xs = [p[0] for p in pts]
    ax1.plot(xs, [p[1] for p in pts], marker=marker, color=color, label=mode)
    ax2.plot(xs, [p[2] for p in pts], marker=marker, color=color, label=mode)
first = True
for size, ms in sorted(data["targets_frozen_ms_live"].items(), key=lambda kv: int(kv[0])):
    ax1.plot([int(size)], [ms], marker="_", markersize=22, mew=2.5, color="red", ls="none",
             label="target (live)" if first else None)
    first = False
sizes = sorted({r["size_mib"] for r in rows} | {int(s) for s in data["targets_frozen_ms_live"]})
for ax, title, ylabel in ((ax1, "frozen time (container not running)", "ms"),
                          (ax2, "total migration time", "s")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("container memory (MiB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
fig.suptitle(f"zoned migrate A->B over zoned:// (median of {data['parameters']['rounds']} "
             f"round(s)); one VM, {env['cpu_count']} CPUs, kernel {env['kernel']}, "
             f"{env.get('criu')}; wire = veth", fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(sys.argv[2])
"""


def twohost_plot(json_path, png: str) -> str:
    """-> what happened (the PNG's path or why there is none)."""
    try:
        import matplotlib  # noqa: F401
        py = sys.executable
    except ImportError:
        py = SYSTEM_PYTHON
        probe = subprocess.run([py, "-c", "import matplotlib"], capture_output=True)
        if probe.returncode != 0:
            return ("no plot: matplotlib is not importable (apt-get install -y "
                    "--no-install-recommends python3-matplotlib)")
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    p = subprocess.run([py, "-c", TWOHOST_PLOT, str(json_path), png], capture_output=True, text=True)
    if p.returncode != 0:
        return f"plot failed: {p.stderr.strip()[-500:]}"
    return png


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print("\n".join(draw(json.load(fh), sys.argv[2])))
