"""Container networking: veth pairs on a bridge (or routed), NAT, published ports, IPAM,
/etc/hosts and /etc/resolv.conf. Xen's VIF modes for zones.

The runtime drives one NetworkSetup per container (see Runtime.create):
  prepare(state_dir, cfg)  before fork: ensure the networks, take leases, publish ports,
                           write hosts/resolv.conf/hostname and bind them into the config
  describe()               what state.json keeps (and release() and gc() work from)
  attach(pid)              the container's namespaces exist and its init waits: make the
                           veths (peer created inside the container), address and route
  release()                on a failed create: undo whatever was done
Module functions: release(root, cid, described) on removal (idempotent), gc(root, ...)
for leftovers, counters(...) for `zoned stats`.

What is plugged into a network is independent of the rest: Netlink.plug(host_if, net, ip)
attaches any host-side interface (a veth here, a VM's tap later) to a network; the lease,
the rules and the name entries do not care which.

This module is cheap to import; pyroute2 is imported only when links are touched.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re

from zoned.errors import ConfigError, NotFound, ZonedError
from zoned.ports import check_publish_twice, parse_publish

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def setup(root: str, cid: str, opts) -> "NetworkSetup":
    return NetworkSetup(root, cid, opts)


def host_ifname(root: str, cid: str, index: int) -> str:
    """The host end of a container's veth: unique on the host, <= 15 characters."""
    h = hashlib.sha1(f"{os.path.realpath(root)}\0{cid}".encode()).hexdigest()[:10]
    return f"zv{h}{index}"


def owner_alias(root: str, cid: str) -> str:
    return f"zoned:{cid}@{os.path.realpath(root)}"


def _mac_for(ip: str) -> str:
    """A locally administered unicast MAC derived from the address (as docker does): the
    same address always gets the same MAC, so neighbours' ARP caches stay right."""
    return "02:7a:" + ":".join(f"{int(o):02x}" for o in ip.split("."))


class NetworkSetup:
    def __init__(self, root: str, cid: str, opts):
        from zoned import names as namecheck

        self.root, self.cid = root, cid
        nets = list(opts.network)
        special = [n for n in nets if n in ("none", "host") or n.startswith("container:")]
        if special and len(nets) > 1:
            raise ConfigError(f"--network {special[0]} cannot be combined with other networks")
        # Every flag is checked before anything exists (the default network included).
        if opts.mac and not _MAC_RE.match(opts.mac):
            raise ConfigError(f"invalid --mac {opts.mac!r}: expected six hex octets")
        if opts.mac and int(opts.mac[:2], 16) & 1:
            raise ConfigError(f"invalid --mac {opts.mac!r}: a multicast address")
        self.port_specs = [str(p) for p in opts.publish]
        self.ports = [parse_publish(p) for p in opts.publish]
        check_publish_twice(self.ports, self.port_specs)
        self.dns = [namecheck.check_dns(d) for d in opts.dns]
        self.add_host_items = list(opts.add_host)  # as given: host-gateway stays symbolic
        parsed_hosts = [namecheck.parse_add_host(item) for item in self.add_host_items]
        self.hostname = namecheck.hostname_for(opts.hostname, opts.name or cid)
        self.container = None
        if nets[0].startswith("container:"):
            self.container = nets[0].split(":", 1)[1]
            if not self.container:
                raise ConfigError("--network container:NAME needs a container name")
            if opts.ip or opts.mac or opts.publish:
                raise ConfigError("--ip, --mac and -p cannot be used with "
                                  "--network container:NAME (it shares that network)")
            self.nets = []
        else:
            from zoned import netconf

            if len(set(nets)) != len(nets):
                raise ConfigError("the same --network is given twice")
            for n in nets:
                netconf.check_name(n)
            self.nets = [netconf.get(root, n) for n in nets]
        self.static_ip, self.mac = opts.ip, (opts.mac.lower() if opts.mac else None)
        # A restore or migration keeps every address, not just the first network's.
        self.static_ips = list(getattr(opts, "ips", None) or [opts.ip])
        self.add_hosts = []
        for item, (hosts, ip) in zip(self.add_host_items, parsed_hosts):
            if ip == namecheck.HOST_GATEWAY:
                if not self.nets:
                    raise ConfigError(f"invalid --add-host {item!r}: host-gateway needs a "
                                      "network of the zone's own")
                ip = self.nets[0]["gateway"]
            self.add_hosts.append((ip, " ".join(hosts)))
        self.links: list[dict] = []
        self.files: dict = {}
        self.joined_pid = None

    # -- before fork ---------------------------------------------------------------------
    def prepare(self, state_dir: str, cfg: dict) -> None:
        from zoned.names import safe_hosts_name, show

        # The config's hostname is written into every neighbour's /etc/hosts: never
        # unchecked. New zones' hostnames passed RFC 1123 already (zoned.spec); this last
        # guard also takes a restored zone's older name-derived one (`my_app`).
        hostname = cfg.get("hostname") or self.hostname
        if not safe_hosts_name(hostname):
            raise ConfigError(f"invalid hostname {show(hostname)}: not a host name")
        self.hostname = hostname
        if self.container is not None:
            return self._prepare_join(state_dir, cfg)
        from zoned import netconf
        from zoned.ipam import Leases

        state_dir = os.path.abspath(state_dir)  # other zoned processes update these files
        hosts = os.path.join(state_dir, "hosts")
        _write(hosts, _hosts_base(self.add_hosts))
        names = [self.hostname] + ([self.cid] if self.cid != self.hostname else [])
        for i, net in enumerate(self.nets):
            netconf.ensure(self.root, net)
            leases = Leases(netconf.netdir(self.root), net)
            host_if = host_ifname(self.root, self.cid, i)
            with leases.lock():
                if not os.path.exists(netconf.def_path(self.root, net["name"])):
                    raise ZonedError(f"network {net['name']!r} was removed")
                data = leases.load()
                ip = leases.allocate(data, self.cid, {"names": names, "hosts": hosts,
                                                      "host_if": host_if},
                                     static=(self.static_ips[i]
                                             if i < len(self.static_ips) else None))
                leases.save(data)
                self.links.append({
                    "network": net["name"], "mode": net["mode"], "bridge": net.get("bridge"),
                    "ifname": f"eth{i}", "host_if": host_if, "ip": ip,
                    "prefixlen": net["prefixlen"], "gateway": net["gateway"],
                    "mac": (self.mac if i == 0 and self.mac else _mac_for(ip)),
                    "internal": net.get("internal", False), "mtu": net.get("mtu"),
                    "key": net["key"]})
                _sync_hosts(net["name"], data)
        first_out = next((ln for ln in self.links if not ln["internal"]), None)
        for ln in self.links:
            ln["default_route"] = ln is first_out
        self._register()
        resolv = os.path.join(state_dir, "resolv.conf")
        _write(resolv, _resolv_conf(self.dns))
        hostname = os.path.join(state_dir, "hostname")
        _write(hostname, self.hostname + "\n")
        self.files = {"hosts": hosts, "resolv.conf": resolv, "hostname": hostname}
        _bind_files(cfg, self.files)

    def _register(self) -> None:
        """Put the zone into its networks' rules, in one nft transaction: its ports (on its
        first network; refused if another zone or a host process has the host port) and
        the anti-spoofing guard of each of its links (zoned.nft). Before the links exist:
        the guards match the host veth by name, so the zone's first frame meets them."""
        from zoned import nft
        from zoned.names import show
        from zoned.ports import check_host_free

        link = self.links[0] if self.links else None
        ports = [dict(p, ip=link["ip"]) for p in self.ports] if link else []
        with nft.registry_lock():
            frags = nft.fragments()
            by_key = {f["key"]: f for f in frags}
            for spec, p in zip(self.port_specs, ports):
                try:
                    nft.check_ports(frags, self.nets[0]["key"], self.cid, [p])
                except ConfigError as e:
                    raise ConfigError(f"invalid -p {show(spec)}: {e}") from None
            check_host_free(ports, self.port_specs)
            guards: dict[str, list] = {}
            for ln in self.links:
                if ln["key"] not in by_key:
                    raise ZonedError(f"network {ln['network']!r} has no rules (run `zoned gc`)")
                guards.setdefault(ln["key"], []).append(
                    {"host_if": ln["host_if"], "ip": ln["ip"], "mac": ln["mac"]})
            for key, glist in guards.items():
                frag = by_key[key]
                frag.setdefault("guards", {})[self.cid] = glist
                if ports and key == link["key"]:
                    frag.setdefault("ports", {})[self.cid] = ports
                nft.put(frag)
            nft.apply(frags)
        if ports:
            self.published = ports

    def _prepare_join(self, state_dir: str, cfg: dict) -> None:
        from zoned.runtime import Runtime

        rt = Runtime(self.root)
        try:
            st = rt.state(self.container)
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
        other = rt.store.dir(self.container)
        files = {}
        for name in ("hosts", "resolv.conf"):
            path = os.path.join(other, name)
            if os.path.exists(path):
                files[name] = path
        hostname = os.path.join(state_dir, "hostname")
        _write(hostname, self.hostname + "\n")
        files["hostname"] = hostname
        self.files = files
        _bind_files(cfg, files)

    def describe(self) -> dict:
        if self.container is not None:
            return {"mode": "container", "container": self.container,
                    "pid": self.joined_pid, "files": self.files}
        d = {"mode": "veth", "root": os.path.realpath(self.root), "networks": self.links,
             "files": self.files, "dns": self.dns,
             "add_hosts": self.add_host_items}
        if getattr(self, "published", None):
            d["ports"] = self.published
            d["ports_network"] = self.nets[0]["key"]
        return d

    # -- the container's namespaces exist -----------------------------------------------
    def attach(self, pid: int) -> None:
        if not self.links:
            return
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.attach_ns(nsfd)
        finally:
            os.close(nsfd)
        from zoned.runtime import _fault_injection

        _fault_injection("ZONED_TEST_PAUSE_ATTACH")

    def attach_ns(self, nsfd: int, *, loopback: bool = False) -> None:
        """Plug the container's links into the network namespace `nsfd` (a running
        container's, or an empty one a restore fills: then `loopback` brings lo up too)."""
        from zoned.netlink import Netlink

        with Netlink() as nl:
            nipr = nl.in_netns(nsfd)
            if loopback:
                nipr.link("set", index=nipr.link_lookup(ifname="lo")[0], state="up")
            alias = owner_alias(self.root, self.cid)
            net_by_name = {n["name"]: n for n in self.nets}
            from zoned.nft import localnet_port

            localnet = any(localnet_port(p) for p in self.ports)
            for i, ln in enumerate(self.links):
                nl.create_veth(ln["host_if"], ln["ifname"], nsfd, mac=ln["mac"],
                               alias=alias, mtu=ln.get("mtu"))
                nl.plug(ln["host_if"], net_by_name[ln["network"]], ln["ip"],
                        localnet=localnet and i == 0)
                nl.configure(nipr, ln["ifname"], ln["ip"], ln["prefixlen"],
                             ln["gateway"], ln["default_route"])

    def release(self) -> None:
        release(self.root, self.cid, self.describe(), partial=True)


# -- moving a container: the same networking again, elsewhere --------------------------------
def setup_like(root: str, cid: str, described: dict, hostname: str) -> NetworkSetup:
    """A NetworkSetup that gives `cid` what `described` (a container's state.json entry,
    perhaps from another host) had: the same networks, addresses, MACs, published ports,
    DNS servers and extra hosts. Used by restore and migration."""
    from types import SimpleNamespace

    if described.get("mode") != "veth":
        raise ConfigError(f"cannot recreate a {described.get('mode')!r} network")
    links = described.get("networks") or []
    ports = [(f"{p['host_ip']}:" if p.get("host_ip") else "")
             + f"{p['host_port']}:{p['port']}/{p['proto']}"
             for p in described.get("ports") or []]
    opts = SimpleNamespace(
        network=[ln["network"] for ln in links], ip=links[0]["ip"] if links else None,
        ips=[ln["ip"] for ln in links], mac=links[0]["mac"] if links else None,
        publish=ports, dns=described.get("dns") or [],
        add_host=described.get("add_hosts") or [], hostname=None, name=hostname)
    return NetworkSetup(root, cid, opts)


def new_netns() -> int:
    """An empty network namespace, as an fd (the only thing keeping it alive), made on a
    thread of its own: unshare(CLONE_NEWNET) changes only the calling thread."""
    from zoned import syscalls as sc
    from zoned.netlink import on_own_thread

    def work():
        sc.unshare(sc.CLONE_NEWNET)
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    try:
        return on_own_thread(work)
    except OSError as e:
        raise ZonedError(f"cannot create a network namespace: {e}") from None


def announce(nsfd: int, links: list[dict], count: int = 2) -> None:
    """Gratuitous ARP from inside the namespace for each link: after a restore on another
    host, the bridges between here and the peers learn the MAC's new port at once instead
    of after their FDB entries age out (Xen sends the same after a migration)."""
    import socket
    import struct

    from zoned import syscalls as sc
    from zoned.netlink import on_own_thread

    def work():
        sc.setns(nsfd, sc.CLONE_NEWNET)  # this thread only, and it ends here
        for ln in links:
            mac = bytes.fromhex(ln["mac"].replace(":", ""))
            ip = socket.inet_aton(ln["ip"])
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                s.bind((ln["ifname"], 0x0806))
                for op in (1, 2):  # an ARP request and an ARP reply, both for itself
                    frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
                             + mac + ip + (b"\xff" * 6 if op == 2 else b"\0" * 6) + ip)
                    for _ in range(count // 2 or 1):
                        s.send(frame.ljust(60, b"\0"))

    try:
        on_own_thread(work)
    except OSError as e:
        raise ZonedError(f"cannot send a gratuitous ARP: {e}") from None


# -- files -------------------------------------------------------------------------------------
def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def _bind_files(cfg: dict, files: dict) -> None:
    mounts = cfg.setdefault("mounts", [])
    for name, src in files.items():
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": src,
                       "options": ["bind", "ro"]})


def _hosts_base(add_hosts: list[tuple[str, str]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{name}" for ip, name in add_hosts]
    return "\n".join(lines) + "\n"


def _resolv_conf(dns: list[str]) -> str:
    """--dns servers, else the host's (without loopback ones, which a container cannot
    reach), keeping its search and options lines."""
    keep, servers = [], []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                w = line.split()
                if not w or w[0].startswith(("#", ";")):
                    continue
                if w[0] == "nameserver" and len(w) > 1:
                    if not (w[1].startswith("127.") or w[1] == "::1"):
                        servers.append(w[1])
                elif w[0] in ("search", "domain", "options"):
                    keep.append(line.strip())
    except OSError:
        pass
    if dns:
        servers = list(dns)
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(k + "\n" for k in keep)


_SECTION = "# zoned network "


def _set_section(path: str, netname: str, lines: list[str]) -> None:
    """Replace network `netname`'s block in a container's hosts file, in place (the file is
    bind-mounted into the container: a rename would not be seen there)."""
    lock = path + ".lock"
    try:
        lfd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return  # the container's directory is gone
    try:
        fcntl.flock(lfd, fcntl.LOCK_EX)
        try:
            f = open(path, "r+")
        except FileNotFoundError:
            return
        with f:
            out, skip = [], False
            for line in f.read().splitlines():
                if line.startswith(_SECTION):
                    skip = line[len(_SECTION):].strip() == netname
                    if skip:
                        continue
                if not skip:
                    out.append(line)
            if lines:
                out.append(_SECTION + netname)
                out += lines
            f.seek(0)
            f.write("\n".join(out) + "\n")
            f.truncate()
    finally:
        os.close(lfd)


def _sync_hosts(netname: str, data: dict) -> None:
    """Every member of a network resolves every other by name: rewrite the network's
    block in each member's hosts file (called with the network's lock held)."""
    from zoned.names import safe_hosts_name

    lines = []
    for ip, rec in sorted(data["leases"].items(),
                          key=lambda kv: tuple(int(o) for o in kv[0].split("."))):
        names = [n for n in rec.get("names") or [rec.get("cid", "")] if safe_hosts_name(n)]
        if names:  # a lease file edited by hand never adds lines to anyone's hosts file
            lines.append(f"{ip}\t" + " ".join(names))
    for rec in data["leases"].values():
        if rec.get("hosts"):
            _set_section(rec["hosts"], netname, lines)


# -- removal and gc ------------------------------------------------------------------------
def release(root: str, cid: str, described: dict, *, partial: bool = False) -> None:
    """Remove what a container's networking owns: its host veths, published ports and
    leases. Idempotent, and safe on a half-done set-up."""
    if not described or described.get("mode") == "container":
        return
    alias = owner_alias(root, cid)
    links = described.get("networks") or []
    present = [ln["host_if"] for ln in links
               if os.path.exists(f"/sys/class/net/{ln['host_if']}")]
    if present:
        from zoned.netlink import Netlink

        with Netlink() as nl:
            for name in present:
                nl.delete_link(name, alias)
    _unregister(root, cid, links, described.get("ports_network"))
    from zoned import netconf

    for ln in links:
        try:
            net = netconf.load(root, ln["network"])
        except NotFound:
            continue
        _release_lease(root, net, cid)


def _unregister(root: str, cid: str, links: list[dict], ports_key: str | None) -> None:
    """Take the zone's ports and anti-spoofing guards out of its networks' rules."""
    from zoned import nft

    keys = {ports_key} if ports_key else set()
    for ln in links:
        if ln.get("key"):
            keys.add(ln["key"])
        else:  # described by an older zoned: the key is the network's
            from zoned import netconf

            try:
                keys.add(netconf.load(root, ln["network"])["key"])
            except NotFound:
                pass
    keys = {k for k in keys if os.path.exists(nft.fragment_path(k))}
    if not keys:
        return
    real = os.path.realpath(root)
    with nft.registry_lock():
        frags = nft.fragments()
        changed = []
        for frag in frags:
            if frag["key"] not in keys or frag.get("root") != real:
                continue
            hit = False
            for part in ("ports", "guards"):
                if cid in (frag.get(part) or {}):
                    del frag[part][cid]
                    hit = True
            if "guards" in frag and not frag["guards"]:
                del frag["guards"]  # the fragment as the network had it before
            if hit:
                changed.append(frag)
        if changed:
            nft.apply(frags)  # kernel first: killed before the puts, a retry or gc redoes both
            for frag in changed:
                nft.put(frag)


def _release_lease(root: str, net: dict, cid: str) -> list[str]:
    from zoned import netconf
    from zoned.ipam import Leases

    leases = Leases(netconf.netdir(root), net)
    if not os.path.exists(leases.path):
        return []
    with leases.lock():
        data = leases.load()
        gone = Leases.release(data, cid)
        if gone:  # hosts files first: killed before the save, a retry or gc redoes both
            _sync_hosts(net["name"], data)
            leases.save(data)
    return gone


def gc(root: str, live_ids, *, dry_run: bool = False):
    """Remove what no container owns any more: leases and published ports of containers
    that are gone, their host veths, and the bridges and rules of networks (or whole state
    roots) that are gone. Yields one line per thing. Re-applies the rules if any exist."""
    from zoned import netconf

    real = os.path.realpath(root)
    if os.path.isdir(netconf.netdir(root)):
        with netconf.root_lock(root):  # a network being created has no settings file yet
            yield from _gc(root, real, set(live_ids), dry_run)
    else:
        yield from _gc(root, real, set(live_ids), dry_run)


def _gc(root: str, real: str, live: set, dry_run: bool):
    from zoned import netconf, nft
    from zoned.ipam import Leases
    from zoned.netlink import links_with_alias

    def alive(cid: str) -> bool:
        return cid in live or os.path.isdir(os.path.join(root, cid))

    # leases
    for net in netconf.list_networks(root):
        leases = Leases(netconf.netdir(root), net)
        if not os.path.exists(leases.path):
            continue
        with leases.lock():
            data = leases.load()
            dead = [(ip, rec.get("cid")) for ip, rec in data["leases"].items()
                    if not alive(rec.get("cid") or "")]
            for ip, cid in dead:
                yield f"lease {ip} on network {net['name']}: container {cid} is gone"
                if not dry_run:
                    del data["leases"][ip]
            if dead and not dry_run:
                leases.save(data)
                _sync_hosts(net["name"], data)
    # links: veths of dead containers, bridges of removed networks (or roots)
    doomed = []
    for ifname, alias in links_with_alias("zoned").items():
        owner, _, oroot = alias.partition("@")
        kind, _, name = owner.partition(":")
        if kind == "zoned" and ((oroot == real and not alive(name))
                                or not os.path.isdir(oroot)):
            doomed.append((ifname, alias, f"veth {ifname}: container {name} is gone"))
        elif kind == "zoned-net" and ((oroot == real and not os.path.exists(
                netconf.def_path(root, name))) or not os.path.isdir(oroot)):
            doomed.append((ifname, alias, f"bridge {ifname}: network {name} is gone"))
    if doomed:
        for _, _, line in doomed:
            yield line
        if not dry_run:
            from zoned.netlink import Netlink

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
                    froot == real and not os.path.exists(netconf.def_path(root, f["name"]))):
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


def counters(root: str, described: dict | None) -> dict | None:
    """rx/tx bytes and packets as the container sees them (the host end's counters
    swapped: what the host receives, the container sent)."""
    if not described:
        return None
    if described.get("mode") == "container":
        from zoned.runtime import Runtime

        try:
            st = Runtime(root).store.read_state(described["container"])
        except NotFound:
            return None
        return counters(root, (st.get("zoned") or {}).get("network"))
    total = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    found = False
    for ln in described.get("networks") or []:
        base = f"/sys/class/net/{ln['host_if']}/statistics/"
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
    """[{network, ifname, ip, prefixlen, gateway, mac}] for `zoned inspect`."""
    if not described:
        return []
    return [{k: ln.get(k) for k in ("network", "ifname", "ip", "prefixlen", "gateway",
                                     "mac", "host_if")}
            for ln in described.get("networks") or []]
