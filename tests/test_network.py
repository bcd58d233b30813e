"""Networking (issue 4): veth + bridge, routed and NAT modes, published ports, IPAM, hosts
files, isolation, clean-up and gc. Real kernel objects, checked from outside.

Everything stays on this machine: test networks get their subnets from 10.213.0.0/17 (zoned
picks free ones under its host-wide lock, so two test runs at once do not collide), bridges
are named zt-br*, host ports and the "outside world" of the NAT and routed tests (a network
namespace zt-out-*, behind a veth, in 10.213.192.0/18) are derived from the test process id.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ZONED, zone_state

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")

PORT = 20000 + (os.getpid() % 1000) * 10   # host ports PORT..PORT+9 for this run
OUT_NET = f"10.213.{192 + os.getpid() % 60}"  # the outside link: OUT_NET.0/30


def links(kind: str) -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", kind], capture_output=True,
                         text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def host_net_snapshot(root: str) -> dict:
    """What this test run owns on the host: links whose alias names this state root (veths
    "zoned:CID@ROOT", bridges "zoned-net:NAME@ROOT") or that carry our bridge prefix, and
    this root's files in zoned's host-wide rules registry. (Scoped, so that another test
    run on the same host does not disturb the comparison.)"""
    real = os.path.realpath(root)
    owned = []
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifalias") as f:
                alias = f.read().strip()
        except OSError:
            alias = ""
        if alias.endswith("@" + real) or name.startswith(f"zt-br{os.getpid() % 1000}"):
            owned.append(name)
    frags = []
    reg = "/run/zoned-net"
    for n in sorted(os.listdir(reg)) if os.path.isdir(reg) else []:
        if n.endswith(".json"):
            with open(os.path.join(reg, n)) as f:
                frag = json.load(f)
            if frag.get("root") == real:
                frags.append(frag)
    return {"links": sorted(owned), "rules": frags}


def registry_empty() -> bool:
    reg = "/run/zoned-net"
    return not os.path.isdir(reg) or not [n for n in os.listdir(reg) if n.endswith(".json")]


def wait_for(pred, timeout=10.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return pred()


@pytest.fixture(autouse=True)
def _pool(monkeypatch):
    monkeypatch.setenv("ZONED_SUBNET_POOL", "10.213.0.0/17")


@pytest.fixture
def net(cli, zoned_root):
    """net(mode=..., internal=...) -> (name, subnet, gateway); everything made through it
    (and every container of the root) is removed at the end."""
    made = []

    def make(mode="nat", internal=False, name=None):
        name = name or f"zt-{len(made)}"
        args = ["network", "create", name, "--mode", mode]
        if mode != "routed":
            args += ["--bridge", f"zt-br{os.getpid() % 1000}{len(made)}"]
        if internal:
            args.append("--internal")
        cli(*args, check=True)
        made.append(name)
        info = json.loads(cli("network", "inspect", name, check=True).stdout)[0]
        return name, info["subnet"], info["gateway"]

    yield make
    ids = cli("ps", "-a", "-q").stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    names = [n[:-5] for n in os.listdir(os.path.join(zoned_root, ".networks"))
             if n.endswith(".json") and not n.endswith(".leases.json")] \
        if os.path.isdir(os.path.join(zoned_root, ".networks")) else []
    if names:
        cli("network", "rm", *names)


def ip_of(cli, cid: str, index: int = 0) -> str:
    info = json.loads(cli("inspect", cid, check=True).stdout)
    return info["network"]["addresses"][index]["ip"]


def http_get(url: str, timeout: float = 3.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def start_httpd(cli, name: str, *args: str) -> None:
    """A container serving its own /etc over HTTP: /hostname names it."""
    cli("run", "-d", "--name", name, *args, "--", "httpd", "-f", "-p", "80", "-h", "/etc",
        check=True)


class HostServer:
    """A TCP server on the host (or in a namespace via `prefix`) that records the peer
    address of each connection and answers 'hello'."""

    def __init__(self, addr: str, port: int, prefix: list[str] | None = None):
        code = ("import socket,sys\n"
                "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(({addr!r},{port}));s.listen(8);print('ready',flush=True)\n"
                "while True:\n"
                "    c,a=s.accept();print(a[0],flush=True);c.sendall(b'hello\\n');c.close()\n")
        self.p = subprocess.Popen([*(prefix or []), sys.executable, "-c", code],
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"
        self.peers: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.peers.append(line.strip())

    def close(self):
        self.p.kill()
        self.p.wait()


@pytest.fixture
def outside():
    """A network namespace standing for the world beyond the host (held by a sleeping
    process: no /run/netns mounts), OUT_NET.2/30, its host side OUT_NET.1/30 on veth
    zt-oh-N."""
    tag = str(os.getpid() % 10000)
    host_if, peer_if = f"zt-oh-{tag}", f"zt-op-{tag}"
    holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    own = os.readlink("/proc/self/ns/net")
    assert wait_for(lambda: _ns_of(holder.pid) not in (None, own), 5)
    prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if,
           "netns", str(holder.pid))
        sh("ip", "addr", "add", f"{OUT_NET}.1/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh(*prefix, "ip", "addr", "add", f"{OUT_NET}.2/30", "dev", peer_if)
        sh(*prefix, "ip", "link", "set", peer_if, "up")
        sh(*prefix, "ip", "link", "set", "lo", "up")
        sh(*prefix, "ip", "route", "add", "default", "via", f"{OUT_NET}.1")
        yield {"addr": f"{OUT_NET}.2", "host": f"{OUT_NET}.1", "prefix": prefix}
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        holder.kill()
        holder.wait()


def _ns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


# -- the network commands -------------------------------------------------------------------
def test_network_commands(cli, zoned_root, net):
    name, subnet, gw = net()
    nets = json.loads(cli("network", "ls", "--format", "json", check=True).stdout)
    by_name = {n["name"]: n for n in nets}
    assert "zoned0" in by_name, "the default network exists on first use"
    assert by_name["zoned0"]["mode"] == "nat"
    assert by_name["zoned0"]["subnet"].startswith("10.213.")
    assert by_name[name]["subnet"] == subnet and by_name[name]["gateway"] == gw
    assert by_name[name]["bridge"] in links("bridge")
    table = cli("network", "ls", check=True).stdout
    assert name in table and subnet in table
    info = json.loads(cli("network", "inspect", name, check=True).stdout)[0]
    assert info["name"] == name and info["containers"] == {}
    # settings persist under the state root, in a dot-dir the container store ignores
    assert os.path.exists(os.path.join(zoned_root, ".networks", f"{name}.json"))
    assert cli("ps", "-a", "-q").stdout == ""
    # errors: one line each
    for args, msg in [
        (["network", "create", name], "already exists"),
        (["network", "create", "zt-x", "--subnet", subnet], "overlaps network"),
        (["network", "create", "zt-x", "--subnet", "banana"], "invalid --subnet"),
        (["network", "create", "none"], "invalid network name"),
        (["network", "create", "zt-x", "--subnet", "10.213.127.0/24", "--gateway",
          gw], "not a host address"),
        (["network", "rm", "zt-nope"], "does not exist"),
        (["run", "--rm", "--network", "zt-nope", "--", "true"], "does not exist"),
    ]:
        p = cli(*args)
        assert p.returncode != 0, args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], (args, p.stderr)
    cli("run", "-d", "--name", "user", "--network", name, "--", "sleep", "60", check=True)
    p = cli("network", "rm", name)
    assert p.returncode != 0 and "in use by container(s) user" in p.stderr
    cli("rm", "-f", "user", check=True)
    cli("network", "rm", name, "zoned0", check=True)
    assert json.loads(cli("network", "inspect", "zoned0").stdout)[0]["name"] == "zoned0"


def test_default_network_on_first_use(cli, zoned_root, net):
    p = cli("run", "--rm", "--network", "zoned0", "--", "cat", "/proc/net/dev", check=True)
    assert "eth0" in p.stdout
    assert os.path.exists(os.path.join(zoned_root, ".networks", "zoned0.json"))


# -- traffic ----------------------------------------------------------------------------------
def test_two_containers_talk_both_ways_by_name_and_ip(cli, net):
    name, subnet, gw = net()
    start_httpd(cli, "alpha", "--network", name)
    start_httpd(cli, "beta", "--network", name)
    a_ip, b_ip = ip_of(cli, "alpha"), ip_of(cli, "beta")
    assert a_ip != b_ip and a_ip.startswith(subnet[:9])
    for src, dst, dst_ip in (("alpha", "beta", b_ip), ("beta", "alpha", a_ip)):
        for target in (dst, dst_ip):
            out = wait_for(lambda src=src, target=target: cli(
                "exec", src, "--", "wget", "-qO-", f"http://{target}/hostname").stdout)
            assert out.strip() == dst, (src, target)
    # raw TCP with nc, by name: a listener in gamma, a client in alpha
    # (the listener takes connection after connection: a client that raced gamma's start,
    # before its name, address or listener was there, is simply tried again)
    cli("run", "-d", "--name", "gamma", "--network", name, "--", "sh", "-c",
        "while :; do nc -l -p 7000 >> /tmp/got; done", check=True)

    def sent_by_name() -> bool:
        cli("exec", "alpha", "--", "sh", "-c", "echo ping-by-name | nc gamma 7000")
        return cli("exec", "gamma", "--", "cat", "/tmp/got").stdout.splitlines()[:1] == \
            ["ping-by-name"]

    assert wait_for(sent_by_name, timeout=30)
    # /etc/hosts, /etc/resolv.conf and /etc/hostname are the container's own
    hosts = cli("exec", "alpha", "--", "cat", "/etc/hosts", check=True).stdout
    assert f"{a_ip}\talpha" in hosts and f"{b_ip}\tbeta" in hosts
    assert cli("exec", "alpha", "--", "hostname", check=True).stdout.strip() == "alpha"
    mounts = cli("exec", "alpha", "--", "cat", "/proc/self/mounts", check=True).stdout
    assert " /etc/hosts " in mounts and " /etc/resolv.conf " in mounts


def test_host_reaches_container_by_ip_and_published_port(cli, net):
    name, subnet, gw = net()
    start_httpd(cli, "web", "--network", name, "-p", f"{PORT}:80")
    web_ip = ip_of(cli, "web")
    assert wait_for(lambda: _try(http_get, f"http://{web_ip}/hostname")) == "web\n"
    assert http_get(f"http://127.0.0.1:{PORT}/hostname") == "web\n"
    assert http_get(f"http://{gw}:{PORT}/hostname") == "web\n"
    host_ip = _host_address()
    if host_ip:
        assert http_get(f"http://{host_ip}:{PORT}/hostname") == "web\n"
    # from another container: through the published port (hairpin) and directly
    for url in (f"http://{gw}:{PORT}/hostname", "http://web/hostname"):
        p = cli("run", "--rm", "--network", name, "--", "wget", "-qO-", url)
        assert p.stdout == "web\n", (url, p.stderr)
    # the same host port twice is one clear error
    p = cli("run", "--rm", "--network", name, "-p", f"{PORT}:80", "--", "true")
    assert p.returncode == 125 and f"{PORT}/tcp is already published by container 'web'" \
        in p.stderr
    rules = subprocess.run(["nft", "list", "table", "inet", "zoned"], capture_output=True,
                           text=True).stdout
    assert f"dnat ip to {web_ip}:80" in rules
    cli("rm", "-f", "web", check=True)
    rules = subprocess.run(["nft", "list", "table", "inet", "zoned"], capture_output=True,
                           text=True).stdout
    assert f"dport {PORT} " not in rules


def _try(fn, *a):
    try:
        return fn(*a)
    except OSError:
        return None


def _host_address() -> str | None:
    """A non-loopback address of the host, if it has one (no traffic leaves the host)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        dev, addr = line.split()[1], line.split()[3].split("/")[0]
        if not dev.startswith(("zt-", "zb", "zv", "zoned")) and not addr.startswith("10.213."):
            return addr
    return None


def test_container_reaches_host_server_nat(cli, net, outside):
    name, subnet, gw = net()
    srv = HostServer(gw, PORT + 1)
    try:
        p = cli("run", "--rm", "--network", name, "--", "nc", gw, str(PORT + 1), check=True)
        assert p.stdout == "hello\n"
        c_ip_prefix = subnet.rsplit(".", 1)[0] + "."
        assert wait_for(lambda: srv.peers) and srv.peers[0].startswith(c_ip_prefix)
    finally:
        srv.close()
    # beyond the host: the source is masqueraded to the host's address on that side
    far = HostServer("0.0.0.0", PORT + 2, prefix=outside["prefix"])
    try:
        p = cli("run", "--rm", "--network", name, "--", "nc", outside["addr"], str(PORT + 2))
        assert p.stdout == "hello\n", p.stderr
        assert wait_for(lambda: far.peers) == [outside["host"]]
    finally:
        far.close()


def test_routed_mode_without_nat(cli, net, outside):
    name, subnet, gw = net(mode="routed")
    start_httpd(cli, "r1", "--network", name)
    r1 = ip_of(cli, "r1")
    # no bridge: a /32 route to the container through its host veth
    route = subprocess.run(["ip", "route", "show", f"{r1}/32"], capture_output=True,
                           text=True).stdout
    assert "dev zv" in route
    assert wait_for(lambda: _try(http_get, f"http://{r1}/hostname")) == "r1\n"
    p = cli("run", "--rm", "--network", name, "--", "wget", "-qO-", "http://r1/hostname")
    assert p.stdout == "r1\n", p.stderr
    srv = HostServer(gw, PORT + 3)
    try:
        cli("run", "-d", "--name", "r2", "--network", name, "--", "sleep", "60", check=True)
        r2 = ip_of(cli, "r2")
        out = cli("exec", "r2", "--", "nc", gw, str(PORT + 3), check=True).stdout
        assert out == "hello\n"
        assert wait_for(lambda: srv.peers) == [r2]
    finally:
        srv.close()
    # a machine beyond the host with a route to the subnet sees the container's address
    subprocess.run([*outside["prefix"], "ip", "route", "add", subnet, "via",
                    outside["host"]], check=True)
    far = HostServer("0.0.0.0", PORT + 4, prefix=outside["prefix"])
    try:
        out = cli("exec", "r2", "--", "nc", outside["addr"], str(PORT + 4)).stdout
        assert out == "hello\n"
        assert wait_for(lambda: far.peers) == [r2]
    finally:
        far.close()
    # and reaches the container by its own address (no port publishing, no NAT)
    p = subprocess.run([*outside["prefix"], sys.executable, "-c",
                        "import urllib.request as u;print(u.urlopen("
                        f"'http://{r1}/hostname',timeout=3).read().decode(),end='')"],
                       capture_output=True, text=True)
    assert p.stdout == "r1\n", p.stderr


def test_bridge_mode_is_plain_l2(cli, net):
    name, subnet, gw = net(mode="bridge")
    start_httpd(cli, "b1", "--network", name)
    b1 = ip_of(cli, "b1")
    assert wait_for(lambda: _try(http_get, f"http://{b1}/hostname")) == "b1\n"
    rules = subprocess.run(["nft", "list", "table", "inet", "zoned"], capture_output=True,
                           text=True).stdout
    assert f"ip saddr {subnet} ip daddr != {subnet} masquerade" not in rules


def test_networks_are_isolated(cli, net):
    n1, _, _ = net()
    n2, _, gw2 = net()
    start_httpd(cli, "one", "--network", n1)
    start_httpd(cli, "two", "--network", n2)
    two = ip_of(cli, "two")
    p = cli("exec", "one", "--", "sh", "-c",
            f"wget -T 2 -qO- http://{two}/hostname || echo unreachable")
    assert "unreachable" in p.stdout and "two" not in p.stdout
    # a container on both networks reaches both: eth0 and eth1
    cli("run", "-d", "--name", "both", "--network", n1, "--network", n2, "--", "sleep", "60",
        check=True)
    dev = cli("exec", "both", "--", "cat", "/proc/net/dev", check=True).stdout
    assert "eth0" in dev and "eth1" in dev
    for target in ("one", "two"):
        out = wait_for(lambda target=target: cli("exec", "both", "--", "wget", "-qO-",
                                                 f"http://{target}/hostname").stdout)
        assert out == f"{target}\n"


def test_internal_network_has_no_way_out(cli, net, outside):
    name, subnet, gw = net(internal=True)
    far = HostServer("0.0.0.0", PORT + 5, prefix=outside["prefix"])
    try:
        p = cli("run", "--rm", "--network", name, "--", "sh", "-c",
                f"nc {outside['addr']} {PORT + 5} || echo blocked")
        assert "hello" not in p.stdout and far.peers == []
    finally:
        far.close()
    route = cli("run", "--rm", "--network", name, "--", "ip", "route", check=True).stdout
    assert "default" not in route


def test_network_none_has_only_lo(cli):
    for args in ([], ["--network", "none"]):
        p = cli("run", "--rm", *args, "--", "cat", "/proc/net/dev", check=True)
        ifaces = sorted(line.split(":")[0].strip() for line in p.stdout.splitlines()[2:])
        assert ifaces == ["lo"], ifaces


def test_network_none_does_not_import_pyroute2(cli, zoned_root, busybox):
    code = ("import sys; from zoned.cli import main; rc = main(['--root', %r, 'run', '--rm', "
            "'--', 'true']); print(rc, 'pyroute2' in sys.modules)" % zoned_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_container_network_shares_the_namespace(cli, net):
    name, _, _ = net()
    start_httpd(cli, "owner", "--network", name)
    cli("run", "-d", "--name", "guest", "--network", "container:owner", "--", "sleep", "60",
        check=True)
    ns = [cli("exec", c, "--", "readlink", "/proc/self/ns/net", check=True).stdout
          for c in ("owner", "guest")]
    assert ns[0] == ns[1] and ns[0].startswith("net:")
    assert wait_for(lambda: cli("exec", "guest", "--", "wget", "-qO-",
                                "http://127.0.0.1/hostname").stdout) == "owner\n"
    assert cli("exec", "guest", "--", "hostname").stdout.strip() == "guest"
    assert ip_of(cli, "owner") in cli("exec", "guest", "--", "cat", "/etc/hosts").stdout
    p = cli("run", "--rm", "--network", "container:ghost", "--", "true")
    assert p.returncode == 125 and "no such container" in p.stderr


def test_dns_add_host_static_ip_and_mac(cli, zoned_root, net):
    name, subnet, gw = net()
    ip = subnet.rsplit(".", 1)[0] + ".77"
    cli("run", "-d", "--name", "fixed", "--network", name, "--ip", ip, "--mac",
        "02:00:00:aa:bb:cc", "--dns", "10.213.0.53", "--add-host", "db.example:10.213.0.9",
        "--", "sleep", "60", check=True)
    assert ip_of(cli, "fixed") == ip
    assert cli("exec", "fixed", "--", "cat", "/sys/class/net/eth0/address").stdout.strip() \
        == "02:00:00:aa:bb:cc"
    assert cli("exec", "fixed", "--", "cat", "/etc/resolv.conf").stdout.startswith(
        "nameserver 10.213.0.53\n")
    assert "10.213.0.9\tdb.example" in cli("exec", "fixed", "--", "cat", "/etc/hosts").stdout
    # an address in use is one clear line, and leaves nothing
    before = host_net_snapshot(zoned_root)
    p = cli("run", "--rm", "--network", name, "--ip", ip, "--", "true")
    assert p.returncode == 125
    assert p.stderr.strip() == (f"zoned: IP address {ip} is already in use on network "
                                f"'{name}' (by container 'fixed')")
    assert host_net_snapshot(zoned_root) == before
    for bad, msg in ((["--ip", "10.9.9.9"], "is not in network"), (["--mac", "zz"], "--mac"),
                     (["-p", "80"], "invalid -p")):
        p = cli("run", "--rm", "--network", name, *bad, "--", "true")
        assert p.returncode == 125 and msg in p.stderr, p.stderr


def test_stats_and_inspect_show_network(cli, net):
    name, subnet, gw = net()
    start_httpd(cli, "busy", "--network", name)
    ip = ip_of(cli, "busy")
    assert wait_for(lambda: _try(http_get, f"http://{ip}/passwd"))
    s = json.loads(cli("stats", "--format", "json", "busy", check=True).stdout)[0]
    assert s["network"]["tx_bytes"] > 100 and s["network"]["rx_bytes"] > 50
    assert "NET RX" in cli("stats", "busy", check=True).stdout
    info = json.loads(cli("inspect", "busy", check=True).stdout)
    addr = info["network"]["addresses"][0]
    assert addr["network"] == name and addr["ifname"] == "eth0" and addr["gateway"] == gw


# -- IPAM, clean-up, gc ---------------------------------------------------------------------
def test_ipam_50_parallel_runs_get_distinct_addresses(cli, zoned_root, net):
    before = host_net_snapshot(zoned_root)
    name, subnet, gw = net()

    def one(i):
        return cli("run", "-d", "--name", f"p{i}", "--network", name, "--", "sleep", "300",
                   timeout=120)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if
                                                         r.returncode][:3]
    info = json.loads(cli("network", "inspect", name, check=True).stdout)[0]
    ips = {c: v["ip"] for c, v in info["containers"].items()}
    assert len(ips) == 50 and len(set(ips.values())) == 50
    assert gw not in ips.values()
    # what each container really has is what IPAM says
    for cid in ("p0", "p25", "p49"):
        dev = cli("exec", cid, "--", "ip", "-4", "addr", "show", "eth0", check=True).stdout
        assert f"inet {ips[cid]}/24" in dev
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: cli("rm", "-f", f"p{i}", check=True), range(50)))
    info = json.loads(cli("network", "inspect", name, check=True).stdout)[0]
    assert info["containers"] == {}
    cli("network", "rm", name, check=True)
    assert wait_for(lambda: host_net_snapshot(zoned_root) == before, 5), \
        (before, host_net_snapshot(zoned_root))
    assert not os.path.exists(os.path.join(zoned_root, ".networks"))


def test_everything_removed_leaves_nothing(cli, zoned_root, net):
    before = host_net_snapshot(zoned_root)
    n1, _, _ = net()
    n2, _, _ = net(mode="routed")
    start_httpd(cli, "x1", "--network", n1, "-p", f"{PORT + 6}:80")
    cli("run", "-d", "--name", "x2", "--network", n1, "--network", n2, "--", "sleep", "60",
        check=True)
    cli("run", "-d", "--name", "x3", "--network", "container:x1", "--", "sleep", "60",
        check=True)
    cli("run", "--rm", "--network", "zoned0", "--", "true", check=True)
    assert "table inet zoned" in nft_tables()
    cli("rm", "-f", "x3", "x2", "x1", check=True)
    for n in (n1, n2):
        assert json.loads(cli("network", "inspect", n).stdout)[0]["containers"] == {}
    cli("network", "rm", n1, n2, "zoned0", check=True)
    assert wait_for(lambda: host_net_snapshot(zoned_root) == before, 5), \
        host_net_snapshot(zoned_root)
    assert zone_state(zoned_root) == []
    if registry_empty():  # no other network on this host: zoned's table is gone too
        assert "table inet zoned" not in nft_tables()


@pytest.mark.parametrize("pause", ["ZONED_TEST_PAUSE_CREATE", "ZONED_TEST_PAUSE_ATTACH"])
def test_kill9_mid_create_then_gc(cli, zoned_root, net, pause):
    name, _, _ = net()
    before = host_net_snapshot(zoned_root)
    env = dict(os.environ, **{pause: "2"})
    p = subprocess.Popen([ZONED, "--root", zoned_root, "run", "--name", "mid", "--network",
                          name, "-p", f"{PORT + 7}:80", "--", "sleep", "1000"], env=env,
                         stderr=subprocess.PIPE, text=True)
    lease = os.path.join(zoned_root, ".networks", f"{name}.leases.json")

    def leased():
        try:
            with open(lease) as f:
                return json.load(f)["leases"]
        except (OSError, ValueError):
            return {}

    assert wait_for(lambda: leased() and os.path.exists(
        os.path.join(zoned_root, "mid", "state.json")), 10)
    if pause == "ZONED_TEST_PAUSE_ATTACH":
        assert wait_for(lambda: host_net_snapshot(zoned_root)["links"] != before["links"], 10)
    time.sleep(0.3)
    p.kill()
    p.wait(timeout=10)
    assert leased(), "the lease is on disk"
    assert f"dport {PORT + 7} " in subprocess.run(["nft", "list", "table", "inet", "zoned"],
                                     capture_output=True, text=True).stdout
    out = cli("gc", check=True).stdout
    assert "mid" in out
    assert leased() == {}
    assert f"dport {PORT + 7} " not in subprocess.run(["nft", "list", "table", "inet", "zoned"],
                                         capture_output=True, text=True).stdout
    assert wait_for(lambda: host_net_snapshot(zoned_root) == before, 5), \
        host_net_snapshot(zoned_root)
    # and the address is free again
    cli("run", "--rm", "--name", "again", "--network", name, "-p", f"{PORT + 7}:80", "--",
        "true", check=True)


def test_gc_reconciles_leases_without_containers(cli, zoned_root, net):
    name, subnet, _ = net()
    path = os.path.join(zoned_root, ".networks", f"{name}.leases.json")
    fake = subnet.rsplit(".", 1)[0] + ".200"
    with open(path, "w") as f:
        json.dump({"leases": {fake: {"cid": "ghost"}}}, f)
    assert f"lease {fake} on network {name}: container ghost is gone" in cli("gc").stdout
    with open(path) as f:
        assert json.load(f)["leases"] == {}


def test_bridge_mac_stays_put_as_containers_come_and_go(cli):
    """A bridge's MAC is its own, not its lowest port's: neighbours' ARP entries for the
    host's address on it stay right while containers start and stop."""
    cli("network", "create", "macnet", "--subnet", "10.91.7.0/24", check=True)
    bridge = json.loads(cli("network", "inspect", "macnet").stdout)[0]["bridge"]
    mac = open(f"/sys/class/net/{bridge}/address").read()
    assert open(f"/sys/class/net/{bridge}/addr_assign_type").read().strip() == "3"  # set
    for i in range(3):
        cli("run", "-d", "--name", f"m{i}", "--network", "macnet", "--", "sleep", "100",
            check=True)
        assert open(f"/sys/class/net/{bridge}/address").read() == mac
    cli("rm", "-f", "m0", "m1", "m2", check=True)
    assert open(f"/sys/class/net/{bridge}/address").read() == mac
    cli("network", "rm", "macnet", check=True)


def test_failed_network_commands_leave_no_dot_dir_and_gc_removes_one(cli):
    """A refused `network create` or `rm` takes the root's network lock and leaves
    nothing; an idle .networks dir (a crash after locking) is `zoned gc`'s to remove."""
    import os

    netdir = os.path.join(cli.root, ".networks")
    assert cli("network", "create", "bad", "--subnet", "300.1.2.0/24").returncode != 0
    assert cli("network", "rm", "nosuch").returncode != 0
    assert not os.path.exists(netdir)
    os.makedirs(netdir)
    open(os.path.join(netdir, ".lock"), "w").close()
    cli("gc", check=True)
    assert not os.path.exists(netdir)
