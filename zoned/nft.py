"""zoned's nftables rules: one table, `inet zoned`, rebuilt as a whole and applied
atomically with `nft -j -f -` (one transaction: delete and re-add the table).

The table is host-wide, but zoned has one state root per caller (/run/zoned, test roots, ...),
so the rules are a pure function of a host-wide registry, one JSON fragment per network in
REGISTRY (/run/zoned-net/<key>.json, key = the network's bridge name, unique on the host):
its subnet, mode and the ports its containers publish. Whoever changes a fragment holds
REGISTRY/lock and re-applies. When the last fragment goes, the table goes.

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
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from zoned.errors import ConfigError, ZonedError
from zoned.ipam import locked, read_json

REGISTRY = os.environ.get("ZONED_NET_REGISTRY", "/run/zoned-net")
TABLE = "zoned"
FAMILY = "inet"


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
    from zoned.state import write_json_atomic

    data = {k: v for k, v in frag.items() if k != "key"}
    # read and written only under the registry lock: a full disk may shrink it in place
    write_json_atomic(fragment_path(frag["key"]), data, in_place_if_full=True)


def remove(key: str) -> bool:
    try:
        os.unlink(fragment_path(key))
        return True
    except FileNotFoundError:
        return False


def check_ports(frags: list[dict], key: str, cid: str, ports: list[dict]) -> None:
    """One clear error when a host port is already published by someone else."""
    taken = {}
    for f in frags:
        for owner, plist in (f.get("ports") or {}).items():
            if f["key"] == key and owner == cid:
                continue
            for p in plist:
                taken[(p["proto"], p["host_port"])] = (owner, f["name"])
    for p in ports:
        hit = taken.get((p["proto"], p["host_port"]))
        if hit:
            raise ConfigError(f"host port {p['host_port']}/{p['proto']} is already published "
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


def render(frags: list[dict]) -> list[dict]:
    """The nft JSON commands that replace the table with the one `frags` describe."""
    t = {"family": FAMILY, "name": TABLE}
    cmds: list[dict] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    if not frags:
        return cmds[:2]

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
    return cmds


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
        if table_exists():
            _run(render([]))
        from zoned.ipam import remove_dir_if_idle

        remove_dir_if_idle(REGISTRY, "lock")  # no network left on the host
        return
    _run(render(frags))


def _run(cmds: list[dict]) -> None:
    payload = json.dumps({"nftables": cmds})
    p = subprocess.run([nft_binary(), "-j", "-f", "-"], input=payload, capture_output=True,
                       text=True)
    if p.returncode != 0:
        msg = " ".join(p.stderr.split())[:300] or f"exit status {p.returncode}"
        raise ZonedError(f"nft: could not apply zoned's rules: {msg}")


def table_exists() -> bool:
    try:
        p = subprocess.run([nft_binary(), "list", "table", FAMILY, TABLE],
                           capture_output=True, text=True)
    except ZonedError:
        return False
    return p.returncode == 0
