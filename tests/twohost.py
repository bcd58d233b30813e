"""Two zoned "hosts" and a client on one machine, for migration tests.

    with TwoHosts() as th:                       # or the `two_hosts` fixture
        mem = memtouch_volume()
        th.a.zoned("run", "-d", "--name", "svc", "--network", "lan", "--ip", "10.77.0.10",
                   "-v", mem, "--", "/memtouch", "64", "5000", check=True)
        cc = th.counter_client("10.77.0.10", 5000)
        ping = th.pinger("10.77.0.10")
        th.start_sshd()                          # host A's env gets ZONED_SSH_COMMAND
        th.a.zoned("migrate", "svc", "ssh://root@10.77.0.2:2222", check=True)
        values = cc.stop(); assert values == list(range(1, len(values) + 1))
        sent, received, lost = ping.stop()
        assert th.ask("10.77.0.10", 5000, "verify") == ["ok 16384"]

Layout (names carry a random 6-hex tag, so runs on one machine never meet):

    netns zmA-TAG                   netns zmC-TAG                   netns zmB-TAG
    containers -- zoned bridge      bridge `lan` 10.77.0.250/24     zoned bridge -- containers
                  10.77.0.1 --- uplink === up-a    up-b === uplink --- 10.77.0.2

Give containers an address with --ip (10.77.0.3-249): each host's IPAM knows only its own
leases, so A would hand out 10.77.0.2 (host B) first.

Each host has its own state root, cgroup parent, nftables registry (and, being a network
namespace, its own `inet zoned` table); the image store is shared. All of a host's commands
(and its sshd's sessions) run in one mount namespace of its own, a slave of the machine's,
with a /sys of the host's network namespace and the machine's cgroup file systems (Host).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import pytest

TESTS = Path(__file__).resolve().parent
PROGS = TESTS / "progs"
VENV_BIN = os.path.normpath(os.path.dirname(sys.executable))
ZONED = str(Path(VENV_BIN) / "zoned")
# root's alone: the tests run these in zones as root (a world-writable /var/tmp name could
# be planted by another user, found by session 21's audit)
PROG_CACHE = Path("/var/cache/zoned-test-progs")

SUBNET = "10.77.0.0/24"
A_IP, B_IP, CLIENT_IP = "10.77.0.1", "10.77.0.2", "10.77.0.250"
NETWORK = "lan"
SSH_PORT = 2222
SSHD = "/usr/sbin/sshd"


# -- helper programs ------------------------------------------------------------------------
def build_static(name: str) -> str:
    """tests/progs/NAME.c, built static (it runs in a busybox image with no libc) once per
    source version; concurrent builders each rename their own complete binary in."""
    src = PROGS / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = PROG_CACHE / f"{name}-{digest}"
    if out.exists():
        return str(out)
    PROG_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    if PROG_CACHE.is_symlink() or PROG_CACHE.stat().st_uid != os.geteuid():
        raise RuntimeError(f"{PROG_CACHE} is not a directory of ours")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(src)], check=True,
                   capture_output=True, text=True)
    os.replace(tmp, out)
    return str(out)


def build_memtouch() -> str:
    return build_static("memtouch")


def memtouch_volume() -> str:
    """The `zoned run -v` value that puts memtouch at /memtouch (file binds work)."""
    return f"{build_memtouch()}:/memtouch:ro"


def start_memtouch(host, ip: str, port: int, mib: int, *, publish: int | None = None,
                   timeout: float = 30) -> str:
    """`svc` on `host`: memtouch touching `mib` MiB and serving on ip:port (network lan,
    published on the host at `publish`); its memory's checksum, once it says "ready"."""
    flags = ["-p", f"{publish}:{port}"] if publish else []
    host.zoned("run", "-d", "--name", "svc", "--network", "lan", "--ip", ip, *flags,
               "-v", memtouch_volume(), "--", "/memtouch", str(mib), str(port), check=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in host.zoned("logs", "svc").stdout.splitlines():
            if line.startswith("ready "):
                return line.split()[1]
        time.sleep(0.05)
    raise AssertionError("memtouch did not start")


# -- running things in a network namespace ---------------------------------------------------
def _cgroup_mount_script() -> str:
    """Shell commands that re-create this mount namespace's cgroup mounts under
    /sys/fs/cgroup (same hierarchies: cgroup mounts with the same options share the
    superblock), plus the symlinks there (cpu -> cpu,cpuacct on some hosts)."""
    from zoned.linux import mountinfo

    cmds = []
    for m in mountinfo.read():
        mnt, fstype = m.mount_point, m.fstype
        if mnt != "/sys/fs/cgroup" and not mnt.startswith("/sys/fs/cgroup/"):
            continue
        q = shlex.quote(mnt)
        if fstype == "tmpfs":
            cmds.append(f"mount -t tmpfs -o mode=755 tmpfs {q}")
        elif fstype in ("cgroup", "cgroup2"):
            # the same options: for cgroup2 a mount re-applies them host-wide
            opts = ",".join(o for o in m.super_options if o not in ("rw", "ro"))
            o = f" -o {shlex.quote(opts)}" if opts else ""
            cmds.append(f"mkdir -p {q} && mount -t {fstype}{o} {fstype} {q}")
    base = Path("/sys/fs/cgroup")
    for p in sorted(base.iterdir()) if base.is_dir() else []:
        if p.is_symlink():
            cmds.append(f"ln -sfn {shlex.quote(os.readlink(p))} {shlex.quote(str(p))}")
    return " && ".join(cmds) or "true"


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")


def _kill_group(p: subprocess.Popen, grace: float = 2.0) -> None:
    """TERM, then KILL, the process group a harness process leads."""
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Netns:
    """A named network namespace (`ip netns add`) and the processes the harness runs there."""

    def __init__(self, name: str, label: str, ip: str, env: dict[str, str]):
        self.name, self.label, self.ip = name, label, ip
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} netns={self.name} ip={self.ip}>"

    def argv(self, cmd: str | Sequence[str]) -> list[str]:
        """A command (a shell string or an argv) as run in this namespace."""
        args = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(cmd), input=input, capture_output=True, text=True,
                           timeout=timeout, env=self.env,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"[{self.label}] {cmd!r} -> {p.returncode}\n"
                                 f"{p.stdout}{p.stderr}")
        return p

    def sh(self, cmd: str, *, check: bool = False, timeout: float = 60,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`sh -c CMD` in this namespace (with the host's env: zoned on PATH, its root...)."""
        return self.run(cmd, check=check, timeout=timeout, input=input)

    def popen(self, cmd: str | Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """A long-running process here, in its own process group; close() ends it."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("env", self.env)
        p = subprocess.Popen(self.argv(cmd), start_new_session=True, **kwargs)
        self.procs.append(p)
        return p

    def stop_procs(self) -> None:
        for p in self.procs:
            _kill_group(p)


class Host(Netns):
    """A zoned host: its own state root, cgroup parent and nftables registry, and one mount
    namespace for all its commands, as on a real host. (Each `ip netns exec` makes a new
    one: a file a container got from one zoned command, its /dev/null say, would have no
    path for the next, and CRIU could not name it.) A holder process keeps the namespace,
    made by `ip netns exec` (a /sys of this network namespace: zoned reads /sys/class/net)
    with the host's cgroup file systems mounted again (that /sys has none)."""

    def __init__(self, name: str, label: str, ip: str, base: str, tag: str):
        self.root = os.path.join(base, f"root-{label}")
        self.registry = os.path.join(base, f"netreg-{label}")
        self.cgroup_parent = f"/zoned-th-{label}-{tag}"
        os.makedirs(self.root)
        env = dict(os.environ)
        env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
                   ZONED_ROOT=self.root, ZONED_CGROUP_PARENT=self.cgroup_parent,
                   ZONED_NET_REGISTRY=self.registry)
        super().__init__(name, label, ip, env)
        self.bridge: str | None = None
        self.holder: subprocess.Popen | None = None

    def start(self) -> None:
        """The holder of this host's mount namespace (the network namespace must exist)."""
        script = f"{_cgroup_mount_script()} && echo ready && exec sleep infinity"
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.name, "/bin/sh", "-c",
                                        script], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, text=True,
                                       start_new_session=True)
        assert self.holder.stdout
        line = self.holder.stdout.readline()
        self.holder.stdout.close()
        if line.strip() != "ready":
            _kill_group(self.holder)
            raise RuntimeError(f"host {self.label}: cannot mount cgroups in netns {self.name}")

    def argv(self, cmd: str | Sequence[str]) -> list[str]:
        assert self.holder and self.holder.poll() is None, f"host {self.label} is not running"
        args = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ["nsenter", "-t", str(self.holder.pid), "--net", "--mount",
                f"--wd={os.getcwd()}", "--", *args]

    def zoned(self, *args: str, check: bool = False, timeout: float = 60,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`zoned --root ROOT ARGS...` on this host."""
        return self.run([ZONED, "--root", self.root, *args], check=check, timeout=timeout,
                        input=input)

    def zoned_json(self, *args: str) -> Any:
        return json.loads(self.zoned(*args, check=True).stdout)

    def container_ids(self) -> list[str]:
        return self.zoned("ps", "-a", "-q", check=True).stdout.split()


# -- observers in the client namespace -------------------------------------------------------
class CounterClient:
    """One TCP connection from the client namespace to a memtouch server, sending `next`
    every `interval` s (tests/progs/counter_client.py). A migration that keeps the
    connection yields 1, 2, 3, ... with no reset; the longest gap is the downtime seen."""

    def __init__(self, ns: Netns, ip: str, port: int, out: str, interval: float = 0.02):
        self.out = out
        self.proc = ns.popen([sys.executable, str(PROGS / "counter_client.py"), ip,
                              str(port), str(interval), out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def _lines(self) -> list[list[str]]:
        try:
            with open(self.out) as f:
                done = f.read().split("\n")[:-1]  # not a line still being written
            return [ln.split(" ", 2) for ln in done if ln]
        except FileNotFoundError:
            return []

    def samples(self) -> list[tuple[float, int]]:
        """(monotonic time of the reply, value), in order."""
        return [(float(t), int(v)) for t, kind, v in self._lines() if kind == "value"]

    def values(self) -> list[int]:
        return [v for _, v in self.samples()]

    def errors(self) -> list[tuple[float, str]]:
        return [(float(t), msg) for t, kind, msg in self._lines() if kind == "error"]

    def connected(self) -> bool:
        return any(kind == "connected" for _, kind, _ in self._lines())

    def wait_values(self, n: int, timeout: float = 10.0) -> list[int]:
        """Wait until at least n replies have come (or the client died)."""
        end = time.monotonic() + timeout
        while len(self.values()) < n and time.monotonic() < end:
            if self.proc.poll() is not None or self.errors():
                break
            time.sleep(0.02)
        return self.values()

    def longest_gap(self) -> float:
        """The longest time between two consecutive replies, in seconds."""
        ts = [t for t, _ in self.samples()]
        return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=0.0)

    def stop(self) -> list[int]:
        _kill_group(self.proc)
        if self.proc.stderr:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        return self.values()


class Pinger:
    """`ping -i INTERVAL IP` from the client namespace, with each reply's arrival time."""

    def __init__(self, ns: Netns, ip: str, interval: float = 0.02):
        self.proc = ns.popen(["ping", "-n", "-i", str(interval), "-W", "1", ip],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.replies: list[tuple[float, int]] = []   # (monotonic time, icmp_seq)
        self.summary = ""
        self._reply = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            m = re.search(r"icmp_seq=(\d+) ttl=", line)
            if m:
                self.replies.append((time.monotonic(), int(m.group(1))))
                self._reply.set()
            else:
                self.summary += line

    def longest_gap(self) -> float:
        ts = [t for t, _ in self.replies]
        return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=0.0)

    def stop(self) -> tuple[int, int, int]:
        """-> (sent, received, lost). The interrupt is sent just after a reply, so no
        request is in flight (it would count as lost)."""
        if self.proc.poll() is None:
            self._reply.clear()
            self._reply.wait(1.0)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
        self._reader.join(5)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", self.summary)
        if not m:
            raise AssertionError(f"no ping summary: {self.summary!r}")
        sent, received = int(m.group(1)), int(m.group(2))
        return sent, received, sent - received


# -- the harness -----------------------------------------------------------------------------
class TwoHosts:
    """Hosts `a` (10.77.0.1) and `b` (10.77.0.2), each with a zoned bridge network `lan`
    (10.77.0.0/24) plugged into one L2 segment with the client namespace `client`
    (10.77.0.250). close() removes all of it; leftovers() says what it could not."""

    def __init__(self, tmpfs: bool = False) -> None:
        self.tag = secrets.token_hex(3)
        base_dir = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
        self.base = tempfile.mkdtemp(prefix=f"zoned-th-{self.tag}-", dir=base_dir)
        self.tmpfs = tmpfs  # the hosts' state roots on a tmpfs, as /run on systemd hosts
        if tmpfs:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "zoned-th", self.base],
                           check=True)
        self.a = Host(f"zmA-{self.tag}", "a", A_IP, self.base, self.tag)
        self.b = Host(f"zmB-{self.tag}", "b", B_IP, self.base, self.tag)
        self.client = Netns(f"zmC-{self.tag}", "c", CLIENT_IP, dict(os.environ))
        self.hosts = (self.a, self.b)
        self.netns_inodes: set[int] = set()
        self.ssh_command: str | None = None
        self._observers: list[CounterClient | Pinger] = []
        self._ns_mounts: list[str] = []
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TwoHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        c = self.client.name
        for ns in (self.a, self.b, self.client):
            _ip("netns", "add", ns.name)
            self.netns_inodes.add(os.stat(f"/run/netns/{ns.name}").st_ino)
            _ip("-n", ns.name, "link", "set", "lo", "up")
        for h in self.hosts:
            h.start()
        _ip("-n", c, "link", "add", "lan", "type", "bridge")
        _ip("-n", c, "addr", "add", f"{CLIENT_IP}/24", "dev", "lan")
        _ip("-n", c, "link", "set", "lan", "up")
        for h in self.hosts:
            peer = f"up-{h.label}"
            _ip("-n", c, "link", "add", peer, "type", "veth", "peer", "name", "uplink",
                "netns", h.name)
            _ip("-n", c, "link", "set", peer, "master", "lan", "up")
            h.zoned("network", "create", NETWORK, "--mode", "bridge", "--subnet", SUBNET,
                    "--gateway", h.ip, check=True)
            h.bridge = h.zoned_json("network", "inspect", NETWORK)[0]["bridge"]
            _ip("-n", h.name, "link", "set", "uplink", "master", h.bridge, "up")

    # -- observers -------------------------------------------------------------------------
    def counter_client(self, ip: str, port: int, interval: float = 0.02) -> CounterClient:
        out = os.path.join(self.base, f"counter-{len(self._observers)}.log")
        cc = CounterClient(self.client, ip, port, out, interval)
        self._observers.append(cc)
        return cc

    def pinger(self, ip: str, interval: float = 0.02) -> Pinger:
        p = Pinger(self.client, ip, interval)
        self._observers.append(p)
        return p

    def ask(self, ip: str, port: int, *cmds: str, timeout: float = 10) -> list[str]:
        """Send memtouch commands (next, sum, verify, pid) over one new connection from
        the client namespace; the replies, one per command."""
        code = ("import socket,sys\n"
                f"s=socket.create_connection(({ip!r},{port}),timeout={timeout})\n"
                "f=s.makefile('rw')\n"
                "for c in sys.argv[1:]:\n"
                "    f.write(c+'\\n');f.flush();print(f.readline().strip())\n")
        out = self.client.run([sys.executable, "-c", code, *cmds], check=True,
                              timeout=timeout + 5).stdout.splitlines()
        assert len(out) == len(cmds), (cmds, out)
        return out

    # -- ssh -------------------------------------------------------------------------------
    def start_sshd(self, host: Host | None = None, port: int = SSH_PORT) -> str:
        """sshd on `host` (default b) at its address:port, root logs in with a key made
        here. Sessions get the host's PATH (venv first) and ZONED_* env. Returns the value
        for ZONED_SSH_COMMAND, which is also set in the other host's env."""
        host = host or self.b
        other = self.a if host is self.b else self.b
        d = Path(self.base) / f"ssh-{host.label}"
        d.mkdir(mode=0o700)
        for key in ("host_ed25519", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key,
                            "-f", str(d / key)], check=True, capture_output=True)
        shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
        host_pub = (d / "host_ed25519.pub").read_text().split()
        (d / "known_hosts").write_text(f"[{host.ip}]:{port} {host_pub[0]} {host_pub[1]}\n")
        # HOME: the sessions' shell reads no ~/.bashrc of this machine's root (here one runs
        # pyenv init: 0.3 s a command, and its shims before the venv on PATH)
        (d / "home").mkdir()
        env = " ".join([f"HOME={d}/home"] + [f"{k}={host.env[k]}" for k in sorted(host.env)
                                              if k.startswith("ZONED_") or k == "PATH"])
        (d / "sshd_config").write_text(
            f"ListenAddress {host.ip}:{port}\n"
            f"HostKey {d}/host_ed25519\n"
            f"AuthorizedKeysFile {d}/authorized_keys\n"
            f"PidFile none\n"
            "StrictModes no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PrintMotd no\nPrintLastLog no\nUseDNS no\nMaxStartups 100:30:200\n"
            "MaxSessions 100\nSubsystem sftp internal-sftp\n"
            f"SetEnv {env}\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        log = open(d / "sshd.log", "w")
        proc = host.popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                          stdout=log, stderr=log)
        log.close()
        end = time.monotonic() + 10
        while "Server listening" not in (d / "sshd.log").read_text():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.02)
        cmd = shlex.join(["ssh", "-F", "none", "-i", str(d / "id_ed25519"),
                          "-o", "IdentitiesOnly=yes",
                          "-o", f"UserKnownHostsFile={d}/known_hosts",
                          "-o", "StrictHostKeyChecking=accept-new",
                          "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        other.env["ZONED_SSH_COMMAND"] = cmd
        self.ssh_command = cmd
        return cmd

    def ssh(self, src: Host, dst: Host, remote: str, *, port: int = SSH_PORT,
            check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the shell command `remote` on dst over ssh from src (start_sshd first)."""
        cmd = src.env.get("ZONED_SSH_COMMAND")
        assert cmd, "start_sshd() first"
        return src.run([*shlex.split(cmd), "-p", str(port), f"root@{dst.ip}", remote],
                       check=check, timeout=timeout)

    # -- tear-down -------------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything, going on past failures (leftovers() reports the rest)."""
        if self._closed:
            return
        self._closed = True
        for o in self._observers:
            try:
                o.stop()
            except Exception:  # noqa: BLE001 - tear-down goes on
                _kill_group(o.proc)
        self.client.stop_procs()
        for h in self.hosts:
            h.stop_procs()
        for h in self.hosts:
            if not h.holder or h.holder.poll() is not None:
                continue
            try:
                ids = h.container_ids()
                if ids:
                    h.zoned("rm", "-f", *ids, timeout=120)
                if os.path.exists(os.path.join(h.root, ".networks", f"{NETWORK}.json")):
                    h.zoned("network", "rm", NETWORK)
                h.zoned("gc", timeout=120)
            except Exception:  # noqa: BLE001
                pass
        for h in self.hosts:
            if h.holder:
                # on a real host these would stay in the host's mount namespace
                self._ns_mounts += [f"mount in host {h.label}'s namespace: {m}"
                                    for m in self._mounts(h.holder.pid)
                                    if not (self.tmpfs and m.split()[4] == self.base)]
                _kill_group(h.holder)
        for ns in (self.a, self.b, self.client):
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        for h in self.hosts:
            _rmdir_cgroups(h.cgroup_parent)
        if self.tmpfs:
            subprocess.run(["umount", self.base], capture_output=True)
        if not self._mounts():
            shutil.rmtree(self.base, ignore_errors=True)

    def _mounts(self, pid: int | str = "self") -> list[str]:
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                return [ln.strip() for ln in f if self.base in ln]
        except OSError:
            return []

    def leftovers(self) -> list[str]:
        """What is left on the machine of this harness: empty after a clean close()."""
        left = []
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout
        left += [f"netns {n}" for n in re.findall(r"^(zm[ABC]-\S+)", netns, re.M)
                 if n.endswith(self.tag)]
        left += [f"link {n}" for n in os.listdir("/sys/class/net")  # none in the host's netns
                 if n.startswith("uplink") or n in ("up-a", "up-b")]
        for h in self.hosts:
            for hier in Path("/sys/fs/cgroup").iterdir():
                d = hier / h.cgroup_parent.lstrip("/")
                if d.is_dir():
                    left.append(f"cgroup {d}")
        left += [f"mount {m}" for m in self._mounts()] + self._ns_mounts
        if os.path.exists(self.base):
            left.append(f"dir {self.base}")
        left += [f"process {pid}: {what}" for pid, what in self._processes()]
        return left

    def _processes(self) -> list[tuple[int, str]]:
        """Processes in one of our network namespaces, in one of our cgroups, or with our
        base dir in their environment (zoned, ssh and sshd sessions)."""
        found = []
        parents = tuple(h.cgroup_parent + "/" for h in self.hosts)
        me = os.getpid()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == me:
                continue
            try:
                why = ""
                proc = Path("/proc", pid)
                if (proc / "ns/net").stat().st_ino in self.netns_inodes:
                    why = "in a harness netns"
                elif any(p in line + "/" for line in (proc / "cgroup").read_text().splitlines()
                         for p in parents):
                    why = "in a harness cgroup"
                elif self.base.encode() in (proc / "environ").read_bytes():
                    why = "harness environment"
                if why:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                    found.append((int(pid), f"{why}: {cmd.decode(errors='replace')}"))
            except OSError:
                continue
        return found


def _rmdir_cgroups(parent: str) -> None:
    """Remove the (empty) cgroup parent of a host from every hierarchy, deepest first."""
    for hier in Path("/sys/fs/cgroup").iterdir():
        top = hier / parent.lstrip("/")
        if not top.is_dir() or hier.is_symlink():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


@pytest.fixture
def two_hosts(request, busybox) -> Any:
    """A TwoHosts, closed after the test, which then checks that nothing is left.
    Parametrized indirectly with True, its state roots are on a tmpfs."""
    th = TwoHosts(tmpfs=getattr(request, "param", False))
    try:
        yield th
    finally:
        th.close()
    left = th.leftovers()
    assert left == [], left


def relocation_server(th, key: str, tmp_path, port: int, *, allow: str = A_IP, env=None):
    """`zoned relocation-server` on host B, listening on B_IP:`port` for `allow`;
    (process, its log file in `tmp_path`)."""
    log = tmp_path / f"server-{port}.log"
    out = open(log, "w")
    p = th.b.popen([ZONED, "--root", th.b.root, "relocation-server", "--listen",
                    f"{B_IP}:{port}", "--allow", allow, "--key", key],
                   stdout=out, stderr=out, env={**th.b.env, **(env or {})})
    out.close()
    end = time.monotonic() + 10
    while "listening on" not in log.read_text():
        assert p.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.02)
    return p, log
