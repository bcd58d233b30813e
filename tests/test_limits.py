"""Resource limits seen from inside and enforced: memory (OOM kill stays inside the
container), pids (a fork bomb stops), cpu quota; stats readable from the host."""
from __future__ import annotations

import json
import subprocess
import time

import zoned
from zoned.cgroups import detect


def test_memory_limit_visible_and_oom_kill_stays_inside(zoned_root, busybox):
    before = _host_oom_kills()
    with zoned.Container(["sleep", "1000"], root=zoned_root, memory="32m") as c:
        r = c.exec(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                    "2>/dev/null || cat /sys/fs/cgroup/memory.max"])
        assert int(r.stdout) == 32 << 20
        # a memory hog: a shell variable doubling until it is killed
        r = c.exec(["sh", "-c", "x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done"])
        assert r.returncode == 128 + 9  # SIGKILL from the OOM killer
        assert c.status == "running"  # only the hog died; init is fine
        assert c.stats()["memory"]["oom_kills"] >= 1
        assert c.exec(["echo", "still here"]).stdout == "still here\n"
    assert _host_oom_kills() - before <= 1  # the host's processes were not touched


def _host_oom_kills() -> int:
    for line in open("/proc/vmstat"):
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def test_fork_bomb_stops_at_pids_limit(zoned_root, busybox):
    with zoned.Container(["sleep", "1000"], root=zoned_root, pids_limit=32) as c:
        r = c.exec(["sh", "-c", "i=0; while [ $i -lt 100 ]; do "
                    "sleep 30 >/dev/null 2>&1 & i=$((i+1)); done"])
        assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr
        assert 30 <= c.stats()["pids"]["current"] <= 32  # it filled up, and no further
        assert c.stats()["pids"]["limit"] == 32
        # the classic bomb: it cannot take the host down
        c.exec(["sh", "-c", "b() { b | b & }; b >/dev/null 2>&1"])
        time.sleep(0.5)
        assert c.stats()["pids"]["current"] <= 32
    # the host still forks fine
    assert subprocess.run(["true"]).returncode == 0


def test_cpu_quota_limits_usage(zoned_root, busybox):
    with zoned.Container(["sh", "-c", "while :; do :; done"], root=zoned_root,
                         cpus="0.2") as c:
        start = c.stats()["cpu"]["usage_ns"]
        time.sleep(1.0)
        used = (c.stats()["cpu"]["usage_ns"] - start) / 1e9
        assert used < 0.35, used  # 0.2 CPU-seconds per second, plus slack


def test_stats_and_inspect_from_the_cli(cli):
    cli("run", "-d", "--name", "s", "--memory", "48m", "--pids-limit", "20", "--cpus", "0.5",
        "--", "sleep", "1000", check=True)
    info = json.loads(cli("inspect", "s").stdout)
    lim = info["limits"]
    assert lim["memory"]["limit"] == 48 << 20 and lim["pids"]["limit"] == 20
    assert lim["cpu"]["quota"] == 50000 and lim["cpu"]["period"] == 100000
    stats = json.loads(cli("stats", "--format", "json", "s").stdout)[0]
    assert 0 < stats["memory"]["usage"] < 48 << 20
    assert stats["pids"]["current"] == 1
    assert "s" in cli("stats").stdout


def test_cgroup_mode_detected():
    assert detect() in ("v1", "hybrid", "v2")
