"""Network hardening (issue 10, items 5, 6, 7 and the subnet part of 9), tried as an attacker
and a careful user would, from outside: the real CLI, real bridges, veths and nft rules.

  5  names that end up in /etc/hosts, /etc/resolv.conf and the UTS hostname are validated
  6  -p refuses a host port a host process listens on (and a bad host address)
  7  a zone with CAP_NET_RAW cannot send as another zone (IP or MAC, ARP included), and
     cannot reach host services on 127.0.0.1; published ports on 127.0.0.1 still work
  9  network create --subnet refuses special ranges and the host's own addresses

The attacker is tests/progs/rawsend.c (static, bind-mounted into a busybox zone), run with
`zoned exec -c CAP_NET_RAW`: raw Ethernet frames, nothing the zone's routing decides.
Observers are outside the attacker: UDP listeners on the host or in the peer zone's network
namespace (entered with nsenter, by the host's python).

Subnets come from 10.93.0.0/16; bridges are named zh-br*; host ports from the pid.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import test_oci
from test_network import wait_for
from twohost import build_static

bundle = test_oci.bundle  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.skipif(shutil.which("nft") is None,
                                reason="nftables is not installed (make setup installs it)")

PORT = 30000 + (os.getpid() % 1000) * 10   # host ports PORT..PORT+9 for this run
TAG = os.getpid() % 1000
INJECTED = "evil\n6.6.6.6\tvictim\n#"


@pytest.fixture(autouse=True)
def _pool(monkeypatch):
    monkeypatch.setenv("ZONED_SUBNET_POOL", "10.93.0.0/16")




@pytest.fixture
def net(cli, zoned_root):
    """net(mode=...) -> the network's `network inspect` entry; removed at the end with
    every container of the root."""
    made = []

    def make(mode="nat"):
        name = f"zh-{len(made)}"
        args = ["network", "create", name, "--mode", mode]
        if mode != "routed":
            args += ["--bridge", f"zh-br{TAG}{len(made)}"]
        cli(*args, check=True)
        made.append(name)
        return json.loads(cli("network", "inspect", name, check=True).stdout)[0]

    yield make
    ids = cli("ps", "-a", "-q").stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    if made:
        cli("network", "rm", *made)


def rawsend() -> str:
    """tests/progs/rawsend.c, built static."""
    return build_static("rawsend")


def state(cli, cid: str) -> dict:
    return json.loads(cli("inspect", cid, check=True).stdout)["state"]


def link(cli, cid: str) -> dict:
    return json.loads(cli("inspect", cid, check=True).stdout)["network"]["addresses"][0]


def sysfs(dev: str, attr: str) -> str:
    return Path(f"/sys/class/net/{dev}/{attr}").read_text().strip()


def localnet(dev: str) -> str:
    return Path(f"/proc/sys/net/ipv4/conf/{dev}/route_localnet").read_text().strip()


class UdpListener:
    """A UDP socket at addr:port (on the host, or in the network namespace of `pid`) that
    records every datagram as "payload from-address"."""

    def __init__(self, addr: str, port: int, pid: int | None = None):
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.bind(({addr!r},{port}));print('ready',flush=True)\n"
                "while True:\n"
                "    d,a=s.recvfrom(2000);print(d.decode(errors='replace'),a[0],flush=True)\n")
        prefix = ["nsenter", f"--net=/proc/{pid}/ns/net"] if pid else []
        self.p = subprocess.Popen([*prefix, sys.executable, "-c", code],
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"
        os.set_blocking(self.p.stdout.fileno(), False)
        self.lines: list[str] = []

    def got(self) -> list[str]:
        while True:
            line = self.p.stdout.readline()
            if not line:
                return self.lines
            self.lines.append(line.strip())

    def close(self):
        self.p.kill()
        self.p.wait()


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 125, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def leftovers(cli, zoned_root: str, netname: str) -> dict:
    """What a refused run could leave: containers, state dirs, leases, veths of the root."""
    real = os.path.realpath(zoned_root)
    veths = [n for n in os.listdir("/sys/class/net")
             if Path(f"/sys/class/net/{n}/ifalias").exists()
             and Path(f"/sys/class/net/{n}/ifalias").read_text().strip().startswith("zoned:")
             and Path(f"/sys/class/net/{n}/ifalias").read_text().strip().endswith("@" + real)]
    info = json.loads(cli("network", "inspect", netname, check=True).stdout)[0]
    return {"ps": cli("ps", "-a", "-q").stdout.split(),
            "dirs": sorted(n for n in os.listdir(zoned_root) if not n.startswith(".")),
            "leases": sorted(info["containers"]), "veths": sorted(veths)}


# -- item 5: names --------------------------------------------------------------------------
def test_hostname_injection_into_neighbours_hosts_is_refused(cli, zoned_root, net):
    n = net()["name"]
    cli("run", "-d", "--name", "victim", "--network", n, "--", "sleep", "60", check=True)
    before = leftovers(cli, zoned_root, n)
    p = cli("run", "-d", "--name", "evil", "--network", n, "--hostname", INJECTED, "--",
            "sleep", "60")
    hosts = cli("exec", "victim", "--", "cat", "/etc/hosts", check=True).stdout
    assert "6.6.6.6" not in hosts and "#\n" not in hosts, hosts
    for line in hosts.splitlines():  # every line is "IP names" or a zoned section mark
        assert line.startswith(("127.0.0.1\t", "::1\t", "# zoned network ", "10.93.")), line
    one_line_error(p, "invalid --hostname", "RFC 1123")
    assert "\n6.6.6.6" not in p.stderr and "\\n6.6.6.6" in p.stderr  # shown escaped
    assert leftovers(cli, zoned_root, n) == before


@pytest.mark.parametrize("flag,value,needle", [
    ("--hostname", INJECTED, "--hostname"),
    ("--hostname", "a b", "--hostname"),
    ("--hostname", "-lead", "--hostname"),
    ("--hostname", "trail-", "--hostname"),
    ("--hostname", "under_score", "--hostname"),
    ("--hostname", "a..b", "--hostname"),
    ("--hostname", "x" * 64, "--hostname"),           # a label of 64
    ("--hostname", ".".join(["x" * 30] * 3), "--hostname"),  # 92 > the kernel's 64
    ("--hostname", "", "--hostname"),
    ("--hostname", "h\u00e9", "--hostname"),
    ("--dns", "banana", "--dns"),
    ("--dns", "1.2.3.4\nnameserver 6.6.6.6", "--dns"),
    ("--dns", "1.2.3", "--dns"),
    ("--add-host", "nohost", "--add-host"),
    ("--add-host", ":1.2.3.4", "--add-host"),
    ("--add-host", "a b:1.2.3.4", "--add-host"),
    ("--add-host", "a\tb:1.2.3.4", "--add-host"),
    ("--add-host", "a:1.2.3.4\n6.6.6.6 victim", "--add-host"),
    ("--add-host", "a:banana", "--add-host"),
    ("--add-host", "-a:1.2.3.4", "--add-host"),
    ("--add-host", "a;;b:1.2.3.4", "--add-host"),
])
def test_bad_names_are_refused_and_leave_nothing(cli, zoned_root, net, flag, value, needle):
    n = net()["name"]
    before = leftovers(cli, zoned_root, n)
    p = cli("run", "-d", "--name", "bad", "--network", n, f"{flag}={value}", "--", "sleep",
            "60")
    one_line_error(p, f"invalid {needle}")
    assert leftovers(cli, zoned_root, n) == before


def test_good_names_still_work(cli, net):
    nw = net()
    cli("run", "-d", "--name", "ok", "--network", nw["name"], "--hostname",
        "web-1.example.org", "--dns", "10.93.0.53", "--dns", "2001:db8::53",
        "--add-host", "db;db.example:10.93.9.9", "--add-host", "gw:host-gateway",
        "--add-host", "six:[2001:db8::1]", "--", "sleep", "60", check=True)
    assert cli("exec", "ok", "--", "hostname", check=True).stdout.strip() == \
        "web-1.example.org"
    hosts = cli("exec", "ok", "--", "cat", "/etc/hosts", check=True).stdout
    assert "10.93.9.9\tdb db.example" in hosts
    assert f"{nw['gateway']}\tgw" in hosts and "2001:db8::1\tsix" in hosts
    assert "web-1.example.org ok" in hosts
    resolv = cli("exec", "ok", "--", "cat", "/etc/resolv.conf", check=True).stdout
    assert resolv.startswith("nameserver 10.93.0.53\nnameserver 2001:db8::53\n")
    # a container name that is no hostname (underscore, a dot, 64 long) gets one made of it
    long = "svc_" + "x" * 58 + ".y"
    cli("run", "-d", "--name", long, "--network", nw["name"], "--", "sleep", "60",
        check=True)
    hn = cli("exec", long, "--", "hostname", check=True).stdout.strip()
    assert hn.startswith("svc-xxx") and len(hn) <= 64 and "_" not in hn, hn
    hosts = cli("exec", "ok", "--", "cat", "/etc/hosts", check=True).stdout
    assert f"{hn} {long}" in hosts


def test_oci_config_hostname_is_validated(cli, bundle):
    bundle(["hostname"], hostname=INJECTED)
    p = cli("create", "--bundle", str(bundle.path), "hn1", files=True)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid config.json: hostname" in lines[0], p.stderr
    assert cli("ps", "-a", "-q").stdout.split() == []
    bundle(["hostname"], hostname="ok-host")
    p = cli("run", "--bundle", str(bundle.path), "hn2", files=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok-host", p.stderr


# -- item 6: published ports -------------------------------------------------------------------
def _listen(addr: str, port: int, kind=socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(4)
    return s


def test_publish_refuses_a_port_a_host_process_uses(cli, zoned_root, net):
    n = net()["name"]
    p_lo, p_any, p_udp, free = PORT, PORT + 1, PORT + 2, PORT + 3
    socks = [_listen("127.0.0.1", p_lo), _listen("0.0.0.0", p_any),
             _listen("0.0.0.0", p_udp, socket.SOCK_DGRAM)]
    try:
        before = leftovers(cli, zoned_root, n)
        for spec, needle in [
                (f"{p_lo}:80", f"host port {p_lo}/tcp is already in use"),
                (f"{p_any}:80", f"host port {p_any}/tcp is already in use"),
                (f"127.0.0.1:{p_any}:80", f"host port {p_any}/tcp on 127.0.0.1 is already"),
                (f"127.0.0.1:{p_lo}:80", f"host port {p_lo}/tcp on 127.0.0.1 is already"),
                (f"{p_udp}:53/udp", f"host port {p_udp}/udp is already in use"),
                ("999.1.1.1:8080:80", "999.1.1.1 is not an IPv4 address"),
                ("224.0.0.1:8080:80", "not a unicast address"),
                (f"192.0.2.254:{free}:80", "192.0.2.254 is not an address of this host")]:
            p = cli("run", "-d", "--name", "pub", "--network", n, "-p", spec, "--",
                    "sleep", "60")
            one_line_error(p, f'invalid -p "{spec}"', needle)
            assert leftovers(cli, zoned_root, n) == before
        # the same host port twice in one zone, and by two zones
        p = cli("run", "-d", "--name", "pub", "--network", n, "-p", f"{free}:80", "-p",
                f"127.0.0.1:{free}:81", "--", "sleep", "60")
        one_line_error(p, f'invalid -p "127.0.0.1:{free}:81"', "published twice")
        # a free port works end to end, from the host, also on 127.0.0.1
        cli("run", "-d", "--name", "web", "--network", n, "-p", f"{free}:80", "--",
            "httpd", "-f", "-p", "80", "-h", "/etc", check=True)
        for host in ("127.0.0.1", "localhost"):
            body = wait_for(lambda host=host: _get(f"http://{host}:{free}/hostname"))
            assert body == "web\n"
        p = cli("run", "-d", "--name", "pub", "--network", n, "-p", f"{free}:80", "--",
                "sleep", "60")
        one_line_error(p, f'invalid -p "{free}:80"', "already published by container 'web'")
        # a specific host address leaves the port free on the others
        cli("run", "-d", "--name", "web2", "--network", n, "-p",
            f"127.0.0.1:{PORT + 4}:80", "--", "httpd", "-f", "-p", "80", "-h", "/etc",
            check=True)
        assert wait_for(lambda: _get(f"http://127.0.0.1:{PORT + 4}/hostname")) == "web2\n"
        # an explicit 0.0.0.0 means every address (it used to match no packet at all)
        cli("run", "-d", "--name", "web3", "--network", n, "-p", f"0.0.0.0:{PORT + 5}:80",
            "--", "httpd", "-f", "-p", "80", "-h", "/etc", check=True)
        assert wait_for(lambda: _get(f"http://127.0.0.1:{PORT + 5}/hostname")) == "web3\n"
    finally:
        for s in socks:
            s.close()


def test_port_and_inspect_show_the_address_a_port_is_published_on(cli):
    """-p 127.0.0.1:P:80 publishes on loopback only (the nft rule matches 127.0.0.1), but
    `zoned port` and `inspect` said 0.0.0.0:P, as if the port were open on every address."""
    name, lo, anyp = "pf-net", PORT + 4, PORT + 5
    cli("network", "create", name, "--subnet", "10.234.0.0/24", "--bridge", f"pf-br{TAG}",
        check=True)
    try:
        cli("run", "-d", "--name", "pf-lo", "--network", name, "-p", f"127.0.0.1:{lo}:80",
            "-p", f"{anyp}:81", "--", "httpd", "-f", "-p", "80", "-h", "/etc", check=True)
        assert cli("port", "pf-lo").stdout.splitlines() == [
            f"80/tcp -> 127.0.0.1:{lo}", f"81/tcp -> 0.0.0.0:{anyp}"]
        assert cli("port", "pf-lo", "80/tcp").stdout == f"127.0.0.1:{lo}\n"
        info = json.loads(cli("inspect", "--format", "json", "pf-lo", check=True).stdout)
        assert info["NetworkSettings"]["Ports"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(lo)}],
            "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(anyp)}]}
        text = cli("inspect", "--format", "summary", "pf-lo", check=True).stdout
        assert f"80/tcp -> 127.0.0.1:{lo}" in text and f"81/tcp -> 0.0.0.0:{anyp}" in text
        assert wait_for(lambda: _get(f"http://127.0.0.1:{lo}/hostname")) == "pf-lo\n"
    finally:
        cli("rm", "-f", "pf-lo")
        cli("network", "rm", name)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.read().decode()
    except OSError:
        return None


# -- item 7: anti-spoofing and loopback -----------------------------------------------------
def _attacker(cli, netname: str, *extra: str, name: str = "mallory") -> dict:
    cli("run", "-d", "--name", name, "--network", netname, "-v", f"{rawsend()}:/rawsend:ro",
        *extra, "--", "sleep", "120", check=True)
    return link(cli, name)


def _send(cli, name: str, *args: str) -> None:
    cli("exec", "-c", "CAP_NET_RAW", name, "--", "/rawsend", "eth0", *args, check=True)


def _gateway_mac(nw: dict, attacker: dict) -> str:
    return sysfs(nw["bridge"] or attacker["host_if"], "address")


@pytest.mark.parametrize("mode", ["nat", "bridge", "routed"])
def test_spoofed_source_ip_and_mac_do_not_reach_the_host(cli, net, mode):
    nw = net(mode)
    m = _attacker(cli, nw["name"])
    cli("run", "-d", "--name", "alice", "--network", nw["name"], "--", "sleep", "120",
        check=True)
    alice = link(cli, "alice")
    gwmac = _gateway_mac(nw, m)
    lst = UdpListener(nw["gateway"], PORT + 5)
    try:
        _send(cli, "mallory", "udp", gwmac, m["mac"], m["ip"], nw["gateway"], str(PORT + 5),
              "own")
        assert wait_for(lambda: lst.got(), 3), "the attacker's own frames arrive (control)"
        _send(cli, "mallory", "udp", gwmac, m["mac"], alice["ip"], nw["gateway"],
              str(PORT + 5), "spoofed-ip")
        _send(cli, "mallory", "udp", gwmac, alice["mac"], m["ip"], nw["gateway"],
              str(PORT + 5), "spoofed-mac")
        _send(cli, "mallory", "udp", gwmac, "02:12:34:56:78:9a", alice["ip"], nw["gateway"],
              str(PORT + 5), "spoofed-both")
        _send(cli, "mallory", "udp", gwmac, m["mac"], m["ip"], nw["gateway"], str(PORT + 5),
              "own-again")
        assert wait_for(lambda: any(x.startswith("own-again") for x in lst.got()), 3)
        got = lst.got()
        assert all(x == f"own {m['ip']}" or x == f"own-again {m['ip']}" for x in got), got
    finally:
        lst.close()


def _attach_as_nobody(tap: str) -> int:
    """0 if an unprivileged process holding a /dev/net/tun fd (opened by root here: the
    device is 0666 on most hosts) attaches to `tap` with TUNSETIFF, else the errno."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        err = 0
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", tap.encode(), 0x1002))  # TAP|NO_PI
        except OSError as e:
            err = e.errno
        os.write(w, b"%d" % err)
        os._exit(0)
    os.close(w)
    os.close(fd)
    got = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    return int(got)


def test_no_unprivileged_process_attaches_to_a_vms_tap():
    """A VM's tap is root's (IFF owner 0): a tap with no owner is anyone's to attach to,
    who then sends and receives as the VM wherever QEMU is not attached. The control, a
    tap made without an owner, shows the attack works on this kernel."""
    import errno

    from pyroute2 import IPRoute

    from zoned.network.netlink import Netlink

    tap, bare = f"zh-tap{TAG}", f"zh-bare{TAG}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=bare, kind="tuntap", mode="tap")
    try:
        with Netlink() as nl:
            nl.create_tap(tap, alias="zh-test")
        with open(f"/sys/class/net/{tap}/owner") as f:
            assert f.read().strip() == "0"
        if _attach_as_nobody(bare) != 0:
            pytest.skip("this kernel refuses an owner-less tap to nobody too")
        assert _attach_as_nobody(tap) == errno.EPERM
    finally:
        with Netlink() as nl:
            nl.delete_link(tap, "zh-test")
            nl.delete_link(bare)


@pytest.mark.parametrize("mode", ["nat", "bridge"])
def test_spoofed_frames_and_arp_do_not_reach_a_peer_zone(cli, net, mode):
    nw = net(mode)
    m = _attacker(cli, nw["name"])
    cli("run", "-d", "--name", "alice", "--network", nw["name"], "--", "sleep", "120",
        check=True)
    cli("run", "-d", "--name", "bob", "--network", nw["name"], "--", "sleep", "120",
        check=True)
    alice, bob = link(cli, "alice"), link(cli, "bob")
    bob_pid = state(cli, "bob")["pid"]
    lst = UdpListener("0.0.0.0", 7000, pid=bob_pid)
    try:
        _send(cli, "mallory", "udp", bob["mac"], m["mac"], m["ip"], bob["ip"], "7000", "own")
        assert wait_for(lambda: lst.got(), 3), "the attacker's own frames arrive (control)"
        _send(cli, "mallory", "udp", bob["mac"], m["mac"], alice["ip"], bob["ip"], "7000",
              "as-alice")
        _send(cli, "mallory", "udp", bob["mac"], alice["mac"], m["ip"], bob["ip"], "7000",
              "alice-mac")
        _send(cli, "mallory", "udp", bob["mac"], m["mac"], nw["gateway"], bob["ip"], "7000",
              "as-gateway")
        _send(cli, "mallory", "udp", bob["mac"], m["mac"], m["ip"], bob["ip"], "7000",
              "own-again")
        assert wait_for(lambda: any(x.startswith("own-again") for x in lst.got()), 3)
        assert set(lst.got()) == {f"own {m['ip']}", f"own-again {m['ip']}"}, lst.got()
    finally:
        lst.close()
    # ARP: "the gateway is at mallory's MAC", "alice is at mallory's MAC" (to bob)
    _send(cli, "mallory", "arp", bob["mac"], m["mac"], nw["gateway"], bob["ip"])
    _send(cli, "mallory", "arp", bob["mac"], m["mac"], alice["ip"], bob["ip"])
    _send(cli, "mallory", "arp", bob["mac"], m["mac"], m["ip"], bob["ip"])  # control
    neigh = lambda: subprocess.run(  # noqa: E731
        ["nsenter", f"--net=/proc/{bob_pid}/ns/net", "ip", "neigh", "show"],
        capture_output=True, text=True).stdout
    wait_for(lambda: m["ip"] in neigh() and None, 1)
    table = neigh()
    for line in table.splitlines():
        if m["mac"] in line:
            assert line.startswith(m["ip"] + " "), table


@pytest.mark.parametrize("mode", ["nat", "routed"])
def test_zone_cannot_reach_host_loopback_services(cli, net, mode):
    nw = net(mode)
    # a zone that publishes on 127.0.0.1: route_localnet must be on for this to work
    cli("run", "-d", "--name", "web", "--network", nw["name"], "-p",
        f"127.0.0.1:{PORT + 6}:80", "--", "httpd", "-f", "-p", "80", "-h", "/etc", check=True)
    # the attacker publishes a port on 127.0.0.1 too: in routed mode that turns on
    # route_localnet on its own veth
    m = _attacker(cli, nw["name"], "-p", f"127.0.0.1:{PORT + 7}:80")
    assert wait_for(lambda: _get(f"http://127.0.0.1:{PORT + 6}/hostname")) == "web\n"
    gwmac = _gateway_mac(nw, m)
    # so the kernel alone would take its packets to 127.0.0.0/8: zoned's rules must not
    assert localnet(nw["bridge"] or m["host_if"]) == "1"
    secret = UdpListener("127.0.0.1", PORT + 8)
    control = UdpListener(nw["gateway"], PORT + 9)
    try:
        _send(cli, "mallory", "udp", gwmac, m["mac"], m["ip"], "127.0.0.1", str(PORT + 8),
              "to-loopback")
        _send(cli, "mallory", "udp", gwmac, m["mac"], m["ip"], "127.0.0.2", str(PORT + 8),
              "to-loopback2")
        _send(cli, "mallory", "udp", gwmac, m["mac"], m["ip"], nw["gateway"], str(PORT + 9),
              "control")
        assert wait_for(lambda: control.got(), 3), "the control frame arrives"
        time.sleep(0.3)
        assert secret.got() == []
    finally:
        secret.close()
        control.close()
    # the published port on 127.0.0.1 still works, from the host
    assert _get(f"http://127.0.0.1:{PORT + 6}/hostname") == "web\n"


def test_route_localnet_only_where_a_loopback_port_is_published(cli, net):
    a, b = net(), net()
    assert localnet(a["bridge"]) == "0" and localnet(b["bridge"]) == "0"
    cli("run", "-d", "--name", "lo-pub", "--network", a["name"], "-p",
        f"127.0.0.1:{PORT}:80", "--", "sleep", "60", check=True)
    # a port on a host address other than loopback needs no route_localnet
    cli("run", "-d", "--name", "gw-pub", "--network", b["name"], "-p",
        f"{b['gateway']}:{PORT + 1}:80", "--", "sleep", "60", check=True)
    assert localnet(a["bridge"]) == "1"
    assert localnet(b["bridge"]) == "0"
    cli("rm", "-f", "lo-pub", check=True)
    assert localnet(a["bridge"]) == "0"


def _nft(family: str) -> str:
    return subprocess.run(["nft", "list", "table", family, "zoned"], capture_output=True,
                          text=True).stdout


def test_guards_go_with_the_zone_and_gc_removes_leftovers(cli, zoned_root, net):
    nw = net()
    cli("run", "-d", "--name", "g1", "--network", nw["name"], "--", "sleep", "60",
        check=True)
    cli("run", "-d", "--name", "g2", "--network", nw["name"], "--", "sleep", "60",
        check=True)
    v1, v2 = link(cli, "g1")["host_if"], link(cli, "g2")["host_if"]
    assert f"g-{v1}" in _nft("bridge") and f"g-{v2}" in _nft("bridge")
    cli("rm", "-f", "g1", check=True)
    assert f"g-{v1}" not in _nft("bridge") and f"g-{v2}" in _nft("bridge")
    # g2 vanishes behind zoned's back (its process killed, its state dir gone): gc finds
    # the guard in the rules registry and removes it
    pid = state(cli, "g2")["pid"]
    os.kill(pid, 9)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5)
    subprocess.run(["umount", "-R", "-l", os.path.join(zoned_root, "g2", "rootfs")],
                   capture_output=True)
    shutil.rmtree(os.path.join(zoned_root, "g2"), ignore_errors=True)
    out = cli("gc", check=True).stdout
    assert "anti-spoofing rules of container g2: it is gone" in out, out
    assert f"g-{v2}" not in _nft("bridge")


# -- item 9: subnets ---------------------------------------------------------------------------
@pytest.mark.parametrize("subnet,what", [
    ("127.0.0.0/24", "loopback"), ("127.5.0.0/16", "loopback"),
    ("224.0.0.0/24", "multicast"), ("239.1.0.0/16", "multicast"),
    ("169.254.0.0/24", "link-local"), ("0.0.0.0/24", "unspecified"),
    ("240.0.0.0/24", "reserved"), ("255.255.255.0/24", "reserved"),
    ("0.0.0.0/0", "unspecified"),
])
def test_network_create_refuses_special_subnets(cli, zoned_root, subnet, what):
    p = cli("network", "create", "zh-bad", "--subnet", subnet)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid --subnet" in lines[0] and what in lines[0], p.stderr
    assert not os.path.exists(os.path.join(zoned_root, ".networks"))


def test_network_create_refuses_a_subnet_holding_a_host_address(cli, zoned_root):
    dev = f"zh-dum{TAG}"
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"],
                   check=True)
    try:
        # a /32: no route in the main table, only the address
        subprocess.run(["ip", "addr", "add", "10.93.250.5/32", "dev", dev], check=True)
        p = cli("network", "create", "zh-bad", "--subnet", "10.93.250.0/24")
        assert p.returncode != 0
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "--subnet 10.93.250.0/24" in lines[0] \
            and "10.93.250.5" in lines[0], p.stderr
    finally:
        subprocess.run(["ip", "link", "del", dev], check=True)
