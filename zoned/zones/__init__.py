"""Zones managed the way Xen and libvirt admins manage guests: one YAML file per zone
(zonefile), converted into the RunOptions and OCI config `zoned run` builds (convert), a
per-zone C monitor that records exit codes and applies restart policies (monitor, policy,
csrc/monitor.c), and the commands (commands, console).

Where things live:
  ZONE_DIR/NAME.yaml        the definition (default /etc/zoned/zones, $ZONED_ZONE_DIR)
  DATA/zones/NAME/          the zone's writable layer (upper/, work/) and log: it outlives
                            the container, restarts and host reboots
  ROOT/.zones/NAME/         runtime only (the state root is a tmpfs): record.json (monitor,
                            restarts, last exit, requested stop), the monitor's exit file,
                            console.sock and console.log
The container itself has the zone's name in the state root, as any zoned container.
"""
