"""IP address management: one lease file per network, changed only under that network's
lock (a flock'ed file, zoned.linux.locks), replaced atomically, so leases survive a crash of any zoned
process and two processes never hand out the same address.

Layout under the state root (a dot-dir: the container store ignores it):
  .networks/<name>.json          the network's settings (zoned.network.definitions)
  .networks/<name>.leases.json   {"last": IP, "leases": {IP: {"cid", "names", "hosts", ...}}}
  .networks/<name>.lock          flock'ed while the leases (or the settings) change

No pyroute2 here: leases are plain files.
"""
from __future__ import annotations

import ipaddress
import json
import os

from zoned.errors import ConfigError, ZonedError
from zoned.linux.locks import FileLock
from zoned.network.model import Lease, Network
from zoned.runtime.store import write_json_atomic


def locked(path: str) -> FileLock:
    """Hold an exclusive flock on `path` (created if missing, with its directory). The lock
    file may be unlinked by whoever removes the thing it guards (holding the lock): after
    locking, check that the path still names the file we locked, and retry if not."""
    return FileLock(path, make_parents=True, verify=True)


def remove_dir_if_idle(path: str, lock_name: str) -> bool:
    """With `path`/`lock_name` held: remove the lock file and the directory if nothing else
    is left in it (waiters notice the unlinked lock and start over)."""
    try:
        if os.listdir(path) != [lock_name]:
            return False
        os.unlink(os.path.join(path, lock_name))
        os.rmdir(path)
        return True
    except OSError:
        return False


def read_json(path: str, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except json.JSONDecodeError:
        # written atomically, so this is not a torn write: someone edited it by hand
        raise ZonedError(f"{path}: not valid JSON") from None


class Leases:
    """The leases of one network. Use inside `with leases.lock():`."""

    def __init__(self, netdir: str, net: Network):
        self.net = net
        self.name = net.name
        self.path = os.path.join(netdir, f"{self.name}.leases.json")
        self.lock_path = os.path.join(netdir, f"{self.name}.lock")
        self.subnet = ipaddress.IPv4Network(net.subnet)
        self.gateway = net.gateway

    def lock(self):
        return locked(self.lock_path)

    def load(self) -> dict:
        data = read_json(self.path, None) or {}
        data.setdefault("leases", {})
        return data

    def save(self, data: dict) -> None:
        # read and written only under the lock: a full disk may shrink it in place
        write_json_atomic(self.path, data, in_place_if_full=True)

    # -- under the lock ----------------------------------------------------------------
    def allocate(self, data: dict, cid: str, *, names: list[str], hosts: str | None,
                 host_if: str | None, static: str | None = None) -> Lease:
        """Take an address for `cid`: `static` if given and free, else the next free one
        after the last handed out (round robin: a just-freed address is reused last, so
        stale ARP entries elsewhere have time to expire)."""
        leases = data["leases"]
        for ip, rec in leases.items():
            if rec.get("cid") == cid:
                raise ConfigError(f"container {cid!r} is already attached to network "
                                  f"{self.name!r} (as {ip})")
        if static is not None:
            ip = self.check_static(static)
            if ip in leases:
                raise ConfigError(f"IP address {ip} is already in use on network "
                                  f"{self.name!r} (by container {leases[ip].get('cid')!r})")
        else:
            ip = self._next_free(data)
        lease = Lease(ip=ip, cid=cid, names=tuple(names), hosts=hosts, host_if=host_if)
        leases[ip] = lease.record()
        if static is None:
            data["last"] = ip
        return lease

    def check_static(self, value: str) -> str:
        try:
            addr = ipaddress.IPv4Address(value)
        except ValueError:
            raise ConfigError(f"invalid --ip {value!r}: expected an IPv4 address") from None
        if addr not in self.subnet:
            raise ConfigError(f"--ip {value} is not in network {self.name!r}'s subnet "
                              f"{self.subnet}")
        if self.subnet.prefixlen < 31 and addr in (self.subnet.network_address,
                                                   self.subnet.broadcast_address):
            raise ConfigError(f"--ip {value} is the network or broadcast address of "
                              f"{self.subnet}")
        if str(addr) == self.gateway:
            raise ConfigError(f"--ip {value} is network {self.name!r}'s gateway")
        return str(addr)

    def _next_free(self, data: dict) -> str:
        net = self.subnet
        first = int(net.network_address) + (1 if net.prefixlen < 31 else 0)
        last = int(net.broadcast_address) - (1 if net.prefixlen < 31 else 0)
        size = last - first + 1
        taken = set(data["leases"])
        if self.gateway:
            taken.add(self.gateway)
        start = first
        if data.get("last"):
            try:
                start = int(ipaddress.IPv4Address(data["last"])) + 1
            except ValueError:
                pass
        for i in range(size):
            n = first + (start - first + i) % size
            ip = str(ipaddress.IPv4Address(n))
            if ip not in taken:
                return ip
        raise ZonedError(f"network {self.name!r} has no free address left in {net}")

    @staticmethod
    def entries(data: dict) -> list[Lease]:
        """The leases of loaded `data`, typed, in address order (sorted on the packed
        address: parsing 10,000 IPv4Address objects per start cost ~40 ms)."""
        return sorted((Lease.from_record(ip, rec) for ip, rec in data["leases"].items()),
                      key=lambda lease: _address_key(lease.ip))

    @staticmethod
    def release(data: dict, cid: str) -> list[str]:
        """Drop every lease of `cid`; returns the addresses freed."""
        gone = [ip for ip, rec in data["leases"].items() if rec.get("cid") == cid]
        for ip in gone:
            del data["leases"][ip]
        return gone


def _address_key(ip: str) -> bytes:
    """A sort key in address order for a dotted IPv4 address (anything else last)."""
    import socket  # here: not every importer of ipam needs it

    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError):
        return b"\xff" * 4 + str(ip).encode()


def overlaps(a: str, b: str) -> bool:
    return ipaddress.IPv4Network(a).overlaps(ipaddress.IPv4Network(b))


def host_routes() -> list[tuple[str, str]]:
    """(prefix, device) of the host's IPv4 main-table routes, from /proc/net/route (no
    netlink needed). The default route is left out."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                p = line.split()
                dst, mask = int(p[1], 16), int(p[7], 16)
                if mask == 0:
                    continue
                d = ipaddress.IPv4Address(dst.to_bytes(4, "little"))
                m = bin(mask).count("1")
                out.append((f"{d}/{m}", p[0]))
    except OSError:
        pass
    return out
