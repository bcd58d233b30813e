"""`zoned migrate` of a VM between two zoned hosts (tests/twohost.py): QEMU's own migration
over the relocation channel, the guest's IP and MAC kept, pings lost counted as for zones."""
from __future__ import annotations

import json
import time

import pytest

import twohost
from twohost import B_IP, relocation_server

try:
    from zoned.vm.assets import kernel

    kernel()
except Exception as e:  # no guest kernel: `make setup` not run
    pytest.skip(f"no VM guest kernel: {e}", allow_module_level=True)

two_hosts = twohost.two_hosts
IP = "10.77.0.60"
# (renamed into place: a `cat` between the truncation and the write would read nothing)
COUNTER = ("i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; "
           "mv /tmp/count.new /tmp/count; sleep 0.05; done")


@pytest.fixture
def key(two_hosts, tmp_path):
    path = str(tmp_path / "relocation.pem")
    two_hosts.a.zoned("relocation-key", path, check=True)
    return path


def _count(host, name: str) -> int:
    p = host.zoned("exec", name, "--", "cat", "/tmp/count", check=True)
    return int(p.stdout)


def _link(host, name: str) -> dict:
    return host.zoned_json("inspect", name)["state"]["zoned"]["network"]["networks"][0]


@pytest.mark.parametrize("live", [True, False], ids=["precopy", "stop-and-copy"])
def test_vm_migrates_with_its_memory_address_and_mac(two_hosts, key, tmp_path, live):
    th = two_hosts
    relocation_server(th, key, tmp_path, 7100)
    th.a.zoned("run", "-d", "--name", "vm1", "--backend", "vm", "--network", "lan", "--ip",
               IP, "--", "sh", "-c", COUNTER, check=True, timeout=120)
    before = _link(th.a, "vm1")
    time.sleep(0.5)
    n = _count(th.a, "vm1")
    ping = th.pinger(IP)
    time.sleep(0.5)
    p = th.a.zoned("migrate", *(["--live"] if live else []), "vm1",
                   f"zoned://{B_IP}:7100", "--key", key, "--format", "json", timeout=180)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    time.sleep(0.5)
    sent, received, lost = ping.stop()
    # It left A entirely (QEMU, tap, lease, record) and runs on B: same counter, going on.
    assert th.a.container_ids() == [] and th.b.container_ids() == ["vm1"]
    st = th.b.zoned_json("inspect", "vm1")
    assert st["state"]["status"] == "running" and st["backend"] == "vm"
    m = _count(th.b, "vm1")
    time.sleep(0.3)
    assert _count(th.b, "vm1") > m > n  # the guest's memory (its tmpfs too) came along
    after = _link(th.b, "vm1")
    assert (after["ip"], after["mac"]) == (before["ip"], before["mac"])
    assert received > 0 and lost <= sent // 2, (sent, received, lost)
    assert summary["backend"] == "vm" and summary["mode"] == ("live" if live else
                                                               "stop-and-copy")
    assert summary["bytes"] >= 16 << 20 and summary["ram_bytes"] > 0  # the guest's RAM
    assert 0 < summary["frozen_ms"] <= summary["total_ms"]
    th.b.zoned("rm", "-f", "vm1", check=True)


def test_a_refused_vm_migration_leaves_it_running_on_the_source(two_hosts, key, tmp_path):
    th = two_hosts
    relocation_server(th, key, tmp_path, 7101)
    th.a.zoned("run", "-d", "--name", "vm2", "--backend", "vm", "--", "sh", "-c", COUNTER,
               check=True, timeout=120)
    th.b.zoned("run", "-d", "--name", "vm2", "--", "sleep", "100", check=True)  # name taken
    p = th.a.zoned("migrate", "--live", "vm2", f"zoned://{B_IP}:7101", "--key", key,
                   timeout=120)
    assert p.returncode != 0 and "already in use" in p.stderr
    n = _count(th.a, "vm2")
    time.sleep(0.3)
    assert _count(th.a, "vm2") > n
    assert [c["id"] for c in th.b.zoned_json("ps", "-a", "--format", "json")] == ["vm2"]
    th.a.zoned("rm", "-f", "vm2", check=True)
    th.b.zoned("rm", "-f", "vm2", check=True)
