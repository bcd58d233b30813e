"""What a VM runs and how it is wired: MachineSpec, its checks, and the guest config records.

The guest init (csrc/vminit.c) reads its config as records ``key=value\\0`` -- trivially
parsed in C, and any byte but NUL (which argv and env cannot hold anyway) may appear in a
value, newlines included (the /etc/hosts text). The same records are the payload of the
agent's EXEC and SIGNAL frames (zoned.vm.agent).
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from zoned.errors import ConfigError

# Below this the Debian guest kernel panics early (measured: ~96 MiB) or leaves the zone's
# process too little room; refused with a ConfigError naming the field.
MIN_MEMORY_MIB = 128
MAX_VCPUS = 64
ACCELS = ("auto", "kvm", "tcg")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?\Z")


@dataclass(frozen=True)
class Nic:
    """One virtio-net NIC backed by a host tap (created and enslaved by the caller)."""

    tap: str
    mac: str
    ip: str = ""  # empty: the guest leaves the link unconfigured (up only if ip is set)
    prefixlen: int = 24
    gateway: str = ""


@dataclass(frozen=True)
class Volume:
    """A host directory exported to the guest over virtio-9p. While one is mounted, QEMU 7.2
    refuses live migration ("VirtFS export path ... is mounted in the guest")."""

    host: str
    guest: str
    readonly: bool = False


@dataclass
class MachineSpec:
    """A VM as zoned boots it; memory_mib and vcpus come from the zone's --memory/--cpus."""

    image: str
    argv: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)  # supplementary gids (at most 64)
    tty: bool = False
    # False: the process's stdin is /dev/null and the VM has no stdin port (each virtio-serial
    # port costs the guest ~4 MiB of receive buffers); what a run without -i wants.
    stdin: bool = True
    hostname: str = ""
    memory_mib: int = 256
    vcpus: int = 1
    accel: str = "auto"  # auto: zoned.vm.accel.detect(); kvm/tcg: forced
    nics: list[Nic] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    hosts: str = ""  # the guest's /etc/hosts (left as the image has it when empty)
    disk: str = ""  # a root disk made for this VM (an OCI bundle's rootfs), not the image's
    volumes: list[Volume] = field(default_factory=list)
    tb_size_mib: int = 32  # TCG translation buffer; QEMU's default grows towards 1 GiB
    rows: int = 0  # initial terminal size with tty (QEMU 7.2 forwards no resizes)
    cols: int = 0

    def validate(self) -> None:
        """Raises ConfigError naming the first bad field; nothing is created before this."""
        if not isinstance(self.memory_mib, int) or self.memory_mib < MIN_MEMORY_MIB:
            raise ConfigError(f"invalid memory {self.memory_mib} MiB: a VM needs at least "
                              f"{MIN_MEMORY_MIB} MiB (the guest kernel's floor)")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError(f"invalid cpus {self.vcpus}: a VM has 1 to {MAX_VCPUS} vCPUs")
        if self.accel not in ACCELS:
            raise ConfigError(f"invalid accel {self.accel!r}: one of {', '.join(ACCELS)}")
        if not self.argv:
            raise ConfigError("invalid command: empty")
        for what, values in (("command", self.argv), ("env", self.env), ("cwd", [self.cwd]),
                             ("hosts", [self.hosts]), ("dns", self.dns)):
            for v in values:
                if "\0" in v:
                    raise ConfigError(f"invalid {what} {v!r}: contains NUL")
        for e in self.env:
            if "=" not in e or e.startswith("="):
                raise ConfigError(f"invalid env {e!r}: expected NAME=VALUE")
        if not self.cwd.startswith("/"):
            raise ConfigError(f"invalid workdir {self.cwd!r}: must be absolute")
        for what, v in (("uid", self.uid), ("gid", self.gid)):
            if not isinstance(v, int) or not 0 <= v < 2**32 - 1:
                raise ConfigError(f"invalid {what} {v!r}")
        if len(self.groups) > 64 or not all(isinstance(g, int) and 0 <= g < 2**32 - 1
                                             for g in self.groups):
            raise ConfigError(f"invalid groups {self.groups!r}: at most 64 gids")
        if self.hostname and not _HOSTNAME_RE.match(self.hostname):
            raise ConfigError(f"invalid hostname {self.hostname!r}")
        if not 1 <= self.tb_size_mib <= 4096:
            raise ConfigError(f"invalid tb_size_mib {self.tb_size_mib}: 1 to 4096")
        for nic in self.nics:
            if not _IFNAME_RE.match(nic.tap):
                raise ConfigError(f"invalid nic tap {nic.tap!r}")
            if not _MAC_RE.match(nic.mac):
                raise ConfigError(f"invalid nic mac {nic.mac!r}: expected aa:bb:cc:dd:ee:ff "
                                  "(lower case)")
            try:
                if nic.ip:
                    ipaddress.IPv4Interface(f"{nic.ip}/{nic.prefixlen}")
                if nic.gateway:
                    ipaddress.IPv4Address(nic.gateway)
            except ValueError as e:
                raise ConfigError(f"invalid nic address: {e}") from None
        for v in self.volumes:
            if not os.path.isabs(v.host) or not os.path.isdir(v.host):
                raise ConfigError(f"invalid volume {v.host}:{v.guest}: the host side must be "
                                  "an existing directory (a VM shares directories only)")
            if "," in v.host or "\0" in v.host:
                raise ConfigError(f"invalid volume {v.host!r}: ',' in a host path")
            if (not v.guest.startswith("/") or os.path.normpath(v.guest) == "/"
                    or "\0" in v.guest or "\n" in v.guest):
                raise ConfigError(f"invalid volume {v.host}:{v.guest}: the guest side must be "
                                  "an absolute path other than /")
        for d in self.dns:
            try:
                ipaddress.ip_address(d)
            except ValueError:
                raise ConfigError(f"invalid dns {d!r}") from None


def encode_records(pairs: list[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair (keys are plain words, values anything but NUL)."""
    out = []
    for k, v in pairs:
        if "\0" in k or "=" in k or "\0" in v:
            raise ValueError(f"record {k!r}: NUL or '=' in key, or NUL in value")
        out.append(f"{k}={v}\0".encode())
    return b"".join(out)


def decode_records(data: bytes) -> list[tuple[str, str]]:
    """The inverse of encode_records (what the guest parses), for tests and debugging."""
    pairs = []
    for rec in data.split(b"\0"):
        if b"=" in rec:
            k, v = rec.decode().split("=", 1)
            pairs.append((k, v))
    return pairs


def process_records(argv: list[str], env: list[str], cwd: str = "/", uid: int = 0,
                    gid: int = 0, tty: bool = False, rows: int = 0, cols: int = 0,
                    groups: list[int] | None = None) -> list[tuple[str, str]]:
    """A process as records: the main process in the config, an exec in an EXEC frame."""
    pairs = [("arg", a) for a in argv] + [("env", e) for e in env]
    pairs += [("cwd", cwd), ("uid", str(uid)), ("gid", str(gid)), ("tty", "1" if tty else "0")]
    pairs += [("group", str(g)) for g in groups or []]
    if rows and cols:
        pairs += [("rows", str(rows)), ("cols", str(cols))]
    return pairs


def guest_config(spec: MachineSpec) -> bytes:
    """The records the guest init boots from (it must not outgrow the 1 MiB frame limit)."""
    pairs = process_records(spec.argv, spec.env, spec.cwd, spec.uid, spec.gid, spec.tty,
                            spec.rows, spec.cols, spec.groups)
    if not spec.stdin and not spec.tty:
        pairs.append(("stdin", "0"))
    if spec.hostname:
        pairs.append(("hostname", spec.hostname))
    if spec.hosts:
        pairs.append(("hosts", spec.hosts))
    if spec.dns:
        pairs.append(("resolv", "".join(f"nameserver {d}\n" for d in spec.dns)))
    for i, v in enumerate(spec.volumes):
        pairs.append(("volume", f"zvol{i} {'ro' if v.readonly else 'rw'} "
                                f"{os.path.normpath(v.guest)}"))
    for nic in spec.nics:
        if nic.ip:
            pairs.append(("nic", f"{nic.mac} {nic.ip}/{nic.prefixlen} {nic.gateway or '-'}"))
    return encode_records(pairs)


def guest_text(text: bytes | str, limit: int = 1000) -> str:
    """What a guest wrote, made fit for an admin's terminal: its control characters
    (escape sequences that retitle or clear the terminal, or forge lines) shown as \\xNN,
    at most `limit` characters. Guest words reach zoned's messages (an exec's failure,
    the init's error line, the console's tail)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = text[:limit]
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}"
                   if ord(c) < 256 else "?" for c in text)
