"""zoned's nftables rules: the table `inet zoned` (and two guard tables, below), rebuilt
as a whole and applied atomically with `nft -j -f -` (one transaction: delete and re-add).

The table is host-wide, but zoned has one state root per caller (/run/zoned, test roots, ...),
so the rules are a pure function of a host-wide registry, one JSON fragment per network in
REGISTRY (/run/zoned-net/<key>.json, key = the network's bridge name, unique on the host):
its subnet, mode, the ports its containers publish and the guards of their ports. Whoever
changes a fragment holds REGISTRY/lock and re-applies. When the last fragment goes, the
tables go.

Layout of the table (S = a network's subnet):
  set subnets           every zoned subnet (isolation between networks)
  chain forward         filter/forward:
      internal S:       ip saddr S ip daddr S accept; ip saddr S drop; ip daddr S drop
      other S:          ip saddr S ip daddr S accept
                        ct status dnat accept            published ports: anyone may connect
                        ip saddr @subnets ip daddr @subnets drop     networks are isolated
      nat S:            ip daddr S ct state established,related accept; ip daddr S drop
  chain prerouting      nat/prerouting: fib daddr type local tcp dport P dnat ip to IP:PORT
                        (-p HOSTIP:P:PORT: ip daddr HOSTIP instead of fib daddr type local)
  chain output          nat/output: the same, for connections the host itself makes
  chain postrouting     nat/postrouting:
                        ip saddr 127.0.0.0/8 ct status dnat masquerade    (127.0.0.1:P)
      each S:           ip saddr S ip daddr S ct status dnat masquerade   (hairpin)
      nat S:            ip saddr S ip daddr != S masquerade

Two more tables guard the zones' ports; they are rebuilt in the same transaction, and kept
apart from `inet zoned` so that the NAT rules' layout does not constrain them.
`inet zoned-guard`:
  chain guard           filter/prerouting, priority raw (before conntrack and NAT):
                        iifname {zone bridges, routed veths} ip daddr 127.0.0.0/8 drop
                        iifname vmap { VETH : jump g-VETH }          (routed networks)
  chain g-VETH          ether saddr != MAC drop; ip saddr IP accept; drop
`bridge zoned`, the anti-spoofing rules of bridged ports (the inet family never sees frames
one bridge port forwards to another):
  chain prerouting      bridge/prerouting: iifname vmap { VETH : jump g-VETH }
  chain g-VETH          ether saddr != MAC drop
                        arp saddr ether MAC arp saddr ip { IP, 0.0.0.0 } accept
                        ip saddr IP accept; drop

Anti-spoofing (issue 10, item 7): a zone with CAP_NET_RAW can send any frame. From its
veth only its own MAC, and IPv4 and ARP with its own address, get anywhere; anything else
(another zone's address or MAC, IPv6, VLAN tags) is dropped where it enters. The rules
match the veth by name, so they exist before the veth does (the zone is registered before
its links are made) and outlive nothing: they go with the zone's entry in its network's
fragment ("guards": {CID: [{host_if, ip, mac}]}), on removal or by `zoned gc`.

Loopback (item 7): published ports on 127.0.0.1 need route_localnet on the device the
DNATed packets leave by (the bridge, or a routed zone's veth), and route_localnet also
lets a zone's packets *to* 127.0.0.0/8 in. So it is on only where a port covering
127.0.0.1 is published (sync_localnet), and the guard chain drops everything arriving from
a zone with a loopback destination before any NAT: legitimate replies to 127.0.0.1 arrive
addressed to the gateway and are de-NATed later.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from zoned.errors import ConfigError, ZonedError
from zoned.network.ipam import locked, read_json

if TYPE_CHECKING:
    from zoned.network.model import PortMapping

REGISTRY = os.environ.get("ZONED_NET_REGISTRY", "/run/zoned-net")
TABLE = "zoned"
FAMILY = "inet"
GUARD_TABLE = "zoned-guard"   # inet: loopback drop and routed anti-spoofing (see above)


def registry_lock():
    return locked(os.path.join(REGISTRY, "lock"))


def fragment_path(key: str) -> str:
    return os.path.join(REGISTRY, f"{key}.json")


def fragments() -> list[dict]:
    try:
        names = sorted(n for n in os.listdir(REGISTRY) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        f = read_json(os.path.join(REGISTRY, n), None)
        if f:
            f["key"] = n[:-5]
            out.append(f)
    return out


def put(frag: dict) -> None:
    from zoned.runtime.store import write_json_atomic

    data = {k: v for k, v in frag.items() if k != "key"}
    # read and written only under the registry lock: a full disk may shrink it in place
    write_json_atomic(fragment_path(frag["key"]), data, in_place_if_full=True)


def remove(key: str) -> bool:
    try:
        os.unlink(fragment_path(key))
        return True
    except FileNotFoundError:
        return False


def localnet_port(p: dict) -> bool:
    """Whether a published port (a fragment's dict) is reachable at 127.0.0.1 (so needs
    route_localnet); PortMapping.localnet says the same of a typed one."""
    return not p.get("host_ip") or p["host_ip"].startswith("127.")


def check_ports(frags: list[dict], key: str, cid: str, ports: list[PortMapping]) -> None:
    """One clear error when a host port is already published by someone else."""
    taken = {}
    for f in frags:
        for owner, plist in (f.get("ports") or {}).items():
            if f["key"] == key and owner == cid:
                continue
            for p in plist:
                taken[(p["proto"], p["host_port"])] = (owner, f["name"])
    for p in ports:
        hit = taken.get((p.proto, p.host_port))
        if hit:
            raise ConfigError(f"host port {p.host_port}/{p.proto} is already published "
                              f"by container {hit[0]!r} (network {hit[1]!r})")


# -- rendering ----------------------------------------------------------------------------
def _prefix(cidr: str) -> dict:
    addr, _, length = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def _ip(field: str, op: str, right) -> dict:
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}},
                      "right": right}}


_DNAT = {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
_LOCAL = {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                    "right": "local"}}
_EST = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                  "right": ["established", "related"]}}


def _guard_chain(family: str, ifname: str, g: dict, arp: bool,
                 table: str = TABLE) -> list[dict]:
    """The commands for one zone port's anti-spoofing chain g-IFNAME."""
    name = f"g-{ifname}"
    base = {"family": family, "table": table, "chain": name}
    ether = {"payload": {"protocol": "ether", "field": "saddr"}}
    cmds: list[dict] = [
        {"add": {"chain": {"family": family, "table": table, "name": name}}},
        {"add": {"rule": dict(base, expr=[{"match": {"op": "!=", "left": ether,
                                                     "right": g["mac"]}}, {"drop": None}])}}]
    if arp:
        cmds.append({"add": {"rule": dict(base, expr=[
            {"match": {"op": "==", "left": {"payload": {"protocol": "arp",
                                                        "field": "saddr ether"}},
                       "right": g["mac"]}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "arp",
                                                        "field": "saddr ip"}},
                       "right": {"set": sorted({g["ip"], "0.0.0.0"})}}},  # 0.0.0.0: probes
            {"accept": None}])}})
    cmds.append({"add": {"rule": dict(base, expr=[_ip("saddr", "==", g["ip"]),
                                                  {"accept": None}])}})
    cmds.append({"add": {"rule": dict(base, expr=[{"drop": None}])}})
    return cmds


def _guards(frags: list[dict], routed: bool) -> list[tuple[str, dict]]:
    out = []
    for f in frags:
        if (f.get("mode") == "routed") != routed:
            continue
        for _cid, glist in sorted((f.get("guards") or {}).items()):
            for g in glist:
                out.append((g["host_if"], g))
    return out


GUARD_MAP = "guards"    # named verdict map iifname -> jump g-VETH, in both guard tables
ZONE_IFS = "zone_ifs"   # named set of the zone devices of `inet zoned-guard`


def _vmap() -> dict:
    return {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@" + GUARD_MAP}}


def _jumps(ifnames: list[str]) -> list:
    return [[n, {"jump": {"target": f"g-{n}"}}] for n in ifnames]


def _guard_map(family: str, table: str, ifnames: list[str]) -> dict:
    m = {"family": family, "table": table, "name": GUARD_MAP, "type": "ifname",
         "map": "verdict"}
    if ifnames:
        m["elem"] = _jumps(ifnames)
    return {"add": {"map": m}}


def render_bridge(frags: list[dict]) -> list[dict]:
    """The commands that replace the `bridge zoned` table (anti-spoofing of bridge ports)."""
    t = {"family": "bridge", "name": TABLE}
    cmds: list[dict] = [{"add": {"table": t}}, {"delete": {"table": t}}]
    if not frags:
        return cmds
    guards = _guards(frags, routed=False)
    # Made with any network, guards or not: a zone's guard is then one element added to
    # the named map (add_guard_commands), not a rebuild of every zone's rules.
    cmds.append({"add": {"table": t}})
    cmds.append({"add": {"chain": {"family": "bridge", "table": TABLE, "name": "prerouting",
                                   "type": "filter", "hook": "prerouting", "prio": -300,
                                   "policy": "accept"}}})
    for ifname, g in guards:
        cmds += _guard_chain("bridge", ifname, g, arp=True)
    cmds.append(_guard_map("bridge", TABLE, [n for n, _ in guards]))
    cmds.append({"add": {"rule": {"family": "bridge", "table": TABLE, "chain": "prerouting",
                                  "expr": [_vmap()]}}})
    return cmds


def render_guard(frags: list[dict]) -> list[dict]:
    """The commands that replace the `inet zoned-guard` table: the loopback drop for every
    zone device and the anti-spoofing of routed ports."""
    t = {"family": FAMILY, "name": GUARD_TABLE}
    cmds: list[dict] = [{"add": {"table": t}}, {"delete": {"table": t}}]
    zone_ifs = sorted({f["bridge"] for f in frags if f.get("bridge")}
                      | {n for n, _ in _guards(frags, routed=True)})
    if not zone_ifs:
        return cmds
    cmds.append({"add": {"table": t}})
    cmds.append({"add": {"chain": {"family": FAMILY, "table": GUARD_TABLE, "name": "guard",
                                   "type": "filter", "hook": "prerouting", "prio": -300,
                                   "policy": "accept"}}})
    base = {"family": FAMILY, "table": GUARD_TABLE, "chain": "guard"}
    cmds.append({"add": {"set": {"family": FAMILY, "table": GUARD_TABLE, "name": ZONE_IFS,
                                 "type": "ifname", "elem": zone_ifs}}})
    cmds.append({"add": {"rule": dict(base, expr=[
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                   "right": "@" + ZONE_IFS}},
        _ip("daddr", "==", _prefix("127.0.0.0/8")), {"drop": None}])}})
    routed = _guards(frags, routed=True)
    for ifname, g in routed:
        cmds += _guard_chain(FAMILY, ifname, g, arp=False, table=GUARD_TABLE)
    cmds.append(_guard_map(FAMILY, GUARD_TABLE, [n for n, _ in routed]))
    cmds.append({"add": {"rule": dict(base, expr=[_vmap()])}})
    return cmds


def _where(routed: bool) -> tuple[str, str]:
    return (FAMILY, GUARD_TABLE) if routed else ("bridge", TABLE)


def add_guard_commands(glist: list[dict], routed: bool) -> list[dict]:
    """The commands that add one zone's guards (its ports' chains and their map elements)
    to tables `render` made: O(1) in the number of zones, where a rebuild is O(n)."""
    family, table = _where(routed)
    cmds: list[dict] = []
    for g in glist:
        cmds += _guard_chain(family, g["host_if"], g, arp=not routed, table=table)
    names = [g["host_if"] for g in glist]
    cmds.append({"add": {"element": {"family": family, "table": table, "name": GUARD_MAP,
                                     "elem": _jumps(names)}}})
    if routed:
        cmds.append({"add": {"element": {"family": family, "table": table, "name": ZONE_IFS,
                                         "elem": names}}})
    return cmds


def delete_guard_commands(glist: list[dict], routed: bool) -> list[dict]:
    """The commands that take one zone's guards out again (add_guard_commands' undo)."""
    family, table = _where(routed)
    names = [g["host_if"] for g in glist]
    cmds: list[dict] = [{"delete": {"element": {"family": family, "table": table,
                                                "name": GUARD_MAP, "elem": _jumps(names)}}}]
    if routed:
        cmds.append({"delete": {"element": {"family": family, "table": table,
                                            "name": ZONE_IFS, "elem": names}}})
    for n in names:
        chain = {"family": family, "table": table, "name": f"g-{n}"}
        cmds += [{"flush": {"chain": chain}}, {"delete": {"chain": chain}}]
    return cmds


def apply_delta(cmds: list[dict], frags: list[dict]) -> None:
    """Apply a few commands to the tables as they are (one transaction); if that fails
    (tables made by an older zoned, or changed behind zoned's back), rebuild them from
    `frags`, the registry as it is now (call with the lock held)."""
    try:
        _run(cmds)
    except ZonedError:
        apply(frags)


def render(frags: list[dict]) -> list[dict]:
    """The nft JSON commands that replace the tables with the ones `frags` describe."""
    t = {"family": FAMILY, "name": TABLE}
    cmds: list[dict] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    if not frags:
        return cmds[:2] + render_guard([]) + render_bridge([])

    def chain(name, ctype, hook, prio):
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name,
                                       "type": ctype, "hook": hook, "prio": prio,
                                       "policy": "accept"}}})

    def rule(ch, *expr):
        cmds.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": ch,
                                      "expr": list(expr)}}})

    subnets = sorted({f["subnet"] for f in frags})
    cmds.append({"add": {"set": {"family": FAMILY, "table": TABLE, "name": "subnets",
                                 "type": "ipv4_addr", "flags": ["interval"],
                                 "elem": [_prefix(s) for s in subnets]}}})
    chain("forward", "filter", "forward", 0)
    chain("prerouting", "nat", "prerouting", -100)
    chain("output", "nat", "output", -100)
    chain("postrouting", "nat", "postrouting", 100)
    for f in frags:
        s = _prefix(f["subnet"])
        rule("forward", _ip("saddr", "==", s), _ip("daddr", "==", s), {"accept": None})
        if f.get("internal"):
            rule("forward", _ip("saddr", "==", s), {"drop": None})
            rule("forward", _ip("daddr", "==", s), {"drop": None})
    rule("forward", _DNAT, {"accept": None})
    rule("forward", _ip("saddr", "==", "@subnets"), _ip("daddr", "==", "@subnets"),
         {"drop": None})
    any_ports = False
    for f in frags:
        s = _prefix(f["subnet"])
        if f.get("mode") == "nat" and not f.get("internal"):
            rule("forward", _ip("daddr", "==", s), _EST, {"accept": None})
            rule("forward", _ip("daddr", "==", s), {"drop": None})
        for _cid, plist in sorted((f.get("ports") or {}).items()):
            for p in plist:
                any_ports = True
                dport = {"match": {"op": "==", "left": {"payload": {
                    "protocol": p["proto"], "field": "dport"}}, "right": p["host_port"]}}
                dnat = {"dnat": {"family": "ip", "addr": p["ip"], "port": p["port"]}}
                dst = _ip("daddr", "==", p["host_ip"]) if p.get("host_ip") else _LOCAL
                rule("prerouting", dst, dport, dnat)
                rule("output", dst, dport, dnat)
    if any_ports:
        rule("postrouting", _ip("saddr", "==", _prefix("127.0.0.0/8")), _DNAT,
             {"masquerade": None})
    for f in frags:
        s = _prefix(f["subnet"])
        if any_ports:
            rule("postrouting", _ip("saddr", "==", s), _ip("daddr", "==", s), _DNAT,
                 {"masquerade": None})
        if f.get("mode") == "nat" and not f.get("internal"):
            rule("postrouting", _ip("saddr", "==", s), _ip("daddr", "!=", s),
                 {"masquerade": None})
    return cmds + render_guard(frags) + render_bridge(frags)


def localnet_devices(frags: list[dict]) -> dict[str, bool]:
    """{device: needs route_localnet} for every zoned device the rules know: a bridge when
    one of its network's ports covers 127.0.0.1, a routed zone's veth when its own do."""
    out: dict[str, bool] = {}
    for f in frags:
        ports = f.get("ports") or {}
        if f.get("bridge"):
            out[f["bridge"]] = any(localnet_port(p) for plist in ports.values()
                                   for p in plist)
        elif f.get("mode") == "routed":
            for cid, glist in (f.get("guards") or {}).items():
                need = any(localnet_port(p) for p in ports.get(cid) or [])
                for g in glist:
                    out[g["host_if"]] = need
    return out


def sync_localnet(frags: list[dict]) -> None:
    """route_localnet on exactly the devices that need it (see the module doc); devices not
    made yet are set when they are plugged (zoned.network.netlink.Netlink.plug)."""
    from zoned.network.netlink import sysctl

    for dev, need in localnet_devices(frags).items():
        if os.path.isdir(f"/proc/sys/net/ipv4/conf/{dev}"):
            try:
                sysctl(f"net/ipv4/conf/{dev}/route_localnet", "1" if need else "0")
            except ZonedError:
                if os.path.isdir(f"/proc/sys/net/ipv4/conf/{dev}"):
                    raise  # (a device that went away meanwhile is no error)


def nft_binary() -> str:
    path = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if not path:
        raise ZonedError("nft not found: zoned's networks need nftables "
                         "(apt-get install nftables)")
    return path


def apply(frags: list[dict] | None = None) -> None:
    """Make the kernel's `inet zoned` table match the registry (call with the lock held)."""
    if frags is None:
        frags = fragments()
    if not frags:
        if table_exists() or table_exists("bridge") or table_exists(FAMILY, GUARD_TABLE):
            _run(render([]))
        from zoned.network.ipam import remove_dir_if_idle

        remove_dir_if_idle(REGISTRY, "lock")  # no network left on the host
        return
    _run(render(frags))
    sync_localnet(frags)


def _run(cmds: list[dict]) -> None:
    payload = json.dumps({"nftables": cmds})
    p = subprocess.run([nft_binary(), "-j", "-f", "-"], input=payload, capture_output=True,
                       text=True)
    if p.returncode != 0:
        msg = " ".join(p.stderr.split())[:300] or f"exit status {p.returncode}"
        raise ZonedError(f"nft: could not apply zoned's rules: {msg}")


def table_exists(family: str = FAMILY, name: str = TABLE) -> bool:
    try:
        p = subprocess.run([nft_binary(), "list", "table", family, name],
                           capture_output=True, text=True)
    except ZonedError:
        return False
    return p.returncode == 0
