"""`zoned network create|ls|inspect|rm`."""
from __future__ import annotations

import sys


def add_parser(sub, argparse) -> None:
    n = sub.add_parser("network", help="manage networks (bridge, routed or NAT)")
    nsub = n.add_subparsers(dest="network_cmd", metavar="NETWORK_COMMAND",
                            parser_class=type(n))
    c = nsub.add_parser("create", help="create a network")
    c.add_argument("name")
    c.add_argument("--subnet", help="IPv4 CIDR (default: a free /24 from 10.88.0.0/16)")
    c.add_argument("--gateway", help="the host's address on it (default: the first)")
    c.add_argument("--mode", choices=["nat", "bridge", "routed"], default="nat",
                   help="nat (default): bridge + masquerade; bridge: a plain L2 segment; "
                        "routed: no bridge, a /32 route per container and proxy ARP")
    c.add_argument("--bridge", help="bridge name (default derived from the name)")
    c.add_argument("--internal", action="store_true", help="no traffic in or out")
    c.add_argument("--mtu", type=int)
    ls = nsub.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("-q", "--quiet", action="store_true")
    ins = nsub.add_parser("inspect", help="a network's settings and containers (JSON)")
    ins.add_argument("--format", choices=["json"], default="json")
    ins.add_argument("names", nargs="+")
    rm = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    rm.add_argument("names", nargs="+")


def _root(args) -> str:
    from zoned.state import default_root

    return args.root or default_root()


def run(args) -> int:
    from zoned.network import definitions as netconf
    from zoned.errors import ConfigError, ZonedError

    root = _root(args)
    cmd = getattr(args, "network_cmd", None)
    if cmd == "create":
        net = netconf.create(root, args.name, subnet=args.subnet, gateway=args.gateway,
                             mode=args.mode, bridge=args.bridge, internal=args.internal,
                             mtu=args.mtu)
        print(net["name"])
        return 0
    if cmd in ("ls", "list"):
        netconf.get(root, netconf.DEFAULT_NETWORK)
        nets = netconf.list_networks(root)
        if args.format == "json":
            _json([_public(root, n) for n in nets])
        elif args.quiet:
            for n in nets:
                print(n["name"])
        else:
            rows = [("NAME", "MODE", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS")]
            for n in nets:
                mode = n["mode"] + (",internal" if n.get("internal") else "")
                rows.append((n["name"], mode, n["subnet"], n["gateway"], n.get("bridge") or "-",
                             str(len(netconf.leases_of(root, n)))))
            _table(rows)
        return 0
    if cmd == "inspect":
        out = []
        for name in args.names:
            out.append(_public(root, netconf.get(root, name), containers=True))
        _json(out)
        return 0
    if cmd in ("rm", "remove"):
        failed = 0
        for name in args.names:
            try:
                netconf.remove(root, name)
                print(name)
            except ZonedError as e:
                sys.stderr.write(f"zoned: {e}\n")
                failed = 1
        return failed
    raise ConfigError("network needs a command: create, ls, inspect or rm")


def _public(root: str, net: dict, containers: bool = False) -> dict:
    from zoned.network import definitions as netconf

    d = {k: net.get(k) for k in ("name", "id", "mode", "subnet", "gateway", "bridge",
                                 "internal", "mtu", "created")}
    leases = netconf.leases_of(root, net)
    if containers:
        d["containers"] = {rec.get("cid"): {"ip": ip, "interface": rec.get("host_if")}
                           for ip, rec in sorted(leases.items())}
    else:
        d["containers"] = len(leases)
    return d


def _json(data) -> None:
    from zoned.cli import _print_json

    _print_json(data)


def _table(rows) -> None:
    from zoned.cli import _print_table

    _print_table(rows)
