"""Container networking: veth pairs on a bridge (or routed), NAT, published ports, IPAM,
/etc/hosts and /etc/resolv.conf. Xen's VIF modes for zones.

One module per concern (data flows top to bottom):
  model             typed values: PortMapping, Attachment, Lease, Network, NetworkRequest,
                    NetworkState; their to_dict()/from_dict() are the JSON that state.json,
                    the nft registry, the lease files and checkpoints hold
  ports, names      `-p`, `--dns` and `--add-host` parsed and checked (once)
  attach            NetworkSetup: a zone's lifecycle on its networks (prepare, attach,
                    describe, release); setup() from flags, setup_for_restore() from state
  release           removal of a zone's networking, and gc of what nothing owns
  definitions       networks: settings on disk, bridges, create/remove, host-side names
  ipam              leases, under a lock per network
  nft               the host-wide rules, rendered from the registry (pure) and applied
  netlink           links, addresses and routes with pyroute2 (imported only here, lazily)
  etcfiles          a zone's hosts, resolv.conf and hostname files
  info              what inspect and stats show
  checkpoint_hooks  what checkpoint, restore and migration ask of networking (lock,
                    unlock, quarantine, announce, check-for-restore)

This file imports nothing: `zoned run` without --network never imports the package, and
a user of one module pays only for that module.
"""
