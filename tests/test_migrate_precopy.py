"""What a migration's destination does before the source freezes (issue 18: a shorter
freeze), between the two hosts of tests/twohost.py.

The destination makes the zone's state dir, lease, rules, network namespace with its veths,
and cgroup as soon as it has said yes, while the source still runs the zone: only
unpacking, `criu restore` and the commit are left for the freeze. Its links wait down (no
carrier) until the commit, so the prepared copy takes no frame meant for the running one,
and a source that gives up leaves nothing behind there.

(Pre-copy rounds, `criu pre-dump` with soft-dirty tracking, are not tested here: this
kernel has no CONFIG_MEM_SOFT_DIRTY, `criu check --feature mem_dirty_track` fails, and
zoned's live mode is post-copy for the memory.)
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import twohost
from conftest import criu_or_skip
from twohost import B_IP, ZONED, relocation_server, start_memtouch

two_hosts = twohost.two_hosts  # the fixture, under the name the tests ask for

CRIU = criu_or_skip()

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")

IP, PORT, MIB = "10.77.0.12", 5000, 16


@pytest.fixture
def key(two_hosts, tmp_path):
    path = str(tmp_path / "relocation.pem")
    two_hosts.a.zoned("relocation-key", path, check=True)
    return path


def _start_svc(th) -> str:
    return start_memtouch(th.a, IP, PORT, MIB)


def _migrate(th, key, tmp_path, port: int, *, live: bool, pause: float):
    """`zoned migrate` from A, held after the destination said yes for `pause` seconds
    (ZONED_TEST_PAUSE_FREEZE): the process, its stdout and stderr paths."""
    out, err = tmp_path / f"m{port}.out", tmp_path / f"m{port}.err"
    p = th.a.popen([ZONED, "--root", th.a.root, "migrate", *(["--live"] if live else []),
                    "svc", f"zoned://{B_IP}:{port}", "--key", key, "--format", "json"],
                   stdout=open(out, "w"), stderr=open(err, "w"),
                   env={**th.a.env, "ZONED_TEST_PAUSE_FREEZE": str(pause)})
    return p, out, err


def _wait_prepared(th, err) -> dict:
    """B's prepared copy of svc (its state) once it exists, before anything is frozen."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        p = th.b.zoned("inspect", "svc")  # (its state may be a moment behind its name)
        if p.returncode == 0:
            st = json.loads(p.stdout)["state"]
            net = (st.get("zoned") or {}).get("network")
            if net:  # and its veth plugged into the bridge
                link = th.b.sh(f"ip -o link show dev {net['networks'][0]['host_if']}")
                if " master " in link.stdout:
                    return st
        assert "freezing" not in err.read_text(), err.read_text()
        time.sleep(0.05)
    raise AssertionError(f"B never prepared svc: {err.read_text()}")


def _held_after_prepare(th, key, tmp_path, port: int, *, live: bool, pause: float):
    """svc on A with a client counting on it, a relocation server for B on `port`, and a
    migration held once B has prepared: (checksum, client, migrate process, its stdout
    and stderr paths, B's prepared state)."""
    ready = _start_svc(th)
    relocation_server(th, key, tmp_path, port)
    cc = th.counter_client(IP, PORT)
    cc.wait_values(10)
    mig, out, err = _migrate(th, key, tmp_path, port, live=live, pause=pause)
    return ready, cc, mig, out, err, _wait_prepared(th, err)


def _link_flags(host, name: str) -> str:
    return host.sh(f"ip -o link show dev {name}", check=True).stdout


def test_prepared_destination_takes_no_traffic_and_the_move_keeps_everything(
        two_hosts, key, tmp_path):
    th = two_hosts
    ready, cc, mig, out, err, st = _held_after_prepare(th, key, tmp_path, 7100, live=True,
                                                       pause=4)
    # Prepared on B while A runs the zone: state, lease, veth, cgroup; its link held down.
    assert st["status"] == "creating" and st["pid"] == 0
    host_if = st["zoned"]["network"]["networks"][0]["host_if"]
    assert "state DOWN" in _link_flags(th.b, host_if) and \
        ",UP" not in _link_flags(th.b, host_if).split(">")[0]
    # Long enough for a live eth0 to send its IPv6 DAD/MLD frames with the zone's MAC
    # (the client's bridge would then send the zone's traffic to B, where nothing runs).
    time.sleep(1.5)
    k = len(cc.values())
    ping = th.pinger(IP, 0.05)
    assert th.ask(IP, PORT, "pid", "verify") == ["1", f"ok {MIB * 256}"]  # A answers
    cc.wait_values(k + 10)
    assert len(cc.values()) >= k + 10 and not cc.errors(), cc.errors()
    sent, received, lost = ping.stop()
    assert sent > 0 and lost == 0, (sent, received)
    assert "freezing" not in err.read_text()  # all of that before the freeze

    assert mig.wait(120) == 0, err.read_text()
    summary = json.loads(out.read_text())
    n = len(cc.values())
    cc.wait_values(n + 20)
    values = cc.stop()
    assert values == list(range(1, len(values) + 1)) and not cc.errors(), cc.errors()
    assert len(values) >= n + 20
    assert th.a.container_ids() == [] and th.b.container_ids() == ["svc"]
    assert th.ask(IP, PORT, "sum", "verify") == [ready, f"ok {MIB * 256}"]
    assert "state UP" in _link_flags(th.b, host_if)
    # The summary says where the time went, on both sides.
    tl = summary["timeline"]
    assert [s for s, _ in tl["destination_before"]] == ["prepare (state, network, cgroup)"]
    assert "criu restore" in [s for s, _ in tl["destination"]]
    assert "ARP announce" in [s for s, _ in tl["destination_commit"]]
    # zoned locked the bridged zone's network itself (its host side held down), so the
    # frozen time runs from that lock, CRIU's start-up included; CRIU locked nothing.
    assert summary["network_lock"] == "links"
    assert [s for s, _ in tl["source"]][:2] == ["network locked (links down)", "dump"]
    assert 0 < summary["frozen_ms"] <= summary["dump_started_ms"] <= summary["total_ms"]


def test_source_giving_up_leaves_nothing_prepared_on_the_destination(two_hosts, key,
                                                                     tmp_path):
    th = two_hosts
    ready, cc, mig, _, err, st = _held_after_prepare(th, key, tmp_path, 7101, live=False,
                                                     pause=30)
    host_if = st["zoned"]["network"]["networks"][0]["host_if"]
    os.killpg(mig.pid, signal.SIGTERM)  # the source gives up before freezing anything
    assert mig.wait(60) != 0
    assert "interrupted by signal 15" in err.read_text(), err.read_text()
    # B drops its prepared copy: no zone, no veth, nothing for gc.
    end = time.monotonic() + 20
    while th.b.container_ids() and time.monotonic() < end:
        time.sleep(0.05)
    assert th.b.container_ids() == []
    assert th.b.sh(f"ip -o link show dev {host_if}").returncode != 0
    gc = th.b.zoned("gc", "--dry-run", check=True).stdout
    assert "svc" not in gc and "migration" not in gc, gc
    # A never stopped: the same connection goes on, the memory is intact.
    n = len(cc.values())
    cc.wait_values(n + 10)
    assert th.ask(IP, PORT, "sum", "verify") == [ready, f"ok {MIB * 256}"]
    # B's lease and rules were released: the same zone moves there now.
    mig, out, err = _migrate(th, key, tmp_path, 7101, live=False, pause=0)
    assert mig.wait(120) == 0, err.read_text()
    values = cc.stop()
    assert values == list(range(1, len(values) + 1)) and not cc.errors(), cc.errors()
    assert th.b.container_ids() == ["svc"]
    assert th.ask(IP, PORT, "verify") == [f"ok {MIB * 256}"]


def test_criu_reuses_its_kernel_facts_and_the_host_sees_no_mount(two_hosts, key,
                                                                  tmp_path):
    """Where /run is no tmpfs CRIU would probe the kernel in every command (30-40 ms, in
    the frozen window three times); zoned binds a per-boot copy of CRIU's own cache in
    each criu's private mount namespace."""
    from zoned.checkpoint.criu import KDAT, TMPFS_MAGIC, fs_type

    if fs_type("/run") == TMPFS_MAGIC:
        pytest.skip("/run is a tmpfs: CRIU keeps its own cache there")
    th = two_hosts
    _start_svc(th)
    relocation_server(th, key, tmp_path, 7102)
    mig, _, err = _migrate(th, key, tmp_path, 7102, live=False, pause=0)
    assert mig.wait(120) == 0, err.read_text()
    with open(os.path.join(th.b.root, "svc", "restore.log")) as f:
        log = f.read()
    assert f"Loaded kdat cache from {KDAT}" in log
    # Nothing of it in the host's (or a zoned host's) mount table, and CRIU's path on
    # the host holds no facts another criu could take for its own.
    for pid in ("self", th.a.holder.pid, th.b.holder.pid):
        with open(f"/proc/{pid}/mountinfo") as f:
            assert KDAT not in f.read()
    assert os.path.getsize(KDAT) == 0
    r = subprocess.run([CRIU, "check", "--feature", "uffd-noncoop"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a criu run without zoned's bind still works


def test_a_dead_session_s_prepared_copy_does_not_block_the_next_move(two_hosts, key,
                                                                     tmp_path):
    """The relocation server is killed (-9) holding a prepared copy: the zone still runs
    on A, and the next move to B removes that leftover instead of refusing the name."""
    th = two_hosts
    ready = _start_svc(th)
    srv, _ = relocation_server(th, key, tmp_path, 7103)
    mig, _, err = _migrate(th, key, tmp_path, 7103, live=True, pause=30)
    _wait_prepared(th, err)
    os.killpg(srv.pid, signal.SIGKILL)  # the server and its session
    os.killpg(mig.pid, signal.SIGTERM)
    assert mig.wait(60) != 0
    assert th.b.container_ids() == ["svc"]  # what the dead session left (gc would go)
    _, log = relocation_server(th, key, tmp_path, 7104)
    mig, _, err = _migrate(th, key, tmp_path, 7104, live=True, pause=0)
    assert mig.wait(120) == 0, err.read_text()
    assert "removed svc left by an earlier session that died" in log.read_text()
    assert th.a.container_ids() == [] and th.b.container_ids() == ["svc"]
    assert th.ask(IP, PORT, "sum", "verify") == [ready, f"ok {MIB * 256}"]
