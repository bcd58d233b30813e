"""Host taps for VM NICs: made before QEMU starts, so zoned (not QEMU) owns them.

A tap QEMU creates itself vanishes with QEMU but cannot be enslaved to the zoned bridge
before the guest boots; one made here is persistent: the caller attaches it to the network's
bridge (as it attaches a veth's host side), passes its name in Nic.tap, and deletes it at
rm/gc (delete_tap is idempotent).
"""
from __future__ import annotations

import errno

from zoned.errors import ZonedError


def create_tap(ifname: str, mtu: int | None = None) -> int:
    """A persistent tap named ifname (up, no carrier until QEMU opens it); its ifindex."""
    from zoned.network.netlink import import_iproute

    IPRoute = import_iproute()
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=ifname, kind="tuntap", mode="tap")
        except Exception as e:  # pyroute2's NetlinkError, or OSError from the tun ioctl
            code = getattr(e, "code", getattr(e, "errno", None))
            if code != errno.EEXIST:
                raise ZonedError(f"cannot create tap {ifname}: {e}") from None
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise ZonedError(f"tap {ifname} did not appear")
        kw = {"mtu": mtu} if mtu else {}
        ipr.link("set", index=found[0], state="up", **kw)
        return found[0]


def delete_tap(ifname: str) -> None:
    """Deletes the tap if it exists."""
    from zoned.network.netlink import import_iproute

    IPRoute = import_iproute()
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            ipr.link("del", index=found[0])
