"""`zoned network create|ls|inspect|rm`."""
from __future__ import annotations

import sys

from zoned.cli.output import print_json, print_table


def _root(args) -> str:
    from zoned.runtime.store import default_root

    return args.root or default_root()


def cmd_network(args) -> int:
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
            print_json([_public(root, n) for n in nets])
        elif args.quiet:
            for n in nets:
                print(n["name"])
        else:
            rows = [("NAME", "MODE", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS")]
            for n in nets:
                mode = n["mode"] + (",internal" if n.get("internal") else "")
                rows.append((n["name"], mode, n["subnet"], n["gateway"], n.get("bridge") or "-",
                             str(len(netconf.leases_of(root, n)))))
            print_table(rows)
        return 0
    if cmd == "inspect":
        out = []
        for name in args.names:
            out.append(_public(root, netconf.get(root, name), containers=True))
        print_json(out)
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
