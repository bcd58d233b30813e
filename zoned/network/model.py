"""The network package's typed values, and their JSON forms.

Published ports, attachments and leases are parsed or made once (from `-p` flags, a lease
allocation, a network's settings) into these dataclasses, and travel as them: into the nft
registry's fragments, state.json and checkpoints by `to_dict()`, and back by `from_dict()`,
so a restore or a migration rebuilds a zone's networking from the stored values without
re-parsing any flag.

The JSON forms are exactly the dicts zoned wrote before these types existed (same keys,
same optional keys left out), so running zones, registry fragments, lease files and
checkpoints made by an older zoned read back unchanged, and the other way round.

Pure data: no I/O, no imports beyond the standard library.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from zoned.errors import ConfigError

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortMapping:
    """A published port: host_ip:host_port/proto is DNATed to the zone's ip:port.

    `ip` is the zone's address, set once a lease is taken (`to(ip)`); `spec` is the `-p`
    value the user gave, for error messages only (not stored, not compared)."""

    host_port: int
    port: int
    proto: str = "tcp"
    host_ip: str | None = None   # None: every host address (-p without HOSTIP, or 0.0.0.0)
    ip: str | None = None
    spec: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Also guards values read back from a checkpoint another host wrote.
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"invalid published port {self.shown()}: protocol "
                              f"{self.proto!r} (tcp or udp)")
        for v in (self.host_port, self.port):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                raise ConfigError(f"invalid published port {self.shown()}: ports are "
                                  "1..65535")
        for addr in (self.host_ip, self.ip):
            if addr is not None:
                try:
                    ipaddress.IPv4Address(addr)
                except ValueError:
                    raise ConfigError(f"invalid published port {self.shown()}: {addr!r} "
                                      "is not an IPv4 address") from None

    def shown(self) -> str:
        """The -p value this port stands for: as given, else rebuilt."""
        if self.spec is not None:
            return self.spec
        return (f"{self.host_ip}:" if self.host_ip else "") + \
            f"{self.host_port}:{self.port}/{self.proto}"

    @property
    def localnet(self) -> bool:
        """Whether it is reachable at 127.0.0.1 (so its device needs route_localnet)."""
        return not self.host_ip or self.host_ip.startswith("127.")

    def to(self, ip: str) -> "PortMapping":
        """The same port, forwarded to the zone's address `ip`."""
        return replace(self, ip=ip)

    def to_dict(self) -> dict:
        d: dict = {"proto": self.proto, "host_port": self.host_port, "port": self.port}
        if self.host_ip:
            d["host_ip"] = self.host_ip
        if self.ip:
            d["ip"] = self.ip
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PortMapping":
        return cls(host_port=d["host_port"], port=d["port"], proto=d.get("proto", "tcp"),
                   host_ip=d.get("host_ip") or None, ip=d.get("ip"))


@dataclass(frozen=True)
class Attachment:
    """One zone interface on one network: the veth's host end `host_if`, the zone's end
    `ifname`, its address and MAC, and what of the network it needs to be plugged in
    again (mode, bridge, gateway, ...) without reading the network's settings."""

    network: str
    ifname: str
    host_if: str
    ip: str
    prefixlen: int
    gateway: str | None
    mac: str
    mode: str = "nat"
    bridge: str | None = None
    internal: bool = False
    mtu: int | None = None
    key: str | None = None           # the network's registry key (None: an older zoned's)
    default_route: bool = False

    def to_dict(self) -> dict:
        return {"network": self.network, "mode": self.mode, "bridge": self.bridge,
                "ifname": self.ifname, "host_if": self.host_if, "ip": self.ip,
                "prefixlen": self.prefixlen, "gateway": self.gateway, "mac": self.mac,
                "internal": self.internal, "mtu": self.mtu, "key": self.key,
                "default_route": self.default_route}

    @classmethod
    def from_dict(cls, d: dict) -> "Attachment":
        return cls(network=d["network"], ifname=d["ifname"], host_if=d["host_if"],
                   ip=d["ip"], prefixlen=d["prefixlen"], gateway=d.get("gateway"),
                   mac=d["mac"], mode=d.get("mode", "nat"), bridge=d.get("bridge"),
                   internal=bool(d.get("internal")), mtu=d.get("mtu"), key=d.get("key"),
                   default_route=bool(d.get("default_route")))


@dataclass(frozen=True)
class Lease:
    """An address of a network held by a zone: the names it answers to in its neighbours'
    /etc/hosts, the hosts file to keep in step, and the veth that carries it."""

    ip: str
    cid: str
    names: tuple[str, ...] = ()
    hosts: str | None = None
    host_if: str | None = None

    def record(self) -> dict:
        """The lease file's entry (keyed by the address there)."""
        return {"names": list(self.names), "hosts": self.hosts, "host_if": self.host_if,
                "cid": self.cid}

    @classmethod
    def from_record(cls, ip: str, rec: dict) -> "Lease":
        return cls(ip=ip, cid=rec.get("cid") or "", names=tuple(rec.get("names") or ()),
                   hosts=rec.get("hosts"), host_if=rec.get("host_if"))


@dataclass(frozen=True)
class Network:
    """A network's settings, as <root>/.networks/NAME.json holds them (zoned.network.
    definitions reads and writes the dicts; this is the typed view of one)."""

    name: str
    mode: str
    subnet: str
    gateway: str
    prefixlen: int
    key: str
    bridge: str | None = None
    internal: bool = False
    mtu: int | None = None
    root: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        return cls(name=d["name"], mode=d["mode"], subnet=d["subnet"], gateway=d["gateway"],
                   prefixlen=d["prefixlen"], key=d.get("key") or d.get("bridge") or "",
                   bridge=d.get("bridge"), internal=bool(d.get("internal")),
                   mtu=d.get("mtu"), root=d.get("root"))


@dataclass
class NetworkRequest:
    """What a zone asks of networking, checked: from `zoned run`'s flags (parsed once,
    zoned.network.attach.request_from_options) or from a stored zone (NetworkState.request,
    for restore and migration). Per-network lists are indexed like `networks`."""

    networks: list[str]
    ips: list[str | None] = field(default_factory=list)
    macs: list[str | None] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)  # as given: host-gateway symbolic
    hostname: str | None = None   # --hostname (checked), or None: derived from `name`
    name: str | None = None


@dataclass
class NetworkState:
    """A zone's networking as state.json (and a checkpoint's metadata) keeps it: what
    removal, gc, stats, inspect and a restore work from.

    mode "veth": the zone's own attachments ("tap" for a VM's); mode "container": it
    shares another zone's network namespace (`container`, whose init was `pid`)."""

    mode: str = "veth"
    root: str | None = None
    networks: list[Attachment] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    dns: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    ports_network: str | None = None
    container: str | None = None
    pid: int | None = None

    def to_dict(self) -> dict:
        if self.mode == "container":
            return {"mode": "container", "container": self.container, "pid": self.pid,
                    "files": self.files}
        d = {"mode": self.mode, "root": self.root,
             "networks": [a.to_dict() for a in self.networks], "files": self.files,
             "dns": self.dns, "add_hosts": self.add_hosts}
        if self.ports:
            d["ports"] = [p.to_dict() for p in self.ports]
            d["ports_network"] = self.ports_network
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "NetworkState | None":
        if not d:
            return None
        if d.get("mode") == "container":
            return cls(mode="container", container=d.get("container"), pid=d.get("pid"),
                       files=d.get("files") or {})
        return cls(mode=d.get("mode") or "veth", root=d.get("root"),
                   networks=[Attachment.from_dict(a) for a in d.get("networks") or []],
                   files=d.get("files") or {}, dns=list(d.get("dns") or []),
                   add_hosts=list(d.get("add_hosts") or []),
                   ports=[PortMapping.from_dict(p) for p in d.get("ports") or []],
                   ports_network=d.get("ports_network"))

    def request(self, hostname: str) -> NetworkRequest:
        """The same networking again (restore, migration): the same networks, addresses,
        MACs, published ports, DNS servers and extra hosts, for a zone named `hostname`."""
        if self.mode not in ("veth", "tap"):
            raise ConfigError(f"cannot recreate a {self.mode!r} network")
        return NetworkRequest(
            networks=[a.network for a in self.networks],
            ips=[a.ip for a in self.networks], macs=[a.mac for a in self.networks],
            ports=[replace(p, ip=None) for p in self.ports], dns=list(self.dns),
            add_hosts=list(self.add_hosts), hostname=None, name=hostname)
