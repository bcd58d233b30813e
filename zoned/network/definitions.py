"""Networks: their settings on disk, their bridge and their share of the nftables rules.

A network is <root>/.networks/<name>.json (see zoned.network.ipam for the rest of that
dir). Its kernel objects (the bridge, unless routed; the rules, via the host-wide registry
in zoned.network.nft) exist as long as the network does, and are re-made by the next
container that uses it if someone deleted them. The default network `zoned0` (bridge +
NAT) is created on first use.

Names on the host (interface names are host-wide and at most 15 characters, while every
state root has its own networks):
  bridge   the default root: `zoned0` for zoned0, `zbr-NAME` for others; any other root:
           `zb<hash of root>-NAME`, hashed further when too long; or --bridge
  alias    every link zoned makes carries an alias naming its owner (the bridge
           "zoned-net:NAME@ROOT", a container's veth "zoned:CID@ROOT"), which is how
           release and gc recognise their own
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import time
from contextlib import contextmanager

from zoned.errors import ConfigError, NotFound, ZonedError
from zoned.network.ipam import (Leases, host_routes, locked, overlaps, read_json,
                                remove_dir_if_idle)
from zoned.network.model import Network

DEFAULT_NETWORK = "zoned0"
MODES = ("nat", "bridge", "routed")
# carved into /24s; ZONED_SUBNET_POOL overrides. Not 10.88.0.0/16: podman's default CNI
# network (cni-podman0) takes all of it on any host that runs podman.
DEFAULT_POOL = "10.99.0.0/16"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: no trailing \n
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# A network's files share one directory: NAME.json, NAME.leases.json, NAME.hosts,
# NAME.lock. A name ending like one of those would take another network's file.
_RESERVED_ENDINGS = (".leases", ".hosts", ".lock", ".json")
# Ranges no zone network may use (issue 10, item 9): packets there are never forwarded
# like unicast, or mean "this host" or "every host".
_SPECIAL_RANGES = [(ipaddress.IPv4Network(n), what) for n, what in (
    ("0.0.0.0/8", "unspecified (\"this network\")"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"))]


def netdir(root: str) -> str:
    return os.path.join(root, ".networks")


def def_path(root: str, name: str) -> str:
    return os.path.join(netdir(root), f"{name}.json")


@contextmanager
def root_lock(root: str):
    """Held while networks of this root are created, removed or collected. On the way out
    an idle dir (no network left, or a create that failed) goes too: no empty dot-dir."""
    with locked(os.path.join(netdir(root), ".lock")):
        try:
            yield
        finally:
            remove_dir_if_idle(netdir(root), ".lock")


def bridge_alias(root: str, name: str) -> str:
    return f"zoned-net:{name}@{os.path.realpath(root)}"


def owner_alias(root: str, cid: str) -> str:
    """The alias of a container's host-side links."""
    return f"zoned:{cid}@{os.path.realpath(root)}"


def host_ifname(root: str, cid: str, index: int) -> str:
    """The host end of a container's veth: unique on the host, <= 15 characters."""
    return f"zv{_h(os.path.realpath(root) + chr(0) + cid, 10)}{index}"


def check_name(name: str) -> str:
    if name in ("none", "host") or not _NAME_RE.fullmatch(name or "") or \
            name.endswith(_RESERVED_ENDINGS):
        raise ConfigError(f"invalid network name {name!r}: use letters, digits and _.- "
                          "(at most 64, starting with a letter or digit; not none or host)")
    return name


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def default_bridge(root: str, name: str) -> str:
    from zoned.runtime.store import DEFAULT_ROOT

    real = os.path.realpath(root)
    if real == DEFAULT_ROOT:
        cand = name if name == DEFAULT_NETWORK else f"zbr-{name}"
        return cand if len(cand) <= 15 else f"zbr-{_h(name, 11)}"
    cand = f"zb{_h(real, 4)}-{name}"
    return cand if len(cand) <= 15 else f"zb{_h(real + chr(0) + name, 13)}"


def load(root: str, name: str) -> dict:
    net = read_json(def_path(root, name), None)
    if net is None:
        raise NotFound(f"network {name!r} does not exist (create it with "
                       f"`zoned network create {name}`)")
    return net


def names(root: str) -> list[str]:
    try:
        return sorted(n[:-5] for n in os.listdir(netdir(root))
                      if n.endswith(".json") and not n.endswith(".leases.json")
                      and not n.startswith("."))
    except FileNotFoundError:
        return []


def list_networks(root: str) -> list[dict]:
    out = []
    for n in names(root):
        try:
            out.append(load(root, n))
        except NotFound:
            pass
    return out


def get(root: str, name: str) -> dict:
    """The network `name`; the default network is created on first use."""
    try:
        return load(root, name)
    except NotFound:
        if name != DEFAULT_NETWORK:
            raise
    try:
        return create(root, DEFAULT_NETWORK)
    except ConfigError as e:
        if "already exists" in str(e):  # someone else made it just now
            return load(root, name)
        raise


def network(root: str, name: str) -> Network:
    """The network `name`, typed (the default network is created on first use)."""
    return Network.from_dict(get(root, name))


def fragment_of(net: Network) -> dict:
    """The network's registry fragment (zoned.network.nft), with no zone in it yet."""
    return {"key": net.key, "root": net.root, "name": net.name, "mode": net.mode,
            "subnet": net.subnet, "gateway": net.gateway, "bridge": net.bridge,
            "internal": net.internal, "ports": {}}


# -- create / remove ------------------------------------------------------------------------
def create(root: str, name: str, *, subnet: str | None = None, gateway: str | None = None,
           mode: str = "nat", bridge: str | None = None, internal: bool = False,
           mtu: int | None = None) -> dict:
    from zoned.network import nft

    check_name(name)
    if mode not in MODES:
        raise ConfigError(f"invalid --mode {mode!r}: use one of {', '.join(MODES)}")
    if bridge is not None and mode == "routed":
        raise ConfigError("--bridge makes no sense with --mode routed (there is no bridge)")
    if mtu is not None and not 68 <= int(mtu) <= 65535:
        raise ConfigError(f"invalid --mtu {mtu}: 68..65535")
    key = bridge or default_bridge(root, name)
    if not _IFNAME_RE.fullmatch(key):
        raise ConfigError(f"invalid bridge name {key!r}: at most 15 letters, digits and _.-")
    real = os.path.realpath(root)
    with root_lock(root):
        if os.path.exists(def_path(root, name)):
            raise ConfigError(f"network {name!r} already exists")
        with nft.registry_lock():
            frags = nft.fragments()
            for f in frags:
                if f["key"] == key:
                    raise ConfigError(f"bridge name {key!r} is already used by network "
                                      f"{f['name']!r} (state root {f['root']})")
            if subnet is None:
                subnet = _free_subnet(frags)
            net_ = _check_subnet(subnet, frags, key)
            gw = _check_gateway(gateway, net_) if gateway else str(next(net_.hosts()))
            net = {"name": name, "id": _h(f"{real}\0{name}\0{time.time_ns()}", 12),
                   "mode": mode, "subnet": str(net_), "gateway": gw,
                   "prefixlen": net_.prefixlen,
                   "bridge": None if mode == "routed" else key, "key": key,
                   "internal": bool(internal), "mtu": int(mtu) if mtu else None,
                   "root": real, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            made_bridge = False
            try:
                if net["bridge"]:
                    from zoned.network.netlink import Netlink

                    with Netlink() as nl:
                        existed = nl.index(key) is not None
                        nl.ensure_bridge(key, gw, net_.prefixlen, bridge_alias(root, name),
                                         net["mtu"])
                        made_bridge = not existed
                nft.put(fragment_of(Network.from_dict(net)))
                nft.apply()
                _forwarding(Network.from_dict(net))
                from zoned.runtime.store import write_json_atomic

                write_json_atomic(def_path(root, name), net)
            except BaseException:
                nft.remove(key)
                try:
                    nft.apply()
                except ZonedError:
                    pass
                if made_bridge:
                    from zoned.network.netlink import Netlink

                    with Netlink() as nl:
                        nl.delete_link(key, bridge_alias(root, name))
                raise
    return net


def _forwarding(net: Network) -> None:
    """NAT and routed networks need the host to forward IPv4 (never turned off again:
    other things on the host may rely on it by then)."""
    if net.mode in ("nat", "routed") and not net.internal:
        from zoned.network.netlink import sysctl

        sysctl("net/ipv4/ip_forward", "1")


def _check_subnet(subnet: str, frags: list[dict], key: str):
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        raise ConfigError(f"invalid --subnet {subnet!r}: expected an IPv4 CIDR such as "
                          "10.77.0.0/24") from None
    if net.prefixlen > 30:
        raise ConfigError(f"--subnet {subnet}: too small (at most /30)")
    for special, what in _SPECIAL_RANGES:
        if net.overlaps(special):
            raise ConfigError(f"invalid --subnet {net}: it overlaps {special}, "
                              f"the {what} range")
    for f in frags:
        if f["key"] != key and overlaps(f["subnet"], str(net)):
            raise ConfigError(f"--subnet {net} overlaps network {f['name']!r} "
                              f"({f['subnet']})")
    for prefix, dev in host_routes():
        if dev != key and overlaps(prefix, str(net)):
            raise ConfigError(f"--subnet {net} overlaps the host's route {prefix} on {dev}")
    for addr, dev in _host_addresses():
        if dev != key and ipaddress.IPv4Address(addr) in net:
            raise ConfigError(f"--subnet {net} holds the host's address {addr} on {dev}")
    return net


def _host_addresses() -> list[tuple[str, str]]:
    """(address, device) of the host's IPv4 addresses, loopback ones aside (a /32 on some
    device has no route in the main table, so host_routes alone misses it)."""
    from zoned.network.netlink import Netlink

    out = []
    with Netlink() as nl:
        names = {ln["index"]: ln.get_attr("IFLA_IFNAME") for ln in nl.ipr.get_links()}
        for a in nl.ipr.get_addr(family=2):
            addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
            if addr and not addr.startswith("127."):
                out.append((addr, names.get(a["index"], "?")))
    return out


def _check_gateway(gateway: str, net) -> str:
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise ConfigError(f"invalid --gateway {gateway!r}: expected an IPv4 address") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise ConfigError(f"--gateway {gateway} is not a host address of {net}")
    return str(gw)


def _free_subnet(frags: list[dict]) -> str:
    pool_s = os.environ.get("ZONED_SUBNET_POOL") or DEFAULT_POOL
    try:
        pool = ipaddress.IPv4Network(pool_s, strict=False)
    except ValueError:
        raise ConfigError(f"invalid ZONED_SUBNET_POOL {pool_s!r}") from None
    used = [f["subnet"] for f in frags] + [p for p, _ in host_routes()] + \
        [f"{a}/32" for a, _ in _host_addresses()]
    for cand in pool.subnets(new_prefix=max(24, pool.prefixlen)):
        if not any(overlaps(str(cand), u) for u in used):
            return str(cand)
    raise ZonedError(f"no free /24 left in the subnet pool {pool} (give --subnet)")


def ensure(root: str, net: Network) -> None:
    """Re-make the network's bridge and rules if someone removed them (cheap when not)."""
    from zoned.network import nft

    bridge_ok = not net.bridge or os.path.exists(f"/sys/class/net/{net.bridge}")
    if bridge_ok and os.path.exists(nft.fragment_path(net.key)):
        _forwarding(net)
        return
    with nft.registry_lock():
        if net.bridge:
            from zoned.network.netlink import Netlink

            with Netlink() as nl:
                nl.ensure_bridge(net.bridge, net.gateway, net.prefixlen,
                                 bridge_alias(root, net.name), net.mtu)
                if not bridge_ok:
                    from zoned.network.spread import rejoin_trunks

                    rejoin_trunks(nl, net.bridge)
        if not os.path.exists(nft.fragment_path(net.key)):
            nft.put(fragment_of(net))
            nft.apply()
        else:
            nft.sync_localnet(nft.fragments())  # a re-made bridge starts without it
        _forwarding(net)


def remove(root: str, name: str) -> None:
    from zoned.network import nft

    check_name(name)
    with root_lock(root):
        net = load(root, name)
        leases = Leases(netdir(root), Network.from_dict(net))
        with leases.lock():
            data = leases.load()
            users = sorted({rec.get("cid") for rec in data["leases"].values()
                            if os.path.isdir(os.path.join(root, rec.get("cid") or "."))
                            and rec.get("cid")})
            if users:
                raise ConfigError(f"network {name!r} is in use by container(s) "
                                  f"{', '.join(users)} (remove them first)")
            with nft.registry_lock():
                nft.remove(net["key"])
                nft.apply()
            if net.get("bridge"):
                from zoned.network.netlink import Netlink
                from zoned.network.spread import remove_extras

                with Netlink() as nl:
                    remove_extras(nl, net["bridge"])
                    nl.delete_link(net["bridge"], bridge_alias(root, name))
            from zoned.network.etcfiles import remove_shared_hosts

            remove_shared_hosts(netdir(root), name)
            for p in (def_path(root, name), leases.path, leases.lock_path):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


def leases_of(root: str, net: dict) -> dict:
    return Leases(netdir(root), Network.from_dict(net)).load()["leases"]
