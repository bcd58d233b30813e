"""Issue 13: `zoned bench` end to end, as a user runs it. A tiny `all` run (count 2,
--quick; zone, and vm when the VM backend exists) must write the table, JSON, Markdown
and every plot, with raw samples that match the summaries, machine facts, and nothing
left on the host; bad flags are one line and exit 125; Ctrl-C in the middle of a run
still removes everything the run made."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoned.bench import report, stats

ZONED = str(Path(sys.executable).parent / "zoned")
PNG = b"\x89PNG\r\n\x1a\n"


def vm_backend() -> str | None:
    """None if `zoned run --backend vm` exists here, else why not."""
    p = subprocess.run([ZONED, "run", "--help"], capture_output=True, text=True)
    return None if "--backend" in p.stdout else "`zoned run` has no --backend (VM backend " \
        "not merged)"


def host_traces(token: str) -> dict:
    """Everything on the host that names a run's token."""
    from zoned.bench.leftovers import cgroup_dirs_named, links_aliased, mounts_containing

    import tempfile

    return {
        "state_roots": sorted(p for p in os.listdir("/run") if token in p),
        "temp_dirs": sorted(p for p in os.listdir(tempfile.gettempdir()) if token in p),
        "cgroups": cgroup_dirs_named(f"zb-{token}"),
        "mounts": mounts_containing(token),
        "links": links_aliased(token),
        "processes": [pid for pid in os.listdir("/proc") if pid.isdigit()
                      and f"zb-{token}" in _cmdline(pid)],
    }


NO_TRACES = {"state_roots": [], "temp_dirs": [], "cgroups": [], "mounts": [], "links": [],
             "processes": []}


def end(proc: subprocess.Popen) -> None:
    """A bench a failed test leaves running is stopped the way a user would, so that it
    cleans up after itself (SIGKILL only if that does not end it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `zoned bench all --count 2 --quick` with zone (+ vm when available)."""
    out = tmp_path_factory.mktemp("bench")
    backends = "zone" if vm_backend() else "zone,vm"
    p = subprocess.run([ZONED, "bench", "all", "--count", "2", "--quick", "--window", "1",
                        "--backends", backends, "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    result = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() \
        else None
    return {"p": p, "out": out, "result": result, "backends": backends.split(",")}


def test_tiny_run_succeeds_and_writes_every_file(tiny_run):
    p, out = tiny_run["p"], tiny_run["out"]
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("bench.json", "report.md", "table.txt", "startup-latency.png",
                 "memory-per-instance.png", "instances-per-gib.png", "migrate-frozen.png"):
        assert (out / name).is_file(), (name, p.stderr[-2000:])
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    assert p.stdout == (out / "table.txt").read_text() + "\n"  # the table on stdout
    assert str(out) not in (out / "table.txt").read_text()  # plots named relative to --out
    md = (out / "report.md").read_text()
    for png in ("startup-latency.png", "memory-per-instance.png", "instances-per-gib.png",
                "migrate-frozen.png"):
        assert f"]({png})" in md


def test_progress_goes_to_stderr(tiny_run):
    err = tiny_run["p"].stderr
    for what in ("startup: round 1/2", "density: zone", "idle: zone", "network:", "migrate:",
                 "cleaning up"):
        assert what in err
    assert "[bench" not in tiny_run["p"].stdout


def test_json_schema_raw_samples_and_machine_facts(tiny_run):
    res = tiny_run["result"]
    assert report.validate(res) == []
    assert res["complete"] is True and res["schema"] == "zoned-bench/1"
    m = res["machine"]
    assert m["kernel"] == os.uname().release and m["cpu_count"] == os.cpu_count()
    assert m["cgroup_layout"] in ("v1", "hybrid", "v2", "unified")
    assert m["versions"]["zoned"].startswith("zoned version")
    for tool in ("runc", "podman", "qemu"):
        assert tool in m["versions"]
    # every summary is recomputable from the raw samples next to it
    for name, per in res["startup"]["samples_ms"].items():
        for metric, xs in per.items():
            assert xs, (name, metric)
            assert res["startup"]["stats_ms"][name][metric] == stats.summary(xs)
    assert len(res["startup"]["samples_ms"]["zone"]["true"]) == 2
    for floor in ("floor:unshare", "floor:python"):
        assert len(res["startup"]["samples_ms"][floor]["true"]) == 2
    d = res["density"]["zone"]
    assert d["started"] == 2 and len(d["start_latency_ms_samples"]) == 2
    assert d["start_latency_ms"] == stats.summary(d["start_latency_ms_samples"])
    assert len(d["used_kib_after_each_start"]) == 2
    assert d["kib_per_instance_slope"] == stats.theil_sen(
        [1, 2], d["attributed_kib_after_each_start"])
    # the cost of one more: that slope, or (a noisy line) the mean per instance at the end
    assert d["kib_per_instance"] in (d["kib_per_instance_slope"],
                                     d["attributed_kib_per_instance_at_end"]["mean"])
    assert d["fit_in_host_memory"] == int(d["baseline_mem_available_kib"]
                                          / d["kib_per_instance"])
    # an idle zone is a sleeping process (+ its logger): some PSS, almost no CPU
    assert 50 < d["pss_kib_per_instance"]["median"] < 20000
    assert d["processes_per_instance"]["median"] >= 1
    idle = res["idle"]["zone"]
    assert len(idle["cpu_pct_per_instance_samples"]) == 2
    assert idle["cpu_pct_per_instance"]["max"] < 5
    net = res["network"]["paths"]
    assert set(net) == {"loopback", "zone<->zone bridge", "host->zone bridge"}
    assert all(p["throughput"]["gbit_s"]["median"] > 0 for p in net.values())
    mig = res["migrate"]["backends"]["zone"]["results"]
    assert {(x["size_mib"], x["mode"]) for x in mig} == {
        (16, "stop-and-copy"), (16, "live"), (64, "stop-and-copy"), (64, "live")}
    assert all(x["memory_ok"] == "yes" for x in mig)


def test_vm_backend_is_reported_or_measured(tiny_run):
    res = tiny_run["result"]
    why = vm_backend()
    if why:
        assert "vm" not in tiny_run["backends"]
        pytest.skip(f"vm backend unavailable: {why}")
    assert res["backends"]["vm"]["available"] is True
    assert res["machine"]["accelerator"] in ("tcg", "kvm")
    assert res["density"]["vm"]["started"] >= 1
    assert res["startup"]["samples_ms"]["vm"]["true"]


def test_default_backends_report_vm_unavailable_with_reason(tmp_path):
    why = vm_backend()
    if not why:
        pytest.skip("the vm backend is available here")
    p = subprocess.run([ZONED, "bench", "startup", "--count", "1", "--quick", "--backends",
                        "zone,vm", "--out", str(tmp_path), "--plot", ""],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["backends"]["vm"] == {"available": False, "reason": res["backends"]["vm"]["reason"]}
    assert "--backend" in res["backends"]["vm"]["reason"]
    assert "vm" not in res["startup"]["samples_ms"]
    assert f"unavailable: {res['backends']['vm']['reason']}" in p.stdout


def test_nothing_is_left_on_the_host(tiny_run):
    res = tiny_run["result"]
    assert res["leftovers"]["ok"] is True, res["leftovers"]
    assert host_traces(res["parameters"]["token"]) == NO_TRACES


@pytest.mark.parametrize("flags, field", [
    (["--backends", "zone,docker"], "--backends"), (["--count", "0"], "--count"),
    (["--budget", "lots"], "--budget"), (["--window", "-1"], "--window"),
])
def test_bad_flags_one_line_exit_125_nothing_made(tmp_path, flags, field):
    before = set(os.listdir("/run"))
    p = subprocess.run([ZONED, "bench", "startup", *flags, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 125
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoned: invalid ") and field in lines[0]
    # (other users of this host may make their own entries in /run meanwhile)
    assert {e for e in set(os.listdir("/run")) - before if "zbench" in e} == set()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_run_removes_everything(tmp_path):
    """SIGINT while instances are running: the run unwinds through its clean-up."""
    proc = subprocess.Popen([ZONED, "bench", "density", "--backends", "zone,runc",
                             "--count", "40", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    token, seen = None, []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"token ([0-9a-f]+)", line)
            token = token or (m and m.group(1))
            if "density: zone 8/40 started" in line or time.monotonic() > deadline:
                break
        assert token, "".join(seen)
        running = [d for d in os.listdir(f"/run/zoned-zbench-{token}-zone")]
        assert len(running) >= 8  # the interrupt comes with zones running
        proc.send_signal(signal.SIGINT)
        rest_lines = []
        for line in proc.stderr:  # a second Ctrl-C during the clean-up waits for its end
            rest_lines.append(line)
            if "cleaning up" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = "".join(rest_lines) + proc.communicate(timeout=180)[1]
    finally:
        end(proc)
    assert proc.returncode == 130, rest[-2000:]
    assert "cleaning up" in rest
    assert host_traces(token) == NO_TRACES


SHIM = '''\
#!{python}
"""A stand-in for `zoned run --backend vm` on the VM backend's CLI contract (same flags as
zones; the instance's pid in its state; `zoned inspect` names the accelerator), with zones
underneath: it checks the bench's VM runner, not VMs."""
import json, os, subprocess, sys
REAL = {real!r}
args = sys.argv[1:]
if "--backend" in args:
    i = args.index("--backend")
    assert args[i + 1] == "vm", args
    del args[i:i + 2]
    with open({log!r}, "a") as f:
        f.write(" ".join(args) + "\\n")
if "run" in args and ("--help" in args or "-h" in args):
    out = subprocess.run([REAL, *args], capture_output=True, text=True).stdout
    print(out + "  --backend {{zone,vm}}")
    sys.exit(0)
if "inspect" in args:
    p = subprocess.run([REAL, *args], capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stderr)
        sys.exit(p.returncode)
    d = json.loads(p.stdout)
    d["vm"] = {{"accel": "tcg", "reason": "stand-in"}}
    print(json.dumps(d))
    sys.exit(0)
os.execv(REAL, [REAL, *args])
'''


def test_vm_runner_on_the_cli_contract(tmp_path):
    """Until the VM backend is merged: the vm runner drives `zoned run --backend vm` with
    the contract's flags, is capped to its VM rounds, finds the accelerator in inspect,
    and the report carries the TCG caveat."""
    log = tmp_path / "backend-vm-calls"
    shim = tmp_path / "zoned-shim"
    shim.write_text(SHIM.format(python=sys.executable, real=ZONED, log=str(log)))
    shim.chmod(0o755)
    out = tmp_path / "out"
    p = subprocess.run([ZONED, "bench", "density", "--backends", "vm", "--count", "5",
                        "--quick", "--window", "1", "--zoned", str(shim), "--out", str(out),
                        "--plot", ""], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "bench.json").read_text())
    assert res["backends"]["vm"]["available"] is True
    assert res["density"]["vm"]["started"] == 3  # --quick caps VMs at 3 instances
    assert res["idle"]["vm"]["instances"] == 3
    assert res["machine"]["accelerator"] == "tcg"
    assert res["machine"]["accelerator_reason"] == "stand-in"
    assert "inflates" in (out / "report.md").read_text()
    assert "Why TCG: stand-in" in (out / "report.md").read_text()
    calls = [re.sub(r"^--root \S+ ", "", c) for c in log.read_text().splitlines()]
    assert sum(c.startswith("run -d --name zb-") for c in calls) == 3
    assert any(c.startswith("run --rm --name zb-") and c.endswith("-- /bin/true")
               for c in calls)  # the availability probe
    assert res["leftovers"]["ok"] is True
    assert host_traces(res["parameters"]["token"]) == NO_TRACES


def test_budget_stops_a_backend_early(tmp_path):
    p = subprocess.run([ZONED, "bench", "density", "--backends", "zone", "--count", "30",
                        "--budget", "1M", "--quick", "--window", "1", "--out", str(tmp_path),
                        "--plot", ""], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads((tmp_path / "bench.json").read_text())["density"]["zone"]
    assert 1 <= d["started"] < 30
    assert d["stopped_early"]["reason"] == "budget of 1024 KiB used"
    assert d["attributed_kib_after_each_start"][-1] > 1024
    assert all(x <= 1024 for x in d["attributed_kib_after_each_start"][:-1])


def test_sigterm_while_a_start_is_in_flight_leaves_nothing(tmp_path):
    """SIGTERM to the bench alone (not its process group) while a `zoned run -d` child is
    midway (held at a fault point): the child is ended and waited for before the clean-up
    looks, so it cannot finish making a zone afterwards."""
    env = dict(os.environ, ZONED_TEST_FAULT="write:tmp=3")
    proc = subprocess.Popen([ZONED, "bench", "density", "--backends", "zone", "--count", "5",
                             "--out", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    token, seen = None, []
    try:
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"token ([0-9a-f]+)", line)
            token = token or (m and m.group(1))
            if "starting up to 5" in line:
                break
        assert token, "".join(seen)
        first = f"/run/zoned-zbench-{token}-zone/zb-{token}-zone-1"
        deadline = time.monotonic() + 30
        while not os.path.isdir(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.isdir(first)  # the first `zoned run -d` is being made ...
        time.sleep(0.5)  # ... and now held inside its write (3 s)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=240)[1]
    finally:
        end(proc)
    assert proc.returncode == 128 + signal.SIGTERM, rest[-2000:]
    time.sleep(4)  # longer than the fault point's pause: a surviving child would be done
    assert host_traces(token) == NO_TRACES


CGROUP_PROBE = r'''
import os, subprocess, sys
from zoned.bench.procfs import cgroup_mounts, cgroup_procs
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
child = subprocess.Popen(["sleep", "30"])
try:
    print(child.pid, sorted(cgroup_procs(child.pid, cgroup_mounts())))
finally:
    child.kill()
    child.wait()
'''


def test_an_instance_in_the_benchs_own_cgroup_counts_only_its_process_tree():
    """A VM's QEMU may stay in the cgroup of whoever started it: then that cgroup's
    processes are not the instance's (the bench itself is among them); its process tree
    is. Checked in a throw-away pids cgroup that a probe process moves itself into."""
    from zoned.bench.procfs import cgroup_mounts

    base = cgroup_mounts().get("pids")
    if not base:
        pytest.skip("no cgroup v1 pids hierarchy on this host")
    cg = os.path.join(base, f"zb-probe-{os.getpid()}")
    os.mkdir(cg)
    try:
        p = subprocess.run([sys.executable, "-c", CGROUP_PROBE, cg], capture_output=True,
                           text=True, timeout=60)
    finally:
        os.rmdir(cg)
    assert p.returncode == 0, p.stderr
    child, pids = p.stdout.split(" ", 1)
    assert json.loads(pids) == [int(child)]


def test_new_memcg_cost_measures_empty_memory_cgroups_and_leaves_none():
    """density.py's probe of what one more memory cgroup costs the kernel (its shrinker
    slots, sized by the most superblocks alive since boot): a positive slab figure, and its
    probe cgroups are gone afterwards."""
    from zoned.bench.procfs import cgroup_mounts, new_memcg_cost

    mounts = cgroup_mounts()
    base = mounts.get("memory") or mounts.get("")
    if not base:
        pytest.skip("no memory cgroup hierarchy here")
    got = new_memcg_cost(mounts, count=5)
    assert got is not None and got["slab_kib_per_memcg"] > 0, got
    assert abs(got["shrinker_ids_implied"] - got["kmalloc_1k_kib_per_memcg"] * 64) < 64
    assert not [d for d in os.listdir(base) if d.startswith("zoned-bench-memcg-probe-")]


def test_start_timeline_script_reports_each_phase_and_leaves_nothing(tmp_path):
    """bench/start_timeline.py: traced `zoned run --rm` (and runc, and zoned as of a git ref,
    in the same rounds): every step's median time since the spawn, phases that add up to no
    more than the whole, the ref's phases beside them, no state, cgroup, mount or worktree
    left."""
    out = tmp_path / "timeline.json"
    repo = Path(__file__).resolve().parent.parent
    script = repo / "bench" / "start_timeline.py"
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"],
                               capture_output=True, text=True).stdout
    p = subprocess.run([sys.executable, str(script), "--runs", "2", "--runc", "--before-ref",
                        "HEAD", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads(out.read_text())
    steps = [ph["step"] for ph in result["phases"]]
    assert steps[0] == "main" and steps[-1] == "end" and "init-mounts" in steps
    at = [ph["at_ms"] for ph in result["phases"] if ph["who"] == "cli"]
    assert at == sorted(at) and 0 < at[-1] == pytest.approx(result["total_ms"], rel=0.5)
    assert all(ph["phase_ms"] >= 0 for ph in result["phases"])
    assert len(result["samples"]) == 2 and result["runc_ms"] > 0
    assert result["before"]["ref"] == "HEAD" and result["before"]["total_ms"] > 0
    assert [ph["step"] for ph in result["before"]["phases"]] == steps  # HEAD has the marks
    assert not any(result["leftovers"].values())
    assert subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                          text=True).stdout == worktrees


def test_start_rate_script_interleaves_the_engines_and_leaves_nothing(tmp_path):
    """bench/start_rate.py: N detached zones of the zoned CLI, of runc and of a second
    zoned CLI, taking turns start by start; per engine N starts, its rate and its paired
    difference against runc's; nothing left (state roots, cgroups, containers)."""
    out = tmp_path / "rate.json"
    repo = Path(__file__).resolve().parent.parent
    zoned_cli = str(repo / ".venv" / "bin" / "zoned")
    p = subprocess.run([sys.executable, str(repo / "bench" / "start_rate.py"), "--count",
                        "10", "--other-zoned", zoned_cli, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"zoned", "runc", "other"}
    for k, r in res["results"].items():
        assert r["n"] == 10 and r["remove_errors"] == [], (k, r)
        assert r["rate_per_s"] == pytest.approx(1000 / r["mean_ms"], rel=0.01)
    assert "paired_minus_runc_median_ms" in res["results"]["zoned"]
    assert set(res["targets"]) == {"rate_ge_runc", "no_slowdown_first_to_last_10pct"}
    assert not any(res["leftovers"].values()) and res["failure"] is None
    assert not [d for d in os.listdir("/run") if d.startswith("zoned-bench-rate-")]


def test_pool_script_compares_the_two_inits_and_leaves_nothing(tmp_path):
    """bench/pool.py: a Pool's zones waiting as the C init and as the Python one, in
    alternating rounds: each init's run latency, rate and waiting memory (the C init's
    a small fraction of a python's), no state root, cgroup or mount left."""
    out = tmp_path / "pool.json"
    repo = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(repo / "bench" / "pool.py"), "--rounds", "1",
                        "--runs", "5", "--out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    c, py = res["stats"]["c"], res["stats"]["python"]
    for s in (c, py):
        assert s["runs_per_second"]["n"] == 1 and s["runs_per_second"]["median"] > 0
        assert s["waiting_init_pss_kib"]["n"] == 2  # the pool's size
    assert c["waiting_init_pss_kib"]["max"] * 4 < py["waiting_init_pss_kib"]["min"]
    assert res["leftovers"] == []
    assert not [d for d in os.listdir("/run") if d.startswith("zoned-bench-pool-")]


def test_rootless_script_times_both_users_and_removes_them(tmp_path):
    """bench/rootless.py: root's `zoned run` and two ordinary users' (with and without a
    subordinate range) in the same rounds, each a number; the users it made, their
    ranges, homes and state are gone after it, and no state root is left."""
    if not os.access("/usr/bin/newuidmap", os.X_OK):
        pytest.skip("newuidmap is missing (apt-get install uidmap: make setup does)")
    out = tmp_path / "rootless.json"
    repo = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(repo / "bench" / "rootless.py"), "--runs", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["stats_ms"]) == {"root", "rootless", "rootless-single", "setpriv-floor"}
    assert all(s["n"] == 1 and s["median"] > 0 for s in res["stats_ms"].values())
    assert not any(res["leftovers"].values()), res["leftovers"]
    assert "zbr" not in Path("/etc/passwd").read_text()
    assert "zbr" not in Path("/etc/subuid").read_text()
    assert not [d for d in os.listdir("/run") if d.startswith("zoned-bench-rootless-")]


def test_a_before_tree_that_cannot_be_built_leaves_nothing(monkeypatch):
    """bench/startup.py's BeforeTree (also start_timeline's --before-ref): a ref it cannot
    check out, or a step after the checkout that fails, leaves no temp dir or worktree
    (CI once failed in the pack's writer and left both)."""
    import glob
    import tempfile

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(repo / "bench"))
    import startup

    def listing():
        pattern = str(Path(tempfile.gettempdir()) / "zoned-bench-before-*")
        worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"],
                                   capture_output=True, text=True).stdout
        return sorted(glob.glob(pattern)), worktrees

    before = listing()
    with pytest.raises(subprocess.CalledProcessError):
        startup.BeforeTree("no-such-ref-anywhere", sys.executable)
    assert listing() == before
    monkeypatch.setattr(startup.shutil, "copytree",  # fails after the worktree is added
                        lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError):
        startup.BeforeTree("HEAD", sys.executable)
    assert listing() == before
