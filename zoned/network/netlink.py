"""Links, addresses and routes with pyroute2 (no `ip` subprocesses). Imported only when a
container or command actually uses a network.

Inside a container's network namespace zoned talks over a netlink socket that a helper
thread opened there: the thread setns()'s into /proc/PID/ns/net (a per-thread change),
opens the socket and setns()'s back; the socket stays bound to the container's namespace
and is used from the main thread through IPRoute(use_socket=...). That costs ~1.5 ms, where
pyroute2's own NetNS forks a helper process (~7 ms).
"""
from __future__ import annotations

import errno
import hashlib
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING

from zoned.errors import ZonedError

if TYPE_CHECKING:
    from zoned.network.model import Network

RT_SCOPE_LINK = 253


def import_iproute():
    """pyroute2.IPRoute without running pyroute2/__init__.py, which imports the whole
    library (NDB, IPDB, conntrack, ...: ~105 ms against ~60 ms). The package module is
    stood in for by a bare one; the first attribute anyone else asks of it runs the real
    __init__ into it, so `import pyroute2` still works later in the same process."""
    if "pyroute2" not in sys.modules:
        try:
            import importlib
            import importlib.util
            import types

            spec = importlib.util.find_spec("pyroute2")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError
            mod = types.ModuleType("pyroute2")
            mod.__file__ = spec.origin
            mod.__path__ = list(spec.submodule_search_locations)
            mod.__spec__ = spec
            mod.__package__ = "pyroute2"

            def __getattr__(name, _mod=mod, _spec=spec):
                if name.startswith("__"):
                    raise AttributeError(name)
                try:  # `from pyroute2 import config` asks for a submodule this way
                    return importlib.import_module(f"pyroute2.{name}")
                except ModuleNotFoundError as e:
                    if e.name != f"pyroute2.{name}":
                        raise
                _mod.__dict__.pop("__getattr__", None)
                _spec.loader.exec_module(_mod)  # the real __init__, into the same module
                return getattr(_mod, name)

            mod.__getattr__ = __getattr__
            sys.modules["pyroute2"] = mod
            from pyroute2.iproute.linux import IPRoute
            return IPRoute
        except ImportError:
            sys.modules.pop("pyroute2", None)
        except Exception:  # noqa: BLE001 - any surprise: fall back to the plain import
            sys.modules.pop("pyroute2", None)
    try:
        from pyroute2.iproute.linux import IPRoute
    except ImportError:
        raise ZonedError("networking needs pyroute2 (pip install pyroute2)") from None
    return IPRoute


def on_own_thread(fn):
    """fn() on a thread of its own that ends with it; its result, or its exception.
    For namespace changes that are per thread (setns, unshare(CLONE_NEWNET)): the thread
    takes them with it, and the caller's own thread never moves."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e

    t = threading.Thread(target=work, name="zoned-ns")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["value"]


def netlink_error():
    """pyroute2's NetlinkError (imported on first need)."""
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


_netlink_error = netlink_error


class Netlink:
    """A host IPRoute, opened on first use; also a context manager that closes it."""

    def __init__(self):
        self._ipr = None
        self._ns: list = []

    @property
    def ipr(self):
        if self._ipr is None:
            self._ipr = import_iproute()()
        return self._ipr

    def close(self) -> None:
        for i in [self._ipr, *self._ns]:
            if i is not None:
                try:
                    i.close()
                except Exception:  # noqa: BLE001
                    pass
        self._ipr, self._ns = None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- namespaces --------------------------------------------------------------------
    def in_netns(self, nsfd: int):
        """An IPRoute whose socket lives in the network namespace `nsfd`."""
        from zoned.linux import syscalls as sc

        def work():
            sc.setns(nsfd, sc.CLONE_NEWNET)  # this thread only, and it ends here
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE

        try:
            sock = on_own_thread(work)
        except OSError as e:
            raise ZonedError(f"cannot enter the container's network namespace: {e}") from None
        ipr = import_iproute()(use_socket=sock)
        self._ns.append(ipr)
        return ipr

    # -- queries -----------------------------------------------------------------------
    def index(self, name: str, ipr=None) -> int | None:
        """The ifindex of link `name` (in a namespace's IPRoute `ipr`, else on the host).
        On the host by if_nametoindex (one ioctl, a hash lookup in the kernel): pyroute2's
        link_lookup dumps every link and filters in Python, O(links) per call, which at
        10,000 zones (10,000 host veths) cost ~0.1 s for each of a start's lookups."""
        if ipr is None:
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return None
        found = ipr.link_lookup(ifname=name)
        return found[0] if found else None

    # -- bridges -----------------------------------------------------------------------
    def ensure_bridge(self, name: str, address: str | None, prefixlen: int, alias: str,
                      mtu: int | None = None) -> int:
        """The bridge `name` with `address` on it, up; created if missing. A link of that
        name that zoned did not make is an error, not something to take over."""
        ipr = self.ipr
        idx = self.index(name)
        if idx is None:
            # A MAC of its own: without one a bridge takes its lowest port's, and changes
            # it as containers come and go, leaving its neighbours' ARP entries stale.
            h = hashlib.sha1(alias.encode()).digest()
            kw = {"address": "02:" + ":".join(f"{b:02x}" for b in h[:5])}
            if mtu:
                kw["mtu"] = mtu
            try:
                ipr.link("add", ifname=name, kind="bridge", **kw)
            except _netlink_error() as e:
                if e.code != errno.EEXIST:
                    raise ZonedError(f"cannot create bridge {name!r}: {e.args[-1]}") from None
            idx = self.index(name)
            ipr.link("set", index=idx, ifalias=alias)
        else:
            have = link_alias(name)
            if have != alias:
                raise ZonedError(f"a link named {name!r} already exists and is not this "
                                 "zoned network's bridge (choose another with --bridge)")
        if address:
            addrs = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
            if address not in addrs:
                try:
                    ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
                except _netlink_error() as e:
                    if e.code != errno.EEXIST:
                        raise ZonedError(f"cannot add {address}/{prefixlen} to bridge "
                                         f"{name!r}: {e.args[-1]}") from None
        ipr.link("set", index=idx, state="up")
        # No route_localnet here: zoned.network.nft.sync_localnet turns it on only while a port on
        # 127.0.0.1 is published (it also lets a zone's packets to 127.0.0.0/8 in).
        return idx

    def delete_link(self, name: str, alias: str | None = None) -> bool:
        """Delete link `name` if it exists (and, given `alias`, carries that alias)."""
        if alias is not None and link_alias(name) != alias:
            return False
        idx = self.index(name)
        if idx is None:
            return False
        try:
            self.ipr.link("del", index=idx)
        except _netlink_error() as e:
            if e.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise ZonedError(f"cannot delete link {name!r}: {e.args[-1]}") from None
        return True

    # -- plugging an interface into a network ------------------------------------------
    def create_veth(self, host_if: str, peer_if: str, nsfd: int, *, mac: str | None,
                    alias: str, mtu: int | None = None) -> int:
        """A veth pair whose peer is made directly inside the namespace `nsfd` (no move)."""
        peer = {"ifname": peer_if, "net_ns_fd": nsfd}
        kw = {}
        if mac:
            peer["address"] = mac
        if mtu:
            peer["mtu"] = kw["mtu"] = mtu
        try:
            self.ipr.link("add", ifname=host_if, kind="veth", peer=peer, **kw)
        except _netlink_error() as e:
            raise ZonedError(f"cannot create veth {host_if!r}: {e.args[-1]}") from None
        idx = self.index(host_if)
        self.ipr.link("set", index=idx, ifalias=alias)
        return idx

    def create_tap(self, host_if: str, *, alias: str, mtu: int | None = None) -> int:
        """A persistent tap a VM's QEMU opens by name (its virtio-net NIC's host side);
        deleted like a veth, by name and alias. Owned by root: a tap with no owner is
        anyone's to attach to (TUNSETIFF needs no CAP_NET_ADMIN then, and /dev/net/tun is
        0666 on most hosts), who would then send and receive as the VM wherever QEMU is
        not attached (before it boots, after it ends, around a save)."""
        kw = {"mtu": mtu} if mtu else {}
        try:
            self.ipr.link("add", ifname=host_if, kind="tuntap", mode="tap", uid=0, **kw)
        except _netlink_error() as e:
            raise ZonedError(f"cannot create tap {host_if!r}: {e.args[-1]}") from None
        idx = self.index(host_if)
        self.ipr.link("set", index=idx, ifalias=alias)
        return idx

    def plug(self, host_if: str, net: Network, ip: str, *, localnet: bool = False,
             up: bool = True) -> None:
        """Attach a host-side interface (veth or tap: anything with an address behind it)
        to a network: on the bridge, or in routed mode a /32 route to `ip` through it,
        the gateway address on it and proxy ARP (Xen's vif-bridge and vif-route).
        `localnet`: a routed zone publishing a port on 127.0.0.1 (route_localnet).
        `up`: False leaves a bridge port down (a routed link must be up for its route)."""
        ipr = self.ipr
        idx = self.index(host_if)
        if idx is None:
            raise ZonedError(f"interface {host_if!r} does not exist")
        if net.mode == "routed":
            sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
            if localnet:
                sysctl(f"net/ipv4/conf/{host_if}/route_localnet", "1")
            ipr.link("set", index=idx, state="up")
            try:
                ipr.addr("add", index=idx, address=net.gateway, prefixlen=32)
            except _netlink_error() as e:
                if e.code != errno.EEXIST:
                    raise ZonedError(f"cannot add {net.gateway} to {host_if}: "
                                     f"{e.args[-1]}") from None
            try:
                ipr.route("add", dst=f"{ip}/32", oif=idx, scope=RT_SCOPE_LINK,
                          prefsrc=net.gateway)
            except _netlink_error() as e:
                raise ZonedError(f"cannot route {ip} to {host_if}: {e.args[-1]}") from None
        else:
            from zoned.network.spread import bridge_for_port

            if self.index(net.bridge) is None:
                raise ZonedError(f"bridge {net.bridge!r} of network {net.name!r} "
                                 "is missing")
            # past a bridge's port limit: an extra bridge joined to it (zoned.network.spread)
            br = bridge_for_port(self, net.bridge, net.mtu)
            ipr.link("set", index=idx, master=br, **({"state": "up"} if up else {}))

    @staticmethod
    def configure(nipr, ifname: str, ip: str, prefixlen: int, gateway: str | None,
                  default_route: bool) -> None:
        """Inside the namespace: address the interface, bring it up, route through the
        gateway."""
        found = nipr.link_lookup(ifname=ifname)
        if not found:
            raise ZonedError(f"{ifname} did not appear in the container")
        idx = found[0]
        nipr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
        nipr.link("set", index=idx, state="up")
        if default_route and gateway:
            nipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=idx)


def link_alias(name: str) -> str | None:
    try:
        with open(f"/sys/class/net/{name}/ifalias") as f:
            return f.read().strip()
    except OSError:
        return None


def links_with_alias(prefix: str) -> dict[str, str]:
    """{ifname: alias} of the host's links whose alias starts with `prefix` (sysfs: no
    netlink needed to look)."""
    out = {}
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return out
    for n in names:
        a = link_alias(n)
        if a and a.startswith(prefix):
            out[n] = a
    return out


def sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise ZonedError(f"cannot set {key.replace('/', '.')}={value}: {e.strerror}") from None
