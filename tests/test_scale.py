"""Behaviour at scale (issue 18), at sizes CI can afford: what changes with the number of
zones must stay right when it grows. A network with more zones than one bridge takes
(ZONED_BRIDGE_PORTS made small, so a handful of zones spreads over extra bridges), the
shared hosts file of a network's members, the anti-spoofing guards kept as named-map
elements, IPAM under parallel starts, and listing many zones. No timed asserts: the
speed is bench/density.py's business.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")

BRIDGE = f"zsc-br{os.getpid() % 1000}"


def aliased(root: str) -> list[str]:
    """Host links whose alias names this state root (veths, bridges, trunks)."""
    real = os.path.realpath(root)
    out = []
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifalias") as f:
                if f.read().strip().endswith("@" + real):
                    out.append(name)
        except OSError:
            pass
    return sorted(out)


def state(root: str, cid: str) -> dict:
    with open(os.path.join(root, cid, "state.json")) as f:
        return json.load(f)


def link_of(root: str, cid: str) -> dict:
    return state(root, cid)["zoned"]["network"]["networks"][0]


def master_of(ifname: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/master"))
    except OSError:
        return None


def guard_map(family: str) -> set[str]:
    """The interface names in zoned's named guard map of `family`'s table."""
    table = "zoned" if family == "bridge" else "zoned-guard"
    p = subprocess.run(["nft", "-j", "list", "map", family, table, "guards"],
                       capture_output=True, text=True)
    if p.returncode:
        return set()
    for item in json.loads(p.stdout)["nftables"]:
        if "map" in item:
            return {e[0] for e in item["map"].get("elem", [])}
    return set()


@pytest.fixture
def network(cli):
    """A NAT network of this test's own (its bridge named after the test process); every
    zone of the root and the network are removed at the end."""
    name = "zsc"
    cli("network", "create", name, "--bridge", BRIDGE, check=True)
    yield name
    ids = cli("ps", "-a", "-q").stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    cli("network", "rm", name)


def test_network_spreads_past_a_bridges_port_limit(cli, network, monkeypatch):
    """A Linux bridge takes at most 1024 ports. With ZONED_BRIDGE_PORTS=2, seven zones go
    on the network's bridge and extra bridges joined to it by trunks; they still form one
    network (a zone on the last extra bridge reaches one on the first bridge by name, and
    the gateway), the host reaches every one, and `network rm` takes every extra bridge
    and trunk with it."""
    monkeypatch.setenv("ZONED_BRIDGE_PORTS", "2")
    names = [f"s{i}" for i in range(7)]
    for n in names:
        extra = ["--cap-add", "NET_RAW"] if n == names[-1] else []
        cli("run", "-d", "--network", network, "--name", n, *extra, "--", "sleep", "1000",
            check=True)
    masters = {n: master_of(link_of(cli.root, n)["host_if"]) for n in names}
    assert None not in masters.values(), masters
    on = {}
    for n, m in masters.items():
        on.setdefault(m, []).append(n)
    assert len(on) >= 3, on                      # the network's bridge and extra ones
    assert all(len(v) <= 2 for v in on.values()), on   # none past the limit
    assert masters["s0"] == BRIDGE and masters["s6"] != BRIDGE
    for m in on:
        if m != BRIDGE:  # an extra bridge: no address, one trunk to the network's bridge
            trunks = [p for p in os.listdir(f"/sys/class/net/{m}/brif")
                      if not p.startswith("zv")]
            assert len(trunks) == 1, (m, trunks)
            assert not subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", m],
                                      capture_output=True, text=True).stdout.strip()
    gw = link_of(cli.root, "s0")["gateway"]
    for target in ("s0", gw):  # across the trunks, by name (the hosts file) and to the gw
        p = cli("exec", "s6", "--", "ping", "-c", "1", "-W", "3", target, timeout=30)
        assert p.returncode == 0, (target, p.stdout, p.stderr)
    for n in names:
        ip = link_of(cli.root, n)["ip"]
        assert subprocess.run(["ping", "-c", "1", "-W", "3", ip],
                              capture_output=True).returncode == 0, (n, ip)
    # someone deletes the network's bridge: the next start re-makes it and plugs the
    # surviving extra bridges' trunks back in
    subprocess.run(["ip", "link", "del", BRIDGE], check=True)
    cli("run", "-d", "--network", network, "--name", "s7", "--", "sleep", "1000", check=True)
    from zoned.network.spread import trunk_names

    assert master_of(link_of(cli.root, "s7")["host_if"]) in on
    extras = sorted(m for m in on if m != BRIDGE)
    for k in range(1, len(extras) + 1):
        assert master_of(trunk_names(BRIDGE, k)[0]) == BRIDGE
    p = cli("exec", "s6", "--", "ping", "-c", "1", "-W", "3", "s7", timeout=30)
    assert p.returncode == 0, (p.stdout, p.stderr)
    names.append("s7")
    bridges = set(on)
    cli("rm", "-f", *names, check=True)
    cli("network", "rm", network, check=True)
    assert not aliased(cli.root)
    assert not any(os.path.exists(f"/sys/class/net/{b}") for b in bridges)


def test_members_share_one_hosts_file(cli, network):
    """Zones with one network and no --add-host share the network's hosts file (one write
    per start, not one per member); a zone with --add-host keeps a file of its own that
    still lists every member; a removed zone's line leaves everyone's /etc/hosts."""
    for n in ("h0", "h1", "h2"):
        cli("run", "-d", "--network", network, "--name", n, "--", "sleep", "1000",
            check=True)
    cli("run", "-d", "--network", network, "--name", "own", "--add-host", "db:192.0.2.9",
        "--", "sleep", "1000", check=True)
    inode = {n: os.stat(os.path.join(cli.root, n, "hosts")).st_ino
             for n in ("h0", "h1", "h2", "own")}
    assert inode["h0"] == inode["h1"] == inode["h2"] != inode["own"]
    for n in ("h0", "own"):
        hosts = cli("exec", n, "--", "cat", "/etc/hosts", check=True).stdout
        for other in ("h0", "h1", "h2", "own"):
            assert f"\t{other}" in hosts, (n, other, hosts)
    assert "192.0.2.9\tdb" in cli("exec", "own", "--", "cat", "/etc/hosts").stdout
    cli("rm", "-f", "h1", check=True)
    for n in ("h0", "h2", "own"):
        hosts = cli("exec", n, "--", "cat", "/etc/hosts", check=True).stdout
        assert "\th1" not in hosts and "\th2" in hosts, (n, hosts)
    ids = cli("ps", "-a", "-q").stdout.split()
    cli("rm", "-f", *ids, check=True)
    cli("network", "rm", network, check=True)
    left = os.listdir(cli.root)
    assert ".networks" not in left, left  # the shared file and its lock went too


def test_guards_are_map_elements_and_match_a_rebuild(cli, network):
    """A zone's anti-spoofing guard is added to (and taken out of) the named map without
    rebuilding every zone's rules; the tables it leaves are what a full rebuild from the
    registry makes."""
    from zoned.network import nft

    for n in ("g0", "g1", "g2"):
        cli("run", "-d", "--network", network, "--name", n, "--", "sleep", "1000",
            check=True)
    veths = {n: link_of(cli.root, n)["host_if"] for n in ("g0", "g1", "g2")}
    assert set(veths.values()) <= guard_map("bridge")

    def table() -> dict:
        out = json.loads(subprocess.run(["nft", "-j", "list", "table", "bridge", "zoned"],
                                        capture_output=True, text=True, check=True).stdout)
        chains = {}
        elems = set()
        for item in out["nftables"]:
            if "rule" in item and item["rule"]["chain"].startswith("g-zv"):
                chains.setdefault(item["rule"]["chain"], []).append(
                    json.dumps(item["rule"]["expr"], sort_keys=True))
            if "map" in item:
                elems |= {e[0] for e in item["map"].get("elem", [])}
        mine = {c: r for c, r in chains.items() if c[2:] in veths.values()}
        return {"chains": mine, "elems": elems & set(veths.values())}

    cli("rm", "-f", "g1", check=True)
    assert veths["g1"] not in guard_map("bridge")
    assert veths["g0"] in guard_map("bridge")
    incremental = table()
    assert set(incremental["chains"]) == {f"g-{veths['g0']}", f"g-{veths['g2']}"}
    with nft.registry_lock():
        nft.apply()  # a full rebuild from the registry
    assert table() == incremental


def test_parallel_starts_get_distinct_addresses(cli, network):
    """Eight zones started at once on one network: eight different addresses, each in its
    lease and in the shared hosts file, and each zone's own address is the one it has."""
    names = [f"p{i}" for i in range(8)]

    def start(n: str):
        return cli("run", "-d", "--network", network, "--name", n, "--", "sleep", "1000",
                   timeout=120)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(start, names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    ips = {n: link_of(cli.root, n)["ip"] for n in names}
    assert len(set(ips.values())) == len(names), ips
    with open(os.path.join(cli.root, ".networks", f"{network}.leases.json")) as f:
        leases = json.load(f)["leases"]
    assert {ip: rec["cid"] for ip, rec in leases.items()} == {v: k for k, v in ips.items()}
    hosts = cli("exec", "p0", "--", "cat", "/etc/hosts", check=True).stdout
    for n, ip in ips.items():
        assert f"{ip}\t{n}" in hosts, (n, hosts)
        out = cli("exec", n, "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert f"inet {ip}/" in out, (n, out)


def test_listing_many_zones(cli):
    """`ps -a` lists every one of 40 zones once, with the right status, in every format;
    `ps` (running only) leaves out the ones that exited."""
    import time

    names = [f"l{i:02d}" for i in range(40)]
    for n in names[:30]:
        cli("run", "-d", "--name", n, "--", "sleep", "1000", check=True)
    for n in names[30:]:
        cli("run", "-d", "--name", n, "--", "true", check=True)
    try:
        assert sorted(cli("ps", "-a", "-q", check=True).stdout.split()) == names
        deadline = time.monotonic() + 30
        while True:
            rows = json.loads(cli("ps", "-a", "--format", "json", check=True).stdout)
            status = {r["id"]: r["status"] for r in rows}
            if all(status[n] == "stopped" for n in names[30:]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(r["id"] for r in rows) == names
        assert {status[n] for n in names[:30]} == {"running"}
        assert {status[n] for n in names[30:]} == {"stopped"}
        running = cli("ps", "--format", "{{.Names}}", check=True).stdout.split()
        assert sorted(running) == names[:30]
    finally:
        cli("rm", "-f", *names)
    assert cli("ps", "-a", "-q").stdout.split() == []
