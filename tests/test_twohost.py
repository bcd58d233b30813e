"""The two-hosts harness (tests/twohost.py) that migration tests stand on: containers on
either host share one L2 segment with the client, memtouch serves its counter, sshd on B
runs B's zoned for A, and close() leaves nothing behind."""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

import twohost
from twohost import B_IP, SSH_PORT, SSHD, ZONED, TwoHosts, build_memtouch, memtouch_volume

two_hosts = twohost.two_hosts  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")
needs_sshd = pytest.mark.skipif(not os.access(SSHD, os.X_OK),
                                reason=f"{SSHD} is missing (make setup installs openssh-server)")


def _wait_log(host, name: str, prefix: str, timeout: float = 10.0) -> str:
    """The first line of a container's log that starts with prefix."""
    end = time.monotonic() + timeout
    while True:
        for line in host.zoned("logs", name).stdout.splitlines():
            if line.startswith(prefix):
                return line
        if time.monotonic() > end:
            raise AssertionError(f"no {prefix!r} in the log of {name} on {host.label}")
        time.sleep(0.05)


def test_memtouch_builds_once_and_is_static():
    path = build_memtouch()
    assert build_memtouch() == path and os.access(path, os.X_OK)
    elf = Path(path).read_bytes()
    assert elf[:5] == b"\x7fELF\x02"  # ELF64; no PT_INTERP: it runs without a libc
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert types and 3 not in types


def test_lan_joins_containers_on_both_hosts_and_the_client(two_hosts):
    th = two_hosts
    a, b = th.a, th.b
    a.zoned("run", "-d", "--name", "svc", "--network", "lan", "--ip", "10.77.0.10",
            "-v", memtouch_volume(), "--", "/memtouch", "16", "5000", check=True)
    # on B, memtouch without a port: SIGUSR1 prints the checksum again
    b.zoned("run", "-d", "--name", "idle", "--network", "lan", "--ip", "10.77.0.11",
            "-v", memtouch_volume(), "--", "/memtouch", "8", check=True)
    ready = _wait_log(a, "svc", "ready ").split()[1]

    cc = th.counter_client("10.77.0.10", 5000)
    ping = th.pinger("10.77.0.10")
    assert len(cc.wait_values(25)) >= 25, (cc.errors(), cc.proc.poll())
    sent, received, lost = ping.stop()
    values = cc.stop()
    assert values == list(range(1, len(values) + 1)) and not cc.errors()
    assert cc.longest_gap() < 0.5
    assert sent >= 10 and lost == 0, (sent, received, ping.summary)
    # the counter is one per process, not per connection; the memory is what it was
    assert th.ask("10.77.0.10", 5000, "next", "sum", "verify", "pid") == [
        str(len(values) + 1), ready, "ok 4096", "1"]

    idle_ready = _wait_log(b, "idle", "ready ").split()[1]
    b.zoned("kill", "idle", "USR1", check=True)
    assert _wait_log(b, "idle", "sum ").split()[1] == idle_ready

    # one segment: client <-> both containers, the hosts <-> each other and the containers
    th.client.sh("ping -c 2 -i 0.05 -W 1 10.77.0.11", check=True)
    a.sh(f"ping -c 1 -W 1 {B_IP} && ping -c 1 -W 1 10.77.0.11", check=True)
    b.sh("ping -c 1 -W 1 10.77.0.1 && ping -c 1 -W 1 10.77.0.10", check=True)
    # container to container across the hosts (no NET_RAW in a container: TCP, not ping)
    out = b.zoned("exec", "idle", "--", "sh", "-c", "echo sum | nc -w 2 10.77.0.10 5000",
                  check=True).stdout
    assert out.strip() == ready

    # each host's containers are in its own cgroup parent and only in its own state root
    for host, name in ((a, "svc"), (b, "idle")):
        assert host.container_ids() == [name]
        pid = host.zoned_json("inspect", name)["state"]["pid"]
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"{host.cgroup_parent}/" in cgroups, cgroups


@needs_sshd
def test_sshd_on_b_runs_b_zoned_for_a(two_hosts):
    th = two_hosts
    th.b.zoned("run", "-d", "--name", "remote-one", "--network", "lan", "--ip", "10.77.0.12",
               "--", "sleep", "600", check=True)
    cmd = th.start_sshd()
    assert th.a.env["ZONED_SSH_COMMAND"] == cmd
    # what zoned's ssh transport will do on A: $ZONED_SSH_COMMAND -p PORT root@HOST CMD
    p = th.a.sh(f'$ZONED_SSH_COMMAND -p {SSH_PORT} root@{B_IP} zoned ps --format json',
                check=True)
    assert [c["id"] for c in json.loads(p.stdout)] == ["remote-one"]
    env = th.ssh(th.a, th.b, "command -v zoned; echo $ZONED_ROOT; echo $ZONED_CGROUP_PARENT; "
                 "echo $ZONED_NET_REGISTRY; ip -br addr show uplink", check=True)
    lines = env.stdout.splitlines()
    assert lines[:4] == [ZONED, th.b.root, th.b.cgroup_parent, th.b.registry]
    assert lines[4].startswith("uplink"), "ssh sessions run in B's network namespace"
    # and B's zoned over ssh works on B's containers (cgroups are mounted in sshd's view)
    out = th.ssh(th.a, th.b, "zoned exec remote-one -- hostname", check=True).stdout
    assert out.strip() == "remote-one"


@needs_sshd
def test_close_leaves_nothing():
    th = TwoHosts()
    try:
        for host, ip in ((th.a, "10.77.0.20"), (th.b, "10.77.0.21")):
            host.zoned("run", "-d", "--name", "c1", "--network", "lan", "--ip", ip,
                       "-v", memtouch_volume(), "--", "/memtouch", "4", "5000", check=True)
        th.start_sshd()
        th.counter_client("10.77.0.20", 5000).wait_values(3)
        th.pinger("10.77.0.21")
        th.a.popen("sleep 600")
        th.ssh(th.a, th.b, "true", check=True)
        alive = th.leftovers()
        # the checker sees what there is (so an empty answer below means something)
        for what in ("netns zmA-", "netns zmB-", "netns zmC-", "cgroup ", "dir ",
                     "process "):
            assert any(x.startswith(what) for x in alive), (what, alive)
    finally:
        th.close()
    assert th.leftovers() == []
