"""A networked zone's /etc/hosts, /etc/resolv.conf and /etc/hostname: written into its
state dir and bound read-only into it, and its hosts file kept in step with its networks'
leases (every member of a network resolves every other by name).
"""
from __future__ import annotations

import os

from zoned.linux.locks import acquire
from zoned.network.ipam import Leases


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def bind_files(cfg: dict, files: dict) -> None:
    """Bind each of `files` ({name: source}) read-only onto /etc/NAME in the config."""
    mounts = cfg.setdefault("mounts", [])
    for name, src in files.items():
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": src,
                       "options": ["bind", "ro"]})


def hosts_base(add_hosts: list[tuple[str, str]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{name}" for ip, name in add_hosts]
    return "\n".join(lines) + "\n"


def resolv_conf(dns: list[str]) -> str:
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
    try:
        lock = acquire(path + ".lock")
    except FileNotFoundError:
        return  # the container's directory is gone
    try:
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
        os.close(lock)


def shared_hosts_path(netdir: str, netname: str) -> str:
    return os.path.join(netdir, f"{netname}.hosts")


def link_shared_hosts(netdir: str, netname: str, hosts: str) -> str:
    """Make `hosts` (a zone's, in its state dir) a hard link to network `netname`'s shared
    hosts file, made if missing; returns the path the lease records (the shared file), or
    `hosts` itself, written as a file of its own, where a link cannot be made. Called with
    the network's lock held.

    Why: every member resolves every other by name, so with a file per zone each start and
    each removal rewrote every member's file, O(zones) writes (10,000 at 10,000 zones).
    Members with one network and no --add-host have the same file, so they share one
    inode: the zone's path stays in its state dir (bound into it, checkpointed with it)."""
    shared = shared_hosts_path(netdir, netname)
    if not os.path.exists(shared):
        write(shared, hosts_base([]))
    try:
        os.link(shared, hosts)
        return shared
    except OSError:  # another file system (a state root on a bind mount?): a file of its own
        write(hosts, hosts_base([]))
        return hosts


def remove_shared_hosts(netdir: str, netname: str) -> None:
    """With the network: its shared hosts file and that file's lock."""
    path = shared_hosts_path(netdir, netname)
    for p in (path, path + ".lock"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def sync_hosts(netname: str, data: dict) -> None:
    """Every member of a network resolves every other by name: rewrite the network's
    block in each member's hosts file (called with the network's lock held). Members that
    share the network's hosts file (link_shared_hosts) cost one write between them."""
    from zoned.network.names import safe_hosts_name

    leases = Leases.entries(data)
    lines = []
    for lease in leases:
        names = [n for n in lease.names or (lease.cid,) if safe_hosts_name(n)]
        if names:  # a lease file edited by hand never adds lines to anyone's hosts file
            lines.append(f"{lease.ip}\t" + " ".join(names))
    for path in dict.fromkeys(lease.hosts for lease in leases if lease.hosts):
        _set_section(path, netname, lines)
