"""Undoing a zone's networking: on removal (`release`, idempotent, safe on a half-done
set-up) and for what nothing owns any more (`gc`: leases, host veths, bridges and rules of
containers, networks or state roots that are gone).

Order matters everywhere here: kernel state first, then the files that record it, so a
process killed in between leaves something a retry or `zoned gc` finishes.
"""
from __future__ import annotations

import os

from zoned.errors import NotFound
from zoned.network import definitions, nft
from zoned.network.etcfiles import sync_hosts
from zoned.network.ipam import Leases
from zoned.network.model import Attachment, Network, NetworkState


def release(root: str, cid: str, described: dict | None) -> None:
    """Remove what a container's networking owns, from its state.json entry (as any zoned
    version wrote it): its host veths, published ports and leases."""
    if described and described.get("mode") == "pasta":  # rootless (zoned.rootless_net)
        from zoned.rootless_net import release as release_user_network

        return release_user_network(described)
    state = NetworkState.from_dict(described)
    if state is not None:
        release_state(root, cid, state)


def release_state(root: str, cid: str, state: NetworkState) -> None:
    if state.mode == "container":
        return
    alias = definitions.owner_alias(root, cid)
    present = [a.host_if for a in state.networks
               if os.path.exists(f"/sys/class/net/{a.host_if}")]
    if present:
        from zoned.network.netlink import Netlink

        with Netlink() as nl:
            for name in present:
                nl.delete_link(name, alias)
    _unregister(root, cid, state.networks, state.ports_network)
    for a in state.networks:
        try:
            net = Network.from_dict(definitions.load(root, a.network))
        except NotFound:
            continue
        release_lease(root, net, cid)


def _unregister(root: str, cid: str, links: list[Attachment], ports_key: str | None) -> None:
    """Take the zone's ports and anti-spoofing guards out of its networks' rules."""
    keys = {ports_key} if ports_key else set()
    for a in links:
        if a.key:
            keys.add(a.key)
        else:  # described by an older zoned: the key is the network's
            try:
                keys.add(definitions.load(root, a.network)["key"])
            except NotFound:
                pass
    keys = {k for k in keys if os.path.exists(nft.fragment_path(k))}
    if not keys:
        return
    real = os.path.realpath(root)
    with nft.registry_lock():
        frags = nft.fragments()
        changed = []
        delta: list[dict] | None = []
        for frag in frags:
            if frag["key"] not in keys or frag.get("root") != real:
                continue
            hit = False
            if cid in (frag.get("ports") or {}):
                del frag["ports"][cid]
                hit, delta = True, None  # its NAT rules go: rebuild
            glist = (frag.get("guards") or {}).pop(cid, None)
            if glist is not None:
                hit = True
                if delta is not None:
                    delta += nft.delete_guard_commands(glist, frag.get("mode") == "routed")
            if "guards" in frag and not frag["guards"]:
                del frag["guards"]  # the fragment as the network had it before
            if hit:
                changed.append(frag)
        if changed:
            # kernel first: killed before the puts, a retry or gc redoes both
            if delta:
                nft.apply_delta(delta, frags)  # guards only: O(1), not a rebuild
            else:
                nft.apply(frags)
            for frag in changed:
                nft.put(frag)


def release_lease(root: str, net: Network, cid: str) -> list[str]:
    """Free `cid`'s addresses on network `net`; the addresses freed."""
    leases = Leases(definitions.netdir(root), net)
    if not os.path.exists(leases.path):
        return []
    with leases.lock():
        data = leases.load()
        gone = Leases.release(data, cid)
        if gone:  # hosts files first: killed before the save, a retry or gc redoes both
            sync_hosts(net.name, data)
            leases.save(data)
    return gone


def gc(root: str, live_ids, *, dry_run: bool = False):
    """Remove what no container owns any more: leases and published ports of containers
    that are gone, their host veths, and the bridges and rules of networks (or whole state
    roots) that are gone. Yields one line per thing. Re-applies the rules if any exist."""
    real = os.path.realpath(root)
    if os.path.isdir(definitions.netdir(root)):
        with definitions.root_lock(root):  # a network being created has no settings file yet
            yield from _gc(root, real, set(live_ids), dry_run)
    else:
        yield from _gc(root, real, set(live_ids), dry_run)


def _gc(root: str, real: str, live: set, dry_run: bool):
    from zoned.network.netlink import links_with_alias

    def alive(cid: str) -> bool:
        return cid in live or os.path.isdir(os.path.join(root, cid))

    # leases
    for net in map(Network.from_dict, definitions.list_networks(root)):
        leases = Leases(definitions.netdir(root), net)
        if not os.path.exists(leases.path):
            continue
        with leases.lock():
            data = leases.load()
            dead = [(ip, rec.get("cid")) for ip, rec in data["leases"].items()
                    if not alive(rec.get("cid") or "")]
            for ip, cid in dead:
                yield f"lease {ip} on network {net.name}: container {cid} is gone"
                if not dry_run:
                    del data["leases"][ip]
            if dead and not dry_run:
                leases.save(data)
                sync_hosts(net.name, data)
    # links: veths of dead containers, bridges of removed networks (or roots)
    doomed = []
    for ifname, alias in links_with_alias("zoned").items():
        owner, _, oroot = alias.partition("@")
        kind, _, name = owner.partition(":")
        if kind == "zoned" and ((oroot == real and not alive(name))
                                or not os.path.isdir(oroot)):
            doomed.append((ifname, alias, f"veth {ifname}: container {name} is gone"))
        elif kind == "zoned-net" and ((oroot == real and not os.path.exists(
                definitions.def_path(root, name))) or not os.path.isdir(oroot)):
            doomed.append((ifname, alias, f"bridge {ifname}: network {name} is gone"))
    if doomed:
        for _, _, line in doomed:
            yield line
        if not dry_run:
            from zoned.network.netlink import Netlink

            with Netlink() as nl:
                for ifname, alias, _ in doomed:
                    nl.delete_link(ifname, alias)
    # rules
    try:
        has_registry = any(n.endswith(".json") for n in os.listdir(nft.REGISTRY))
    except FileNotFoundError:
        has_registry = False
    if not has_registry:
        return
    with nft.registry_lock():
        frags = nft.fragments()
        keep, changed = [], False
        for f in frags:
            froot = f.get("root") or ""
            if not os.path.isdir(froot) or (
                    froot == real and not os.path.exists(definitions.def_path(root,
                                                                              f["name"]))):
                yield f"rules of network {f['name']} ({froot}): the network is gone"
                changed = True
                if not dry_run:
                    nft.remove(f["key"])
                continue
            if froot == real:
                for part, what in (("ports", "published ports"),
                                   ("guards", "anti-spoofing rules")):
                    for cid in list(f.get(part) or {}):
                        if not alive(cid):
                            yield f"{what} of container {cid}: it is gone"
                            changed = True
                            del f[part][cid]
                            if "guards" in f and not f["guards"]:
                                del f["guards"]
                            if not dry_run:
                                nft.put(f)
            keep.append(f)
        if not dry_run and (changed or keep and not nft.table_exists()):
            nft.apply(keep)
