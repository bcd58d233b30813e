"""The network package's pure logic, without root and without touching the host: `-p`
parsing into PortMapping, the typed model's JSON (which must stay what older zoned versions
wrote and read), nft rendering, IPAM against a temp dir, the hosts-file sync, name checks,
restore rebuilding a set-up from stored values, and that `zoned run` without --network does
not import the package. The end-to-end tests are tests/test_network.py and friends.

(tests/conftest.py skips every test file for non-root today; nothing here needs root.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoned.errors import ConfigError, ZonedError
from zoned.network import nft
from zoned.network.etcfiles import sync_hosts
from zoned.network.ipam import Leases
from zoned.network.model import Attachment, Lease, Network, NetworkState, PortMapping
from zoned.network.ports import check_publish_twice, parse_publish

pytestmark = pytest.mark.unprivileged  # pure logic: runs without root


# -- -p parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, want", [
    ("8080:80", PortMapping(host_port=8080, port=80)),
    ("8080:80/tcp", PortMapping(host_port=8080, port=80)),
    ("53:53/udp", PortMapping(host_port=53, port=53, proto="udp")),
    ("127.0.0.1:8080:80", PortMapping(host_port=8080, port=80, host_ip="127.0.0.1")),
    ("0.0.0.0:8080:80", PortMapping(host_port=8080, port=80)),   # every address
    (" 1:65535 ", PortMapping(host_port=1, port=65535)),
])
def test_parse_publish(value, want):
    p = parse_publish(value)
    assert p == want
    assert p.spec == value  # kept for error messages, not compared
    assert p.ip is None


@pytest.mark.parametrize("value, why", [
    ("80", "expected [HOSTIP:]HOSTPORT:CTRPORT"),
    ("8080:80/sctp", "expected [HOSTIP:]HOSTPORT:CTRPORT"),
    ("0:80", "ports are 1..65535"),
    ("8080:65536", "ports are 1..65535"),
    ("300.1.1.1:80:80", "is not an IPv4 address"),
    ("224.0.0.1:80:80", "is not a unicast address"),
    ("1:2\n3:4", "expected"),
])
def test_parse_publish_refuses(value, why):
    with pytest.raises(ConfigError) as e:
        parse_publish(value)
    msg = str(e.value)
    assert msg.startswith("invalid -p ") and why in msg and "\n" not in msg


def test_publish_twice():
    check_publish_twice([parse_publish("80:80"), parse_publish("80:80/udp")])
    with pytest.raises(ConfigError, match=r'-p "127.0.0.1:80:81": host port 80/tcp is '
                                          r'published twice \(also by -p "80:80"\)'):
        check_publish_twice([parse_publish("80:80"), parse_publish("127.0.0.1:80:81")])


def test_port_json_is_what_older_zoned_wrote():
    """The registry fragments and state.json hold ports as these dicts: unchanged keys,
    host_ip only when given, ip once the zone has an address."""
    p = parse_publish("127.0.0.1:8080:80").to("10.9.0.2")
    assert p.to_dict() == {"proto": "tcp", "host_port": 8080, "port": 80,
                           "host_ip": "127.0.0.1", "ip": "10.9.0.2"}
    assert parse_publish("53:53/udp").to_dict() == {"proto": "udp", "host_port": 53,
                                                    "port": 53}
    assert PortMapping.from_dict(p.to_dict()) == p
    assert PortMapping.from_dict(p.to_dict()).shown() == "127.0.0.1:8080:80/tcp"


@pytest.mark.parametrize("d", [
    {"proto": "icmp", "host_port": 1, "port": 1},
    {"proto": "tcp", "host_port": 0, "port": 1},
    {"proto": "tcp", "host_port": "80", "port": 1},
    {"proto": "tcp", "host_port": 80, "port": 1, "host_ip": "not-an-ip"},
    {"proto": "tcp", "host_port": 80, "port": 1, "ip": "10.0.0.1\n"},
])
def test_stored_port_checked_on_read(d):
    """A checkpoint from another host is not trusted to hold a sane port."""
    with pytest.raises(ConfigError, match="invalid published port"):
        PortMapping.from_dict(d)


def test_localnet():
    assert parse_publish("80:80").localnet
    assert parse_publish("127.0.0.2:80:80").localnet
    assert not parse_publish("192.0.2.1:80:80").localnet


# -- the state.json entry -------------------------------------------------------------------
OLD_LINK = {"network": "web", "mode": "nat", "bridge": "zbr-web", "ifname": "eth0",
            "host_if": "zv0123456789a0", "ip": "10.9.0.2", "prefixlen": 24,
            "gateway": "10.9.0.1", "mac": "02:7a:0a:09:00:02", "internal": False,
            "mtu": None, "key": "zbr-web", "default_route": True}
OLD_STATE = {"mode": "veth", "root": "/run/zoned", "networks": [OLD_LINK],
             "files": {"hosts": "/run/zoned/a/hosts"}, "dns": ["192.0.2.53"],
             "add_hosts": ["db:192.0.2.7", "gw:host-gateway"],
             "ports": [{"proto": "tcp", "host_port": 8080, "port": 80, "ip": "10.9.0.2"},
                       {"proto": "udp", "host_port": 53, "port": 53,
                        "host_ip": "127.0.0.1", "ip": "10.9.0.2"}],
             "ports_network": "zbr-web"}


def test_network_state_round_trip():
    """What an older zoned wrote into state.json (and a checkpoint's metadata) reads back
    into the typed model and is written out again byte for byte."""
    s = NetworkState.from_dict(json.loads(json.dumps(OLD_STATE)))
    assert s.networks[0] == Attachment.from_dict(OLD_LINK)
    assert s.ports[1] == PortMapping(host_port=53, port=53, proto="udp",
                                     host_ip="127.0.0.1", ip="10.9.0.2")
    assert json.dumps(s.to_dict()) == json.dumps(OLD_STATE)
    joined = {"mode": "container", "container": "api", "pid": 42, "files": {}}
    assert NetworkState.from_dict(joined).to_dict() == joined
    assert NetworkState.from_dict(None) is None
    no_ports = dict(OLD_STATE)
    del no_ports["ports"], no_ports["ports_network"]
    assert NetworkState.from_dict(no_ports).to_dict() == no_ports


def test_attachment_of_an_older_zoned():
    """Links described before `key` and `default_route` existed."""
    old = {k: v for k, v in OLD_LINK.items() if k not in ("key", "default_route")}
    a = Attachment.from_dict(old)
    assert a.key is None and a.default_route is False


def test_request_for_restore_keeps_every_value():
    second = dict(OLD_LINK, network="lab", ifname="eth1", ip="10.8.0.5",
                  mac="02:00:00:00:00:09", default_route=False)
    s = NetworkState.from_dict(dict(OLD_STATE, networks=[OLD_LINK, second]))
    req = s.request("web-1")
    assert req.networks == ["web", "lab"]
    assert req.ips == ["10.9.0.2", "10.8.0.5"]
    assert req.macs == ["02:7a:0a:09:00:02", "02:00:00:00:00:09"]
    assert req.ports == [parse_publish("8080:80"), parse_publish("127.0.0.1:53:53/udp")]
    assert all(p.ip is None for p in req.ports)  # the new lease decides
    assert req.dns == ["192.0.2.53"] and req.add_hosts == OLD_STATE["add_hosts"]
    assert req.name == "web-1" and req.hostname is None
    with pytest.raises(ConfigError, match="cannot recreate a 'container' network"):
        NetworkState.from_dict({"mode": "container", "container": "x"}).request("y")


def _write_network(root, name="web", subnet="10.9.0.0/24", gateway="10.9.0.1"):
    d = root / ".networks"
    d.mkdir(exist_ok=True)
    net = {"name": name, "id": "x", "mode": "nat", "subnet": subnet, "gateway": gateway,
           "prefixlen": int(subnet.split("/")[1]), "bridge": f"zbr-{name}",
           "key": f"zbr-{name}", "internal": False, "mtu": None, "root": str(root)}
    (d / f"{name}.json").write_text(json.dumps(net))
    return net


def test_setup_for_restore_parses_no_flag(tmp_path, monkeypatch):
    """Restore and migration rebuild the set-up from the stored values: no -p string is
    made or parsed again (issue 11)."""
    from zoned.network import attach, ports

    _write_network(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("-p parsed again")

    monkeypatch.setattr(ports, "parse_publish", refuse)
    monkeypatch.setattr(attach, "parse_publish", refuse)
    ns = attach.setup_for_restore(str(tmp_path), "web-1", OLD_STATE, "web-1")
    assert ns.ports == [PortMapping(host_port=8080, port=80),
                        PortMapping(host_port=53, port=53, proto="udp", host_ip="127.0.0.1")]
    assert ns.ips == ["10.9.0.2"] and ns.macs == ["02:7a:0a:09:00:02"]
    assert ns.hostname == "web-1" and ns.dns == ["192.0.2.53"]
    assert ns.add_hosts == [("192.0.2.7", "db"), ("10.9.0.1", "gw")]  # host-gateway here


def test_network_definition_typed(tmp_path):
    """A network's settings file (as `zoned network create` writes it) read typed, and
    its registry fragment as before."""
    from zoned.network import definitions

    on_disk = _write_network(tmp_path)
    net = definitions.network(str(tmp_path), "web")
    assert net == Network(name="web", mode="nat", subnet="10.9.0.0/24", gateway="10.9.0.1",
                          prefixlen=24, key="zbr-web", bridge="zbr-web", root=str(tmp_path))
    assert definitions.fragment_of(net) == {
        "key": "zbr-web", "root": str(tmp_path), "name": "web", "mode": "nat",
        "subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "bridge": "zbr-web",
        "internal": False, "ports": {}}
    assert definitions.load(str(tmp_path), "web") == on_disk


def test_setup_from_flags(tmp_path):
    from zoned.network import attach
    from zoned.oci.spec import RunOptions

    _write_network(tmp_path)
    opts = RunOptions(["true"], name="a", network=["web"], publish=["8080:80", "53:53/udp"],
                      mac="02:AA:00:00:00:01", ip="10.9.0.9")
    ns = attach.setup(str(tmp_path), "a", opts)
    assert ns.ports == [PortMapping(8080, 80), PortMapping(53, 53, "udp")]
    assert ns.macs == ["02:aa:00:00:00:01"] and ns.ips == ["10.9.0.9"]
    for bad, why in ((dict(mac="03:00:00:00:00:01"), "a multicast address"),
                     (dict(mac="zz"), "expected six hex octets"),
                     (dict(publish=["80:80", "80:81"]), "published twice"),
                     (dict(network=["web", "none"]), "cannot be combined"),
                     (dict(network=["web", "web"]), "given twice"),
                     (dict(network=["container:x"], publish=["80:80"]), "cannot be used"),
                     (dict(dns=["nope"]), "invalid --dns")):
        kw = dict(name="a", network=["web"])
        kw.update(bad)
        with pytest.raises(ConfigError, match=why):
            attach.setup(str(tmp_path), "a", RunOptions(["true"], **kw))


# -- nft rendering --------------------------------------------------------------------------
FRAGS = [
    {"key": "zbr-web", "root": "/run/zoned", "name": "web", "mode": "nat",
     "subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "bridge": "zbr-web", "internal": False,
     "ports": {"a": [PortMapping(8080, 80, ip="10.9.0.2").to_dict(),
                     PortMapping(5353, 53, "udp", host_ip="192.0.2.1", ip="10.9.0.2").to_dict()]},
     "guards": {"a": [{"host_if": "zva0", "ip": "10.9.0.2", "mac": "02:7a:0a:09:00:02"}]}},
    {"key": "zcore", "root": "/run/zoned", "name": "core", "mode": "routed",
     "subnet": "10.8.0.0/24", "gateway": "10.8.0.1", "bridge": None, "internal": False,
     "ports": {},
     "guards": {"b": [{"host_if": "zvb0", "ip": "10.8.0.5", "mac": "02:7a:0a:08:00:05"}]}},
    {"key": "zbr-vault", "root": "/run/zoned", "name": "vault", "mode": "nat",
     "subnet": "10.7.0.0/24", "gateway": "10.7.0.1", "bridge": "zbr-vault",
     "internal": True, "ports": {}},
]


def rules(cmds, family, table, chain):
    return [c["add"]["rule"]["expr"] for c in cmds
            if "rule" in c.get("add", {}) and c["add"]["rule"]["family"] == family
            and c["add"]["rule"]["table"] == table and c["add"]["rule"]["chain"] == chain]


def ip(field, op, right):
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}},
                      "right": right}}


def prefix(cidr):
    a, n = cidr.split("/")
    return {"prefix": {"addr": a, "len": int(n)}}


def test_render_nat_ports_and_isolation():
    cmds = nft.render(FRAGS)
    json.dumps(cmds)  # what `nft -j -f -` gets
    # the table is replaced in one transaction: add (so delete cannot fail), delete, add
    assert cmds[:3] == [{"add": {"table": {"family": "inet", "name": "zoned"}}},
                        {"delete": {"table": {"family": "inet", "name": "zoned"}}},
                        {"add": {"table": {"family": "inet", "name": "zoned"}}}]
    subnets = next(c["add"]["set"] for c in cmds if "set" in c.get("add", {}))
    assert subnets["elem"] == [prefix("10.7.0.0/24"), prefix("10.8.0.0/24"),
                               prefix("10.9.0.0/24")]
    pre = rules(cmds, "inet", "zoned", "prerouting")
    local = {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                       "right": "local"}}
    tcp = [local, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                               "field": "dport"}},
                             "right": 8080}},
           {"dnat": {"family": "ip", "addr": "10.9.0.2", "port": 80}}]
    udp = [ip("daddr", "==", "192.0.2.1"),
           {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                      "right": 5353}},
           {"dnat": {"family": "ip", "addr": "10.9.0.2", "port": 53}}]
    assert pre == [tcp, udp]
    assert rules(cmds, "inet", "zoned", "output") == [tcp, udp]
    fwd = rules(cmds, "inet", "zoned", "forward")
    vault = prefix("10.7.0.0/24")
    assert [ip("saddr", "==", vault), {"drop": None}] in fwd        # internal: nothing out
    assert [ip("daddr", "==", vault), {"drop": None}] in fwd        # nor in
    assert [ip("saddr", "==", "@subnets"), ip("daddr", "==", "@subnets"),
            {"drop": None}] in fwd                                    # networks isolated
    post = rules(cmds, "inet", "zoned", "postrouting")
    web = prefix("10.9.0.0/24")
    assert [ip("saddr", "==", web), ip("daddr", "!=", web), {"masquerade": None}] in post
    assert not any(r[0] == ip("saddr", "==", vault) and r[-1] == {"masquerade": None}
                   and len(r) == 3 for r in post)                    # internal: no NAT out
    assert not any(r[0] == ip("saddr", "==", prefix("10.8.0.0/24")) and len(r) == 3
                   and r[1] == ip("daddr", "!=", prefix("10.8.0.0/24"))
                   for r in post)                                     # routed: no NAT


def test_render_guards():
    cmds = nft.render(FRAGS)
    # bridged port zva0: anti-spoofing in `bridge zoned`, with ARP
    g = rules(cmds, "bridge", "zoned", "g-zva0")
    ether = {"payload": {"protocol": "ether", "field": "saddr"}}
    assert g[0] == [{"match": {"op": "!=", "left": ether, "right": "02:7a:0a:09:00:02"}},
                    {"drop": None}]
    assert g[1][1]["match"]["right"] == {"set": ["0.0.0.0", "10.9.0.2"]}
    assert g[2:] == [[ip("saddr", "==", "10.9.0.2"), {"accept": None}], [{"drop": None}]]
    # a named map, so that a zone's guard is one element added (nft.add_guard_commands)
    vmap = rules(cmds, "bridge", "zoned", "prerouting")[0][0]["vmap"]
    assert vmap["data"] == "@guards"
    assert guard_map(cmds, "bridge", "zoned") == [["zva0", {"jump": {"target": "g-zva0"}}]]
    # routed port zvb0: in `inet zoned-guard`, no ARP rule
    r = rules(cmds, "inet", "zoned-guard", "g-zvb0")
    assert len(r) == 3 and r[1] == [ip("saddr", "==", "10.8.0.5"), {"accept": None}]
    guard = rules(cmds, "inet", "zoned-guard", "guard")
    assert guard[0] == [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                   "right": "@zone_ifs"}},
                        ip("daddr", "==", prefix("127.0.0.0/8")), {"drop": None}]
    sets = [c["add"]["set"] for c in cmds if "set" in c.get("add", {})
            and c["add"]["set"]["table"] == "zoned-guard"]
    assert sets[0]["elem"] == ["zbr-vault", "zbr-web", "zvb0"]
    assert guard[1][0]["vmap"]["data"] == "@guards"
    assert guard_map(cmds, "inet", "zoned-guard") == [["zvb0", {"jump": {"target": "g-zvb0"}}]]


def guard_map(cmds: list[dict], family: str, table: str) -> list:
    return [c["add"]["map"] for c in cmds if "map" in c.get("add", {})
            and c["add"]["map"]["family"] == family
            and c["add"]["map"]["table"] == table][0].get("elem", [])


def test_render_nothing_removes_every_table():
    cmds = nft.render([])
    deleted = [(c["delete"]["table"]["family"], c["delete"]["table"]["name"])
               for c in cmds if "delete" in c]
    assert deleted == [("inet", "zoned"), ("inet", "zoned-guard"), ("bridge", "zoned")]
    assert not any("rule" in c.get("add", {}) or "chain" in c.get("add", {}) for c in cmds)


def test_localnet_devices():
    assert nft.localnet_devices(FRAGS) == {"zbr-web": True, "zvb0": False, "zbr-vault": False}
    frags = json.loads(json.dumps(FRAGS))
    frags[0]["ports"]["a"] = [PortMapping(1, 1, host_ip="192.0.2.1", ip="10.9.0.2").to_dict()]
    frags[1]["ports"] = {"b": [PortMapping(2, 2, ip="10.8.0.5").to_dict()]}
    assert nft.localnet_devices(frags) == {"zbr-web": False, "zvb0": True,
                                           "zbr-vault": False}


def test_check_ports():
    nft.check_ports(FRAGS, "zbr-web", "a", [PortMapping(8080, 80)])   # its own
    nft.check_ports(FRAGS, "zbr-web", "c", [PortMapping(8080, 80, "udp")])
    with pytest.raises(ConfigError, match=r"host port 8080/tcp is already published by "
                                          r"container 'a' \(network 'web'\)"):
        nft.check_ports(FRAGS, "zcore", "c", [PortMapping(8080, 81)])


# -- IPAM ---------------------------------------------------------------------------------
NET = Network(name="web", mode="nat", subnet="10.9.0.0/29", gateway="10.9.0.1",
              prefixlen=29, key="zbr-web", bridge="zbr-web")


def _allocate(leases, data, cid, **kw):
    return leases.allocate(data, cid, names=[cid], hosts=None, host_if=f"zv{cid}", **kw)


def test_ipam_allocate_release(tmp_path):
    leases = Leases(str(tmp_path), NET)
    with leases.lock():
        data = leases.load()
        got = [_allocate(leases, data, c).ip for c in "abcde"]
        assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        with pytest.raises(ZonedError, match="no free address left in 10.9.0.0/29"):
            _allocate(leases, data, "f")
        assert Leases.release(data, "b") == ["10.9.0.3"]
        leases.save(data)
    with leases.lock():
        data = leases.load()
        # round robin: the freed address comes round again only after the rest
        assert _allocate(leases, data, "f").ip == "10.9.0.3"
        assert Leases.entries(data)[0] == Lease(ip="10.9.0.2", cid="a", names=("a",),
                                                hosts=None, host_if="zva")
    with open(leases.path) as f:  # the lease file's form, as older zoned wrote it
        assert json.load(f)["leases"]["10.9.0.2"] == {"names": ["a"], "hosts": None,
                                                      "host_if": "zva", "cid": "a"}
    assert os.path.exists(os.path.join(tmp_path, "web.lock"))


def test_ipam_static(tmp_path):
    leases = Leases(str(tmp_path), NET)
    data = leases.load()
    assert _allocate(leases, data, "a", static="10.9.0.5").ip == "10.9.0.5"
    assert "last" not in data  # a static address does not move the round robin
    assert _allocate(leases, data, "b").ip == "10.9.0.2"
    for ip, why in (("10.9.0.5", "already in use on network 'web' \\(by container 'a'\\)"),
                    ("10.9.0.1", "is network 'web''s gateway"),
                    ("10.9.0.7", "network or broadcast address"),
                    ("10.9.1.2", "is not in network 'web'.s subnet"),
                    ("ten", "expected an IPv4 address")):
        with pytest.raises(ConfigError, match=why):
            _allocate(leases, data, "c", static=ip)
    with pytest.raises(ConfigError, match="already attached to network 'web' \\(as 10.9.0.5"):
        _allocate(leases, data, "a")


def test_sync_hosts(tmp_path):
    """Every member's hosts file gets the network's block; hand-edited bad names never
    reach anyone's file."""
    a, b = tmp_path / "a-hosts", tmp_path / "b-hosts"
    a.write_text("127.0.0.1\tlocalhost\n")
    b.write_text("127.0.0.1\tlocalhost\n# zoned network web\n10.9.0.9\tgone\n")
    data = {"leases": {
        "10.9.0.10": Lease("10.9.0.10", "b", ("b",), str(b)).record(),
        "10.9.0.2": Lease("10.9.0.2", "a", ("web-a", "a"), str(a)).record(),
        "10.9.0.3": {"cid": "evil", "names": ["x\n10.0.0.1 bank"], "hosts": None}}}
    sync_hosts("web", data)
    want = ("127.0.0.1\tlocalhost\n# zoned network web\n10.9.0.2\tweb-a a\n"
            "10.9.0.10\tb\n")
    assert a.read_text() == want and b.read_text() == want
    Leases.release(data, "b")
    sync_hosts("web", data)  # b left: gone from a's file (b's own is b's to remove)
    assert a.read_text() == "127.0.0.1\tlocalhost\n# zoned network web\n10.9.0.2\tweb-a a\n"


# -- names ------------------------------------------------------------------------------------
def test_names():
    from zoned.oci.hostname import hostname_for, show
    from zoned.network.names import check_dns, parse_add_host, safe_hosts_name

    assert check_dns(" 192.0.2.1 ") == "192.0.2.1" and check_dns("::1") == "::1"
    with pytest.raises(ConfigError, match=r'invalid --dns "1.2.3.4\\nnameserver 6.6.6.6"'):
        check_dns("1.2.3.4\nnameserver 6.6.6.6")
    assert parse_add_host("db;db.lan:192.0.2.7") == (["db", "db.lan"], "192.0.2.7")
    assert parse_add_host("v6:[::1]") == (["v6"], "::1")
    assert parse_add_host("gw:host-gateway") == (["gw"], "host-gateway")
    for bad in ("db", "db:", ":1.2.3.4", "d b:1.2.3.4", "db:nope", "db\t:1.2.3.4"):
        with pytest.raises(ConfigError, match="invalid --add-host"):
            parse_add_host(bad)
    assert safe_hosts_name("my_app") and not safe_hosts_name("a b") and \
        not safe_hosts_name("") and not safe_hosts_name(None)
    assert hostname_for(None, "my_app.x_") == "my-app.x" and hostname_for(None, None) == "zoned"
    assert show("a\nb") == '"a\\nb"' and show("x" * 200).endswith('..."')


# -- import cost ------------------------------------------------------------------------------
def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_run_without_network_imports_no_network_code():
    """`zoned run` without --network: the CLI, the spec conversion and the network
    decision (api.network_for) import nothing of zoned.network."""
    mods = _modules_after(
        "import zoned.cli, zoned.api, zoned.runtime, zoned.oci.spec\n"
        "from zoned.oci.spec import RunOptions\n"
        "o = RunOptions(['true'], hostname='h', network=['none'])\n"
        "o.to_config(image_rootfs='/tmp')\n"
        "assert zoned.api.network_for(o, None, 'x') is None\n")
    assert not {m for m in mods if m.startswith("zoned.network") or m == "pyroute2"}


def test_network_package_imports_no_pyroute2():
    mods = _modules_after("import zoned.network.attach, zoned.network.release, "
                          "zoned.network.checkpoint_hooks, zoned.network.info, "
                          "zoned.network.definitions")
    assert not any(m == "pyroute2" or m.startswith("pyroute2.") for m in mods)


def _attached(mode: str, bridge: str | None, host_if: str = "zhnotthere0") -> dict:
    return NetworkState(networks=[Attachment(
        network="n", ifname="eth0", host_if=host_if, ip="10.9.0.2", prefixlen=24,
        gateway="10.9.0.1", mac="02:00:00:00:00:02", mode=mode, bridge=bridge)]).to_dict()


def test_a_leaving_zone_is_locked_by_its_bridge_ports_unless_a_link_is_routed():
    """zoned's own lock (LinkLock) holds bridge ports down; a routed link's host route
    would go with its link, so such a zone keeps CRIU's nftables lock (None)."""
    from zoned.network.checkpoint_hooks import LinkLock

    assert LinkLock.for_zone(_attached("routed", None)) is None
    assert LinkLock.for_zone({"mode": "container", "container": "x", "pid": 1}) is None
    assert LinkLock.for_zone({"mode": "tap", "networks": []}) is None
    for described in (None, {"mode": "veth", "networks": []}):  # --network none: lo only
        lock = LinkLock.for_zone(described)
        assert lock is not None and lock.host_ifs == []
        lock.lock()
        lock.unlock()  # nothing to hold, nothing opened
        lock.close()
    # A bridged (or NAT: a bridge port too) link is held by its host side, which must
    # exist: resolved before the freeze, so the lock itself is one message per link.
    for mode in ("bridge", "nat"):
        with pytest.raises(ZonedError, match="zhnotthere0 is gone"):
            LinkLock.for_zone(_attached(mode, "zb0"))


@pytest.mark.parametrize("name", ["web.leases", "web.hosts", "web.lock", "web.json",
                                  "web\n", "web\nx"])
def test_network_names_that_would_take_another_networks_file_are_refused(name):
    """NAME.leases.json is network NAME's lease file: a network named NAME.leases had it
    as its settings file (session 20's audit: duplicate addresses, a bridge removed under
    a running zone). A trailing newline passed `$` too."""
    from zoned.network.definitions import check_name

    with pytest.raises(ConfigError, match="invalid network name"):
        check_name(name)


@pytest.mark.parametrize("value", ["fe80::1%x\nnameserver 10.0.0.9", "fe80::1%eth0"])
def test_dns_and_add_host_addresses_with_a_scope_are_refused(value):
    """An IPv6 scope id is any text, newlines too, and comes back in str(address): it
    would add lines to the zone's resolv.conf or hosts."""
    from zoned.network.names import check_dns, parse_add_host

    with pytest.raises(ConfigError, match="scope"):
        check_dns(value)
    with pytest.raises(ConfigError, match="scope"):
        parse_add_host(f"db:{value}")


def test_a_mac_with_a_trailing_newline_is_refused():
    from zoned.network.attach import request_from_options
    from zoned.oci.spec import RunOptions

    with pytest.raises(ConfigError, match="invalid --mac"):
        request_from_options(RunOptions(network=["zoned0"], mac="02:00:00:00:00:09\n"))
