"""More zones on one network than a Linux bridge has ports: extra bridges, joined to the
network's own by veth trunks.

A Linux bridge takes at most BR_MAX_PORTS = 1024 ports (port numbers are 10 bits; adding
one more fails with EXFULL), so a network of 10,000 zones cannot put every veth on one
bridge. Once the network's bridge has PORTS_PER_BRIDGE ports, a zone's veth goes to an
extra bridge `zs<h>-<k>` (k = 1, 2, ...), made on first need and plugged into the network's
bridge by a veth pair `zt<h>-<k>` (on the network's bridge) / `zu<h>-<k>` (on the extra
one). Spanning tree stays off: the bridges form a star, so there is no loop. The zones
stay one layer-2 segment: same subnet, gateway and ARP; only the network's bridge has the
gateway address, and the anti-spoofing rules (`bridge zoned`, matched on the zone's veth
wherever it is plugged) see every frame where it enters.

The extra bridges and trunks carry the network's bridge alias ("zoned-net:NAME@ROOT"), so
`zoned network rm` and `zoned gc` remove them with the network's bridge (a veth pair goes
when either end is deleted). Each extra bridge gets a MAC of its own: with the network
bridge's, it would take frames sent to the gateway for itself.

ZONED_BRIDGE_PORTS sets PORTS_PER_BRIDGE (tests use a small one to spread a few zones).
"""
from __future__ import annotations

import errno
import hashlib
import os

from zoned.errors import ZonedError

BR_MAX_PORTS = 1024          # the kernel's limit (net/bridge/br_private.h)
DEFAULT_PORTS_PER_BRIDGE = 1000   # leaves room for the trunks to extra bridges


def ports_per_bridge() -> int:
    try:
        n = int(os.environ.get("ZONED_BRIDGE_PORTS") or DEFAULT_PORTS_PER_BRIDGE)
    except ValueError:
        n = DEFAULT_PORTS_PER_BRIDGE
    return max(1, min(n, BR_MAX_PORTS - 2))


def max_extra(cap: int) -> int:
    """Extra bridges a network can have: the network's bridge holds `cap` zone ports and
    one trunk per extra bridge, within the kernel's 1023 usable port numbers."""
    return BR_MAX_PORTS - 1 - cap


def port_count(bridge: str) -> int | None:
    """Ports on `bridge` (sysfs brif/), or None if it does not exist."""
    try:
        return len(os.listdir(f"/sys/class/net/{bridge}/brif"))
    except FileNotFoundError:
        return None


def _h(bridge: str) -> str:
    return hashlib.sha1(bridge.encode()).hexdigest()[:8]


def extra_name(bridge: str, k: int) -> str:
    return f"zs{_h(bridge)}-{k}"


def trunk_names(bridge: str, k: int) -> tuple[str, str]:
    """(the trunk end on the network's bridge, the end on extra bridge k)."""
    return f"zt{_h(bridge)}-{k}", f"zu{_h(bridge)}-{k}"


def extra_bridges(bridge: str) -> list[str]:
    """The extra bridges that exist for the network bridge `bridge`, in order."""
    out = []
    for k in range(1, BR_MAX_PORTS):
        name = extra_name(bridge, k)
        if not os.path.isdir(f"/sys/class/net/{name}"):
            break
        out.append(name)
    return out


def bridge_for_port(nl, bridge: str, mtu: int | None = None) -> int:
    """The ifindex of the bridge the next port of network bridge `bridge` goes on: the
    network's own while it has room, else the first extra bridge with room (made, with
    its trunk, when none has)."""
    cap = ports_per_bridge()
    have = port_count(bridge)
    if have is None:
        raise ZonedError(f"bridge {bridge!r} is missing")
    if have < cap:
        return nl.index(bridge)
    for k in range(1, max_extra(cap) + 1):
        name = extra_name(bridge, k)
        n = port_count(name)
        if n is None:
            return _make_extra(nl, bridge, k, mtu)
        if n - 1 < cap:  # one port is the trunk
            return nl.index(name)
    raise ZonedError(f"network bridge {bridge!r} has no room left: {max_extra(cap)} extra "
                     f"bridges of {cap} ports each are full")


def link_alias(name: str) -> str | None:
    """A link's alias from sysfs (as zoned.network.netlink.link_alias; this module does
    not import that one, which imports this one)."""
    try:
        with open(f"/sys/class/net/{name}/ifalias") as f:
            return f.read().strip()
    except OSError:
        return None


def _make_extra(nl, bridge: str, k: int, mtu: int | None) -> int:
    """Extra bridge k of `bridge` and its trunk, up (idempotent: another zoned may be
    making the same one right now)."""
    from pyroute2.netlink.exceptions import NetlinkError

    ipr = nl.ipr
    alias = link_alias(bridge) or ""
    name = extra_name(bridge, k)
    up_end, down_end = trunk_names(bridge, k)
    mac = "02:" + ":".join(f"{b:02x}" for b in hashlib.sha1(
        f"{alias}#{k}".encode()).digest()[:5])
    kw = {"mtu": mtu} if mtu else {}
    for what, args in ((name, {"kind": "bridge", "address": mac, **kw}),
                       (up_end, {"kind": "veth", "peer": {"ifname": down_end, **kw}, **kw})):
        try:
            ipr.link("add", ifname=what, **args)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise ZonedError(f"cannot create {what!r} for bridge {bridge!r}: "
                                 f"{e.args[-1]}") from None
    main = nl.index(bridge)
    idx = nl.index(name)
    for what, master in ((name, None), (up_end, main), (down_end, idx)):
        i = nl.index(what)
        if i is None:
            raise ZonedError(f"{what!r} vanished while bridge {bridge!r} was spread")
        if alias:
            ipr.link("set", index=i, ifalias=alias)
        if master is None:
            ipr.link("set", index=i, state="up")
        else:
            ipr.link("set", index=i, master=master, state="up")
    return idx


def remove_extras(nl, bridge: str) -> None:
    """Delete the extra bridges of `bridge` and their trunks (with the network; before its
    bridge, whose alias they must carry to be deleted)."""
    alias = link_alias(bridge)
    for k, name in enumerate(extra_bridges(bridge), start=1):
        nl.delete_link(trunk_names(bridge, k)[0], alias)
        nl.delete_link(name, alias)


def rejoin_trunks(nl, bridge: str) -> None:
    """After the network's bridge was re-made (someone deleted it), plug the trunks of the
    extra bridges that survived back into it."""
    main = nl.index(bridge)
    for k, _name in enumerate(extra_bridges(bridge), start=1):
        up_end = trunk_names(bridge, k)[0]
        i = nl.index(up_end)
        if i is not None and main is not None:
            nl.ipr.link("set", index=i, master=main, state="up")
