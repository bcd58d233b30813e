"""Checkpoint and restore of a zone with CRIU (>= 4; scripts/install-criu.sh), on one host
or, with zoned.migration, between hosts.

zoned drives the `criu` CLI, not its swrk/RPC mode: zoned has no daemon and no Go-style
long-lived parent to hold an RPC socket, a dump or restore is one command here, the CLI
needs no protobuf bindings in the venv, and what lazy migration needs (--ps-socket to hand
CRIU a socket zoned relays, --status-fd to learn when the images are complete) is there on
the command line. What runc gets from RPC notifications zoned does before or after the
command, or with an --action-script.

What CRIU needs for zoned's container model:
- The tree is the container's init (--tree PID), its pid, mount, uts, ipc and cgroup
  namespaces are dumped with it. The init is a session leader (zoned's init calls setsid).
- The network namespace is *external* (`--external net[INODE]:zoned-netns`, as runc does
  for a namespace it did not make): CRIU dumps the sockets in it, TCP ones in repair mode
  with --tcp-established, but not its interfaces. A restore makes a new namespace, plugs
  the container's veths into it with the same addresses and MACs
  (zoned.network.attach.setup_for_restore) and hands it to CRIU with --inherit-fd; then a
  gratuitous ARP tells the bridges (zoned.network.checkpoint_hooks).
- The root is an overlay mounted inside the container's own mount namespace. CRIU does not
  dump the root mount: at restore it bind-mounts --root there. So the overlay's upper layer
  is copied into DIR/upper while the tasks are still frozen (post-dump action script), and
  restore mounts a fresh overlay (the image, found by name and checked by digest, plus that
  upper) in a private mount namespace of the criu process only.
- Bind mounts from the host (volumes, and /etc/hosts etc. from the state dir) are external
  mounts: `--external mnt[DEST]:KEY` at dump, `--ext-mount-map KEY:SOURCE` at restore.
- A detached container's stdin (/dev/null) was opened on the host: an external file
  (`file[MNT:INODE]`), handed back with --inherit-fd. Its stdout/stderr are a pipe to its
  zoned-logger (zoned.logs): CRIU dumps the pipe, and restore hands it a new logger's pipe
  with --inherit-fd fd[N]:pipe:[OLD INODE] (runc does the same for its stdio pipes).
- The writable layer and the log are in the zone's data dir (zoned.storage), as are the
  checkpoints in transit: on the data root's disk, never in the state root (a tmpfs).
- Cgroups: restore makes the new container's cgroup and passes --cgroup-root; the network
  is locked with nftables.
Not supported (refused with one line, before anything is frozen): a terminal (-t), a user
namespace, --network host or container:X, a pid namespace joined by path, an OCI bundle
root, and a container that is not running.

The package, one module per step (import the one you need: nothing here is imported on
`zoned run`'s path, and this file imports none of them):
  criu     finding CRIU (>= 4) and its version, running it, its logs, CPU features
  dump     Dump: the checks made before anything is frozen, then `criu dump`; checkpoint()
  restore  check_restore(), restore() (as a new zone), resume()
  incoming Incoming: a restore in two halves, the first before a migration's freeze
  criu_restore  `criu restore` into a prepared zone, the lazy-pages daemons
  archive  the checkpoint directory: its metadata, the image it needs (by digest), and
           its export and import as a .tar.zst
  scratch  checkpoints in transit under DATA/migrations, and their gc
"""
