"""Issue 13 (`zoned bench`): the statistics, the report and its schema check, the plots and
the command's flag checks, on made-up results. Pure logic and temp dirs: no root needed
(the real runs are in tests/test_bench.py)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from zoned.bench import plots, report, stats
from zoned.errors import ConfigError

pytestmark = pytest.mark.unprivileged


# -- statistics ---------------------------------------------------------------------------

def test_percentile_is_nearest_rank_and_always_a_sample():
    xs = [float(x) for x in range(1, 11)]
    assert stats.percentile(xs, 95) == 10
    assert stats.percentile(xs, 50) == 5
    assert stats.percentile(xs, 0) == 1
    assert stats.percentile([7.5], 95) == 7.5
    assert stats.percentile([3, 1, 2], 95) == 3  # order of the input does not matter
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_summary_has_min_median_p95_of_the_samples():
    s = stats.summary([5, 1, 9, 3, 7])
    assert s == {"n": 5, "median": 5, "p95": 9, "min": 1, "max": 9, "mean": 5.0,
                 "stdev": pytest.approx(3.1623, abs=1e-3)}
    assert stats.summary([]) == {"n": 0}
    assert stats.summary([2.0])["stdev"] == 0.0


def test_theil_sen_ignores_one_outlier_that_least_squares_follows():
    xs = list(range(1, 11))
    ys = [9348] + [2000 + 270 * x for x in xs[1:]]  # the first instance paid for cold caches
    assert stats.theil_sen(xs, ys) == pytest.approx(270)
    assert stats.slope(xs, ys)["slope"] < 0
    assert stats.theil_sen([1], [5]) is None
    assert stats.theil_sen([1, 2, 3], [1, 2, 3]) == pytest.approx(1)


def test_slope_recovers_a_line_and_refuses_one_point():
    xs = [1, 2, 3, 4, 5]
    line = stats.slope(xs, [3 + 2 * x for x in xs])
    assert line["slope"] == pytest.approx(2) and line["intercept"] == pytest.approx(3)
    assert line["r2"] == pytest.approx(1)
    noisy = stats.slope(xs, [10, 14, 11, 19, 16])
    assert 0 < noisy["r2"] < 1
    assert stats.slope([1], [1]) is None
    assert stats.slope([2, 2], [1, 5]) is None  # no two distinct x
    with pytest.raises(ValueError):
        stats.slope([1, 2], [1])


# -- a made-up result, shaped like session.run's ------------------------------------------

def fake_result(vm: bool = False) -> dict:
    def su(xs):
        return stats.summary(xs)

    samples = {"zone": {"true": [45.0, 50.0, 47.0], "first_output": [40.0, 42.0, 41.0]},
               "floor:unshare": {"true": [2.0, 2.2, 2.1], "first_output": [2.0, 2.1, 2.0]}}
    if vm:
        samples["vm"] = {"true": [3100.0, 3300.0], "first_output": [3000.0, 3050.0]}
    dens = {"zone": {"requested": 3, "started": 3, "stopped_early": None,
                     "start_latency_ms_samples": [60.0, 62.0, 70.0],
                     "start_latency_ms": su([60.0, 62.0, 70.0]), "start_wall_s": 0.2,
                     "start_rate_per_s": 15.0, "start_degradation_last_over_first": 1.1,
                     "used_kib_after_each_start": [300, 500, 900],
                     "attributed_kib_after_each_start": [600, 1200, 1800],
                     "used_slope": stats.slope([1, 2, 3], [300, 500, 900]),
                     "attributed_slope": stats.slope([1, 2, 3], [600, 1200, 1800]),
                     "kib_per_instance_slope": 600.0, "kib_per_instance": 600.0,
                     "kib_per_instance_basis": "slope", "fit_in_host_memory": 40000,
                     "instances_per_gib": 1747.6,
                     "pss_kib_per_instance_samples": [400, 410, 405],
                     "pss_kib_per_instance": su([400, 410, 405]),
                     "memcg_kib_per_instance": su([300, 320, 310]),
                     "memcg_kernel_kib_per_instance": su([100, 110, 105]),
                     "kernel_kib_per_instance": 200.0,
                     "mem_available_drop_kib_per_instance": 700.0,
                     "processes_per_instance": su([2, 2, 2]),
                     "remove": {"wall_s": 0.05, "rate_per_s": 60.0, "error": None},
                     "baseline_used_noise_kib": 1000}}
    res = {
        "schema": "zoned-bench/1", "command": "all", "complete": True, "elapsed_s": 12.5,
        "parameters": {"quick": True, "count": 3},
        "machine": {"date": "2026-12-01T18:00:00+00:00", "kernel": "6.1.0",
                    "cgroup_layout": "hybrid", "cpu_count": 2, "mem_total_mib": 24000,
                    "accelerator": "tcg" if vm else None,
                    "versions": {"zoned": "zoned version 0.1.0", "runc": "runc 1.1.5",
                                 "podman": "podman 4.3.1", "qemu": "QEMU 7.2"}},
        "backends": {"zone": {"available": True, "note": "zones"},
                     "vm": ({"available": True, "note": "vms"} if vm else
                            {"available": False, "reason": "no --backend in zoned run"}),
                     "floor:unshare": {"available": True, "note": "floor", "floor": True}},
        "startup": {"description": "ms", "rounds": 3, "samples_ms": samples,
                    "stats_ms": {n: {m: su(x) for m, x in per.items()}
                                 for n, per in samples.items()},
                    "failures": {}, "disabled": {}},
        "density": dens,
        "idle": {"zone": {"window_s": 5.0, "instances": 3,
                          "cpu_pct_per_instance_samples": [0.0, 0.001, 0.0],
                          "cpu_pct_per_instance": su([0.0, 0.001, 0.0]),
                          "host_busy_pct_during_window": 3.0}},
        "migrate": {"description": "zoned migrate", "not_measured": {"vm": "not yet"},
                    "backends": {"zone": {"results": [
                        {"size_mib": 16, "mode": "live", "frozen_ms": 300.0, "total_s": 0.6,
                         "pings_lost": 10, "longest_client_gap_ms": 400.0, "tcp_kept": "yes",
                         "memory_ok": "yes"},
                        {"size_mib": 64, "mode": "live", "frozen_ms": 320.0, "total_s": 0.9,
                         "pings_lost": 12, "longest_client_gap_ms": 430.0, "tcp_kept": "yes",
                         "memory_ok": "yes"}]}}},
        "leftovers": {"zone": {"ok": True}, "ok": True},
    }
    return res


def test_a_complete_result_validates():
    assert report.validate(fake_result()) == []
    assert report.validate(fake_result(vm=True)) == []


@pytest.mark.parametrize("break_it, expect", [
    (lambda r: r["machine"].pop("accelerator"), "$.machine.accelerator: missing"),
    (lambda r: r["machine"]["versions"].pop("qemu"), "$.machine.versions.qemu: missing"),
    (lambda r: r["backends"]["vm"].pop("reason"), "$.backends.vm.reason: missing"),
    (lambda r: r["startup"]["samples_ms"]["zone"].update(true=["45"]),
     "$.startup.samples_ms.zone.true: not a list of numbers"),
    (lambda r: r["startup"]["stats_ms"]["zone"]["true"].pop("p95"),
     "$.startup.stats_ms.zone.true.p95: missing"),
    (lambda r: r["density"]["zone"].pop("kib_per_instance_slope"),
     "$.density.zone.kib_per_instance_slope: missing"),
    (lambda r: r["density"]["zone"].pop("kib_per_instance"),
     "$.density.zone.kib_per_instance: missing"),
    (lambda r: r["idle"]["zone"].pop("cpu_pct_per_instance_samples"),
     "$.idle.zone.cpu_pct_per_instance_samples: not a list of numbers"),
    (lambda r: r["leftovers"].pop("ok"), "$.leftovers.ok: missing"),
    (lambda r: r.update(elapsed_s="long"), "$.elapsed_s: str, expected"),
])
def test_validate_names_what_is_wrong(break_it, expect):
    res = fake_result()
    break_it(res)
    errs = report.validate(res)
    assert any(e.startswith(expect) for e in errs), errs


def test_validate_survives_json_round_trip():
    assert report.validate(json.loads(json.dumps(fake_result(vm=True)))) == []


def test_table_shows_spread_unavailable_reasons_and_leftovers():
    text = report.render_table(fake_result())
    # the startup row of zone: min / median / p95 of its samples, with n
    assert "45.0 / 47.0 / 50.0 (n=3)" in text
    assert "unavailable: no --backend in zoned run" in text
    assert "600 (r²=1.00)" in text  # the slope of the instances' own memory
    assert "600 (slope)" in text
    assert "leftovers: none" in text
    res = fake_result()
    res["leftovers"] = {"zone": {"ok": False, "state": ["zb-x"]}, "ok": False}
    assert "LEFTOVERS" in report.render_table(res) and "zb-x" in report.render_table(res)


def test_markdown_has_tables_plots_and_the_tcg_caveat_only_with_vms():
    md = report.render_markdown(fake_result(vm=True), ["startup-latency.png"])
    assert "| backend |" in md and "![startup-latency.png](startup-latency.png)" in md
    assert "TCG" in md and "inflates" in md
    md_novm = report.render_markdown(fake_result(), [])
    assert "inflates" not in md_novm
    lines = [ln for ln in md_novm.splitlines() if ln.startswith("| zone |")]
    assert lines and all(ln.count("|") == lines[0].count("|") for ln in lines[:1])


def test_a_pipe_in_a_cell_does_not_break_the_markdown_table():
    t = report.markdown_table([["a|b", 1]], ["x", "y"])
    assert "a\\|b" in t


def _matplotlib() -> bool:
    for py in (sys.executable, plots.SYSTEM_PYTHON):
        try:
            if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
                return True
        except OSError:
            pass
    return False


@pytest.mark.skipif(not _matplotlib(), reason="no matplotlib (venv extra or python3-matplotlib)")
def test_plots_are_png_files_for_every_figure_with_data(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(fake_result(vm=True)))
    names, why = plots.make(str(path), str(tmp_path / "png"))
    assert why is None
    assert sorted(names) == ["instances-per-gib.png", "memory-per-instance.png",
                             "migrate-frozen.png", "startup-latency.png"]
    for n in names:
        assert (tmp_path / "png" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not _matplotlib(), reason="no matplotlib (venv extra or python3-matplotlib)")
def test_plots_skip_figures_without_data(tmp_path):
    res = fake_result()
    del res["migrate"], res["density"]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(res))
    names, why = plots.make(str(path), str(tmp_path))
    assert names == ["startup-latency.png"] and why is None


# -- the command's flags --------------------------------------------------------------------

def args(**kw) -> argparse.Namespace:
    base = {"what": "all", "backends": "zone,vm,runc,podman", "count": None, "quick": False,
            "budget": "8G", "window": None, "zoned": None}
    return argparse.Namespace(**{**base, **kw})


def test_options_from_flags():
    from zoned.cli.bench import options

    o = options(args(backends="zone,runc,zone", count=2, quick=True, budget="512m"))
    assert o.backends == ["zone", "runc"] and o.count == 2 and o.quick
    assert o.budget_kib == 512 * 1024
    assert o.rounds() == 2 and o.instances() == 2 and o.idle_window() == 5.0
    full = options(args())
    assert full.rounds() == 30 and full.instances() == 50 and full.vm_cap() == 10


@pytest.mark.parametrize("kw, flag", [
    ({"zoned": "/nonexistent/zoned"}, "--zoned"), ({"zoned": "/etc"}, "--zoned"),
    ({"backends": "zone,docker"}, "--backends"), ({"backends": ","}, "--backends"),
    ({"count": 0}, "--count"), ({"budget": "lots"}, "--budget"),
    ({"budget": "10k"}, "--budget"), ({"window": 0.0}, "--window"),
])
def test_bad_flags_are_one_config_error_naming_the_flag(kw, flag):
    from zoned.cli.bench import options

    with pytest.raises(ConfigError) as e:
        options(args(**kw))
    assert flag in str(e.value) and "\n" not in str(e.value)


def test_zoned_version_does_not_import_the_bench():
    code = ("import sys; from zoned.cli import main; main(['--version']); "
            "print(sorted(m for m in sys.modules if m.startswith('zoned.bench') "
            "or m == 'zoned.cli.bench'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"



@pytest.mark.parametrize("data, accel", [
    ({"state": {"pid": 1}, "vm": {"accel": "tcg"}}, "tcg"),
    ({"accelerator": "KVM"}, "kvm"),
    ([{"vm": {"accelerator": {"name": "tcg", "reason": "no /dev/kvm"}}}], "tcg"),
    ({"accel": "hvf"}, None),
    ({"state": {"status": "running"}}, None),
])
def test_the_vm_accelerator_is_found_in_inspect_json(data, accel):
    from zoned.bench.backends import find_accel

    assert find_accel(data) == accel


def test_the_accelerators_reason_is_found_next_to_it():
    from zoned.bench.backends import find_key

    data = {"state": {"reason": "not this"}, "vm": {"accel": "tcg", "reason": "no kvm"}}
    assert find_key(data, "reason", within=("vm", "accel")) == "no kvm"
    assert find_key({"state": {}}, "reason", within=("vm",)) is None


def test_start_rate_summary_of_latencies():
    """bench/start_rate.py's figures of one engine: rate from the mean, the first and last
    tenth and their ratio, and the median of the per-round differences against runc."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import start_rate

    ms = [10.0] * 10 + [20.0] * 80 + [30.0] * 10
    s = start_rate.summary(ms, [15.0] * 100)
    assert s["n"] == 100 and s["median_ms"] == 20.0 and s["mean_ms"] == 20.0
    assert s["rate_per_s"] == 50.0 and s["p95_ms"] == 30.0
    assert (s["first_10pct_mean_ms"], s["last_10pct_mean_ms"], s["last_over_first"]) == \
        (10.0, 30.0, 3.0)
    assert s["paired_minus_runc_median_ms"] == 5.0
    assert "paired_minus_runc_median_ms" not in start_rate.summary(ms, None)


# -- where results are written (audit 8) ----------------------------------------------------

def test_write_json_goes_through_no_name_another_user_could_plant(tmp_path):
    """The benches run as root and --out may be in /tmp: a symlink planted at the old
    fixed PATH.tmp (or at PATH itself) must be replaced or left alone, never written
    through."""
    import os

    from zoned.bench.common import write_json

    canary = tmp_path / "pf-canary"
    canary.write_text("canary\n")
    out = tmp_path / "startup.json"
    os.symlink(canary, tmp_path / "startup.json.tmp")
    assert write_json("startup", {"a": 1}, str(out)) == out
    assert json.loads(out.read_text()) == {"a": 1} and not out.is_symlink()
    assert canary.read_text() == "canary\n"
    out.unlink()
    os.symlink(canary, out)  # at the path itself: the link is replaced
    write_json("startup", {"b": 2}, str(out))
    assert json.loads(out.read_text()) == {"b": 2} and not out.is_symlink()
    assert canary.read_text() == "canary\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would have made it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pf-canary", "startup.json", "startup.json.tmp"]


def test_startup_quick_writes_beside_the_results_where_git_ignores_it(monkeypatch):
    """bench/startup.py --quick's default JSON: not in /tmp (root wrote
    /tmp/zoned-startup-quick.json, a name any user could plant), and never over the
    committed bench/results/startup.json."""
    from pathlib import Path

    from zoned.bench.common import RESULTS

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(repo / "bench"))
    import startup

    assert startup.QUICK_OUT.parent == RESULTS == repo / "bench" / "results"
    assert startup.QUICK_OUT.name != "startup.json"
    r = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q",
                        str(startup.QUICK_OUT.relative_to(repo))])
    assert r.returncode == 0  # ignored: a smoke test's numbers are never committed
