"""Attaching a zone to its networks, and detaching it: one NetworkSetup per zone.

The runtime drives it (see Runtime.create):
  prepare(state_dir, cfg)  before fork: ensure the networks, take leases, publish ports,
                           write hosts/resolv.conf/hostname and bind them into the config
  describe()               what state.json keeps (NetworkState.to_dict(); release() and
                           gc() work from it)
  attach(pid)              the container's namespaces exist and its init waits: make the
                           veths (peer created inside the container), address and route
  release()                on a failed create: undo whatever was done

A NetworkSetup is made from a NetworkRequest: `setup()` turns `zoned run`'s flags into one
(every `-p` parsed once, into a PortMapping); `setup_for_restore()` takes it from a stored
NetworkState (restore and migration: the same addresses, MACs and ports, nothing
re-parsed).

What is plugged into a network is independent of the rest: Netlink.plug(host_if, net, ip)
attaches any host-side interface (a veth here, a VM's tap later) to a network; the lease,
the rules and the name entries do not care which.

Cheap to import; pyroute2 is imported only when links are touched.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Protocol

from zoned.errors import ConfigError, NotFound, ZonedError
from zoned.oci.hostname import hostname_for, show
from zoned.network import names as namecheck
from zoned.network.model import Attachment, Network, NetworkRequest, NetworkState, PortMapping
from zoned.network.ports import check_publish_twice, parse_publish

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")


class ZoneLookup(Protocol):
    """What `--network container:NAME` needs of the runtime (zoned.runtime.Runtime has
    it): the other zone's state, and its state dir (`store.dir(cid)`)."""

    store: Any

    def state(self, cid: str) -> dict: ...


def setup(root: str, cid: str, opts, zones: ZoneLookup | None = None) -> "NetworkSetup":
    """The NetworkSetup for `zoned run`'s options (a RunOptions)."""
    return NetworkSetup(root, cid, request_from_options(opts), zones)


def setup_for_restore(root: str, cid: str, described: dict, hostname: str) -> "NetworkSetup":
    """A NetworkSetup that gives `cid` what `described` (a zone's state.json entry, perhaps
    from another host) had: the same networks, addresses, MACs, published ports, DNS
    servers and extra hosts. Used by restore and migration."""
    state = NetworkState.from_dict(described)
    if state is None:
        raise ConfigError("cannot recreate a network that was not described")
    return NetworkSetup(root, cid, state.request(hostname))


def request_from_options(opts) -> NetworkRequest:
    """`zoned run`'s network flags, checked and parsed (every `-p` once)."""
    nets = list(opts.network)
    _check_networks(nets)
    _check_mac(opts.mac)  # every flag is checked before anything exists
    return NetworkRequest(networks=nets, ips=[opts.ip] if opts.ip else [],
                          macs=[opts.mac] if opts.mac else [],
                          ports=[parse_publish(p) for p in opts.publish],
                          dns=list(opts.dns), add_hosts=list(opts.add_host),
                          hostname=opts.hostname, name=opts.name)


def _check_networks(nets: list[str]) -> None:
    special = [n for n in nets if n in ("none", "host") or n.startswith("container:")]
    if special and len(nets) > 1:
        raise ConfigError(f"--network {special[0]} cannot be combined with other networks")


def _check_mac(mac: str | None) -> None:
    if mac and not _MAC_RE.match(mac):
        raise ConfigError(f"invalid --mac {mac!r}: expected six hex octets")
    if mac and int(mac[:2], 16) & 1:
        raise ConfigError(f"invalid --mac {mac!r}: a multicast address")


def mac_for(ip: str) -> str:
    """A locally administered unicast MAC derived from the address (as docker does): the
    same address always gets the same MAC, so neighbours' ARP caches stay right."""
    return "02:7a:" + ":".join(f"{int(o):02x}" for o in ip.split("."))


class NetworkSetup:
    def __init__(self, root: str, cid: str, req: NetworkRequest,
                 zones: ZoneLookup | None = None):
        self.root, self.cid, self.zones = root, cid, zones
        nets = list(req.networks)
        _check_networks(nets)
        for mac in req.macs:
            _check_mac(mac)
        self.macs = [m.lower() if m else None for m in req.macs]
        self.ips = list(req.ips)
        self.ports: list[PortMapping] = list(req.ports)
        check_publish_twice(self.ports)
        self.dns = [namecheck.check_dns(d) for d in req.dns]
        self.add_host_items = list(req.add_hosts)  # as given: host-gateway stays symbolic
        parsed_hosts = [namecheck.parse_add_host(item) for item in self.add_host_items]
        self.hostname = hostname_for(req.hostname, req.name or cid)
        self.container = None
        if nets[0].startswith("container:"):
            self.container = nets[0].split(":", 1)[1]
            if not self.container:
                raise ConfigError("--network container:NAME needs a container name")
            if any(self.ips) or any(self.macs) or self.ports:
                raise ConfigError("--ip, --mac and -p cannot be used with "
                                  "--network container:NAME (it shares that network)")
            self.nets: list[Network] = []
        else:
            from zoned.network import definitions

            if len(set(nets)) != len(nets):
                raise ConfigError("the same --network is given twice")
            for n in nets:
                definitions.check_name(n)
            self.nets = [definitions.network(root, n) for n in nets]
        self.add_hosts = []
        for item, (hosts, ip) in zip(self.add_host_items, parsed_hosts, strict=True):
            if ip == namecheck.HOST_GATEWAY:
                if not self.nets:
                    raise ConfigError(f"invalid --add-host {item!r}: host-gateway needs a "
                                      "network of the zone's own")
                ip = self.nets[0].gateway
            self.add_hosts.append((ip, " ".join(hosts)))
        self.links: list[Attachment] = []
        self.published: list[PortMapping] = []
        self.files: dict = {}
        self.joined_pid = None
        self.link_kind = "veth"  # "tap": a VM's links (its backend sets it; attach_taps)

    # -- before fork ---------------------------------------------------------------------
    def prepare(self, state_dir: str, cfg: dict) -> None:
        from zoned.network import etcfiles

        # The config's hostname is written into every neighbour's /etc/hosts: never
        # unchecked. New zones' hostnames passed RFC 1123 already (zoned.oci.spec); this last
        # guard also takes a restored zone's older name-derived one (`my_app`).
        hostname = cfg.get("hostname") or self.hostname
        if not namecheck.safe_hosts_name(hostname):
            raise ConfigError(f"invalid hostname {show(hostname)}: not a host name")
        self.hostname = hostname
        if self.container is not None:
            return self._prepare_join(state_dir, cfg)
        from zoned.network import definitions
        from zoned.network.ipam import Leases

        state_dir = os.path.abspath(state_dir)  # other zoned processes update these files
        hosts = os.path.join(state_dir, "hosts")
        # One network and no --add-host: the zone's hosts file is the network's shared one
        # (a hard link), so a start or removal rewrites one file, not one per member.
        shared = len(self.nets) == 1 and not self.add_hosts
        if not shared:
            etcfiles.write(hosts, etcfiles.hosts_base(self.add_hosts))
        names = [self.hostname] + ([self.cid] if self.cid != self.hostname else [])
        for i, net in enumerate(self.nets):
            definitions.ensure(self.root, net)
            leases = Leases(definitions.netdir(self.root), net)
            host_if = definitions.host_ifname(self.root, self.cid, i)
            with leases.lock():
                if not os.path.exists(definitions.def_path(self.root, net.name)):
                    raise ZonedError(f"network {net.name!r} was removed")
                data = leases.load()
                synced = hosts
                if shared:
                    synced = etcfiles.link_shared_hosts(definitions.netdir(self.root),
                                                        net.name, hosts)
                lease = leases.allocate(data, self.cid, names=names, hosts=synced,
                                        host_if=host_if,
                                        static=self.ips[i] if i < len(self.ips) else None)
                leases.save(data)
                mac = self.macs[i] if i < len(self.macs) and self.macs[i] else None
                self.links.append(Attachment(
                    network=net.name, mode=net.mode, bridge=net.bridge, ifname=f"eth{i}",
                    host_if=host_if, ip=lease.ip, prefixlen=net.prefixlen,
                    gateway=net.gateway, mac=mac or mac_for(lease.ip), internal=net.internal,
                    mtu=net.mtu, key=net.key))
                etcfiles.sync_hosts(net.name, data)
        first_out = next((a for a in self.links if not a.internal), None)
        self.links = [replace(a, default_route=a is first_out) for a in self.links]
        self._register()
        resolv = os.path.join(state_dir, "resolv.conf")
        etcfiles.write(resolv, etcfiles.resolv_conf(self.dns))
        hostname = os.path.join(state_dir, "hostname")
        etcfiles.write(hostname, self.hostname + "\n")
        self.files = {"hosts": hosts, "resolv.conf": resolv, "hostname": hostname}
        etcfiles.bind_files(cfg, self.files)

    def _register(self) -> None:
        """Put the zone into its networks' rules, in one nft transaction: its ports (on its
        first network; refused if another zone or a host process has the host port) and
        the anti-spoofing guard of each of its links (zoned.network.nft). Before the links
        exist: the guards match the host veth by name, so the zone's first frame meets
        them."""
        from zoned.network import nft
        from zoned.network.ports import check_host_free

        link = self.links[0] if self.links else None
        ports = [p.to(link.ip) for p in self.ports] if link else []
        with nft.registry_lock():
            frags = nft.fragments()
            by_key = {f["key"]: f for f in frags}
            for p in ports:
                try:
                    nft.check_ports(frags, self.nets[0].key, self.cid, [p])
                except ConfigError as e:
                    raise ConfigError(f"invalid -p {show(p.shown())}: {e}") from None
            check_host_free(ports)
            guards: dict[str, list] = {}
            for a in self.links:
                if a.key not in by_key:
                    raise ZonedError(f"network {a.network!r} has no rules (run `zoned gc`)")
                guards.setdefault(a.key, []).append(
                    {"host_if": a.host_if, "ip": a.ip, "mac": a.mac})
            delta: list[dict] | None = [] if not ports else None  # ports: NAT rules change
            for key, glist in guards.items():
                frag = by_key[key]
                if self.cid in (frag.get("guards") or {}):
                    delta = None  # re-registered (a retry): rebuild rather than duplicate
                frag.setdefault("guards", {})[self.cid] = glist
                if ports and key == link.key:
                    frag.setdefault("ports", {})[self.cid] = [p.to_dict() for p in ports]
                nft.put(frag)
                if delta is not None:
                    delta += nft.add_guard_commands(glist, frag.get("mode") == "routed")
            # A zone with no published port only adds its guards: a few commands, where a
            # rebuild of every zone's rules costs O(zones) (3 s at 3,000 zones).
            if delta is not None:
                nft.apply_delta(delta, frags)
            else:
                nft.apply(frags)
        self.published = ports

    def _prepare_join(self, state_dir: str, cfg: dict) -> None:
        from zoned.network import etcfiles

        if self.zones is None:
            raise ZonedError("--network container:NAME: no runtime to look the zone up in")
        try:
            st = self.zones.state(self.container)
        except NotFound:
            raise ConfigError(f"--network container:{self.container}: no such container") \
                from None
        if st["status"] not in ("created", "running", "paused") or not st.get("pid"):
            raise ConfigError(f"--network container:{self.container}: it is {st['status']}")
        pid = st["pid"]
        linux = cfg.setdefault("linux", {})
        nss = linux.setdefault("namespaces", [])
        for ns in nss:
            if ns["type"] == "network":
                ns["path"] = f"/proc/{pid}/ns/net"
                break
        else:
            nss.append({"type": "network", "path": f"/proc/{pid}/ns/net"})
        self.joined_pid = pid
        other = self.zones.store.dir(self.container)
        files = {}
        for name in ("hosts", "resolv.conf"):
            path = os.path.join(other, name)
            if os.path.exists(path):
                files[name] = path
        hostname = os.path.join(state_dir, "hostname")
        etcfiles.write(hostname, self.hostname + "\n")
        files["hostname"] = hostname
        self.files = files
        etcfiles.bind_files(cfg, files)

    def state(self) -> NetworkState:
        if self.container is not None:
            return NetworkState(mode="container", container=self.container,
                                pid=self.joined_pid, files=self.files)
        return NetworkState(mode=self.link_kind, root=os.path.realpath(self.root),
                            networks=list(self.links), files=self.files, dns=self.dns,
                            add_hosts=self.add_host_items, ports=list(self.published),
                            ports_network=self.nets[0].key if self.published else None)

    def describe(self) -> dict:
        """What state.json keeps."""
        return self.state().to_dict()

    # -- the container's namespaces exist -----------------------------------------------
    def attach(self, pid: int) -> None:
        if not self.links:
            return
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.attach_ns(nsfd)
        finally:
            os.close(nsfd)
        from zoned.testhooks import pause

        pause("ZONED_TEST_PAUSE_ATTACH")

    def attach_ns(self, nsfd: int, *, loopback: bool = False, hold: bool = False) -> None:
        """Plug the container's links into the network namespace `nsfd` (a running
        container's, or an empty one a restore fills: then `loopback` brings lo up too).
        `hold`: a bridge link's host side stays down (a migration's destination brings it
        up at the commit: zoned.network.checkpoint_hooks.release_links)."""
        from zoned.network.definitions import owner_alias
        from zoned.network.netlink import Netlink

        with Netlink() as nl:
            nipr = nl.in_netns(nsfd)
            if loopback:
                nipr.link("set", index=nipr.link_lookup(ifname="lo")[0], state="up")
            alias = owner_alias(self.root, self.cid)
            net_by_name = {n.name: n for n in self.nets}
            localnet = any(p.localnet for p in self.ports)
            for i, a in enumerate(self.links):
                nl.create_veth(a.host_if, a.ifname, nsfd, mac=a.mac, alias=alias, mtu=a.mtu)
                nl.plug(a.host_if, net_by_name[a.network], a.ip, localnet=localnet and i == 0,
                        up=not hold)
                nl.configure(nipr, a.ifname, a.ip, a.prefixlen, a.gateway, a.default_route)

    def attach_taps(self) -> None:
        """A VM's links: a tap per network, plugged like a veth (the same bridge, routes,
        guards and ports); the guest configures its side (zoned.backends.vm)."""
        from zoned.network.definitions import owner_alias
        from zoned.network.netlink import Netlink

        if self.container is not None:
            raise ConfigError("--network container:NAME is not supported for VMs")
        self.link_kind = "tap"
        with Netlink() as nl:
            alias = owner_alias(self.root, self.cid)
            net_by_name = {n.name: n for n in self.nets}
            localnet = any(p.localnet for p in self.ports)
            for i, a in enumerate(self.links):
                nl.create_tap(a.host_if, alias=alias, mtu=a.mtu)
                nl.plug(a.host_if, net_by_name[a.network], a.ip, localnet=localnet and i == 0)

    def release(self) -> None:
        from zoned.network.release import release_state

        release_state(self.root, self.cid, self.state())
