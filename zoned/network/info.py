"""What `zoned inspect` and `zoned stats` show of a zone's networking, read from its
state.json entry (and the host ends' counters in sysfs): no netlink, no locks."""
from __future__ import annotations

from zoned.errors import NotFound
from zoned.network.model import NetworkState


def counters(root: str, described: dict | None) -> dict | None:
    """rx/tx bytes and packets as the container sees them (the host end's counters
    swapped: what the host receives, the container sent)."""
    state = NetworkState.from_dict(described)
    if state is None:
        return None
    if state.mode == "container":  # it counts what the zone it joined counts
        from zoned.runtime.store import Store

        try:
            st = Store(root).read_state(state.container or "")
        except NotFound:
            return None
        return counters(root, (st.get("zoned") or {}).get("network"))
    total = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    found = False
    for a in state.networks:
        base = f"/sys/class/net/{a.host_if}/statistics/"
        try:
            for ours, theirs in (("rx_bytes", "tx_bytes"), ("tx_bytes", "rx_bytes"),
                                 ("rx_packets", "tx_packets"), ("tx_packets", "rx_packets")):
                with open(base + theirs) as f:
                    total[ours] += int(f.read())
            found = True
        except OSError:
            continue
    return total if found else None


def addresses(described: dict | None) -> list[dict]:
    """[{network, ifname, ip, prefixlen, gateway, mac, host_if}] for `zoned inspect`."""
    state = NetworkState.from_dict(described)
    if state is None or state.mode == "container":
        return []
    return [{"network": a.network, "ifname": a.ifname, "ip": a.ip, "prefixlen": a.prefixlen,
             "gateway": a.gateway, "mac": a.mac, "host_if": a.host_if}
            for a in state.networks]
