"""What checkpoint, restore and migration ask of networking (runc's lockNetwork strategy:
the network's part of moving a zone stays in the network package).

  check_restore(root, state, cid)  can this host give a restored zone its networking?
  new_netns(), loopback_up(nsfd)   the empty namespace a restore fills
  quarantine(nsfd, on)             lock: drop what reaches a restoring zone until it runs
  release_links(host_ifs)          bring up the host sides a migration's destination held
                                   down (no carrier: nothing in or out until the commit)
  drop_criu_locks(nsfd)            unlock what a failed lazy dump left locked
  LinkLock.for_zone(described)     lock a leaving zone by holding its bridge ports down
                                   (then CRIU need not lock: --network-lock skip)
  announce(state, nsfd)            gratuitous ARP from a restored zone, so switches learn
                                   where it now is

CRIU's own network lock (`--network-lock nftables`) covers the dump and the restore
themselves where zoned cannot (a routed link); these cover the time around them.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess

from zoned.errors import ConfigError, NotFound, ZonedError
from zoned.network.model import Attachment, Network, NetworkState


def check_restore(root: str, described: dict, cid: str) -> list[str]:
    """Why the networking a checkpoint describes cannot be had here (one line each):
    a network missing or with another subnet, the address its gateway or someone else's,
    a published host port taken."""
    from zoned.network import definitions, nft
    from zoned.network.ipam import Leases

    try:
        state = NetworkState.from_dict(described)
    except ConfigError as e:  # a published port no zoned writes
        return [str(e)]
    if state is None:
        return []
    problems = []
    for a in state.networks:
        try:
            net = Network.from_dict(definitions.load(root, a.network))
        except NotFound:
            problems.append(f"network {a.network!r} does not exist here")
            continue
        if ipaddress.IPv4Address(a.ip) not in ipaddress.IPv4Network(net.subnet):
            problems.append(f"network {a.network!r} here is {net.subnet}, which "
                            f"does not hold {a.ip}")
            continue
        if a.ip == net.gateway:
            problems.append(f"{a.ip} is network {a.network!r}'s gateway here")
            continue
        leases = Leases(definitions.netdir(root), net)
        if os.path.exists(leases.path):
            with leases.lock():
                data = leases.load()
            holder = (data["leases"].get(a.ip) or {}).get("cid")
            if holder and holder != cid:
                problems.append(f"{a.ip} is taken on network {a.network!r} (by {holder})")
    if state.ports and state.networks:
        try:
            key = Network.from_dict(definitions.load(root, state.networks[0].network)).key
            with nft.registry_lock():
                nft.check_ports(nft.fragments(), key, cid, state.ports)
        except NotFound:
            pass
        except ZonedError as e:
            problems.append(str(e))
    return problems


def new_netns() -> int:
    """An empty network namespace, as an fd (the only thing keeping it alive), made on a
    thread of its own: unshare(CLONE_NEWNET) changes only the calling thread."""
    from zoned.linux import syscalls as sc
    from zoned.network.netlink import on_own_thread

    def work():
        sc.unshare(sc.CLONE_NEWNET)
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    try:
        return on_own_thread(work)
    except OSError as e:
        raise ZonedError(f"cannot create a network namespace: {e}") from None


def loopback_up(nsfd: int) -> None:
    """Bring `lo` up in the namespace `nsfd` (a restored zone without networks)."""
    from zoned.network.netlink import Netlink

    with Netlink() as nl:
        nipr = nl.in_netns(nsfd)
        nipr.link("set", index=nipr.link_lookup(ifname="lo")[0], state="up")


def nft_in(nsfd: int, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """`nft ARGS` inside the network namespace `nsfd`."""
    from zoned.linux import syscalls as sc
    from zoned.network import nft

    return subprocess.run([nft.nft_binary(), *args], input=input, capture_output=True,
                          text=True, preexec_fn=lambda: sc.setns(nsfd, sc.CLONE_NEWNET))


def quarantine(nsfd: int, on: bool) -> None:
    """Drop what reaches a restoring container's namespace from outside, until it runs.

    Its eth0 is up (with the old IP and MAC) before CRIU has made its sockets, and its
    first IPv6 neighbour solicitation teaches the switches the MAC's new port: a peer's
    TCP segment arriving then finds no socket and is answered with a reset, which kills
    the very connection the move is meant to keep. Dropped, it is just retransmitted."""
    rules = ("table inet zoned_restore {\n chain input {\n  type filter hook input "
             "priority -400; policy drop;\n  iifname \"lo\" accept\n }\n}\n" if on
             else "delete table inet zoned_restore\n")
    r = nft_in(nsfd, "-f", "-", input=rules)
    if r.returncode != 0 and on:
        raise ZonedError(f"cannot guard the restoring container's network: "
                         f"{r.stderr.strip()}")


def release_links(host_ifs: list[str], timeout: float = 0.5) -> None:
    """Bring up the host side of links held down since their zone's restore began, and
    wait until each forwards (a bridge port enables itself when the kernel's link watch
    has seen the carrier, a moment after the link is up): a gratuitous ARP sent before
    that would be dropped at the port."""
    import time

    from zoned.network.netlink import Netlink

    with Netlink() as nl:
        for name in host_ifs:
            idx = nl.index(name)
            if idx is None:
                raise ZonedError(f"cannot open the network: {name} is gone")
            nl.ipr.link("set", index=idx, state="up")
    end = time.monotonic() + timeout
    for name in host_ifs:
        path = f"/sys/class/net/{name}/brport/state"
        while time.monotonic() < end:
            try:
                with open(path) as f:
                    if f.read().strip() == "3":  # BR_STATE_FORWARDING
                        break
            except OSError:
                break  # not a bridge port (any more): nothing to wait for
            time.sleep(0.0005)


class LinkLock:
    """zoned's own network lock for a zone that leaves this host (runc's lockNetwork): the
    host side of each of its links held down, from just before CRIU freezes the zone until
    the zone is gone, or back up if it stays.

    A bridge port that is down forwards nothing either way, and the zone's end loses its
    carrier but keeps its addresses and routes: no peer's segment reaches a socket CRIU has
    put in repair mode or closed (which would answer with a reset), and nothing leaves.
    That is what CRIU's nftables lock does from inside the namespace, but it costs one
    netlink message here, while CRIU's lock runs libnftables in the dump and again, in
    vain, in the destination's restore (8-12 ms of the frozen time there: the table it
    deletes was never in the new namespace). A routed link cannot be held down (its host
    route would go with it): for_zone() gives None, and CRIU locks."""

    def __init__(self, host_ifs: list[str]):
        from zoned.network.netlink import Netlink

        self.host_ifs = host_ifs
        self.locked = False
        self._nl = Netlink()
        self._index = {}
        for name in host_ifs:  # resolved now, so that lock() is one message per link
            idx = self._nl.index(name)
            if idx is None:
                self._nl.close()
                raise ZonedError(f"cannot lock the network: {name} is gone")
            self._index[name] = idx
        if host_ifs:
            self._ipr = self._nl.ipr  # its socket opened now, not in the freeze

    @classmethod
    def for_zone(cls, described: dict | None) -> "LinkLock | None":
        """The lock for a zone whose state.json network is `described`; None if a link
        is routed (CRIU's lock then)."""
        state = NetworkState.from_dict(described)
        if state is not None and state.mode != "veth":
            return None
        links = state.networks if state is not None else []
        if any(a.mode == "routed" or not a.bridge for a in links):
            return None
        return cls([a.host_if for a in links])

    def lock(self) -> None:
        self.locked = True
        for name in self.host_ifs:
            self._ipr.link("set", index=self._index[name], state="down")

    def unlock(self) -> None:
        """The zone stays here after all: its links up and forwarding again."""
        if self.locked:
            release_links(self.host_ifs)
            self.locked = False

    def close(self) -> None:
        self._nl.close()


def drop_criu_locks(nsfd: int) -> list[str]:
    """Remove CRIU's network-lock tables (inet CRIU-*) from a namespace. A lazy dump that
    fails while serving pages gives the tasks back but leaves its lock in place (it unlocks
    before serving, only on paths that never reach the page server)."""
    r = nft_in(nsfd, "-j", "list", "tables")
    try:
        tables = [t["table"] for t in json.loads(r.stdout or "{}").get("nftables", [])
                  if "table" in t]
    except ValueError:
        return []
    gone = [f"{t['family']} {t['name']}" for t in tables if t["name"].startswith("CRIU-")]
    if gone:
        nft_in(nsfd, "-f", "-", input="".join(f"delete table {g}\n" for g in gone))
    return gone


def announce(state: dict, nsfd: int | None = None) -> None:
    """Gratuitous ARPs from a restored container (its state.json `state`), from inside
    `nsfd` or else its init's namespace, so switches learn where it now is."""
    described = NetworkState.from_dict((state.get("zoned") or {}).get("network"))
    links = described.networks if described is not None else []
    if not links:
        return
    if nsfd is not None:
        return send_arps(nsfd, links)
    fd = os.open(f"/proc/{state['pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        send_arps(fd, links)
    finally:
        os.close(fd)


def wait_running(ifname: str, timeout: float = 0.5) -> None:
    """Wait until `ifname` (in this thread's network namespace) is RUNNING. A link whose
    carrier has just come (its peer was held down until the commit) transmits only once
    the kernel's link watch has activated its queue: a frame sent before is dropped
    silently, and a dropped gratuitous ARP leaves the switches sending the zone's traffic
    to its old host until its TCP retransmits, a second or more."""
    import fcntl
    import socket
    import struct
    import time

    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while True:
            try:
                req = struct.pack("16sh", ifname.encode()[:15], 0)
                flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), 0x8913, req))[1]
            except OSError:
                return  # SIOCGIFFLAGS failed: the send will say what is wrong
            if flags & 0x40 or time.monotonic() > end:  # IFF_RUNNING
                return
            time.sleep(0.0005)


# The packet sockets send_arps() used, open until close_lingering(): closing one waits for
# an RCU grace period (10-20 ms here), which a migration's commit should not.
LINGERING: list = []


def close_lingering() -> None:
    """Close the sockets of earlier gratuitous ARPs (once the frozen time is over)."""
    while LINGERING:
        LINGERING.pop().close()


def send_arps(nsfd: int, links: list[Attachment], count: int = 2) -> None:
    """Gratuitous ARP from inside the namespace for each link: after a restore on another
    host, the bridges between here and the peers learn the MAC's new port at once instead
    of after their FDB entries age out (Xen sends the same after a migration)."""
    import socket
    import struct

    from zoned.linux import syscalls as sc
    from zoned.network.netlink import on_own_thread

    def work():
        sc.setns(nsfd, sc.CLONE_NEWNET)  # this thread only, and it ends here
        for a in links:
            wait_running(a.ifname)
            mac = bytes.fromhex(a.mac.replace(":", ""))
            ip = socket.inet_aton(a.ip)
            # Protocol 0 and no bind: it only sends. Closing a packet socket waits for an
            # RCU grace period (10-20 ms here): not in the frozen time (close_lingering).
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            LINGERING.append(s)
            frames = []
            for op in (1, 2):  # an ARP request and an ARP reply, both for itself
                frames += [(b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
                            + mac + ip + (b"\xff" * 6 if op == 2 else b"\0" * 6) + ip)
                           ] * (count // 2 or 1)
            # Neighbours the zone began to resolve while its link had no carrier (a
            # restored TCP socket's retransmit) wait for the next solicit, up to a
            # second away: ask for them now, and their answers release what waits.
            for peer in unresolved_neighbours(a.ifname):
                frames.append(b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                              + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                              + mac + ip + b"\0" * 6 + socket.inet_aton(peer))
            for frame in frames:
                s.sendto(frame.ljust(60, b"\0"), (a.ifname, 0x0806))

    try:
        on_own_thread(work)
    except OSError as e:
        raise ZonedError(f"cannot send a gratuitous ARP: {e}") from None


def unresolved_neighbours(ifname: str) -> list[str]:
    """The IPv4 neighbours of `ifname` (in this thread's network namespace) still being
    resolved or failed (ATF_COM unset in /proc/net/arp)."""
    try:
        with open("/proc/thread-self/net/arp") as f:
            rows = [ln.split() for ln in f.read().splitlines()[1:]]
    except OSError:
        return []
    return [r[0] for r in rows if len(r) >= 6 and r[5] == ifname and not int(r[2], 16) & 2]
