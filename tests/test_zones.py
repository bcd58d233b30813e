"""Zone management as Xen/libvirt admins expect (zoned.zones): zone files, define/start/
shutdown/destroy/list/dominfo/console/autostart/clone/save/restore, exit codes and restart
policies through the per-zone monitor (csrc/monitor.c). Driven through the real CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ZONED, undefine_zone, zone_record


@pytest.fixture
def zones(cli, tmp_path, monkeypatch):
    """A zone dir of this test's own; every zone in it destroyed and undefined after."""
    zdir = tmp_path / "zones"
    zdir.mkdir()
    monkeypatch.setenv("ZONED_ZONE_DIR", str(zdir))

    def write(name: str, text: str, *, define: bool = True) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        if define:
            cli("define", str(path), check=True)
        return path

    write.dir = zdir
    yield write
    for f in sorted(zdir.glob("*.yaml")):
        undefine_zone(cli, f.stem)


def _list(cli) -> dict:
    return {r["name"]: r for r in json.loads(cli("list", "--format", "json",
                                                 check=True).stdout)}


def _wait(pred, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _running_pid(cli, name: str, other_than: int | None = None) -> int:
    def check():
        r = _list(cli)[name]
        return r["id"] if r["state"] == "running" and r["id"] != other_than else None
    return _wait(check, what=f"{name} running")


SLEEPER = "image: busybox\ncommand: sleep 1000\nmemory: 64\n"


# -- zone files -------------------------------------------------------------------------
@pytest.mark.parametrize("text,key,line", [
    ("name: zmgbad\nimage: busybox\nmemroy: 64\n", "memroy", 3),
    ("name: zmgbad\nimage: busybox\nvcpus: lots\n", "vcpus", 3),
    ("name: zmgbad\nimage: busybox\non_crash: reboot\n", "on_crash", 3),
    ("name: zmgbad\nimage: busybox\nrestart: sometimes\n", "restart", 3),
    ("name: zmgbad\nimage: busybox\nvif:\n  - network: n1\n    addr: 1.2.3.4\n",
     "vif[0].addr", 5),
    ("name: zmgbad\nimage: busybox\nmemory: 12x\n", "memory", 3),
    ("name: zmgbad\nimage: busybox\nvcpus: 0.00001\n", "vcpus", 3),
    ("name: zmgbad\nimage: nosuchimage\n", "image", 2),
    ("name: zmg bad\nimage: busybox\n", "name", 1),
    ("name: zmgbad\nimage: [busybox\n", None, 2),
    ("name: zmgbad\nimage: busybox\nstop_signal: 99999\n", "stop_signal", 3),
    ("name: zmgbad\nimage: busybox\nvif:\n  - network: ../../x\n", "vif", None),
    ("name: zmgbad\nimage: busybox\nvif:\n  - network: zoned0\n    ports: [abc]\n",
     "vif", None),
    ("name: zmgbad\nimage: busybox\npids: 100000000000000000000000\n", "pids", 3),
    ("name: zmgbad\nimage: busybox\nvolumes: ['/tmp/a-e-v/x:relative']\n", "volumes", 3),
])
def test_invalid_zone_file_is_one_line_naming_file_line_and_key(cli, zones, text, key,
                                                                 line):
    path = zones("zmgbad", text, define=False)
    p = cli("define", str(path))
    assert p.returncode == 125, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"zoned: {path}:{line}: " if line else f"zoned: {path}:"), \
        lines[0]
    if key:
        assert f": {key}: " in lines[0], lines[0]
    if key == "volumes":  # the path as written: -e and -v inside it are not flags
        assert "'/tmp/a-e-v/x:relative'" in lines[0], lines[0]
    assert list(zones.dir.iterdir()) == []  # nothing defined


def test_define_converts_to_the_config_run_builds(cli, zones):
    """One model: the zone file's container has the config `zoned run` makes of the same
    flags (the memory limit, cpu quota, pids, env, hostname)."""
    zones("zmgconv", "name: zmgconv\nimage: busybox\ncommand: [sleep, '1000']\n"
          "maxmem: 48\nvcpus: 0.5\npids: 33\nenv: {GREETING: hi}\nhostname: zmg-h\n"
          "on_crash: preserve\n")
    cli("start", "zmgconv", check=True)
    cli("run", "-d", "--name", "zmgrun", "--memory", "48m", "--cpus", "0.5",
        "--pids-limit", "33", "-e", "GREETING=hi", "--hostname", "zmg-h", "--",
        "sleep", "1000", check=True)
    try:
        a = json.loads(cli("inspect", "zmgconv", check=True).stdout)
        b = json.loads(cli("inspect", "zmgrun", check=True).stdout)
        assert a["limits"] == b["limits"] and a["limits"]["memory"]["limit"] == 48 << 20
        assert a["config"]["process"]["env"] == b["config"]["process"]["env"]
        out = cli("exec", "zmgconv", "sh", "-c", "echo $GREETING $(hostname)",
                  check=True).stdout
        assert out.split() == ["hi", "zmg-h"]
        uuid = _list(cli)["zmgconv"]["uuid"]
        assert uuid and uuid in (zones.dir / "zmgconv.yaml").read_text()
    finally:
        cli("rm", "-f", "zmgrun")


# -- lifecycle, list ----------------------------------------------------------------------
def test_start_list_shutdown_start_again_keeps_the_layer(cli, zones):
    zones("zmglife", "name: zmglife\n" + SLEEPER + "vcpus: 1\nstop_timeout: 1\n")
    r = _list(cli)["zmglife"]
    assert r["state"] == "shutoff" and r["id"] is None and r["status"] == "Defined"
    p = cli("start", "zmglife", check=True)
    assert "started" in p.stdout
    pid = _running_pid(cli, "zmglife")
    cli("exec", "zmglife", "sh", "-c", "echo kept > /layer.txt", check=True)
    # list's figures are the cgroup's
    cg = Path("/sys/fs/cgroup") / json.loads(cli("inspect", "zmglife", check=True)
                                             .stdout)["cgroup"].lstrip("/")
    rows = _list(cli)
    r = rows["zmglife"]
    assert r["vcpus"] == 1 and r["id"] == pid
    if (cg / "memory.current").exists():
        mem = int((cg / "memory.current").read_text()) / (1 << 20)
        assert abs(r["mem_mib"] - mem) < 2.0, (r, mem)
        usage = int(dict(line.split() for line in (cg / "cpu.stat").read_text()
                         .splitlines())["usage_usec"]) / 1e6
        assert abs(r["time_s"] - usage) < 0.5
    table = cli("list", check=True).stdout.splitlines()
    assert table[0].split() == ["Name", "ID", "Mem(MiB)", "VCPUs", "State", "Time(s)",
                                "Status"]
    row = next(line.split() for line in table if line.startswith("zmglife "))
    assert row[1] == str(pid) and row[4] == "r-----"
    info = cli("dominfo", "zmglife", check=True).stdout
    assert "State:         running" in info and f"Id:            {pid}" in info
    assert cli("start", "zmglife").returncode == 125  # already running

    cli("shutdown", "zmglife", check=True)
    r = _list(cli)["zmglife"]
    assert r["state"] == "shutoff" and r["id"] is None
    assert r["status"].startswith("Exited (137) ")  # sh as pid 1 ignores SIGTERM: killed
    assert not os.path.exists(f"/proc/{pid}")
    # a stopped zone starts again, with its writable layer
    cli("start", "zmglife", check=True)
    _running_pid(cli, "zmglife", other_than=pid)
    assert cli("exec", "zmglife", "cat", "/layer.txt", check=True).stdout == "kept\n"
    cli("destroy", "zmglife", check=True)
    assert _list(cli)["zmglife"]["state"] == "shutoff"
    assert cli("undefine", "zmglife").returncode == 0
    assert "zmglife" not in _list(cli)


def test_monitoring_costs_well_under_a_mib_per_idle_zone(cli, zones):
    """The goal: < 1 MiB host overhead per idle zone including the monitor. Here: the PSS
    of the monitor, its keeper and the zone's log writer (bench/monitor.py adds the kernel
    side: ~0.2 MiB)."""
    zones("zmgmem", "name: zmgmem\n" + SLEEPER)
    cli("start", "zmgmem", check=True)
    _running_pid(cli, "zmgmem")
    rec = zone_record(cli.root, "zmgmem")
    st = json.loads((Path(cli.root) / "zmgmem" / "state.json").read_text())
    pss = dirty = 0
    for pid in (rec["monitor"]["pid"], rec["monitor"]["keeper"], st["zoned"]["logger"]["pid"]):
        rollup = dict(line.split()[:2] for line in
                      Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        pss += int(rollup["Pss:"])
        dirty += int(rollup["Private_Dirty:"])
    # KiB. What each zone adds: its processes' own pages (the binaries' text is shared by
    # every zone's monitor; only this lone zone pays all of it, hence the PSS bound)
    assert dirty < 256, dirty
    assert pss < 1024, pss
    names = {Path(f"/proc/{p}/exe").resolve().name for p in (rec["monitor"]["pid"],
                                                              rec["monitor"]["keeper"])}
    assert names == {"zoned-monitor"}  # no Python stays per zone


def test_undefine_refuses_a_running_zone(cli, zones):
    zones("zmgundef", "name: zmgundef\n" + SLEEPER)
    cli("start", "zmgundef", check=True)
    p = cli("undefine", "zmgundef")
    assert p.returncode == 125 and "running" in p.stderr
    assert _list(cli)["zmgundef"]["state"] == "running"


# -- exit codes and policies -------------------------------------------------------------
def test_exit_code_of_a_detached_zone_is_kept(cli, zones):
    zones("zmgexit", "name: zmgexit\nimage: busybox\ncommand: sh -c 'sleep 0.3; exit 3'\n"
          "on_crash: preserve\n")
    cli("start", "zmgexit", check=True)
    r = _wait(lambda: (lambda x: x if x["status"].startswith("Exited") else None)(
        _list(cli)["zmgexit"]), what="exit")
    assert r["status"].startswith("Exited (3) ") and r["status"].endswith(" ago")
    assert r["state"] == "crashed"
    _wait(lambda: zone_record(cli.root, "zmgexit").get("last_exit"), what="the hook")
    line = next(x for x in cli("ps", "-a", check=True).stdout.splitlines()
                if x.startswith("zmgexit "))
    assert "exited (3) " in line and " ago " in line  # the preserved container, as podman
    assert "Last exit:     3 (crash)" in cli("dominfo", "zmgexit", check=True).stdout


def test_sigkill_restarts_per_on_crash_restart_not_destroy(cli, zones):
    zones("zmgcrashr", "name: zmgcrashr\n" + SLEEPER + "on_crash: restart\n")
    zones("zmgcrashd", "name: zmgcrashd\n" + SLEEPER + "on_crash: destroy\n")
    cli("start", "zmgcrashr", check=True)
    cli("start", "zmgcrashd", check=True)
    pr, pd = _running_pid(cli, "zmgcrashr"), _running_pid(cli, "zmgcrashd")
    os.kill(pr, signal.SIGKILL)
    os.kill(pd, signal.SIGKILL)
    new = _running_pid(cli, "zmgcrashr", other_than=pr)
    assert new != pr
    rec = zone_record(cli.root, "zmgcrashr")
    assert rec["restarts"] == 1 and rec["last_exit"]["code"] == 137
    d = _wait(lambda: (lambda x: x if x["state"] != "running" else None)(
        _list(cli)["zmgcrashd"]), what="zmgcrashd gone")
    assert d["status"].startswith("Exited (137)")
    assert cli("state", "zmgcrashd").returncode != 0  # destroyed: no container left
    time.sleep(1)
    assert _list(cli)["zmgcrashd"]["state"] != "running"


def test_crash_loop_backs_off(cli, zones):
    """Restarts of a zone that keeps crashing wait 0.1, 0.2, 0.4, 0.8 s...: counted by
    restarts, not by a fixed sleep (a loaded host boots slower, which only adds to gaps)."""
    zones("zmgloop", "name: zmgloop\nimage: busybox\ncommand: sh -c 'exit 7'\n"
          "on_crash: restart\n")
    cli("start", "zmgloop", check=True)
    deadline = time.monotonic() + 60
    while len(zone_record(cli.root, "zmgloop").get("restart_times") or []) < 5:
        assert time.monotonic() < deadline, zone_record(cli.root, "zmgloop")
        time.sleep(0.1)
    cli("destroy", "zmgloop")
    rec = zone_record(cli.root, "zmgloop")
    times = rec["restart_times"]
    assert rec["last_exit"]["code"] == 7
    assert rec["streak"] == len(times) >= 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]  # boot + 0.1, 0.2, ...
    # a spinning loop would restart ~10 times a second: the waits alone add up to 1.5 s
    assert times[4] - times[0] >= 0.1 + 0.2 + 0.4 + 0.8 - 0.05, gaps
    assert gaps[3] - gaps[0] >= 0.3, gaps  # the wait grows (boot time varies less)


def test_restart_on_failure_limit(cli, zones):
    zones("zmgonf", "name: zmgonf\nimage: busybox\ncommand: sh -c 'exit 5'\n"
          "restart: on-failure:2\n")
    cli("start", "zmgonf", check=True)
    r = _wait(lambda: (lambda x: x if x["state"] == "crashed" and x["monitor"] is None
                       else None)(_list(cli)["zmgonf"]), what="give up")
    assert r["restarts"] == 2 and r["status"].startswith("Exited (5)")


def test_monitor_sigkill_loses_no_zone_and_no_exit_code(cli, zones):
    zones("zmgmon", "name: zmgmon\n" + SLEEPER + "on_crash: restart\n")
    cli("start", "zmgmon", check=True)
    pid = _running_pid(cli, "zmgmon")
    monitor = zone_record(cli.root, "zmgmon")["monitor"]["pid"]
    os.kill(monitor, signal.SIGKILL)
    time.sleep(0.3)
    assert _list(cli)["zmgmon"]["id"] == pid  # the zone runs on
    os.kill(pid, signal.SIGKILL)
    new = _running_pid(cli, "zmgmon", other_than=pid)  # restarted per its policy
    rec = zone_record(cli.root, "zmgmon")
    assert rec["last_exit"]["code"] == 137 and rec["restarts"] == 1
    # the keeper that took over split again at the restart: a second kill loses nothing
    assert rec["monitor"]["pid"] != monitor and rec["monitor"]["keeper"] > 1
    os.kill(rec["monitor"]["pid"], signal.SIGKILL)
    time.sleep(0.3)
    os.kill(new, signal.SIGTERM)  # sh as pid 1 ignores it from outside: no exit
    time.sleep(0.3)
    assert _list(cli)["zmgmon"]["id"] == new
    os.kill(new, signal.SIGKILL)
    new = _running_pid(cli, "zmgmon", other_than=new)
    rec = zone_record(cli.root, "zmgmon")
    assert rec["last_exit"]["code"] == 137 and rec["restarts"] == 2
    cli("shutdown", "-t", "1", "zmgmon", check=True)
    assert not os.path.exists(f"/proc/{new}")
    assert _list(cli)["zmgmon"]["state"] == "shutoff"


def test_reboot_boots_it_again(cli, zones):
    zones("zmgreboot", "name: zmgreboot\n" + SLEEPER + "stop_timeout: 1\n"
          "on_crash: destroy\n")
    cli("start", "zmgreboot", check=True)
    pid = _running_pid(cli, "zmgreboot")
    p = cli("reboot", "zmgreboot", check=True)
    new = _running_pid(cli, "zmgreboot", other_than=pid)
    assert str(new) in p.stdout


# -- console ------------------------------------------------------------------------------
def test_console_detach_leaves_the_zone_running(cli, zones):
    zones("zmgtty", "name: zmgtty\nimage: busybox\ncommand: sh\ntty: true\n")
    cli("start", "zmgtty", check=True)
    pid = _running_pid(cli, "zmgtty")
    con = subprocess.Popen([ZONED, "--root", cli.root, "console", "zmgtty"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    os.set_blocking(con.stdout.fileno(), False)
    con.stdin.write(b"echo zmg-$((6*7))\n")
    con.stdin.flush()
    out = b""
    deadline = time.monotonic() + 10
    while b"zmg-42" not in out and time.monotonic() < deadline:
        time.sleep(0.05)
        out += con.stdout.read() or b""
    assert b"zmg-42" in out, out
    con.stdin.write(b"\x1d")  # Ctrl-]
    con.stdin.flush()
    assert con.wait(5) == 0
    assert _list(cli)["zmgtty"]["id"] == pid  # still running
    log = (Path(cli.root) / ".zones" / "zmgtty" / "console.log").read_bytes()
    assert b"zmg-42" in log


def test_console_of_a_zone_without_tty_is_refused(cli, zones):
    zones("zmgnotty", "name: zmgnotty\n" + SLEEPER)
    cli("start", "zmgnotty", check=True)
    p = cli("console", "zmgnotty")
    assert p.returncode == 125 and "tty" in p.stderr


# -- autostart, clone, save/restore ------------------------------------------------------
def test_fifty_zones_autostart_survive_a_simulated_reboot_and_stop(cli, zones):
    names = [f"zmga{i:02d}" for i in range(50)]
    for n in names:
        (zones.dir / f"{n}.yaml").write_text(f"name: {n}\n" + SLEEPER + "autostart: true\n")
    (zones.dir / "zmgb-off.yaml").write_text("name: zmgb-off\n" + SLEEPER)
    p = cli("autostart", timeout=600, check=True)
    assert p.stdout.splitlines() == [f"zone {n}: started" for n in names]
    p = cli("autostart", timeout=120, check=True)  # twice: nothing new
    assert p.stdout.splitlines() == [f"zone {n}: running" for n in names]
    rows = _list(cli)
    assert all(rows[n]["state"] == "running" for n in names)
    assert rows["zmgb-off"]["state"] == "shutoff"
    # a host reboot: every zone process dies, the runtime state (a tmpfs) is gone
    procs = []
    for n in names:
        rec = zone_record(cli.root, n)
        procs += [rec["monitor"]["keeper"], rec["monitor"]["pid"], rows[n]["id"]]
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    from zoned.runtime import Runtime

    rt = Runtime(cli.root)
    for n in names:
        st = rt.store.read_state(n)
        from zoned.cgroups import open_cgroup

        cg = open_cgroup(st["zoned"]["cgroup"])
        cg.kill()
        cg.destroy()
    subprocess.run(["umount", "-R", *[str(Path(cli.root) / n / "rootfs") for n in names]],
                   capture_output=True)
    for n in names:
        subprocess.run(["rm", "-rf", str(Path(cli.root) / n)], check=True)
    subprocess.run(["rm", "-rf", str(Path(cli.root) / ".zones")], check=True)
    # the boot path brings them back, in name order
    p = cli("autostart", timeout=600, check=True)
    assert p.stdout.splitlines() == [f"zone {n}: started" for n in names]
    assert all(_list(cli)[n]["state"] == "running" for n in names)
    p = cli("shutdown", "--all", "-t", "1", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = _list(cli)
    assert all(rows[n]["state"] == "shutoff" for n in names)
    assert not [e for e in os.listdir(cli.root) if not e.startswith(".")]


def test_autostart_mark_edits_the_zone_file(cli, zones):
    zones("zmgmark", "# my zone\nname: zmgmark\n" + SLEEPER)
    cli("autostart", "zmgmark", check=True)
    text = (zones.dir / "zmgmark.yaml").read_text()
    assert "autostart: true" in text and text.startswith("# my zone")
    assert _list(cli)["zmgmark"]["autostart"] is True
    cli("autostart", "--disable", "zmgmark", check=True)
    assert "autostart: false" in (zones.dir / "zmgmark.yaml").read_text()


def test_clone_copies_the_layer(cli, zones):
    zones("zmgsrc", "name: zmgsrc\n" + SLEEPER + "stop_timeout: 1\n")
    cli("start", "zmgsrc", check=True)
    _running_pid(cli, "zmgsrc")
    cli("exec", "zmgsrc", "sh", "-c", "echo template > /etc/motd", check=True)
    assert cli("clone", "zmgsrc", "zmgdst").returncode == 125  # running
    cli("shutdown", "zmgsrc", check=True)
    cli("clone", "zmgsrc", "zmgdst", check=True)
    rows = _list(cli)
    assert rows["zmgdst"]["uuid"] != rows["zmgsrc"]["uuid"]
    cli("start", "zmgdst", check=True)
    _running_pid(cli, "zmgdst")
    assert cli("exec", "zmgdst", "cat", "/etc/motd", check=True).stdout == "template\n"
    cli("exec", "zmgdst", "sh", "-c", "echo changed > /etc/motd", check=True)
    cli("start", "zmgsrc", check=True)
    _running_pid(cli, "zmgsrc")
    assert cli("exec", "zmgsrc", "cat", "/etc/motd", check=True).stdout == "template\n"


def test_save_and_restore(cli, zones, tmp_path):
    from zoned.checkpoint.criu import find_criu

    try:
        find_criu()
    except Exception:  # noqa: BLE001
        pytest.skip("no CRIU >= 4")
    zones("zmgsave", "name: zmgsave\nimage: busybox\n"
          "command: sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; "
          "mv /tmp/n.new /tmp/n; sleep 0.1; done'\non_crash: restart\n")
    cli("start", "zmgsave", check=True)
    _running_pid(cli, "zmgsave")
    time.sleep(0.5)
    image = tmp_path / "zmgsave.img"
    cli("save", "zmgsave", str(image), check=True, timeout=120)
    assert image.exists()
    assert _list(cli)["zmgsave"]["state"] == "shutoff"  # saved: stopped, not restarted
    time.sleep(0.5)
    assert _list(cli)["zmgsave"]["state"] == "shutoff"
    p = cli("restore", str(image), check=True, timeout=120)
    assert "restored" in p.stdout
    pid = _running_pid(cli, "zmgsave")
    n1 = int(cli("exec", "zmgsave", "cat", "/tmp/n", check=True).stdout)
    assert n1 >= 3  # the counter went on from where it was
    os.kill(pid, signal.SIGKILL)  # and the restored zone is monitored
    _running_pid(cli, "zmgsave", other_than=pid)


def _failing_restore(cli, image, tmp_path, monkeypatch) -> None:
    """`zoned restore IMAGE` with a criu that passes the version check and fails the
    restore: it must fail; ZONED_CRIU is unset again after."""
    fake = tmp_path / "criu"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "Version: 4.2.1"; exit 0; }'
                    '\nexit 1\n')
    fake.chmod(0o755)
    with monkeypatch.context() as m:
        m.setenv("ZONED_CRIU", str(fake))
        assert cli("restore", str(image), timeout=120).returncode != 0


def test_a_restored_zone_runs_on_its_layer(cli, zones, tmp_path, monkeypatch):
    """`zoned restore FILE` runs the zone on its own layer, as a boot does: what the
    restored zone writes is there at its next boot (it ran on a layer of its own, removed
    with it, and the next boot found the layer of before the save), and its files are the
    save's (its processes had them open). A restore that fails leaves the layer as it
    was; one killed half-way, the next boot puts it back."""
    from zoned.checkpoint.criu import find_criu
    from zoned.storage import data_root
    from zoned.zones.record import data_dir

    try:
        find_criu()
    except Exception:  # noqa: BLE001
        pytest.skip("no CRIU >= 4")
    zones("zmgrst", "name: zmgrst\n" + SLEEPER + "stop_timeout: 1\non_crash: preserve\n")
    cli("start", "zmgrst", check=True)
    _running_pid(cli, "zmgrst")
    cli("exec", "zmgrst", "sh", "-c", "echo saved > /saved", check=True)
    image = tmp_path / "zmgrst.img"
    cli("save", "zmgrst", str(image), check=True, timeout=120)
    upper = os.path.join(data_dir(data_root(cli.root), "zmgrst"), "upper")
    assert open(os.path.join(upper, "saved")).read() == "saved\n"
    with open(os.path.join(upper, "changed-since"), "w") as f:  # the layer, not the save's
        f.write("x")

    _failing_restore(cli, image, tmp_path, monkeypatch)
    _wait(lambda: _list(cli)["zmgrst"]["state"] == "shutoff", what="the failed restore")
    assert {"changed-since", "saved"} <= set(os.listdir(upper))  # as it was
    assert not os.path.lexists(upper + ".before-restore")

    cli("restore", str(image), check=True, timeout=120)
    _running_pid(cli, "zmgrst")
    cli("exec", "zmgrst", "sh", "-c", "echo after > /after", check=True)
    assert not os.path.lexists(upper + ".before-restore")
    assert not os.path.exists(os.path.join(upper, "changed-since"))  # the saved files won
    cli("shutdown", "zmgrst", check=True)
    cli("start", "zmgrst", check=True)
    _running_pid(cli, "zmgrst")
    r = cli("exec", "zmgrst", "cat", "/saved", "/after", check=True)
    assert r.stdout == "saved\nafter\n"

    # A restore killed half-way (its upper aside, the save's half moved in): the next
    # boot puts the layer back.
    cli("shutdown", "zmgrst", check=True)
    os.rename(upper, upper + ".before-restore")
    os.makedirs(upper)
    with open(os.path.join(upper, "half"), "w") as f:
        f.write("x")
    cli("start", "zmgrst", check=True)
    _running_pid(cli, "zmgrst")
    r = cli("exec", "zmgrst", "sh", "-c", "cat /saved /after; ls /half", check=False)
    assert r.stdout == "saved\nafter\n" and "/half" in r.stderr, r
    assert not os.path.lexists(upper + ".before-restore")


def _repack(image, out, tmp_path, edit) -> None:
    """A copy of a saved archive whose metadata edit(meta) changed."""
    from zoned.checkpoint.archive import META

    d = tmp_path / f"unpacked-{out.name}"
    d.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(image), "-C", str(d)], check=True)
    meta = json.loads((d / META).read_text())
    edit(meta)
    (d / META).write_text(json.dumps(meta))
    subprocess.run(["tar", "--zstd", "-cf", str(out), "-C", str(d), "."], check=True)
    os.chmod(out, 0o600)


def test_restore_defines_a_zone_from_its_file(cli, zones, tmp_path, monkeypatch):
    """As `xm restore`: on a host where the zone is not defined (undefined here, its file
    and layer gone), the saved file defines it as it was and the zone goes on. A restore
    that fails undefines it again; a file whose zone file names host paths, another zone,
    or none (an older zoned's) is refused in one line, and nothing is defined."""
    from zoned.checkpoint.criu import find_criu
    from zoned.storage import data_root
    from zoned.zones.record import data_dir

    try:
        find_criu()
    except Exception:  # noqa: BLE001
        pytest.skip("no CRIU >= 4")
    zones("zmgdef", "# saved with me\nname: zmgdef\n" + SLEEPER + "stop_timeout: 1\n"
          "on_crash: preserve\n")
    text = (zones.dir / "zmgdef.yaml").read_text()
    cli("start", "zmgdef", check=True)
    _running_pid(cli, "zmgdef")
    cli("exec", "zmgdef", "sh", "-c", "echo kept > /kept", check=True)
    image = tmp_path / "zmgdef.img"
    cli("save", "zmgdef", str(image), check=True, timeout=120)
    cli("undefine", "zmgdef", check=True)
    layer = data_dir(data_root(cli.root), "zmgdef")
    assert not (zones.dir / "zmgdef.yaml").exists() and not os.path.exists(layer)

    _failing_restore(cli, image, tmp_path, monkeypatch)
    assert not (zones.dir / "zmgdef.yaml").exists() and not os.path.exists(layer)

    other = tmp_path / "other.img"
    _repack(image, other, tmp_path, lambda m: m.update(zone=m["zone"].replace(
        "name: zmgdef", "name: zmgxxx")))
    p = cli("restore", str(other))
    assert p.returncode == 125 and "defines 'zmgxxx', the save is of 'zmgdef'" in p.stderr
    hostvol = tmp_path / "hostvol.img"
    _repack(image, hostvol, tmp_path, lambda m: m.update(zone=m["zone"] + "volumes: "
                                                          "['/etc:/host-etc']\n"))
    p = cli("restore", str(hostvol))
    assert p.returncode == 125 and "names host paths (/etc): define it first" in p.stderr
    old = tmp_path / "old.img"
    _repack(image, old, tmp_path, lambda m: m.pop("zone"))
    p = cli("restore", str(old))
    assert p.returncode != 0 and "holds no zone file" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert list(zones.dir.iterdir()) == []

    p = cli("restore", str(image), check=True, timeout=120)
    assert "zone zmgdef defined from the file and restored" in p.stdout
    assert (zones.dir / "zmgdef.yaml").read_text() == text  # as saved: uuid, comment
    _running_pid(cli, "zmgdef")
    r = cli("exec", "zmgdef", "sh", "-c", "cat /kept; cat /proc/1/cmdline", check=True)
    assert r.stdout == "kept\nsleep\x001000\x00"


# -- the same file as a VM ---------------------------------------------------------------
def test_zone_file_with_backend_vm_boots_a_vm(cli, zones):
    try:
        from zoned.vm.assets import kernel

        kernel()
    except Exception as e:  # noqa: BLE001 - no guest kernel: `make setup` not run
        pytest.skip(f"no VM guest kernel: {e}")
    zones("zmgvm", "name: zmgvm\nimage: busybox\nbackend: vm\nmemory: 192\n"
          "command: sh -c 'echo vm-up $(cat /proc/cpuinfo | grep -c ^processor); "
          "sleep 1; exit 4'\non_crash: preserve\n")
    cli("start", "zmgvm", check=True, timeout=120)
    ps = cli("ps", "-a", check=True).stdout
    assert any(line.startswith("zmgvm ") and "vm/" in line for line in ps.splitlines()), ps
    r = _wait(lambda: (lambda x: x if x["status"].startswith("Exited") else None)(
        _list(cli)["zmgvm"]), timeout=120, what="the VM's exit")
    assert r["status"].startswith("Exited (4) "), r  # the guest's code, not QEMU's
    assert "vm-up 1" in cli("logs", "zmgvm", check=True).stdout
    # Booted again: its log goes on, as a zone's does (it started afresh at each boot).
    cli("start", "zmgvm", check=True, timeout=120)
    _wait(lambda: cli("logs", "zmgvm", check=True).stdout.count("vm-up 1") == 2,
          timeout=120, what="the second boot's line")


# -- zoned run -d --restart (podman's flag) ---------------------------------------------
def _ps(cli) -> dict:
    return {c["id"]: c for c in json.loads(cli("ps", "-a", "--format", "json", check=True).stdout)}


def test_run_restart_on_failure_gives_up_after_n_and_keeps_the_exit(cli):
    cli("run", "-d", "--restart", "on-failure:2", "--name", "zmgrof", "--",
        "sh", "-c", "sleep 0.2; exit 4", check=True)
    rec = _wait(lambda: (lambda r: r if r.get("action") == "preserve" else None)(
        zone_record(cli.root, "zmgrof")), what="the policy to give up")
    assert rec["restarts"] == 2 and rec["last_exit"]["code"] == 4
    c = _ps(cli)["zmgrof"]
    assert c["status"] == "stopped" and c["exit_code"] == 4
    cli("rm", "zmgrof", check=True)
    assert not (Path(cli.root) / ".zones").exists()  # the record goes with it


def test_run_restart_always_restarts_a_kill_but_not_a_stop(cli):
    cli("run", "-d", "--restart", "always", "--name", "zmgralw", "--", "sleep", "1000",
        check=True)
    pid = _wait(lambda: _ps(cli)["zmgralw"]["pid"], what="running")
    os.kill(pid, signal.SIGKILL)
    new = _wait(lambda: (lambda p: p if p and p != pid else None)(
        _ps(cli).get("zmgralw", {}).get("pid")), what="the restart")
    cli("stop", "-t", "1", "zmgralw", check=True)
    time.sleep(1)
    c = _ps(cli)["zmgralw"]
    assert c["status"] == "stopped" and c["exit_code"] == 137  # stopped, not restarted
    assert not os.path.exists(f"/proc/{new}")
    cli("run", "-d", "--restart", "always", "--name", "zmgralw2", "--", "sleep", "1000",
        check=True)
    cli("rm", "-f", "zmgralw", "zmgralw2", check=True)
    time.sleep(0.5)
    assert "zmgralw2" not in _ps(cli) and not (Path(cli.root) / ".zones").exists()


@pytest.mark.parametrize("flags,word", [
    (["--restart", "sometimes", "-d"], "sometimes"), (["--restart", "always"], "needs -d"),
    (["--restart", "always", "-d", "--rm"], "--rm"),
])
def test_run_restart_refuses_bad_use(cli, flags, word):
    p = cli("run", *flags, "--name", "zmgrbad", "--", "true")
    assert p.returncode == 125 and word in p.stderr and len(p.stderr.splitlines()) == 1
    assert "zmgrbad" not in _ps(cli)


# -- live changes (xm mem-set, virsh setvcpus) -------------------------------------------
def test_update_cpus_live_and_config(cli, zones):
    zones("zmgupd", "# keep me\nname: zmgupd\n" + SLEEPER + "vcpus: 1\n")
    cli("start", "zmgupd", check=True)
    _running_pid(cli, "zmgupd")
    cli("update", "--cpus", "0.5", "zmgupd", check=True)  # live only (the default)
    limits = json.loads(cli("inspect", "zmgupd", check=True).stdout)["limits"]
    assert limits["cpu"]["quota"] * 2 == limits["cpu"]["period"]
    assert "vcpus: 1\n" in (zones.dir / "zmgupd.yaml").read_text()
    cli("update", "--config", "--live", "--memory", "48m", "--cpus", "2", "zmgupd",
        check=True)
    text = (zones.dir / "zmgupd.yaml").read_text()
    assert text.startswith("# keep me\n") and "memory: 48m\n" in text and "vcpus: 2\n" in text
    info = json.loads(cli("inspect", "zmgupd", check=True).stdout)
    assert info["limits"]["memory"]["limit"] == 48 << 20
    assert info["limits"]["cpu"]["quota"] == 2 * info["limits"]["cpu"]["period"]
    p = cli("update", "--config", "--cpu-shares", "5", "zmgupd")
    assert p.returncode == 125 and "--cpu-shares" in p.stderr
    p = cli("update", "--config", "--cpus", "lots", "zmgupd")
    assert p.returncode == 125 and "vcpus: 2\n" in (zones.dir / "zmgupd.yaml").read_text()
    cli("update", "--config", "--pids-limit", "77", "zmgupd", check=True)  # file only
    assert "pids: 77\n" in (zones.dir / "zmgupd.yaml").read_text()
    assert json.loads(cli("inspect", "zmgupd", check=True).stdout)["limits"]["pids"][
        "limit"] != 77
    cli("shutdown", "-t", "1", "zmgupd", check=True)
    cli("start", "zmgupd", check=True)  # the next boot has the file's limits
    _running_pid(cli, "zmgupd")
    limits = json.loads(cli("inspect", "zmgupd", check=True).stdout)["limits"]
    assert limits["pids"]["limit"] == 77 and limits["memory"]["limit"] == 48 << 20


def test_reboot_from_inside_follows_on_reboot_not_on_crash(cli, zones):
    """reboot(2) by the zone's init: the kernel kills it with SIGHUP (pid_namespaces(7)),
    which is on_reboot's event; a crash would have been preserved."""
    zones("zmgrbin", "name: zmgrbin\nimage: busybox\ncapabilities: [SYS_BOOT]\n"
          "command: sh -c 'sleep 0.5; reboot -f; echo reboot failed; sleep 1000'\n"
          "on_reboot: restart\non_crash: preserve\n")
    cli("start", "zmgrbin", check=True)
    pid = _running_pid(cli, "zmgrbin")
    rec = _wait(lambda: (lambda r: r if r.get("restarts") else None)(
        zone_record(cli.root, "zmgrbin")), what="the reboot")
    assert rec["last_exit"]["event"] == "reboot" and rec["last_exit"]["code"] == 129
    assert _running_pid(cli, "zmgrbin", other_than=pid) != pid
    assert "reboot failed" not in cli("logs", "zmgrbin", check=True).stdout
    p = cli("define", str(zones("zmgrbcap", "name: zmgrbcap\nimage: busybox\n"
                                "capabilities: [NOT_A_CAP]\n", define=False)))
    assert p.returncode == 125 and "capabilities[0]" in p.stderr
