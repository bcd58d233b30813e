"""Checkpoint/restore with CRIU (>= 4, scripts/install-criu.sh): a container's processes,
memory, rootfs changes and log come back where they were, and the restored container is an
ordinary zoned container again (ps, exec, logs, kill, rm)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import criu_or_skip, host_snapshot

CRIU = criu_or_skip()

# Every test twice: with the state root on disk, and on a tmpfs of its own, as /run is on
# systemd hosts (the zone's /etc files are bound from it; CRIU must take them as external).
pytestmark = pytest.mark.parametrize("zoned_state_fs", ["disk", "tmpfs"])

# Counts in memory; each value goes to the volume (/data), to the container's own rootfs
# (/n, the overlay's upper layer: replaced by a rename, so no reader, and no dump, finds
# it truncated and not yet written) and to stdout (ctr.log).
LOOP = ("i=0; while :; do i=$((i+1)); echo $i >> /data/seq; echo $i > /n.new; mv /n.new /n; "
        "echo tick $i; "
        "sleep 0.05; done")


def _wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def _seq(vol):
    text = (vol / "seq").read_text() if (vol / "seq").exists() else ""
    return [int(x) for x in text.split()]


def _ps(cli):
    return {c["id"]: c["status"] for c in json.loads(cli("ps", "-a", "--format", "json").stdout)}


def test_checkpoint_stops_and_restore_continues(cli, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    images = tmp_path / "ck"
    before = host_snapshot(cli.root)
    cli("run", "-d", "--name", "counter", "-v", f"{vol}:/data", "--", "sh", "-c", LOOP,
        check=True)
    _wait_for(lambda: len(_seq(vol)) >= 10)

    cli("checkpoint", "counter", "--dir", str(images), check=True)
    assert "counter" not in _ps(cli)  # stopped by the dump and removed, as runc does
    at_dump = _seq(vol)
    time.sleep(0.3)
    assert _seq(vol) == at_dump  # nothing runs any more

    assert cli("restore", "--dir", str(images), check=True).stdout.strip() == "counter"
    assert _ps(cli) == {"counter": "running"}
    # CRIU placed it with zoned's cgroup yard (binds of this host's hierarchies) and
    # mounted none itself; the zone is in its own cgroup in every hierarchy.
    from zoned.checkpoint.cgroup_yard import YARD, plan

    if plan():
        rlog = (Path(cli.root) / "counter" / "restore.log").read_text()
        assert f"Opening {YARD} as cg yard" in rlog and "Making controller dir" not in rlog
    pid = json.loads(cli("state", "counter", check=True).stdout)["pid"]
    paths = [ln.split(":", 2)[2] for ln in Path(f"/proc/{pid}/cgroup").read_text().split()]
    assert paths and all(p.endswith("/counter") for p in paths), paths
    _wait_for(lambda: len(_seq(vol)) >= len(at_dump) + 10)
    seq = _seq(vol)
    # The shell's own counter went on from where it was: no restart from 1, no gap.
    assert seq == list(range(1, len(seq) + 1)), seq
    # The rootfs (overlay upper) came back too, and exec joins the restored namespaces.
    n = int(cli("exec", "counter", "--", "cat", "/n", check=True).stdout)
    assert n > at_dump[-1]
    out = cli("exec", "counter", "--", "sh", "-c", "echo $$; hostname", check=True).stdout
    pid, host = out.split()
    assert int(pid) > 1 and host == "counter"
    # ... and so does the log: the old lines are kept and the new ones follow them.
    ticks = [int(x.split()[1]) for x in cli("logs", "counter").stdout.splitlines()]
    assert ticks[:len(at_dump)] == at_dump and ticks == list(range(1, len(ticks) + 1))

    assert cli("kill", "counter", "KILL").returncode == 0
    _wait_for(lambda: _ps(cli).get("counter") == "stopped")
    assert cli("rm", "counter").returncode == 0
    assert host_snapshot(cli.root) == before  # no cgroup, mount or state dir left


def test_leave_running_and_restore_under_a_new_name(cli, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    images = tmp_path / "ck"
    cli("run", "-d", "--name", "orig", "-v", f"{vol}:/data", "--", "sh", "-c",
        "echo kept > /marker; " + LOOP, check=True)
    _wait_for(lambda: len(_seq(vol)) >= 5)
    cli("checkpoint", "--leave-running", "orig", "--dir", str(images), check=True)
    at_dump = int((images / "upper" / "n").read_text())
    assert _ps(cli) == {"orig": "running"}
    time.sleep(0.3)
    assert int(cli("exec", "orig", "--", "cat", "/n", check=True).stdout) > at_dump

    cli("restore", "--dir", str(images), "--name", "copy", check=True)
    assert _ps(cli) == {"orig": "running", "copy": "running"}
    assert cli("exec", "copy", "--", "cat", "/marker", check=True).stdout == "kept\n"

    def count() -> int:
        return int(cli("exec", "copy", "--", "cat", "/n", check=True).stdout)

    n = _wait_for(lambda: (v := count()) > at_dump and v)
    assert n > at_dump
    # The two are separate containers: their own cgroup and pid namespace.
    orig = json.loads(cli("inspect", "orig").stdout)["state"]
    copy = json.loads(cli("inspect", "copy").stdout)["state"]
    assert orig["zoned"]["cgroup"] != copy["zoned"]["cgroup"]
    assert orig["pid"] != copy["pid"]
    assert cli("exec", "copy", "--", "cat", "/proc/1/cmdline").stdout.startswith("sh")
    assert cli("rm", "-f", "orig", "copy").returncode == 0
    assert _ps(cli) == {}


def _patched_criu() -> bool:
    """Whether checkpoints here run zoned's build of CRIU with its current patches
    (scripts/install-criu.sh), rather than a $ZONED_CRIU or a stock one."""
    from zoned.checkpoint.criu import build_facts

    return build_facts()["patches"] == "zoned's, current"


def test_info_says_which_criu_and_whether_it_has_zoneds_patches(cli, tmp_path):
    """`zoned info` names the criu checkpoints use and its patches; a copy of the very
    same binary elsewhere ($ZONED_CRIU) is a build zoned cannot vouch for."""
    import os
    import shutil
    import subprocess

    from conftest import ZONED
    from zoned.checkpoint.criu import find_criu, version_string

    line = next(ln for ln in cli("info", check=True).stdout.splitlines()
                if ln.startswith("criu:"))
    assert find_criu() in line and "patches: " in line
    if _patched_criu():
        assert line.endswith("patches: zoned's, current"), line
    copy = tmp_path / "criu"
    shutil.copy(find_criu(), copy)
    p = subprocess.run([ZONED, "--root", cli.root, "info", "--format", "json"],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "ZONED_CRIU": str(copy)})
    assert json.loads(p.stdout)["criu"] == \
        f"{copy} {version_string()}, patches: none (a stock build)"


def _ct_count(pid: int) -> int:
    """The conntrack entries of the network namespace of `pid`."""
    import subprocess

    return int(subprocess.run(["nsenter", "-t", str(pid), "-n", "cat",
                               "/proc/sys/net/netfilter/nf_conntrack_count"],
                              capture_output=True, text=True, check=True).stdout)


def test_conntrack_entries_come_back_and_an_empty_table_costs_no_walk(cli, tmp_path):
    """A zone's namespace with no conntrack entry: CRIU (zoned's build) dumps none
    without walking the host-wide table. One with entries: they come back, dumped once
    (the expectations' image holds expectations, not the connections again)."""
    import subprocess

    cli("run", "-d", "--name", "ct", "--network", "none", "--", "sleep", "100000",
        check=True)
    pid = json.loads(cli("state", "ct", check=True).stdout)["pid"]
    assert _ct_count(pid) == 0
    empty = tmp_path / "empty"
    cli("checkpoint", "ct", "--leave-running", "--dir", str(empty), check=True)
    if _patched_criu():
        assert "No conntrack entries in this netns" in (empty / "dump.log").read_text()
    assert not list(empty.glob("netns-ct-*.img")) and not list(empty.glob("netns-exp-*"))
    # Some tracking in the zone's namespace (a rule that needs conntrack, a ping over
    # its lo), then a checkpoint that stops it and a restore into a new namespace.
    nsenter = ["nsenter", "-t", str(pid), "-n"]
    subprocess.run([*nsenter, "nft", "add table inet zt; add chain inet zt out { type "
                    "filter hook output priority 0; ct state new accept; }"], check=True)
    subprocess.run([*nsenter, "ping", "-c", "1", "-W", "1", "127.0.0.1"],
                   capture_output=True, check=True)
    tracked = _ct_count(pid)
    assert tracked >= 1
    full = tmp_path / "full"
    cli("checkpoint", "ct", "--dir", str(full), check=True)
    assert [p.stat().st_size > 0 for p in full.glob("netns-ct-*.img")] == [True]
    if _patched_criu():
        assert not list(full.glob("netns-exp-*.img"))  # no expectation: nothing there
    cli("restore", "--dir", str(full), check=True)
    pid2 = json.loads(cli("state", "ct", check=True).stdout)["pid"]
    assert _ct_count(pid2) == tracked
    assert cli("rm", "-f", "ct").returncode == 0


def test_tcp_established(cli, tmp_path):
    """A TCP connection inside the container (over its lo) survives checkpoint/restore."""
    images = tmp_path / "ck"
    cli("run", "-d", "--name", "tcp", "--", "sh", "-c",
        "(sleep 100000 | nc -l -p 5000 > /recv) & sleep 0.3; i=0; "
        "while :; do i=$((i+1)); echo $i; sleep 0.05; done | nc 127.0.0.1 5000", check=True)

    def received():
        return [int(x) for x in cli("exec", "tcp", "--", "cat", "/recv").stdout.split()]
    _wait_for(lambda: len(received()) >= 5)
    p = cli("checkpoint", "tcp", "--dir", str(images))
    assert p.returncode != 0 and "--tcp-established" in p.stderr
    assert _ps(cli) == {"tcp": "running"}  # a failed dump leaves it running
    cli("checkpoint", "tcp", "--tcp-established", "--dir", str(images), check=True)
    at_dump = int((images / "upper" / "recv").read_text().split()[-1])
    cli("restore", "--dir", str(images), check=True)
    got = _wait_for(lambda: (lambda r: len(r) > at_dump + 5 and r)(received()))
    assert got == list(range(1, len(got) + 1))  # the same stream, nothing lost or repeated
    assert "ESTABLISHED" in cli("exec", "tcp", "--", "netstat", "-tn").stdout
    cli("rm", "-f", "tcp", check=True)


def test_refusals(cli, tmp_path):
    cli("run", "-d", "--name", "host", "--network", "host", "--", "sleep", "100",
        check=True)
    p = cli("checkpoint", "host", "--dir", str(tmp_path / "a"))
    assert p.returncode != 0 and "--network none" in p.stderr
    cli("pause", "host", check=True)
    p = cli("checkpoint", "host", "--dir", str(tmp_path / "a"))
    assert p.returncode != 0 and "it is paused" in p.stderr
    assert _ps(cli) == {"host": "paused"}  # a refused checkpoint changes nothing
    p = cli("checkpoint", "nosuch", "--dir", str(tmp_path / "b"))
    assert p.returncode != 0 and p.stderr.startswith("zoned: ")
    p = cli("restore", "--dir", str(tmp_path))
    assert p.returncode != 0 and "no zoned checkpoint" in p.stderr
    cli("rm", "-f", "host")


def _log_line(cli, name, prefix, timeout=30.0):
    def find():
        return next((ln for ln in cli("logs", name).stdout.splitlines()
                     if ln.startswith(prefix)), None)
    return _wait_for(find, timeout)


def test_100mib_of_memory_comes_back_exactly_via_an_exported_archive(cli, tmp_path):
    """memtouch fills 100 MiB from a PRNG and prints its checksum; after checkpoint
    --export and restore --import (under a new name) SIGUSR1 makes it sum the memory it
    has then: the same checksum."""
    from twohost import memtouch_volume

    archive = tmp_path / "mem.tar.zst"
    before = host_snapshot(cli.root)
    cli("run", "-d", "--name", "mem", "-v", memtouch_volume(), "--", "/memtouch", "100",
        check=True)
    ready = _log_line(cli, "mem", "ready ").split()[1]
    cli("checkpoint", "mem", "--export", str(archive), check=True)
    assert "mem" not in _ps(cli) and archive.stat().st_size > 100 * 2**20 // 4
    assert cli("restore", "--import", str(archive), "--name", "mem2",
               check=True).stdout.strip() == "mem2"
    cli("kill", "mem2", "USR1", check=True)
    assert _log_line(cli, "mem2", "sum ").split()[1] == ready
    p = cli("restore", "--import", str(tmp_path / "nope.tar.zst"))
    assert p.returncode != 0 and "no such file" in p.stderr
    cli("rm", "-f", "mem2", check=True)
    assert host_snapshot(cli.root) == before  # no state, scratch, cgroup or mount left


def test_criu_runs_through_zoned_criuexec_in_a_namespace_of_its_own(cli, tmp_path):
    """zoned-criuexec (no preexec_fn, so subprocess can vfork) mounts the yard, kdat and
    overlay only where criu sees them; an overlay it cannot mount is one line, exit 125."""
    import os
    import subprocess

    from zoned.checkpoint import cgroup_yard
    from zoned.checkpoint.criu import CRIU_EXEC, criu_exec, find_criu

    assert os.access(CRIU_EXEC, os.X_OK)  # make setup builds it
    criu = find_criu()
    argv = criu_exec([criu, "--version"], overlay=(str(tmp_path / "nowhere"), "x"))
    assert argv[0] == CRIU_EXEC and argv[argv.index("--") + 1] == criu  # no preexec_fn
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 125 and p.stderr.count("\n") == 1, p.stderr
    assert f"mount overlay on {tmp_path / 'nowhere'}" in p.stderr
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    argv = criu_exec([criu, "--version"], yard=cgroup_yard.plan())
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("Version:"), p.stderr
    # The yard as a program run in criu's place sees it: each hierarchy bound by name.
    yard = tmp_path / "yard"
    yard.mkdir()
    p = subprocess.run([CRIU_EXEC, "--yard", str(yard), "pids=/sys/fs/cgroup/pids",
                        "un=/sys/fs/cgroup/unified", "--", "/bin/ls", f"{yard}/pids",
                        f"{yard}/un"], capture_output=True, text=True)
    assert p.returncode == 0 and "cgroup.procs" in p.stdout, p.stderr
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before  # nothing of it reached the host
    assert list(yard.iterdir()) == []
